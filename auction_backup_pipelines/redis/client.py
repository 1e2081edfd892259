"""Reaching Redis: the one module that knows how to connect to a server or a cluster and how to
run the redis-cli and redis-server binaries, plus the names, errors and constants every Redis
module shares.

Connections are checked (PING answered) and never retry silently, so "Redis is down" shows at
once and a half-applied pipeline is never replayed. Every failure becomes one sentence that
names the server and the setting to fix and never holds a password (`explain`); a redis-cli
child gets the password through REDISCLI_AUTH, never argv, and none of our other secrets (`cli_env`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import re
import shutil
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from auction_backup_pipelines import errors
from auction_backup_pipelines.child_env import base_env
from auction_backup_pipelines.errors import BackupError, RefusedError, UnavailableError
from auction_backup_pipelines.policy.capture_window import CaptureWindowError
from auction_backup_pipelines.redis import tls
from auction_backup_pipelines.settings import RedisSettings

SYSTEM = "redis"
SNAPSHOT = "snapshot"
RDB_FILE = "dump.rdb"
MODES = ("auto", "bgsave", "network", "aof")
CHUNK = 1 << 20


class RedisBackupError(BackupError):
    """A Redis backup or restore failed; the message names the server and the cause."""


class SnapshotUnavailable(RedisBackupError, UnavailableError):
    """One way of taking a snapshot failed on this server; another way may work."""


class LateCaptureRefused(RedisBackupError, CaptureWindowError):
    """A past day was asked for; Redis has no history to reconstruct it from."""


class RestoreRefused(RedisBackupError, RefusedError):
    """A restore would overwrite data and was not explicitly allowed."""


class VerificationError(RedisBackupError, errors.VerificationError):
    """The data does not match what the backup's manifest recorded."""


# -- connections --------------------------------------------------------------------------------


def explain(exc: BaseException, host: str, port: int, user: str = "") -> str:
    """One clear sentence for a redis-py (or redis-cli) error; never contains a password."""
    text = str(exc).strip()
    low = text.lower()
    if problem := tls.certificate_problem(text, f"Redis at {host}:{port}") or tls.reset_problem(text, f"Redis at {host}:{port}"):
        return problem
    if isinstance(exc, redis.AuthenticationError) or any(
        m in text for m in ("WRONGPASS", "NOAUTH", "invalid password", "without any password configured", "AUTH failed")
    ):
        return f"Redis at {host}:{port} rejected the credentials for user {user or 'default'!r} (check REDIS_USERNAME/REDIS_PASSWORD)"
    if isinstance(exc, redis.TimeoutError) or "timed out" in low or "timeout" in low:
        return f"Redis at {host}:{port} did not answer in time (host unreachable, or the server is blocked)"
    if "refused" in low:
        return f"nothing is listening at {host}:{port} (is Redis down, or REDIS_HOST/REDIS_PORT wrong?)"
    if text.startswith("LOADING") or "loading the dataset" in low:
        return f"Redis at {host}:{port} is still loading its dataset; retry once it is up"
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, redis.ConnectionError):
        return f"cannot reach Redis at {host}:{port}: {first}"
    return f"Redis at {host}:{port}: {first}"


def parse_target(text: str, credentials: RedisSettings) -> RedisSettings:
    """ "host:port" (or "[v6addr]:port") of a restore target, with the credentials of `credentials`."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisBackupError(f"restore target must be host:port, got {text!r}")
    return dataclasses.replace(credentials, host=host, port=int(port))


def client_options() -> dict[str, Any]:
    """redis-py options every connection of ours uses: RESP2, and no retries."""
    # No silent retries: redis-py 8 retries a failed connection 3 times with backoff by default,
    # which delays "Redis is down" by seconds and could replay a half-applied RESTORE pipeline.
    return {"protocol": 2, "retry": Retry(NoBackoff(), 0)}


def connect(
    s: RedisSettings, db: int = 0, *, host: str | None = None, port: int | None = None, timeout: float = 120.0
) -> redis.Redis:
    """A checked connection (PING answered) to the server `s` names, or to host:port with its credentials."""
    host, port = host or s.host, port or s.port
    if problem := tls.handshake_problem(s, host, port):
        raise RedisBackupError(problem)
    r = raw_replies(
        redis.Redis(
            host=host,
            port=port,
            db=db,
            username=s.username or None,
            password=s.password or None,
            socket_connect_timeout=10,
            socket_timeout=timeout,
            client_name="auction-backup",
            **client_options(),
            **tls.redis_py_options(s),
        )
    )
    try:
        r.ping()
    except redis.RedisError as exc:
        r.close()
        raise RedisBackupError(explain(exc, host, port, s.username)) from None
    return r


def connect_cluster(s: RedisSettings, timeout: float = 120.0) -> RedisCluster:
    """A RedisCluster client for the cluster `s` names (any node as the entry point)."""
    try:
        return RedisCluster(
            host=s.host,
            port=s.port,
            username=s.username or None,
            password=s.password or None,
            socket_connect_timeout=10,
            socket_timeout=timeout,
            **client_options(),
            **tls.redis_py_options(s),
        )
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, s.host, s.port, s.username)) from None


# RESP2 (protocol=2; redis-py 8 defaults to RESP3, whose typed replies differ by command) and
# replies kept as Redis sends them: redis-py's parsers turn HGETALL and XRANGE entries into
# dicts, which would hide duplicate stream fields and cost time we do not need to spend.
_RAW_REPLIES = ("HGETALL", "ZRANGE", "XRANGE", "XINFO GROUPS", "SMEMBERS")


def raw_replies(client: Any) -> Any:
    """`client` (a redis-py client) with the replies of the bulk read commands left as Redis sends them."""
    for command in _RAW_REPLIES:
        client.set_response_callback(command, lambda response, **_: response)
    return client


def redis_tool(name: str) -> str:
    """The path of a Redis binary (redis-cli, redis-server) on PATH."""
    path = shutil.which(name)
    if not path:
        raise RedisBackupError(f"{name} not found on PATH (Debian packages redis-tools / redis-server)")
    return path


def cli_env(s: RedisSettings) -> dict[str, str]:
    """The environment of a redis-cli child: `base_env`, with the password of `s` (only) in REDISCLI_AUTH
    (its TLS flags, not secrets, are `tls.cli_args`).

    Never an inherited REDISCLI_AUTH (an operator's, meant for another server), nor our other secrets."""
    env = base_env()
    if s.password:
        env["REDISCLI_AUTH"] = s.password
    return env


def server_time_ms(r: redis.Redis) -> int:
    """The server's clock (TIME), in ms since the epoch: expiry times are judged by it, not by ours."""
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def iso_ms(ms: int) -> str:
    """ms since the epoch as an ISO 8601 UTC time with ms, e.g. 2026-11-26T23:59:59.123Z."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def source_info(r: redis.Redis) -> dict[str, Any]:
    """What the server says about itself before a transfer (INFO; CONFIG GET databases if allowed)."""
    info = r.info()
    keyspace = {
        k[2:]: {"keys": v["keys"], "expires": v["expires"]}
        for k, v in info.items()
        if re.fullmatch(r"db\d+", k) and isinstance(v, dict)
    }
    out = {
        "redis_version": info.get("redis_version"),
        "role": info.get("role"),
        "used_memory": info.get("used_memory"),
        "used_memory_human": info.get("used_memory_human"),
        "master_repl_offset": info.get("master_repl_offset"),
        "cluster_enabled": bool(info.get("cluster_enabled")),
        "aof_enabled": bool(info.get("aof_enabled")),
        "keyspace": keyspace,
    }
    with contextlib.suppress(redis.RedisError):
        # redis-py annotates CONFIG GET values as `str | None`; the server always sends a value.
        out["databases"] = int(r.config_get("databases").get("databases", 16))  # type: ignore[arg-type]
    return out

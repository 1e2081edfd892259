"""Redis snapshots (standalone and cluster), their restore, and proof of what they hold.

How a snapshot is taken (`backup_snapshot`); "auto" mode tries them in this order:

* bgsave  — only when the server's data directory is on this machine (`data_dir`): BGSAVE,
  wait until INFO persistence shows that save (counted by `rdb_saves`) finished with
  `rdb_last_bgsave_status:ok`, then stream the dump file. No replication handshake, no
  diskless-sync delay (5 s by default), so it is the fastest.
* network — `redis-cli --rdb -`: the server forks and sends an RDB as it would to a new
  replica; no file-system access, so it serves remote servers and cluster nodes. The
  password reaches redis-cli through REDISCLI_AUTH, never argv. redis-cli 7.0 also writes
  the 40-byte end marker of a diskless transfer to stdout (it can only truncate a file), so
  the last 40 bytes are held back and dropped when its byte count on stderr says so.
* aof     — when both RDB paths fail (SYNC/BGSAVE refused or renamed, a failing fork) and
  `data_dir` is set: copy the Redis 7 multi-part AOF (its manifest and the base and incr
  files it lists), automatic rewrites paused meanwhile.
* cluster — when INFO says cluster_enabled:1: every master over the network into one
  backup, `node-<host>-<port>.rdb` each, with the slot map in the manifest. The map is read
  again at the end; a resharding or failover in between fails the backup.

Proof of content. A digest computed on the live server while the platform writes cannot
describe the snapshot, so it is computed from the snapshot's bytes: key counts per db and
type, and an order-independent digest — per key the first 64 bits of sha256(db, key, type,
canonical value), summed modulo 2**64. Canonical values: strings as is, hash fields and set
members sorted, lists in order, sorted-set members with scores as IEEE doubles, stream
entries in order plus consumer groups, other (module) types through DUMP. The manifest thus
describes exactly the snapshot, and a restore can be checked exactly.

Who computes it (`snapshot_facts`, the manifest's `digest_method`): the bytes streamed into
the repository are also fed to the native `rdb-facts` helper (see rdb_facts.py), which
parses the RDB as it arrives, and teed into a private temp dir. Keys the helper cannot
decode (streams, module values), or all keys when it is missing or fails, or for an AOF
copy, are read (`collect_facts`) from a throwaway `redis-server` loaded with that copy (unix
socket only, no TCP port; dirs named after our pid, so a later run sweeps what a killed one
left). Both ways give the same facts (tests/integration/test_rdb_facts.py holds them equal),
except for keys that expire around the capture: the helper drops those expired at the
moment read before the transfer, the scratch server those expired when it loads; the
expiry buckets absorb that difference.

Keys with a TTL. Restores keep absolute expiry times (RESTORE … ABSTTL): a session that
would have expired stays expired. So volatile keys are summarised per expiry bucket
(count, digest, sum of expiry times): a later comparison checks exactly the buckets that
expire after it, bounds those it overlaps, and expects the earlier ones to be gone.
Persistent keys are always compared exactly.

Restore (`restore_snapshot`) is logical: every file is read back through the repository
(sha256 checked), loaded into a scratch server, and each key copied with DUMP + RESTORE into
the target (a cluster target through RedisCluster, so each key reaches the node owning its
slot); the target is then compared with the manifest. `place_rdb` is the physical
alternative for a stopped server.

Bulk reads and copies go through `BulkConnection`, a small RESP2 pipeline client: redis-py's
per-command overhead made the digest several times slower than the transfer.

Limits: a scratch server (restore, verification, digest fallbacks) needs about the dataset's
memory on this host; the local redis-server must read the source's RDB version (a 7.0 binary
reads Redis <= 7.0 RDBs);
a cluster's masters are captured one after another, not at one instant; without the helper,
and for stream keys, the digest costs about 10 µs of Python CPU per key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from ..settings import RedisSettings
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.redis import rdb_facts
from auction_backup_pipelines.localhost import free_port, pid_alive
from auction_backup_pipelines.repository.repository import Backup, BackupWriter, Repository
from auction_backup_pipelines.errors import BackupError, RefusedError, UnavailableError
from auction_backup_pipelines import errors

SYSTEM = "redis"
SNAPSHOT = "snapshot"
RDB_FILE = "dump.rdb"
MODES = ("auto", "bgsave", "network", "aof")
CHUNK = 1 << 20
MASK64 = (1 << 64) - 1
SCAN_COUNT = 1000
EOF_MARK = 40  # length of the end marker of a diskless replication transfer
BUCKET_MS = 60_000
MAX_BUCKETS = 2000


class RedisBackupError(BackupError):
    """A Redis backup or restore failed; the message names the server and the cause."""


class SnapshotUnavailable(RedisBackupError, UnavailableError):
    """One way of taking a snapshot failed on this server; another way may work."""


class LateCaptureRefused(RedisBackupError, RefusedError):
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
    """"host:port" (or "[v6addr]:port") of a restore target, with the credentials of `credentials`."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisBackupError(f"restore target must be host:port, got {text!r}")
    return dataclasses.replace(credentials, host=host, port=int(port))


def _client_options() -> dict[str, Any]:
    # No silent retries: redis-py 8 retries a failed connection 3 times with backoff by default,
    # which delays "Redis is down" by seconds and could replay a half-applied RESTORE pipeline.
    return {"protocol": 2, "retry": Retry(NoBackoff(), 0)}


def connect(s: RedisSettings, db: int = 0, *, host: str | None = None, port: int | None = None,
            timeout: float = 120.0) -> redis.Redis:
    """A checked connection (PING answered) to the server `s` names, or to host:port with its credentials."""
    host, port = host or s.host, port or s.port
    r = _raw(redis.Redis(host=host, port=port, db=db, username=s.username or None, password=s.password or None,
                         socket_connect_timeout=10, socket_timeout=timeout, client_name="auction-backup", **_client_options()))
    try:
        r.ping()
    except redis.RedisError as exc:
        r.close()
        raise RedisBackupError(explain(exc, host, port, s.username)) from None
    return r


def connect_cluster(s: RedisSettings, timeout: float = 120.0) -> RedisCluster:
    try:
        return RedisCluster(host=s.host, port=s.port, username=s.username or None, password=s.password or None,
                            socket_connect_timeout=10, socket_timeout=timeout, **_client_options())
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, s.host, s.port, s.username)) from None


# RESP2 (protocol=2; redis-py 8 defaults to RESP3, whose typed replies differ by command) and
# replies kept as Redis sends them: redis-py's parsers turn HGETALL and XRANGE entries into
# dicts, which would hide duplicate stream fields and cost time we do not need to spend.
_RAW_REPLIES = ("HGETALL", "ZRANGE", "XRANGE", "XINFO GROUPS", "SMEMBERS")


def _raw(client: Any) -> Any:
    for command in _RAW_REPLIES:
        client.set_response_callback(command, lambda response, **_: response)
    return client


def _bin(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise RedisBackupError(f"{name} not found on PATH (Debian packages redis-tools / redis-server)")
    return path


def _cli_env(s: RedisSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDISCLI_AUTH", None)  # never inherit an operator's password meant for another server
    if s.password:
        env["REDISCLI_AUTH"] = s.password
    return env


def _server_time_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def source_info(r: redis.Redis) -> dict[str, Any]:
    """What the server says about itself before a transfer (INFO; CONFIG GET databases if allowed)."""
    info = r.info()
    keyspace = {k[2:]: {"keys": v["keys"], "expires": v["expires"]} for k, v in info.items()
                if re.fullmatch(r"db\d+", k) and isinstance(v, dict)}
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
        out["databases"] = int(r.config_get("databases").get("databases", 16))
    return out


# -- bulk connection -----------------------------------------------------------------------------


class ReplyError(Exception):
    """An error reply inside a pipeline, returned in place so the caller decides (e.g. WRONGTYPE)."""


_HEADS: dict[str, bytes] = {}


def _pack(command: tuple[Any, ...]) -> bytes:
    if len(command) == 2 and type(command[1]) is bytes:  # (NAME, key): most bulk commands, packed fast
        head = _HEADS.get(command[0]) or _HEADS.setdefault(command[0], b"*2\r\n$%d\r\n%s\r\n" % (len(command[0]), command[0].encode()))
        return b"%s$%d\r\n%s\r\n" % (head, len(command[1]), command[1])
    parts = [b"*%d\r\n" % len(command)]
    for a in command:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)


class BulkConnection:
    """A minimal RESP2 client for the bulk work: SCAN, reads, DUMP and RESTORE in pipelines.

    redis-py spends about 10 µs a command packing it and handling its reply, which made the
    digest of a large keyspace take several times longer than the transfer; this packs and
    parses just what the bulk commands need. Control commands (INFO, CONFIG, BGSAVE) and
    cluster routing stay with redis-py.
    """

    def __init__(self, *, host: str = "", port: int = 0, unix_socket: str = "", db: int = 0, username: str = "",
                 password: str = "", timeout: float = 600.0):
        where = (host, port) if host else ("localhost", 0)
        try:
            if unix_socket:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(unix_socket)
            else:
                self._sock = socket.create_connection((host, port), timeout=10)
                self._sock.settimeout(timeout)
        except OSError as exc:
            raise RedisBackupError(explain(exc, *where, username)) from None
        self._buf, self._pos = b"", 0
        hello = ([("AUTH", username, password) if username else ("AUTH", password)] if password else []) + [("PING",)]
        if db:
            hello.append(("SELECT", db))
        for reply in self.run(hello):
            if isinstance(reply, ReplyError):
                self.close()
                raise RedisBackupError(explain(reply, *where, username))

    def close(self) -> None:
        self._sock.close()

    def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send all commands, then read one reply each; error replies come back as ReplyError."""
        self._sock.sendall(b"".join(map(_pack, commands)))
        return self._array(len(commands))

    def _fill(self, need: int = 1) -> None:
        """Receive until `need` more bytes are buffered; one join, so a huge value costs one copy."""
        parts, got = [self._buf[self._pos:]], 0
        while got < need:
            data = self._sock.recv(max(CHUNK, min(need - got, 64 * CHUNK)))
            if not data:
                raise RedisBackupError("Redis closed the connection")
            parts.append(data)
            got += len(data)
        self._buf, self._pos = b"".join(parts), 0

    def _reply(self) -> Any:
        while (end := self._buf.find(b"\r\n", self._pos)) < 0:
            self._fill()
        kind, line, self._pos = self._buf[self._pos:self._pos + 1], self._buf[self._pos + 1:end], end + 2
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None
            if len(self._buf) - self._pos < n + 2:
                self._fill(n + 2 - (len(self._buf) - self._pos))
            value, self._pos = self._buf[self._pos:self._pos + n], self._pos + n + 2
            return value
        if kind == b":":
            return int(line)
        if kind == b"*":
            n = int(line)
            return None if n < 0 else self._array(n)
        if kind == b"+":
            return line
        if kind == b"-":
            return ReplyError(line.decode(errors="replace"))
        raise RedisBackupError(f"unexpected reply from Redis: {kind + line[:40]!r}")

    def _array(self, n: int) -> list[Any]:
        # Inline path for bulk strings and integers (GET, PEXPIRETIME, SCAN keys, HGETALL fields),
        # the bulk of all replies: no function call per element.
        out: list[Any] = []
        buf, pos = self._buf, self._pos
        for _ in range(n):
            end = buf.find(b"\r\n", pos)
            first = buf[pos] if end >= 0 else 0
            if first == 58:  # ":"
                out.append(int(buf[pos + 1:end]))
                pos = end + 2
                continue
            if first != 36:  # not "$", or the reply runs past the buffer: the general path
                self._pos = pos
                out.append(self._reply())
                buf, pos = self._buf, self._pos
                continue
            size = int(buf[pos + 1:end])
            if size < 0:
                out.append(None)
                pos = end + 2
            elif end + 4 + size <= len(buf):
                out.append(buf[end + 2:end + 2 + size])
                pos = end + 4 + size
            else:
                self._pos = pos
                out.append(self._reply())
                buf, pos = self._buf, self._pos
        self._pos = pos
        return out


Runner = Callable[[list[tuple[Any, ...]]], list[Any]]


def cluster_runner(rc: RedisCluster) -> Runner:
    """The same interface over RedisCluster, which sends each command to the node owning its key."""

    def run(commands: list[tuple[Any, ...]]) -> list[Any]:
        for node in rc.get_nodes():  # replies are parsed by each node's client, not by rc's callbacks
            if node.redis_connection is not None:
                _raw(node.redis_connection)
        p = rc.pipeline()
        for c in commands:
            p.execute_command(*c)
        return [ReplyError(str(r)) if isinstance(r, redis.ResponseError) else r for r in p.execute(raise_on_error=False)]

    return run


def _check(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise RedisBackupError(f"Redis replied with an error: {reply}")
    return reply


# -- content facts -------------------------------------------------------------------------------


def _lp(parts: Iterable[bytes]) -> bytes:
    """Length-prefixed concatenation, so no two different sequences encode alike."""
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


_VALUE_COMMANDS: dict[bytes, Callable[[bytes], list[tuple[Any, ...]]]] = {
    b"hash": lambda k: [("HGETALL", k)],
    b"list": lambda k: [("LRANGE", k, 0, -1)],
    b"set": lambda k: [("SMEMBERS", k)],
    b"zset": lambda k: [("ZRANGE", k, 0, -1, "WITHSCORES")],
    b"stream": lambda k: [("XRANGE", k, "-", "+"), ("XINFO", "GROUPS", k)],
}


def _other(k: bytes) -> list[tuple[Any, ...]]:
    return [("DUMP", k)]  # module types: no portable reading, so their serialized form


def canonical_value(kind: bytes, replies: list[Any]) -> bytes | None:
    """The bytes that stand for a value, independent of encoding and DUMP format; None when gone."""
    value = replies[0]
    if value is None or (kind != b"string" and not value):
        return None  # deleted or expired between TYPE and the read (Redis removes empty collections)
    if kind == b"string":
        return value
    if kind == b"hash":
        return _lp(p for pair in sorted(zip(value[0::2], value[1::2])) for p in pair)
    if kind == b"list":
        return _lp(value)
    if kind == b"set":
        return _lp(sorted(value))
    if kind == b"zset":  # ZRANGE order (score, member) is deterministic; scores as exact doubles
        return b"".join(len(m).to_bytes(8, "big") + m + struct.pack(">d", float(sc)) for m, sc in zip(value[0::2], value[1::2]))
    if kind == b"stream":
        entries = b"".join(_lp([eid, *fields]) for eid, fields in value)
        groups = []
        for g in replies[1] or []:
            d = dict(zip(g[0::2], g[1::2]))
            groups.append(_lp([d[b"name"], str(d[b"consumers"]).encode(), str(d[b"pending"]).encode(), d[b"last-delivered-id"]]))
        return _lp([entries, *sorted(groups)])
    return value


def key_hash(db: int, key: bytes, kind: bytes, canonical: bytes) -> int:
    """First 64 bits of sha256(db, length of key, key, type, canonical value): no two keys encode alike."""
    digest = hashlib.sha256(b"%d\n%d\n%s%s\n%s" % (db, len(key), key, kind, canonical)).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class Facts:
    """Counts and digests of a keyspace, additive, so nodes and batches merge by summing."""

    bucket_ms: int = BUCKET_MS
    counts: dict[tuple[int, str, bool], int] = field(default_factory=dict)  # (db, type, volatile) -> keys
    persistent_digest: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # start ms -> [keys, digest, sum of expiry ms]
    observed_ms: tuple[int, int] | None = None

    def add(self, db: int, kind: str, digest: int, expire_at_ms: int | None) -> None:
        volatile = expire_at_ms is not None
        self.counts[(db, kind, volatile)] = self.counts.get((db, kind, volatile), 0) + 1
        if not volatile:
            self.persistent_digest = (self.persistent_digest + digest) & MASK64
            return
        b = self.buckets.setdefault(expire_at_ms // self.bucket_ms * self.bucket_ms, [0, 0, 0])
        b[0] += 1
        b[1] = (b[1] + digest) & MASK64
        b[2] += expire_at_ms

    def merge(self, other: "Facts") -> None:
        other = other.coarsened(self.bucket_ms)
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        self.persistent_digest = (self.persistent_digest + other.persistent_digest) & MASK64
        for start, (n, d, e) in other.buckets.items():
            b = self.buckets.setdefault(start, [0, 0, 0])
            b[0], b[1], b[2] = b[0] + n, (b[1] + d) & MASK64, b[2] + e
        if other.observed_ms:
            lo, hi = self.observed_ms or other.observed_ms
            self.observed_ms = (min(lo, other.observed_ms[0]), max(hi, other.observed_ms[1]))

    def coarsened(self, bucket_ms: int) -> "Facts":
        """The same facts in wider buckets (`bucket_ms` a multiple of ours): sums regroup exactly."""
        if bucket_ms == self.bucket_ms:
            return self
        if bucket_ms % self.bucket_ms:
            raise ValueError(f"bucket width {bucket_ms} is not a multiple of {self.bucket_ms}")
        out = Facts(bucket_ms, dict(self.counts), self.persistent_digest, {}, self.observed_ms)
        for start, (n, d, e) in self.buckets.items():
            b = out.buckets.setdefault(start // bucket_ms * bucket_ms, [0, 0, 0])
            b[0], b[1], b[2] = b[0] + n, (b[1] + d) & MASK64, b[2] + e
        return out

    @property
    def keys(self) -> int:
        return sum(self.counts.values())

    @property
    def digest(self) -> int:
        return (self.persistent_digest + sum(b[1] for b in self.buckets.values())) & MASK64

    def to_json(self) -> dict[str, Any]:
        f = self
        while len(f.buckets) > MAX_BUCKETS:  # keeps manifests small whatever the spread of TTLs
            f = f.coarsened(f.bucket_ms * 2)
        dbs: dict[str, Any] = {}
        persistent: dict[str, dict[str, int]] = {}
        for (db, kind, volatile), n in sorted(f.counts.items()):
            d = dbs.setdefault(str(db), {"keys": 0, "volatile": 0, "types": {}})
            d["keys"] += n
            d["volatile"] += n if volatile else 0
            d["types"][kind] = d["types"].get(kind, 0) + n
            if not volatile:
                persistent.setdefault(str(db), {})[kind] = n
        return {
            "keys": f.keys,
            "digest": f"{f.digest:016x}",
            "dbs": dbs,
            "persistent": {"digest": f"{f.persistent_digest:016x}", "types": persistent},
            "bucket_ms": f.bucket_ms,
            "volatile": {str(s): [n, f"{d:016x}", e] for s, (n, d, e) in sorted(f.buckets.items())},
            "observed_at": [_iso_ms(t) for t in f.observed_ms] if f.observed_ms else None,
        }

    @classmethod
    def from_rdb_facts(cls, doc: dict[str, Any], observed_ms: int, bucket_ms: int = BUCKET_MS) -> "Facts":
        """The facts `rdb-facts` computed from a snapshot taken at `observed_ms` (its raw output)."""
        f = cls(bucket_ms=bucket_ms, persistent_digest=int(doc["persistent_digest"], 16), observed_ms=(observed_ms, observed_ms))
        f.counts = {(db, kind, volatile): n for db, kind, volatile, n in doc["counts"]}
        f.buckets = {start: [n, int(d, 16), e] for start, n, d, e in doc["buckets"]}
        return f

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Facts":
        f = cls(bucket_ms=int(doc["bucket_ms"]), persistent_digest=int(doc["persistent"]["digest"], 16))
        for db, d in doc["dbs"].items():
            for kind, n in d["types"].items():
                p = doc["persistent"]["types"].get(db, {}).get(kind, 0)
                for volatile, count in ((False, p), (True, n - p)):
                    if count:
                        f.counts[(int(db), kind, volatile)] = count
        f.buckets = {int(s): [n, int(d, 16), e] for s, (n, d, e) in doc["volatile"].items()}
        return f


def compare_facts(expected: Facts, actual: Facts, window_ms: tuple[int, int], ttl_tolerance_ms: int = 1000) -> tuple[list[str], dict[str, int]]:
    """Differences between a manifest's facts and a keyspace read during `window_ms`.

    Volatile keys are judged by when they expire relative to the window: buckets ending
    before it must be gone, buckets starting after it must match exactly (count, digest,
    expiry times within the tolerance), buckets it overlaps may have lost some keys.
    """
    actual = actual.coarsened(expected.bucket_ms)
    problems: list[str] = []
    persistent_e = {(db, k): n for (db, k, v), n in expected.counts.items() if not v}
    persistent_a = {(db, k): n for (db, k, v), n in actual.counts.items() if not v}
    for db, kind in sorted(set(persistent_e) | set(persistent_a)):
        e, a = persistent_e.get((db, kind), 0), persistent_a.get((db, kind), 0)
        if e != a:
            problems.append(f"db{db} {kind}: {a} keys without TTL, backup recorded {e}")
    if not problems and expected.persistent_digest != actual.persistent_digest:
        problems.append(f"keys without TTL: same counts but content digest {actual.persistent_digest:016x} "
                        f"!= recorded {expected.persistent_digest:016x}")
    lo, hi = window_ms
    summary = {"volatile_checked": 0, "volatile_expired": 0, "volatile_partly_expired": 0}
    for start in sorted(set(expected.buckets) | set(actual.buckets)):
        end = start + expected.bucket_ms
        en, ed, ee = expected.buckets.get(start, (0, 0, 0))
        an, ad, ae = actual.buckets.get(start, (0, 0, 0))
        when = f"keys expiring {_iso_ms(start)}..{_iso_ms(end)}"
        if an > en:
            problems.append(f"{when}: {an} present, backup recorded {en}")
        elif end <= lo:
            summary["volatile_expired"] += en
        elif start > hi:
            summary["volatile_checked"] += an
            if an != en:
                problems.append(f"{when}: {an} present, backup recorded {en} (none had expired yet)")
            elif ad != ed:
                problems.append(f"{when}: same count ({en}) but content digest differs")
            elif abs(ae - ee) > en * ttl_tolerance_ms:
                problems.append(f"{when}: expiry times differ by {abs(ae - ee) / max(en, 1):.0f} ms per key on average")
        else:
            summary["volatile_partly_expired"] += en - an
            summary["volatile_checked"] += an
    return problems, summary


def unique_batches(run: Runner, kind: str = "") -> Iterator[list[bytes]]:
    """SCAN the connection's db (keys of type `kind` only, if given) in batches; SCAN may repeat
    a key while a table resizes, so repeats are dropped."""
    seen: set[int] = set()  # hash() of each key: 8 bytes a key; a collision would show up as a mismatch
    cursor: Any = 0
    only = ("TYPE", kind) if kind else ()
    while True:
        cursor, keys = _check(run([("SCAN", cursor, "COUNT", SCAN_COUNT, *only)])[0])
        fresh = []
        for k in keys:
            h = hash(k)
            if h not in seen:
                seen.add(h)
                fresh.append(k)
        if fresh:
            yield fresh
        if int(cursor) == 0:
            return


def collect_facts(facts: Facts, db: int, run: Runner, batches: Iterable[list[bytes]]) -> None:
    """Add the keys of `batches` (all in `db`), read through `run`, to `facts`.

    GET is sent for every key first: most keys are strings, and for those it saves a TYPE
    round; a WRONGTYPE reply sends the key to the typed reads.
    """
    for keys in batches:
        head = run([c for k in keys for c in (("PEXPIRETIME", k), ("GET", k))])
        others = []
        for k, expire_at, value in zip(keys, head[0::2], head[1::2]):
            if _check(expire_at) == -2:
                continue  # gone (expired) since the scan
            if isinstance(value, Exception):
                if not str(value).startswith("WRONGTYPE"):
                    _check(value)
                others.append((k, expire_at))
            elif value is not None:
                facts.add(db, "string", key_hash(db, k, b"string", value), expire_at if expire_at >= 0 else None)
        if not others:
            continue
        kinds = [t.encode() if isinstance(t, str) else _check(t) for t in run([("TYPE", k) for k, _ in others])]
        plan, commands = [], []
        for (k, expire_at), kind in zip(others, kinds):
            cs = _VALUE_COMMANDS.get(kind, _other)(k) if kind not in (b"none", b"string") else []
            commands += cs
            plan.append((k, expire_at, kind, len(cs)))
        replies = iter(run(commands) if commands else [])
        for k, expire_at, kind, n in plan:
            values = [_check(next(replies)) for _ in range(n)]
            canonical = canonical_value(kind, values) if n else None
            if canonical is not None:
                facts.add(db, kind.decode(), key_hash(db, k, kind, canonical), expire_at if expire_at >= 0 else None)


def dbs_with_keys(r: redis.Redis) -> list[int]:
    return sorted(int(k[2:]) for k, v in r.info("keyspace").items() if isinstance(v, dict) and v.get("keys"))


def server_facts(srv: "ScratchServer", bucket_ms: int = BUCKET_MS) -> Facts:
    facts = Facts(bucket_ms)
    admin = srv.client()
    lo = _server_time_ms(admin)
    for db in dbs_with_keys(admin):
        run = srv.bulk(db).run
        collect_facts(facts, db, run, unique_batches(run))
    facts.observed_ms = (lo, _server_time_ms(admin))
    return facts


def snapshot_facts(captured: "Captured", databases: int) -> tuple[Facts, str]:
    """The facts of one stored snapshot, and how they were computed.

    The helper's facts, read while the snapshot streamed, when it could decode every key.
    The keys it could not (streams, module values) are read from a scratch server loaded with
    the snapshot, selected by `SCAN ... TYPE stream`; if that does not find them all (module
    values, hashes with field TTLs), or the helper did not run, every key is read from the
    scratch server.
    """
    doc = captured.rdb_facts
    if doc is not None and not doc["undecoded"]:
        return Facts.from_rdb_facts(doc, captured.captured_ms), "rdb-facts"
    with scratch_server(captured.folder, databases=databases, aof=captured.aof) as srv:
        if doc is not None:
            facts = Facts.from_rdb_facts(doc, captured.captured_ms)
            found = Facts()
            for db in map(int, doc["undecoded"]):
                run = srv.bulk(db).run
                collect_facts(found, db, run, unique_batches(run, "stream"))
            expected = sum(doc["undecoded"].values())
            if found.keys == expected:
                facts.merge(found)
                return facts, f"rdb-facts, and a scratch server for {expected} stream keys"
            reason = f"{expected - found.keys} module values or hashes with field TTLs"
        else:
            reason = captured.rdb_facts_problem
        return server_facts(srv), f"scratch server ({reason})"


# -- scratch servers -----------------------------------------------------------------------------


@dataclass
class ScratchServer:
    dir: Path
    proc: subprocess.Popen
    port: int
    socket_path: Path | None  # None: loopback TCP on `port`, guarded by `password`
    password: str = field(default="", repr=False)
    _clients: list[Any] = field(default_factory=list)

    def client(self, db: int = 0, timeout: float = 600.0) -> redis.Redis:
        where: dict[str, Any] = {"unix_socket_path": str(self.socket_path)} if self.socket_path else {"host": "127.0.0.1", "port": self.port}
        c = _raw(redis.Redis(**where, db=db, password=self.password or None, socket_timeout=timeout, **_client_options()))
        self._clients.append(c)
        return c

    def bulk(self, db: int = 0) -> BulkConnection:
        where: dict[str, Any] = {"unix_socket": str(self.socket_path)} if self.socket_path else {"host": "127.0.0.1", "port": self.port}
        c = BulkConnection(**where, db=db, password=self.password)
        self._clients.append(c)
        return c

    def settings(self) -> RedisSettings:
        return RedisSettings(host="127.0.0.1", port=self.port, password=self.password)


SCRATCH_PREFIX = "auction-backup-redis-"


def sweep_stale_scratch() -> list[str]:
    """Remove scratch dirs (and stop scratch servers) left by a process that was killed.

    Cleanup in `finally` cannot run after SIGKILL or the OOM killer, and these dirs hold a
    copy of the data; each is named after the pid that owns it, so a dead owner is certain.
    """
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        owner = re.match(re.escape(SCRATCH_PREFIX) + r"(?:sock-)?(\d+)-", folder.name)
        if not owner or pid_alive(int(owner.group(1))):
            continue
        for pid in _servers_in(folder):  # our orphaned scratch server, working in that folder
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def _servers_in(folder: Path) -> list[int]:
    """Pids of redis-server processes working in `folder` or below (Redis chdir()s into its `dir`)."""
    pids = []
    root = os.path.realpath(folder)
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cwd = os.path.realpath(entry / "cwd")
            if (cwd == root or cwd.startswith(root + os.sep)) and (entry / "comm").read_text().startswith("redis-server"):
                pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def scratch_dir(kind: str = "") -> Iterator[Path]:
    """A private (0700) temp dir named after this process, removed on exit whatever happens."""
    sweep_stale_scratch()
    path = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{kind}{os.getpid()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _log_tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return "(no log)"


@contextlib.contextmanager
def scratch_server(data: Path, *, port: int = 0, databases: int = 16, aof: tuple[str, str] | None = None,
                   extra_args: Iterable[str] = (), load_timeout: float = 1800.0) -> Iterator[ScratchServer]:
    """Run redis-server on the folder `data` (its dump.rdb, or with `aof`=(dirname, filename) its AOF).

    It listens on a unix socket in a private temp dir (and on 127.0.0.1:`port` only if given;
    when TMPDIR is too long for a socket path, on a free loopback port with a one-off
    password), persists nothing, and is always stopped on exit. The caller owns `data`.
    """
    # The socket gets its own short-named dir: unix socket paths are limited to about 107 bytes.
    sockdir = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}sock-{os.getpid()}-"))
    sock: Path | None = sockdir / "redis.sock"
    secret = ""
    if len(bytes(sock)) > 100:  # TMPDIR too long for a socket: loopback TCP, with a one-off password
        sock = None
        if not port:
            port, secret = free_port(), secrets.token_hex(16)
    log = data / "redis.log"
    argv = [_bin("redis-server"), "-", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
            "--dbfilename", RDB_FILE, "--save", "", "--databases", str(max(16, databases)), "--daemonize", "no",
            "--logfile", str(log), *(("--unixsocket", str(sock), "--unixsocketperm", "700") if sock else ())]
    if aof:
        argv += ["--appendonly", "yes", "--appenddirname", aof[0], "--appendfilename", aof[1], "--appendfsync", "no"]
    else:
        argv += ["--appendonly", "no"]
    argv += list(extra_args)
    try:
        # "-": more config comes from stdin, which keeps the password out of argv (ps shows argv)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except BaseException:
        shutil.rmtree(sockdir, ignore_errors=True)
        raise
    srv = ScratchServer(data, proc, port, sock, secret)
    try:
        with contextlib.suppress(BrokenPipeError):  # a server that died at once is reported below
            proc.stdin.write(f"requirepass {secret}\n".encode() if secret else b"")  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        probe = srv.client(timeout=10)
        deadline, pause = time.monotonic() + load_timeout, 0.01
        while True:
            if proc.poll() is not None:
                raise RedisBackupError(f"scratch redis-server could not start or load the snapshot: {_log_tail(log)}")
            try:
                probe.ping()
                break
            except redis.AuthenticationError:
                break  # up, and guarded by a password (a test server with requirepass)
            except (redis.ConnectionError, redis.BusyLoadingError, FileNotFoundError):
                pass  # socket not created yet, or still loading the dataset
            if time.monotonic() > deadline:
                raise RedisBackupError(f"scratch redis-server did not finish loading within {load_timeout:.0f} s")
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
        yield srv
    finally:
        for c in srv._clients:
            c.close()
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: Redis exits cleanly, and saves nothing (no save points)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


# -- streaming sources ---------------------------------------------------------------------------


class _Tee:
    """A reader handed to ArtifactStream.copy_from: copies what passes to a local file, remembers head and tail."""

    def __init__(self, source: BinaryIO, tee: BinaryIO, limit: int | None = None):
        self.source = source
        self.tee = tee
        self.limit = limit
        self.size = 0
        self.head = b""
        self.tail = b""

    def _emit(self, data: bytes) -> bytes:
        if len(self.head) < 16:
            self.head = (self.head + data)[:16]
        self.tail = (self.tail + data[-16:])[-16:]
        self.size += len(data)
        self.tee.write(data)
        return data

    def read(self, n: int = CHUNK) -> bytes:
        if self.limit is not None:
            n = min(n, self.limit - self.size)
            if n <= 0:
                return b""
        return self._emit(self.source.read(n))


def check_rdb(head: bytes, tail: bytes, size: int, where: str) -> str:
    """A complete RDB starts with REDISnnnn and ends with the EOF opcode 0xFF and an 8-byte checksum."""
    if size < 18 or not head.startswith(b"REDIS") or not head[5:9].isdigit():
        raise SnapshotUnavailable(f"{where}: not an RDB stream (starts {head[:9]!r}, {size} bytes)")
    if tail[-9:-8] != b"\xff":
        raise SnapshotUnavailable(f"{where}: the RDB is truncated (no end-of-file opcode after {size} bytes)")
    return head[5:9].decode()


class _RedisCliRdb(_Tee):
    """`redis-cli --rdb -` as a reader: holds back the last 40 bytes until redis-cli tells what they are."""

    def __init__(self, proc: subprocess.Popen, stderr: BinaryIO, tee: BinaryIO, where: str, stall_timeout: float):
        super().__init__(proc.stdout, tee)  # type: ignore[arg-type]
        self.proc, self.stderr, self.where = proc, stderr, where
        self.received = 0
        self._held = b""
        self._done = False
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, args=(stall_timeout,), daemon=True, name="redis-cli-watchdog")
        self._watchdog.start()

    def _watch(self, stall_timeout: float) -> None:
        last, since = -1, time.monotonic()
        while not self._stop.wait(min(5.0, stall_timeout / 4)):
            if self.received != last:
                last, since = self.received, time.monotonic()
            elif time.monotonic() - since > stall_timeout:
                self._stalled.set()
                self.proc.kill()
                return

    def read(self, n: int = CHUNK) -> bytes:
        while not self._done:
            data = self.source.read1(n)  # type: ignore[attr-defined]  # whatever arrived: the watchdog sees progress
            if not data:
                return self._finish()
            self.received += len(data)
            buf = self._held + data
            self._held = buf[-EOF_MARK:]
            if len(buf) > EOF_MARK:
                return self._emit(buf[:-EOF_MARK])
        return b""

    def _finish(self) -> bytes:
        self._done = True
        rc = self.proc.wait()
        self._stop.set()
        self.stderr.seek(0)
        err = self.stderr.read().decode(errors="replace")
        if self._stalled.is_set():
            raise SnapshotUnavailable(f"{self.where}: no data for too long; redis-cli was stopped")
        if rc != 0:
            lines = [ln for ln in err.strip().splitlines() if not ln.startswith("sending REPLCONF")]
            raise SnapshotUnavailable(f"{self.where}: redis-cli --rdb failed (exit {rc}): {' | '.join(lines[-3:]) or 'no message'}")
        sized = re.search(r"writing (\d+) bytes to", err)
        marked = re.search(r"success after (\d+) bytes", err)
        if sized:
            payload = int(sized.group(1))
        elif marked:
            payload = int(marked.group(1))
        else:
            raise SnapshotUnavailable(f"{self.where}: redis-cli did not report a finished transfer: {err.strip()[-300:]}")
        if self.received == payload + EOF_MARK and marked and re.fullmatch(rb"[0-9a-f]{40}", self._held):
            out = b""  # the diskless end marker, not part of the RDB
        elif self.received == payload:
            out = self._held
        else:
            raise SnapshotUnavailable(f"{self.where}: received {self.received} bytes, redis-cli reported {payload}")
        if out:
            self._emit(out)
        check_rdb(self.head, self.tail, self.size, self.where)
        return out

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.source.close()
        self.stderr.close()


@dataclass
class Captured:
    """One server's snapshot as stored: its local copy (`folder`) and, when the helper could read it, its facts."""

    folder: Path
    aof: tuple[str, str] | None = None  # (appenddirname, appendfilename) of an AOF copy
    captured_ms: int = 0
    rdb_facts: dict[str, Any] | None = None
    rdb_facts_problem: str = "not an RDB"


def _stream_network(s: RedisSettings, host: str, port: int, writer: BackupWriter, name: str, tee_path: Path,
                    stall_timeout: float, captured_ms: int) -> tuple[dict[str, Any], Captured]:
    argv = [_bin("redis-cli"), "-h", host, "-p", str(port)]
    if s.username:
        argv += ["--user", s.username]
    argv += ["--rdb", "-"]
    where = f"Redis at {host}:{port}"
    with tempfile.TemporaryFile() as err, open(tee_path, "wb") as tee, rdb_facts.streaming(BUCKET_MS, captured_ms) as facts:
        proc = subprocess.Popen(argv, env=_cli_env(s), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        source = _RedisCliRdb(proc, err, rdb_facts.Fanout(tee, facts), where, stall_timeout)
        try:
            with writer.open_file(name) as out:
                out.copy_from(source)  # type: ignore[arg-type]
        finally:
            source.close()
        captured = Captured(tee_path.parent, None, captured_ms, facts.result(), facts.problem)
    return {"file": name, "bytes": source.size, "rdb_version": source.head[5:9].decode()}, captured


def _bgsave_and_stream(r: redis.Redis, data_dir: str, writer: BackupWriter, tee_path: Path,
                       timeout: float) -> tuple[dict[str, Any], Captured]:
    try:
        cfg = r.config_get("dir", "dbfilename")
        folder, filename = cfg.get("dir", data_dir), cfg.get("dbfilename", RDB_FILE)
    except redis.ResponseError:  # CONFIG disabled: trust the configured folder and Redis's default name
        folder, filename = data_dir, RDB_FILE
    if os.path.realpath(folder) != os.path.realpath(data_dir):
        raise SnapshotUnavailable(f"the server writes its snapshots to {folder}, not to the configured data dir {data_dir}")
    deadline = time.monotonic() + timeout
    while True:
        saves = r.info("persistence").get("rdb_saves")
        try:
            r.execute_command("BGSAVE", "SCHEDULE")
            break
        except redis.ResponseError as exc:
            if "already in progress" not in str(exc):
                raise SnapshotUnavailable(f"BGSAVE refused: {exc}") from None
            _wait_persistence(r, lambda p: not p["rdb_bgsave_in_progress"], deadline, "a running BGSAVE to end")
    captured_ms = _server_time_ms(r)
    # rdb_saves counts forks, so "more saves than before and none running" means ours ran (or a
    # later one, which is as good); without the counter (Redis < 7), LASTSAVE must move.
    lastsave = r.lastsave()
    done = _wait_persistence(
        r, lambda p: not p["rdb_bgsave_in_progress"] and (p["rdb_saves"] > saves if saves is not None else r.lastsave() > lastsave),
        deadline, "BGSAVE to finish")
    if done.get("rdb_last_bgsave_status") != "ok":
        raise SnapshotUnavailable(f"BGSAVE failed on the server (rdb_last_bgsave_status:{done.get('rdb_last_bgsave_status')}); see its log")
    where = f"{folder}/{filename}"
    with open(os.path.join(folder, filename), "rb") as f, open(tee_path, "wb") as tee, \
            rdb_facts.streaming(BUCKET_MS, captured_ms) as facts:
        source = _Tee(f, rdb_facts.Fanout(tee, facts))  # the open file keeps this save's bytes even if a newer save replaces it
        with writer.open_file(RDB_FILE) as out:
            out.copy_from(source)  # type: ignore[arg-type]
            version = check_rdb(source.head, source.tail, source.size, where)
        captured = Captured(tee_path.parent, None, captured_ms, facts.result(), facts.problem)
    return {"file": RDB_FILE, "bytes": source.size, "rdb_version": version, "captured_at": _iso_ms(captured_ms)}, captured


def _wait_persistence(r: redis.Redis, ready: Callable[[dict], bool], deadline: float, what: str) -> dict[str, Any]:
    pause = 0.02
    while True:
        info = r.info("persistence")
        if ready(info):
            return info
        if time.monotonic() > deadline:
            raise SnapshotUnavailable(f"timed out waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


# -- AOF copy ------------------------------------------------------------------------------------


def parse_aof_manifest(text: str) -> list[tuple[str, str]]:
    """(file name, type) pairs of a Redis 7 AOF manifest: b(ase), i(ncr), h(istory)."""
    files = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        d = dict(zip(fields[0::2], fields[1::2]))
        if "file" not in d or d.get("type") not in ("b", "i", "h") or "/" in d["file"] or d["file"].startswith("."):
            raise SnapshotUnavailable(f"unreadable AOF manifest line: {line!r}")
        files.append((d["file"], d["type"]))
    return files


def _copy_aof(r: redis.Redis, data_dir: str, writer: BackupWriter, tee_dir: Path, timeout: float) -> dict[str, Any]:
    try:
        cfg = r.config_get("appendonly", "appenddirname", "appendfilename", "auto-aof-rewrite-percentage")
    except redis.ResponseError:
        cfg = {}
    if cfg.get("appendonly", "yes") != "yes":
        raise SnapshotUnavailable("AOF is off on this server (appendonly no)")
    dirname, basename = cfg.get("appenddirname", "appendonlydir"), cfg.get("appendfilename", "appendonly.aof")
    aof_dir = Path(data_dir, dirname)
    manifest_path = aof_dir / f"{basename}.manifest"
    original = cfg.get("auto-aof-rewrite-percentage")
    paused = False
    try:
        if original not in (None, "0"):
            with contextlib.suppress(redis.ResponseError):  # without CONFIG, the manifest re-check below still guards us
                r.config_set("auto-aof-rewrite-percentage", 0)
                paused = True
        deadline = time.monotonic() + timeout
        _wait_persistence(r, lambda p: not p["aof_rewrite_in_progress"] and not p.get("aof_rewrite_scheduled"),
                          deadline, "a running AOF rewrite to end")
        handles: dict[str, BinaryIO] = {}
        try:
            # Open every file the manifest names, then read the manifest again: if it is unchanged,
            # the open files and their current sizes are one consistent state, whatever happens next.
            for _ in range(5):
                for h in handles.values():
                    h.close()
                handles.clear()
                text = manifest_path.read_bytes()
                # history files ("h") are what a rewrite replaced: not part of the dataset, and Redis deletes them
                files = [(n, t) for n, t in parse_aof_manifest(text.decode()) if t in ("b", "i")]
                for name, _kind in files:
                    handles[name] = open(aof_dir / name, "rb")
                sizes = {n: os.fstat(h.fileno()).st_size for n, h in handles.items()}
                captured_ms = _server_time_ms(r)
                if manifest_path.read_bytes() == text:
                    break
            else:
                raise SnapshotUnavailable("the AOF manifest kept changing (rewrites in progress); retry later")
            local = tee_dir / dirname
            local.mkdir()
            (local / manifest_path.name).write_bytes(text)
            with writer.open_file(manifest_path.name) as out:
                out.write(text)
            for name, _kind in files:
                with open(local / name, "wb") as tee, writer.open_file(name) as out:
                    out.copy_from(_Tee(handles[name], tee, limit=sizes[name]))  # type: ignore[arg-type]
        finally:
            for h in handles.values():
                h.close()
    finally:
        if paused:
            r.config_set("auto-aof-rewrite-percentage", original)
    return {"appenddirname": dirname, "appendfilename": basename, "manifest": manifest_path.name,
            "files": {n: sizes[n] for n, _ in files}, "captured_at": _iso_ms(captured_ms)}


# -- cluster topology ----------------------------------------------------------------------------


def parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    """Masters from CLUSTER NODES: id, host, port, slot ranges (migrating/importing marks skipped)."""
    masters = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8 or "master" not in parts[2].split(","):
            continue
        if {"fail", "fail?", "noaddr", "handshake"} & set(parts[2].split(",")):
            raise RedisBackupError(f"cluster node {parts[1]} is marked {parts[2]}; refusing to back up a degraded cluster")
        addr = parts[1].split("@")[0].split(",")[0]
        host, _, port = addr.rpartition(":")
        slots = []
        for token in parts[8:]:
            if token.startswith("["):
                continue
            lo, _, hi = token.partition("-")
            slots.append([int(lo), int(hi or lo)])
        if slots:
            masters.append({"id": parts[0], "host": host, "port": int(port), "slots": sorted(slots)})
    return sorted(masters, key=lambda m: m["slots"][0][0])


def node_file(host: str, port: int) -> str:
    return f"node-{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{port}.rdb"


def _topology(r: redis.Redis) -> list[dict[str, Any]]:
    raw = r.execute_command("CLUSTER", "NODES")
    masters = parse_cluster_nodes(raw.decode() if isinstance(raw, bytes) else raw)
    covered = sum(hi - lo + 1 for m in masters for lo, hi in m["slots"])
    if covered != 16384:
        raise RedisBackupError(f"the cluster's masters serve {covered} of 16384 slots; refusing an incomplete backup")
    return masters


# -- backup --------------------------------------------------------------------------------------


def check_capture_window(day: dt.date, allow_late_capture: bool = False, now: dt.datetime | None = None) -> capture.CaptureTiming:
    """On time, or explicitly allowed late; raises for a past day otherwise (and for days not over)."""
    timing = capture.classify(day, now)
    if not timing.on_time and not allow_late_capture:
        raise LateCaptureRefused(
            f"Redis keeps no history: a snapshot taken now holds today's data, not the state at the end of {day} "
            f"(its on-time window was {timing.window_start:%Y-%m-%d %H:%M}..{timing.window_end:%Y-%m-%d %H:%M} UTC). "
            "Nothing was written. Allow a late capture (allow_late_capture / --allow-late-capture) to store "
            "today's snapshot under that day, marked late_capture with its real capture time."
        )
    return timing


def _standalone(s: RedisSettings, r: redis.Redis, writer: BackupWriter, tmp: Path, data_dir: str | None, mode: str,
                stall_timeout: float, wait_timeout: float) -> tuple[dict[str, Any], list[Captured]]:
    order = {"auto": ["bgsave", "network", "aof"] if data_dir else ["network"], "bgsave": ["bgsave"],
             "network": ["network"], "aof": ["aof"]}[mode]
    failures: list[str] = []
    for method in order:
        try:
            if method in ("bgsave", "aof") and not data_dir:
                raise SnapshotUnavailable(f"{method} needs the server's data dir on this machine (REDIS_DATA_DIR)")
            if method == "bgsave":
                meta, captured = _bgsave_and_stream(r, data_dir, writer, tmp / RDB_FILE, wait_timeout)  # type: ignore[arg-type]
            elif method == "network":
                at = _server_time_ms(r)
                meta, captured = _stream_network(s, s.host, s.port, writer, RDB_FILE, tmp / RDB_FILE, stall_timeout, at)
                meta["captured_at"] = _iso_ms(at)
            else:
                meta = _copy_aof(r, data_dir, writer, tmp, wait_timeout)  # type: ignore[arg-type]
                aof = (meta["appenddirname"], meta["appendfilename"])
                return {"mode": "aof", "transfer": "aof copy", "aof": meta, "captured_at": meta["captured_at"],
                        "fallbacks": failures}, [Captured(tmp, aof, rdb_facts_problem="an AOF copy")]
            return {"mode": "rdb", "transfer": "bgsave+copy" if method == "bgsave" else "redis-cli --rdb",
                    "captured_at": meta.pop("captured_at"), "rdb": meta, "fallbacks": failures}, [captured]
        except SnapshotUnavailable as exc:
            failures.append(f"{method}: {exc}")
            (tmp / RDB_FILE).unlink(missing_ok=True)  # a partial local copy must not be loaded later
    hint = "" if data_dir else " (set the server's data dir, REDIS_DATA_DIR, to allow BGSAVE-and-copy and the AOF fallback)"
    raise RedisBackupError(f"no snapshot could be taken of Redis at {s.host}:{s.port}: {'; '.join(failures)}{hint}")


def _cluster(s: RedisSettings, r: redis.Redis, writer: BackupWriter, tmp: Path,
             stall_timeout: float) -> tuple[dict[str, Any], list[Captured]]:
    before = _topology(r)
    layouts = []
    nodes = []
    for m in before:
        node = connect(s, host=m["host"], port=m["port"])
        try:
            info = source_info(node)
            at = _server_time_ms(node)
        finally:
            node.close()
        folder = tmp / node_file(m["host"], m["port"])[:-4]
        folder.mkdir()
        meta, captured = _stream_network(s, m["host"], m["port"], writer, node_file(m["host"], m["port"]), folder / RDB_FILE,
                                         stall_timeout, at)
        nodes.append({**m, **meta, "captured_at": _iso_ms(at), "source": info})
        layouts.append(captured)
    after = _topology(r)
    if [(m["id"], m["slots"]) for m in after] != [(m["id"], m["slots"]) for m in before]:
        raise RedisBackupError("the cluster's slot map changed during the backup (resharding or failover); nothing was published, retry")
    return {"mode": "cluster", "transfer": "redis-cli --rdb per master", "captured_at": nodes[0]["captured_at"],
            "cluster": {"nodes": nodes}, "fallbacks": []}, layouts


def backup_snapshot(s: RedisSettings, repo: Repository, partition: dt.date, *, allow_late_capture: bool = False,
                    data_dir: str | None = None, mode: str = "auto", now: dt.datetime | None = None,
                    stall_timeout: float = 600.0, wait_timeout: float = 3600.0) -> Backup:
    """Snapshot the server (or cluster) `s` names and publish it as the `partition` day's backup.

    `data_dir` (default: `s.data_dir`) is the server's data directory when it is on this
    machine; `mode` is auto, bgsave, network or aof (a cluster is always read over the
    network). Nothing is published unless the snapshot is complete and readable: its end
    marker and CRC64 checked and every key read, by the rdb-facts helper or a scratch server,
    whose content facts then go into the manifest.
    """
    if mode not in MODES:
        raise RedisBackupError(f"unknown snapshot mode {mode!r}; choose one of {MODES}")
    if data_dir is None:
        data_dir = getattr(s, "data_dir", "") or None  # RedisSettings.data_dir (REDIS_DATA_DIR), once settings have it
    timing = check_capture_window(partition, allow_late_capture, now)
    started = time.monotonic()
    r = connect(s)  # fail fast, before a lock or a file exists, with a clear message
    try:
        info = source_info(r)
        with repo.begin(SYSTEM, SNAPSHOT, partition) as writer, scratch_dir() as tmp:
            if info["cluster_enabled"]:
                meta, layouts = _cluster(s, r, writer, tmp, stall_timeout)
            else:
                meta, layouts = _standalone(s, r, writer, tmp, data_dir, mode, stall_timeout, wait_timeout)
            transferred = time.monotonic()
            facts = Facts()
            methods = []
            for captured in layouts:
                node_facts, method = snapshot_facts(captured, info.get("databases", 16))
                facts.merge(node_facts)
                methods.append(method)
                for node in meta.get("cluster", {}).get("nodes", []):
                    if captured.folder.name + ".rdb" == node["file"]:
                        node["keys"] = node_facts.keys
            meta["digest_method"] = methods[0] if len(set(methods)) == 1 else methods
            content = facts.to_json()
            writer.metadata.update(meta)
            writer.metadata.update({
                "server": f"{s.host}:{s.port}",
                "source": info,
                "late_capture": not timing.on_time,
                "content": content,
                "digest": content["digest"],
                "keys_total": content["keys"],
                "transfer_duration_s": round(transferred - started, 3),
                "digest_duration_s": round(time.monotonic() - transferred, 3),
                "duration_s": round(time.monotonic() - started, 3),
            })
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, s.host, s.port, s.username)) from None
    finally:
        r.close()
    assert writer.committed is not None
    return writer.committed


# -- reading a backup back -----------------------------------------------------------------------


def _layouts(backup: Backup) -> list[tuple[str, list[str], tuple[str, str] | None]]:
    """(folder name, files, aof) for each server the backup's files make up."""
    m = backup.metadata
    if m.get("mode") == "aof":
        aof = m["aof"]
        return [("aof", [aof["manifest"], *aof["files"]], (aof["appenddirname"], aof["appendfilename"]))]
    if m.get("mode") == "cluster":
        return [(n["file"][:-4], [n["file"]], None) for n in m["cluster"]["nodes"]]
    return [("rdb", [RDB_FILE], None)]


def _materialize(repo: Repository, backup: Backup, folder: Path, files: list[str], aof: tuple[str, str] | None) -> None:
    """Write files of the backup into `folder` as a server expects them; each read is sha256-checked."""
    folder.mkdir()
    target = folder / aof[0] if aof else folder
    target.mkdir(exist_ok=True)
    for name in files:
        dest = target / name if aof else folder / RDB_FILE
        with repo.open(backup, name) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


@contextlib.contextmanager
def _loaded(repo: Repository, backup: Backup, tmp: Path) -> Iterator[Iterator[ScratchServer]]:
    """Scratch servers holding the backup, one after another (one node's memory at a time).

    Closing the generator on exit stops the current server even when the caller's loop failed.
    """
    databases = backup.metadata.get("source", {}).get("databases", 16)

    def servers() -> Iterator[ScratchServer]:
        for name, files, aof in _layouts(backup):
            folder = tmp / name
            _materialize(repo, backup, folder, files, aof)
            try:
                with scratch_server(folder, databases=databases, aof=aof) as srv:
                    yield srv
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    gen = servers()
    try:
        yield gen
    finally:
        gen.close()


def verify_snapshot(repo: Repository, backup: Backup) -> dict[str, Any]:
    """Load the backup into scratch servers and compare their content with the manifest."""
    repo.verify(backup)
    expected = Facts.from_json(backup.metadata["content"])
    actual = Facts(expected.bucket_ms)
    with scratch_dir() as tmp, _loaded(repo, backup, tmp) as servers:
        for srv in servers:
            actual.merge(server_facts(srv))
    assert actual.observed_ms is not None
    problems, summary = compare_facts(expected, actual, actual.observed_ms)
    if problems:
        raise VerificationError(f"backup {backup.prefix} does not load into what its manifest records: " + "; ".join(problems[:10]))
    return {"backup": backup.prefix, "keys": actual.keys, "digest": f"{actual.digest:016x}", **summary}


# -- restore -------------------------------------------------------------------------------------


def copy_keys(src: Runner, dst: Runner, batches: Iterable[list[bytes]], replace: bool) -> int:
    """DUMP each key through `src` and RESTORE it through `dst`, keeping its absolute expiry time."""
    copied = 0
    for keys in batches:
        res = src([c for k in keys for c in (("PEXPIRETIME", k), ("DUMP", k))])
        restores = []
        for k, expire_at, payload in zip(keys, res[0::2], res[1::2]):
            if _check(expire_at) == -2 or _check(payload) is None:
                continue  # expired since the scan
            restores.append(("RESTORE", k, max(expire_at, 0), payload, "ABSTTL", *(("REPLACE",) if replace else ())))
        for reply in dst(restores) if restores else []:
            if isinstance(reply, Exception) and "BUSYKEY" in str(reply):
                raise RestoreRefused(f"a key of the backup appeared in the target during the restore ({reply}); "
                                     "someone else is writing to it. Pass --force to overwrite such keys")
            _check(reply)
        copied += len(restores)
    return copied


def _key_counts(target: Any, cluster: bool) -> dict[str, int]:
    if cluster:
        return {f"{n.host}:{n.port}": int(target.get_redis_connection(n).dbsize()) for n in target.get_primaries()}
    return {f"db{db}": int(v["keys"]) for db, v in ((k[2:], v) for k, v in target.info("keyspace").items()) if v.get("keys")}


def restore_snapshot(target: RedisSettings, repo: Repository, backup: Backup, force: bool = False, *,
                     ttl_tolerance_ms: int = 1000) -> dict[str, Any]:
    """Load a snapshot into the Redis server or cluster `target` names, then prove it matches the manifest.

    Order, so a failure changes nothing it should not: check the backup's checksums; refuse a
    replica, a cluster target for keys outside db 0, a target lacking a db the backup uses,
    and a non-empty target unless `force`; then copy. Without `force` the target was empty
    and is compared whole; with `force` keys of the same name are overwritten, other keys are
    kept, and the backup's keys as found in the target are compared.
    """
    started = time.monotonic()
    if (backup.system, backup.artifact) != (SYSTEM, SNAPSHOT):
        raise RedisBackupError(f"{backup.prefix} is not a Redis snapshot")
    repo.verify(backup)  # integrity before any write
    expected = Facts.from_json(backup.metadata["content"])
    dbs = sorted({db for db, _, _ in expected.counts})
    where = f"{target.host}:{target.port}"
    r = connect(target)
    rc: RedisCluster | None = None
    conns: list[BulkConnection] = []
    runners: dict[int, Runner] = {}

    def bulk(db: int = 0, host: str = target.host, port: int = target.port) -> BulkConnection:
        conns.append(BulkConnection(host=host, port=port, db=db, username=target.username, password=target.password))
        return conns[-1]

    def dst(db: int) -> Runner:
        if db not in runners:
            if rc is not None:
                raise RestoreRefused(f"the backup has keys in db {db}; a cluster at {where} has only db 0. Nothing was changed")
            try:
                runners[db] = bulk(db).run
            except RedisBackupError as exc:
                raise RestoreRefused(f"Redis at {where} cannot select db {db}, which the backup uses ({exc}); nothing was changed") from None
        return runners[db]

    try:
        info = r.info()
        if info.get("role") != "master":
            raise RestoreRefused(f"Redis at {where} is a replica; restore into its master")
        cluster = bool(info.get("cluster_enabled"))
        if cluster:
            rc = connect_cluster(target)
            runners[0] = cluster_runner(rc)
        for db in dbs:
            dst(db)  # every refusal before the first write
        existing = _key_counts(rc or r, cluster)
        if sum(existing.values()) and not force:
            raise RestoreRefused(f"Redis at {where} is not empty ({existing}); nothing was changed. Restore into an empty "
                                 "server, or pass --force to overwrite keys of the same name (other keys are kept)")
        t_lo = _server_time_ms(r)
        copied = 0
        actual = Facts(expected.bucket_ms)
        with scratch_dir() as tmp, _loaded(repo, backup, tmp) as servers:
            for srv in servers:
                for db in dbs_with_keys(srv.client()):
                    src = srv.bulk(db).run
                    copied += copy_keys(src, dst(db), unique_batches(src), replace=force)
                    if force:  # the backup's keys, as the target now holds them
                        collect_facts(actual, db, dst(db), unique_batches(src))
        if not force:  # the whole target, which was empty: each master (or db) scanned on its own
            if cluster:
                readers = [(0, bulk(host=m["host"], port=m["port"]).run) for m in _topology(r)]
            else:
                readers = [(db, dst(db)) for db in dbs_with_keys(r)]
            for db, run in readers:
                collect_facts(actual, db, run, unique_batches(run))
        t_hi = _server_time_ms(r)
        problems, summary = compare_facts(expected, actual, (t_lo - ttl_tolerance_ms, t_hi + ttl_tolerance_ms), ttl_tolerance_ms)
        if problems:
            raise VerificationError(f"Redis at {where} does not match backup {backup.prefix} after the restore (it holds the "
                                    "restored keys; inspect them before relying on it): " + "; ".join(problems[:10]))
        after = _key_counts(rc or r, cluster)
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, target.host, target.port, target.username)) from None
    finally:
        for c in conns:
            c.close()
        if rc is not None:
            rc.close()
        r.close()
    return {
        "backup": backup.prefix,
        "target": where,
        "cluster_target": cluster,
        "keys_restored": copied,
        "keys_verified": actual.keys,
        "digest": f"{actual.digest:016x}",
        "keys_kept_from_before": max(0, sum(after.values()) - actual.keys) if force else 0,
        **summary,
        "duration_s": round(time.monotonic() - started, 3),
    }


def place_rdb(repo: Repository, backup: Backup, data_dir: str | os.PathLike[str], *, node: str | None = None,
              dbfilename: str = RDB_FILE, force: bool = False) -> dict[str, Any]:
    """Put a backup's RDB into the data dir of a *stopped* Redis, atomically (temp file, fsync, rename).

    Start redis-server on that dir afterwards (with appendonly no, or Redis would load an AOF
    instead) and it loads the snapshot. Refused while a redis-server works in that dir, when
    the dir holds an AOF, and, without `force`, over an existing file (with `force` the old
    file is kept as `<name>.before-restore-<time>`). For a cluster backup, `node` ("host:port")
    picks the master's file.
    """
    repo.verify(backup)
    folder = Path(data_dir)
    if backup.metadata.get("mode") == "aof":
        raise RedisBackupError(f"{backup.prefix} is an AOF copy, not an RDB; use restore_snapshot")
    if backup.metadata.get("mode") == "cluster":
        files = {f"{n['host']}:{n['port']}": n["file"] for n in backup.metadata["cluster"]["nodes"]}
        if node not in files:
            raise RedisBackupError(f"{backup.prefix} is a cluster backup: name the node, one of {sorted(files)}")
        name = files[node]
    else:
        name = RDB_FILE
    if not folder.is_dir():
        raise RedisBackupError(f"data dir {folder} does not exist")
    if pids := _servers_in(folder):
        raise RestoreRefused(f"redis-server (pid {pids}) is running in {folder}; stop it first (it would overwrite the file on exit)")
    if any(folder.glob("appendonlydir*")) or any(folder.glob("*.aof")):
        raise RestoreRefused(f"{folder} holds an AOF, which Redis loads instead of {dbfilename}; move it away first")
    final = folder / dbfilename
    kept = None
    if final.exists():
        if not force:
            raise RestoreRefused(f"{final} exists; nothing was changed. Pass force to replace it (the old file is kept aside)")
        kept = final.with_name(f"{dbfilename}.before-restore-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}")
    tmp = folder / f".{dbfilename}.restoring-{os.getpid()}"
    try:
        with repo.open(backup, name) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if kept:
            os.replace(final, kept)
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {"backup": backup.prefix, "placed": str(final), "previous_kept_as": str(kept) if kept else None}

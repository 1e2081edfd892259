"""Throwaway redis-servers on this host, for reading a snapshot's keys: the digest fallbacks,
restores (load, then copy key by key) and the weekly verification all need one.

A scratch server listens on a unix socket in a private (0700) temp dir, persists nothing and is
always stopped on exit. Cleanup in `finally` cannot run after SIGKILL or the OOM killer, and
these dirs hold a copy of the data, so each is named after the pid that owns it and the next
run sweeps what a dead owner left (`sweep_stale_scratch`).

Limits: a scratch server needs about the dataset's memory on this host, and the local
redis-server must read the source's RDB version (a 7.0 binary reads Redis <= 7.0 RDBs).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from auction_backup_pipelines.child_env import base_env
from auction_backup_pipelines.localhost import free_port, pid_alive
from auction_backup_pipelines.redis.client import RDB_FILE, RedisBackupError, client_options, raw_replies, redis_tool
from auction_backup_pipelines.redis.resp import BulkConnection
from auction_backup_pipelines.settings import RedisSettings


@dataclass
class ScratchServer:
    """A running scratch redis-server on the folder `dir`; the clients it hands out close when it stops."""

    dir: Path
    proc: subprocess.Popen
    port: int
    socket_path: Path | None  # None: loopback TCP on `port`, guarded by `password`
    password: str = field(default="", repr=False)
    _clients: list[Any] = field(default_factory=list)

    def client(self, db: int = 0, timeout: float = 600.0) -> redis.Redis:
        where: dict[str, Any] = (
            {"unix_socket_path": str(self.socket_path)} if self.socket_path else {"host": "127.0.0.1", "port": self.port}
        )
        c = raw_replies(redis.Redis(**where, db=db, password=self.password or None, socket_timeout=timeout, **client_options()))
        self._clients.append(c)
        return c

    def bulk(self, db: int = 0) -> BulkConnection:
        where: dict[str, Any] = (
            {"unix_socket": str(self.socket_path)} if self.socket_path else {"host": "127.0.0.1", "port": self.port}
        )
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
        for pid in servers_in(folder):  # our orphaned scratch server, working in that folder
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    return removed


def servers_in(folder: Path) -> list[int]:
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
def scratch_server(
    data: Path,
    *,
    port: int = 0,
    databases: int = 16,
    aof: tuple[str, str] | None = None,
    extra_args: Iterable[str] = (),
    load_timeout: float = 1800.0,
) -> Iterator[ScratchServer]:
    """Run redis-server on the folder `data` (its dump.rdb, or with `aof`=(dirname, filename) its AOF).

    It listens on a unix socket in a private temp dir (and on 127.0.0.1:`port` only if given;
    when TMPDIR is too long for a socket path, on a free loopback port with a one-off
    password), persists nothing, and is always stopped on exit. The caller owns `data`.
    """
    # The socket gets its own short-named dir: unix socket paths are limited to about 107 bytes.
    sockdir = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}sock-{os.getpid()}-"))
    sock_path = sockdir / "redis.sock"
    sock: Path | None = sock_path
    secret = ""
    if len(bytes(sock_path)) > 100:  # TMPDIR too long for a socket: loopback TCP, with a one-off password
        sock = None
        if not port:
            port, secret = free_port(), secrets.token_hex(16)
    log = data / "redis.log"
    argv = [
        redis_tool("redis-server"),
        "-",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data),
        "--dbfilename",
        RDB_FILE,
        "--save",
        "",
        "--databases",
        str(max(16, databases)),
        "--daemonize",
        "no",
        "--logfile",
        str(log),
        *(("--unixsocket", str(sock), "--unixsocketperm", "700") if sock else ()),
    ]
    if aof:
        argv += ["--appendonly", "yes", "--appenddirname", aof[0], "--appendfilename", aof[1], "--appendfsync", "no"]
    else:
        argv += ["--appendonly", "no"]
    argv += list(extra_args)
    try:
        # "-": more config comes from stdin, which keeps the password out of argv (ps shows argv);
        # base_env: a server of ours holds none of our secrets in its environment.
        proc = subprocess.Popen(argv, env=base_env(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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

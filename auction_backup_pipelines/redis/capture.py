"""Getting one server's RDB snapshot into the repository, proven complete, with a local copy.

Two ways, each streaming into the repository, into a private local copy (for a scratch server,
if needed) and into the `rdb-facts` helper at once:

* bgsave  — only when the server's data directory is on this machine: BGSAVE, wait until INFO
  persistence shows that save (counted by `rdb_saves`) finished with
  `rdb_last_bgsave_status:ok`, then stream the dump file. No replication handshake, no
  diskless-sync delay (5 s by default), so it is the fastest.
* network — `redis-cli --rdb -`: the server forks and sends an RDB as it would to a new
  replica; no file-system access, so it serves remote servers and cluster nodes. The password
  reaches redis-cli through REDISCLI_AUTH, never argv. redis-cli 7.0 also writes the 40-byte
  end marker of a diskless transfer to stdout (it can only truncate a file), so the last 40
  bytes are held back and dropped when its byte count on stderr says so.

Either way the RDB must start with its magic and end with the EOF opcode and checksum
(`check_rdb`), or nothing is published.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import redis

from auction_backup_pipelines.redis import rdb_facts, tls
from auction_backup_pipelines.redis.client import (
    CHUNK,
    RDB_FILE,
    RedisBackupError,
    SnapshotUnavailable,
    cli_env,
    iso_ms,
    redis_tool,
    server_time_ms,
)
from auction_backup_pipelines.redis.facts import BUCKET_MS
from auction_backup_pipelines.repository.repository import BackupWriter
from auction_backup_pipelines.repository.streams import ByteSink
from auction_backup_pipelines.settings import RedisSettings

EOF_MARK = 40  # length of the end marker of a diskless replication transfer


class Tee:
    """A reader handed to ArtifactStream.copy_from: copies what passes to a local file, remembers head and tail."""

    def __init__(self, source: BinaryIO, tee: ByteSink, limit: int | None = None):
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


class RedisCliRdb(Tee):
    """`redis-cli --rdb -` as a reader: holds back the last 40 bytes until redis-cli tells what they are."""

    def __init__(self, proc: subprocess.Popen, stderr: BinaryIO, tee: ByteSink, where: str, stall_timeout: float):
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
            if certificate := tls.certificate_problem(err, self.where):
                raise RedisBackupError(certificate)  # not SnapshotUnavailable: no other way would verify better
            lines = [ln for ln in err.strip().splitlines() if not ln.startswith("sending REPLCONF")]
            raise SnapshotUnavailable(
                f"{self.where}: redis-cli --rdb failed (exit {rc}): {' | '.join(lines[-3:]) or 'no message'}"
            )
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


def stream_network(
    s: RedisSettings,
    host: str,
    port: int,
    writer: BackupWriter,
    name: str,
    tee_path: Path,
    stall_timeout: float,
    captured_ms: int,
) -> tuple[dict[str, Any], Captured]:
    """Stream `redis-cli --rdb -` from host:port into the backup file `name`, the local copy `tee_path` and the helper."""
    argv = [redis_tool("redis-cli"), "-h", host, "-p", str(port), *tls.cli_args(s)]
    if s.username:
        argv += ["--user", s.username]
    argv += ["--rdb", "-"]
    where = f"Redis at {host}:{port}"
    with tempfile.TemporaryFile() as err, open(tee_path, "wb") as tee, rdb_facts.streaming(BUCKET_MS, captured_ms) as facts:
        proc = subprocess.Popen(argv, env=cli_env(s), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        source = RedisCliRdb(proc, err, rdb_facts.Fanout(tee, facts), where, stall_timeout)
        try:
            with writer.open_file(name) as out:
                out.copy_from(source)
        finally:
            source.close()
        captured = Captured(tee_path.parent, None, captured_ms, facts.result(), facts.problem)
    return {"file": name, "bytes": source.size, "rdb_version": source.head[5:9].decode()}, captured


def bgsave_and_stream(
    r: redis.Redis, data_dir: str, writer: BackupWriter, tee_path: Path, timeout: float
) -> tuple[dict[str, Any], Captured]:
    """BGSAVE, wait until that save succeeded, then stream the dump file from `data_dir` into the backup."""
    try:
        cfg = r.config_get("dir", "dbfilename")
        folder, filename = cfg.get("dir", data_dir), cfg.get("dbfilename", RDB_FILE)
    except redis.ResponseError:  # CONFIG disabled: trust the configured folder and Redis's default name
        folder, filename = data_dir, RDB_FILE
    if folder is None or filename is None:
        raise SnapshotUnavailable("CONFIG GET dir/dbfilename answered without a value; cannot tell where the server saves")
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
            wait_persistence(r, lambda p: not p["rdb_bgsave_in_progress"], deadline, "a running BGSAVE to end")
    captured_ms = server_time_ms(r)
    # rdb_saves counts forks, so "more saves than before and none running" means ours ran (or a
    # later one, which is as good); without the counter (Redis < 7), LASTSAVE must move.
    lastsave = r.lastsave()
    done = wait_persistence(
        r,
        lambda p: not p["rdb_bgsave_in_progress"] and (p["rdb_saves"] > saves if saves is not None else r.lastsave() > lastsave),
        deadline,
        "BGSAVE to finish",
    )
    if done.get("rdb_last_bgsave_status") != "ok":
        raise SnapshotUnavailable(
            f"BGSAVE failed on the server (rdb_last_bgsave_status:{done.get('rdb_last_bgsave_status')}); see its log"
        )
    where = f"{folder}/{filename}"
    with (
        open(os.path.join(folder, filename), "rb") as f,
        open(tee_path, "wb") as tee,
        rdb_facts.streaming(BUCKET_MS, captured_ms) as facts,
    ):
        source = Tee(f, rdb_facts.Fanout(tee, facts))  # the open file keeps this save's bytes even if a newer save replaces it
        with writer.open_file(RDB_FILE) as out:
            out.copy_from(source)
            version = check_rdb(source.head, source.tail, source.size, where)
        captured = Captured(tee_path.parent, None, captured_ms, facts.result(), facts.problem)
    return {"file": RDB_FILE, "bytes": source.size, "rdb_version": version, "captured_at": iso_ms(captured_ms)}, captured


def wait_persistence(r: redis.Redis, ready: Callable[[dict], bool], deadline: float, what: str) -> dict[str, Any]:
    """INFO persistence once `ready` says so; SnapshotUnavailable after `deadline` (time.monotonic())."""
    pause = 0.02
    while True:
        info = r.info("persistence")
        if ready(info):
            return info
        if time.monotonic() > deadline:
            raise SnapshotUnavailable(f"timed out waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)

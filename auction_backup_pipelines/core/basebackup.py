"""PostgreSQL base backups: the physical copy that point-in-time recovery starts from.

`pg_basebackup -D - -Ft` writes one tar to stdout, which we stream through zstd into the
repository: no temporary copy on disk, and compression overlaps the transfer (pg_basebackup's
own gzip is several times slower, see bench/). Writing to stdout rules out `-X stream`
(pg_basebackup can stream WAL only into a folder), so we use `-X fetch`: the WAL written
during the backup is appended to the same tar, which makes the backup consistent on its own;
the continuous archive (wal_receiver.py) holds every segment as well. `--checkpoint=fast`
because the default spread checkpoint can make an on-demand backup wait for minutes.

pg_basebackup injects `backup_manifest` at the end of the tar; we keep a bounded tail of the
stream to read its checksum and WAL range without buffering the backup.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
import subprocess
import tarfile
import time
from typing import Any

from ..settings import PostgresSettings
from . import postgres as pg
from .repository import Backup, Repository

BASE_BACKUP = "base_backup"
TAR_FILE = "base.tar"
TAIL_BYTES = 16 * 1024 * 1024  # the manifest lists every file: ~150 bytes each

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")


class _Tail:
    """The last `limit` bytes of a stream and the absolute offset where they start."""

    def __init__(self, limit: int):
        self.limit = limit
        self.buf = bytearray()
        self.total = 0

    def feed(self, block: bytes) -> None:
        self.total += len(block)
        self.buf += block
        if len(self.buf) > 2 * self.limit:
            del self.buf[: len(self.buf) - self.limit]

    def find_member(self, name: str) -> bytes | None:
        """Content of the tar member `name` if its header lies in the tail (tar blocks are 512-aligned)."""
        start = self.total - len(self.buf)
        first = (-start) % 512
        for off in range(first, len(self.buf) - 511, 512):
            block = bytes(self.buf[off : off + 512])
            if not block.startswith(name.encode() + b"\0"):
                continue
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError:
                continue
            if info.name == name:
                return bytes(self.buf[off + 512 : off + 512 + info.size])
        return None


def _fast_compression(repo: Repository) -> Repository:
    """The same repository, compressing with zstd level 1 on two threads.

    A base backup is mostly table pages: level 1 already shrinks pgbench data ~20x, and level 3
    on one thread made the backup twice as slow as pg_basebackup itself (bench/bench_pitr.py).
    """
    fast = copy.copy(repo)
    fast.zstd_level, fast.zstd_threads = 1, 2
    return fast


def take_base_backup(s: PostgresSettings, repo: Repository, partition: dt.date, extra: dict[str, Any] | None = None) -> Backup:
    pg.connect(s).close()  # clear error before anything is written
    repo = _fast_compression(repo)
    with repo.begin(pg.SYSTEM, BASE_BACKUP, partition) as writer:
        start_time = dt.datetime.now(dt.timezone.utc)
        started = time.monotonic()
        argv = [pg.pg_bin("pg_basebackup"), "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast", "--verbose",
                "--no-password", f"--label=auction-backup {partition}"]
        proc, err = pg._run_capturing_stderr(argv, pg.child_env(s), stdout=subprocess.PIPE)
        tail = _Tail(TAIL_BYTES)
        try:
            with writer.open_file(TAR_FILE) as out:
                assert proc.stdout is not None
                while block := proc.stdout.read(1 << 20):
                    out.write(block)
                    tail.feed(block)
                rc = proc.wait()
                log = pg._stderr_tail(err, limit=20000)
                if rc != 0:
                    raise pg.PostgresError(f"pg_basebackup from {s.host}:{s.port} failed (exit {rc}): {log[-2000:]}")
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            err.close()
        stop_time = dt.datetime.now(dt.timezone.utc)
        start_m, end_m = _START.search(log), _END.search(log)
        if not (start_m and end_m):
            raise pg.PostgresError(f"pg_basebackup did not report its WAL range: {log[-1000:]}")
        manifest = tail.find_member("backup_manifest")
        manifest_checksum = None
        if manifest:
            manifest_checksum = json.load(io.BytesIO(manifest)).get("Manifest-Checksum")
        with pg.connect(s) as conn:
            server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        writer.metadata.update(
            {
                "start_lsn": start_m.group(1),
                "stop_lsn": end_m.group(1),
                "timeline": int(start_m.group(2)),
                "start_time": start_time.isoformat(),
                "stop_time": stop_time.isoformat(),
                "captured_at": stop_time.isoformat(),
                "backup_manifest_checksum": manifest_checksum,
                "server": f"{s.host}:{s.port}",
                "server_version": server_version,
                "wal_method": "fetch (WAL of the backup inside the tar)",
                "duration_s": round(time.monotonic() - started, 3),
                **(extra or {}),
            }
        )
    assert writer.committed is not None
    return writer.committed

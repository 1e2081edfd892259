"""PostgreSQL base backups: the physical copy that point-in-time recovery starts from.

`pg_basebackup -D - -Ft --compress=client-zstd:level=1,workers=2` writes one zstd-compressed
tar to stdout, which we stream into the repository as it is (no second compression): no
temporary copy on disk, and pg_basebackup's own multi-threaded zstd keeps the backup as fast
as an uncompressed `pg_basebackup -Ft` into a folder while storing ~15x less (bench/); zstd on
our side cost ~1.7x, and pg_basebackup's gzip is slower still. Writing to stdout rules out `-X stream`
(pg_basebackup can stream WAL only into a folder), so we use `-X fetch`: the WAL written
during the backup is appended to the same tar, which makes the backup consistent on its own;
the continuous archive (wal_receiver.py) holds every segment as well. `--checkpoint=fast`
because the default spread checkpoint can make an on-demand backup wait for minutes.

pg_basebackup injects `backup_manifest` at the end of the tar. Reading it while backing up
meant decompressing the whole stream on the side, which made the backup 1.5x slower on two
cores; `inspect_tar` does it afterwards instead (the daily `base_backup_integrity` check): it
reads the stored backup back end to end, checks the manifest's own checksum and lists what
the tar holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import subprocess
import tarfile
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard

from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres.client import (
    SYSTEM,
    PostgresError,
    child_env,
    connect,
    explain_tls,
    pg_bin,
    run_capturing_stderr,
    stderr_tail,
)
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError
from auction_backup_pipelines.settings import PostgresSettings

BASE_BACKUP = "base_backup"
TAR_FILE = "base.tar.zst"  # zstd by pg_basebackup, stored as is

_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")
_PROGRESS = re.compile(r"(\d+)/(\d+) kB \(100%\)")


def uncompressed_bytes(log: str) -> int | None:
    """The tar's size before compression, from pg_basebackup's last `--progress` line (kB), or None."""
    found = _PROGRESS.findall(log)
    return int(found[-1][0]) * 1024 if found else None


@dataclass(frozen=True)
class TarInspection:
    """A stored base backup read end to end: a complete tar whose backup_manifest matches its own checksum."""

    tar_members: int
    backup_manifest_checksum: str  # the Manifest-Checksum PostgreSQL wrote into backup_manifest

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def inspect_tar(repo: Repository, backup: Backup) -> TarInspection:
    """Read a stored base backup end to end: checksums (as the repository streams it), the tar
    structure, and PostgreSQL's own backup_manifest, whose checksum must match its content."""
    members = 0
    manifest: bytes | None = None
    has_label = False
    try:
        with open_tar(repo, backup) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for info in tar:
                members += 1
                has_label = has_label or info.name == "backup_label"
                if info.name == "backup_manifest":
                    f = tar.extractfile(info)
                    manifest = f.read() if f else None
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as exc:
        # A damaged byte can reach the decompressor or the tar reader before the stream's
        # sha256 is checked at its end: it is the same verdict, said in the same words.
        raise IntegrityError(
            f"{backup.prefix}: the stored tar cannot be read ({exc}); the backup is corrupt or truncated"
        ) from None
    if not has_label or manifest is None:
        raise PostgresError(f"{backup.prefix}: the tar lacks {'backup_label' if not has_label else 'backup_manifest'}")
    body, _, _ = manifest.rpartition(b'"Manifest-Checksum"')
    claimed = json.loads(manifest).get("Manifest-Checksum")
    if hashlib.sha256(body).hexdigest() != claimed:
        raise PostgresError(f"{backup.prefix}: backup_manifest does not match its own checksum")
    return TarInspection(tar_members=members, backup_manifest_checksum=claimed)


def open_tar(repo: Repository, backup: Backup) -> BinaryIO:
    """The backup's tar as a stream (pg_basebackup compressed it); checksums checked as it is read."""
    return zstandard.ZstdDecompressor().stream_reader(repo.open(backup, TAR_FILE), read_across_frames=True)


def take_base_backup_for_day(s: PostgresSettings, repo: Repository, day: dt.date, allow_late_capture: bool = False) -> Backup:
    """The base backup of partition `day`: on time, or refused (a copy of the primary as it is
    now cannot stand for a past day) unless a late capture is allowed, which is then recorded."""
    timing = capture.classify(day)
    if not timing.on_time and not allow_late_capture:
        raise capture.CaptureWindowError(
            f"partition {day} is a backfill: a base backup is a copy of the primary as it is now, so it cannot "
            "stand for a past day. Nothing was written. Allow a late capture to store one anyway, marked as such."
        )
    return take_base_backup(s, repo, day, extra={"late_capture": not timing.on_time})


def base_backup_argv(s: PostgresSettings, partition: dt.date) -> list[str]:
    """pg_basebackup's command line (no secret: the password goes through the environment).
    BASE_BACKUP_MAX_RATE becomes `--max-rate`: the server sends the data directory, and with
    `-X fetch` the WAL too, no faster, which bounds the backup's reads against production's."""
    argv = [
        pg_bin("pg_basebackup", s.bin_dir),
        "-D",
        "-",
        "-Ft",
        "-X",
        "fetch",
        "--checkpoint=fast",
        "--verbose",
        "--progress",  # its last line gives the uncompressed size, which the compressed stream hides
        "--compress=client-zstd:level=1,workers=2",
        "--no-password",
        f"--label=auction-backup {partition}",
    ]
    return argv + ([f"--max-rate={s.base_backup_max_rate}"] if s.base_backup_max_rate else [])


def take_base_backup(s: PostgresSettings, repo: Repository, partition: dt.date, extra: dict[str, Any] | None = None) -> Backup:
    connect(s).close()  # clear error before anything is written
    with repo.begin(SYSTEM, BASE_BACKUP, partition) as writer:
        start_time = dt.datetime.now(dt.UTC)
        started = time.monotonic()
        proc, err = run_capturing_stderr(base_backup_argv(s, partition), child_env(s), stdout=subprocess.PIPE)
        try:
            with writer.open_file(TAR_FILE, compression="none") as out:
                assert proc.stdout is not None
                out.copy_from(proc.stdout)
                rc = proc.wait()
                log = stderr_tail(err, limit=20000)
                if rc != 0:
                    raise PostgresError(
                        explain_tls(log, s) or f"pg_basebackup from {s.host}:{s.port} failed (exit {rc}): {log[-2000:]}"
                    )
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            err.close()
        stop_time = dt.datetime.now(dt.UTC)
        start_m, end_m = _START.search(log), _END.search(log)
        if not (start_m and end_m):
            raise PostgresError(f"pg_basebackup did not report its WAL range: {log[-1000:]}")
        with connect(s) as conn:
            server_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        writer.metadata.update(
            {
                "start_lsn": start_m.group(1),
                "stop_lsn": end_m.group(1),
                "timeline": int(start_m.group(2)),
                "start_time": start_time.isoformat(),
                "stop_time": stop_time.isoformat(),
                "captured_at": stop_time.isoformat(),
                "server": f"{s.host}:{s.port}",
                "server_version": server_version,
                "wal_method": "fetch (WAL of the backup inside the tar)",
                "tar_compression": "zstd level 1 (pg_basebackup client-side)",
                "uncompressed_bytes": uncompressed_bytes(log),
                "duration_s": round(time.monotonic() - started, 3),
                **({"max_rate": s.base_backup_max_rate} if s.base_backup_max_rate else {}),
                **(extra or {}),
            }
        )
    assert writer.committed is not None
    return writer.committed

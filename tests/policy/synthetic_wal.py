"""Synthetic base backups and WAL archives for the retention tests: a base backup is a manifest
with start/stop LSNs, a WAL file a data object with its record. Shared by the local WAL pruning
tests and the offsite ones, so both judge the same shapes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

from auction_backup_pipelines.policy import offsite_retention, wal_pruning
from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.postgres.wal_archive import SegmentRecord
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

SIZE = wr.DEFAULT_SEGMENT_SIZE


def seg(n: int) -> str:
    return wr.segment_name(1, n)


def put_base(repo: Repository, day: dt.date | str, first: int, last: int, **meta: object) -> Backup:
    """A base backup of `day` (stopped at 02:00 that day) whose WAL is segments first..last."""
    day = dt.date.fromisoformat(day) if isinstance(day, str) else day
    stop = dt.datetime.combine(day, dt.time(2), tzinfo=dt.UTC)
    with repo.begin("postgres", "base_backup", day) as w:
        with w.open_file("base.tar.zst", compression="none") as f:
            f.write(b"tar")
        w.metadata.update(
            start_lsn=wr.format_lsn(first * SIZE + 0x28),
            stop_lsn=wr.format_lsn(last * SIZE + 0x138),
            timeline=1,
            stop_time=stop.isoformat(),
            **meta,
        )
    assert w.committed is not None
    return w.committed


def put_wal(repo: Repository, name: str) -> None:
    """An archived WAL file whose record matches its stored bytes (so copy_wal copies it)."""
    data = b"wal " + name.encode()
    with repo.backend.writer(layout.wal_data_key(name)) as f:
        f.write(data)
    sha = hashlib.sha256(data).hexdigest()
    now = dt.datetime.now(dt.UTC).isoformat()
    rec = SegmentRecord(name, 1, name.endswith(".partial"), SIZE, sha, len(data), sha, now)
    with repo.backend.writer(layout.wal_record_key(name)) as f:
        f.write(json.dumps(dataclasses.asdict(rec)).encode())


def wal_left(repo: Repository) -> set[str]:
    return set(wal_pruning.wal_names(o.key for o in repo.backend.list(layout.WAL_AREA + "/")))


def prune(repo: Repository, dry_run: bool, now: dt.datetime, pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW) -> int:
    """The local part of `auction-backup prune [--dry-run]`, as the CLI runs it."""
    return offsite_retention.prune_target_command(offsite_retention.local_target(repo, pitr_window), dry_run, now)

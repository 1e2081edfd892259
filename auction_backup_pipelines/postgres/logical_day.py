"""The logical dump of one partition day, on time or reconstructed.

On time (the run happens during D+1) the dump is taken from the live primary. Later, the live
data is no longer D's: if a base backup and the WAL archive cover the end of D, the database is
recovered as of D+1 00:00 UTC into a scratch instance and dumped there; otherwise the run is
refused, or, only when explicitly allowed, today's data is stored and marked a late capture.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.logical_dump import backup_logical
from auction_backup_pipelines.postgres.wal_archive import WalArchive, lsn_to_segment
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings


class BackfillRefused(capture.CaptureWindowError):
    """A past day can neither be reconstructed nor captured late."""


def scratch_dir(prefix: str) -> Path:
    """A new folder the postgres user can reach (its parent is traversable, not listable)."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o711)
    return parent


@dataclass(frozen=True)
class DayPlan:
    how: str  # "live" | "reconstruct" | "late capture"
    reason: str


def plan_day(repo: Repository, day: dt.date, allow_late_capture: bool = False, now: dt.datetime | None = None) -> DayPlan:
    """How partition `day` can be backed up now; raises BackfillRefused when it cannot."""
    timing = capture.classify(day, now)
    if timing.on_time:
        return DayPlan("live", "on time: the live primary is the state at the end of the day")
    window = pitr.recovery_window(repo, WalArchive(repo.backend))
    if window.reach_for(capture.day_end(day)) is not None:
        return DayPlan("reconstruct", f"base backups and WAL cover the end of {day}; {window.describe()}")
    if allow_late_capture:
        return DayPlan("late capture", "the end of the day cannot be reconstructed; storing today's data, marked as such")
    raise BackfillRefused(
        f"partition {day} is a backfill (its on-time window ended {timing.window_end:%Y-%m-%d %H:%M} UTC) and the end "
        f"of that day cannot be reconstructed: {window.describe()}. Nothing was written. Allow a late capture "
        "to store today's data under that day, marked as such."
    )


def backup_logical_day(
    s: PostgresSettings,
    repo: Repository,
    day: dt.date,
    allow_late_capture: bool = False,
    checksums: bool = True,
    now: dt.datetime | None = None,
) -> Backup:
    plan = plan_day(repo, day, allow_late_capture, now)
    if plan.how == "reconstruct":
        return reconstruct_dump(s, repo, day, capture.day_end(day), checksums)
    late = plan.how == "late capture"
    source = "live primary (late capture)" if late else "live primary"
    return backup_logical(s, repo, day, extra={"late_capture": late, "source": source}, checksums=checksums)


def wal_dependency(repo: Repository, base_backup: str, reached_lsn: str) -> dict[str, str]:
    """The WAL a recovery from `base_backup` (its key) to `reached_lsn` replayed, as the manifest's
    `depends_on_wal`: first and last segment names, inclusive, on the base backup's timeline.

    The first is the segment of the base backup's start LSN; the last the segment holding the
    LSN recovery reached (reported after promotion, on the next timeline: a segment's number does
    not change with the timeline, and the new timeline's first segment is a copy of it)."""
    base = repo.load_manifest(BackupRef.parse(base_backup).manifest_key)
    timeline = int(base.metadata["timeline"])
    return {
        "first": lsn_to_segment(base.metadata["start_lsn"], timeline),
        "last": lsn_to_segment(reached_lsn, timeline),
    }


def reconstruct_dump(s: PostgresSettings, repo: Repository, day: dt.date, as_of: dt.datetime, checksums: bool = True) -> Backup:
    """Recover the database as of `as_of` into a scratch instance and store its dump as `day`.

    The dump depends on what it was recovered from: its manifest names the base backup in
    `depends_on` and the WAL in `depends_on_wal`, and retention keeps both while it keeps the
    dump (policy/pruning.py)."""
    archive = WalArchive(repo.backend)
    workdir = scratch_dir("pitr-backfill-")
    try:
        result = pitr.restore_to_time(s, repo, archive, as_of, workdir / "instance")
        with result.instance(s.bin_dir) as instance:
            backup = backup_logical(
                instance.settings(s),
                repo,
                day,
                checksums=checksums,
                extra={
                    "late_capture": False,
                    "captured_at": as_of.isoformat(),
                    "source": "reconstructed via PITR",
                    "reconstructed_via_pitr": True,
                    "recovery_target_time": as_of.isoformat(),
                    "reached_transaction_time": result.reached_transaction_time,
                    "base_backup": result.base_backup,
                    "depends_on": [result.base_backup],
                    "depends_on_wal": wal_dependency(repo, result.base_backup, result.reached_lsn),
                },
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return backup

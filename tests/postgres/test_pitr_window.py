"""The recoverable window and the backfill decision, from a repository's contents alone."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from auction_backup_pipelines.postgres import logical_day, pitr
from auction_backup_pipelines.postgres.base_backup import TAR_FILE
from auction_backup_pipelines.postgres.wal_archive import SegmentRecord, WalArchive, segment_name
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.repository import Repository

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 20, 22, 0, tzinfo=UTC)


def _base_backup(repo, day, start_segment, stop_time):
    lsn = f"0/{start_segment * 0x1000000 + 0x28:X}"
    with repo.begin("postgres", "base_backup", day) as w:
        with w.open_file(TAR_FILE, compression="none") as f:
            f.write(b"tar")
        w.metadata.update(start_lsn=lsn, stop_lsn=lsn, timeline=1, stop_time=stop_time.isoformat())


def _segment(archive, number, archived_at, partial=False):
    name = segment_name(1, number) + (".partial" if partial else "")
    rec = SegmentRecord(
        name=name,
        timeline=1,
        partial=partial,
        size=1,
        sha256="-",
        stored_size=1,
        stored_sha256="-",
        archived_at=archived_at.isoformat(),
    )
    with archive.backend.writer(layout.wal_record_key(name)) as f:
        f.write(json.dumps(dataclasses.asdict(rec)).encode())


@pytest.fixture
def history(tmp_path):
    """Base backup A at segment 2 (T0), WAL 3..5, a hole at 6, base backup B at 7, WAL 8..9."""
    repo = Repository.local(tmp_path / "r")
    archive = WalArchive(repo.backend)
    _base_backup(repo, "2026-11-20", 2, T0)
    for i, n in enumerate((3, 4, 5)):
        _segment(archive, n, T0 + dt.timedelta(hours=1 + i))
    _base_backup(repo, "2026-11-21", 7, T0 + dt.timedelta(hours=6))
    for i, n in enumerate((8, 9)):
        _segment(archive, n, T0 + dt.timedelta(hours=7 + i))
    return repo, archive


def test_window_spans_each_base_backup_up_to_a_gap(history):
    repo, archive = history
    window = pitr.recovery_window(repo, archive)
    first, second = sorted(window.reaches, key=lambda r: r.start)
    assert (first.start, first.ends_at_gap) == (T0, True)
    assert first.end == T0 + dt.timedelta(hours=3) - dt.timedelta(seconds=1)
    assert second.start == T0 + dt.timedelta(hours=6) and not second.ends_at_gap
    assert window.earliest == T0 and window.latest == T0 + dt.timedelta(hours=8) - dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    "offset, phrase",
    [
        (dt.timedelta(hours=-1), "before the earliest base backup"),
        (dt.timedelta(hours=4), "falls in a gap"),
        (dt.timedelta(hours=9), "after the newest archived WAL"),
        (dt.timedelta(days=30), "in the future"),
    ],
)
def test_bad_targets_name_the_window(history, offset, phrase):
    repo, archive = history
    now = T0 + dt.timedelta(days=1)
    with pytest.raises(pitr.PitrError, match=phrase) as err:
        pitr.check_target(pitr.recovery_window(repo, archive), T0 + offset, now=now)
    assert "recoverable window: 2026-11-20 22:00:00 .. 2026-11-21 00:59:59, 2026-11-21 04:00:00 .. 2026-11-21 05:59:59" in str(
        err.value
    )


def test_targets_inside_pick_the_newest_base_backup_before_them(history):
    repo, archive = history
    window = pitr.recovery_window(repo, archive)
    now = T0 + dt.timedelta(days=1)
    assert pitr.check_target(window, T0 + dt.timedelta(hours=2), now=now).backup.partition == "2026-11-20"
    assert pitr.check_target(window, T0 + dt.timedelta(hours=7), now=now).backup.partition == "2026-11-21"


def test_heartbeat_extends_the_unbroken_run_to_now(history):
    repo, archive = history
    archive.write_heartbeat(T0 + dt.timedelta(hours=10), "0/9000000")
    assert pitr.recovery_window(repo, archive).latest == T0 + dt.timedelta(hours=10)


def test_parse_target_time_zones():
    assert pitr.parse_target("2024-01-15 14:30:00") == dt.datetime(2024, 1, 15, 14, 30, tzinfo=UTC)
    assert pitr.parse_target("2024-01-15 14:30:00", "Europe/Paris") == dt.datetime(2024, 1, 15, 13, 30, tzinfo=UTC)
    assert pitr.parse_target("2024-01-15T14:30:00+02:00") == dt.datetime(2024, 1, 15, 12, 30, tzinfo=UTC)
    with pytest.raises(pitr.PitrError, match="unknown timezone"):
        pitr.parse_target("2024-01-15 14:30:00", "Mars/Olympus")


def test_backfill_plan_reconstructs_when_the_day_end_is_covered(history):
    repo, archive = history
    # the end of 2026-11-20 (midnight) lies inside base backup A's reach
    later = dt.datetime(2026, 11, 25, tzinfo=UTC)
    assert logical_day.plan_day(repo, dt.date(2026, 11, 20), now=later).how == "reconstruct"
    # the end of 2026-11-21 lies after the newest WAL: refused, or a marked late capture
    with pytest.raises(logical_day.BackfillRefused, match="cannot be reconstructed.*Nothing was written"):
        logical_day.plan_day(repo, dt.date(2026, 11, 21), now=later)
    assert logical_day.plan_day(repo, dt.date(2026, 11, 21), allow_late_capture=True, now=later).how == "late capture"
    assert logical_day.plan_day(repo, dt.date(2026, 11, 24), now=later).how == "live"

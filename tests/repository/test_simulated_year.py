"""A simulated year (400 days) of the repository's life, on a real local folder and on the real
S3-compatible store: every day tiny backups of every artifact and a WAL segment, weekly restore
verdicts (some failing), missed days and killed runs; then, as the retention sensor and cleanup
job do, the plan and the deletions (backups, then WAL, then crash leftovers).

Checked every day, against tests/repository/year_reference.py (an independent reading of the
README, not policy/retention.py):
- the backups kept are exactly the reference's (7/4/12 for PostgreSQL, 7 daily for Redis and
  Kafka; a failed verdict is not good; the PITR window's base backup is kept);
- every moment of the PITR window is recoverable: a kept good base backup ends at or before the
  window's start and every segment from its start to the newest one is archived;
- every kept base backup has the WAL from its start to its stop;
- no crash leftover is older than the safety age;
- the repository stays within the storage bound README.md states (backups per artifact and WAL
  segments).

On S3 the year runs PostgreSQL's artifacts and the WAL archive only (see the fixture). The clock is injected: simulated days start today (UTC) and run forward, because an S3 store
stamps objects with the real time, which must never be in the simulated future of a leftover.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from auction_backup_pipelines.policy import leftovers, pruning, retention, wal_pruning, wal_retention
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout, verdicts
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.leftovers import find as find_leftovers
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.settings import OffsiteSettings
from tests.repository import year_reference as ref

DAYS = 400
WINDOW = dt.timedelta(days=7)
SAFETY_AGE = dt.timedelta(hours=6)
SEGMENT = 16 * 1024 * 1024  # PostgreSQL's default wal_segment_size, which the archive assumes
ARTIFACTS = {  # (system, artifact): (daily, weekly, monthly), the README's policy
    ("postgres", "logical_dump"): (7, 4, 12),
    ("postgres", "base_backup"): (7, 4, 12),
    ("redis", "snapshot"): (7, 0, 0),
    ("kafka", "topic_export/bid-events"): (7, 0, 0),
}
MISSED = {  # a day index d is missed by an artifact when d % a == b
    ("postgres", "logical_dump"): (29, 13),
    ("postgres", "base_backup"): (37, 20),
    ("redis", "snapshot"): (31, 7),
    ("kafka", "topic_export/bid-events"): (23, 5),
}
# Storage bound (README, Retention): per artifact at most daily + weekly + monthly backups plus 3
# (the newest good one, unverified ones newer than it, the PITR window's base backup); WAL at most
# the window's days plus 2 days of segments, plus each older kept base backup's own segment
# (each simulated day archives one segment and each base backup lies within one).
BOUND_EXTRA_BACKUPS = 3


@dataclass
class World:
    """What the simulation wrote and what it expects to be there."""

    repo: Repository
    local_root: Path | None
    artifacts: tuple[tuple[str, str], ...]  # what is backed up every day
    items: dict[tuple[str, str], dict[str, ref.Item]] = field(default_factory=dict)
    bases: dict[str, tuple[int, dt.datetime]] = field(default_factory=dict)  # base key -> (segment, stop time)
    segments: list[int] = field(default_factory=list)  # every segment number archived, in order
    leftovers_made: dict[str, dt.datetime] = field(default_factory=dict)  # a key of each leftover -> when


@pytest.fixture(params=["local", "s3"])
def world(request, tmp_path) -> Iterator[World]:
    if request.param == "local":
        root = tmp_path / "repo"
        yield World(Repository.local(str(root)), root, tuple(ARTIFACTS))
        return
    backend = S3Backend.from_settings(OffsiteSettings.from_env(), backoff=0.01)
    backend.prefix = f"test-year-{uuid.uuid4().hex[:10]}/"
    # On S3 (one request per object operation) the year runs PostgreSQL's artifacts and the WAL
    # archive, the rules that differ by backend (the 7-daily artifacts behave alike on both), so
    # the two years together stay within about two minutes.
    yield World(Repository(backend), None, (("postgres", "logical_dump"), ("postgres", "base_backup")))
    backend.delete_many(o.key for o in backend.list())


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def lsn(segment: int, offset: int) -> str:
    return wal_retention.format_lsn(segment * SEGMENT + offset)


def backup(w: World, system: str, artifact: str, day: dt.date, now: dt.datetime, segment: int) -> None:
    with w.repo.begin(system, artifact, day, started_at=now) as writer:
        with writer.open_file("data.bin") as f:
            f.write(f"{system}/{artifact}/{day}".encode())
        if artifact == "base_backup":
            writer.metadata.update(
                start_lsn=lsn(segment, 40),
                stop_lsn=lsn(segment, 8192),
                timeline=1,
                stop_time=(now + dt.timedelta(minutes=1)).isoformat(),
            )
    assert writer.committed is not None
    key = writer.committed.prefix
    # A day backed up again replaces its older backup: the reference forgets it too.
    w.items[(system, artifact)] = {k: i for k, i in w.items.get((system, artifact), {}).items() if i.day != day}
    w.items[(system, artifact)][key] = ref.Item(key, day)
    if artifact == "base_backup":
        w.bases[key] = (segment, now + dt.timedelta(minutes=1))


def archive_segment(w: World, segment: int, scratch: Path) -> None:
    name = wal_retention.segment_name(1, segment)
    path = scratch / name
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(SEGMENT)  # zeros: cheap to compress, the size a segment has
    WalArchive(w.repo.backend).push(path, name)
    path.unlink()
    w.segments.append(segment)


def verdict_day(w: World, d: int, now: dt.datetime) -> None:
    """Sunday: the weekly restore checks judge the newest backup of each artifact; every fifth
    week the PostgreSQL dump and the Redis snapshot fail theirs."""
    for (_, artifact), items in w.items.items():
        if not items:
            continue
        newest = max(items.values(), key=lambda i: (i.day, i.key))
        failing = (d // 7) % 5 == 3 and artifact in ("logical_dump", "snapshot")
        verdicts.record(w.repo, BackupRef.parse(newest.key), "weekly restore", not failing, "simulation", at=now)
        items[newest.key] = ref.Item(newest.key, newest.day, "failed" if failing else "good")


def killed_run(w: World, day: dt.date, now: dt.datetime) -> None:
    """A run killed mid-stream: a data file in a folder with no manifest (and, locally, a temp file)."""
    folder = BackupRef.new("redis", "snapshot", day, now)
    with w.repo.storage.writer(folder.file_key("dump.rdb.zst")) as f:
        f.write(b"half a snapshot")
    w.leftovers_made[folder.key] = now
    if w.local_root is not None:
        temp = w.local_root / layout.backups_prefix("kafka") / f".killed-{day}.tmp-{uuid.uuid4().hex[:8]}"
        temp.parent.mkdir(parents=True, exist_ok=True)
        temp.write_bytes(b"partial")
        for path in (temp, *(w.local_root / folder.key).rglob("*")):
            os.utime(path, (now.timestamp(), now.timestamp()))  # the simulated time it was written
        w.leftovers_made[str(temp.relative_to(w.local_root))] = now


def cleanup(w: World, now: dt.datetime) -> list[retention.Decision]:
    """What the retention sensor decides and the cleanup job then does, in the job's order."""
    decisions, wal = pruning.plan_with_wal(w.repo, now, pitr_window=WINDOW)
    doomed = [b.key for b in retention.expired(decisions)]
    if doomed:
        outcomes = pruning.delete_expired(w.repo, doomed, now=now, pitr_window=WINDOW)
        assert all(o.action == pruning.DELETED for o in outcomes), outcomes
    if wal.expired_runs():
        outcomes_wal = wal_pruning.delete_expired_wal(w.repo, wal.expired_runs(), now, WINDOW)
        assert all(o.action == wal_pruning.DELETED for o in outcomes_wal), outcomes_wal
    ids = leftovers.removable_ids(leftovers.plan(w.repo.storage, now, SAFETY_AGE))
    if ids:
        removed = leftovers.remove(w.repo.storage, ids, now, SAFETY_AGE)
        assert all(o.action == leftovers.REMOVED for o in removed), removed
    return decisions


def expected_keys(w: World, today: dt.date, now: dt.datetime) -> dict[tuple[str, str], set[str]]:
    expected = {}
    for (system, artifact), items in w.items.items():
        daily, weekly, monthly = ARTIFACTS[(system, artifact)]
        keep = ref.kept_keys(items.values(), today, daily, weekly, monthly)
        if artifact == "base_backup":
            keep |= ref.window_base({k: stop for k, (_, stop) in w.bases.items() if k in items}, items, now - WINDOW)
        expected[(system, artifact)] = keep
    return expected


def check_day(w: World, d: int, today: dt.date, now: dt.datetime) -> None:
    listed: dict[tuple[str, str], set[str]] = {}
    for b in w.repo.list():
        listed.setdefault((b.system, b.artifact), set()).add(b.prefix)
    expected = expected_keys(w, today, now)
    for artifact, keep in expected.items():
        assert listed.get(artifact, set()) == keep, f"day {d} ({today}) {artifact}: kept != reference"
        daily, weekly, monthly = ARTIFACTS[artifact]
        assert len(listed.get(artifact, ())) <= daily + weekly + monthly + BOUND_EXTRA_BACKUPS, f"day {d}: bound for {artifact}"
    # Forget what retention deleted, so tomorrow's reference starts from what is really there.
    for artifact, items in w.items.items():
        w.items[artifact] = {k: i for k, i in items.items() if k in listed.get(artifact, set())}
    w.bases = {k: v for k, v in w.bases.items() if k in listed.get(("postgres", "base_backup"), set())}

    archived = {wal_retention.parse_segment(name)[1] for name in wal_pruning.wal_names(o.key for o in w.repo.storage.list(""))}
    newest = max(w.segments)
    good_bases = {k: v for k, v in w.bases.items() if w.items[("postgres", "base_backup")][k].status == "good"}
    for key, (segment, _) in w.bases.items():
        assert segment in archived or segment == newest + 1, f"day {d}: kept base backup {key} lost its WAL"
    if d >= WINDOW.days + 2:
        anchors = [(stop, seg) for seg, stop in good_bases.values() if stop <= now - WINDOW]
        assert anchors, f"day {d}: no kept good base backup ends before the PITR window starts"
        _, start = max(anchors)
        missing = sorted(set(range(start, newest + 1)) - archived)
        assert not missing, f"day {d}: PITR window not recoverable, segments {missing[:5]} missing"
    beyond = len([s for s in archived if s < newest - WINDOW.days - 2])
    assert beyond <= len(w.bases), f"day {d}: {beyond} old segments kept for {len(w.bases)} base backups"

    for x in find_leftovers(w.repo.storage):
        made = w.leftovers_made.get(x.key)
        assert made is not None, f"day {d}: unexpected leftover {x.kind} {x.key}"
        assert now - made <= SAFETY_AGE, f"day {d}: leftover {x.key} outlived the safety age"


def test_a_simulated_year_keeps_exactly_what_retention_promises(world, tmp_path):
    w = world
    start = dt.datetime.now(dt.UTC).date()
    scratch = tmp_path / "wal"
    scratch.mkdir(exist_ok=True)
    for d in range(DAYS):
        day = start + dt.timedelta(days=d)
        segment = d + 1
        run_at = at(day + dt.timedelta(days=1), 2)  # the schedules fire at 02:00 on D+1 for day D
        for i, (system, artifact) in enumerate(w.artifacts):
            every, which = MISSED[(system, artifact)]
            if d % every != which:
                backup(w, system, artifact, day, run_at + dt.timedelta(minutes=10 * i), segment)
        archive_segment(w, segment, scratch)
        if day.weekday() == 5:  # the weekly checks run on Sunday 05:00 UTC (D+1)
            verdict_day(w, d, at(day + dt.timedelta(days=1), 5))
        if d % 9 == 4:
            killed_run(w, day, at(day + dt.timedelta(days=1), 3))
        now = at(day + dt.timedelta(days=1), 6)
        cleanup(w, now)
        check_day(w, d, day + dt.timedelta(days=1), now)

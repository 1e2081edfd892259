"""WAL retention on a real (local) repository: the prune plan, its deletions, their order, health."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from auction_backup_pipelines.policy import pruning, wal_pruning
from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.policy.retention import Policy
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.repository import layout, verdicts
from tests.policy.synthetic_wal import prune, put_base, put_wal, seg, wal_left

NOW = dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)
SIZE = wr.DEFAULT_SEGMENT_SIZE


@pytest.fixture
def history(repo):
    """Monthly base backup A (segments 2..3), a failed one F (10..11), W at the window's start
    (20..21, 8 days old), D yesterday (30..31); WAL 1..35 and the partial of 36."""
    bases = {
        "A": put_base(repo, "2026-10-20", 2, 3),
        "F": put_base(repo, "2026-11-05", 10, 11, verification="failed"),
        "W": put_base(repo, "2026-12-02", 20, 21),
        "D": put_base(repo, "2026-12-09", 30, 31),
    }
    for n in range(1, 36):
        put_wal(repo, seg(n))
    put_wal(repo, seg(36) + ".partial")
    return bases


def test_dry_run_lists_wal_runs_with_reasons_and_deletes_nothing(repo, history, capsys):
    before = wal_left(repo)
    assert prune(repo, dry_run=True, now=NOW, pitr_window=WEEK) == 0
    out = capsys.readouterr().out
    a, w = history["A"].prefix, history["W"].prefix
    assert f"WAL archive (PITR window 7 days; its base backup: {w}):" in out
    expected = [
        f"{seg(1)}: expire (before the PITR window and outside every kept base backup)",
        f"{seg(2)}..{seg(3)}: keep (WAL of kept base backup {a} (start..stop))",
        f"{seg(4)}..{seg(19)}: expire (before the PITR window and outside every kept base backup)",
        f"{seg(20)}..{seg(35)}: keep (inside the PITR window (from the start of base backup {w}))",
        f"{seg(36)}.partial: keep (partial: the segment being written)",
    ]
    assert [line.strip() for line in out.splitlines() if line.startswith("  0000")] == expected
    assert "dry run: 1 backup(s) would be deleted, 3 kept; 17 WAL file(s) would be deleted; nothing was deleted" in out
    assert wal_left(repo) == before and len(repo.list("postgres", "base_backup")) == 4


def test_prune_deletes_the_failed_base_backup_then_exactly_the_expired_wal(repo, history, capsys):
    repo.backend.delete(layout.wal_record_key(seg(12)))  # only data left: a deletion interrupted after the record
    assert prune(repo, dry_run=False, now=NOW, pitr_window=WEEK) == 0
    out = capsys.readouterr().out
    assert f"deleted       local  WAL {seg(4)}..{seg(19)}" in out and f"deleted       local  WAL {seg(1)}  " in out
    assert {b.partition for b in repo.list("postgres", "base_backup")} == {"2026-10-20", "2026-12-02", "2026-12-09"}
    assert wal_left(repo) == {seg(2), seg(3), *(seg(n) for n in range(20, 36)), seg(36) + ".partial"}
    assert not [o.key for o in repo.backend.list(layout.WAL_AREA + "/") if seg(12) in o.key]
    # a second prune has nothing left to do
    assert prune(repo, dry_run=False, now=NOW, pitr_window=WEEK) == 0
    assert "nothing expired" in capsys.readouterr().out


def test_the_window_base_backup_is_kept_whatever_the_gfs_rules_say(repo, history):
    decisions = {d.backup.key: d for d in pruning.plan(repo, NOW, {"postgres/*": Policy(daily=1)}, pitr_window=WEEK)}
    assert decisions[history["W"].prefix].keep
    assert decisions[history["W"].prefix].reasons == ("base backup of the PITR window (7 days)",)
    assert not decisions[history["A"].prefix].keep
    # ... and deleting it is refused by the fresh plan too
    [outcome] = pruning.delete_expired(repo, [history["W"].prefix], now=NOW, policies={"postgres/*": Policy(daily=1)})
    assert outcome.action == pruning.KEPT


def test_a_longer_window_moves_the_base_back_and_keeps_more_wal(repo, history):
    _, wal = pruning.plan_with_wal(repo, NOW, pitr_window=dt.timedelta(days=40))
    assert wal.window_base == history["A"].prefix
    assert wal.expired() == [seg(1)]


def test_wal_of_a_base_backup_that_still_exists_is_never_deleted(repo, history):
    # The plan expired F and its WAL; if F's deletion did not happen, its WAL stays.
    _, wal = pruning.plan_with_wal(repo, NOW, pitr_window=WEEK)
    assert seg(10) in wal.expired()
    outcomes = wal_pruning.delete_expired_wal(repo, wal.expired_runs(), NOW, WEEK)
    kept = [o for o in outcomes if o.action == wal_pruning.KEPT]
    assert [(o.label, o.count) for o in kept] == [(f"{seg(10)}..{seg(11)}", 2)]
    assert "kept by a fresh plan: WAL of kept base backup " + history["F"].prefix in kept[0].reason
    assert {seg(10), seg(11)} <= wal_left(repo) and seg(9) not in wal_left(repo)


def test_no_base_backup_keeps_every_wal_file(repo, capsys):
    for n in range(1, 6):
        put_wal(repo, seg(n))
    assert prune(repo, dry_run=False, now=NOW) == 0
    out = capsys.readouterr().out
    assert f"{seg(1)}..{seg(5)}: keep (no base backup kept; WAL kept)" in out
    assert len(wal_left(repo)) == 5


def test_an_unreadable_segment_size_keeps_everything(repo, history):
    rec = layout.wal_record_key(seg(35))
    with repo.backend.reader(rec) as f:
        doc = json.loads(f.read())
    with repo.backend.writer(rec) as f:
        f.write(json.dumps({**doc, "size": 12345}).encode())
    _, wal = pruning.plan_with_wal(repo, NOW, pitr_window=WEEK)
    assert wal.expired() == [] and {d.reason for d in wal.decisions} >= {"WAL segment size unknown; all WAL kept"}


def test_health_tells_holes_made_by_retention_from_real_gaps(repo, history):
    archive = WalArchive(repo.backend)
    prune(repo, dry_run=False, now=NOW, pitr_window=WEEK)
    records = list(archive.records())
    gaps, pruned = wal_pruning.archive_gaps(repo, records, health(records).gaps, WEEK, NOW)
    assert gaps == [] and pruned == [(seg(3), seg(20))]
    archive.delete(seg(25))  # a lost segment inside the window is a gap
    records = list(archive.records())
    gaps, pruned = wal_pruning.archive_gaps(repo, records, health(records).gaps, WEEK, NOW)
    assert gaps == [(seg(24), seg(26))] and pruned == [(seg(3), seg(20))]


def test_a_dump_reconstructed_through_pitr_keeps_the_wal_it_depends_on(repo, history):
    with repo.begin("postgres", "logical_dump", "2026-11-10") as w:
        with w.open_file("dump.bin") as f:
            f.write(b"dump")
        w.metadata.update(depends_on=[history["A"].prefix], depends_on_wal={"first": seg(5), "last": seg(6)})
    _, wal = pruning.plan_with_wal(repo, NOW, pitr_window=WEEK)
    reasons = {d.name: d.reason for d in wal.decisions if d.keep}
    assert reasons[seg(5)] == reasons[seg(6)] == f"needed by {w.committed.prefix}"
    assert seg(4) in wal.expired() and seg(7) in wal.expired()


def test_a_base_backup_whose_restore_check_failed_does_not_start_the_window(repo, history):
    verdicts.record(repo, history["W"].ref, "base_backup_restores", False, "test", error="did not start")
    decisions, wal = pruning.plan_with_wal(repo, NOW, pitr_window=WEEK)
    assert wal.window_base == history["A"].prefix  # the newest good one before the window
    assert {d.backup.key: d.keep for d in decisions}[history["W"].prefix] is False
    assert wal.expired() == [seg(1)]  # from A's start onward, the WAL stays
    # the fresh plan of a deletion reads the same verdict
    outcomes = wal_pruning.delete_expired_wal(repo, [f"{seg(1)}..{seg(35)}"], NOW, WEEK, dry_run=True)
    assert [(o.action, o.label) for o in outcomes if o.action == wal_pruning.WOULD_DELETE] == [("would delete", seg(1))]
    gaps, _ = wal_pruning.archive_gaps(repo, list(WalArchive(repo.backend).records()), [(seg(4), seg(9))], WEEK, NOW)
    assert gaps == [(seg(4), seg(9))]  # a hole after A's start is a real gap

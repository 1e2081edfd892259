"""WAL retention decisions on hand-made archives: the window, per-base-backup ranges, the rails."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.policy.wal_retention import BaseBackup

NOW = dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)
MB16 = wr.DEFAULT_SEGMENT_SIZE


def seg(n: int, tl: int = 1) -> str:
    return wr.segment_name(tl, n)


def base(key, first, last, days_ago, kept=True, good=True, tl=1, size=MB16):
    return BaseBackup(
        key=key,
        kept=kept,
        good=good,
        timeline=tl,
        start_lsn=first * size + 0x28,
        stop_lsn=last * size + 0x100,
        stop_time=NOW - dt.timedelta(days=days_ago),
    )


def by_name(decisions):
    return {d.name: d for d in decisions}


@pytest.fixture
def archive():
    names = [seg(n) for n in range(1, 41)] + [seg(41) + ".partial", "00000001.history"]
    bases = [
        base("monthly", 2, 3, 30),
        base("expired", 10, 11, 20, kept=False),
        base("window", 20, 21, 8),  # newest kept before NOW - 7 days
        base("daily", 30, 31, 1),
    ]
    return names, bases


def test_window_base_ranges_and_rails(archive):
    names, bases = archive
    d = by_name(wr.decide(names, bases, NOW, WEEK))
    assert len(d) == len(names)
    assert not d[seg(1)].keep and d[seg(1)].reason == wr.EXPIRED
    for n in (2, 3):
        assert d[seg(n)].keep and d[seg(n)].reason == "WAL of kept base backup monthly (start..stop)"
    for n in range(4, 20):  # includes the expired base backup's own range 10..11
        assert not d[seg(n)].keep, n
    for n in range(20, 41):
        assert d[seg(n)].keep and d[seg(n)].reason == "inside the PITR window (from the start of base backup window)"
    assert d[seg(41) + ".partial"].keep and d[seg(41) + ".partial"].reason == wr.PARTIAL_KEPT
    assert d["00000001.history"].keep and d["00000001.history"].reason == wr.HISTORY_KEPT


def test_runs_summarise_consecutive_segments(archive):
    names, bases = archive
    lines = [r.line() for r in wr.runs(wr.decide(names, bases, NOW, WEEK))]
    assert lines[:3] == [
        "000000010000000000000001: expire (before the PITR window and outside every kept base backup)",
        "000000010000000000000002..000000010000000000000003: keep (WAL of kept base backup monthly (start..stop))",
        "000000010000000000000004..000000010000000000000013: expire (before the PITR window and outside every kept base backup)",
    ]
    assert (
        lines[3]
        == "000000010000000000000014..000000010000000000000028: keep (inside the PITR window (from the start of base backup window))"
    )
    assert lines[4:] == [
        f"{seg(41)}.partial: keep (partial: the segment being written)",
        "00000001.history: keep (timeline history: recovery follows it)",
    ]


def test_a_hole_splits_a_run():
    names = [seg(n) for n in (1, 2, 4, 5, 9)]
    runs = wr.runs(wr.decide(names, [base("b", 9, 9, 30)], NOW, WEEK))
    assert [r.label for r in runs] == [f"{seg(1)}..{seg(2)}", f"{seg(4)}..{seg(5)}", seg(9)]
    assert [r.count for r in runs] == [2, 2, 1]


def test_window_base_need_not_be_kept_by_the_decision_to_be_found():
    bases = [base("old", 2, 2, 30), base("w", 20, 20, 8, kept=False)]
    assert wr.window_base(bases, NOW, WEEK).key == "w"
    # ... but decide() only trusts kept base backups: the older kept one anchors instead (keeps more)
    d = by_name(wr.decide([seg(n) for n in range(1, 30)], bases, NOW, WEEK))
    assert d[seg(5)].keep and "from the start of base backup old" in d[seg(5)].reason


def test_failed_base_backup_never_anchors_the_window():
    bases = [base("older", 5, 5, 10), base("failed", 20, 20, 8, good=False)]
    d = by_name(wr.decide([seg(n) for n in range(1, 30)], bases, NOW, WEEK))
    assert d[seg(6)].keep and "base backup older" in d[seg(6)].reason
    assert not d[seg(4)].keep


def test_window_reaching_before_every_base_keeps_from_the_oldest():
    bases = [base("a", 10, 11, 3), base("b", 20, 21, 1)]
    d = by_name(wr.decide([seg(n) for n in range(1, 30)], bases, NOW, WEEK))
    assert [n for n in range(1, 30) if not d[seg(n)].keep] == list(range(1, 10))
    assert d[seg(10)].reason.startswith("the PITR window reaches back before every base backup")


@pytest.mark.parametrize(
    "bases, size, phrase",
    [
        ([], MB16, "no base backup kept; WAL kept"),
        ([base("gone", 20, 20, 8, kept=False)], MB16, "no base backup kept; WAL kept"),
        (
            [base("w", 20, 20, 8), BaseBackup("bare", kept=True, timeline=1)],
            MB16,
            "kept base backup bare records no usable WAL range or stop time; all WAL kept",
        ),
        ([base("w", 20, 20, 8)], None, "WAL segment size unknown; all WAL kept"),
        ([base("w", 20, 20, 8)], 3 * 1024 * 1024, "WAL segment size unknown; all WAL kept"),
    ],
)
def test_nothing_is_expired_when_the_plan_cannot_tell(bases, size, phrase):
    names = [seg(n) for n in range(1, 30)]
    decisions = wr.decide(names, bases, NOW, WEEK, size)
    assert all(d.keep for d in decisions)
    assert {d.reason for d in decisions} - {"newest archived segment of timeline 1"} == {phrase}


def test_newest_segment_of_each_timeline_survives_even_before_the_window():
    # the receiver stopped long ago: every segment predates the window's base backup
    names = [seg(n) for n in range(1, 6)] + [seg(n, tl=2) for n in (3, 4)]
    d = by_name(wr.decide(names, [base("w", 50, 50, 8, tl=2)], NOW, WEEK))
    assert {n for n, x in d.items() if x.keep} == {seg(5), seg(4, tl=2)}


def test_timelines_newer_than_the_window_base_are_kept_older_ones_expire():
    names = [seg(n, 1) for n in range(15, 26)] + [seg(n, 2) for n in range(18, 30)] + [seg(n, 3) for n in (26, 27, 28)]
    names += ["00000002.history", "00000003.history"]
    d = by_name(wr.decide(names, [base("w", 20, 21, 8, tl=2)], NOW, WEEK))
    assert [n for n in range(15, 26) if d[seg(n, 1)].keep] == [25]  # only the newest of timeline 1
    assert [n for n in range(18, 30) if d[seg(n, 2)].keep] == list(range(20, 30))
    assert all(d[seg(n, 3)].keep for n in (26, 27, 28))
    assert d["00000002.history"].keep and d["00000003.history"].keep


def test_unknown_names_are_kept_and_input_order_does_not_matter(archive):
    names, bases = archive
    names = [*names, "garbage", seg(7) + ".partial"]
    forward = wr.decide(names, bases, NOW, WEEK)
    assert forward == wr.decide(list(reversed(names)) + names[:3], list(reversed(bases)), NOW, WEEK)
    d = by_name(forward)
    assert d["garbage"].keep and d["garbage"].reason == wr.UNKNOWN_NAME
    assert d[seg(7) + ".partial"].keep  # a partial is never expired, whatever its position


@pytest.mark.parametrize("size", [1 << 20, MB16, 64 << 20, 1 << 30])
def test_segment_arithmetic_round_trips(size):
    per_xlogid = 0x100000000 // size
    for n in (0, 1, per_xlogid - 1, per_xlogid, 5 * per_xlogid + 3):
        assert wr.parse_segment(wr.segment_name(7, n, size), size) == (7, n)
    assert wr.segment_of_lsn(wr.parse_lsn("1/0"), size) == per_xlogid
    assert wr.segment_name(1, wr.segment_of_lsn(wr.parse_lsn("1/28"), size), size) == "000000010000000100000000"


def test_segment_names_postgres_writes():
    assert wr.segment_name(1, wr.segment_of_lsn(wr.parse_lsn("0/3000028"))) == "000000010000000000000003"
    assert wr.segment_name(2, wr.segment_of_lsn(wr.parse_lsn("A/FF000000"))) == "000000020000000A000000FF"
    assert wr.parse_segment("000000010000000000000100") is None  # low part past 0xFF: not a 16 MB name
    assert wr.format_lsn(wr.parse_lsn("a/ff000028")) == "A/FF000028"
    with pytest.raises(ValueError, match="not an LSN"):
        wr.parse_lsn("0-3000028")


def test_now_must_be_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        wr.decide([], [], dt.datetime(2026, 1, 1), WEEK)


def test_wal_a_kept_backup_depends_on_is_kept(archive):
    names, bases = archive
    d = by_name(wr.decide(names, bases, NOW, WEEK, needed=[("dump", seg(5), seg(6))]))
    assert [n for n in range(4, 20) if d[seg(n)].keep] == [5, 6]
    assert d[seg(5)].reason == "needed by dump"


def test_an_unreadable_dependency_keeps_everything(archive):
    names, bases = archive
    decisions = wr.decide(names, bases, NOW, WEEK, needed=[("dump", seg(6), seg(5))])
    assert all(d.keep for d in decisions)
    assert "that dump needs is unreadable; all WAL kept" in decisions[0].reason

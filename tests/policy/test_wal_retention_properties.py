"""Property tests for WAL retention over random archives, base backups and windows."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.policy.wal_retention import BaseBackup

NOW = dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC)
SIZES = [1 << 20, wr.DEFAULT_SEGMENT_SIZE, 64 << 20]
SETTINGS = settings(max_examples=300, deadline=None)


@st.composite
def archives(draw):
    size = draw(st.sampled_from(SIZES))
    timelines = draw(st.integers(1, 3))
    names = set()
    for tl in range(1, timelines + 1):
        for n in draw(st.sets(st.integers(0, 80), max_size=40)):
            names.add(wr.segment_name(tl, n, size))
        if draw(st.booleans()):
            names.add(wr.segment_name(tl, draw(st.integers(0, 80)), size) + ".partial")
        if tl > 1:
            names.add(f"{tl:08X}.history")
    # As on a real primary, a base backup that starts later (timeline, LSN) also stops later.
    starts = sorted((draw(st.integers(1, timelines)), draw(st.integers(0, 80))) for _ in range(draw(st.integers(0, 6))))
    hours_ago = sorted((draw(st.integers(-24, 24 * 40)) for _ in starts), reverse=True)
    bases = []
    for i, ((tl, first), ago) in enumerate(zip(starts, hours_ago)):
        last = first + draw(st.integers(0, 3))
        known = draw(st.integers(0, 9)) > 0
        bases.append(
            BaseBackup(
                key=f"b{i}",
                kept=draw(st.booleans()),
                good=draw(st.integers(0, 4)) > 0,
                timeline=tl,
                start_lsn=first * size + draw(st.integers(0, size - 1)) if known else None,
                stop_lsn=last * size + draw(st.integers(0, size - 1)),
                stop_time=NOW - dt.timedelta(hours=ago),
            )
        )
    window = dt.timedelta(hours=draw(st.integers(0, 24 * 30)))
    needed = []
    for i in range(draw(st.integers(0, 2))):
        tl, first = draw(st.integers(1, timelines)), draw(st.integers(0, 80))
        last = first + draw(st.integers(0, 5))
        needed.append((f"dump{i}", wr.segment_name(tl, first, size), wr.segment_name(tl, last, size)))
    return sorted(names), bases, window, size, needed


def _pos(name, size):
    return None if name.endswith(".partial") else wr.parse_segment(name, size)


def _start(base, size):
    return (base.timeline, wr.segment_of_lsn(base.start_lsn, size))


@given(archives())
@SETTINGS
def test_one_decision_per_name_each_with_a_reason(case):
    names, bases, window, size, needed = case
    decisions = wr.decide(names, bases, NOW, window, size, needed)
    assert sorted(d.name for d in decisions) == names
    assert all(d.reason for d in decisions)
    assert all(d.keep == (d.reason != wr.EXPIRED) for d in decisions)


@given(archives())
@SETTINGS
def test_rails_partials_history_newest_and_fail_safe(case):
    names, bases, window, size, needed = case
    decisions = wr.decide(names, bases, NOW, window, size, needed)
    newest = {}
    for name in names:
        if (pos := _pos(name, size)) is not None:
            newest[pos[0]] = max(pos[1], newest.get(pos[0], pos[1]))
    kept_bases = [b for b in bases if b.kept]
    cannot_tell = not kept_bases or any(not b.known for b in kept_bases)
    for d in decisions:
        pos = _pos(d.name, size)
        if pos is None or pos[1] == newest[pos[0]] or cannot_tell:
            assert d.keep, d


@given(archives())
@SETTINGS
def test_every_kept_base_backup_keeps_its_own_wal(case):
    names, bases, window, size, needed = case
    kept = {d.name for d in wr.decide(names, bases, NOW, window, size, needed) if d.keep}
    for b in bases:
        if b.kept and b.known:
            first, last = wr.segment_of_lsn(b.start_lsn, size), wr.segment_of_lsn(b.stop_lsn, size)
            for n in range(first, last + 1):
                name = wr.segment_name(b.timeline, n, size)
                assert name not in names or name in kept, (b, name)


@given(archives())
@SETTINGS
def test_the_whole_window_stays_recoverable(case):
    """From the newest kept good base backup stopped before the window (or, when none is, from the
    oldest kept one), every archived segment onward is kept: no hole appears in that run."""
    names, bases, window, size, needed = case
    kept_bases = [b for b in bases if b.kept]
    if not kept_bases or any(not b.known for b in kept_bases):
        return
    fits = [b for b in kept_bases if b.good and b.stop_time <= NOW - window]
    earliest = min(kept_bases, key=lambda b: (b.timeline, b.start_lsn, b.key))
    anchor = max(fits, key=lambda b: (b.stop_time, b.key)) if fits else earliest
    start = _start(anchor, size)
    kept = {d.name for d in wr.decide(names, bases, NOW, window, size, needed) if d.keep}
    for name in names:
        pos = _pos(name, size)
        if pos is not None and (pos[0] > start[0] or (pos[0] == start[0] and pos[1] >= start[1])):
            assert name in kept, (anchor, name)


@given(archives())
@SETTINGS
def test_only_wal_outside_every_kept_range_and_before_the_window_expires(case):
    names, bases, window, size, needed = case
    decisions = wr.decide(names, bases, NOW, window, size, needed)
    kept_bases = [b for b in bases if b.kept]
    for d in decisions:
        if d.keep:
            continue
        tl, n = _pos(d.name, size)
        for b in kept_bases:
            first, last = wr.segment_of_lsn(b.start_lsn, size), wr.segment_of_lsn(b.stop_lsn, size)
            assert not (b.timeline == tl and first <= n <= last)
        for _, first_name, last_name in needed:
            assert not (first_name <= d.name <= last_name and first_name[:8] == d.name[:8])
        # some kept base backup starts after it: nothing replayable needs it
        assert any(_start(b, size) > (tl, n) for b in kept_bases)


@given(archives(), st.integers(0, 24 * 30))
@SETTINGS
def test_a_longer_window_never_expires_more(case, extra_hours):
    names, bases, window, size, needed = case
    shorter = {d.name for d in wr.decide(names, bases, NOW, window, size, needed) if not d.keep}
    longer = {d.name for d in wr.decide(names, bases, NOW, window + dt.timedelta(hours=extra_hours), size, needed) if not d.keep}
    assert longer <= shorter


@given(archives())
@SETTINGS
def test_runs_cover_every_decision_in_order(case):
    names, bases, window, size, needed = case
    decisions = wr.decide(names, bases, NOW, window, size, needed)
    runs = wr.runs(decisions, size)
    assert sum(r.count for r in runs) == len(decisions)
    i = 0
    for r in runs:
        chunk = decisions[i : i + r.count]
        assert chunk[0].name == r.first and chunk[-1].name == r.last
        assert {(d.keep, d.reason) for d in chunk} == {(r.keep, r.reason)}
        i += r.count


@given(archives())
@SETTINGS
def test_every_range_a_kept_backup_depends_on_is_kept(case):
    names, bases, window, size, needed = case
    kept = {d.name for d in wr.decide(names, bases, NOW, window, size, needed) if d.keep}
    for _, first, last in needed:
        assert all(n in kept for n in names if n[:8] == first[:8] and first <= n.removesuffix(".partial") <= last)

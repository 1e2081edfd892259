"""Pure rules fed by restore verdicts and PITR dependencies: a failed backup is never the last
good one, a reconstructed dump keeps its base backup, and the WAL it needs is reported."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.policy.retention import (
    EXPIRED_FAILED,
    LAST_GOOD,
    NEEDED_BY,
    Backup,
    Policy,
    WalRange,
    evaluate,
    needed_wal,
)

NOW = dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
DUMP, BASE = "postgres/logical_dump", "postgres/base_backup"
POLICIES = {"postgres/*": Policy(daily=2)}
SEG = "00000001000000000000000{}"


def by_key(decisions):
    return {d.backup.key: d for d in decisions}


def test_a_failed_newest_backup_is_not_the_last_good_one():
    backups = [
        Backup(f"{DUMP}/2026-11-{d}", DUMP, dt.date(2026, 11, d), status="failed" if d == 25 else "good") for d in (23, 24, 25)
    ]
    out = by_key(evaluate(backups, NOW, {"postgres/*": Policy(daily=1)}))
    assert out[f"{DUMP}/2026-11-25"].reasons == (EXPIRED_FAILED,)
    assert out[f"{DUMP}/2026-11-24"].reasons == ("daily #1", LAST_GOOD)
    assert not out[f"{DUMP}/2026-11-23"].keep


def test_a_kept_reconstructed_dump_keeps_its_base_backup_and_reports_its_wal():
    wal = WalRange(SEG.format(3), SEG.format(7))
    old_base = Backup(f"{BASE}/2026-11-10", BASE, dt.date(2026, 11, 10))
    bases = [Backup(f"{BASE}/2026-11-{d}", BASE, dt.date(2026, 11, d)) for d in (24, 25)]
    dump = Backup(f"{DUMP}/2026-11-25", DUMP, dt.date(2026, 11, 25), depends_on={old_base.key}, depends_on_wal=wal)
    out = by_key(evaluate([old_base, *bases, dump], NOW, POLICIES))
    assert out[old_base.key].keep and out[old_base.key].reasons == (NEEDED_BY + dump.key,)
    assert needed_wal(out.values()) == [(dump.key, wal)]


def test_an_expired_dump_needs_no_wal_and_keeps_nothing():
    wal = WalRange(SEG.format(3), SEG.format(4))
    old_base = Backup(f"{BASE}/2026-11-10", BASE, dt.date(2026, 11, 10))
    dumps = [Backup(f"{DUMP}/2026-11-{d}", DUMP, dt.date(2026, 11, d)) for d in (24, 25)]
    old_dump = Backup(f"{DUMP}/2026-11-11", DUMP, dt.date(2026, 11, 11), depends_on={old_base.key}, depends_on_wal=wal)
    bases = [Backup(f"{BASE}/2026-11-{d}", BASE, dt.date(2026, 11, d)) for d in (24, 25)]
    out = by_key(evaluate([old_base, old_dump, *dumps, *bases], NOW, POLICIES))
    assert not out[old_dump.key].keep and not out[old_base.key].keep
    assert needed_wal(out.values()) == []


def test_wal_range_validation_and_coverage():
    r = WalRange(SEG.format(3), "000000010000000100000002")
    assert r.timeline == 1
    assert r.covers(SEG.format(5)) and r.covers("000000010000000100000002.partial")
    assert not r.covers(SEG.format(2)) and not r.covers("000000020000000000000005")
    with pytest.raises(ValueError, match="two timelines"):
        WalRange(SEG.format(3), "000000020000000000000004")
    with pytest.raises(ValueError, match="starts after it ends"):
        WalRange(SEG.format(7), SEG.format(3))
    with pytest.raises(ValueError, match="WAL segment name"):
        WalRange("0/3000000", SEG.format(3))
    with pytest.raises(TypeError, match="WalRange"):
        Backup("k", DUMP, dt.date(2026, 11, 25), depends_on_wal=(SEG.format(3), SEG.format(4)))  # type: ignore[arg-type]

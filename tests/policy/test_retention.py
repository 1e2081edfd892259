"""Table-driven tests for the GFS retention policy (auction_backup_pipelines.policy.retention)."""

from __future__ import annotations

import datetime as dt
import random
import re
from zoneinfo import ZoneInfo

import pytest

from auction_backup_pipelines.policy.retention import (
    DEFAULT_POLICIES,
    Backup,
    Decision,
    Policy,
    evaluate,
    expired,
    format_table,
    policy_for,
)

D = dt.date
UTC = dt.UTC
# Thursday 2026-11-26, ISO week 2026-W48 (Mon 2026-11-23 .. Sun 2026-11-29).
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TODAY = D(2026, 11, 26)
DUMP = "postgres/logical_dump"
BASE = "postgres/base_backup"
WAL = "postgres/wal"


def history(artifact: str, end: dt.date, days: int, overrides: dict | None = None) -> list[Backup]:
    """One backup per day for `days` days ending at `end`; overrides maps a day to field changes."""
    overrides = overrides or {}
    out = []
    for i in range(days):
        day = end - dt.timedelta(days=i)
        out.append(Backup(key=f"{artifact}/{day}", artifact=artifact, day=day, **overrides.get(day, {})))
    return out


def by_day(decisions: list[Decision], artifact: str | None = None) -> dict[dt.date, Decision]:
    return {d.backup.day: d for d in decisions if artifact is None or d.backup.artifact == artifact}


def kept_days(decisions: list[Decision], artifact: str | None = None) -> set[dt.date]:
    return {day for day, d in by_day(decisions, artifact).items() if d.keep}


# ---------------------------------------------------------------------------
# 400-day GFS history, expected set derived by hand
# ---------------------------------------------------------------------------

# Policy(7, 4, 12), one good backup per day from 2025-10-23 through 2026-11-26.
HAND_DERIVED_KEEP = {
    # daily: the 7 newest days
    D(2026, 11, 26): ("daily #1", "weekly 2026-W48", "monthly 2026-11", "last good backup"),
    D(2026, 11, 25): ("daily #2",),
    D(2026, 11, 24): ("daily #3",),
    D(2026, 11, 23): ("daily #4",),
    D(2026, 11, 22): ("daily #5", "weekly 2026-W47"),  # Sunday: newest day of W47
    D(2026, 11, 21): ("daily #6",),
    D(2026, 11, 20): ("daily #7",),
    # weekly: newest day (the Sunday) of each of the 3 older ISO weeks among the 4 newest
    D(2026, 11, 15): ("weekly 2026-W46",),
    D(2026, 11, 8): ("weekly 2026-W45",),
    # monthly: last day of each of the 11 older months among the 12 newest
    D(2026, 10, 31): ("monthly 2026-10",),
    D(2026, 9, 30): ("monthly 2026-09",),
    D(2026, 8, 31): ("monthly 2026-08",),
    D(2026, 7, 31): ("monthly 2026-07",),
    D(2026, 6, 30): ("monthly 2026-06",),
    D(2026, 5, 31): ("monthly 2026-05",),
    D(2026, 4, 30): ("monthly 2026-04",),
    D(2026, 3, 31): ("monthly 2026-03",),
    D(2026, 2, 28): ("monthly 2026-02",),
    D(2026, 1, 31): ("monthly 2026-01",),
    D(2025, 12, 31): ("monthly 2025-12",),
}


def _derive_expected_days(today: dt.date, daily: int, weekly: int, monthly: int) -> set[dt.date]:
    """Independent calendar arithmetic: newest days, Sundays and month ends."""
    days = {today - dt.timedelta(days=i) for i in range(daily)}
    # current ISO week's newest day is today; older weeks end on a Sunday
    days.add(today)
    last_sunday = today - dt.timedelta(days=today.isoweekday() % 7)
    if last_sunday == today:
        last_sunday -= dt.timedelta(days=7)
    days |= {last_sunday - dt.timedelta(weeks=i) for i in range(weekly - 1)}
    # current month's newest day is today; older months end the day before the 1st
    days.add(today)
    first = today.replace(day=1)
    for _ in range(monthly - 1):
        month_end = first - dt.timedelta(days=1)
        days.add(month_end)
        first = month_end.replace(day=1)
    return days


def test_400_day_history_keeps_exactly_the_hand_derived_set():
    backups = history(DUMP, TODAY, 400)
    assert min(b.day for b in backups) == D(2025, 10, 23)
    decisions = evaluate(backups, NOW, {"postgres/*": Policy(7, 4, 12)})

    assert len(decisions) == 400
    assert kept_days(decisions) == set(HAND_DERIVED_KEEP)
    assert kept_days(decisions) == _derive_expected_days(TODAY, 7, 4, 12)
    assert len(expired(decisions)) == 400 - 20
    days = by_day(decisions)
    for day, reasons in HAND_DERIVED_KEEP.items():
        assert days[day].reasons == reasons, day
    assert days[D(2026, 11, 19)].reasons == ("expired",)
    assert days[D(2025, 11, 30)].reasons == ("expired",)  # 13th month: outside monthly 12
    assert days[D(2025, 10, 23)].keep is False


def test_400_day_history_under_default_policies_matches_postgres_rule():
    backups = history(DUMP, TODAY, 400) + history("redis/snapshot", TODAY, 400)
    decisions = evaluate(backups, NOW, DEFAULT_POLICIES)
    assert kept_days(decisions, DUMP) == set(HAND_DERIVED_KEEP)
    assert kept_days(decisions, "redis/snapshot") == {TODAY - dt.timedelta(days=i) for i in range(7)}


# ---------------------------------------------------------------------------
# Rules: walking past non-good backups, independence, ties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, policy, expect_keep",
    [
        pytest.param(
            {TODAY: {"status": "failed"}},
            Policy(daily=3),
            {
                TODAY: ("expired: failed",),
                D(2026, 11, 25): ("daily #1", "last good backup"),
                D(2026, 11, 24): ("daily #2",),
                D(2026, 11, 23): ("daily #3",),
                D(2026, 11, 22): ("expired",),
            },
            id="failed-newest-day-rule-walks-on",
        ),
        pytest.param(
            {TODAY: {"status": "unverified"}},
            Policy(daily=2),
            {
                TODAY: ("newer than last good backup, unverified",),
                D(2026, 11, 25): ("daily #1", "last good backup"),
                D(2026, 11, 24): ("daily #2",),
                D(2026, 11, 23): ("expired",),
            },
            id="unverified-newest-day-kept-but-not-counted",
        ),
        pytest.param(
            {D(2026, 11, 24): {"status": "failed"}, D(2026, 11, 23): {"status": "unverified"}},
            Policy(daily=3),
            {
                TODAY: ("daily #1", "last good backup"),
                D(2026, 11, 25): ("daily #2",),
                D(2026, 11, 24): ("expired: failed",),
                D(2026, 11, 23): ("expired: unverified and older than last good backup",),
                D(2026, 11, 22): ("daily #3",),
                D(2026, 11, 21): ("expired",),
            },
            id="failed-and-unverified-in-window-skipped",
        ),
        pytest.param(
            {},
            Policy(daily=2, weekly=2),
            {
                TODAY: ("daily #1", "weekly 2026-W48", "last good backup"),
                D(2026, 11, 25): ("daily #2",),
                D(2026, 11, 22): ("weekly 2026-W47",),  # weekly counts its own 2 weeks only
                D(2026, 11, 15): ("expired",),
            },
            id="rules-count-independently",
        ),
        pytest.param(
            {D(2026, 11, 22): {"status": "failed"}},
            Policy(daily=0, weekly=2),
            {
                TODAY: ("weekly 2026-W48", "last good backup"),
                D(2026, 11, 22): ("expired: failed",),
                D(2026, 11, 21): ("weekly 2026-W47",),  # newest *good* day of W47
                D(2026, 11, 15): ("expired",),
            },
            id="weekly-newest-good-in-bucket",
        ),
        pytest.param(
            {},
            Policy(daily=0, weekly=0, monthly=0),
            {TODAY: ("last good backup",), D(2026, 11, 25): ("expired",)},
            id="zero-policy-keeps-only-last-good",
        ),
        pytest.param(
            {D(2026, 11, 1): {"pinned": True}, D(2026, 11, 2): {"pinned": True, "status": "failed"}},
            Policy(daily=1),
            {
                TODAY: ("daily #1", "last good backup"),
                D(2026, 11, 1): ("pinned",),
                D(2026, 11, 2): ("pinned",),
                D(2026, 11, 3): ("expired",),
            },
            id="pinned-kept-even-if-failed",
        ),
    ],
)
def test_rule_table(overrides, policy, expect_keep):
    decisions = evaluate(history(DUMP, TODAY, 40, overrides), NOW, {DUMP: policy})
    days = by_day(decisions)
    for day, reasons in expect_keep.items():
        assert days[day].reasons == reasons, day
        assert days[day].keep == (not reasons[0].startswith("expired")), day


def test_failed_backups_never_count_even_when_all_recent_fail():
    overrides = {TODAY - dt.timedelta(days=i): {"status": "failed"} for i in range(10)}
    decisions = evaluate(history(DUMP, TODAY, 30, overrides), NOW, {DUMP: Policy(daily=3)})
    assert kept_days(decisions) == {D(2026, 11, 16), D(2026, 11, 15), D(2026, 11, 14)}
    assert by_day(decisions)[D(2026, 11, 16)].reasons == ("daily #1", "last good backup")


def test_unverified_on_the_day_of_the_last_good_backup_is_kept():
    good = Backup("dump/2026-11-26/a", DUMP, TODAY)
    rerun = Backup("dump/2026-11-26/b", DUMP, TODAY, status="unverified")
    older = Backup("dump/2026-11-25/b", DUMP, D(2026, 11, 25), status="unverified")
    decisions = {d.backup.key: d for d in evaluate([good, rerun, older], NOW, {DUMP: Policy(daily=1)})}
    assert decisions[rerun.key].reasons == ("newer than last good backup, unverified",)
    assert decisions[older.key].reasons == ("expired: unverified and older than last good backup",)


def test_two_good_backups_on_one_day_keep_the_greatest_key():
    a = Backup("dump/2026-11-26/a", DUMP, TODAY)
    b = Backup("dump/2026-11-26/b", DUMP, TODAY)
    older = Backup("dump/2026-11-25", DUMP, D(2026, 11, 25))
    decisions = {d.backup.key: d for d in evaluate([b, older, a], NOW, {DUMP: Policy(daily=2)})}
    assert decisions[b.key].reasons == ("daily #1", "last good backup")
    assert decisions[a.key].reasons == ("expired",)
    assert decisions[older.key].reasons == ("daily #2",)


@pytest.mark.parametrize(
    "statuses, expect",
    [
        (("unverified", "unverified"), (True, True)),  # no good backup at all: nothing to race
        (("failed", "unverified"), (False, True)),
        (("failed", "failed"), (False, False)),
    ],
)
def test_artifact_without_good_backups(statuses, expect):
    backups = [Backup(f"r/{i}", "redis/snapshot", TODAY - dt.timedelta(days=i), status=s) for i, s in enumerate(statuses)]
    decisions = evaluate(backups, NOW, DEFAULT_POLICIES)
    assert tuple(d.keep for d in sorted(decisions, key=lambda d: d.backup.key)) == expect


# ---------------------------------------------------------------------------
# Dependencies
# ---------------------------------------------------------------------------


def test_depends_on_is_transitive_and_crosses_artifacts():
    export = Backup(
        "kafka/topic_export/bid-events/2026-11-26",
        "kafka/topic_export/bid-events",
        TODAY,
        depends_on=frozenset({"kafka/schema/2026-09-01"}),
    )
    schema = Backup("kafka/schema/2026-09-01", "kafka/schema", D(2026, 9, 1), depends_on=frozenset({"kafka/schema/2026-08-01"}))
    schema_base = Backup("kafka/schema/2026-08-01", "kafka/schema", D(2026, 8, 1))
    schema_new = Backup("kafka/schema/2026-11-20", "kafka/schema", D(2026, 11, 20))
    unrelated = Backup("kafka/schema/2026-07-01", "kafka/schema", D(2026, 7, 1))
    decisions = {
        d.backup.key: d for d in evaluate([export, schema, schema_base, schema_new, unrelated], NOW, {"kafka/*": Policy(daily=1)})
    }
    assert decisions[schema.key].reasons == (f"needed by {export.key}",)
    assert decisions[schema_base.key].reasons == (f"needed by {schema.key}",)
    assert decisions[schema_new.key].reasons == ("daily #1", "last good backup")
    assert decisions[unrelated.key].reasons == ("expired",)


def test_dependencies_of_expired_backups_are_not_kept_and_cycles_terminate():
    old = Backup("d/2026-10-01", DUMP, D(2026, 10, 1), depends_on=frozenset({"d/2026-09-01"}))
    older = Backup("d/2026-09-01", DUMP, D(2026, 9, 1), depends_on=frozenset({"d/2026-10-01"}))
    new = Backup("d/2026-11-26", DUMP, TODAY, depends_on=frozenset({"d/2026-11-25", "missing/key"}))
    mid = Backup("d/2026-11-25", DUMP, D(2026, 11, 25), depends_on=frozenset({"d/2026-11-26"}))
    decisions = {d.backup.key: d for d in evaluate([old, older, new, mid], NOW, {DUMP: Policy(daily=1)})}
    assert not decisions[old.key].keep and not decisions[older.key].keep
    assert decisions[mid.key].reasons == ("needed by d/2026-11-26",)
    assert decisions[new.key].reasons == ("daily #1", "last good backup", "needed by d/2026-11-25")

    pinned_cycle = [Backup(old.key, DUMP, old.day, pinned=True, depends_on=old.depends_on), older, new, mid]
    decisions = {d.backup.key: d for d in evaluate(pinned_cycle, NOW, {DUMP: Policy(daily=1)})}
    assert decisions[older.key].reasons == ("needed by d/2026-10-01",)
    assert decisions[old.key].reasons == ("pinned", "needed by d/2026-09-01")


def test_failed_dependency_of_kept_backup_is_kept():
    base = Backup("b/1", DUMP, D(2026, 1, 1), status="failed")
    top = Backup("b/2", DUMP, TODAY, depends_on=frozenset({"b/1"}))
    decisions = {d.backup.key: d for d in evaluate([base, top], NOW, {DUMP: Policy(daily=1)})}
    assert decisions["b/1"].keep and decisions["b/1"].reasons == ("needed by b/2",)


# ---------------------------------------------------------------------------
# WAL / point-in-time recovery window
# ---------------------------------------------------------------------------


def _base_and_wal(base_overrides=None, wal_overrides=None, wal_days=40):
    # Base backups every Sunday for 8 weeks, WAL archives every day.
    bases = []
    for i in range(8):
        day = D(2026, 11, 22) - dt.timedelta(weeks=i)
        bases.append(Backup(f"{BASE}/{day}", BASE, day, **(base_overrides or {}).get(day, {})))
    wal_days_list = [TODAY - dt.timedelta(days=i) for i in range(wal_days)]
    wal = history(WAL, TODAY, wal_days, {day: {"wal_for": BASE, **(wal_overrides or {}).get(day, {})} for day in wal_days_list})
    return bases, wal


@pytest.mark.parametrize(
    "policy, base_overrides, window_start",
    [
        (Policy(daily=2), {}, D(2026, 11, 15)),
        (Policy(daily=1), {}, D(2026, 11, 22)),
        (Policy(daily=0, weekly=3), {}, D(2026, 11, 8)),
        (Policy(daily=2), {D(2026, 11, 1): {"pinned": True}}, D(2026, 11, 1)),
        (Policy(daily=2), {D(2026, 11, 15): {"status": "failed"}}, D(2026, 11, 8)),
        # a kept (pinned) failed base backup cannot restore anything: it does not widen the window
        (Policy(daily=2), {D(2026, 11, 1): {"pinned": True, "status": "failed"}}, D(2026, 11, 15)),
        # an unverified base backup does not count: window starts at the 2 kept good ones
        (Policy(daily=2), {D(2026, 11, 22): {"status": "unverified"}}, D(2026, 11, 8)),
    ],
)
def test_wal_window_follows_oldest_kept_good_base_backup(policy, base_overrides, window_start):
    bases, wal = _base_and_wal(base_overrides)
    # the WAL pattern deliberately has a policy that would expire everything: it must be ignored
    decisions = evaluate(bases + wal, NOW, {BASE: policy, WAL: Policy(daily=0)})
    kept_good_base = [d.backup.day for d in decisions if d.backup.artifact == BASE and d.keep and d.backup.status == "good"]
    assert min(kept_good_base) == window_start
    wal_decisions = by_day(decisions, WAL)
    assert len(wal_decisions) == 40 and any(not d.keep for d in wal_decisions.values())
    for day, d in wal_decisions.items():
        if day >= window_start:
            assert d.keep and "needed for PITR window" in d.reasons, day
            assert not any(r.startswith(("daily", "weekly", "monthly")) for r in d.reasons)
        else:
            assert not d.keep, day
            assert d.reasons == (f"expired: before PITR window (oldest kept {BASE} is {window_start})",)


def test_wal_in_window_is_kept_whatever_its_status_and_pinned_wal_survives():
    bases, wal = _base_and_wal(
        wal_overrides={
            TODAY: {"status": "failed"},
            D(2026, 11, 16): {"status": "unverified"},
            D(2026, 10, 20): {"pinned": True},
            D(2026, 10, 21): {"status": "failed"},
        }
    )
    days = by_day(evaluate(bases + wal, NOW, {BASE: Policy(daily=2)}), WAL)
    assert days[TODAY].reasons == ("needed for PITR window",)
    assert days[D(2026, 11, 16)].keep
    assert days[D(2026, 10, 20)].reasons == ("pinned",)
    assert days[D(2026, 10, 21)].reasons[0].startswith("expired: before PITR window")


@pytest.mark.parametrize("base_status", ["failed", None])
def test_all_wal_kept_when_no_base_backup_is_kept(base_status):
    bases, wal = _base_and_wal()
    if base_status is None:
        bases = []
    else:
        bases = [Backup(b.key, b.artifact, b.day, status=base_status) for b in bases]
    decisions = evaluate(bases + wal, NOW, {BASE: Policy(daily=2)})
    assert len(by_day(decisions, WAL)) == 40
    for d in by_day(decisions, WAL).values():
        assert d.keep and "no base backup kept; WAL kept" in d.reasons


def test_wal_only_artifact_needs_no_policy():
    _, wal = _base_and_wal()
    decisions = evaluate(wal, NOW, {"postgres/base_backup": Policy(daily=1)})
    assert all(d.keep for d in decisions)


def test_wal_dependency_on_old_base_backup_widens_the_window():
    bases, wal = _base_and_wal()
    # the WAL of 2026-11-20 (inside the window) depends on the base backup of 2026-10-04
    wal = [
        Backup(w.key, w.artifact, w.day, wal_for=BASE, depends_on=frozenset({f"{BASE}/2026-10-04"}))
        if w.day == D(2026, 11, 20)
        else w
        for w in wal
    ]
    decisions = evaluate(bases + wal, NOW, {BASE: Policy(daily=2)})
    base_days = by_day(decisions, BASE)
    assert base_days[D(2026, 10, 4)].reasons == (f"needed by {WAL}/2026-11-20",)
    assert not base_days[D(2026, 10, 11)].keep
    for day, d in by_day(decisions, WAL).items():
        assert d.keep == (day >= D(2026, 10, 4)), day


# ---------------------------------------------------------------------------
# Time zones and "now"
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "now, tz, local_today",
    [
        (dt.datetime(2026, 11, 26, 20, 0, tzinfo=UTC), "UTC", D(2026, 11, 26)),
        (dt.datetime(2026, 11, 26, 20, 0, tzinfo=UTC), "Pacific/Auckland", D(2026, 11, 27)),  # UTC+13
        (dt.datetime(2026, 11, 26, 3, 0, tzinfo=UTC), "America/Los_Angeles", D(2026, 11, 25)),
        (dt.datetime(2026, 11, 26, 3, 0, tzinfo=UTC), ZoneInfo("America/Los_Angeles"), D(2026, 11, 25)),
        (dt.datetime(2026, 11, 26, 3, 0, tzinfo=UTC), dt.timezone(dt.timedelta(hours=-5)), D(2026, 11, 25)),
        # now given in another zone is converted, not reinterpreted
        (dt.datetime(2026, 11, 27, 8, 0, tzinfo=ZoneInfo("Pacific/Auckland")), "UTC", D(2026, 11, 26)),
    ],
)
def test_tz_decides_which_days_are_in_the_future(now, tz, local_today):
    backups = history(DUMP, D(2026, 11, 27), 10)
    decisions = by_day(evaluate(backups, now, {DUMP: Policy(daily=2)}, tz=tz))
    for day, d in decisions.items():
        if day > local_today:
            assert d.reasons == ("newer than now",), day
    assert decisions[local_today].reasons == ("daily #1", "last good backup")
    assert decisions[local_today - dt.timedelta(days=1)].reasons == ("daily #2",)
    assert not decisions[local_today - dt.timedelta(days=2)].keep


def test_future_backups_do_not_count_toward_rules_or_last_good():
    backups = history(DUMP, D(2026, 12, 5), 20)
    decisions = by_day(evaluate(backups, NOW, {DUMP: Policy(daily=3)}))
    assert decisions[TODAY].reasons == ("daily #1", "last good backup")
    assert decisions[D(2026, 11, 24)].reasons == ("daily #3",)
    assert all(decisions[D(2026, 11, 27) + dt.timedelta(days=i)].reasons == ("newer than now",) for i in range(9))


# ---------------------------------------------------------------------------
# Policies and validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "artifact, policies, default, expected",
    [
        ("postgres/logical_dump", DEFAULT_POLICIES, None, Policy(7, 4, 12)),
        ("redis/snapshot", DEFAULT_POLICIES, None, Policy(7)),
        ("kafka/topic_export/bid-events", DEFAULT_POLICIES, None, Policy(7)),
        ("postgres/logical_dump", {"postgres/*": Policy(1), "postgres/logical_dump": Policy(2)}, None, Policy(2)),
        ("postgres/logical_dump", {"*": Policy(1), "postgres/*": Policy(3)}, None, Policy(3)),
        ("kafka/topic_export/bid-events", {"kafka/*": Policy(1), "kafka/topic_export/*": Policy(5)}, None, Policy(5)),
        ("mysql/dump", DEFAULT_POLICIES, Policy(30), Policy(30)),
        ("Postgres/dump", DEFAULT_POLICIES, Policy(30), Policy(30)),  # case-sensitive
    ],
)
def test_policy_for_most_specific_pattern_wins(artifact, policies, default, expected):
    assert policy_for(artifact, policies, default) == expected


def test_specific_policy_applies_in_evaluate():
    backups = history(DUMP, TODAY, 10) + history(BASE, TODAY, 10)
    decisions = evaluate(backups, NOW, {"postgres/*": Policy(5), DUMP: Policy(2)})
    assert len(kept_days(decisions, DUMP)) == 2
    assert len(kept_days(decisions, BASE)) == 5


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Policy(daily=-1), "Policy.daily must not be negative"),
        (lambda: Policy(weekly=-2), "Policy.weekly must not be negative"),
        (lambda: Policy(monthly=-3), "Policy.monthly must not be negative"),
        (
            lambda: evaluate([Backup("k", DUMP, TODAY), Backup("k", DUMP, D(2026, 11, 1))], NOW, DEFAULT_POLICIES),
            "duplicate backup key.*k",
        ),
        (lambda: evaluate([], dt.datetime(2026, 11, 26, 12), DEFAULT_POLICIES), "timezone-aware"),
        (lambda: evaluate([], NOW, DEFAULT_POLICIES, tz="Mars/Olympus_Mons"), "unknown time zone"),
        (
            lambda: evaluate([Backup("k", "mysql/dump", TODAY)], NOW, DEFAULT_POLICIES),
            "no retention policy matches artifact 'mysql/dump'",
        ),
        (lambda: Backup("k", DUMP, TODAY, status="ok"), "status must be one of"),
    ],
)
def test_validation_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_backup_day_must_be_a_date_not_a_datetime():
    with pytest.raises(TypeError, match="day"):
        Backup("k", DUMP, dt.datetime(2026, 11, 26, tzinfo=UTC))


def test_duplicate_key_error_names_every_duplicate():
    backups = [
        Backup("a", DUMP, TODAY),
        Backup("a", BASE, TODAY),
        Backup("b", DUMP, D(2026, 1, 1)),
        Backup("b", DUMP, D(2026, 1, 2)),
        Backup("c", DUMP, D(2026, 1, 3)),
    ]
    with pytest.raises(ValueError) as info:
        evaluate(backups, NOW, DEFAULT_POLICIES)
    assert "a, b" in str(info.value) and "c" not in str(info.value).split(":")[-1]


# ---------------------------------------------------------------------------
# Determinism and output helpers
# ---------------------------------------------------------------------------


def test_output_sorted_and_independent_of_input_order():
    _, wal = _base_and_wal()
    backups = history(DUMP, TODAY, 60) + history("redis/snapshot", TODAY, 20) + wal
    expected = evaluate(backups, NOW, DEFAULT_POLICIES)
    keys = [(d.backup.artifact, d.backup.day, d.backup.key) for d in expected]
    assert keys == sorted(keys)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = backups[:]
        rng.shuffle(shuffled)
        assert evaluate(shuffled, NOW, DEFAULT_POLICIES) == expected
        assert evaluate(iter(shuffled), NOW, DEFAULT_POLICIES) == expected  # any iterable


def test_expired_returns_exactly_the_expire_decisions():
    decisions = evaluate(history(DUMP, TODAY, 30), NOW, {DUMP: Policy(daily=3)})
    gone = expired(decisions)
    assert {b.day for b in gone} == {TODAY - dt.timedelta(days=i) for i in range(3, 30)}
    assert gone == [d.backup for d in decisions if not d.keep]


def test_format_table_is_aligned_and_complete():
    unverified = Backup("redis/snapshot/2026-11-26", "redis/snapshot", TODAY, status="unverified")
    decisions = evaluate(history(DUMP, TODAY, 10) + [unverified], NOW, {"*": Policy(daily=2, weekly=2)})
    table = format_table(decisions)
    lines = table.splitlines()
    assert len(lines) == 2 + len(decisions)
    assert lines[0].split() == ["ARTIFACT", "DAY", "KEY", "ACTION", "REASONS"]
    # every column starts at the same offset on every line
    starts = [m.start() for m in re.finditer(r"\S+", lines[1])]
    assert len(starts) == 5
    for line, d in zip(lines[2:], decisions):
        for start, value in zip(
            starts,
            [d.backup.artifact, d.backup.day.isoformat(), d.backup.key, "KEEP" if d.keep else "EXPIRE", "; ".join(d.reasons)],
        ):
            assert line[start : start + len(value)] == value
            assert start == 0 or line[start - 1] == " "
    assert "KEEP" in table and "EXPIRE" in table
    assert "daily #1; weekly 2026-W48; last good backup" in table
    assert "newer than last good backup, unverified" in table
    assert format_table([]).splitlines()[0].split() == ["ARTIFACT", "DAY", "KEY", "ACTION", "REASONS"]

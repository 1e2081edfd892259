"""Property tests for the GFS retention policy over random backup histories."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from auction_backup_pipelines.policy.retention import Backup, Decision, Policy, evaluate

ANCHOR = dt.date(2025, 6, 1)
BASE = "postgres/base_backup"
WAL = "postgres/wal"
ARTIFACTS = ["postgres/logical_dump", BASE, "redis/snapshot", "kafka/topic_export/bid-events", WAL]
TZS = ["UTC", "Pacific/Auckland", "America/Los_Angeles", "Asia/Kolkata"]
RULES = ("daily", "weekly", "monthly")

SETTINGS = settings(max_examples=200, deadline=None)


@st.composite
def scenarios(draw):
    span = draw(st.integers(min_value=1, max_value=500))
    n = draw(st.integers(min_value=0, max_value=45))
    backups = []
    for i in range(n):
        artifact = draw(st.sampled_from(ARTIFACTS))
        day = ANCHOR + dt.timedelta(days=draw(st.integers(0, span)))
        backups.append(
            dict(
                key=f"{artifact}/{day}/{i}",
                artifact=artifact,
                day=day,
                status=draw(st.sampled_from(["good", "good", "good", "failed", "unverified"])),
                pinned=draw(st.integers(0, 9)) == 0,
                wal_for=BASE if artifact == WAL else None,
            )
        )
    keys = [b["key"] for b in backups]
    for b in backups:
        if keys and draw(st.integers(0, 4)) == 0:
            b["depends_on"] = frozenset(draw(st.lists(st.sampled_from(keys), max_size=2)))
    now_day = ANCHOR + dt.timedelta(days=draw(st.integers(-3, span + 3)))
    now = dt.datetime.combine(now_day, dt.time(), tzinfo=ZoneInfo(draw(st.sampled_from(TZS))))
    now += dt.timedelta(seconds=draw(st.integers(0, 86399)))
    counts = st.tuples(st.integers(0, 8), st.integers(0, 5), st.integers(0, 13))
    policies = {
        "postgres/*": Policy(*draw(counts)),
        "redis/*": Policy(*draw(counts)),
        "kafka/*": Policy(*draw(counts)),
        "postgres/logical_dump": Policy(*draw(counts)),
    }
    return [Backup(**b) for b in backups], now, draw(st.sampled_from(TZS)), policies


def local_today(now: dt.datetime, tz: str) -> dt.date:
    return now.astimezone(ZoneInfo(tz)).date()


def policy_of(artifact: str, policies: dict[str, Policy]) -> Policy:
    return policies[artifact] if artifact in policies else policies[artifact.split("/")[0] + "/*"]


def newest_good(backups: list[Backup], today: dt.date) -> dict[str, Backup]:
    out: dict[str, Backup] = {}
    for b in sorted(backups, key=lambda b: (b.day, b.key)):
        if b.status == "good" and b.day <= today:
            out[b.artifact] = b
    return out


def bucket(rule: str, day: dt.date):
    if rule == "daily":
        return day
    if rule == "weekly":
        return day.isocalendar()[:2]
    return (day.year, day.month)


def expected_rule_picks(backups, today, policies) -> dict[str, dict[str, str]]:
    """rule -> {key: bucket label}: the newest good backup of each of the N newest buckets."""
    picks: dict[str, dict[str, str]] = {r: {} for r in RULES}
    for artifact in {b.artifact for b in backups if b.wal_for is None}:
        pol = policy_of(artifact, policies)
        good = [b for b in backups if b.artifact == artifact and b.wal_for is None and b.status == "good" and b.day <= today]
        for rule in RULES:
            groups = defaultdict(list)
            for b in good:
                groups[bucket(rule, b.day)].append(b)
            newest_buckets = sorted(groups, reverse=True)[: getattr(pol, rule)]
            for k, bk in enumerate(newest_buckets, start=1):
                chosen = sorted(groups[bk], key=lambda b: (b.day, b.key))[-1]
                if rule == "daily":
                    label = f"daily #{k}"
                elif rule == "weekly":
                    label = f"weekly {bk[0]}-W{bk[1]:02d}"
                else:
                    label = f"monthly {bk[0]}-{bk[1]:02d}"
                picks[rule][chosen.key] = label
    return picks


def kept_keys(decisions: list[Decision]) -> set[str]:
    return {d.backup.key for d in decisions if d.keep}


def oldest_kept_good(decisions: list[Decision], artifact: str) -> dt.date | None:
    days = [d.backup.day for d in decisions if d.keep and d.backup.status == "good" and d.backup.artifact == artifact]
    return min(days) if days else None


def check_newest_good_backup_of_each_artifact_survives(backups, now, tz, policies, decisions):
    decisions = {d.backup.key: d for d in decisions}
    today = local_today(now, tz)
    for b in newest_good(backups, today).values():
        assert decisions[b.key].keep
        assert "last good backup" in decisions[b.key].reasons
    # and any artifact with a good backup keeps at least one good backup
    for artifact in {b.artifact for b in backups if b.status == "good"}:
        assert any(d.keep and d.backup.status == "good" and d.backup.artifact == artifact for d in decisions.values())


def check_each_rule_keeps_at_most_n_and_exactly_the_newest_buckets(backups, now, tz, policies, decisions):
    picks = expected_rule_picks(backups, local_today(now, tz), policies)
    for artifact in {b.artifact for b in backups}:
        mine = [d for d in decisions if d.backup.artifact == artifact]
        for rule in RULES:
            tagged = [d for d in mine if any(r.startswith(rule + " ") for r in d.reasons)]
            if artifact == WAL:
                assert tagged == []  # WAL is never subject to count rules
                continue
            assert len(tagged) <= getattr(policy_of(artifact, policies), rule)
            assert all(d.backup.status == "good" for d in tagged)
    for rule in RULES:
        got = {d.backup.key: r for d in decisions for r in d.reasons if r.startswith(rule + " ")}
        assert got == picks[rule]


def check_expired_backups_have_no_reason_to_be_kept(backups, now, tz, policies, decisions):
    needed = {dep for d in decisions if d.keep for dep in d.backup.depends_on}
    today = local_today(now, tz)
    last_good = newest_good(backups, today)
    for d in decisions:
        if d.keep:
            continue
        b = d.backup
        assert len(d.reasons) == 1 and d.reasons[0].startswith("expired"), d.reasons
        assert not b.pinned
        assert b.key not in needed
        assert b.day <= today
        assert last_good.get(b.artifact) != b
        if b.status == "unverified":
            assert b.artifact in last_good and b.day < last_good[b.artifact].day
        if b.wal_for is not None:
            assert b.day < oldest_kept_good(decisions, b.wal_for)


def check_wal_inside_pitr_window_is_never_expired(backups, now, tz, policies, decisions):
    start = oldest_kept_good(decisions, BASE)
    for d in decisions:
        if d.backup.wal_for is None:
            continue
        if start is None:
            assert d.keep and "no base backup kept; WAL kept" in d.reasons
        elif d.backup.day >= start:
            assert d.keep and "needed for PITR window" in d.reasons
        else:
            assert "needed for PITR window" not in d.reasons


def check_deterministic_and_independent_of_input_order(backups, now, tz, policies, first, rnd):
    shuffled = backups[:]
    rnd.shuffle(shuffled)
    assert evaluate(shuffled, now, policies, tz=tz) == first
    assert evaluate(list(reversed(backups)), now, policies, tz=tz) == first
    order = [(d.backup.artifact, d.backup.day, d.backup.key) for d in first]
    assert order == sorted(order)
    assert sorted(d.backup.key for d in first) == sorted(b.key for b in backups)


def check_every_kept_backup_is_explained_by_a_rule_or_a_well_founded_rail(backups, now, tz, policies, decisions):
    """Kept beyond the rules only by rails: each reason is true, and the kept set is the
    least set the reasons justify.

    Grounding starts from reasons that need nothing else (rules, last good, pinned,
    newer than now, unverified newer than last good, no base kept) and adds a backup
    only when one of its reasons is justified by backups already grounded, so
    dependency cycles cannot keep each other alive.
    """
    today = local_today(now, tz)
    last_good = newest_good(backups, today)
    picks = expected_rule_picks(backups, today, policies)
    rule_keys = {k for rule in RULES for k in picks[rule]}
    by_key = {d.backup.key: d for d in decisions}
    has_good = {b.artifact for b in backups if b.status == "good"}

    def standalone(d: Decision, reason: str) -> bool:
        b = d.backup
        if reason.split(" ")[0] in RULES:
            return b.key in rule_keys
        if reason == "last good backup":
            return last_good.get(b.artifact) == b
        if reason == "pinned":
            return b.pinned
        if reason == "newer than now":
            return b.day > today
        if reason == "newer than last good backup, unverified":
            lg = last_good.get(b.artifact)
            return b.status == "unverified" and (lg is None or b.day >= lg.day)
        if reason == "no base backup kept; WAL kept":
            return b.wal_for is not None and b.wal_for not in has_good
        return False

    for d in decisions:
        if d.keep:
            assert d.reasons and not any(r.startswith("expired") for r in d.reasons)
            for r in d.reasons:
                assert standalone(d, r) or r.startswith("needed by ") or r == "needed for PITR window", r

    grounded = {d.backup.key for d in decisions if d.keep and any(standalone(d, r) for r in d.reasons)}
    while True:
        oldest = {}
        for k in grounded:
            b = by_key[k].backup
            if b.status == "good":
                oldest[b.artifact] = min(oldest.get(b.artifact, b.day), b.day)
        added = set()
        for d in decisions:
            b = d.backup
            if not d.keep or b.key in grounded:
                continue
            for r in d.reasons:
                if r.startswith("needed by "):
                    parent = r[len("needed by ") :]
                    if parent in grounded and b.key in by_key[parent].backup.depends_on:
                        added.add(b.key)
                elif r == "needed for PITR window":
                    if b.wal_for in oldest and b.day >= oldest[b.wal_for]:
                        added.add(b.key)
        if not added:
            break
        grounded |= added
    assert grounded == kept_keys(decisions)

    # Completeness: every backup a rule or rail selects is kept.
    for d in decisions:
        b = d.backup
        if b.key in rule_keys or b.pinned or b.day > today or last_good.get(b.artifact) == b:
            assert d.keep
    for d in decisions:
        if d.keep:
            for dep in d.backup.depends_on:
                if dep in by_key and dep != d.backup.key:
                    assert f"needed by {d.backup.key}" in by_key[dep].reasons


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_retention_properties_hold_for_random_histories(scenario, rnd):
    """All properties on one generated history (generation dominates the runtime)."""
    backups, now, tz, policies = scenario
    decisions = evaluate(backups, now, policies, tz=tz)
    check_newest_good_backup_of_each_artifact_survives(backups, now, tz, policies, decisions)
    check_each_rule_keeps_at_most_n_and_exactly_the_newest_buckets(backups, now, tz, policies, decisions)
    check_expired_backups_have_no_reason_to_be_kept(backups, now, tz, policies, decisions)
    check_wal_inside_pitr_window_is_never_expired(backups, now, tz, policies, decisions)
    check_every_kept_backup_is_explained_by_a_rule_or_a_well_founded_rail(backups, now, tz, policies, decisions)
    check_deterministic_and_independent_of_input_order(backups, now, tz, policies, decisions, rnd)

"""Grandfather-father-son (GFS) retention for backup artifacts.

Pure logic: no I/O, no Dagster, standard library only. :func:`evaluate` takes a
list of :class:`Backup` records and returns one :class:`Decision` (keep or
expire, with human-readable reasons) per backup. Nothing is deleted here; the
caller acts on :func:`expired`.

Semantics
---------
1. **Per artifact.** Backups are grouped by ``artifact`` and each group is
   evaluated on its own. The policy of a group is the entry of ``policies``
   whose ``fnmatch`` pattern matches the artifact (case-sensitive); when
   several match, the most specific (longest) pattern wins, ties broken by the
   pattern text. With no match, ``default_policy`` is used; with no default
   either, ``evaluate`` raises ``ValueError``.
2. **Today.** "Today" is the calendar day of ``now`` in ``tz``. Backups whose
   ``day`` is after today are future / in progress: always kept
   (``"newer than now"``) and ignored by the rules and by "last good".
3. **Buckets** come from ``day`` (the partition day): daily = calendar day,
   weekly = ISO week (``"2026-W47"``), monthly = calendar month
   (``"2026-10"``).
4. **Rules.** For a rule with count N, the buckets that contain at least one
   *good* backup are walked from newest to oldest; in each of the N newest
   such buckets the newest good backup (latest day, ties broken by the
   greatest key) is kept with reason ``"daily #k"`` (k = 1 for the newest day),
   ``"weekly <YYYY-Www>"`` or ``"monthly <YYYY-MM>"``. Rules count
   independently, as in restic's ``forget``: one backup may be kept by several
   rules, and each rule still counts only its own N buckets.
5. **Status.** Only ``"good"`` backups count toward a rule or as "last good".
   ``"failed"`` and ``"unverified"`` backups are expired unless a rail keeps
   them. Rail: an unverified backup dated on or after the day of the newest
   good backup (or any unverified backup when the artifact has no good one) is
   kept with ``"newer than last good backup, unverified"``, so a verification
   still in progress is never raced by the pruner. ("On or after": within one
   day the order of backups is unknown, so the same day counts as newer.)
6. **Safety rails, never expired:** the newest good backup of each artifact,
   WAL artifacts included (``"last good backup"``); pinned backups
   (``"pinned"``); every backup that a kept backup lists in ``depends_on``,
   transitively, across artifacts (``"needed by <key>"``; keys that are not
   in the input are ignored); the keys of ``rails``, each with its own reason
   (pruning keeps the PITR window's base backup this way).
7. **WAL.** Backups with ``wal_for=A`` are not subject to the count rules
   (their own policy is irrelevant). Whatever their status, they are kept
   while their day is on or after the day of the oldest *kept* good backup of
   artifact A (``"needed for PITR window"``). If A has no kept good backup at
   all, every WAL item for A is kept (``"no base backup kept; WAL kept"``):
   WAL that could be the only way to recover is never expired. Keeping WAL or
   a dependency can keep more base backups (via ``depends_on``), which widens
   the window; this is iterated until nothing changes.
8. **Expired** backups carry one reason starting with ``"expired"``:
   ``"expired"`` (good, outside every rule), ``"expired: failed"``,
   ``"expired: unverified and older than last good backup"``, or
   ``"expired: before PITR window (oldest kept <A> is <day>)"`` for WAL
   (whatever its status).
9. **Deterministic.** The output is sorted by (artifact, day, key) and does not
   depend on input order. Reasons of one decision come in a fixed order: rules
   (daily, weekly, monthly), then rails, then ``"needed by"`` sorted by key.
10. **Dependencies on WAL.** A backup reconstructed through PITR (a logical
    dump of a past day) lists in ``depends_on_wal`` the WAL it was recovered
    from (:class:`WalRange`: first and last segment, inclusive). ``evaluate``
    does not act on it (WAL has no records here); :func:`needed_wal` gives the
    ranges every kept backup depends on, for the WAL retention to keep.
11. **Validation.** Negative counts, duplicate keys, a naive ``now`` and an
    unknown time zone raise ``ValueError`` naming the problem; malformed
    ``Backup`` fields raise ``ValueError``/``TypeError`` when constructed.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "Backup",
    "Policy",
    "WalRange",
    "Decision",
    "DEFAULT_POLICIES",
    "STATUSES",
    "evaluate",
    "expired",
    "format_table",
    "needed_wal",
    "policy_for",
]

STATUSES = ("good", "failed", "unverified")

# Reason strings (part of the documented contract; the CLI and README quote them).
LAST_GOOD = "last good backup"
PINNED = "pinned"
NEWER_THAN_NOW = "newer than now"
UNVERIFIED_NEWER = "newer than last good backup, unverified"
PITR_WINDOW = "needed for PITR window"
NO_BASE_KEPT = "no base backup kept; WAL kept"
NEEDED_BY = "needed by "
EXPIRED = "expired"
EXPIRED_FAILED = "expired: failed"
EXPIRED_UNVERIFIED = "expired: unverified and older than last good backup"


_WAL_SEGMENT_NAME = re.compile(r"[0-9A-F]{24}")


@dataclass(frozen=True)
class WalRange:
    """WAL segments a backup depends on: ``first`` to ``last`` inclusive, both 24-hex-digit
    segment names of one timeline (its first 8 digits), e.g. ``000000010000000000000003``."""

    first: str
    last: str

    def __post_init__(self) -> None:
        for name in ("first", "last"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _WAL_SEGMENT_NAME.fullmatch(value):
                raise ValueError(f"WalRange.{name} must be a WAL segment name (24 hex digits, upper case), got {value!r}")
        if self.first[:8] != self.last[:8]:
            raise ValueError(f"WalRange spans two timelines ({self.first} .. {self.last}); expected one")
        if self.first > self.last:
            raise ValueError(f"WalRange starts after it ends ({self.first} .. {self.last})")

    @property
    def timeline(self) -> int:
        return int(self.first[:8], 16)

    def covers(self, segment: str) -> bool:
        """Whether segment name `segment` (a `.partial` suffix ignored) lies in the range."""
        core = segment.removesuffix(".partial")
        return core[:8] == self.first[:8] and self.first <= core <= self.last


@dataclass(frozen=True)
class Backup:
    """One backup artifact instance, as recorded by the backup pipelines."""

    key: str
    artifact: str
    day: _dt.date
    status: str = "good"
    pinned: bool = False
    depends_on: frozenset[str] = frozenset()
    wal_for: str | None = None
    depends_on_wal: WalRange | None = None  # the WAL a PITR reconstruction was recovered from

    def __post_init__(self) -> None:
        for name in ("key", "artifact"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"Backup.{name} must be a non-empty string, got {value!r}")
        if isinstance(self.day, _dt.datetime) or not isinstance(self.day, _dt.date):
            raise TypeError(f"Backup.day must be a datetime.date (not a datetime), got {self.day!r} for {self.key!r}")
        if self.status not in STATUSES:
            raise ValueError(f"Backup.status must be one of {', '.join(STATUSES)}; got {self.status!r} for {self.key!r}")
        if not isinstance(self.pinned, bool):
            raise TypeError(f"Backup.pinned must be a bool, got {self.pinned!r} for {self.key!r}")
        if isinstance(self.depends_on, str):
            raise TypeError(f"Backup.depends_on must be a collection of keys, not a string ({self.key!r})")
        deps = frozenset(self.depends_on)
        if not all(isinstance(d, str) and d for d in deps):
            raise ValueError(f"Backup.depends_on must hold non-empty string keys ({self.key!r})")
        object.__setattr__(self, "depends_on", deps)
        if self.wal_for is not None and (not isinstance(self.wal_for, str) or not self.wal_for):
            raise ValueError(f"Backup.wal_for must be None or an artifact name, got {self.wal_for!r}")
        if self.depends_on_wal is not None and not isinstance(self.depends_on_wal, WalRange):
            raise TypeError(f"Backup.depends_on_wal must be a WalRange or None, got {self.depends_on_wal!r} for {self.key!r}")


@dataclass(frozen=True)
class Policy:
    """How many daily / weekly (ISO) / monthly buckets to keep."""

    daily: int = 7
    weekly: int = 0
    monthly: int = 0

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Policy.{name} must be an int, got {value!r}")
            if value < 0:
                raise ValueError(f"Policy.{name} must not be negative, got {value}")


@dataclass(frozen=True)
class Decision:
    backup: Backup
    keep: bool
    reasons: tuple[str, ...]


DEFAULT_POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        "postgres/*": Policy(daily=7, weekly=4, monthly=12),
        "redis/*": Policy(daily=7),
        "kafka/*": Policy(daily=7),
    }
)


def policy_for(artifact: str, policies: Mapping[str, Policy], default_policy: Policy | None = None) -> Policy:
    """The policy of ``artifact``: longest matching fnmatch pattern, else the default."""
    matches = [p for p in policies if fnmatch.fnmatchcase(artifact, p)]
    if matches:
        best = min(matches, key=lambda p: (-len(p), p))
        return policies[best]
    if default_policy is None:
        raise ValueError(
            f"no retention policy matches artifact {artifact!r} and no default_policy was given "
            f"(patterns: {', '.join(sorted(policies)) or 'none'})"
        )
    return default_policy


def _resolve_tz(tz: str | _dt.tzinfo) -> _dt.tzinfo:
    if isinstance(tz, _dt.tzinfo):
        return tz
    if isinstance(tz, str):
        if tz.upper() == "UTC":
            return _dt.UTC
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}") from exc
    raise TypeError(f"tz must be a time zone name or a tzinfo, got {tz!r}")


def _today(now: _dt.datetime, tz: str | _dt.tzinfo) -> _dt.date:
    if not isinstance(now, _dt.datetime):
        raise TypeError(f"now must be a datetime.datetime, got {now!r}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive datetime {now.isoformat()}")
    return now.astimezone(_resolve_tz(tz)).date()


def _newest(backups: Iterable[Backup]) -> Backup:
    return max(backups, key=lambda b: (b.day, b.key))


# A bucket is a tuple of ints (day, ISO week, month) so buckets of one rule sort
# chronologically.
_Bucket = tuple[int, ...]
_Rule = tuple[str, Callable[[_dt.date], _Bucket], Callable[[_Bucket, int], str]]

_RULES: tuple[_Rule, ...] = (
    ("daily", lambda d: (d.year, d.month, d.day), lambda bucket, k: f"daily #{k}"),
    (
        "weekly",
        lambda d: tuple(d.isocalendar())[:2],
        lambda bucket, k: f"weekly {bucket[0]}-W{bucket[1]:02d}",
    ),
    (
        "monthly",
        lambda d: (d.year, d.month),
        lambda bucket, k: f"monthly {bucket[0]}-{bucket[1]:02d}",
    ),
)


def _rule_keeps(good: list[Backup], policy: Policy) -> list[tuple[Backup, str]]:
    """(backup, reason) pairs for every rule of ``policy`` over the good backups."""
    out: list[tuple[Backup, str]] = []
    for name, bucket_of, label in _RULES:
        count = getattr(policy, name)
        if count == 0:
            continue
        newest_in: dict[_Bucket, Backup] = {}
        for b in good:
            bucket = bucket_of(b.day)
            cur = newest_in.get(bucket)
            if cur is None or (b.day, b.key) > (cur.day, cur.key):
                newest_in[bucket] = b
        for k, bucket in enumerate(sorted(newest_in, reverse=True)[:count], start=1):
            out.append((newest_in[bucket], label(bucket, k)))
    return out


def _reason_rank(reason: str) -> tuple[int, str]:
    if reason.startswith("daily "):
        return (0, "")
    if reason.startswith("weekly "):
        return (1, "")
    if reason.startswith("monthly "):
        return (2, "")
    fixed = (LAST_GOOD, PINNED, NEWER_THAN_NOW, UNVERIFIED_NEWER, PITR_WINDOW, NO_BASE_KEPT)
    if reason in fixed:
        return (3 + fixed.index(reason), "")
    return (3 + len(fixed), reason)  # "needed by <key>", sorted by key


def evaluate(
    backups: Iterable[Backup],
    now: _dt.datetime,
    policies: Mapping[str, Policy],
    tz: str | _dt.tzinfo = "UTC",
    default_policy: Policy | None = None,
    rails: Mapping[str, str] | None = None,
) -> list[Decision]:
    """Decide keep/expire for every backup; see the module docstring for the rules.

    `rails` maps backup keys to a reason that keeps them like a pin (e.g. the base backup the
    PITR window starts from, policy/wal_pruning.py); keys not in the input are ignored.
    """
    items = list(backups)
    for b in items:
        if not isinstance(b, Backup):
            raise TypeError(f"expected Backup records, got {b!r}")
    for pattern, policy in policies.items():
        if not isinstance(policy, Policy):
            raise TypeError(f"policy for pattern {pattern!r} must be a Policy, got {policy!r}")
    if default_policy is not None and not isinstance(default_policy, Policy):
        raise TypeError(f"default_policy must be a Policy or None, got {default_policy!r}")
    dups = sorted(k for k, n in Counter(b.key for b in items).items() if n > 1)
    if dups:
        raise ValueError(f"duplicate backup key(s): {', '.join(dups)}")
    today = _today(now, tz)

    by_key = {b.key: b for b in items}
    reasons: dict[str, set[str]] = {b.key: set() for b in items}

    groups: dict[str, list[Backup]] = {}
    for b in sorted(items, key=lambda b: (b.artifact, b.day, b.key)):
        groups.setdefault(b.artifact, []).append(b)

    for artifact, group in groups.items():
        present = [b for b in group if b.day <= today]
        for b in group:
            if b.day > today:
                reasons[b.key].add(NEWER_THAN_NOW)
        regular = [b for b in present if b.wal_for is None]
        if any(b.wal_for is None for b in group):
            policy = policy_for(artifact, policies, default_policy)
            for b, reason in _rule_keeps([b for b in regular if b.status == "good"], policy):
                reasons[b.key].add(reason)
        good_present = [b for b in present if b.status == "good"]
        last_good = _newest(good_present) if good_present else None
        if last_good is not None:
            reasons[last_good.key].add(LAST_GOOD)
        for b in group:
            if b.status == "unverified" and (last_good is None or b.day >= last_good.day):
                reasons[b.key].add(UNVERIFIED_NEWER)

    for b in items:
        if b.pinned:
            reasons[b.key].add(PINNED)
    for key, reason in sorted((rails or {}).items()):
        if key in reasons:
            reasons[key].add(reason)

    wal_items = sorted((b for b in items if b.wal_for is not None), key=lambda b: (b.day, b.key))
    while True:
        changed = False
        # Dependencies of kept backups, transitively.
        stack = sorted(k for k, r in reasons.items() if r)
        while stack:
            key = stack.pop()
            for dep in sorted(by_key[key].depends_on):
                if dep not in by_key or dep == key:
                    continue
                newly_kept = not reasons[dep]
                reason = NEEDED_BY + key
                if reason not in reasons[dep]:
                    reasons[dep].add(reason)
                    changed = True
                if newly_kept:
                    stack.append(dep)
        # WAL window from the oldest kept good backup of each base artifact.
        oldest_kept: dict[str, _dt.date] = {}
        for b in items:
            if b.status == "good" and reasons[b.key]:
                if b.artifact not in oldest_kept or b.day < oldest_kept[b.artifact]:
                    oldest_kept[b.artifact] = b.day
        for w in wal_items:
            base_day = oldest_kept.get(w.wal_for) if w.wal_for is not None else None
            if base_day is None:
                reason = NO_BASE_KEPT
            elif w.day >= base_day:
                reason = PITR_WINDOW
            else:
                continue
            if reason not in reasons[w.key]:
                reasons[w.key].add(reason)
                changed = True
        if not changed:
            break

    decisions: list[Decision] = []
    for b in sorted(items, key=lambda b: (b.artifact, b.day, b.key)):
        keep_reasons = reasons[b.key]
        if keep_reasons:
            ordered = tuple(sorted(keep_reasons, key=_reason_rank))
            decisions.append(Decision(backup=b, keep=True, reasons=ordered))
            continue
        if b.wal_for is not None:
            oldest_day = oldest_kept[b.wal_for].isoformat()
            why = f"expired: before PITR window (oldest kept {b.wal_for} is {oldest_day})"
        elif b.status == "failed":
            why = EXPIRED_FAILED
        elif b.status == "unverified":
            why = EXPIRED_UNVERIFIED
        else:
            why = EXPIRED
        decisions.append(Decision(backup=b, keep=False, reasons=(why,)))
    return decisions


def needed_wal(decisions: Iterable[Decision]) -> list[tuple[str, WalRange]]:
    """(backup key, WAL range) for every kept backup that depends on WAL, sorted: what WAL
    retention must keep however old it is."""
    return sorted(
        ((d.backup.key, d.backup.depends_on_wal) for d in decisions if d.keep and d.backup.depends_on_wal is not None),
        key=lambda kv: (kv[1].first, kv[1].last, kv[0]),
    )


def expired(decisions: Iterable[Decision]) -> list[Backup]:
    """The backups to delete, in decision order."""
    return [d.backup for d in decisions if not d.keep]


def format_table(decisions: Iterable[Decision]) -> str:
    """An aligned text table (artifact, day, key, KEEP/EXPIRE, reasons) for the CLI."""
    header = ("ARTIFACT", "DAY", "KEY", "ACTION", "REASONS")
    rows = [
        (
            d.backup.artifact,
            d.backup.day.isoformat(),
            d.backup.key,
            "KEEP" if d.keep else "EXPIRE",
            "; ".join(d.reasons),
        )
        for d in decisions
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    rule = tuple("-" * w for w in widths)
    return "\n".join([line(header), line(rule), *map(line, rows)])

"""Which leftovers of crashed runs to remove, and why: one decision for `prune` and the cleanup job.

Why a module of its own: a file without a manifest, a temporary file or an unfinished upload is
exactly what a backup still being written looks like. The only safe tells are time and the
partition lock: a candidate (repository/leftovers.py lists them) is removed once it has not been
written for the safety age (LEFTOVER_SAFETY_AGE_S, 6 h by default: far longer than any write
stalls) AND no live writer holds the lock of its partition. Everything else is kept, with the
reason. `decide` is pure (the listing and `now` are inputs); `remove` re-lists and decides again
under the partition lock right before each removal, so a request planned earlier (by the
retention sensor) never removes what has changed since.

Never candidates at all (the listing skips them, and `decide` refuses them again): the WAL
archive's segments, `.partial` segments and records, pins, catalog entries, locks. A backup
folder whose manifest is missing while the catalog records it is not a crash leftover but a
vanished manifest: `verify` reports it and `verify --forget` accepts the loss; it is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository import leftovers as listing
from auction_backup_pipelines.repository.leftovers import INCOMPLETE_BACKUP, TEMP_FILE, UNFINISHED_UPLOAD, Leftover
from auction_backup_pipelines.repository.storage import Backend, StorageError

__all__ = [
    "ALREADY_GONE",
    "DEFAULT_SAFETY_AGE",
    "ERROR",
    "INCOMPLETE_BACKUP",
    "KEPT",
    "REMOVED",
    "TEMP_FILE",
    "UNFINISHED_UPLOAD",
    "WOULD_REMOVE",
    "Decision",
    "Outcome",
    "decide",
    "plan",
    "prune_command",
    "remove",
    "removable_ids",
]

DEFAULT_SAFETY_AGE = dt.timedelta(hours=6)

# Outcome actions of `remove`.
REMOVED = "removed"
WOULD_REMOVE = "would remove"
KEPT = "kept"
ALREADY_GONE = "already gone"
ERROR = "error"


@dataclass(frozen=True)
class Decision:
    leftover: Leftover
    remove: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    id: str
    action: str  # REMOVED, WOULD_REMOVE, KEPT, ALREADY_GONE or ERROR
    reason: str
    leftover: Leftover | None = None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _age(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{max(seconds, 0):.0f} s"


def _protected(x: Leftover) -> str | None:
    """Why `x` may never be removed as a leftover (a second line of defence behind the listing)."""
    if x.kind == TEMP_FILE:
        return None if layout.temp_target(x.key) is not None else "not a temporary file's name"
    if layout.is_in_wal_area(x.key) and x.kind != UNFINISHED_UPLOAD:
        return "the WAL archive has no manifests by design: never a leftover"
    if layout.is_store_key(x.key) or layout.parse_pin_key(x.key) is not None:
        return "a lock, a pin or the encryption marker: never a leftover"
    if x.kind == INCOMPLETE_BACKUP:
        try:
            layout.BackupRef.parse(x.key)
        except ConfigurationError:
            return "not a backup folder"
        if x.catalogued:
            return "the catalog records this backup, so its manifest vanished: `verify` reports it, `verify --forget` accepts the loss"
    return None


def _what(x: Leftover) -> str:
    if x.kind == TEMP_FILE:
        return f"temporary file of an unfinished write ({x.size} bytes)"
    if x.kind == INCOMPLETE_BACKUP:
        return f"backup folder without a manifest ({len(x.keys)} file(s), {x.size} bytes): its run died before publishing it"
    return "multipart upload started and never completed (a killed or cut-off writer)"


def decide(found: Iterable[Leftover], now: dt.datetime, safety_age: dt.timedelta = DEFAULT_SAFETY_AGE) -> list[Decision]:
    """Remove or keep each candidate, with its reason (pure: nothing is listed or removed here)."""
    decisions = []
    for x in found:
        age = (now - x.modified).total_seconds()
        guard = f"the lock of {x.lock_name}" if x.lock_name else "no partition lock guards it"
        if (why := _protected(x)) is not None:
            decisions.append(Decision(x, False, why))
        elif x.locked:
            decisions.append(Decision(x, False, f"a live writer holds {guard} (a backup being written looks the same)"))
        elif age < safety_age.total_seconds():
            decisions.append(
                Decision(x, False, f"last written {_age(age)} ago, within the safety age ({_age(safety_age.total_seconds())})")
            )
        else:
            who = f"no writer holds {guard}" if x.lock_name else guard
            reason = f"{_what(x)}; last written {_age(age)} ago (safety age {_age(safety_age.total_seconds())}); {who}"
            decisions.append(Decision(x, True, reason))
    return decisions


def plan(backend: Backend, now: dt.datetime | None = None, safety_age: dt.timedelta = DEFAULT_SAFETY_AGE) -> list[Decision]:
    """List the store's leftovers once and decide each (nothing removed)."""
    return decide(listing.find(backend), now or utcnow(), safety_age)


def removable_ids(decisions: Iterable[Decision]) -> list[str]:
    """The ids a cleanup request names: what the plan removes."""
    return sorted(d.leftover.id for d in decisions if d.remove)


def remove(
    backend: Backend,
    ids: Iterable[str] | None = None,
    now: dt.datetime | None = None,
    safety_age: dt.timedelta = DEFAULT_SAFETY_AGE,
    dry_run: bool = False,
    prefix: str = "",
) -> list[Outcome]:
    """Remove the requested leftovers (None: every one the fresh plan removes), each only if a fresh
    decision, taken again under its partition lock, still removes it; one Outcome per id."""
    now = now or utcnow()
    fresh = {d.leftover.id: d for d in decide(listing.find(backend, prefix), now, safety_age)}
    wanted = sorted(set(ids)) if ids is not None else sorted(i for i, d in fresh.items() if d.remove)
    outcomes = []
    for i in wanted:
        d = fresh.get(i)
        if d is None:
            outcomes.append(Outcome(i, ALREADY_GONE, "no longer there (removed, or published meanwhile)"))
        elif not d.remove:
            outcomes.append(Outcome(i, KEPT, "kept by a fresh decision: " + d.reason, d.leftover))
        elif dry_run:
            outcomes.append(Outcome(i, WOULD_REMOVE, d.reason, d.leftover))
        else:

            def still(x: Leftover) -> tuple[bool, str]:
                again = decide([x], now, safety_age)[0]
                return again.remove, again.reason

            try:
                done, why = listing.remove(backend, d.leftover, still)
            except (StorageError, OSError) as exc:
                outcomes.append(Outcome(i, ERROR, f"{type(exc).__name__}: {exc}", d.leftover))
                continue
            if done:
                outcomes.append(Outcome(i, REMOVED, d.reason, d.leftover))
            else:
                outcomes.append(Outcome(i, ALREADY_GONE if why == "already gone" else KEPT, why, d.leftover))
    return outcomes


def prune_command(backend: Backend, dry_run: bool, safety_age: dt.timedelta, now: dt.datetime | None = None) -> int:
    """The leftover part of `auction-backup prune [--dry-run]`: every decision with its reason, then
    the removals (exit code 1 when one failed)."""
    now = now or utcnow()
    decisions = plan(backend, now, safety_age)
    where = listing.bare(backend).describe()
    if not decisions:
        print(f"no leftovers of crashed runs in {where}")
        return 0
    print(f"leftovers of crashed runs in {where} (safety age {_age(safety_age.total_seconds())}):")
    for d in decisions:
        verb = ("would remove" if dry_run else "remove") if d.remove else "keep"
        print(f"{verb:<12}  {d.leftover.kind:<27}  {d.leftover.key}  ({d.reason})")
    doomed = removable_ids(decisions)
    if dry_run or not doomed:
        print(
            f"{'dry run: ' if dry_run else ''}{len(doomed)} leftover(s) to remove, {len(decisions) - len(doomed)} kept; nothing was removed"
        )
        return 0
    outcomes = remove(backend, doomed, now, safety_age)
    for o in outcomes:
        if o.action != REMOVED:
            print(f"{o.action:<12}  {o.id}  ({o.reason})")
    counts = {a: sum(o.action == a for o in outcomes) for a in (REMOVED, ALREADY_GONE, KEPT, ERROR)}
    print("leftovers: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    return 1 if counts[ERROR] else 0

"""Retention of both repositories: the local one and its offsite copy, pruned by the same policy.

Why a module of its own: pruning.py acts on one repository; the life cycle manages two. The
offsite copy (ops/offsite.py) would otherwise grow forever, since copies are only ever added.
Here each repository is a `Target` (its name, its repository, its policy, the pins it honours),
and the sensor, the cleanup job and `auction-backup prune` plan and delete per target through
the same pruning functions, so every rail holds offsite too:

- the policy offsite is the local one, count by count, unless OFFSITE_RETENTION_DAILY /
  _WEEKLY / _MONTHLY override a count (for every artifact; settings/storage.py);
- the newest good backup of each artifact *in the offsite repository* is never expired, so the
  offsite side always keeps a copy of its own, whatever the local side holds;
- a day pinned in either repository is pinned offsite (an operator pins with `auction-backup pin`,
  which writes locally; a legal hold that spared only the local copy would surprise them);
- deletions re-plan from a fresh listing of that repository (pruning.delete_expired), catalog
  entry then manifest then files, as locally;
- the WAL archive copied offsite (ops/offsite.py copy_wal, same layout) is pruned by the same WAL
  plan as the local one (policy/wal_pruning.py), computed from the offsite repository's own base
  backups with the target's PITR window (PITR_WINDOW_DAYS), and deleted after those base backups.

The status a rule reads is the one the offsite manifest recorded when it was copied.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from auction_backup_pipelines.policy import pruning, retention, wal_pruning
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import PartitionRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings

LOCAL = "local"
OFFSITE = "offsite"


def offsite_policies(
    settings: OffsiteSettings, local: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES
) -> Mapping[str, retention.Policy]:
    """The local policies with each count the settings set replaced, for every artifact pattern."""
    overrides = {
        name: value
        for name, value in (
            ("daily", settings.retention_daily),
            ("weekly", settings.retention_weekly),
            ("monthly", settings.retention_monthly),
        )
        if value is not None
    }
    return MappingProxyType({pattern: dataclasses.replace(p, **overrides) for pattern, p in local.items()})


@dataclass(frozen=True)
class Target:
    """One repository under retention: `name` is LOCAL or OFFSITE and labels every decision."""

    name: str
    repo: Repository
    policies: Mapping[str, retention.Policy] = field(default_factory=lambda: retention.DEFAULT_POLICIES)
    pins_from: Repository | None = None  # another repository whose pins also hold here
    # PITR_WINDOW_DAYS: the window's base backup is kept, and the WAL from its start on
    pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW

    def pins(self) -> frozenset[PartitionRef]:
        if self.pins_from is None:
            return frozenset()
        return frozenset(p for o in self.pins_from.backend.list("") if (p := layout.parse_pin_key(o.key)) is not None)

    def describe(self) -> str:
        return f"{self.name} repository {self.repo.describe()}"


def local_target(repo: Repository, pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW) -> Target:
    return Target(LOCAL, repo, pitr_window=pitr_window)


def offsite_target(
    offsite_repo: Repository, local_repo: Repository, settings: OffsiteSettings, pitr_window: dt.timedelta
) -> Target:
    """The offsite repository under the offsite policy and the PITR window (PITR_WINDOW_DAYS, as
    locally), honouring the local repository's pins."""
    return Target(OFFSITE, offsite_repo, offsite_policies(settings), pins_from=local_repo, pitr_window=pitr_window)


def plan(target: Target, now: dt.datetime | None = None) -> list[retention.Decision]:
    """Keep/expire with reasons for every backup of the target (nothing deleted)."""
    return pruning.plan(
        target.repo, now or pruning.utcnow(), target.policies, extra_pins=target.pins(), pitr_window=target.pitr_window
    )


def plan_with_wal(target: Target, now: dt.datetime | None = None) -> tuple[list[retention.Decision], wal_pruning.WalPlan]:
    """`plan` and the plan of the target's WAL archive, from one listing of that repository."""
    return pruning.plan_with_wal(
        target.repo, now or pruning.utcnow(), target.policies, target.pitr_window, extra_pins=target.pins()
    )


def delete_expired(
    target: Target, keys: Iterable[str], now: dt.datetime | None = None, dry_run: bool = False
) -> list[pruning.Outcome]:
    """pruning.delete_expired on the target, with its policy and pins (a fresh plan per call)."""
    return pruning.delete_expired(
        target.repo,
        keys,
        now=now or pruning.utcnow(),
        policies=target.policies,
        dry_run=dry_run,
        extra_pins=target.pins(),
        pitr_window=target.pitr_window,
    )


def delete_expired_wal(
    target: Target, runs: Iterable[str], now: dt.datetime | None = None, dry_run: bool = False
) -> list[wal_pruning.WalOutcome]:
    """wal_pruning.delete_expired_wal on the target's WAL archive; call it after its base backups
    were deleted (a fresh plan counts every base backup still there as kept)."""
    return wal_pruning.delete_expired_wal(target.repo, runs, now or pruning.utcnow(), target.pitr_window, dry_run)


def prune_target_command(target: Target, dry_run: bool, now: dt.datetime | None = None) -> int:
    """One repository's part of `auction-backup prune`: a heading naming it, the keep/expire table
    and its WAL archive's runs, then the deletions, backups first, then WAL (or, dry, what would
    go). Returns the exit code (1 when a deletion failed)."""
    now = now or pruning.utcnow()
    print(f"== {target.describe()}")
    decisions, wal = plan_with_wal(target, now)
    if not decisions and not wal.decisions:
        print(f"{target.name}: no backups")
        return 0
    if decisions:
        print(retention.format_table(decisions))
    if wal.decisions:
        print("\n" + wal_pruning.report(wal))
    doomed = [b.key for b in retention.expired(decisions)]
    kept = len(decisions) - len(doomed)
    wal_runs = [r for r in wal.runs() if not r.keep]
    if not doomed and not wal_runs:
        print(f"\n{target.name}: nothing expired; {kept} backup(s) kept")
        return 0
    if dry_run:
        wal_part = f"{len(wal.expired())} WAL file(s) would be deleted; " if wal_runs else ""
        print(f"\n{target.name}: dry run: {len(doomed)} backup(s) would be deleted, {kept} kept; {wal_part}nothing was deleted")
        for key in doomed:
            print(f"{pruning.WOULD_DELETE:<12}  {target.name}  {key}")
        for run in wal_runs:
            print(f"{pruning.WOULD_DELETE:<12}  {target.name}  WAL {run.label}  ({run.count} file(s); {run.reason})")
        return 0
    print()
    outcomes = delete_expired(target, doomed, now=now) if doomed else []
    for o in outcomes:
        print(f"{o.action:<12}  {target.name}  {o.key}  ({o.reason})")
    # WAL only now: a base backup whose deletion failed or was refused keeps its WAL.
    wal_outcomes = delete_expired_wal(target, [r.label for r in wal_runs], now) if wal_runs else []
    for w in wal_outcomes:
        print(f"{w.action:<12}  {target.name}  WAL {w.label}  ({w.count} file(s); {w.reason})")
    counts = {
        a: sum(o.action == a for o in outcomes) for a in (pruning.DELETED, pruning.ALREADY_GONE, pruning.KEPT, pruning.ERROR)
    }
    print(f"{target.name}: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
    if wal_outcomes:
        wal_counts = (pruning.DELETED, pruning.KEPT, pruning.ERROR)
        print(
            f"{target.name} WAL: "
            + ", ".join(f"{sum(w.count for w in wal_outcomes if w.action == a)} file(s) {a}" for a in wal_counts)
        )
    return 1 if counts[pruning.ERROR] or any(w.action == pruning.ERROR for w in wal_outcomes) else 0

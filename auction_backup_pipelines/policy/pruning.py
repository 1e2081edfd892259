"""Pruning: the repository seen through the retention policy, and the deletions it allows.

Plain Python (no Dagster), so the CLI prunes while Dagster is down and the sensor, the cleanup
job and the CLI share one code path. ``retention.evaluate`` decides; this module only turns
what the repository holds into retention records and acts on the decisions.

Retention key
    The backup's key, ``<system>/<artifact>/<day>/<backup_id>`` (layout.BackupRef; a Kafka
    artifact has a slash of its own, ``topic_export/<topic>``). It names one published
    backup: when a day is backed up again (a new backup_id), a deletion request made for the
    old backup cannot touch the new bytes. ``depends_on`` lists keys in the same form. The
    retention artifact is ``<system>/<artifact>``, which the policy patterns (``postgres/*``)
    match.
Status (from the manifest's metadata)
    ``"failed"`` when ``verification == "failed"``; else ``status`` when present (it must be
    one of retention.STATUSES: an unknown value raises rather than guess about a deletion);
    else ``"good"``.
Pins
    An object ``<system>/<artifact>/<day>/PINNED`` (a JSON note; layout.PartitionRef.pin_key)
    pins every backup of that day, including one taken again later.
One listing
    A plan lists the backend exactly once and derives manifests and pins from that pass, so
    a sensor tick costs one listing whatever the repository holds.
Deleting
    ``delete_expired`` re-plans from a fresh listing and deletes only keys that the fresh plan
    still expires (a backup may have become the last good one, or been pinned, since the
    request was made). Keys already gone are reported, not errors: reruns are safe.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.policy import retention
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import BackupRef, PartitionRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository, parse_day
from auction_backup_pipelines.repository.storage import RepositoryError, StorageError

# WAL artifacts and the base backup artifact whose PITR window they serve.
WAL_FOR = {"postgres/wal": "postgres/base_backup"}
TZ = "UTC"  # partition days are UTC days

# Outcome actions of delete_expired.
DELETED = "deleted"
WOULD_DELETE = "would delete"
ALREADY_GONE = "already gone"
KEPT = "kept"
ERROR = "error"


class PruningError(RepositoryError):
    """A manifest says something the pruner will not guess about."""


def utcnow() -> dt.datetime:
    """The pruner's clock (one place, so tests can fix it)."""
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Outcome:
    key: str
    action: str  # DELETED, WOULD_DELETE, ALREADY_GONE, KEPT or ERROR
    reason: str
    backup: Backup | None = None  # the manifest, when the backup still existed


@dataclass(frozen=True)
class _Snapshot:
    backups: dict[str, Backup]  # retention key -> manifest
    records: list[retention.Backup]
    objects: list[str]  # every listed key, to finish half-done deletions


def _status(b: Backup) -> str:
    meta = b.metadata
    if meta.get("verification") == "failed":
        return "failed"
    status = meta.get("status", "good")
    if status not in retention.STATUSES:
        raise PruningError(f"manifest {b.manifest_key} has status {status!r}; expected one of {', '.join(retention.STATUSES)}")
    return status


def _record(b: Backup, pins: set[PartitionRef]) -> retention.Backup:
    deps = b.metadata.get("depends_on", [])
    if not isinstance(deps, (list, tuple)):
        raise PruningError(f"manifest {b.manifest_key}: depends_on must be a list of backup keys, got {deps!r}")
    ref = b.ref
    artifact = layout.artifact_key(b.system, b.artifact)
    return retention.Backup(
        key=ref.key,
        artifact=artifact,
        day=b.day,
        status=_status(b),
        pinned=ref.partition_ref in pins,
        depends_on=frozenset(deps),
        wal_for=WAL_FOR.get(artifact),
    )


def _scan(repo: Repository) -> _Snapshot:
    objects = [o.key for o in repo.backend.list("")]  # the one listing
    pins = {pin for k in objects if (pin := layout.parse_pin_key(k)) is not None}
    backups: dict[str, Backup] = {}
    for key in objects:
        if layout.is_manifest_key(key):
            b = repo.load_manifest(key)  # same parsing and errors as Repository.list
            backups[b.prefix] = b
    return _Snapshot(backups, [_record(b, pins) for b in backups.values()], objects)


def records_from_repository(repo: Repository) -> list[retention.Backup]:
    """One retention record per complete backup, from a single listing of the repository."""
    return _scan(repo).records


def plan(
    repo: Repository,
    now: dt.datetime | None = None,
    policies: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES,
) -> list[retention.Decision]:
    """Keep/expire, with reasons, for every backup in the repository (one listing; nothing deleted)."""
    return retention.evaluate(records_from_repository(repo), now or utcnow(), policies, TZ)


def delete_expired(
    repo: Repository,
    keys: Iterable[str],
    now: dt.datetime | None = None,
    policies: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES,
    dry_run: bool = False,
) -> list[Outcome]:
    """Delete the given backups, each only if a fresh plan still expires it; one Outcome per key."""
    snap = _scan(repo)
    decisions = {d.backup.key: d for d in retention.evaluate(snap.records, now or utcnow(), policies, TZ)}
    outcomes = []
    for key in sorted(set(keys)):
        decision = decisions.get(key)
        if decision is None:
            outcomes.append(_finish_half_deleted(repo, key, snap.objects, dry_run))
        elif decision.keep:
            reason = "kept by a fresh plan: " + "; ".join(decision.reasons)
            outcomes.append(Outcome(key, KEPT, reason, snap.backups[key]))
        elif dry_run:
            outcomes.append(Outcome(key, WOULD_DELETE, decision.reasons[0], snap.backups[key]))
        else:
            try:
                repo.delete(snap.backups[key])  # manifest first
            except (StorageError, OSError) as exc:
                outcomes.append(Outcome(key, ERROR, f"{type(exc).__name__}: {exc}", snap.backups[key]))
            else:
                outcomes.append(Outcome(key, DELETED, decision.reasons[0], snap.backups[key]))
    return outcomes


def _finish_half_deleted(repo: Repository, key: str, objects: list[str], dry_run: bool) -> Outcome:
    # No manifest under `key`. A requested key had one when it was planned, and a backup still
    # being written has a fresh backup_id that no plan has seen, so files left under this exact
    # prefix are what an interrupted deletion left behind: finish the job. A key that names no
    # backup (malformed) has no leftovers: nothing is deleted for it.
    try:
        ref = BackupRef.parse(key)
    except ConfigurationError:
        ref = None
    leftovers = [k for k in objects if ref.owns(k)] if ref is not None else []
    if leftovers and not dry_run:
        for k in leftovers:
            repo.backend.delete(k)
    note = f"; {'would remove' if dry_run else 'removed'} {len(leftovers)} leftover file(s)" if leftovers else ""
    return Outcome(key, ALREADY_GONE, "no complete backup under this key" + note)


# -- pins ------------------------------------------------------------------------------------


def _pin_key(system: str, artifact: str, day: str | dt.date) -> str:
    try:
        return PartitionRef(system, artifact, parse_day(day)).pin_key
    except ConfigurationError as exc:
        raise PruningError(str(exc)) from None


def pin(repo: Repository, system: str, artifact: str, day: str | dt.date, note: str = "") -> str:
    """Pin every backup of one day so retention never expires it; returns the pin's key."""
    key = _pin_key(system, artifact, day)
    repo.get(system, artifact, day)  # NotFoundError (listing the days there are) on a typo
    with repo.backend.writer(key) as f:
        f.write(json.dumps({"note": note, "pinned_at": utcnow().isoformat(timespec="seconds")}).encode())
    return key


def unpin(repo: Repository, system: str, artifact: str, day: str | dt.date) -> bool:
    """Remove a pin; False when the day was not pinned (unpinning twice is fine)."""
    key = _pin_key(system, artifact, day)
    existed = any(o.key == key for o in repo.backend.list(key))
    repo.backend.delete(key)
    return existed


# -- CLI -------------------------------------------------------------------------------------


def prune_command(repo: Repository, dry_run: bool, now: dt.datetime | None = None) -> int:
    """`auction-backup prune [--dry-run]`: print the keep/expire table, then delete (exit code)."""
    now = now or utcnow()
    decisions = plan(repo, now)
    if not decisions:
        print(f"no backups in {repo.describe()}")
        return 0
    print(retention.format_table(decisions))
    doomed = [b.key for b in retention.expired(decisions)]
    kept = len(decisions) - len(doomed)
    if not doomed:
        print(f"\nnothing expired; {kept} backup(s) kept")
        return 0
    if dry_run:
        print(f"\ndry run: {len(doomed)} backup(s) would be deleted, {kept} kept; nothing was deleted")
        return 0
    print()
    outcomes = delete_expired(repo, doomed, now=now)
    for o in outcomes:
        print(f"{o.action:<12}  {o.key}  ({o.reason})")
    counts = {a: sum(o.action == a for o in outcomes) for a in (DELETED, ALREADY_GONE, KEPT, ERROR)}
    print(", ".join(f"{n} {a}" for a, n in counts.items()))
    return 1 if counts[ERROR] else 0

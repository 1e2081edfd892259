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
Status (from the backup's latest restore verdict, else its manifest's metadata)
    A verdict (repository/verdicts.py, written by every restore check) decides when there is
    one: ``"failed"`` when the latest restore verification failed, ``"good"`` when it passed.
    Without one: ``"failed"`` when ``verification == "failed"``; else ``status`` when present
    (it must be one of retention.STATUSES: an unknown value raises rather than guess about a
    deletion); else ``"good"``. A verdict that cannot be read, or an inconclusive one (the
    check could not run), counts as none.
Dependencies
    ``depends_on`` (backup keys) and ``depends_on_wal`` (``{"first": seg, "last": seg}``,
    WAL segment names, inclusive) from the manifest: a dump reconstructed through PITR names
    the base backup and the WAL it was recovered from (postgres/logical_day.py). The policy
    keeps what a kept backup depends on; ``retention.needed_wal`` gives the WAL ranges.
Pins
    An object ``<system>/<artifact>/<day>/PINNED`` (a JSON note; layout.PartitionRef.pin_key)
    pins every backup of that day, including one taken again later.
One listing
    A plan lists the backend exactly once and derives manifests and pins from that pass, so
    a sensor tick costs one listing whatever the repository holds.
WAL archive
    Its segments have no manifests; policy/wal_pruning.py plans them from the same listing
    (``plan_with_wal``) and the GFS plan keeps the base backup the PITR window starts from.
    WAL is deleted after the base backups (``offsite_retention.prune_target_command``, the cleanup job).
Deleting
    ``delete_expired`` re-plans from a fresh listing and deletes only keys that the fresh plan
    still expires (a backup may have become the last good one, or been pinned, since the
    request was made). Keys already gone are reported, not errors: reruns are safe.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.policy import retention, wal_pruning
from auction_backup_pipelines.repository import layout, verdicts
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


def _status(b: Backup, verdict: verdicts.Verdict | None = None) -> str:
    if verdict is not None and (verdict.passed or verdict.failed):  # an inconclusive one counts as none
        return "good" if verdict.passed else "failed"
    meta = b.metadata
    if meta.get("verification") == "failed":
        return "failed"
    status = meta.get("status", "good")
    if status not in retention.STATUSES:
        raise PruningError(f"manifest {b.manifest_key} has status {status!r}; expected one of {', '.join(retention.STATUSES)}")
    return status


def _wal_range(b: Backup) -> retention.WalRange | None:
    doc = b.metadata.get("depends_on_wal")
    if doc is None:
        return None
    try:
        return retention.WalRange(doc["first"], doc["last"])
    except (TypeError, KeyError, ValueError) as exc:
        raise PruningError(f"manifest {b.manifest_key}: depends_on_wal is not a WAL range ({exc})") from None


def _record(b: Backup, pins: set[PartitionRef], verdict: verdicts.Verdict | None = None) -> retention.Backup:
    deps = b.metadata.get("depends_on", [])
    if not isinstance(deps, (list, tuple)):
        raise PruningError(f"manifest {b.manifest_key}: depends_on must be a list of backup keys, got {deps!r}")
    ref = b.ref
    artifact = layout.artifact_key(b.system, b.artifact)
    return retention.Backup(
        key=ref.key,
        artifact=artifact,
        day=b.day,
        status=_status(b, verdict),
        pinned=ref.partition_ref in pins,
        depends_on=frozenset(deps),
        wal_for=WAL_FOR.get(artifact),
        depends_on_wal=_wal_range(b),
    )


def _scan(repo: Repository, extra_pins: Collection[PartitionRef] = ()) -> _Snapshot:
    listing = list(repo.backend.list(""))  # the one listing
    objects = [o.key for o in listing]
    # extra_pins: pins kept elsewhere that also hold here (the offsite copy honours the local
    # repository's pins: policy/offsite_retention.py).
    pins = {pin for k in objects if (pin := layout.parse_pin_key(k)) is not None} | set(extra_pins)
    backups: dict[str, Backup] = {}
    for obj in listing:
        if layout.is_manifest_key(obj.key):
            b = repo.listed_manifest(obj)  # same parsing and errors as Repository.list
            backups[b.prefix] = b
    found, _unreadable = verdicts.latest_verdicts(repo, objects)  # an unreadable verdict counts as none
    return _Snapshot(backups, [_record(b, pins, found.get(key)) for key, b in backups.items()], objects)


def records_from_repository(repo: Repository, extra_pins: Collection[PartitionRef] = ()) -> list[retention.Backup]:
    """One retention record per complete backup, from a single listing of the repository."""
    return _scan(repo, extra_pins).records


def plan(
    repo: Repository,
    now: dt.datetime | None = None,
    policies: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES,
    extra_pins: Collection[PartitionRef] = (),
    pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW,
) -> list[retention.Decision]:
    """Keep/expire, with reasons, for every backup in the repository (one listing; nothing deleted)."""
    return _evaluate(_scan(repo, extra_pins), now or utcnow(), policies, pitr_window)


def _evaluate(
    snap: _Snapshot, now: dt.datetime, policies: Mapping[str, retention.Policy], pitr_window: dt.timedelta
) -> list[retention.Decision]:
    # The base backup the PITR window starts from is kept whatever the GFS rules say.
    good = {r.key: r.status == "good" for r in snap.records}  # verdicts included
    rails = wal_pruning.window_rail(snap.backups.values(), now, pitr_window, good)
    return retention.evaluate(snap.records, now, policies, TZ, rails=rails)


def plan_with_wal(
    repo: Repository,
    now: dt.datetime | None = None,
    policies: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES,
    pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW,
    extra_pins: Collection[PartitionRef] = (),
) -> tuple[list[retention.Decision], wal_pruning.WalPlan]:
    """`plan` and the WAL archive's plan (policy/wal_pruning.py), from the same one listing."""
    now = now or utcnow()
    snap = _scan(repo, extra_pins)
    decisions = _evaluate(snap, now, policies, pitr_window)
    kept = {d.backup.key: d.keep for d in decisions}
    good = {r.key: r.status == "good" for r in snap.records}
    return decisions, wal_pruning.plan_wal(repo, snap.objects, snap.backups.values(), kept, now, pitr_window, good)


def delete_expired(
    repo: Repository,
    keys: Iterable[str],
    now: dt.datetime | None = None,
    policies: Mapping[str, retention.Policy] = retention.DEFAULT_POLICIES,
    dry_run: bool = False,
    extra_pins: Collection[PartitionRef] = (),
    pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW,
) -> list[Outcome]:
    """Delete the given backups, each only if a fresh plan still expires it; one Outcome per key."""
    snap = _scan(repo, extra_pins)
    decisions = {d.backup.key: d for d in _evaluate(snap, now or utcnow(), policies, pitr_window)}
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

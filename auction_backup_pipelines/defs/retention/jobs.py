"""Retention in Dagster: a sensor that decides (sensors.py) and this op job, which deletes.

The sensor lists the repository once, asks policy.retention, and requests a cleanup run naming
exactly the backups to delete (sensor ticks time out after about 60 s, so they never delete).
The run key is a hash of that set: the daemon skips a run key it has seen, so one set of
expired backups is requested once however many ticks see it. The job re-plans before each
deletion (policy.pruning.delete_expired), deletes the manifest first, then deletes the expired
runs of the WAL archive (policy.wal_pruning.delete_expired_wal, after the backups; the offsite
repository's WAL after the offsite backups, the same way), and records an
AssetObservation with status "deleted" on the backup's asset partition
(instance.wipe_asset_partitions is not implemented on the OSS SQL event log). Last, it removes
the leftovers of crashed runs the sensor named, each decided again under its partition lock
(defs/retention/leftovers.py, policy/leftovers.py).

No `from __future__ import annotations` here: Dagster reads the Config annotation at decoration.
"""

import hashlib
from collections import Counter

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    Failure,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)

from auction_backup_pipelines.policy import offsite_retention, pruning, wal_pruning
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.loading import current_settings
from ..shared.resources import BackupRepositoryResource
from . import leftovers as crash_leftovers
from .targets import offsite_target

CLEANUP_OP = "delete_expired_backups"


def run_key_for(keys: list[str], dry_run: bool) -> str:
    # dry_run is part of the key: otherwise a dry run would use up the key of the real deletion.
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"retention-{'dry-run-' if dry_run else ''}{digest}"


class CleanupConfig(Config):
    backup_keys: list[str]
    """Backups to delete, as <system>/<artifact>/<day>/<backup_id> (the retention sensor fills this in)."""
    offsite_backup_keys: list[str] = []
    """Backups to delete from the offsite repository (same form; empty when none is configured)."""
    wal_runs: list[str] = []
    """Runs of WAL segments to delete (`first..last` or one file name), after the backups."""
    offsite_wal_runs: list[str] = []
    """Runs of WAL segments to delete from the offsite repository, after the offsite backups."""
    leftovers: list[str] = []
    """Leftovers of crashed runs to remove (ids from policy/leftovers.py; the sensor fills this in)."""
    offsite_leftovers: list[str] = []
    """Leftovers to remove from the offsite repository (unfinished multipart uploads, mostly)."""
    dry_run: bool = False
    """Only report what would be deleted."""


def _observe(context: OpExecutionContext, outcome: pruning.Outcome, b: Backup, where: str = offsite_retention.LOCAL) -> None:
    # An offsite deletion is observed on the offsite copy's asset (offsite/<system>/<artifact>).
    path = list(b.ref.asset_path) if where == offsite_retention.LOCAL else ["offsite", *b.ref.asset_path]
    context.log_event(
        AssetObservation(
            asset_key=AssetKey(path),
            partition=b.partition,
            metadata={"status": "deleted", "backup_id": b.backup_id, "reason": outcome.reason},
        )
    )


def _table(outcomes: list[tuple[str, pruning.Outcome]], limit: int = 500) -> MetadataValue:
    # Capped so a first prune of a large repository does not write a megabyte of markdown;
    # deleted_partitions still lists every deletion.
    lines = ["| repository | action | backup | reason |", "|---|---|---|---|"]
    lines += [f"| {where} | {o.action} | {o.key} | {o.reason} |" for where, o in outcomes[:limit]]
    if len(outcomes) > limit:
        lines.append(f"| | … | {len(outcomes) - limit} more | |")
    return MetadataValue.md("\n".join(lines))


@op(name=CLEANUP_OP, description="Delete the listed backups that a fresh retention plan still expires.")
def delete_expired_backups(context: OpExecutionContext, config: CleanupConfig, backup_repo: BackupRepositoryResource) -> dict:
    repo = backup_repo.repository()
    window = current_settings().retention.pitr_window
    found_local = pruning.delete_expired(repo, config.backup_keys, dry_run=config.dry_run, pitr_window=window)
    outcomes = [(offsite_retention.LOCAL, o) for o in found_local]
    off_wal: list[wal_pruning.WalOutcome] = []
    if config.offsite_backup_keys or config.offsite_wal_runs:
        target = offsite_target(repo, current_settings().offsite, window)
        if target is None:
            raise Failure(description="offsite backups or WAL were listed for deletion but no offsite repository is configured")
        found = offsite_retention.delete_expired(target, config.offsite_backup_keys, dry_run=config.dry_run)
        outcomes += [(offsite_retention.OFFSITE, o) for o in found]
        # Offsite WAL after the offsite backups, for the same reason as locally (below).
        if config.offsite_wal_runs:
            off_wal = offsite_retention.delete_expired_wal(target, config.offsite_wal_runs, dry_run=config.dry_run)
    # WAL after the backups: a fresh plan counts every base backup still present as kept.
    wal_outcomes = (
        wal_pruning.delete_expired_wal(repo, config.wal_runs, pruning.utcnow(), window, config.dry_run) if config.wal_runs else []
    )
    wal_rows = [(offsite_retention.LOCAL, w) for w in wal_outcomes] + [(offsite_retention.OFFSITE, w) for w in off_wal]
    for where, w in wal_rows:
        level = {pruning.KEPT: context.log.warning, pruning.ERROR: context.log.error}.get(w.action, context.log.info)
        level(f"{w.action}: {where} WAL {w.label} ({w.count} file(s); {w.reason})")
    deleted: dict[str, list[str]] = {offsite_retention.LOCAL: [], offsite_retention.OFFSITE: []}
    for where, o in outcomes:
        level = {pruning.KEPT: context.log.warning, pruning.ERROR: context.log.error}.get(o.action, context.log.info)
        level(f"{o.action}: {where} {o.key} ({o.reason})")
        if o.action == pruning.DELETED and o.backup:
            _observe(context, o, o.backup, where)
            deleted[where].append(o.backup.ref.partition_ref.key)
    counts = Counter(o.action for _, o in outcomes)
    metadata: dict[str, MetadataValue | bool] = {
        "dry_run": config.dry_run,
        "deleted_partitions": MetadataValue.json(deleted[offsite_retention.LOCAL]),
        "offsite_deleted_partitions": MetadataValue.json(deleted[offsite_retention.OFFSITE]),
        **{f"{a.replace(' ', '_')}_count": MetadataValue.int(n) for a, n in sorted(counts.items())},
        "outcomes": _table(outcomes),
    }
    if wal_outcomes:
        metadata["wal_deleted_files"] = MetadataValue.int(sum(w.count for w in wal_outcomes if w.action == wal_pruning.DELETED))
    if off_wal:
        metadata["offsite_wal_deleted_files"] = MetadataValue.int(
            sum(w.count for w in off_wal if w.action == wal_pruning.DELETED)
        )
    if wal_rows:
        metadata["wal_outcomes"] = MetadataValue.md(
            "\n".join(["| repository | action | WAL | files | reason |", "|---|---|---|---|---|"])
            + "".join(f"\n| {where} | {w.action} | {w.label} | {w.count} | {w.reason} |" for where, w in wal_rows[:500])
        )
    wal_failed = sum(w.action == wal_pruning.ERROR for _, w in wal_rows)
    left_failed = crash_leftovers.remove_requested(context, repo, config, metadata)
    if counts[pruning.ERROR] or wal_failed or left_failed:
        # Raised after the loop, so every deletion that did happen is already observed.
        failed = counts[pruning.ERROR]
        what = f"{failed} backup(s)" + (f" and {wal_failed} run(s) of WAL" if wal_failed else "")
        what += f" and {left_failed} leftover(s)" if left_failed else ""
        raise Failure(description=f"{what} could not be deleted; see the outcomes", metadata=metadata)
    context.add_output_metadata(metadata)
    return {a: [o.key if w == offsite_retention.LOCAL else f"{w}:{o.key}" for w, o in outcomes if o.action == a] for a in counts}


@job(
    name="retention_cleanup_job",
    description="Delete expired backups (manifest first); requested by the retention sensor.",
)
def cleanup_job() -> None:
    delete_expired_backups()

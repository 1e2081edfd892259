"""Retention in Dagster: a sensor that decides (sensors.py) and this op job, which deletes.

The sensor lists the repository once, asks policy.retention, and requests a cleanup run naming
exactly the backups to delete (sensor ticks time out after about 60 s, so they never delete).
The run key is a hash of that set: the daemon skips a run key it has seen, so one set of
expired backups is requested once however many ticks see it. The job re-plans before each
deletion (policy.pruning.delete_expired), deletes the manifest first, and records an
AssetObservation with status "deleted" on the backup's asset partition
(instance.wipe_asset_partitions is not implemented on the OSS SQL event log).

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

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.resources import BackupRepositoryResource

CLEANUP_OP = "delete_expired_backups"


def run_key_for(keys: list[str], dry_run: bool) -> str:
    # dry_run is part of the key: otherwise a dry run would use up the key of the real deletion.
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"retention-{'dry-run-' if dry_run else ''}{digest}"


class CleanupConfig(Config):
    backup_keys: list[str]
    """Backups to delete, as <system>/<artifact>/<day>/<backup_id> (the retention sensor fills this in)."""
    dry_run: bool = False
    """Only report what would be deleted."""


def _observe(context: OpExecutionContext, outcome: pruning.Outcome, b: Backup) -> None:
    context.log_event(
        AssetObservation(
            asset_key=AssetKey(list(b.ref.asset_path)),
            partition=b.partition,
            metadata={"status": "deleted", "backup_id": b.backup_id, "reason": outcome.reason},
        )
    )


def _table(outcomes: list[pruning.Outcome], limit: int = 500) -> MetadataValue:
    # Capped so a first prune of a large repository does not write a megabyte of markdown;
    # deleted_partitions still lists every deletion.
    lines = ["| action | backup | reason |", "|---|---|---|"]
    lines += [f"| {o.action} | {o.key} | {o.reason} |" for o in outcomes[:limit]]
    if len(outcomes) > limit:
        lines.append(f"| … | {len(outcomes) - limit} more | |")
    return MetadataValue.md("\n".join(lines))


@op(name=CLEANUP_OP, description="Delete the listed backups that a fresh retention plan still expires.")
def delete_expired_backups(context: OpExecutionContext, config: CleanupConfig, backup_repo: BackupRepositoryResource) -> dict:
    outcomes = pruning.delete_expired(backup_repo.repository(), config.backup_keys, dry_run=config.dry_run)
    deleted = []
    for o in outcomes:
        level = {pruning.KEPT: context.log.warning, pruning.ERROR: context.log.error}.get(o.action, context.log.info)
        level(f"{o.action}: {o.key} ({o.reason})")
        if o.action == pruning.DELETED and o.backup:
            _observe(context, o, o.backup)
            deleted.append(o.backup.ref.partition_ref.key)
    counts = Counter(o.action for o in outcomes)
    metadata: dict[str, MetadataValue | bool] = {
        "dry_run": config.dry_run,
        "deleted_partitions": MetadataValue.json(deleted),
        **{f"{a.replace(' ', '_')}_count": MetadataValue.int(n) for a, n in sorted(counts.items())},
        "outcomes": _table(outcomes),
    }
    if counts[pruning.ERROR]:
        # Raised after the loop, so every deletion that did happen is already observed.
        failed = counts[pruning.ERROR]
        raise Failure(description=f"{failed} backup(s) could not be deleted; see the outcomes", metadata=metadata)
    context.add_output_metadata(metadata)
    return {a: [o.key for o in outcomes if o.action == a] for a in counts}


@job(
    name="retention_cleanup_job",
    description="Delete expired backups (manifest first); requested by the retention sensor.",
)
def cleanup_job() -> None:
    delete_expired_backups()

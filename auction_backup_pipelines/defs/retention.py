"""Retention in Dagster: a sensor that decides and an op job that deletes.

The sensor lists the repository once, asks core.retention, and requests a cleanup run naming
exactly the backups to delete (sensor ticks time out after about 60 s, so they never delete).
The run key is a hash of that set: the daemon skips a run key it has seen, so one set of
expired backups is requested once however many ticks see it. The job re-plans before each
deletion (core.pruning.delete_expired), deletes the manifest first, and records an
AssetObservation with status "deleted" on the backup's asset partition
(instance.wipe_asset_partitions is not implemented on the OSS SQL event log).

Environment: RETENTION_SENSOR_INTERVAL_S (default 3600), RETENTION_DRY_RUN=1 (runs only report).

No `from __future__ import annotations` here: Dagster reads the Config annotation at decoration.
"""

import hashlib
import os
from collections import Counter
from collections.abc import Mapping

from dagster import (
    AssetKey,
    AssetObservation,
    Config,
    DefaultSensorStatus,
    Failure,
    MetadataValue,
    OpExecutionContext,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    job,
    op,
    sensor,
)

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.policy import retention
from auction_backup_pipelines.repository.repository import Backup
from .resources import BackupRepositoryResource

CLEANUP_OP = "delete_expired_backups"
DEFAULT_INTERVAL_S = 3600


def sensor_interval_s(environ: Mapping[str, str] = os.environ) -> int:
    raw = environ.get("RETENTION_SENSOR_INTERVAL_S", "") or str(DEFAULT_INTERVAL_S)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 30:  # the daemon's tick granularity; smaller values only add load
        raise ValueError(f"RETENTION_SENSOR_INTERVAL_S must be a whole number of seconds >= 30, got {raw!r}")
    return value


def dry_run_from_env(environ: Mapping[str, str] = os.environ) -> bool:
    return environ.get("RETENTION_DRY_RUN", "").strip().lower() in ("1", "true", "yes", "on")


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
            asset_key=AssetKey([b.system, b.artifact]),
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
def delete_expired_backups(
    context: OpExecutionContext, config: CleanupConfig, backup_repo: BackupRepositoryResource
) -> dict:
    outcomes = pruning.delete_expired(backup_repo.repository(), config.backup_keys, dry_run=config.dry_run)
    deleted = []
    for o in outcomes:
        level = {pruning.KEPT: context.log.warning, pruning.ERROR: context.log.error}.get(o.action, context.log.info)
        level(f"{o.action}: {o.key} ({o.reason})")
        if o.action == pruning.DELETED and o.backup:
            _observe(context, o, o.backup)
            deleted.append(f"{o.backup.system}/{o.backup.artifact}/{o.backup.partition}")
    counts = Counter(o.action for o in outcomes)
    metadata = {
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


def _kept_summary(decisions: list[retention.Decision]) -> str:
    per_artifact = Counter(d.backup.artifact for d in decisions)
    pinned = sum(d.backup.pinned for d in decisions)
    parts = ", ".join(f"{a}: {n}" for a, n in sorted(per_artifact.items()))
    return f"nothing expired; keeping all {len(decisions)} backup(s) ({parts}; {pinned} pinned)"


@sensor(
    job=cleanup_job,
    minimum_interval_seconds=sensor_interval_s(),
    default_status=DefaultSensorStatus.RUNNING,
    description="Lists the backup repository once, applies the GFS policy, requests a cleanup run for what expired.",
)
def retention_sensor(context: SensorEvaluationContext, backup_repo: BackupRepositoryResource):
    repo = backup_repo.repository()
    decisions = pruning.plan(repo)
    if not decisions:
        return SkipReason(f"no backups in {repo.describe()}")
    doomed = sorted(b.key for b in retention.expired(decisions))
    if not doomed:
        return SkipReason(_kept_summary(decisions))
    dry_run = dry_run_from_env()
    context.log.info(f"{len(doomed)} of {len(decisions)} backup(s) expired{' (dry run)' if dry_run else ''}")
    return RunRequest(
        run_key=run_key_for(doomed, dry_run),
        run_config=RunConfig(ops={CLEANUP_OP: CleanupConfig(backup_keys=doomed, dry_run=dry_run)}),
        tags={"auction_backup/retention_expired": str(len(doomed))},
    )

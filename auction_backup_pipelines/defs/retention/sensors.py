"""The retention sensor: lists the repository once, applies the GFS policy, and requests a cleanup
run for exactly what expired (jobs.py deletes; a sensor tick times out after about 60 s)."""

from collections import Counter

from dagster import (
    DefaultSensorStatus,
    RunConfig,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from auction_backup_pipelines.policy import pruning, retention

from ..shared.resources import BackupRepositoryResource
from .jobs import CLEANUP_OP, CleanupConfig, cleanup_job, run_key_for


def _kept_summary(decisions: list[retention.Decision]) -> str:
    per_artifact = Counter(d.backup.artifact for d in decisions)
    pinned = sum(d.backup.pinned for d in decisions)
    parts = ", ".join(f"{a}: {n}" for a, n in sorted(per_artifact.items()))
    return f"nothing expired; keeping all {len(decisions)} backup(s) ({parts}; {pinned} pinned)"


def build_retention_sensor(interval_s: int, dry_run: bool) -> SensorDefinition:
    """Ticks every `interval_s` (RETENTION_SENSOR_INTERVAL_S); with `dry_run` (RETENTION_DRY_RUN) runs only report."""

    @sensor(
        job=cleanup_job,
        minimum_interval_seconds=interval_s,
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
        context.log.info(f"{len(doomed)} of {len(decisions)} backup(s) expired{' (dry run)' if dry_run else ''}")
        return RunRequest(
            run_key=run_key_for(doomed, dry_run),
            run_config=RunConfig(ops={CLEANUP_OP: CleanupConfig(backup_keys=doomed, dry_run=dry_run)}),
            tags={"auction_backup/retention_expired": str(len(doomed))},
        )

    return retention_sensor

"""The retention sensor: lists the repository once, applies the GFS policy and WAL retention, and
requests a cleanup run for exactly what expired (jobs.py deletes; a sensor tick times out after
about 60 s). Expired WAL is named by runs of segments (`first..last`), so the run config stays small;
the WAL copied offsite is planned the same way, from the offsite repository's own base backups."""

import datetime as dt
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

from auction_backup_pipelines.policy import leftovers, offsite_retention, pruning, retention, wal_pruning
from auction_backup_pipelines.settings import OffsiteSettings

from ..shared.resources import BackupRepositoryResource
from . import leftovers as crash_leftovers
from .jobs import CLEANUP_OP, CleanupConfig, cleanup_job, run_key_for
from .targets import offsite_target


def _kept_summary(decisions: list[retention.Decision]) -> str:
    per_artifact = Counter(d.backup.artifact for d in decisions)
    pinned = sum(d.backup.pinned for d in decisions)
    parts = ", ".join(f"{a}: {n}" for a, n in sorted(per_artifact.items()))
    return f"nothing expired; keeping all {len(decisions)} backup(s) ({parts}; {pinned} pinned)"


def build_retention_sensor(
    interval_s: int,
    dry_run: bool,
    offsite: OffsiteSettings | None = None,
    pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW,
    leftover_safety_age: dt.timedelta = leftovers.DEFAULT_SAFETY_AGE,
) -> SensorDefinition:
    """Ticks every `interval_s` (RETENTION_SENSOR_INTERVAL_S); with `dry_run` (RETENTION_DRY_RUN) runs only
    report; with `offsite` settings (OFFSITE_S3_*, OFFSITE_RETENTION_*) the offsite copy is planned too;
    the WAL archive is planned with `pitr_window` (PITR_WINDOW_DAYS), crash leftovers with
    `leftover_safety_age` (LEFTOVER_SAFETY_AGE_S; policy/leftovers.py)."""

    @sensor(
        job=cleanup_job,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Lists the backup repository once, applies the GFS policy, requests a cleanup run for what expired.",
    )
    def retention_sensor(context: SensorEvaluationContext, backup_repo: BackupRepositoryResource):
        repo = backup_repo.repository()
        # One listing plans the backups and the WAL archive (policy/wal_pruning.py).
        decisions, wal = pruning.plan_with_wal(repo, pitr_window=pitr_window)
        wal_runs = wal.expired_runs()
        # The offsite copy (when configured) is planned by the same policy and rails; its keys go
        # to the same cleanup run, in their own list, so each decision names its repository.
        target = offsite_target(repo, offsite, pitr_window)
        off_decisions, off_wal = offsite_retention.plan_with_wal(target) if target is not None else ([], None)
        off_wal_runs = off_wal.expired_runs() if off_wal is not None else []
        left = crash_leftovers.plan_ids(repo, leftover_safety_age)
        off_left = crash_leftovers.plan_ids(target.repo, leftover_safety_age) if target is not None else []
        if not decisions and not off_decisions and not left and not off_left and not wal_runs and not off_wal_runs:
            return SkipReason(f"no backups in {repo.describe()}" + (" nor offsite" if target is not None else ""))
        doomed = sorted(b.key for b in retention.expired(decisions))
        off_doomed = sorted(b.key for b in retention.expired(off_decisions))
        if not doomed and not off_doomed and not wal_runs and not off_wal_runs and not left and not off_left:
            summary = _kept_summary(decisions)
            return SkipReason(summary + (f"; offsite: {_kept_summary(off_decisions)}" if target is not None else ""))
        context.log.info(
            f"{len(doomed)} of {len(decisions)} local and {len(off_doomed)} of {len(off_decisions)} offsite "
            f"backup(s) expired, and {len(wal.expired())} local and {len(off_wal.expired()) if off_wal else 0} offsite "
            f"WAL file(s); {len(left)} local and {len(off_left)} offsite "
            f"leftover(s) of crashed runs to remove{' (dry run)' if dry_run else ''}"
        )
        config = CleanupConfig(
            backup_keys=doomed,
            offsite_backup_keys=off_doomed,
            wal_runs=wal_runs,
            offsite_wal_runs=off_wal_runs,
            leftovers=left,
            offsite_leftovers=off_left,
            dry_run=dry_run,
        )
        return RunRequest(
            run_key=run_key_for(
                doomed
                + [f"{offsite_retention.OFFSITE}:{k}" for k in off_doomed]
                + [f"wal:{r}" for r in wal_runs]
                + [f"{offsite_retention.OFFSITE}:wal:{r}" for r in off_wal_runs]
                + [f"leftover:{i}" for i in left]
                + [f"{offsite_retention.OFFSITE}:leftover:{i}" for i in off_left],
                dry_run,
            ),
            run_config=RunConfig(ops={CLEANUP_OP: config}),
            tags={"auction_backup/retention_expired": str(len(doomed) + len(off_doomed))},
        )

    return retention_sensor

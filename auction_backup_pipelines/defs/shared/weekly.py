"""The shape of a weekly job and its schedule: the restore verification and the platform drill
both run once a week, on Sunday (UTC), running from the first load on."""

from dagster import AssetSelection, DefaultScheduleStatus, ExecutorDefinition, ScheduleDefinition, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

WEEKLY_DAY = 0  # cron's Sunday


def weekly_job(
    name: str, selection: AssetSelection, description: str, executor: ExecutorDefinition | None = None
) -> UnresolvedAssetJobDefinition:
    return define_asset_job(name=name, selection=selection, description=description, executor_def=executor)


def weekly_schedule(job: UnresolvedAssetJobDefinition, hour_utc: int, description: str) -> ScheduleDefinition:
    """`job` every Sunday at `hour_utc`:00 UTC."""
    return ScheduleDefinition(
        job=job,
        cron_schedule=f"0 {hour_utc} * * {WEEKLY_DAY}",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description=description,
    )

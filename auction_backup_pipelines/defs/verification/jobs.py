"""The weekly verification job and its schedule (Sunday 05:00 UTC): every restore check at once."""

from dagster import (
    AssetChecksDefinition,
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    define_asset_job,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_weekly_verification_job(restore_checks: list[AssetChecksDefinition]) -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        name="weekly_verification_job",
        selection=AssetSelection.checks(*restore_checks),
        description="Restore the newest backup of every asset into scratch targets and compare (Sunday 05:00 UTC).",
    )


def build_weekly_verification_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return ScheduleDefinition(
        job=job,
        cron_schedule="0 5 * * 0",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Weekly restore verification of every backup asset, Sunday 05:00 UTC.",
    )

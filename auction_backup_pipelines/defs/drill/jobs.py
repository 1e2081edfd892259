"""The weekly drill job and its schedule: Sunday 06:00 UTC, an hour after the weekly verification
(05:00), so each backup is known to restore on its own before the platform is recovered as a whole."""

from dagster import AssetSelection, DefaultScheduleStatus, ScheduleDefinition, define_asset_job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from .assets import PLATFORM_DRILL_KEY


def build_platform_drill_job() -> UnresolvedAssetJobDefinition:
    return define_asset_job(
        name="platform_drill_job",
        selection=AssetSelection.assets(PLATFORM_DRILL_KEY),
        description="Recover every system to one moment in scratch targets, measure RTO/RPO, check the invariants.",
    )


def build_platform_drill_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return ScheduleDefinition(
        job=job,
        cron_schedule="0 6 * * 0",
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING,
        description="Weekly whole-platform recovery drill, Sunday 06:00 UTC (after the weekly verification).",
    )

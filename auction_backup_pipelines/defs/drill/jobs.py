"""The weekly drill job and its schedule: Sunday 06:00 UTC, an hour after the weekly verification
(05:00), so each backup is known to restore on its own before the platform is recovered as a whole."""

from dagster import AssetSelection, ScheduleDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..shared.weekly import weekly_job, weekly_schedule
from .assets import PLATFORM_DRILL_KEY


def build_platform_drill_job() -> UnresolvedAssetJobDefinition:
    return weekly_job(
        "platform_drill_job",
        AssetSelection.assets(PLATFORM_DRILL_KEY),
        "Recover every system to one moment in scratch targets, measure RTO/RPO, check the invariants.",
    )


def build_platform_drill_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return weekly_schedule(job, 6, "Weekly whole-platform recovery drill, Sunday 06:00 UTC (after the weekly verification).")

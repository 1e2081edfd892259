"""The weekly verification job and its schedule (Sunday 05:00 UTC): every restore check at once."""

from dagster import AssetChecksDefinition, AssetSelection, ScheduleDefinition, multiprocess_executor
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..shared.weekly import weekly_job, weekly_schedule


def build_weekly_verification_job(restore_checks: list[AssetChecksDefinition]) -> UnresolvedAssetJobDefinition:
    return weekly_job(
        "weekly_verification_job",
        AssetSelection.checks(*restore_checks),
        "Restore the newest backup of every asset into scratch targets and compare (Sunday 05:00 UTC).",
        # One process per check, so the checks of different systems (each its own pool) restore
        # side by side; every other job runs in one process (definitions.py).
        executor=multiprocess_executor,
    )


def build_weekly_verification_schedule(job: UnresolvedAssetJobDefinition) -> ScheduleDefinition:
    return weekly_schedule(job, 5, "Weekly restore verification of every backup asset, Sunday 05:00 UTC.")

"""How every system's daily backup job and schedule is shaped, so the three stay alike.

A daily job selects the system's backup assets (and their offsite copies when an offsite store is
configured) without their checks: `AssetSelection.assets` would also pull in the weekly restore
checks. The cheap integrity checks are added back, so every backup is read back right after it is
written, and the `verified_recently` checks, so a stale weekly verification shows every day.

Every daily job runs in one process (`in_process_executor`): its steps are a few seconds of work
each, and the default multiprocess executor spent most of a run starting one Python process per
step and per check (80-90 s for a day; bench/bench_job_overhead.py measures the difference). The
steps of one system run one after another anyway (`pool=<system>`), so nothing parallel is lost.
"""

from collections.abc import Sequence

from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    in_process_executor,
)
from dagster._core.definitions.partitions.partitioned_schedule import UnresolvedPartitionedAssetScheduleDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from .keys import SYSTEM_TAG, offsite_key

VERIFIED_RECENTLY = "verified_recently"
OFFSITE_INTEGRITY = "offsite_integrity"
"""The check of each offsite copy (defs/offsite/checks.py), run with the copies it verifies."""

BACKUP_HOURS = {"postgres": 2, "redis": 3, "kafka": 4}
"""UTC hour each system's daily schedule fires for yesterday's partition; the deadlines of the
`backed_up_on_time` checks (defs/freshness) count from it."""


def backup_job(
    name: str,
    system: str,
    keys: Sequence[AssetKey],
    integrity_checks: Sequence[AssetCheckKey],
    *,
    offsite: bool,
    description: str,
) -> UnresolvedAssetJobDefinition:
    copies = [offsite_key(k) for k in keys] if offsite else []
    freshness = [AssetCheckKey(k, VERIFIED_RECENTLY) for k in keys]
    copy_checks = [AssetCheckKey(k, OFFSITE_INTEGRITY) for k in copies]
    return define_asset_job(
        name=name,
        selection=AssetSelection.assets(*keys, *copies).without_checks()
        | AssetSelection.checks(*integrity_checks, *freshness, *copy_checks),
        tags={SYSTEM_TAG: system},
        description=description,
        executor_def=in_process_executor,
    )


def daily_schedule(
    job: UnresolvedAssetJobDefinition, hour: int, description: str
) -> UnresolvedPartitionedAssetScheduleDefinition | ScheduleDefinition:
    """Fires at `hour`:00 UTC on D+1 for partition D (the partitions' timezone is the schedule's)."""
    return build_schedule_from_partitioned_job(
        job, hour_of_day=hour, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING, description=description
    )

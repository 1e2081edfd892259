"""The code location with its daily jobs on Dagster's multiprocess executor (one process per step
and per check, Dagster's default): the baseline that bench_job_overhead.py compares the project's
in-process daily jobs with. Loaded only by that benchmark (`dg launch -f`)."""

from dagster import Definitions, define_asset_job, multiprocess_executor
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from auction_backup_pipelines.definitions import defs as load_definitions

DAILY_JOBS = {"postgres_backup_job", "redis_backup_job", "kafka_backup_job"}

base = load_definitions()
defs = Definitions(
    assets=base.assets,
    asset_checks=base.asset_checks,
    resources=base.resources,
    jobs=[
        define_asset_job(
            j.name,
            selection=j.selection,
            tags=j.tags,
            description=j.description,
            partitions_def=j.partitions_def,
            executor_def=multiprocess_executor,
        )
        if isinstance(j, UnresolvedAssetJobDefinition) and j.name in DAILY_JOBS
        else j
        for j in base.jobs or []
    ],
)

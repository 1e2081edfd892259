"""A restore job's history, on the asset it restored from: an observation per restored backup.

Each restore op ends here: the engine's result becomes restore records (ops/restore_records.py),
each appended to the repository (what the CLI writes too, so the history outlives Dagster) and
logged as an AssetObservation on the backup's asset and partition. Its metadata carries the
target, `rto_seconds` (numeric, so the asset's page plots the RTO of successive restores), the
rows, keys or messages verified, the backup id and the run id. Failing to store a record is a
warning: the restore itself succeeded.
"""

from collections.abc import Callable

from dagster import AssetKey, AssetObservation, OpExecutionContext

from auction_backup_pipelines.ops.restore_records import append_all
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.restore_log import RestoreRecord


def record_restores(
    context: OpExecutionContext, repo: Repository, build: Callable[[str, str | None], list[RestoreRecord]]
) -> None:
    """Store and observe the records `build(by, run_id)` makes of this op's finished restore."""
    records, problems = append_all(repo, lambda: build(context.job_name, context.run_id))
    for line in problems:
        context.log.warning(line)
    for record in records:
        ref = record.ref
        context.log_event(
            AssetObservation(
                asset_key=AssetKey(list(ref.asset_path)),
                partition=ref.day.isoformat(),
                description=f"restored into {record.target} in {record.rto_seconds:.1f} s",
                metadata=record.metadata(),
            )
        )

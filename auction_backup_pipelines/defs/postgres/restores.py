"""PostgreSQL restore jobs: a dump into a database you name, or PITR into a new instance, each verified.

The Dagster face of the same engine functions the CLI calls; a restore needs no schedule, so
these are op jobs launched from the Launchpad with their config.
"""

from pathlib import Path

from dagster import Config, Failure, OpExecutionContext, job, op

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.client import SYSTEM
from auction_backup_pipelines.postgres.logical_dump import LOGICAL_DUMP, restore_logical
from auction_backup_pipelines.postgres.wal_archive import WalArchive

from ..shared.keys import SYSTEM_TAG
from ..shared.loading import current_settings
from ..shared.resources import BackupRepositoryResource, PostgresResource
from ..shared.restore_history import record_restores


class PostgresRestoreConfig(Config):
    date: str
    """Partition day of the dump to restore (YYYY-MM-DD)."""
    target_db: str
    """Database to restore into (created if missing)."""
    force: bool = False
    """Replace the target database if it is not empty."""


@op(pool="postgres")
def restore_postgres_dump(
    context: OpExecutionContext, config: PostgresRestoreConfig, postgres: PostgresResource, backup_repo: BackupRepositoryResource
) -> dict:
    repo = backup_repo.repository()
    try:
        backup = repo.get(SYSTEM, LOGICAL_DUMP, config.date)
        jobs = current_settings().restore.jobs
        result = restore_logical(postgres.settings(), repo, backup, config.target_db, force=config.force, jobs=jobs)
    except BackupError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {result.backup} into {result.target_db}: {result.rows_total} rows verified")
    context.add_output_metadata(result.as_dict())
    record_restores(context, repo, lambda by, run_id: restore_records.for_logical(result, by, run_id))
    return result.as_dict()


@job(tags={SYSTEM_TAG: "postgres"}, description="Restore a logical dump into a database you name, verified against its manifest.")
def postgres_restore_job() -> None:
    restore_postgres_dump()


class PitrConfig(Config):
    target_time: str
    """Moment to recover to, e.g. "2024-01-15 14:30:00"."""
    target_dir: str
    """Absolute path of a new or empty folder for the recovered instance, whose parent exists (never in a data directory)."""
    timezone: str = "UTC"
    """Timezone of target_time when it has no offset."""
    port: int = 0
    """Port of the recovered instance (0: a free one)."""
    stop_after: bool = False
    """Stop the recovered instance once recovery is proven."""


@op(pool="postgres")
def pitr_restore(
    context: OpExecutionContext, config: PitrConfig, postgres: PostgresResource, backup_repo: BackupRepositoryResource
) -> dict:
    repo = backup_repo.repository()
    try:
        target = pitr.parse_target(config.target_time, config.timezone)
        result = pitr.restore_to_time(
            postgres.settings(),
            repo,
            WalArchive(repo.backend),
            target,
            Path(config.target_dir),
            port=config.port or None,
            stop_after=config.stop_after,
        )
    except BackupError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"recovered to {result.reached_transaction_time} in {result.data_dir} (port {result.port})")
    context.add_output_metadata({k: str(v) for k, v in result.as_dict().items()})
    record_restores(context, repo, lambda by, run_id: restore_records.for_pitr(result, by, run_id))
    return result.as_dict()


@job(tags={SYSTEM_TAG: "postgres"}, description="Point-in-time recovery into a new instance; never touches the primary.")
def postgres_pitr_job() -> None:
    pitr_restore()

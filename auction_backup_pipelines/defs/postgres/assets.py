"""PostgreSQL backup assets: the daily logical dump and base backup."""

import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.policy.capture_window import CaptureWindowError
from auction_backup_pipelines.postgres.base_backup import take_base_backup_for_day
from auction_backup_pipelines.postgres.logical_day import backup_logical_day

from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY, POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY
from ..shared.metadata import backup_metadata, table_markdown
from ..shared.presentation import iso_utc
from ..shared.refusals import refuse
from ..shared.resources import BackupRepositoryResource, PostgresResource


class LogicalDumpConfig(Config):
    allow_late_capture: bool = False
    """Back up a past day with today's data, recording the real capture time (the default is to refuse)."""
    content_checksums: bool = True
    """Record a content checksum per table (one extra scan, in parallel with pg_dump)."""


class BaseBackupConfig(Config):
    allow_late_capture: bool = False
    """Store a base backup taken now under a past day (a base backup cannot be taken in the past)."""


def build_postgres_assets(partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    """The logical dump and base backup assets over `partitions`."""

    @asset(
        key=LOGICAL_DUMP_KEY,
        # the WAL archive too: a past day is reconstructed from a base backup and archived WAL
        deps=[POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY],
        partitions_def=partitions,
        group_name="postgres",
        pool="postgres",
        kinds={"postgres"},
        description=(
            "pg_dump (custom format, zstd) of the Auction Flow database at the end of the partition day, "
            "with row counts and content checksums of every table taken in the dump's snapshot. A past day "
            "is reconstructed by point-in-time recovery when base backups and WAL cover its end."
        ),
    )
    def postgres_logical_dump(
        context: AssetExecutionContext,
        config: LogicalDumpConfig,
        postgres: PostgresResource,
        backup_repo: BackupRepositoryResource,
    ) -> MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        repo = backup_repo.repository()
        try:
            backup = backup_logical_day(
                postgres.settings(), repo, day, allow_late_capture=config.allow_late_capture, checksums=config.content_checksums
            )
        except CaptureWindowError as exc:
            raise refuse(context, exc, late_capture_switch=not config.allow_late_capture) from None
        except BackupError as exc:
            raise Failure(description=str(exc)) from None
        m = backup.metadata
        context.log.info(f"published {backup.prefix} ({m['source']}): {backup.stored_size} bytes, {m['rows_total']} rows")
        capture_note = "on time"
        if m.get("reconstructed_via_pitr"):
            capture_note = f"RECONSTRUCTED via PITR to {m['recovery_target_time']}"
        elif m["late_capture"]:
            capture_note = "LATE CAPTURE: data as of captured_at, not the end of the day"
        return MaterializeResult(
            metadata=backup_metadata(
                repo,
                backup,
                **{
                    "capture": capture_note,
                    "source": m["source"],
                    "dagster/row_count": MetadataValue.int(m["rows_total"]),
                    "tables": table_markdown(m["tables"]),
                    "server_version": m["server_version"],
                    "wal_lsn": m["wal_lsn"],
                    "snapshot_time": iso_utc(m["snapshot_time"]),
                    "duration_s": MetadataValue.float(m["duration_s"]),
                },
            )
        )

    @asset(
        key=BASE_BACKUP_KEY,
        # the WAL archive: a base backup is only a starting point of recovery with the WAL after it
        deps=[POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY],
        partitions_def=partitions,
        group_name="postgres",
        pool="postgres",
        kinds={"postgres"},
        description=(
            "pg_basebackup (tar, zstd) of the primary: with the continuous WAL archive, the starting point "
            "of point-in-time recovery. The window recoverable right now is shown live on postgres/wal_archive."
        ),
    )
    def postgres_base_backup(
        context: AssetExecutionContext,
        config: BaseBackupConfig,
        postgres: PostgresResource,
        backup_repo: BackupRepositoryResource,
    ) -> MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        repo = backup_repo.repository()
        try:
            backup = take_base_backup_for_day(postgres.settings(), repo, day, config.allow_late_capture)
        except CaptureWindowError as exc:
            raise refuse(context, exc, late_capture_switch=not config.allow_late_capture) from None
        except BackupError as exc:
            raise Failure(description=str(exc)) from None
        m = backup.metadata
        return MaterializeResult(
            metadata=backup_metadata(
                repo,
                backup,
                start_lsn=m["start_lsn"],
                stop_lsn=m["stop_lsn"],
                timeline=MetadataValue.int(m["timeline"]),
                start_time=iso_utc(m["start_time"]),
                stop_time=iso_utc(m["stop_time"]),
                duration_s=MetadataValue.float(m["duration_s"]),
            )
        )

    return [postgres_logical_dump, postgres_base_backup]

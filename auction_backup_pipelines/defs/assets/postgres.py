"""PostgreSQL backup assets."""


import datetime as dt

from dagster import AssetExecutionContext, AssetKey, Config, Failure, MaterializeResult, MetadataValue, asset

from ...core import capture
from ...core import postgres as pg
from ...core.repository import RepositoryError
from ..metadata import backup_metadata, table_markdown
from ..partitions import daily_partitions
from ..resources import BackupRepositoryResource, PostgresResource

LOGICAL_DUMP_KEY = AssetKey(["postgres", "logical_dump"])


class LogicalDumpConfig(Config):
    allow_late_capture: bool = False
    """Back up a past day with today's data, recording the real capture time (the default is to refuse)."""
    content_checksums: bool = True
    """Record a content checksum per table (one extra scan, in parallel with pg_dump)."""


@asset(
    key=LOGICAL_DUMP_KEY,
    partitions_def=daily_partitions,
    group_name="postgres",
    pool="postgres",
    kinds={"postgres"},
    description=(
        "pg_dump (custom format, zstd) of the Auction Flow database at the end of the partition day, "
        "with row counts and content checksums of every table taken in the dump's snapshot."
    ),
)
def postgres_logical_dump(
    context: AssetExecutionContext,
    config: LogicalDumpConfig,
    postgres: PostgresResource,
    backup_repo: BackupRepositoryResource,
) -> MaterializeResult:
    day = dt.date.fromisoformat(context.partition_key)
    try:
        timing = capture.classify(day)
        if not timing.on_time and not config.allow_late_capture:
            raise Failure(
                description=(
                    f"partition {day} is a backfill: its on-time window was {timing.window_start:%Y-%m-%d} UTC, and a "
                    "logical dump taken now would store today's data under that date. Nothing was written. "
                    "Set allow_late_capture in the run config to capture now and record the real capture time."
                )
            )
        repo = backup_repo.repository()
        extra = {"late_capture": not timing.on_time}
        backup = pg.backup_logical(postgres.settings(), repo, day, extra=extra, checksums=config.content_checksums)
    except (pg.PostgresError, RepositoryError, capture.CaptureWindowError) as exc:
        raise Failure(description=str(exc)) from None
    m = backup.metadata
    context.log.info(f"published {backup.prefix}: {backup.stored_size} bytes, {m['rows_total']} rows")
    return MaterializeResult(
        metadata=backup_metadata(
            repo,
            backup,
            **{
                "capture": "LATE CAPTURE: data as of captured_at, not the end of the day" if m["late_capture"] else "on time",
                "dagster/row_count": MetadataValue.int(m["rows_total"]),
                "tables": table_markdown(m["tables"]),
                "server_version": m["server_version"],
                "wal_lsn": m["wal_lsn"],
                "snapshot_time": m["snapshot_time"],
                "duration_s": MetadataValue.float(m["duration_s"]),
            },
        )
    )

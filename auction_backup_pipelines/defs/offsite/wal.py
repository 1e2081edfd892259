"""The offsite copy of the WAL archive: `offsite/postgres/wal_archive`, unpartitioned (the archive
is one growing set of segments), downstream of the WAL archive. Each materialization copies the
WAL files the offsite archive lacks (`ops.offsite.copy_wal`: data first, record last, each proven
on the way); its check (checks.py) reads the copy back. It runs every 15 minutes through the
automation sensor (automation.py), so PITR from offsite reaches close to the last copy."""

from dagster import AssetExecutionContext, AssetsDefinition, Failure, MaterializeResult, MetadataValue, asset

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.postgres.wal_archive import WalArchive

from ..shared.keys import OFFSITE_WAL_ARCHIVE_KEY, WAL_ARCHIVE_KEY
from ..shared.resources import BackupRepositoryResource, OffsiteRepositoryResource
from .automation import WAL_COPY_SCHEDULE


def build_offsite_wal_asset() -> AssetsDefinition:
    @asset(
        key=OFFSITE_WAL_ARCHIVE_KEY,
        deps=[WAL_ARCHIVE_KEY],
        group_name="offsite",
        pool="offsite",
        kinds={"s3"},
        automation_condition=WAL_COPY_SCHEDULE,
        description="Offsite copy of the WAL archive: the segments, history files and newest partial the offsite "
        "archive lacks, each checked against its record on the way. Idempotent.",
    )
    def offsite_wal_archive(
        context: AssetExecutionContext, backup_repo: BackupRepositoryResource, offsite_repo: OffsiteRepositoryResource
    ) -> MaterializeResult:
        src, dst = backup_repo.repository(), offsite_repo.repository()
        try:
            report = offsite.copy_wal(WalArchive(src.backend), WalArchive(dst.backend))
        except (BackupError, OSError) as exc:  # OSError: the local disk, read by the copy itself
            raise Failure(description=str(exc)) from None
        context.log.info(f"copied {len(report.copied)} WAL file(s), {report.bytes} bytes, to {dst.describe()}")
        return MaterializeResult(
            metadata={
                "copied": MetadataValue.int(len(report.copied)),
                "already_present": MetadataValue.int(report.present),
                "bytes_copied": MetadataValue.int(report.bytes),
                "newest_copied": max(report.copied) if report.copied else "-",
                "destination": dst.describe(),
            }
        )

    return offsite_wal_archive

"""Integrity checks of the PostgreSQL backups, run by the daily job right after each backup.

Checks are unpartitioned (partitioned checks are a preview API in Dagster 1.13) and verify the
backup(s) their run wrote, found through the run's materializations (shared/integrity.py); each
records which partition(s) and backup_id(s) it examined in its metadata.
"""

from typing import Any

from dagster import AssetCheckExecutionContext, AssetCheckResult, MetadataValue, asset_check

from auction_backup_pipelines.postgres.base_backup import BASE_BACKUP, inspect_tar
from auction_backup_pipelines.postgres.client import SYSTEM
from auction_backup_pipelines.postgres.logical_dump import LOGICAL_DUMP, dump_toc
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.integrity import run_backups_integrity
from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY
from ..shared.resources import BackupRepositoryResource, PostgresResource


@asset_check(
    asset=LOGICAL_DUMP_KEY,
    name="dump_integrity",
    description="Each dump the run wrote: its sha256 matches its manifest and pg_restore --list reads its table of contents.",
)
def postgres_dump_integrity(
    context: AssetCheckExecutionContext, postgres: PostgresResource, backup_repo: BackupRepositoryResource
) -> AssetCheckResult:
    repo = backup_repo.repository()
    bin_dir = postgres.settings().bin_dir

    def inspect(backup: Backup) -> dict[str, Any]:
        verified = repo.verify(backup, deep=True)
        toc = dump_toc(repo, backup, bin_dir)
        return {
            "bytes_checked": MetadataValue.int(verified.bytes_checked),
            "toc_entries": MetadataValue.int(len(toc)),
            "tables_with_data": MetadataValue.int(sum(1 for line in toc if " TABLE DATA " in line)),
        }

    return run_backups_integrity(context, repo, SYSTEM, LOGICAL_DUMP, "logical dump", inspect)


@asset_check(
    asset=BASE_BACKUP_KEY,
    name="base_backup_integrity",
    description="Each base backup the run wrote reads back end to end (sha256), is a complete tar with backup_label, "
    "and PostgreSQL's backup_manifest matches its own checksum.",
)
def postgres_base_backup_integrity(
    context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource
) -> AssetCheckResult:
    repo = backup_repo.repository()

    def inspect(backup: Backup) -> dict[str, Any]:
        found = inspect_tar(repo, backup)
        return {"tar_members": MetadataValue.int(found.tar_members), "backup_manifest_checksum": found.backup_manifest_checksum}

    return run_backups_integrity(context, repo, SYSTEM, BASE_BACKUP, "base backup", inspect)

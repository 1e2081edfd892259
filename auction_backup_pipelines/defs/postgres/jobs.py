"""The daily PostgreSQL backup job: logical dump and base backup, then their integrity checks."""

from dagster import AssetCheckKey
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..shared.backup_jobs import backup_job
from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY


def build_postgres_backup_job(offsite: bool) -> UnresolvedAssetJobDefinition:
    return backup_job(
        "postgres_backup_job",
        "postgres",
        [LOGICAL_DUMP_KEY, BASE_BACKUP_KEY],
        [AssetCheckKey(LOGICAL_DUMP_KEY, "dump_integrity"), AssetCheckKey(BASE_BACKUP_KEY, "base_backup_integrity")],
        offsite=offsite,
        description="Daily PostgreSQL backups (logical dump and base backup), then integrity checks of both.",
    )

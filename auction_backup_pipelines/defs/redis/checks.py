"""Integrity check of the Redis snapshot, run by the daily job right after each backup, on the
snapshot(s) that run wrote (shared/integrity.py)."""

from typing import Any

from dagster import AssetCheckExecutionContext, AssetCheckResult, MetadataValue, asset_check

from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.integrity import run_backups_integrity
from ..shared.keys import REDIS_SNAPSHOT_KEY
from ..shared.resources import BackupRepositoryResource


@asset_check(
    asset=REDIS_SNAPSHOT_KEY,
    name="snapshot_integrity",
    description="Each Redis snapshot the run wrote: its files decompress to exactly the bytes their manifest's sha256 describes.",
)
def redis_snapshot_integrity(context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    repo = backup_repo.repository()

    def inspect(backup: Backup) -> dict[str, Any]:
        verified = repo.verify(backup, deep=True)
        return {"files": MetadataValue.int(verified.files), "bytes_checked": MetadataValue.int(verified.bytes_checked)}

    return run_backups_integrity(
        context, repo, SYSTEM, SNAPSHOT, "Redis snapshot", inspect, extra=lambda b: {"mode": str(b.metadata.get("mode"))}
    )

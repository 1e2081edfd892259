"""Integrity check of the Redis snapshot, run by the daily job right after each backup."""

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM

from ..shared.keys import REDIS_SNAPSHOT_KEY
from ..shared.resources import BackupRepositoryResource


@asset_check(
    asset=REDIS_SNAPSHOT_KEY,
    name="snapshot_integrity",
    description="The newest Redis snapshot's files decompress to exactly the bytes their manifest's sha256 describes.",
)
def redis_snapshot_integrity(context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    repo = backup_repo.repository()
    latest = repo.latest(SYSTEM, SNAPSHOT)
    if latest is None:
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN, description=f"no Redis snapshot in {repo.describe()} yet"
        )
    meta = {"partition": latest.partition, "backup_id": latest.backup_id, "mode": str(latest.metadata.get("mode"))}
    try:
        verified = repo.verify(latest, deep=True)
    except BackupError as exc:
        context.log.error(str(exc))
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=str(exc), metadata=meta)
    return AssetCheckResult(
        passed=True,
        metadata={**meta, "files": MetadataValue.int(verified.files), "bytes_checked": MetadataValue.int(verified.bytes_checked)},
    )

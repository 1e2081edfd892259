"""The daily Redis backup job: the snapshot, then a read-back of its checksums."""

from dagster import AssetCheckKey
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..shared.backup_jobs import backup_job
from ..shared.keys import REDIS_SNAPSHOT_KEY


def build_redis_backup_job(offsite: bool) -> UnresolvedAssetJobDefinition:
    return backup_job(
        "redis_backup_job",
        "redis",
        [REDIS_SNAPSHOT_KEY],
        [AssetCheckKey(REDIS_SNAPSHOT_KEY, "snapshot_integrity")],
        offsite=offsite,
        description="Daily Redis snapshot (the server, or every master of a cluster), then a read-back of its checksums.",
    )

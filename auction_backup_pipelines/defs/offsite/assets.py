"""Offsite copies: each daily backup asset has a downstream `offsite/<system>/<artifact>` asset
that copies the partition's backup to the S3-compatible offsite repository and verifies it
there. A missing offsite copy is a missing partition of that asset in the UI.

Each copy follows its source by a declarative automation condition (automation.py): a backfill
of a backup asset creates the offsite copies of the days it wrote, with no schedule of its own.
Each copy's materialization names the backup_id it copied, which its integrity check (checks.py)
reads back in the offsite repository.

Only defined when an offsite store is configured (OFFSITE_S3_BUCKET).
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.repository import layout

from ..shared.keys import offsite_key
from ..shared.resources import BackupRepositoryResource, OffsiteRepositoryResource
from .automation import FOLLOWS_SOURCE


def offsite_copy_asset(upstream: AssetKey, partitions: PartitionsDefinition) -> AssetsDefinition:
    """`offsite/<system>/<artifact>`: the upstream partition's backup copied offsite and verified there."""
    system, artifact = layout.artifact_from_asset_path(upstream.path)

    @asset(
        key=offsite_key(upstream),
        deps=[upstream],
        partitions_def=partitions,
        group_name="offsite",
        pool="offsite",
        kinds={"s3"},
        automation_condition=FOLLOWS_SOURCE,
        description=(
            f"Offsite copy of {system}/{artifact}: files then manifest streamed to the S3-compatible offsite "
            "repository (re-encrypted with its keys), read back and checked. Idempotent."
        ),
    )
    def _copy(
        context: AssetExecutionContext, backup_repo: BackupRepositoryResource, offsite_repo: OffsiteRepositoryResource
    ) -> MaterializeResult:
        src, dst = backup_repo.repository(), offsite_repo.repository()
        try:
            report = offsite.copy_partition(src, dst, system, artifact, context.partition_key)
        except (BackupError, OSError) as exc:  # OSError: the local disk, read or written by the copy itself
            raise Failure(description=str(exc)) from None
        context.log.info(report.summary())
        return MaterializeResult(
            metadata={
                "backup": report.backup,
                "backup_id": layout.BackupRef.parse(report.backup).backup_id,
                "status": report.status,
                "destination": report.destination,
                "files": MetadataValue.int(report.files),
                "bytes_copied": MetadataValue.int(report.bytes),
                "bytes_verified": MetadataValue.int(report.verified.bytes_checked),
                "encryption": dst.encryption.describe() if dst.encryption else "none",
                "replaced": ", ".join(report.replaced) or "-",
                "duration_s": MetadataValue.float(report.duration_s),
            }
        )

    return _copy

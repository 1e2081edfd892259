"""Integrity checks of the offsite copies: each verifies the copy in the offsite repository, not the
source. For a backup: the artifact's catalog audit there, then each copy the run made (named by
the copy's backup_id; shared/integrity.py chooses them as for the daily checks) read back against
its manifest and catalog entry with every file's sha256 (`Repository.verify`). For the WAL
archive: every file the offsite archive holds against its record and the source's.

Without a condition of their own, these checks run in every run that materializes their copy: the
daily jobs and the runs the automation sensor launches.
"""

from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops.offsite_wal_check import verify_wal_copy
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.backup_jobs import OFFSITE_INTEGRITY
from ..shared.integrity import run_backups_integrity
from ..shared.keys import OFFSITE_WAL_ARCHIVE_KEY, offsite_key
from ..shared.resources import BackupRepositoryResource, OffsiteRepositoryResource


def offsite_integrity_check(upstream: AssetKey) -> AssetChecksDefinition:
    """`offsite_integrity` on `offsite/<system>/<artifact>`: the copies read back in the offsite repository."""
    system, artifact = layout.artifact_from_asset_path(upstream.path)
    key = offsite_key(upstream)

    @asset_check(
        asset=key,
        name=OFFSITE_INTEGRITY,
        description=f"Each offsite copy of {system}/{artifact} the run made: in the offsite repository, its manifest "
        "matches its catalog entry and every file its sha256.",
    )
    def check(context: AssetCheckExecutionContext, offsite_repo: OffsiteRepositoryResource) -> AssetCheckResult:
        dst = offsite_repo.repository()

        def inspect(backup: Backup) -> dict[str, Any]:
            verified = dst.verify(backup)
            return {"files": MetadataValue.int(verified.files), "bytes_checked": MetadataValue.int(verified.bytes_checked)}

        return run_backups_integrity(context, dst, system, artifact, f"offsite {system}/{artifact} copy", inspect, asset_key=key)

    return check


def build_offsite_wal_check() -> AssetChecksDefinition:
    """`offsite_integrity` on `offsite/postgres/wal_archive` (built by the loader: the asset only
    exists when an offsite store is configured)."""

    @asset_check(
        asset=OFFSITE_WAL_ARCHIVE_KEY,
        name=OFFSITE_INTEGRITY,
        description="Every WAL file of the offsite archive matches its record and the source's; lists what is not copied yet.",
    )
    def offsite_wal_integrity(
        context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource, offsite_repo: OffsiteRepositoryResource
    ) -> AssetCheckResult:
        try:
            src, dst = backup_repo.repository(), offsite_repo.repository()
            found = verify_wal_copy(WalArchive(src.backend), WalArchive(dst.backend))
        except BackupError as exc:
            return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=str(exc))
        for problem in found.problems:
            context.log.error(problem)
        metadata: dict[str, Any] = {
            "files": MetadataValue.int(found.files),
            "bytes_checked": MetadataValue.int(found.bytes_checked),
            "not_yet_copied": MetadataValue.int(len(found.not_yet_copied)),
            "destination": dst.describe(),
        }
        if found.problems:
            description = f"{len(found.problems)} offsite WAL file(s) damaged or different: " + "; ".join(found.problems)
            return AssetCheckResult(
                passed=False, severity=AssetCheckSeverity.ERROR, description=description[:2000], metadata=metadata
            )
        return AssetCheckResult(passed=True, metadata=metadata)

    return offsite_wal_integrity

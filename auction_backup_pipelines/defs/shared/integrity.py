"""The shape every daily integrity check shares: read back the newest backup of an artifact.

No backup yet is a warning, not a failure; an engine's `BackupError` while reading it back is
an ERROR check with the reason; otherwise the inspection's figures become the check's metadata.
"""

from collections.abc import Callable
from typing import Any

from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


def newest_backup_integrity(
    context: AssetCheckExecutionContext,
    repo: Repository,
    system: str,
    artifact: str,
    what: str,
    inspect: Callable[[Backup], dict[str, Any]],
    extra: Callable[[Backup], dict[str, Any]] = lambda backup: {},
) -> AssetCheckResult:
    """Run `inspect` on the newest `system/artifact` backup (`what` names it in the no-backup warning)."""
    latest = repo.latest(system, artifact)
    if latest is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, description=f"no {what} in {repo.describe()} yet")
    meta = {"partition": latest.partition, "backup_id": latest.backup_id, **extra(latest)}
    try:
        figures = inspect(latest)
    except BackupError as exc:
        context.log.error(str(exc))
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=str(exc), metadata=meta)
    return AssetCheckResult(passed=True, metadata={**meta, **figures})

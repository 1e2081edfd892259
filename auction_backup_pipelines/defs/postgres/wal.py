"""The continuous WAL archive in the UI: an external asset whose health a sensor observes.

The archive is written by `auction-backup wal-receive`, not by Dagster, so it is an external
asset. A sensor reads its health every few minutes and records an observation (newest
segment, how far the archive reaches, the lag behind now, gaps) and the result of the
`archive_fresh_and_complete` check; the same check can be run on demand from the UI. Holes
that WAL retention made (policy/wal_pruning.py) are listed apart and do not fail the check.
"""

import datetime as dt

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetObservation,
    AssetSpec,
    DefaultSensorStatus,
    MetadataValue,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    asset_check,
    sensor,
)

from auction_backup_pipelines.policy import wal_pruning
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.repository.repository import Repository

from ..shared.keys import POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY
from ..shared.loading import current_settings
from ..shared.presentation import iso_utc
from ..shared.resources import BackupRepositoryResource

CHECK_NAME = "archive_fresh_and_complete"

wal_archive = AssetSpec(
    WAL_ARCHIVE_KEY,
    deps=[POSTGRES_PRIMARY_KEY],
    group_name="postgres",
    kinds={"postgres"},
    description="Every WAL segment of the primary, streamed by pg_receivewal (auction-backup wal-receive).",
)


def archive_status(
    repo: Repository, max_lag_s: float, pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW
) -> tuple[bool, str, dict]:
    archive = WalArchive(repo.backend)
    records = list(archive.records())
    h = health(records, archive.heartbeat())
    window = pitr.recovery_window(repo, archive, records)
    lag = h.lag_seconds()
    # Holes that WAL retention made on purpose (before the PITR window, between kept base
    # backups) are not gaps: only a missing segment that retention needs fails the check.
    gaps, pruned = wal_pruning.archive_gaps(repo, records, h.gaps, pitr_window, dt.datetime.now(dt.UTC))
    metadata = {
        "newest_segment": h.newest.name if h.newest else "-",
        "completed_segments": MetadataValue.int(h.completed),
        "covered_until": iso_utc(h.covered_until) if h.covered_until else "-",
        "lag_seconds": MetadataValue.float(round(lag, 1)) if lag is not None else MetadataValue.float(-1.0),
        "gaps": ", ".join(f"{a}..{b}" for a, b in gaps) or "none",
        "pruned_by_retention": ", ".join(f"{a}..{b}" for a, b in pruned) or "none",
        # Live, evaluated at every observation: the base backup assets no longer freeze it at capture.
        "recoverable_window": window.describe(),
        "recoverable_earliest": iso_utc(window.earliest) if window.earliest else "-",
        "recoverable_latest": iso_utc(window.latest) if window.latest else "-",
        "max_lag_seconds": MetadataValue.float(max_lag_s),
    }
    if h.covered_until:
        # What the catalog shows as the archive's last update: its newest WAL, not the observation.
        metadata["dagster/last_updated_timestamp"] = MetadataValue.timestamp(h.covered_until)
    if h.newest is None:
        return False, f"the WAL archive in {repo.describe()} is empty: is `auction-backup wal-receive` running?", metadata
    if gaps:
        return False, f"the WAL archive has {len(gaps)} gap(s): {metadata['gaps']}", metadata
    if lag is not None and lag > max_lag_s:
        return False, f"the WAL archive lags {lag:.0f} s behind now (limit {max_lag_s:.0f} s): is the receiver down?", metadata
    return True, f"archive reaches {h.covered_until:%Y-%m-%d %H:%M:%S} UTC, {lag:.0f} s ago, no gaps", metadata


@asset_check(
    asset=WAL_ARCHIVE_KEY, name=CHECK_NAME, description="The archive has no gap and lags less than WAL_ARCHIVE_MAX_LAG_S."
)
def wal_archive_check(context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    s = current_settings()
    passed, description, metadata = archive_status(backup_repo.repository(), s.wal.max_lag_s, s.retention.pitr_window)
    return AssetCheckResult(passed=passed, description=description, metadata=metadata, severity=AssetCheckSeverity.ERROR)


def build_wal_archive_sensor(
    interval_s: int, max_lag_s: float, pitr_window: dt.timedelta = wal_pruning.DEFAULT_WINDOW
) -> SensorDefinition:
    """Observes the archive every `interval_s` (WAL_ARCHIVE_SENSOR_INTERVAL_S); `pitr_window`
    (PITR_WINDOW_DAYS) tells which holes retention made on purpose."""

    @sensor(
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Observes the WAL archive's health and records its check.",
    )
    def wal_archive_sensor(context: SensorEvaluationContext, backup_repo: BackupRepositoryResource) -> SensorResult:
        passed, description, metadata = archive_status(backup_repo.repository(), max_lag_s, pitr_window)
        context.log.info(description)
        return SensorResult(
            asset_events=[
                AssetObservation(WAL_ARCHIVE_KEY, metadata={**metadata, "status": "healthy" if passed else description}),
                AssetCheckEvaluation(
                    asset_key=WAL_ARCHIVE_KEY,
                    check_name=CHECK_NAME,
                    passed=passed,
                    metadata={**metadata, "summary": description},
                    severity=AssetCheckSeverity.ERROR,
                ),
            ]
        )

    return wal_archive_sensor

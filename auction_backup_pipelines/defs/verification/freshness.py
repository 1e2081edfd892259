"""`verified_recently` checks: run with every daily backup, each fails once the newest successful
restore verification of its asset is older than VERIFICATION_MAX_AGE_DAYS, so a broken weekly job
shows on the asset page instead of going unnoticed. Before any verification succeeded, the check
passes while the asset's first backup is younger than that age (a new install), then warns."""

import datetime as dt

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from ..shared.backup_jobs import VERIFIED_RECENTLY


def verified_recently_check(asset_key: AssetKey, restore_check: str, max_age_days: float) -> AssetChecksDefinition:
    @asset_check(
        asset=asset_key,
        name=VERIFIED_RECENTLY,
        description=f"The newest successful `{restore_check}` is at most {max_age_days:g} days old.",
    )
    def check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        key = AssetCheckKey(asset_key, restore_check)
        history = context.instance.event_log_storage.get_asset_check_execution_history(
            key, limit=1, status={AssetCheckExecutionRecordStatus.SUCCEEDED}
        )
        if not history:
            return never_verified(context, asset_key, restore_check, max_age_days)
        when = dt.datetime.fromtimestamp(history[0].create_timestamp, dt.UTC)
        age_days = (dt.datetime.now(dt.UTC) - when).total_seconds() / 86400
        return AssetCheckResult(
            passed=age_days <= max_age_days,
            severity=AssetCheckSeverity.ERROR,
            description=f"last verified {when:%Y-%m-%d %H:%M} UTC ({age_days:.1f} days ago)",
            metadata={"last_verified": when.isoformat(), "age_days": MetadataValue.float(round(age_days, 2))},
        )

    return check


def never_verified(
    context: AssetCheckExecutionContext, asset_key: AssetKey, restore_check: str, max_age_days: float
) -> AssetCheckResult:
    """No successful verification yet: only a warning once the asset's first backup is older than
    the maximum age. A new install has nothing to verify yet and must not start with warnings."""
    first = context.instance.fetch_materializations(asset_key, limit=1, ascending=True).records
    if first:
        taken = dt.datetime.fromtimestamp(first[0].timestamp, dt.UTC)
        age_days = (dt.datetime.now(dt.UTC) - taken).total_seconds() / 86400
        if age_days > max_age_days:
            return AssetCheckResult(
                passed=False,
                severity=AssetCheckSeverity.WARN,
                description=f"`{restore_check}` never succeeded although backups exist since "
                f"{taken:%Y-%m-%dT%H:%M:%SZ} ({age_days:.1f} days): run weekly_verification_job",
                metadata={"first_backup_at": taken.strftime("%Y-%m-%dT%H:%M:%SZ")},
            )
        since = f"the first was taken {taken:%Y-%m-%dT%H:%M:%SZ} ({age_days:.1f} days ago)"
    else:
        since = "none was taken yet"
    return AssetCheckResult(
        passed=True,
        description=f"no backup old enough to need verification yet ({since}; the weekly restore check "
        f"`{restore_check}` must succeed within {max_age_days:g} days of a backup)",
    )


def build_verified_recently_checks(
    restore_checks: list[AssetChecksDefinition], max_age_days: float
) -> list[AssetChecksDefinition]:
    """One `verified_recently` per asset, watching that asset's restore check."""
    return [verified_recently_check(key.asset_key, key.name, max_age_days) for c in restore_checks for key in c.check_keys]

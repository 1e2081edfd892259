"""`backed_up_on_time`: yesterday's backup of each daily asset exists by its deadline.

The recovery point objective on the asset page: the check fails (ERROR, red in the catalog,
alerted by `check_failure_alert_sensor`) once a partition day is past its deadline, the
schedule's hour on the next day plus BACKUP_DEADLINE_GRACE_S, without a backup; a schedule
switched off turns its assets stale the next morning. What is due is decided by
policy/backup_deadlines.py; nothing is due for days before the first partition day or before
this Dagster instance started watching (a new install is not stale for days it was not running).

`backup_freshness_sensor` (sensors.py) evaluates these checks every few minutes without a run;
they can also be run from an asset's Checks tab. Automation never requests them, so backfills
and backup runs do not carry them.
"""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    AutomationCondition,
    DagsterInstance,
    MetadataValue,
    asset_check,
)

from auction_backup_pipelines.policy.backup_deadlines import due_partition, iso

CHECK_NAME = "backed_up_on_time"
WATCHING_SINCE_KEY = "auction_backup/freshness_watching_since"
"""Key in the instance's daemon cursor storage: when freshness was first evaluated on this instance."""

NEVER_BY_AUTOMATION = (AutomationCondition.initial_evaluation() & ~AutomationCondition.initial_evaluation()).with_label(
    "never by automation: backup_freshness_sensor evaluates this check"
)


@dataclass(frozen=True)
class Target:
    """One daily backup asset and what its deadline counts from."""

    asset_key: AssetKey
    schedule: str
    hour: int

    @property
    def check_key(self) -> AssetCheckKey:
        return AssetCheckKey(self.asset_key, CHECK_NAME)


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def watching_since(instance: DagsterInstance, now: dt.datetime) -> dt.datetime:
    """When this instance first evaluated backup freshness; recorded now on the first call."""
    storage = instance.daemon_cursor_storage
    recorded = storage.get_cursor_values({WATCHING_SINCE_KEY}).get(WATCHING_SINCE_KEY)
    if recorded:
        return dt.datetime.fromisoformat(recorded)
    storage.set_cursor_values({WATCHING_SINCE_KEY: now.isoformat()})
    return now


def evaluate(instance: DagsterInstance, target: Target, grace: dt.timedelta, first_day: dt.date, now: dt.datetime) -> Verdict:
    """Is the partition due now backed up? Reads the instance only (no backend, no credentials)."""
    due = due_partition(now, target.hour, grace, first_day, watching_since(instance, now))
    meta: dict[str, Any] = {
        "schedule": f"{target.schedule} at {target.hour:02d}:00 UTC",
        "grace_hours": MetadataValue.float(round(grace.total_seconds() / 3600, 2)),
    }
    if due.partition is None:
        meta["next_deadline"] = iso(due.deadline)
        meta["next_deadline_timestamp"] = MetadataValue.timestamp(due.deadline)
        return Verdict(True, due.reason, meta)
    day = due.partition.isoformat()
    meta.update({"partition": day, "deadline": iso(due.deadline), "deadline_timestamp": MetadataValue.timestamp(due.deadline)})
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=target.asset_key, asset_partitions=[day]), limit=1
    ).records
    if records:
        at = dt.datetime.fromtimestamp(records[0].timestamp, dt.UTC)
        meta.update({"backed_up_at": iso(at), "backed_up_timestamp": MetadataValue.timestamp(at)})
        return Verdict(True, f"{day} backed up at {iso(at)} (deadline {iso(due.deadline)})", meta)
    overdue_s = (now - due.deadline).total_seconds()
    meta["overdue_seconds"] = MetadataValue.float(round(overdue_s, 1))
    return Verdict(
        False,
        f"no backup of {day} by its deadline {iso(due.deadline)} (overdue {overdue_s / 3600:.1f} h): "
        f"is {target.schedule} running? Launch the partition from the asset page or backfill it.",
        meta,
    )


def backed_up_on_time_check(target: Target, grace: dt.timedelta, first_day: dt.date) -> AssetChecksDefinition:
    @asset_check(
        asset=target.asset_key,
        name=CHECK_NAME,
        description=(
            f"Recovery point: yesterday's backup exists by {target.hour:02d}:00 UTC plus "
            f"{grace.total_seconds() / 3600:g} h ({target.schedule}). Fails when a day is missed."
        ),
        automation_condition=NEVER_BY_AUTOMATION,
    )
    def check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        verdict = evaluate(context.instance, target, grace, first_day, dt.datetime.now(dt.UTC))
        return AssetCheckResult(
            passed=verdict.passed,
            severity=AssetCheckSeverity.ERROR,
            description=verdict.description,
            metadata=verdict.metadata,
        )

    return check

"""`backup_freshness_sensor`: evaluates every `backed_up_on_time` check without launching a run.

A check evaluation recorded by the sensor is what `check_failure_alert_sensor` alerts on, like
the WAL archive's. Only a change is recorded (passed or not, and which partition is due), so
the check's history in the UI shows when a backup became overdue and when it arrived, not one
row per tick; a failure stays red until the missing day is backed up.
"""

import datetime as dt

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    DagsterInstance,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from .checks import CHECK_NAME, Target, Verdict, evaluate

INTERVAL_S = 300
"""Evaluation cadence: a deadline is noticed within five minutes; each tick only reads the instance."""


def last_recorded(instance: DagsterInstance, target: Target) -> tuple[bool, str | None] | None:
    """(passed, partition) of the check's newest completed evaluation, or None."""
    history = instance.event_log_storage.get_asset_check_execution_history(target.check_key, limit=5)
    for record in history:
        event = record.event
        evaluation = event.dagster_event.event_specific_data if event and event.dagster_event else None
        if not isinstance(evaluation, AssetCheckEvaluation):  # still planned, or not an evaluation
            continue
        partition = evaluation.metadata.get("partition")
        return evaluation.passed, (str(partition.value) if partition is not None else None)
    return None


def changed(previous: tuple[bool, str | None] | None, verdict: Verdict) -> bool:
    partition = verdict.metadata.get("partition")
    return previous != (verdict.passed, partition)


def build_backup_freshness_sensor(targets: list[Target], grace: dt.timedelta, first_day: dt.date) -> SensorDefinition:
    @sensor(
        name="backup_freshness_sensor",
        minimum_interval_seconds=INTERVAL_S,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Every 5 minutes: is yesterday's backup of each daily asset there by its deadline? Records the "
            "`backed_up_on_time` checks (a missed day turns the asset red and is alerted)."
        ),
    )
    def backup_freshness_sensor(context: SensorEvaluationContext) -> SensorResult:
        now = dt.datetime.now(dt.UTC)
        events, late = [], []
        for target in targets:
            verdict = evaluate(context.instance, target, grace, first_day, now)
            if not verdict.passed:
                late.append(target.asset_key.to_user_string())
            if changed(last_recorded(context.instance, target), verdict):
                context.log.info(f"{target.asset_key.to_user_string()}: {verdict.description}")
                events.append(
                    AssetCheckEvaluation(
                        asset_key=target.asset_key,
                        check_name=CHECK_NAME,
                        passed=verdict.passed,
                        severity=AssetCheckSeverity.ERROR,
                        description=verdict.description,
                        metadata=verdict.metadata,
                    )
                )
        summary = f"overdue: {', '.join(late)}" if late else f"none of {len(targets)} daily backup(s) overdue"
        return SensorResult(asset_events=events, skip_reason=SkipReason(f"{summary}; {len(events)} change(s) recorded"))

    return backup_freshness_sensor

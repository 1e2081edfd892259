"""Alerting: a failed run or a failed ERROR check reaches people, not only the UI.

- `AlertingResource` (resources.py) holds the sinks' configuration.
- `run_failure_alert_sensor` alerts once per failed run of this code location: the failed
  asset(s) (from the run's planned asset events, by failed step), the partition, the step
  error and a link to the run. A run that only refused its partition (a past day that cannot
  be captured honestly) is a REFUSED warning instead, and a backfill's refusals make one alert
  together (refusals.py).
- `check_failure_alert_sensor` alerts on asset check evaluations with passed=False and
  severity ERROR, whether recorded by a run or by a sensor (the WAL archive check).

How the check sensor reads check results: per check key of this code location, from the
asset-check execution table (`event_log_storage.get_asset_check_execution_history`). The
cross-run `get_event_records(ASSET_CHECK_EVALUATION, after_cursor=N)` raises on Dagster's
default run-sharded SQLite storage (what `dagster dev` and the local instance use), and its
storage ids are not comparable across runs there. An execution row gets its id when the
check is *planned* and is updated in place when it completes, so a long restore check can
complete after a newer row: the cursor keeps, per check, the highest row id handled plus
the ids still PLANNED below it, and picks those up when they complete.

A failed check is alerted once per failure episode: again when its partition changes, when it
passed in between, or after ALERT_CHECK_REPEAT_S (default a day) while it keeps failing; the
WAL archive check is evaluated every few minutes and would otherwise alert all night. 0 alerts
every failed evaluation. The first tick (no cursor) looks back ALERT_CHECK_LOOKBACK_S (a day),
not over the whole history.

Ticks never raise (a raising tick loses its cursor update, and would alert again); a tick
stops starting new alerts after `tick_budget_s` (ticks time out after about 60 s) and
continues where it stopped on the next one.

Settings: the ALERT_* variables, DAGSTER_WEBSERVER_URL (links), ALERT_CHECK_SENSOR_INTERVAL_S,
ALERT_CHECK_REPEAT_S, ALERT_CHECK_LOOKBACK_S (see settings/alerting.py).

No `from __future__ import annotations` here: Dagster reads the resource annotations at decoration.
"""

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    DagsterEventType,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)

from auction_backup_pipelines.ops import notify as nt

from ..shared.keys import SYSTEM_TAG
from .refusals import refusal_alert
from .resources import AlertingResource

PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

HISTORY_LIMIT = 50
"""Newest executions read per check and tick (the WAL check: about four hours of evaluations)."""
PENDING_MAX_AGE_S = 86400
"""A check still PLANNED after this long never ran (its run died first): stop waiting for it."""


# --------------------------------------------------------------------------- run failures


def run_failure_alert(context: RunFailureSensorContext, alerting: AlertingResource) -> nt.Alert:
    """The alert for a failed run: failed assets (or ops), partition, step errors, link."""
    run = context.dagster_run
    failures = context.get_step_failure_events()
    planned = _planned_by_step(context.instance, run.run_id)

    assets: list[str] = []
    checks: list[str] = []
    errors: list[tuple[str, str]] = []
    for event in failures:
        step = event.step_key or "?"
        targets = planned.get(step, [])
        for asset_name, check_name in targets:
            if asset_name not in assets:
                assets.append(asset_name)
            if check_name and check_name not in checks:
                checks.append(check_name)
        where = ", ".join(f"{a}:{c}" if c else a for a, c in targets) or step
        errors.append((where, _step_error(event)))
    if not assets and run.asset_selection:
        assets = sorted(k.to_user_string() for k in run.asset_selection)
    ops = [e.step_key for e in failures if e.step_key]

    if errors:
        error = errors[0][1] if len(errors) == 1 else "\n".join(f"{where}: {msg}" for where, msg in errors)
    else:  # the run died outside any step (run worker lost, resource init, ...)
        data = context.failure_event.event_specific_data
        root = _root_error(getattr(data, "error", None))
        error = root or context.failure_event.message or "the run failed"

    partition = run.tags.get(PARTITION_TAG)
    if not partition and run.tags.get(RANGE_START_TAG):
        partition = f"{run.tags[RANGE_START_TAG]}...{run.tags.get(RANGE_END_TAG, '')}"
    systems = sorted({a.split("/")[0] for a in assets}) or ([run.tags[SYSTEM_TAG]] if run.tags.get(SYSTEM_TAG) else [])
    what = _summary(assets) or _summary(ops) or run.job_name
    return nt.Alert(
        title=" ".join(p for p in ("FAILED", what, partition) if p),
        severity="ERROR",
        system=", ".join(systems),
        asset=", ".join(assets) or ", ".join(ops),
        partition=partition,
        error=error,
        run_id=run.run_id,
        run_url=alerting.run_url(run.run_id),
        check=", ".join(checks) or None,
        job=run.job_name,
    )


def _planned_by_step(instance, run_id: str) -> dict[str, list[tuple[str, str | None]]]:
    """step key -> the (asset, check or None) it was planned to produce, from the run's planned events.

    The run's asset_selection is empty for a job that runs all of its assets, and a step key is
    not an asset key: the planned events name both.
    """
    out: dict[str, list[tuple[str, str | None]]] = {}
    records = instance.get_records_for_run(
        run_id,
        of_type={DagsterEventType.ASSET_MATERIALIZATION_PLANNED, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED},
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED:
            data = event.event_specific_data
            target = (data.asset_key.to_user_string(), data.check_name)
        elif event.asset_key is not None:
            target = (event.asset_key.to_user_string(), None)
        else:
            continue
        targets = out.setdefault(event.step_key, [])
        if target not in targets:
            targets.append(target)
    return out


def _step_error(event) -> str:
    data = event.event_specific_data
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return user.description  # raise Failure(description=...): our own words
    return _root_error(getattr(data, "error", None)) or event.message or "step failed"


def _root_error(error) -> str:
    """The innermost cause of a SerializableErrorInfo, as "ExceptionClass: message"."""
    if error is None:
        return ""
    while error.cause is not None:
        error = error.cause
    message = (error.message or "").strip()
    head, sep, rest = message.partition(": ")
    if sep and head.endswith("." + (error.cls_name or "\0")):
        message = f"{error.cls_name}: {rest}"  # drop the module path of the exception class
    return message


def _summary(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" +{len(names) - limit} more" if len(names) > limit else "")


@run_failure_sensor(
    name="run_failure_alert_sensor",
    default_status=DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Sends an alert (webhook, email) for every failed run of this code location.",
)
def run_failure_alert_sensor(context: RunFailureSensorContext, alerting: AlertingResource) -> None:
    run = context.dagster_run
    try:
        refused, summary = refusal_alert(context, alerting)
        if refused and summary is None:
            context.log.info(f"run {run.run_id} only refused its partition; an earlier refused run of its backfill alerts")
            return
        alert = summary or run_failure_alert(context, alerting)
    except Exception as exc:  # noqa: BLE001 - still alert, with what is known
        context.log.error(f"could not read the details of failed run {run.run_id}: {type(exc).__name__}: {exc}")
        alert = nt.Alert(
            title=f"FAILED {run.job_name}",
            asset=run.job_name,
            partition=run.tags.get(PARTITION_TAG),
            error=f"the run failed; its details could not be read ({type(exc).__name__}), see the run",
            run_id=run.run_id,
            run_url=alerting.run_url(run.run_id),
            job=run.job_name,
        )
    alerting.send(alert, context.log)


# --------------------------------------------------------------------------- check failures


def check_failure_alert(record, alerting: AlertingResource) -> nt.Alert:
    evaluation = record.event.dagster_event.event_specific_data
    asset = evaluation.asset_key.to_user_string()
    partition = evaluation.partition or _metadata_text(evaluation.metadata, "partition")
    run_id = record.run_id or None
    return nt.Alert(
        title=" ".join(p for p in ("CHECK FAILED", asset, evaluation.check_name, partition) if p),
        severity=evaluation.severity.value,
        system=evaluation.asset_key.path[0],
        asset=asset,
        partition=partition,
        error=evaluation.description or f"asset check {evaluation.check_name} did not pass",
        run_id=run_id,
        run_url=alerting.run_url(run_id) if run_id else alerting.asset_checks_url(list(evaluation.asset_key.path)),
        occurred_at=dt.datetime.fromtimestamp(record.event.timestamp, dt.UTC),
        check=evaluation.check_name,
    )


def _metadata_text(metadata: Mapping[str, Any], name: str) -> str | None:
    value = metadata.get(name)
    if value is None:
        return None
    value = getattr(value, "value", value)
    return str(value) if value not in (None, "") else None


def _evaluation(record):
    event = record.event
    if event is None or event.dagster_event is None:
        return None
    if event.dagster_event.event_type != DagsterEventType.ASSET_CHECK_EVALUATION:
        return None
    return event.dagster_event.event_specific_data


def _timestamp(record) -> float:
    return record.event.timestamp if record.event is not None else record.create_timestamp


def scan_check(
    records: list,
    state: dict | None,
    now: float,
    alerting: AlertingResource,
    send: Callable[[nt.Alert], None],
    may_send: Callable[[], bool],
    log,
) -> dict:
    """Alert the new ERROR failures among one check's execution records; returns the check's new state.

    state: {"id": highest row id handled, "pending": ids still PLANNED at or below it,
    "alerted": {"partition", "at"} of the last alert of the current failure episode, or None}.
    """
    first = state is None
    state = state or {"id": -1, "pending": [], "alerted": None}
    watermark, pending = state["id"], set(state["pending"])
    new_id, new_pending, alerted = watermark, [], state["alerted"]
    processed: set[int] = set()
    for record in sorted(records, key=lambda r: r.id):
        if not (record.id > watermark or record.id in pending):
            continue
        if record.status.value == "PLANNED":  # AssetCheckExecutionRecordStatus is not exported
            if now - _timestamp(record) < PENDING_MAX_AGE_S:
                new_pending.append(record.id)
        else:
            evaluation = _evaluation(record)
            if evaluation is not None and evaluation.passed:
                alerted = None  # the episode is over
            elif evaluation is not None and evaluation.severity == AssetCheckSeverity.ERROR:
                if first and now - _timestamp(record) > alerting.check_lookback_s:
                    pass  # from before this sensor watched; history, not news
                else:
                    alert = check_failure_alert(record, alerting)
                    repeat = alerting.check_repeat_after_s
                    if alerted and alerted.get("partition") == alert.partition and repeat and now - alerted["at"] < repeat:
                        log.info(f"{alert.title}: still failing, alerted {int(now - alerted['at'])} s ago")
                    elif not may_send():
                        break  # out of time: this record and the ones after it wait for the next tick
                    else:
                        send(alert)
                        alerted = {"partition": alert.partition, "at": now}
        processed.add(record.id)
        new_id = max(new_id, record.id)
    else:
        return {"id": new_id, "pending": sorted(new_pending), "alerted": alerted}
    # Stopped early: keep waiting for the pending ids not reached.
    kept = sorted(set(new_pending) | {p for p in pending if p not in processed})
    return {"id": new_id, "pending": kept, "alerted": alerted}


def _load_cursor(raw: str | None, log) -> dict[str, dict]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        checks = data["checks"]
        if data.get("v") != 1 or not isinstance(checks, dict):
            raise ValueError("unknown cursor version")
        return checks
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(f"ignoring an unreadable cursor ({exc}); starting over with the look-back window")
        return {}


def build_check_failure_alert_sensor(interval_s: int) -> SensorDefinition:
    """Scans the checks every `interval_s` (ALERT_CHECK_SENSOR_INTERVAL_S)."""

    @sensor(
        name="check_failure_alert_sensor",
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="Sends an alert (webhook, email) for each asset check of this code location that fails with severity ERROR.",
    )
    def check_failure_alert_sensor(context: SensorEvaluationContext, alerting: AlertingResource) -> SkipReason:
        started = time.monotonic()
        repo = context.repository_def
        if repo is None:
            return SkipReason("no repository definition in the sensor context: cannot list the asset checks")
        try:
            check_keys: list[AssetCheckKey] = sorted(repo.asset_graph.asset_check_keys, key=lambda k: k.to_user_string())
        except Exception as exc:  # noqa: BLE001
            context.log.error(f"could not list the asset checks: {type(exc).__name__}: {exc}")
            return SkipReason("could not list the asset checks")
        states = _load_cursor(context.cursor, context.log)
        storage = context.instance.event_log_storage
        now = time.time()
        sent: list[str] = []
        failed_deliveries = 0

        def send(alert: nt.Alert) -> None:
            nonlocal failed_deliveries
            results = alerting.send(alert, context.log)
            failed_deliveries += sum(not r.ok for r in results)
            sent.append(alert.title)

        def may_send() -> bool:
            return time.monotonic() - started < alerting.tick_budget_s

        new_states: dict[str, dict] = {}
        for key in check_keys:
            name = key.to_user_string()
            try:
                records = list(storage.get_asset_check_execution_history(key, limit=HISTORY_LIMIT))
                new_states[name] = scan_check(records, states.get(name), now, alerting, send, may_send, context.log)
            except Exception as exc:  # noqa: BLE001 - one unreadable check must not stop the others
                context.log.error(f"could not scan check {name}: {type(exc).__name__}: {exc}")
                if name in states:
                    new_states[name] = states[name]
        context.update_cursor(json.dumps({"v": 1, "checks": new_states}, sort_keys=True))
        if not sent:
            return SkipReason(f"no new ERROR check failure among {len(check_keys)} check(s)")
        delivery = f"; {failed_deliveries} delivery failure(s), see the log" if failed_deliveries else ""
        return SkipReason(f"alerted {len(sent)} check failure(s): {'; '.join(sent)}{delivery}")

    return check_failure_alert_sensor

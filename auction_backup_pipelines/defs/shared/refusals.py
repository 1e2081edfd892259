"""A partition that cannot be captured honestly: how its run fails, and what it leaves behind.

The engines refuse a past day they cannot reconstruct (policy/capture_window.py decides) with a
`CaptureWindowError`. A refusal is a guard rail doing its job, not a fault, so in Dagster it:

- fails the run with one paragraph: the engine's reason, then the exact run config that would
  allow a late capture (`ops: {<op>: {config: {allow_late_capture: true}}}`) when the asset
  has that switch and the day is over. The error the UI shows is that paragraph alone: a plain
  `Failure` carries some thirty lines of Dagster's own stack frames, which buried the reason.
  `RefusalFailure` is also a `DagsterUserCodeProcessError` holding a stack-less error, which
  Dagster 1.13 shows as is (`serializable_error_info_from_exc_info` hoists it), and it is never
  retried (a retry would be refused again);
- records an `AssetObservation` on the partition (`refused`, `allow_with`), so the partition's
  own history says why it has no backup;
- tags the run `auction_backup/refused=true`, so the run-failure alert sensor can summarise a
  backfill's refusals in one alert (defs/alerting/refusals.py) instead of one per run;
- settles the checks its run planned on the asset. Dagster 1.13 resolves a check planned in a
  failed run that never evaluated to "Execution failed" (red), whatever the reason; a refused
  partition wrote nothing, so there was nothing new to check. When the check's previous result
  passed, that verdict is carried over as this run's evaluation (passed, saying it was not run
  and which run's result stands); when it failed, or there is none, nothing is recorded, so a
  real failure is never turned green.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetExecutionContext,
    AssetObservation,
    DagsterEventType,
    Failure,
    MetadataValue,
)
from dagster._core.errors import DagsterUserCodeProcessError
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._utils.error import SerializableErrorInfo

from auction_backup_pipelines.policy import capture_window as capture

REFUSED_TAG = "auction_backup/refused"
"""On a run that refused a partition (value "true")."""
REFUSAL_KEY = "refused"
"""Metadata key of the reason on the partition's observation."""
REFUSED_PARTITION_KEY = "refused_partition"
"""Metadata key on the step failure that marks it a refusal (the description is the reason)."""
ASSET_KEY = "asset"
"""Metadata key of the refused asset on the step failure."""
ALLOW_WITH_KEY = "allow_with"
"""Metadata key of the run config that would allow a late capture ("-" when none would), on both."""
RESULT_OF_RUN_KEY = "result_of_run"
"""Metadata key, on a carried-over check evaluation, of the run whose evaluation it carries."""
ERROR_CLASS = "CaptureRefused"
HISTORY = 20
"""Newest executions of a check read to find its previous result."""


class RefusalFailure(Failure, DagsterUserCodeProcessError):
    """A step failure whose error is the description alone, without stack frames, and never retried."""

    def __init__(self, description: str, metadata: dict[str, Any]) -> None:
        info = SerializableErrorInfo(message=description, stack=[], cls_name=ERROR_CLASS)
        # Failure.__init__ would chain into DagsterUserCodeProcessError.__init__ without its keyword.
        DagsterUserCodeProcessError.__init__(self, description, user_code_process_error_infos=[info])
        plain = Failure(description=description, metadata=metadata, allow_retries=False)
        self.description, self.metadata, self.allow_retries = plain.description, plain.metadata, False


def late_capture_run_config(op_name: str) -> str:
    """The run config (YAML flow style, as the launchpad takes it) that allows a late capture."""
    return f"ops: {{{op_name}: {{config: {{allow_late_capture: true}}}}}}"


def describe(reason: str, op_name: str, late_capture_switch: bool) -> tuple[str, str]:
    """(the one-paragraph description, the run config that would allow it or "-")."""
    paragraph = " ".join(reason.split())
    if not late_capture_switch:
        return paragraph, "-"
    allow_with = late_capture_run_config(op_name)
    return f"{paragraph} Run config that allows it: {allow_with}", allow_with


def refuse(context: AssetExecutionContext, exc: capture.CaptureWindowError, *, late_capture_switch: bool) -> RefusalFailure:
    """Record the refusal of the step's partition and return the exception to raise.

    late_capture_switch: the asset's config has `allow_late_capture` (and it was false).
    """
    day = dt.date.fromisoformat(context.partition_key)
    over = capture.day_end(day) <= dt.datetime.now(capture.UTC)  # not over: no switch allows it
    op_name = context.op_def.name
    description, allow_with = describe(str(exc), op_name, late_capture_switch and over)
    context.log_event(
        AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key,
            description=description,
            metadata={REFUSAL_KEY: MetadataValue.text(description), ALLOW_WITH_KEY: MetadataValue.text(allow_with)},
        )
    )
    context.instance.add_run_tags(context.run.run_id, {REFUSED_TAG: "true"})
    settle_planned_checks(context)
    asset = context.asset_key.to_user_string()
    return RefusalFailure(
        description, {REFUSED_PARTITION_KEY: context.partition_key, ASSET_KEY: asset, ALLOW_WITH_KEY: allow_with}
    )


def settle_planned_checks(context: AssetExecutionContext) -> None:
    """Carry a passed previous result over to each check this run planned on the refused asset."""
    planned = context.instance.get_records_for_run(
        context.run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
    ).records
    storage = context.instance.event_log_storage
    for record in planned:
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event else None
        if data is None or data.asset_key != context.asset_key:
            continue
        key = AssetCheckKey(data.asset_key, data.check_name)
        history = storage.get_asset_check_execution_history(key, limit=HISTORY)
        mine = [r for r in history if r.run_id == context.run.run_id and r.status == AssetCheckExecutionRecordStatus.PLANNED]
        previous = next(
            (r for r in history if r.run_id != context.run.run_id and r.status != AssetCheckExecutionRecordStatus.PLANNED), None
        )
        if not mine or previous is None or previous.status != AssetCheckExecutionRecordStatus.SUCCEEDED:
            context.log.info(f"check {data.check_name} left unevaluated: its previous result did not pass, or there is none")
            continue
        # a carried-over result names the run that really evaluated it
        carried = previous.evaluation.metadata.get(RESULT_OF_RUN_KEY) if previous.evaluation else None
        origin = str(carried.value) if carried is not None else previous.run_id
        for row in mine:
            context.log_event(
                AssetCheckEvaluation(
                    asset_key=key.asset_key,
                    check_name=key.name,
                    passed=True,
                    partition=row.partition,
                    description=(
                        f"Not run: partition {context.partition_key} was refused before anything was written, so this run "
                        f"had nothing new to check. The previous result (passed, run {origin[:8]}) stands."
                    ),
                    metadata={
                        "not_run": MetadataValue.text(f"partition {context.partition_key} refused"),
                        RESULT_OF_RUN_KEY: MetadataValue.text(origin),
                    },
                )
            )

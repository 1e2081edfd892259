"""Alerts for refused partitions: one per backfill, not one per run.

A run whose every failed step is a refusal (defs/shared/refusals.py: the step failure carries
the `refused_partition` metadata, the run the `auction_backup/refused` tag) is a guard rail doing its job.
Alone, it is alerted once, as REFUSED (severity WARN) with its paragraph. Inside a backfill
(the run's `dagster/backfill` tag), only the backfill's first refused run to end sends an alert,
naming every refused partition of the backfill known by then, the reason and the run config
that allows a late capture; the other refused runs of that backfill send nothing. The choice is
made from the runs themselves (end time, then run id), so it needs no cursor and no state: a
refused run that ends later still sees the earlier one. A run with any other failure keeps its
own alert (sensors.py).
"""

from __future__ import annotations

from dagster import DagsterEventType, DagsterRunStatus, RunFailureSensorContext, RunsFilter
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES
from dagster._core.storage.tags import BACKFILL_ID_TAG, PARTITION_NAME_TAG

from auction_backup_pipelines.ops import notify as nt

from ..shared.keys import SYSTEM_TAG
from ..shared.refusals import ASSET_KEY, REFUSED_PARTITION_KEY, REFUSED_TAG
from .resources import AlertingResource

RUNS_READ = 500
"""Refused runs of one backfill read per alert (a year of days, with room)."""


def refusals_of_run(instance, run_id: str) -> list[tuple[str, str]] | None:
    """(asset, paragraph) of each refused step of the run; None if any step failed otherwise."""
    found: list[tuple[str, str]] = []
    for record in instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE).records:
        event = record.event_log_entry.dagster_event
        user = getattr(event.event_specific_data, "user_failure_data", None) if event else None
        if user is None or REFUSED_PARTITION_KEY not in user.metadata:
            return None
        asset = user.metadata.get(ASSET_KEY)
        found.append((str(asset.value) if asset is not None else event.step_key or "?", user.description or ""))
    return found or None


def refusal_alert(context: RunFailureSensorContext, alerting: AlertingResource) -> tuple[bool, nt.Alert | None]:
    """(is this run a pure refusal, the alert to send or None when another run of its backfill sends it)."""
    run = context.dagster_run
    if run.tags.get(REFUSED_TAG) != "true":
        return False, None
    instance = context.instance
    mine = refusals_of_run(instance, run.run_id)
    if mine is None:
        return False, None
    system = run.tags.get(SYSTEM_TAG, "")
    backfill = run.tags.get(BACKFILL_ID_TAG)
    if not backfill:
        partition = run.tags.get(PARTITION_NAME_TAG)
        names = ", ".join(asset for asset, _ in mine)
        return True, nt.Alert(
            title=" ".join(p for p in ("REFUSED", names, partition) if p),
            severity="WARN",
            system=system,
            asset=names,
            partition=partition,
            error="\n".join(reason for _, reason in mine),
            run_id=run.run_id,
            run_url=alerting.run_url(run.run_id),
            job=run.job_name,
        )

    records = instance.get_run_records(
        filters=RunsFilter(tags={BACKFILL_ID_TAG: backfill, REFUSED_TAG: "true"}, statuses=[DagsterRunStatus.FAILURE]),
        limit=RUNS_READ,
    )
    refused = []  # (end time, run id, partition, refusals) of the backfill's purely refused runs
    for record in records:
        found = mine if record.dagster_run.run_id == run.run_id else refusals_of_run(instance, record.dagster_run.run_id)
        if found is not None:
            partition = record.dagster_run.tags.get(PARTITION_NAME_TAG, "?")
            refused.append((record.end_time or 0.0, record.dagster_run.run_id, partition, found))
    refused.sort(key=lambda r: (r[0], r[1]))
    if not refused or refused[0][1] != run.run_id:
        return True, None  # an earlier refused run of this backfill sends (or sent) the alert
    still = instance.get_runs_count(RunsFilter(tags={BACKFILL_ID_TAG: backfill}, statuses=IN_PROGRESS_RUN_STATUSES))
    partitions = sorted({p for _, _, p, _ in refused})
    steps = sorted({step for *_, found in refused for step, _ in found})
    lines = [
        f"{len(partitions)} partition(s) of backfill {backfill} were refused; nothing was written for them: "
        + ", ".join(partitions)
        + ".",
        "",
        mine[0][1],
    ]
    if still:
        lines += ["", f"{still} run(s) of this backfill were still queued or running; their refusals are not alerted again."]
    return True, nt.Alert(
        title=f"REFUSED backfill {backfill}: {', '.join(steps)} ({len(partitions)} partition(s))",
        severity="WARN",
        system=system,
        asset=", ".join(steps),
        partition=", ".join(partitions),
        error="\n".join(lines),
        run_id=run.run_id,
        run_url=alerting.run_url(run.run_id),
        job=run.job_name,
    )

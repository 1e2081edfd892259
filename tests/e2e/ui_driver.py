"""Driving a running Dagster as an operator does: launches and their outcome through GraphQL (what
the UI's buttons send), and pages in a headless Chromium. Shared by the end-to-end UI tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

from .dagster_processes import graphql

LOCATION = "auction_backup_pipelines"
REPOSITORY = "__repository__"
FINISHED_BACKFILL = ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED")
FINISHED_RUN = ("SUCCESS", "FAILURE", "CANCELED")

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } ... on InvalidStepError { invalidStepKey }
  ... on UnauthorizedError { message } } }
"""
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { id status } } }
"""
BACKFILL_RUNS = """
query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status tags { key value } } } } }
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } ... on PipelineNotFoundError { message } } }
"""
SCHEDULES = """
query($repo: RepositorySelector!) { schedulesOrError(repositorySelector: $repo) { __typename
  ... on Schedules { results { id name scheduleState { status } } } } }
"""
STOP_SCHEDULE = """
mutation($id: String!) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } ... on UnauthorizedError { message } } }
"""
RUN_STATUS = "query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status } } }"

# Chromium's own background traffic floods a closed network (FIELD_NOTES: this workplace's machines).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch_backfill(port: int, asset: list[str], start: str, end: str) -> str:
    """A backfill of the days start..end of one asset, as the asset page's "Materialize" dialog launches it."""
    params = {"partitionsByAssets": [{"assetKey": {"path": asset}, "partitions": {"range": {"start": start, "end": end}}}]}
    result = graphql(port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def backfill_finished(port: int, backfill_id: str) -> str | None:
    """The backfill's final status, or None while it runs."""
    status = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]["status"]
    return status if status in FINISHED_BACKFILL else None


def backfill_runs(port: int, backfill_id: str) -> list[dict]:
    """The backfill's runs, each with its partition."""
    runs = graphql(port, BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]
    return [{**r, "partition": next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition")} for r in runs]


def launch_job(port: int, job: str, *, tags: dict[str, str] | None = None, run_config: dict[str, Any] | None = None) -> str:
    """Launch a job as the launchpad does; returns the run id."""
    params = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job},
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(port, LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def run_finished(port: int, run_id: str) -> str | None:
    """The run's final status, or None while it is queued or running."""
    status = graphql(port, RUN_STATUS, {"id": run_id})["runOrError"]["status"]
    return status if status in FINISHED_RUN else None


def schedule_states(port: int) -> dict[str, str]:
    """Each schedule's status (RUNNING or STOPPED), as the Automation page lists them."""
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    schedules = graphql(port, SCHEDULES, {"repo": repo})["schedulesOrError"]["results"]
    return {s["name"]: s["scheduleState"]["status"] for s in schedules}


def stop_schedules(port: int) -> list[str]:
    """Switch every running schedule off, as its toggle on the Automation page does; returns their names."""
    repo = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
    stopped = []
    for schedule in graphql(port, SCHEDULES, {"repo": repo})["schedulesOrError"]["results"]:
        if schedule["scheduleState"]["status"] == "RUNNING":
            result = graphql(port, STOP_SCHEDULE, {"id": schedule["id"]})["stopRunningSchedule"]
            assert result["__typename"] == "ScheduleStateResult", result
            stopped.append(schedule["name"])
    return stopped


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium (a test tool's own browser download fails on a closed network), always closed."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str) -> Page:
    """A page at `url`, past the webserver's one-time "Join the Dagster community" modal."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url, wait_until="domcontentloaded")
    with contextlib.suppress(Exception):  # the modal shows once per browser profile, if at all
        page.get_by_role("button", name="Skip").click(timeout=10_000)
    return page

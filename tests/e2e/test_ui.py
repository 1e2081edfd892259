"""The operator's view: a running `dg dev` (webserver + daemon) driven as a user would,
through the GraphQL API (a partition backfill) and through a real browser (headless Chromium)."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import sync_playwright

from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.policy import capture_window as capture

from .dagster_processes import BIN, ROOT, dagster_home, dg_env, graphql, process_group, wait_until

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts"

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
RUN_FAILURE = """
query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { __typename
  ... on ExecutionStepFailureEvent { error { message } } } } } }
"""


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    """`dg dev` on a free port with its own instance and an empty backup repository."""
    tmp = tmp_path_factory.mktemp("dev")
    port = free_port()
    env = dg_env(dagster_home(tmp), BACKUP_ROOT=str(tmp / "backups"))
    log = tmp / "dagster-dev.log"
    argv = [str(BIN / "dg"), "dev", "-h", "127.0.0.1", "-p", str(port)]
    with process_group(argv, env, log) as proc:

        def loaded():
            data = graphql(
                port, "{ workspaceOrError { ... on Workspace { locationEntries { locationOrLoadError { __typename } } } } }"
            )
            return data["workspaceOrError"]["locationEntries"][0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

        wait_until("the code location to load", loaded, 180, proc, log)
        yield port, proc, log


def _backfill(port: int, asset: list[str], start: str, end: str) -> str:
    params = {"partitionsByAssets": [{"assetKey": {"path": asset}, "partitions": {"range": {"start": start, "end": end}}}]}
    result = graphql(port, LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def _runs(port: int, backfill_id: str) -> list[dict]:
    runs = graphql(port, BACKFILL_RUNS, {"id": backfill_id})["runsOrError"]["results"]
    return [{**r, "partition": next(t["value"] for t in r["tags"] if t["key"] == "dagster/partition")} for r in runs]


def test_backfill_of_the_last_seven_days_through_graphql(dagster_dev):
    port, proc, log = dagster_dev
    yesterday = capture.default_partition()
    first = (yesterday - dt.timedelta(days=6)).isoformat()
    # Kafka keeps a week: every day is reconstructed from the log by timestamp.
    kafka = _backfill(port, ["kafka", "topic_export", "payment-events"], first, yesterday.isoformat())
    # Redis keeps no history: only yesterday can be captured (on time); older days must fail clearly.
    redis = _backfill(port, ["redis", "snapshot"], first, (yesterday - dt.timedelta(days=1)).isoformat())

    def finished(backfill_id: str):
        status = graphql(port, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]["status"]
        return status if status in ("COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED") else None

    assert wait_until("the Kafka backfill", lambda: finished(kafka), 600, proc, log) == "COMPLETED_SUCCESS"
    kafka_runs = _runs(port, kafka)
    assert sorted(r["partition"] for r in kafka_runs) == [
        (yesterday - dt.timedelta(days=i)).isoformat() for i in range(6, -1, -1)
    ]
    assert {r["status"] for r in kafka_runs} == {"SUCCESS"}

    assert wait_until("the Redis backfill", lambda: finished(redis), 600, proc, log) == "COMPLETED_FAILED"
    redis_runs = _runs(port, redis)
    assert len(redis_runs) == 6 and {r["status"] for r in redis_runs} == {"FAILURE"}
    events = graphql(port, RUN_FAILURE, {"id": redis_runs[0]["runId"]})["logsForRun"]["events"]
    messages = [e["error"]["message"] for e in events if e["__typename"] == "ExecutionStepFailureEvent"]
    assert messages and "no history" in messages[0].lower(), messages


def test_browser_shows_assets_partitions_and_checks(dagster_dev):
    port, _, _ = dagster_dev
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{base}/assets", wait_until="domcontentloaded")
            skip = page.get_by_role("button", name="Skip")
            try:
                skip.click(timeout=10_000)  # the one-time community modal
            except Exception:
                pass
            for name in ("logical_dump", "base_backup", "snapshot", "payment-events"):
                page.get_by_text(name, exact=False).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "assets.png"), full_page=True)

            page.goto(f"{base}/locations/auction_backup_pipelines/asset-groups/postgres", wait_until="domcontentloaded")
            for name in ("logical_dump", "base_backup", "wal_archive"):
                page.get_by_text(name).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "asset-graph-postgres.png"))
            page.goto(f"{base}/locations/auction_backup_pipelines/asset-groups/kafka", wait_until="domcontentloaded")
            page.get_by_text("payment-events").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "asset-graph-kafka.png"))

            page.goto(f"{base}/assets/kafka/topic_export/payment-events?view=partitions", wait_until="domcontentloaded")
            page.get_by_text(capture.default_partition().isoformat()).first.wait_for(timeout=60_000)  # the partition list
            page.screenshot(path=str(ARTIFACTS / "partitions.png"), full_page=True)

            page.goto(f"{base}/assets/postgres/logical_dump?view=checks", wait_until="domcontentloaded")
            for check in ("dump_integrity", "dump_restores", "verified_recently"):
                page.get_by_text(check).first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "checks.png"), full_page=True)
        finally:
            browser.close()
    for shot in ("assets.png", "asset-graph-postgres.png", "asset-graph-kafka.png", "partitions.png", "checks.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000

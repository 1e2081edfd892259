"""What an operator reads in the UI after the three things that need an explanation: a refused
backfill of past days, a backup that did not happen (its schedule is switched off), and a restore.

Each flow is driven through the running `dg dev` as the UI drives it (GraphQL launches), checked
through GraphQL, then looked at in headless Chromium, with a screenshot in test-artifacts/.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import redis

from auction_backup_pipelines.policy import capture_window as capture

from .conftest import DEADLINE_GRACE_S, DevServer
from .dagster_processes import ROOT, graphql, wait_until
from .ui_driver import (
    backfill_finished,
    backfill_runs,
    chromium,
    launch_backfill,
    launch_job,
    open_page,
    run_finished,
    schedule_states,
)

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts"
SNAPSHOT = ["redis", "snapshot"]
LOGICAL_DUMP = ["postgres", "logical_dump"]
FRESHNESS = "backed_up_on_time"
POSTGRES_HOUR = 2
"""postgres_backup_job_schedule's UTC hour (defs/shared/backup_jobs.py BACKUP_HOURS)."""

METADATA = """label ... on TextMetadataEntry { text } ... on FloatMetadataEntry { floatValue }
  ... on IntMetadataEntry { intValue }"""
ASSET_EVENTS = f"""
query($key: AssetKeyInput!, $partitions: [String!]) {{ assetOrError(assetKey: $key) {{ ... on Asset {{
  assetMaterializations(partitions: $partitions) {{ partition runId }}
  assetObservations(partitions: $partitions) {{ partition runId description metadataEntries {{ {METADATA} }} }} }} }} }}
"""
LATEST_MATERIALIZATION = """
query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset { assetMaterializations(limit: 1) { partition runId } } } }
"""
ASSET_HEALTH = """
query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
  assetHealth { assetHealth materializationStatus assetChecksStatus freshnessStatus } } }
  assetNodeOrError(assetKey: $key) { ... on AssetNode { assetPartitionStatuses {
    ... on TimePartitionStatuses { ranges { status startKey endKey } } } } } }
"""
CHECKS = """
query($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
  assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } } } } } }
"""
CHECK_EXECUTIONS = f"""
query($key: AssetKeyInput!, $check: String!, $limit: Int!) {{
  assetCheckExecutions(assetKey: $key, checkName: $check, limit: $limit) {{ runId status partition
    evaluation {{ description severity metadataEntries {{ {METADATA} }} }} }} }}
"""


def metadata(entries: list[dict]) -> dict[str, Any]:
    return {e["label"]: e.get("text", e.get("floatValue", e.get("intValue"))) for e in entries}


def asset_events(port: int, key: list[str], partitions: list[str]) -> dict:
    return graphql(port, ASSET_EVENTS, {"key": {"path": key}, "partitions": partitions})["assetOrError"]


def check_executions(port: int, key: list[str], check: str, limit: int = 1) -> list[dict]:
    return graphql(port, CHECK_EXECUTIONS, {"key": {"path": key}, "check": check, "limit": limit})["assetCheckExecutions"]


def yesterday() -> dt.date:
    return capture.default_partition()


@pytest.fixture(scope="module")
def redis_yesterday(dagster_dev: DevServer) -> tuple[str, dt.date]:
    """Yesterday's Redis snapshot, taken by the daily job launched for that partition (as its schedule
    would), with the job's integrity and verification checks; returns the run id and the day (the
    module runs for minutes: a later `yesterday()` may be another day once midnight UTC passed)."""
    port = dagster_dev.port
    day = yesterday()
    run_id = launch_job(port, "redis_backup_job", tags={"dagster/partition": day.isoformat()})
    status = wait_until("yesterday's Redis backup", lambda: run_finished(port, run_id), 300, dagster_dev.proc, dagster_dev.log)
    assert status == "SUCCESS", run_id
    return run_id, day


def test_refused_backfill_keeps_the_newest_backup_and_its_checks_green(
    dagster_dev: DevServer, redis_yesterday: tuple[str, dt.date]
):
    port, proc, log = dagster_dev.port, dagster_dev.proc, dagster_dev.log
    run_id, newest_day = redis_yesterday
    days = [(newest_day - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    backfill = launch_backfill(port, SNAPSHOT, days[0], days[-1])
    assert wait_until("the refused backfill", lambda: backfill_finished(port, backfill), 600, proc, log) == "COMPLETED_FAILED"
    runs = backfill_runs(port, backfill)
    assert sorted(r["partition"] for r in runs) == days and {r["status"] for r in runs} == {"FAILURE"}
    assert all({"key": "auction_backup/refused", "value": "true"} in r["tags"] for r in runs)

    refused_runs = {r["partition"]: r["runId"] for r in runs}

    # Each refused day says why, and with what run config a late capture would be allowed.
    events = asset_events(port, SNAPSHOT, days)
    assert events["assetMaterializations"] == []
    for day in days:
        mine = [o for o in events["assetObservations"] if o["partition"] == day and o["runId"] == refused_runs[day]]
        refusals = [m for m in map(metadata, (o["metadataEntries"] for o in mine)) if "refused" in m]
        assert len(refusals) == 1, (day, events["assetObservations"])
        reason, allow_with = refusals[0]["refused"], refusals[0]["allow_with"]
        assert "no history" in reason.lower() and day in reason, reason
        assert allow_with.startswith("ops: {") and "allow_late_capture: true" in allow_with and allow_with in reason

    # The newest backup is still yesterday's, from its own run.
    newest = graphql(port, LATEST_MATERIALIZATION, {"key": {"path": SNAPSHOT}})["assetOrError"]["assetMaterializations"]
    assert newest == [{"partition": newest_day.isoformat(), "runId": run_id}]

    # Every check the backup runs carry is green: the refused runs carried the passed results over.
    # backed_up_on_time is left out: the freshness sensor evaluates it, no run does (next test).
    checks = graphql(port, CHECKS, {"key": {"path": SNAPSHOT}})["assetNodeOrError"]["assetChecksOrError"]["checks"]
    carried = 0
    for check in checks:
        if check["name"] == FRESHNESS:
            continue
        history = check_executions(port, SNAPSHOT, check["name"], limit=10)
        if not history:
            continue  # never run by a backup job (the weekly restore check)
        assert history[0]["status"] == "SUCCEEDED", (check["name"], history[0])
        for execution in history:
            if execution["runId"] in refused_runs.values():
                assert execution["status"] == "SUCCEEDED", (check["name"], execution)
                assert execution["evaluation"]["description"].startswith("Not run: partition"), execution
                carried += 1
        if check["executionForLatestMaterialization"] is not None:  # what the asset's Checks tab shows
            assert check["executionForLatestMaterialization"]["status"] == "SUCCEEDED", check
    assert carried >= len(days), carried  # each refused run planned checks and carried them over

    # What Dagster itself summarises, recorded for the operator's record, not asserted beyond the newest
    # day: its health summary (null on an open-source instance) and the partition bar, where a day
    # whose run failed shows red (FAILED) even though the refusal wrote nothing.
    health = graphql(port, ASSET_HEALTH, {"key": {"path": SNAPSHOT}})
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "asset-health-after-refusal.json").write_text(json.dumps(health, indent=2) + "\n")
    ranges = health["assetNodeOrError"]["assetPartitionStatuses"]["ranges"]
    assert {"status": "MATERIALIZED", "startKey": newest_day.isoformat(), "endKey": newest_day.isoformat()} in ranges

    base = f"http://127.0.0.1:{port}"
    with chromium() as browser:
        # The partition view marks the day failed and links its run; its event says why.
        page = open_page(browser, f"{base}/assets/redis/snapshot?view=partitions&partition={days[-1]}")
        page.get_by_text("did not materialize this asset").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "refusal-partition.png"), full_page=True)
        page.goto(f"{base}/assets/redis/snapshot?view=events&partition={days[-1]}", wait_until="domcontentloaded")
        page.get_by_text(f"Partition {days[-1]} observed in run").first.wait_for(timeout=60_000)
        page.get_by_text(f"not the state at the end of {days[-1]}").first.wait_for(timeout=60_000)
        page.get_by_text("ops: {redis__snapshot: {config: {allow_late_capture: true}}}").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "refusal.png"), full_page=True)
    for shot in ("refusal-partition.png", "refusal.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000


def due_day(now: dt.datetime) -> str:
    """The newest day whose PostgreSQL backup is overdue at `now`: its schedule's hour the next day
    plus the grace has passed. Yesterday from 02:06 UTC on, before that the day before."""
    return ((now - dt.timedelta(hours=POSTGRES_HOUR, seconds=DEADLINE_GRACE_S)).date() - dt.timedelta(days=1)).isoformat()


def test_switched_off_schedule_turns_the_asset_stale_and_alerts(dagster_dev: DevServer):
    port, proc, log = dagster_dev.port, dagster_dev.proc, dagster_dev.log
    # switched off by the fixture, as an operator does on the Automation page: nothing backs up postgres
    assert schedule_states(port)["postgres_backup_job_schedule"] == "STOPPED"

    def overdue():
        """The freshness sensor's newest verdict, once it is a failure naming the day due now."""
        latest = check_executions(port, LOGICAL_DUMP, FRESHNESS)
        if latest and latest[0]["status"] == "FAILED":
            day = due_day(dt.datetime.now(dt.UTC))
            if metadata(latest[0]["evaluation"]["metadataEntries"]).get("partition") == day:
                return day, latest[0]
        return None

    # The sensor evaluates at the daemon's start, then every 5 minutes (a deadline passing while
    # this test runs is seen at its next tick).
    day, latest = wait_until("an overdue verdict on postgres/logical_dump", overdue, 400, proc, log)
    evaluation = latest["evaluation"]
    assert evaluation["severity"] == "ERROR" and latest["runId"] == ""  # recorded by the sensor, not a run
    assert evaluation["description"].startswith(f"no backup of {day} by its deadline"), evaluation
    assert "postgres_backup_job_schedule" in evaluation["description"]
    assert asset_events(port, LOGICAL_DUMP, [day])["assetMaterializations"] == []

    def alerted():
        title = f"CHECK FAILED postgres/logical_dump {FRESHNESS} {day}"
        return [a for a in dagster_dev.received_alerts() if title in a["text"]]

    alerts = wait_until("the freshness alert", alerted, 120, proc, log)
    assert len(alerts) == 1 and f"no backup of {day}" in alerts[0]["text"], alerts

    with chromium() as browser:
        page = open_page(browser, f"http://127.0.0.1:{port}/assets/postgres/logical_dump?view=checks")
        page.get_by_text(f"no backup of {day}").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "freshness.png"), full_page=True)
    assert (ARTIFACTS / "freshness.png").stat().st_size > 10_000


def test_restore_is_recorded_on_the_backup_it_came_from(dagster_dev: DevServer, redis_yesterday: tuple[str, dt.date]):
    port, proc, log = dagster_dev.port, dagster_dev.proc, dagster_dev.log
    day = redis_yesterday[1].isoformat()
    config = {"ops": {"restore_redis_snapshot": {"config": {"date": day, "target": dagster_dev.restore_target}}}}
    run_id = launch_job(port, "redis_restore_job", run_config=config)
    assert wait_until("the Redis restore", lambda: run_finished(port, run_id), 300, proc, log) == "SUCCESS"

    observations = [o for o in asset_events(port, SNAPSHOT, [day])["assetObservations"] if o["runId"] == run_id]
    assert len(observations) == 1, observations
    record = metadata(observations[0]["metadataEntries"])
    assert record["target"] == dagster_dev.restore_target and record["run_id"] == run_id
    assert 0 < record["rto_seconds"] < 300
    host, port_s = dagster_dev.restore_target.split(":")
    target = redis.Redis(host=host, port=int(port_s), password=dagster_dev.restore_password or None)
    try:
        restored = sum(int(db["keys"]) for name, db in target.info("keyspace").items() if name.startswith("db"))
    finally:
        target.close()
    assert record["keys_verified"] == restored > 0, (record, restored)

    with chromium() as browser:
        page = open_page(browser, f"http://127.0.0.1:{port}/assets/redis/snapshot?view=events&partition={day}")
        page.get_by_text(f"restored into {dagster_dev.restore_target}").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "restore-history.png"), full_page=True)
    assert (ARTIFACTS / "restore-history.png").stat().st_size > 10_000

"""The operator's view: a running `dg dev` (webserver + daemon) driven as a user would,
through the GraphQL API (a partition backfill) and through a real browser (headless Chromium)."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.policy import capture_window as capture

from .dagster_processes import ROOT, wait_until
from .ui_driver import backfill_finished, backfill_runs, chromium, launch_backfill, open_page

pytestmark = pytest.mark.e2e
ARTIFACTS = ROOT / "test-artifacts"


def test_backfill_of_the_last_seven_days_through_graphql(dagster_dev):
    port, proc, log = dagster_dev.port, dagster_dev.proc, dagster_dev.log
    yesterday = capture.default_partition()
    first = (yesterday - dt.timedelta(days=6)).isoformat()
    # Kafka keeps a week: every day is reconstructed from the log by timestamp. (Redis keeps no
    # history: a backfill of its past days is refused, day by day, in test_ui_operator.py.)
    kafka = launch_backfill(port, ["kafka", "topic_export", "payment-events"], first, yesterday.isoformat())

    assert wait_until("the Kafka backfill", lambda: backfill_finished(port, kafka), 600, proc, log) == "COMPLETED_SUCCESS"
    kafka_runs = backfill_runs(port, kafka)
    assert sorted(r["partition"] for r in kafka_runs) == [
        (yesterday - dt.timedelta(days=i)).isoformat() for i in range(6, -1, -1)
    ]
    assert {r["status"] for r in kafka_runs} == {"SUCCESS"}


def test_browser_shows_assets_partitions_and_checks(dagster_dev):
    port = dagster_dev.port
    ARTIFACTS.mkdir(exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with chromium() as browser:
        page = open_page(browser, f"{base}/assets")
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
    for shot in ("assets.png", "asset-graph-postgres.png", "asset-graph-kafka.png", "partitions.png", "checks.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000

"""`restore … --latest`: the newest backup whose latest restore verdict is not `failed`, named on
stderr before anything connects; --date and --latest exclude each other and one is required."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.repository import verdicts
from auction_backup_pipelines.repository.repository import Repository
from tests.cli.cli_run import run_cli
from tests.ops.loopback_listener import Listener
from tests.ops.synthetic_backups import kafka_topic_day, redis_snapshot

DAYS = [dt.date(2026, 11, 27), dt.date(2026, 11, 28), dt.date(2026, 11, 29)]


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository.local(str(tmp_path / "backups"))


def restore(repo: Repository, *args: str):
    env = {"RESTORE_ALLOWED_REDIS": "", "RESTORE_ALLOWED_KAFKA": ""}
    return run_cli("--repo", str(repo.backend.describe()), "restore", *args, env=env)


def test_redis_latest_skips_a_backup_that_failed_its_restore_check_and_says_which_it_chose(repo):
    older, middle, newest = (redis_snapshot(repo, d) for d in DAYS)
    verdicts.record(repo, newest.ref, "snapshot_restores", False, by="test", error="digest differs")
    verdicts.record(repo, older.ref, "snapshot_restores", True, by="test")
    with Listener() as target:
        target.serve_one()
        done = restore(repo, "redis", "--latest", "--target", target.address, "--allow-any-target")
        target.served()
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith(f"auction-backup: --latest chose {middle.prefix} ")  # before it connected
    assert f"skipped {newest.prefix}: restore check failed" in lines[0] and "digest differs" in lines[0]
    assert "not a Redis server" in lines[-1] and done.returncode == 1  # our fake target answered an error


def test_latest_with_every_backup_failed_is_one_line(repo):
    for d in DAYS[:2]:
        verdicts.record(repo, redis_snapshot(repo, d).ref, "snapshot_restores", False, by="test")
    with Listener() as target:
        done = restore(repo, "redis", "--latest", "--target", target.address, "--allow-any-target")
        assert target.pending() == 0
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"auction-backup: error: no good redis/snapshot backup in {repo.describe()} (2 failed their restore check)"
    ]


@pytest.mark.parametrize("args", [["--date", "2026-11-29", "--latest"], []], ids=["both", "neither"])
@pytest.mark.parametrize("system", ["postgres", "redis"])
def test_date_and_latest_exclude_each_other_and_one_is_required(repo, system, args):
    target = ["--target-db", "never_created"] if system == "postgres" else ["--target", "127.0.0.1:1"]
    done = restore(repo, system, *target, *args)
    assert done.returncode == 2
    assert "--date" in done.stderr and "--latest" in done.stderr


def test_kafka_latest_replays_the_newest_good_day_of_the_topics_good_that_day(repo):
    bids = [kafka_topic_day(repo, "bids", d) for d in DAYS]
    failed = kafka_topic_day(repo, "lots", DAYS[-1])
    kafka_topic_day(repo, "lots", DAYS[0])
    verdicts.record(repo, failed.ref, "topic_restores", False, by="test")
    with Listener() as target:
        done = restore(repo, "kafka", "--latest", "--target-bootstrap", target.address, "--allow-any-target")
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"auction-backup: --latest chose {bids[-1].prefix} (the newest backup without a failed restore verdict)"
    assert not any("lots" in line and "chose" in line for line in lines)  # lots was not good on the newest day
    assert f"no Kafka broker answered at {target.address}" in lines[-1]

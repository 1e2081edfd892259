"""`auction-backup restore redis|kafka` refuses a target that is not allowlisted, in one line and
before any connection (a listening port proves nothing reached it); --allow-any-target lets it
through, and then a Redis target gets the restore credentials, never REDIS_PASSWORD."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auction_backup_pipelines.repository.repository import Repository
from tests.ops.loopback_listener import Listener
from tests.ops.synthetic_backups import kafka_topic_day, redis_snapshot

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 30)
PRODUCTION = "production-password-for-redis-only"
RESTORE = "restore-password-for-targets"


def run_cli(repo_root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it; the sources are this machine's Redis and Kafka, nothing else allowlisted."""
    environ = {
        **os.environ,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "7001",
        "REDIS_USERNAME": "backup",
        "REDIS_PASSWORD": PRODUCTION,
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "RESTORE_ALLOWED_REDIS": "",
        "RESTORE_ALLOWED_KAFKA": "",
        "RESTORE_REDIS_USERNAME": "restorer",
        "RESTORE_REDIS_PASSWORD": RESTORE,
        **env,
    }
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo_root), "restore", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=120)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 1 and done.stdout == "", done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository.local(str(tmp_path / "backups"))


@pytest.mark.parametrize("allowlist", ["", "127.0.0.1:7002, 10.0.0.7:7001"])
def test_redis_refuses_a_target_that_is_not_allowlisted_before_connecting(repo, allowlist):
    redis_snapshot(repo, DAY)
    with Listener() as target:
        done = run_cli(
            repo.backend.root, "redis", "--date", DAY.isoformat(), "--target", target.address, RESTORE_ALLOWED_REDIS=allowlist
        )
        line = one_line(done)
        assert target.pending() == 0, "the refused restore connected to its target"
    assert target.address in line and "RESTORE_ALLOWED_REDIS" in line and line.endswith("Nothing was sent")
    assert PRODUCTION not in done.stderr and RESTORE not in done.stderr


@pytest.mark.parametrize("how", ["--allow-any-target", "RESTORE_ALLOWED_REDIS"])
def test_redis_target_let_through_gets_the_restore_credentials_not_the_production_ones(repo, how):
    redis_snapshot(repo, DAY)
    with Listener() as target:
        target.serve_one()
        flag = ["--allow-any-target"] if how == "--allow-any-target" else []
        allowed = target.address if how == "RESTORE_ALLOWED_REDIS" else ""
        done = run_cli(
            repo.backend.root,
            "redis",
            "--date",
            DAY.isoformat(),
            "--target",
            target.address,
            *flag,
            RESTORE_ALLOWED_REDIS=allowed,
        )
        auth = target.served()
    assert auth == [b"AUTH", b"restorer", RESTORE.encode()]
    line = one_line(done)  # our fake server answered an error: the restore stops there, in one line
    assert f"Redis at {target.address}" in line and "not a Redis server" in line


def test_redis_the_source_needs_no_listing(repo):
    """REDIS_HOST:REDIS_PORT is allowed by default, with the production credentials (our listener plays it)."""
    redis_snapshot(repo, DAY)
    with Listener() as source:
        source.serve_one()
        done = run_cli(
            repo.backend.root, "redis", "--date", DAY.isoformat(), "--target", source.address, REDIS_PORT=str(source.port)
        )
        auth = source.served()
    assert auth == [b"AUTH", b"backup", PRODUCTION.encode()]
    assert "not a Redis server" in one_line(done)


@pytest.mark.parametrize("allowlist", ["", "127.0.0.1:9093"])
def test_kafka_refuses_a_bootstrap_that_is_not_allowlisted_before_connecting(repo, allowlist):
    kafka_topic_day(repo, "bids", DAY)
    with Listener() as target:
        bootstrap = f"127.0.0.1:9092,{target.address}"  # one allowed broker does not carry another
        done = run_cli(
            repo.backend.root,
            "kafka",
            "--from",
            DAY.isoformat(),
            "--to",
            DAY.isoformat(),
            "--target-bootstrap",
            bootstrap,
            RESTORE_ALLOWED_KAFKA=allowlist,
        )
        line = one_line(done)
        assert target.pending() == 0, "the refused restore connected to its target"
    assert f"bootstrap {target.address} is" in line and "RESTORE_ALLOWED_KAFKA" in line and line.endswith("Nothing was sent")


def test_kafka_allow_any_target_lets_the_restore_connect(repo):
    kafka_topic_day(repo, "bids", DAY)
    with Listener() as target:
        done = run_cli(
            repo.backend.root,
            "kafka",
            "--from",
            DAY.isoformat(),
            "--to",
            DAY.isoformat(),
            "--target-bootstrap",
            target.address,
            "--allow-any-target",
        )
        assert target.pending() >= 1, "the allowed restore never reached its target"
    assert f"no Kafka broker answered at {target.address}" in one_line(done)

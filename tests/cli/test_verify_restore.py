"""`auction-backup verify --restore`: the weekly restore checks from the CLI, without Dagster.

Real backups of the stack (a logical dump, a base backup with a running WAL receiver, and the
export of a Kafka topic made for this test) are restored by the CLI, run as an operator would
run it, into scratch targets that are gone afterwards; then a damaged dump fails with exit 1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from auction_backup_pipelines.kafka.export import backup_topic_day
from auction_backup_pipelines.kafka.records import admin_client
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres.base_backup import take_base_backup
from auction_backup_pipelines.postgres.client import connect
from auction_backup_pipelines.postgres.logical_dump import DUMP_FILE, backup_logical
from auction_backup_pipelines.repository.repository import Repository
from tests.conftest import running_wal_receiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAY = capture.default_partition()
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
MESSAGES = 25


@pytest.fixture
def topic():
    """A topic of this test holding MESSAGES messages stamped on DAY; deleted afterwards."""
    admin = admin_client(BOOTSTRAP)
    name = f"t-{uuid.uuid4().hex[:10]}-verify"
    admin.create_topics([NewTopic(name, 2, 1, config={"retention.ms": "-1"})])[name].result()
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
    noon = int(dt.datetime.combine(DAY, dt.time(12), tzinfo=dt.UTC).timestamp() * 1000)
    for i in range(MESSAGES):
        producer.produce(name, key=f"k{i}".encode(), value=f"bid {i}".encode(), partition=i % 2, timestamp=noon + i)
    assert producer.flush(30) == 0
    yield name
    for f in admin.delete_topics([name], operation_timeout=30).values():
        f.result()


def _cli(repo: Repository, *args: str, topics: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_TOPICS": topics} if topics else dict(os.environ)
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo.backend.root), "verify", "--restore", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def _verify_databases(pg_settings) -> set[str]:
    with connect(pg_settings, dbname="postgres") as admin:
        return {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'verify\\_%'").fetchall()}


def test_verify_restore_passes_on_real_backups_and_fails_on_a_damaged_dump(pg_settings, tmp_path, topic):
    repo = Repository.local(tmp_path / "backups")
    databases_before = _verify_databases(pg_settings)
    with running_wal_receiver(pg_settings, repo, tmp_path / "spool"):
        dump = backup_logical(pg_settings, repo, DAY)
        take_base_backup(pg_settings, repo, DAY)
        backup_topic_day(BOOTSTRAP, repo, topic, DAY)

        started = time.monotonic()
        ok = _cli(repo, "postgres")
        print(f"verify --restore postgres: {time.monotonic() - started:.1f} s\n{ok.stdout}")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        lines = ok.stdout.splitlines()
        assert len(lines) == 2
        dump_line, pitr_line = lines
        assert dump_line.startswith("PASS") and "postgres/logical_dump" in dump_line and DAY.isoformat() in dump_line
        assert f"rows_compared={dump.metadata['rows_total']}" in dump_line
        assert pitr_line.startswith("PASS") and "postgres/base_backup" in pitr_line and "pitr_restores" in pitr_line
        assert "wal_files_replayed=" in pitr_line

        as_json = _cli(repo, "kafka", "--json", topics=topic)
        assert as_json.returncode == 0, as_json.stdout + as_json.stderr
        [outcome] = json.loads(as_json.stdout)
        assert outcome["passed"] and outcome["asset"] == f"kafka/topic_export/{topic}"
        assert outcome["partition"] == DAY.isoformat() and outcome["messages_compared"] == MESSAGES
        remaining = admin_client(BOOTSTRAP).list_topics(timeout=30).topics
        assert outcome["scratch_topic"].startswith("verify-") and outcome["scratch_topic"] not in remaining

        # Damage: one flipped byte in the middle of the stored dump.
        path = repo.backend.root / dump.prefix / dump.file(DUMP_FILE).key
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(raw))
        damaged = _cli(repo, "postgres")
    assert damaged.returncode == 1
    dump_line, pitr_line = damaged.stdout.splitlines()
    assert dump_line.startswith("FAIL") and "postgres/logical_dump" in dump_line and "corrupt or truncated" in dump_line
    assert pitr_line.startswith("PASS")  # the untouched base backup still verifies
    assert _verify_databases(pg_settings) <= databases_before  # scratch databases are always dropped


def test_verify_restore_refuses_an_artifact_and_reports_missing_backups(tmp_path):
    repo = Repository.local(tmp_path / "backups")
    refused = _cli(repo, "postgres", "logical_dump")
    assert refused.returncode == 1 and "--restore checks the newest backup of each asset" in refused.stderr
    empty = _cli(repo, "kafka", topics="auction-events")
    assert empty.returncode == 1
    assert empty.stdout.startswith("FAIL") and "no export of auction-events" in empty.stdout

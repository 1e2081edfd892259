"""Restores are recorded on the assets they restored from, and in the repository.

A Dagster restore job logs an AssetObservation on the backup's asset and partition (target,
`rto_seconds`, the count it verified, backup id, run id) and appends the same record to the
repository; the CLI, which cannot reach Dagster, appends the record only. Each test restores a
real backup of its own source into a target it owns (a scratch Redis server, a scratch database).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from auction_backup_pipelines.defs.shared.keys import LOGICAL_DUMP_KEY, REDIS_SNAPSHOT_KEY
from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import SNAPSHOT, RedisBackupError
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.repository import layout, leftovers, restore_log
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import RedisSettings
from tests.dagster_defs import defs, postgres_logical_dump

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEYS = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_pair(tmp_path):
    """(source, target): two scratch Redis servers of this test; the source holds KEYS keys."""
    with contextlib.ExitStack() as stack:
        found = []
        for name in ("source", "target"):
            (tmp_path / name).mkdir()
            for attempt in range(3):  # a free port can be taken between the probe and the bind
                port = free_port()
                try:
                    stack.enter_context(scratch_server(tmp_path / name, port=port))
                    break
                except RedisBackupError:
                    if attempt == 2:
                        raise
            found.append(RedisSettings(host="127.0.0.1", port=port))
        source = redis.Redis(host="127.0.0.1", port=found[0].port)
        for i in range(KEYS):
            source.set(f"hist:{i}", f"value {i}")
        yield found[0], found[1]


@pytest.fixture
def restore_env(monkeypatch):
    """The code location's environment with `target` allowlisted, without restore credentials
    (the scratch servers have none); settings are re-read."""

    def allow(target: str) -> None:
        for name, value in {"RESTORE_ALLOWED_REDIS": target, "RESTORE_REDIS_USERNAME": "", "RESTORE_REDIS_PASSWORD": ""}.items():
            monkeypatch.setenv(name, value)
        current_settings.cache_clear()

    yield allow
    current_settings.cache_clear()


def observations(instance: DagsterInstance, key: AssetKey, day: dt.date) -> list:
    found = instance.fetch_observations(AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=10)
    return [r.event_log_entry.asset_observation for r in found.records]


def test_redis_restore_job_records_an_observation_and_a_record(redis_pair, restore_env, tmp_path, on_time_day):
    source, target = redis_pair
    resource = BackupRepositoryResource(root=str(tmp_path / "backups"))
    repo = resource.repository()
    backup = backup_snapshot(source, repo, on_time_day)
    address = f"{target.host}:{target.port}"
    restore_env(address)
    instance = DagsterInstance.ephemeral()

    result = defs.resolve_job_def("redis_restore_job").execute_in_process(
        run_config={"ops": {"restore_redis_snapshot": {"config": {"date": on_time_day.isoformat(), "target": address}}}},
        resources={"backup_repo": resource},
        instance=instance,
    )

    assert result.success
    [observation] = observations(instance, REDIS_SNAPSHOT_KEY, on_time_day)
    md = {k: v.value for k, v in observation.metadata.items()}
    assert observation.partition == on_time_day.isoformat()
    assert md["target"] == address and md["keys_verified"] == KEYS
    assert isinstance(md["rto_seconds"], float) and 0 < md["rto_seconds"] < 120
    assert md["backup_id"] == backup.backup_id and md["run_id"] == result.run_id
    [record] = restore_log.history(repo, REDIS, SNAPSHOT)
    assert (record.backup, record.run_id, record.verified, record.target) == (backup.prefix, result.run_id, KEYS, address)
    assert record.key == md["restore_record"] and record.rto_seconds == pytest.approx(md["rto_seconds"])


@pytest.fixture
def source_db(pg_settings):
    """A small database of this test's own: 3 tables, 57 rows."""
    name = f"hist_{secrets.token_hex(4)}"
    with pg.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with pg.connect(pg_settings, dbname=name) as conn:
            for table, rows in (("lots", 30), ("bids", 20), ("users", 7)):
                conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
                conn.execute(f"INSERT INTO {table} SELECT i, 'row ' || i FROM generate_series(1, {rows}) i")
        yield name
    finally:
        with pg.connect(pg_settings, dbname="postgres") as admin:
            pg.drop_database(admin, name)


def test_postgres_restore_job_records_the_rows_it_verified(pg_settings, source_db, scratch_db, tmp_path, on_time_day):
    resources = {
        "postgres": PostgresResource(
            host=pg_settings.host, port=pg_settings.port, dbname=source_db, user=pg_settings.user, password=pg_settings.password
        ),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }
    instance = DagsterInstance.ephemeral()
    materialize([postgres_logical_dump], partition_key=on_time_day.isoformat(), resources=resources, instance=instance)
    config = {"ops": {"restore_postgres_dump": {"config": {"date": on_time_day.isoformat(), "target_db": scratch_db}}}}

    result = defs.resolve_job_def("postgres_restore_job").execute_in_process(
        run_config=config, resources=resources, instance=instance
    )

    assert result.success
    [observation] = observations(instance, LOGICAL_DUMP_KEY, on_time_day)
    md = {k: v.value for k, v in observation.metadata.items()}
    backup = resources["backup_repo"].repository().latest("postgres", "logical_dump")
    assert md["rows_verified"] == 57 and md["target"] == f"database {scratch_db}"
    assert md["backup_id"] == backup.backup_id and md["run_id"] == result.run_id and md["rto_seconds"] > 0
    assert pg_settings.password not in json.dumps(md)
    [record] = restore_log.history(resources["backup_repo"].repository(), "postgres", "logical_dump")
    assert record.verified == 57 and record.run_id == result.run_id


def test_cli_restore_appends_a_record_without_dagster(redis_pair, tmp_path, on_time_day):
    source, target = redis_pair
    repo = Repository.local(tmp_path / "backups")
    backup = backup_snapshot(source, repo, on_time_day)
    address = f"{target.host}:{target.port}"
    env = {**os.environ, "RESTORE_ALLOWED_REDIS": address, "RESTORE_REDIS_USERNAME": "", "RESTORE_REDIS_PASSWORD": ""}
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(tmp_path / "backups")]
    argv += ["restore", "redis", "--date", on_time_day.isoformat(), "--target", address]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["keys_verified"] == KEYS  # the printed result is unchanged
    [record] = restore_log.history(repo, REDIS, SNAPSHOT)
    assert record.key in done.stderr
    assert record.key.startswith(f"restores/redis/snapshot/{on_time_day.isoformat()}/")
    assert (record.backup, record.target, record.verified, record.run_id) == (backup.prefix, address, KEYS, None)
    assert record.by == "auction-backup restore redis" and record.rto_seconds > 0


def test_a_restore_record_is_never_taken_for_a_backup_or_a_leftover(tmp_path, on_time_day):
    repo = Repository.local(tmp_path / "backups")
    ref = BackupRef.new("kafka", "topic_export/2026-01-01", on_time_day, dt.datetime.now(dt.UTC))  # a topic named like a day
    record = restore_log.new_record(
        ref, kind="topic_replay", target="t @ b", rto_seconds=1.5, verified=3, verified_unit="messages", by="test"
    )
    restore_log.append(repo, record)

    assert layout.parse_restore_key(record.key) == (ref.partition_ref, record.restore_id)
    assert layout.parse_file_key(record.key) is None and layout.parse_catalog_key(record.key) is None
    assert leftovers.find(repo.backend) == [] and list(repo.list()) == []
    assert restore_log.history(repo, "kafka", "topic_export/2026-01-01") == [record]


def test_kafka_restore_job_records_each_topic_day_it_replayed(tmp_path):
    from auction_backup_pipelines.defs.shared.keys import topic_export_key
    from auction_backup_pipelines.kafka import export as kx
    from tests.kafka.test_export_restore import BOOTSTRAP, D1, D2, Kafka, Msg, at

    kafka = Kafka()
    try:
        topic = kafka.topic("history", 1)
        kafka.produce(topic, [Msg(0, at(D1, h)) for h in range(3)] + [Msg(0, at(D2, h)) for h in range(5)])
        resource = BackupRepositoryResource(root=str(tmp_path / "backups"))
        repo = resource.repository()
        backups = {d: kx.backup_topic_day(BOOTSTRAP, repo, topic, d) for d in (D1, D2)}
        instance = DagsterInstance.ephemeral()
        config = {"from_day": D1.isoformat(), "to_day": D2.isoformat(), "topics": [topic], "topic_prefix": "r-"}
        result = defs.resolve_job_def("kafka_restore_job").execute_in_process(
            run_config={"ops": {"restore_kafka_topics": {"config": config}}},
            resources={"backup_repo": resource},
            instance=instance,
        )
    finally:
        kafka.cleanup()

    assert result.success
    for day, messages in ((D1, 3), (D2, 5)):
        filter_ = AssetRecordsFilter(asset_key=topic_export_key(topic), asset_partitions=[day.isoformat()])
        [found] = instance.fetch_observations(filter_, limit=10).records
        md = {k: v.value for k, v in found.event_log_entry.asset_observation.metadata.items()}
        assert md["messages_verified"] == messages and md["backup_id"] == backups[day].backup_id
        assert md["target"].startswith(f"r-{topic} @ ") and md["run_id"] == result.run_id and md["rto_seconds"] > 0
    assert len(restore_log.history(repo, "kafka", f"topic_export/{topic}")) == 2

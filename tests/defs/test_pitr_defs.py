"""Base backups, the WAL archive's health and PITR through Dagster."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance, build_asset_check_context, build_sensor_context, materialize

from auction_backup_pipelines.defs.postgres.checks import postgres_base_backup_integrity
from auction_backup_pipelines.defs.postgres.wal import CHECK_NAME, build_wal_archive_sensor
from auction_backup_pipelines.defs.shared.keys import WAL_ARCHIVE_KEY
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from tests.conftest import running_wal_receiver
from tests.dagster_defs import defs, postgres_base_backup

pytestmark = pytest.mark.integration


@pytest.fixture
def resources(pg_settings, tmp_path):
    return {
        "postgres": PostgresResource(
            host=pg_settings.host,
            port=pg_settings.port,
            dbname=pg_settings.dbname,
            user=pg_settings.user,
            password=pg_settings.password,
        ),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }


@pytest.fixture
def receiver(pg_settings, resources, tmp_path):
    with running_wal_receiver(pg_settings, resources["backup_repo"].repository(), tmp_path / "spool") as rx:
        yield rx


def _sensor_events(resources):
    with DagsterInstance.ephemeral() as instance:
        result = build_wal_archive_sensor(300, 300.0)(
            build_sensor_context(instance=instance, resources={"backup_repo": resources["backup_repo"]})
        )
    return result.asset_events


def test_empty_archive_fails_the_check(resources):
    observation, evaluation = _sensor_events(resources)
    assert observation.asset_key == WAL_ARCHIVE_KEY
    assert (evaluation.check_name, evaluation.passed) == (CHECK_NAME, False)
    assert "is empty" in evaluation.metadata["summary"].value


def test_base_backup_asset_and_healthy_archive_then_pitr_job(resources, receiver, pg_settings, pitr_dir):  # noqa: F811
    day = capture.default_partition().isoformat()
    result = materialize([postgres_base_backup], partition_key=day, resources=resources, instance=DagsterInstance.ephemeral())
    [mat] = result.asset_materializations_for_node("postgres__base_backup")
    assert mat.metadata["timeline"].value >= 1
    assert mat.metadata["start_lsn"].value <= mat.metadata["stop_lsn"].value or "/" in mat.metadata["stop_lsn"].value
    with pg.connect(pg_settings) as conn:
        cluster_bytes = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()[0]
    assert mat.metadata["compressed_bytes"].value * 5 < cluster_bytes  # zstd by pg_basebackup, stored as is
    # size_bytes is the tar before pg_basebackup compressed it, about the cluster's size
    assert mat.metadata["size_bytes"].value > 5 * mat.metadata["compressed_bytes"].value
    assert "recoverable_window" not in mat.metadata  # live on the WAL archive instead of frozen here

    with pg.connect(pg_settings) as conn:
        conn.execute("SELECT txid_current()")  # a commit after the backup, for recovery to replay
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    repo = resources["backup_repo"].repository()
    assert wait_for_archived_time(WalArchive(repo.backend), target + dt.timedelta(seconds=1))

    observation, evaluation = _sensor_events(resources)
    assert evaluation.passed, evaluation.metadata["summary"].value
    assert observation.metadata["gaps"].value == "none"
    assert observation.metadata["lag_seconds"].value < 60
    assert observation.metadata["recoverable_latest"].value.endswith("Z")
    assert "recoverable window:" in observation.metadata["recoverable_window"].value

    config = {
        "ops": {"pitr_restore": {"config": {"target_time": target.isoformat(), "target_dir": str(pitr_dir), "stop_after": True}}}
    }
    run = defs.resolve_job_def("postgres_pitr_job").execute_in_process(
        run_config=config, resources=resources, instance=DagsterInstance.ephemeral()
    )
    assert run.success
    out = run.output_for_node("pitr_restore")
    assert out["base_backup"].startswith(f"postgres/base_backup/{day}/") and out["running"] is False
    assert dt.datetime.fromisoformat(out["reached_transaction_time"]) <= target


def test_base_backup_for_a_past_day_is_refused(resources):
    old = (capture.default_partition() - dt.timedelta(days=2)).isoformat()
    result = materialize(
        [postgres_base_backup], partition_key=old, resources=resources, instance=DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert not result.success
    assert "cannot stand for a past day" in result.get_step_failure_events()[0].step_failure_data.error.message
    assert resources["backup_repo"].repository().list() == []


def test_base_backup_integrity_check_reads_the_manifest_and_catches_a_flipped_byte(resources):
    day = capture.default_partition().isoformat()
    job = defs.resolve_job_def("postgres_backup_job")
    run = job.execute_in_process(partition_key=day, resources=resources, instance=DagsterInstance.ephemeral())
    check = {c.check_name: c for c in run.get_asset_check_evaluations()}["base_backup_integrity"]
    assert check.passed and len(check.metadata["backup_manifest_checksum"].value) == 64
    assert check.metadata["tar_members"].value > 100

    repo = resources["backup_repo"].repository()
    backup = repo.latest("postgres", "base_backup")
    stored = repo.backend.root / backup.prefix / backup.files[0].key
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0x04
    stored.write_bytes(bytes(raw))

    result = postgres_base_backup_integrity(build_asset_check_context(resources={"backup_repo": resources["backup_repo"]}))
    assert not result.passed and result.severity.value == "ERROR"

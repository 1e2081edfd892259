"""The PostgreSQL assets, check, jobs and schedule, run through a real Dagster instance."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, build_schedule_context, define_asset_job, materialize

from auction_backup_pipelines.defs.postgres.checks import postgres_dump_integrity
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.repository.repository import Repository
from tests.dagster_defs import defs, postgres_logical_dump

pytestmark = pytest.mark.integration


@pytest.fixture
def resources(pg_settings, tmp_path):
    root = tmp_path / "backups"
    return {
        "postgres": PostgresResource(
            host=pg_settings.host,
            port=pg_settings.port,
            dbname=pg_settings.dbname,
            user=pg_settings.user,
            password=pg_settings.password,
        ),
        "backup_repo": BackupRepositoryResource(root=str(root)),
    }


def _yesterday() -> str:
    return capture.default_partition().isoformat()


def test_partitioned_materialization_publishes_backup_with_metadata(resources):
    instance = DagsterInstance.ephemeral()
    result = materialize([postgres_logical_dump], partition_key=_yesterday(), resources=resources, instance=instance)
    assert result.success
    [mat] = result.asset_materializations_for_node("postgres__logical_dump")
    meta = mat.metadata
    assert meta["dagster/row_count"].value > 0
    assert meta["capture"].value == "on time"
    assert meta["compressed_bytes"].value < meta["size_bytes"].value
    # Text for people beside the numbers for plots: binary units, ISO-8601 UTC, the manifest's URL.
    assert meta["size"].value.endswith(("KiB", "MiB", "GiB")) and meta["compressed_size"].value
    assert meta["started_at"].value.endswith("Z") and meta["captured_at"].value.endswith("Z")
    assert meta["manifest"].value.startswith("file:///") and meta["manifest"].value.endswith("/manifest.json")
    assert mat.partition == _yesterday()
    repo = resources["backup_repo"].repository()
    backup = repo.get("postgres", "logical_dump", _yesterday())
    assert meta["backup_id"].value == backup.backup_id

    job = defs.resolve_job_def("postgres_backup_job")
    run = job.execute_in_process(partition_key=_yesterday(), resources=resources, instance=instance)
    checks = {c.check_name: c for c in run.get_asset_check_evaluations()}
    integrity = checks["dump_integrity"]
    assert integrity.passed
    assert integrity.metadata["partition"].value == _yesterday()
    assert integrity.metadata["tables_with_data"].value >= 4
    # no restore verification has run in this instance yet, but nothing is old enough to need one: no warning
    assert checks["verified_recently"].passed
    assert "no backup old enough to need verification yet" in checks["verified_recently"].description


def test_past_partition_is_refused_without_a_late_capture_flag(resources):
    old_day = (capture.default_partition() - dt.timedelta(days=3)).isoformat()
    result = materialize(
        [postgres_logical_dump],
        partition_key=old_day,
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "is a backfill" in failure.message and "Nothing was written" in failure.message
    assert resources["backup_repo"].repository().list() == []

    late = materialize(
        [postgres_logical_dump],
        partition_key=old_day,
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"postgres__logical_dump": {"config": {"allow_late_capture": True}}}},
    )
    [mat] = late.asset_materializations_for_node("postgres__logical_dump")
    assert mat.metadata["capture"].value.startswith("LATE CAPTURE")


def test_wrong_password_fails_the_run_with_a_clear_message_and_no_artifact(resources):
    good = resources["postgres"]
    wrong = PostgresResource(host=good.host, port=good.port, dbname=good.dbname, user=good.user, password="not-the-password")
    bad = dict(resources, postgres=wrong)
    result = materialize(
        [postgres_logical_dump],
        partition_key=_yesterday(),
        resources=bad,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    message = result.get_step_failure_events()[0].step_failure_data.error.message
    assert "rejected the password for user 'auctionuser'" in message
    assert "not-the-password" not in message
    assert resources["backup_repo"].repository().list() == []


def test_integrity_check_fails_on_a_flipped_byte(resources):
    materialize([postgres_logical_dump], partition_key=_yesterday(), resources=resources, instance=DagsterInstance.ephemeral())
    repo: Repository = resources["backup_repo"].repository()
    backup = repo.latest("postgres", "logical_dump")
    stored = repo.backend.root / backup.prefix / backup.file(pg.DUMP_FILE).key
    raw = bytearray(stored.read_bytes())
    raw[-10] ^= 0x01
    stored.write_bytes(bytes(raw))
    check_only = Definitions(
        assets=[postgres_logical_dump],
        asset_checks=[postgres_dump_integrity],
        jobs=[define_asset_job("integrity_only", selection=AssetSelection.checks(postgres_dump_integrity))],
        resources=resources,
    ).resolve_job_def("integrity_only")
    result = check_only.execute_in_process(instance=DagsterInstance.ephemeral())
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.severity.value == "ERROR"
    assert "corrupt" in evaluation.description


def test_restore_job_restores_and_verifies(resources, scratch_db):
    instance = DagsterInstance.ephemeral()
    materialize([postgres_logical_dump], partition_key=_yesterday(), resources=resources, instance=instance)
    job = defs.resolve_job_def("postgres_restore_job")
    config = {"ops": {"restore_postgres_dump": {"config": {"date": _yesterday(), "target_db": scratch_db}}}}
    result = job.execute_in_process(run_config=config, resources=resources, instance=instance)
    assert result.success
    restored = result.output_for_node("restore_postgres_dump")
    backup = resources["backup_repo"].repository().latest("postgres", "logical_dump")
    assert restored["rows_total"] == backup.metadata["rows_total"]

    again = job.execute_in_process(run_config=config, resources=resources, instance=instance, raise_on_error=False)
    assert not again.success
    assert "--force" in again.get_step_failure_events()[0].step_failure_data.error.message


def test_schedule_fires_at_0200_utc_for_the_previous_day():
    schedule = defs.resolve_schedule_def("postgres_backup_job_schedule")
    assert schedule.default_status.value == "RUNNING"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    context = build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 27, 2, 0, tzinfo=dt.UTC))
    [request] = list(schedule.evaluate_tick(context).run_requests)
    assert request.partition_key == "2026-11-26"
    assert request.job_name == "postgres_backup_job"
    # the job's tag is what the run queue limits on (one run per system at a time)
    assert defs.resolve_job_def("postgres_backup_job").tags["auction_backup/system"] == "postgres"

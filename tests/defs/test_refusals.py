"""A backfill of past PostgreSQL days that cannot be reconstructed: refused clearly, without
poisoning the checks, with one alert for the backfill and a note on each partition.

Before, each refused run showed a `dagster._core…Failure` with some thirty lines of stack, its
checks turned "Execution failed" although the newest dump was intact, three alerts fired for one
deliberate refusal, and the config key that allows a late capture was named nowhere.

No `from __future__ import annotations`: Dagster reads the toy asset's config annotation at decoration.
"""

import datetime as dt

import pytest
import yaml
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    Config,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from auction_backup_pipelines.defs.alerting.resources import AlertingResource
from auction_backup_pipelines.defs.alerting.sensors import run_failure_alert_sensor
from auction_backup_pipelines.defs.shared.backup_jobs import VERIFIED_RECENTLY
from auction_backup_pipelines.defs.shared.keys import LOGICAL_DUMP_KEY
from auction_backup_pipelines.defs.shared.refusals import ALLOW_WITH_KEY, REFUSAL_KEY, REFUSED_TAG, refuse
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import client as pg
from tests.dagster_defs import defs
from tests.defs.test_alerting import run_failure_context

pytestmark = pytest.mark.integration

HEALTHY = capture.default_partition().isoformat()  # the toy asset's one healthy day (the real job reads on_time_day)
PAST = [(capture.default_partition() - dt.timedelta(days=n)).isoformat() for n in (5, 4, 3)]
ALLOW = "ops: {postgres__logical_dump: {config: {allow_late_capture: true}}}"
BACKFILL = "refusals"  # what the daemon puts in the dagster/backfill tag of each of a backfill's runs
INTEGRITY = AssetCheckKey(LOGICAL_DUMP_KEY, "dump_integrity")
VERIFIED = AssetCheckKey(LOGICAL_DUMP_KEY, VERIFIED_RECENTLY)


@pytest.fixture
def resources(pg_settings, scratch_db, tmp_path):
    """The test's own small database, and a repository with no base backup (no past day can be reconstructed)."""
    with pg.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    with pg.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE bids (id int PRIMARY KEY, amount numeric)")
        conn.execute("INSERT INTO bids SELECT n, n * 1.5 FROM generate_series(1, 200) n")
    return {
        "postgres": PostgresResource(
            host=pg_settings.host,
            port=pg_settings.port,
            dbname=scratch_db,
            user=pg_settings.user,
            password=pg_settings.password,
        ),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }


def stored_evaluations(instance: DagsterInstance, run_id: str) -> list:
    """The run's check evaluations as the instance stored them (an in-process result leaves out the
    events a failed step logged)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def dump_job():
    """The daily PostgreSQL job's dump with its integrity and verified_recently checks."""
    job = defs.resolve_job_def("postgres_backup_job")
    return job.get_subset(asset_selection={LOGICAL_DUMP_KEY}, asset_check_selection={INTEGRITY, VERIFIED})


def test_a_refused_backfill_is_clear_keeps_checks_green_alerts_once_and_notes_each_partition(resources, webhook, on_time_day):
    healthy_day = on_time_day.isoformat()
    instance = DagsterInstance.ephemeral()
    job = dump_job()
    healthy = job.execute_in_process(partition_key=healthy_day, resources=resources, instance=instance)
    assert {e.check_name: e.passed for e in healthy.get_asset_check_evaluations()} == {
        "dump_integrity": True,
        VERIFIED_RECENTLY: True,
    }

    refused = []
    for day in PAST:
        result = job.execute_in_process(
            partition_key=day, resources=resources, instance=instance, tags={"dagster/backfill": BACKFILL}, raise_on_error=False
        )
        assert not result.success
        refused.append(result)

    for day, result in zip(PAST, refused, strict=True):
        [failure] = result.get_step_failure_events()
        data = failure.step_failure_data
        description = data.user_failure_data.description
        # one paragraph: the reason, then the exact run config key and value that allow a late capture
        assert f"partition {day} is a backfill" in description and "cannot be reconstructed" in description
        assert "Nothing was written" in description
        assert description.endswith(f"Run config that allows it: {ALLOW}") and "\n" not in description
        # the error the UI shows is that paragraph alone: no stack frames, no chained cause
        assert data.error.message == description and data.error.stack == [] and data.error.cause is None
        assert 'File "' not in data.error.to_string() and "Traceback" not in data.error.to_string()
        assert data.user_failure_data.metadata[ALLOW_WITH_KEY].value == ALLOW
        assert result.dagster_run.run_id and instance.get_run_by_id(result.dagster_run.run_id).tags[REFUSED_TAG] == "true"

        # no failed check evaluation: each check carries its previous pass over, saying it did not run
        evaluations = {e.check_name: e for e in stored_evaluations(instance, result.dagster_run.run_id)}
        assert sorted(evaluations) == ["dump_integrity", VERIFIED_RECENTLY]
        for evaluation in evaluations.values():
            assert evaluation.passed and evaluation.description.startswith(f"Not run: partition {day} was refused")
            assert evaluation.metadata["result_of_run"].value == healthy.dagster_run.run_id

        # the partition's own history says why it has no backup
        [observation] = instance.fetch_observations(
            AssetRecordsFilter(asset_key=LOGICAL_DUMP_KEY, asset_partitions=[day]), limit=5
        ).records
        meta = observation.asset_observation.metadata
        assert meta[REFUSAL_KEY].value == description and meta[ALLOW_WITH_KEY].value == ALLOW

    # the checks' status, as the UI resolves it, stays passed: each refused run's execution completed and
    # passed (one left PLANNED in a failed run would show "Execution failed"), and none failed anywhere
    refused_ids = {r.dagster_run.run_id for r in refused}
    for key in (INTEGRITY, VERIFIED):
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        assert [r.status for r in history if r.run_id in refused_ids] == [AssetCheckExecutionRecordStatus.SUCCEEDED] * 3
        assert AssetCheckExecutionRecordStatus.FAILED not in {r.status for r in history}
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert latest.run_id in refused_ids and latest.status == AssetCheckExecutionRecordStatus.SUCCEEDED
    # nothing was written for the refused days; the healthy dump is still there
    repo = resources["backup_repo"].repository()
    assert [b.partition for b in repo.list("postgres", "logical_dump")] == [healthy_day]

    # one alert for the backfill, naming its three partitions, the reason and the config
    alerting = AlertingResource(webhook_url=webhook.url(), webhook_allow_http=True, webhook_timeout_s=10.0)
    for result in refused:
        run_failure_alert_sensor(run_failure_context(instance, result, alerting))
    [post] = webhook.drain()
    payload = post.json()
    title = payload["blocks"][0]["text"]["text"]
    assert title == f"[auction-backup] REFUSED backfill {BACKFILL}: postgres/logical_dump (3 partition(s))"
    error = payload["blocks"][2]["text"]["text"]
    assert f"3 partition(s) of backfill {BACKFILL} were refused" in error and ", ".join(PAST) in error
    assert ALLOW in error

    # a real failure in the same backfill still alerts on its own
    good = resources["postgres"]
    wrong = PostgresResource(host=good.host, port=good.port, dbname=good.dbname, user=good.user, password="not-the-password")
    broken = job.execute_in_process(
        partition_key=healthy_day,
        resources=dict(resources, postgres=wrong),
        instance=instance,
        tags={"dagster/backfill": BACKFILL},
        raise_on_error=False,
    )
    assert not broken.success
    run_failure_alert_sensor(run_failure_context(instance, broken, alerting))
    [post] = webhook.drain()
    assert post.json()["blocks"][0]["text"]["text"] == f"[auction-backup] FAILED postgres/logical_dump {healthy_day}"

    # the run config the paragraph names, launched literally, allows the late capture
    allow = yaml.safe_load(description.rsplit("Run config that allows it: ", 1)[1])
    late = job.execute_in_process(partition_key=PAST[-1], run_config=allow, resources=resources, instance=instance)
    [mat] = late.asset_materializations_for_node("postgres__logical_dump")
    assert mat.metadata["capture"].value.startswith("LATE CAPTURE")
    assert {e.check_name: e.passed for e in late.get_asset_check_evaluations()}["dump_integrity"]


# --------------------------------------------------------------------------- a failed check stays failed

TOY = AssetKey(["toy", "dump"])


class ToyConfig(Config):
    allow_late_capture: bool = False


@asset(key=TOY, partitions_def=DailyPartitionsDefinition(start_date="2025-01-01", end_offset=0))
def toy_dump(context: AssetExecutionContext, config: ToyConfig) -> MaterializeResult:
    if context.partition_key != HEALTHY:
        reason = capture.CaptureWindowError(f"partition {context.partition_key} cannot be reconstructed. Nothing was written.")
        raise refuse(context, reason, late_capture_switch=not config.allow_late_capture)
    return MaterializeResult()


@asset_check(asset=TOY, name="integrity")
def toy_integrity() -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description="the dump is damaged")


toy_defs = Definitions(
    assets=[toy_dump],
    asset_checks=[toy_integrity],
    jobs=[define_asset_job("toy_job", AssetSelection.assets(TOY).without_checks() | AssetSelection.checks(toy_integrity))],
)


def test_a_refusal_never_turns_a_failing_check_green_and_alone_it_is_one_warning(webhook):
    instance = DagsterInstance.ephemeral()
    job = toy_defs.resolve_job_def("toy_job")
    damaged = job.execute_in_process(partition_key=HEALTHY, instance=instance, raise_on_error=False)
    assert [e.passed for e in damaged.get_asset_check_evaluations()] == [False]

    refused = job.execute_in_process(partition_key=PAST[0], instance=instance, raise_on_error=False)
    assert not refused.success
    # the previous result failed: nothing is carried over, the check is not reported passed
    assert stored_evaluations(instance, refused.dagster_run.run_id) == []
    [failure] = refused.get_step_failure_events()
    allow = "ops: {toy__dump: {config: {allow_late_capture: true}}}"
    assert failure.step_failure_data.user_failure_data.description == (
        f"partition {PAST[0]} cannot be reconstructed. Nothing was written. Run config that allows it: {allow}"
    )

    # a refusal outside any backfill: one REFUSED warning with the paragraph, not a FAILED error
    alerting = AlertingResource(webhook_url=webhook.url(), webhook_allow_http=True, webhook_timeout_s=10.0)
    run_failure_alert_sensor(run_failure_context(instance, refused, alerting))
    [post] = webhook.drain()
    payload = post.json()
    assert payload["blocks"][0]["text"]["text"] == f"[auction-backup] REFUSED toy/dump {PAST[0]}"
    assert payload["blocks"][1]["fields"][0]["text"] == "*Severity*\nWARN"
    assert allow in payload["blocks"][2]["text"]["text"]

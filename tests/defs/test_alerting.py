"""The alert sensors through a real (temporary, SQLite) Dagster instance and real local sinks.

Needs no external service: failing runs and check evaluations are produced by tiny jobs run
in process; alerts go to an HTTP server and an SMTP server on loopback ports started here.
The instance is `DagsterInstance.local_temp()`: the run-sharded SQLite storage of `dagster dev`,
where the cross-run event query the check sensor must avoid raises.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    EnvVar,
    Failure,
    MaterializeResult,
    asset,
    asset_check,
    build_run_status_sensor_context,
    build_sensor_context,
    define_asset_job,
    materialize,
)

from auction_backup_pipelines.defs.alerting import sensors as alerts
from auction_backup_pipelines.defs.alerting.resources import AlertingResource, build_alerting_resource
from auction_backup_pipelines.defs.alerting.sensors import build_check_failure_alert_sensor, run_failure_alert_sensor
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings import load_settings
from tests.ops.test_notify import (
    PASSWORD,
    QUERY_TOKEN,
    SMTP_TLS,
    TOKEN,
    WAIT_S,
    SmtpServer,
    WebhookServer,
    assert_no_secret,
    closed_port,
)

DAY = "2025-06-30"  # a fixed past day: the partitions below exist whatever the clock says
DAGSTER_URL = "http://dagster.test:3000"
DUMP = AssetKey(["postgres", "logical_dump"])
BASE = AssetKey(["postgres", "base_backup"])
DUMP_ERROR = 'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused'
parts = DailyPartitionsDefinition(start_date="2025-01-01", timezone="UTC", end_offset=0)


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as inst:
        yield inst


def make_alerting(webhook: WebhookServer, smtp: SmtpServer, **overrides) -> AlertingResource:
    # A new resource per variant: model_copy(update=...) does not reach a ConfigurableResource's config.
    fields = dict(
        webhook_url=webhook.url(),
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_from="auction-backup@example.test",
        smtp_to=["oncall@example.test"],
        smtp_user="alerts",
        smtp_password=PASSWORD,
        **SMTP_TLS,
        webhook_allow_http=True,  # the loopback test receiver
        webhook_timeout_s=WAIT_S,
        smtp_timeout_s=WAIT_S,
        dagster_url=DAGSTER_URL,
    )
    return AlertingResource(**{**fields, **overrides})


@pytest.fixture
def alerting(webhook, smtp):
    return make_alerting(webhook, smtp)


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]):
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(f"{record.levelname} {record.getMessage()}")


def capture(logger: logging.Logger, sink: list[str]) -> list[str]:
    """Sensor context loggers do not propagate to the root logger (caplog): hook them directly."""
    logger.addHandler(_ListHandler(sink))
    return sink


@pytest.fixture(autouse=True)
def _fresh_tick_log():
    TICK_LOG.clear()
    yield
    TICK_LOG.clear()


def run_failure_context(instance, result, alerting: AlertingResource):
    """What the daemon hands run_failure_alert_sensor for the failed run of `result`."""
    return build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerting": alerting},
    ).for_run_failure()


def received(webhook: WebhookServer, smtp: SmtpServer) -> tuple[dict, str, str]:
    """Exactly one POST and one email: (payload, subject, body)."""
    payload = webhook.next_post().json()
    mail = smtp.next_mail().message
    return payload, mail["Subject"], mail.get_content().replace("\r\n", "\n")


def nothing_more(webhook: WebhookServer, smtp: SmtpServer) -> None:
    # Delivery is synchronous: whatever a tick sent has arrived when the tick returns.
    assert webhook.drain() == []
    assert smtp.empty()


def fields_of(payload: dict) -> dict[str, str]:
    return {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1] for f in payload["blocks"][1]["fields"]}


# --------------------------------------------------------------------------- run failures


@asset(key=DUMP, partitions_def=parts)
def failing_dump() -> MaterializeResult:
    raise Failure(description=DUMP_ERROR)


@asset(key=BASE, partitions_def=parts)
def fine_base_backup() -> MaterializeResult:
    return MaterializeResult()


backup_job = define_asset_job("tiny_backup_job", selection=[DUMP, BASE], tags={"auction_backup/system": "postgres"})
run_defs = Definitions(assets=[failing_dump, fine_base_backup], jobs=[backup_job], sensors=[run_failure_alert_sensor])


def failed_run(instance):
    result = run_defs.resolve_job_def("tiny_backup_job").execute_in_process(
        instance=instance, partition_key=DAY, raise_on_error=False
    )
    assert not result.success
    return result


def test_run_failure_sensor_alerts_each_sink_with_the_failed_asset(instance, webhook, smtp, alerting, caplog):
    caplog.set_level(logging.DEBUG)
    result = failed_run(instance)
    run_id = result.dagster_run.run_id
    context = run_failure_context(instance, result, alerting)
    logged = capture(context.log, [])

    run_failure_alert_sensor(context)

    payload, subject, body = received(webhook, smtp)
    nothing_more(webhook, smtp)
    assert any(line.startswith(f"ERROR ALERT {subject}") for line in logged)
    assert any("alert delivered via webhook http://127.0.0.1:" in line for line in logged)
    title = f"[auction-backup] FAILED postgres/logical_dump {DAY}"
    assert subject == title
    assert payload["blocks"][0]["text"]["text"] == title
    fields = fields_of(payload)
    # Only the step that failed: base_backup succeeded in the same run.
    assert (fields["Asset"], fields["Partition"], fields["System"]) == ("postgres/logical_dump", DAY, "postgres")
    assert (fields["Job"], fields["Run"]) == ("tiny_backup_job", run_id)
    assert DUMP_ERROR in payload["blocks"][2]["text"]["text"]
    assert f"<{DAGSTER_URL}/runs/{run_id}|" in payload["text"]
    assert f"Link:      {DAGSTER_URL}/runs/{run_id}" in body
    assert "Asset:     postgres/logical_dump\n" in body and f"Partition: {DAY}" in body and DUMP_ERROR in body
    assert_no_secret(caplog.text)


def test_run_failure_sensor_through_its_cursor_like_the_daemon(instance, webhook, smtp, alerting):
    """evaluate_tick runs Dagster's own loop: cursor set on the first tick, then one alert per failed run."""
    context = build_sensor_context(instance=instance, cursor=None, resources={"alerting": alerting}, definitions=run_defs)
    first = run_failure_alert_sensor.evaluate_tick(context)
    failed_run(instance)

    second = run_failure_alert_sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=first.cursor, resources={"alerting": alerting}, definitions=run_defs)
    )
    payload, subject, _ = received(webhook, smtp)
    assert subject == f"[auction-backup] FAILED postgres/logical_dump {DAY}"
    assert len(second.dagster_run_reactions) == 1 and second.dagster_run_reactions[0].error is None

    run_failure_alert_sensor.evaluate_tick(
        build_sensor_context(instance=instance, cursor=second.cursor, resources={"alerting": alerting}, definitions=run_defs)
    )
    nothing_more(webhook, smtp)


def test_run_failure_of_an_op_job_names_the_op_and_the_root_cause(instance, webhook, smtp, alerting):
    from dagster import job, op

    @op
    def restore_postgres_dump():
        raise RuntimeError("target database auction_restore is not empty")

    @job(tags={"auction_backup/system": "postgres"})
    def tiny_restore_job():
        restore_postgres_dump()

    result = tiny_restore_job.execute_in_process(instance=instance, raise_on_error=False)
    context = run_failure_context(instance, result, alerting)

    run_failure_alert_sensor(context)

    payload, subject, body = received(webhook, smtp)
    assert subject == "[auction-backup] FAILED restore_postgres_dump"
    assert fields_of(payload)["System"] == "postgres"
    assert "RuntimeError: target database auction_restore is not empty" in body


def test_a_check_that_crashes_fails_the_run_and_is_named_in_the_alert(instance, webhook, smtp, alerting):
    @asset(key=DUMP)
    def fine_dump() -> MaterializeResult:
        return MaterializeResult()

    @asset_check(asset=DUMP, name="restore_verified")
    def crashing_check() -> AssetCheckResult:
        raise OSError("scratch database auction_verify: disk full")

    result = materialize([fine_dump, crashing_check], instance=instance, raise_on_error=False)
    assert not result.success
    context = run_failure_context(instance, result, alerting)

    run_failure_alert_sensor(context)

    payload, subject, body = received(webhook, smtp)
    assert subject == "[auction-backup] FAILED postgres/logical_dump"
    assert (fields_of(payload)["Asset"], fields_of(payload)["Check"]) == ("postgres/logical_dump", "restore_verified")
    assert "OSError: scratch database auction_verify: disk full" in body


# --------------------------------------------------------------------------- check failures


@asset(key=DUMP)
def dump() -> MaterializeResult:
    return MaterializeResult()


@asset_check(asset=DUMP, name="dump_integrity")
def integrity_fails() -> AssetCheckResult:
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.ERROR,
        description="sha256 of dump.pgdump.zst does not match its manifest",
        metadata={"partition": DAY, "backup_id": "b-1"},
    )


@asset_check(asset=DUMP, name="restore_verified")
def restore_passes() -> AssetCheckResult:
    return AssetCheckResult(passed=True, metadata={"partition": DAY})


@asset_check(asset=DUMP, name="newest_is_recent")
def recency_warns() -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, description="only a warning")


check_failure_alert_sensor = build_check_failure_alert_sensor(60)
check_defs = Definitions(
    assets=[dump], asset_checks=[integrity_fails, restore_passes, recency_warns], sensors=[check_failure_alert_sensor]
)


TICK_LOG: list[str] = []


def tick(instance, alerting, cursor, defs=check_defs):
    """One evaluation of the check sensor; what it logs (the tick log in the UI) lands in TICK_LOG."""
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"alerting": alerting}, definitions=defs)
    capture(context.log, TICK_LOG)
    reason = check_failure_alert_sensor(context)
    return context.cursor, reason


def runless_evaluation(instance, passed: bool, description: str = "the WAL archive lags 900 s") -> None:
    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=DUMP, check_name="dump_integrity", passed=passed, severity=AssetCheckSeverity.ERROR, description=description
        )
    )


def test_check_failure_sensor_alerts_once_per_failed_error_check(instance, webhook, smtp, alerting, caplog):
    caplog.set_level(logging.DEBUG)
    result = materialize([dump, integrity_fails, restore_passes, recency_warns], instance=instance)
    run_id = result.dagster_run.run_id

    cursor, reason = tick(instance, alerting, None)

    payload, subject, body = received(webhook, smtp)
    nothing_more(webhook, smtp)  # the passing check and the WARN are not alerted
    assert subject == f"[auction-backup] CHECK FAILED postgres/logical_dump dump_integrity {DAY}"
    fields = fields_of(payload)
    assert (fields["Asset"], fields["Check"], fields["Partition"], fields["Run"]) == (
        "postgres/logical_dump",
        "dump_integrity",
        DAY,
        run_id,
    )
    assert "sha256 of dump.pgdump.zst does not match its manifest" in payload["blocks"][2]["text"]["text"]
    assert f"<{DAGSTER_URL}/runs/{run_id}|" in payload["text"]
    assert "Check:     dump_integrity" in body and f"Partition: {DAY}" in body
    assert "alerted 1 check failure(s)" in reason.skip_message
    assert len([line for line in TICK_LOG if line.startswith("INFO alert delivered via")]) == 2

    cursor2, reason2 = tick(instance, alerting, cursor)
    nothing_more(webhook, smtp)
    assert "no new ERROR check failure" in reason2.skip_message
    assert json.loads(cursor2)["checks"]["postgres/logical_dump:dump_integrity"]["id"] >= 1
    assert_no_secret(caplog.text + "\n".join(TICK_LOG))


def test_check_recorded_outside_a_run_links_to_the_asset_checks(instance, webhook, smtp, alerting):
    runless_evaluation(instance, passed=False)

    tick(instance, alerting, None)

    payload, subject, body = received(webhook, smtp)
    assert subject == "[auction-backup] CHECK FAILED postgres/logical_dump dump_integrity"
    assert f"<{DAGSTER_URL}/assets/postgres/logical_dump?view=checks|" in payload["text"]
    assert "Run" not in fields_of(payload)
    assert "the WAL archive lags 900 s" in body


def test_a_check_that_keeps_failing_is_alerted_once_per_episode(instance, webhook, smtp, alerting):
    runless_evaluation(instance, passed=False)
    cursor, _ = tick(instance, alerting, None)
    received(webhook, smtp)

    runless_evaluation(instance, passed=False, description="still lagging")  # e.g. the WAL sensor, 5 min later
    cursor, reason = tick(instance, alerting, cursor)
    nothing_more(webhook, smtp)

    runless_evaluation(instance, passed=True)
    runless_evaluation(instance, passed=False, description="lagging again")
    cursor, _ = tick(instance, alerting, cursor)
    payload, _, _ = received(webhook, smtp)
    assert "lagging again" in payload["blocks"][2]["text"]["text"]
    nothing_more(webhook, smtp)

    every_time = make_alerting(webhook, smtp, check_repeat_after_s=0)
    runless_evaluation(instance, passed=False, description="and again")
    tick(instance, every_time, cursor)
    assert "and again" in received(webhook, smtp)[0]["blocks"][2]["text"]["text"]


RUN_WAIT_S = 120


def test_a_long_check_completing_after_a_newer_evaluation_is_still_alerted(instance, webhook, smtp, alerting):
    """Execution rows get their id when planned: the weekly restore check may finish after a newer row."""
    started, release = threading.Event(), threading.Event()

    @asset_check(asset=DUMP, name="dump_integrity")
    def slow_integrity() -> AssetCheckResult:
        started.set()
        assert release.wait(RUN_WAIT_S)
        return AssetCheckResult(
            passed=False, description="restore verification failed: row counts differ", metadata={"partition": DAY}
        )

    defs = Definitions(assets=[dump], asset_checks=[slow_integrity])
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("result", materialize([dump, slow_integrity], instance=instance)))
    runner.start()
    try:
        assert started.wait(WAIT_S), "the check never started"
        runless_evaluation(instance, passed=False, description="newer, finished first")
        cursor, _ = tick(instance, alerting, None, defs)
        assert "newer, finished first" in received(webhook, smtp)[0]["blocks"][2]["text"]["text"]
        assert json.loads(cursor)["checks"]["postgres/logical_dump:dump_integrity"]["pending"], "the running check is pending"
    finally:
        release.set()
        # the run's own teardown (log capture) took over 10 s in a fresh clone on a busy machine
        runner.join(RUN_WAIT_S)
    assert not runner.is_alive(), f"the run did not end within {RUN_WAIT_S} s"
    assert outcome["result"].success

    cursor, _ = tick(instance, alerting, cursor, defs)
    payload, subject, _ = received(webhook, smtp)
    assert subject == f"[auction-backup] CHECK FAILED postgres/logical_dump dump_integrity {DAY}"
    assert "row counts differ" in payload["blocks"][2]["text"]["text"]
    assert json.loads(cursor)["checks"]["postgres/logical_dump:dump_integrity"]["pending"] == []
    tick(instance, alerting, cursor, defs)
    nothing_more(webhook, smtp)


def test_out_of_time_the_tick_leaves_the_rest_for_the_next_one(instance, webhook, smtp, alerting):
    runless_evaluation(instance, passed=False)
    no_time = make_alerting(webhook, smtp, tick_budget_s=0.0)

    cursor, reason = tick(instance, no_time, None)
    nothing_more(webhook, smtp)
    assert "no new" in reason.skip_message

    tick(instance, alerting, cursor)
    received(webhook, smtp)


def test_a_tick_never_raises_when_sinks_fail_or_are_misconfigured(instance, webhook, smtp, alerting, caplog):
    caplog.set_level(logging.DEBUG)
    runless_evaluation(instance, passed=False)
    down = make_alerting(webhook, smtp, webhook_url=f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}?token={QUERY_TOKEN}")

    cursor, reason = tick(instance, down, None)
    assert "1 delivery failure(s)" in reason.skip_message
    smtp.next_mail()  # the email went out anyway

    runless_evaluation(instance, passed=True)
    runless_evaluation(instance, passed=False)
    misconfigured = make_alerting(webhook, smtp, smtp_from="")
    cursor2, reason2 = tick(instance, misconfigured, cursor)
    assert cursor2 != cursor  # the cursor moved on: the failure is not alerted again and again
    log = "\n".join(TICK_LOG)
    assert "alerting is misconfigured, alert only logged: SMTP sender (ALERT_SMTP_FROM) is empty" in log
    assert "ALERT [auction-backup] CHECK FAILED" in log and "alert NOT delivered: webhook http://127.0.0.1:" in log
    nothing_more(webhook, smtp)
    assert_no_secret(caplog.text + log)


def test_first_tick_ignores_failures_older_than_the_look_back(instance):
    runless_evaluation(instance, passed=False)
    [record] = instance.event_log_storage.get_asset_check_execution_history(AssetCheckKey(DUMP, "dump_integrity"), limit=5)
    sent = []
    resource = AlertingResource(check_lookback_s=3600)
    later = record.event.timestamp + 7200

    state = alerts.scan_check([record], None, later, resource, sent.append, lambda: True, logging.getLogger())
    assert sent == [] and state["id"] == record.id

    state = alerts.scan_check(
        [record], None, record.event.timestamp + 60, resource, sent.append, lambda: True, logging.getLogger()
    )
    assert len(sent) == 1


# --------------------------------------------------------------------------- wiring


def test_default_resource_binds_secrets_with_envvar_only_when_set():
    bare = build_alerting_resource(load_settings({}))
    assert bare.webhook_url == "" and bare.smtp_password == "" and bare.sinks() == []
    assert bare.dagster_url == "http://127.0.0.1:3000"

    bound = build_alerting_resource(
        load_settings(
            {
                "ALERT_WEBHOOK_URL": f"https://hooks.example.test/{TOKEN}",
                "ALERT_SMTP_HOST": "mail.example.test",
                "ALERT_SMTP_PORT": "2525",
                "ALERT_SMTP_FROM": "backup@example.test",
                "ALERT_SMTP_TO": "a@example.test,b@example.test",
                "ALERT_SMTP_USER": "alerts",
                "ALERT_SMTP_PASSWORD": PASSWORD,
                "ALERT_SMTP_TLS": "starttls",
                "DAGSTER_PORT": "3100",
                "ALERT_CHECK_REPEAT_S": "0",
            }
        )
    )
    assert bound.webhook_url == EnvVar("ALERT_WEBHOOK_URL") and bound.smtp_password == EnvVar("ALERT_SMTP_PASSWORD")
    assert TOKEN not in repr(bound) and PASSWORD not in repr(bound)
    assert (bound.smtp_host, bound.smtp_port, bound.smtp_to) == ("mail.example.test", 2525, ["a@example.test", "b@example.test"])
    assert bound.dagster_url == "http://127.0.0.1:3100" and bound.check_repeat_after_s == 0


def test_the_sensors_load_in_a_definitions_with_the_resource():
    defs = Definitions(
        assets=[dump],
        asset_checks=[integrity_fails],
        sensors=[run_failure_alert_sensor, check_failure_alert_sensor],
        resources={"alerting": build_alerting_resource(load_settings({}))},
    )
    Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert repo.get_sensor_def("run_failure_alert_sensor").default_status.value == "RUNNING"
    assert repo.get_sensor_def("check_failure_alert_sensor").minimum_interval_seconds == 60


def test_check_sensor_interval_is_validated():
    assert load_settings({"ALERT_CHECK_SENSOR_INTERVAL_S": "120"}).alerting.check_sensor_interval_s == 120
    with pytest.raises(ConfigurationError, match="ALERT_CHECK_SENSOR_INTERVAL_S"):
        load_settings({"ALERT_CHECK_SENSOR_INTERVAL_S": "5"})

"""Recovery point in the UI: `backed_up_on_time` on every daily backup asset, evaluated by
`backup_freshness_sensor`, alerted by `check_failure_alert_sensor`; and an honest first day
(no freshness or `verified_recently` failure that only says the install is new).

Each test has its own temporary Dagster instance; the code location is the one Dagster loads.
"""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
from dagster import (
    AssetCheckKey,
    AssetMaterialization,
    AssetSelection,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    build_sensor_context,
    define_asset_job,
)

from auction_backup_pipelines.defs.freshness.checks import CHECK_NAME, WATCHING_SINCE_KEY, Target, evaluate
from auction_backup_pipelines.defs.freshness.definitions import backup_targets
from auction_backup_pipelines.defs.shared.keys import LOGICAL_DUMP_KEY, REDIS_SNAPSHOT_KEY
from auction_backup_pipelines.defs.verification.freshness import verified_recently_check
from auction_backup_pipelines.ops.restore_checks import DUMP_RESTORES
from auction_backup_pipelines.policy.backup_deadlines import due_partition
from tests.dagster_defs import SETTINGS, defs
from tests.defs.test_alerting import fields_of, make_alerting, nothing_more, received

GRACE = dt.timedelta(hours=2)
FIRST = dt.date(2026, 11, 1)
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def instance(tmp_path):
    with DagsterInstance.local_temp(tempdir=str(tmp_path)) as inst:
        yield inst


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


# --------------------------------------------------------------------------- when a day is due


def test_a_day_is_due_at_its_schedule_plus_grace():
    # PostgreSQL at 02:00: 12-01 is due from 12-02 04:00; just before, 11-30 is the one due.
    assert due_partition(at("2026-12-02 04:00"), 2, GRACE, FIRST, LONG_AGO).partition == dt.date(2026, 12, 1)
    assert due_partition(at("2026-12-02 03:59"), 2, GRACE, FIRST, LONG_AGO).partition == dt.date(2026, 11, 30)
    # Kafka at 04:00 is due two hours later than PostgreSQL.
    assert due_partition(at("2026-12-02 05:59"), 4, GRACE, FIRST, LONG_AGO).partition == dt.date(2026, 11, 30)
    due = due_partition(at("2026-12-02 06:00"), 4, GRACE, FIRST, LONG_AGO)
    assert (due.partition, due.deadline) == (dt.date(2026, 12, 1), at("2026-12-02 06:00"))


def test_nothing_is_due_before_the_first_day_or_before_the_install_watched():
    before_first = due_partition(at("2026-11-02 03:00"), 2, GRACE, FIRST, LONG_AGO)
    assert before_first.partition is None and "the first day, 2026-11-01, is due by 2026-11-02T04:00:00Z" in before_first.reason
    # Installed 12-02 at 10:00: 12-01's backup was scheduled at 02:00, before anything ran here.
    new_install = due_partition(at("2026-12-02 12:00"), 2, GRACE, FIRST, at("2026-12-02 10:00"))
    assert new_install.partition is None
    assert "2026-12-02 is due by 2026-12-03T04:00:00Z" in new_install.reason
    # The next morning the install is responsible for 12-02.
    assert due_partition(at("2026-12-03 04:00"), 2, GRACE, FIRST, at("2026-12-02 10:00")).partition == dt.date(2026, 12, 2)


# --------------------------------------------------------------------------- the check


def test_check_fails_for_a_missing_partition_and_passes_once_it_exists(instance):
    instance.daemon_cursor_storage.set_cursor_values({WATCHING_SINCE_KEY: LONG_AGO.isoformat()})
    target = Target(REDIS_SNAPSHOT_KEY, "redis_backup_job_schedule", 3)
    now = at("2026-12-02 08:00")

    missing = evaluate(instance, target, GRACE, FIRST, now)
    assert not missing.passed
    assert missing.description.startswith("no backup of 2026-12-01 by its deadline 2026-12-02T05:00:00Z (overdue 3.0 h)")
    assert "redis_backup_job_schedule" in missing.description
    assert missing.metadata["partition"] == "2026-12-01"
    assert missing.metadata["overdue_seconds"].value == 10800.0

    # Another day's backup does not make this one present.
    instance.report_runless_asset_event(AssetMaterialization(REDIS_SNAPSHOT_KEY, partition="2026-11-30"))
    assert not evaluate(instance, target, GRACE, FIRST, now).passed
    instance.report_runless_asset_event(AssetMaterialization(REDIS_SNAPSHOT_KEY, partition="2026-12-01"))
    present = evaluate(instance, target, GRACE, FIRST, now)
    assert present.passed and present.description.startswith("2026-12-01 backed up at ")


def test_every_daily_backup_asset_has_the_check_and_the_sensor_runs_by_default():
    checks = {k for k in defs.resolve_asset_graph().asset_check_keys if k.name == CHECK_NAME}
    assert checks == {t.check_key for t in backup_targets(SETTINGS.kafka.topics)}
    assert AssetCheckKey(LOGICAL_DUMP_KEY, CHECK_NAME) in checks and len(checks) == 3 + len(SETTINGS.kafka.topics)
    sensor = defs.resolve_sensor_def("backup_freshness_sensor")
    assert sensor.default_status.value == "RUNNING" and sensor.description
    schedules = {s.name for s in defs.get_repository_def().schedule_defs}
    assert {t.schedule for t in backup_targets(SETTINGS.kafka.topics)} <= schedules


# --------------------------------------------------------------------------- sensor and alert


def freshness_tick(instance):
    """One tick of the freshness sensor, its check evaluations stored as the daemon stores them."""
    context = build_sensor_context(instance=instance, definitions=defs)
    result = defs.resolve_sensor_def("backup_freshness_sensor")(context)
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def alert_tick(instance, alerting, cursor=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources={"alerting": alerting}, definitions=defs)
    reason = defs.resolve_sensor_def("check_failure_alert_sensor")(context)
    return context.cursor, reason


def due_day(target: Target, now: dt.datetime) -> str:
    due = due_partition(now, target.hour, SETTINGS.verification.deadline_grace, FIRST, LONG_AGO)
    assert due.partition is not None
    return due.partition.isoformat()


def back_up(instance, target: Target, now: dt.datetime) -> None:
    """The day due at `now` (the sensor's frozen clock), as its run would record it."""
    instance.report_runless_asset_event(AssetMaterialization(target.asset_key, partition=due_day(target, now)))


class _FrozenClock(dt.datetime):
    frozen: dt.datetime

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return cls.frozen if tz is None else cls.frozen.astimezone(tz)


@pytest.fixture
def frozen_now(monkeypatch) -> dt.datetime:
    """One instant for the test and every tick of the sensor: a deadline (04:00, 05:00, 06:00 UTC
    with the default grace) passing mid-test would otherwise move the day that is due."""
    from auction_backup_pipelines.defs.freshness import sensors

    _FrozenClock.frozen = dt.datetime.now(dt.UTC)
    monkeypatch.setattr(sensors, "dt", SimpleNamespace(datetime=_FrozenClock, UTC=dt.UTC))  # it reads dt only for now()
    return _FrozenClock.frozen


def recorded(instance, key: AssetCheckKey) -> list:
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
    return [r.event.dagster_event.event_specific_data for r in history if r.event is not None]


def test_a_missed_day_turns_the_asset_stale_and_is_alerted_once(instance, webhook, smtp, frozen_now):
    """The schedule of the Redis snapshot was off: every other asset has its due day, the snapshot not."""
    instance.daemon_cursor_storage.set_cursor_values({WATCHING_SINCE_KEY: LONG_AGO.isoformat()})
    targets = backup_targets(SETTINGS.kafka.topics)
    for target in targets:
        if target.asset_key != REDIS_SNAPSHOT_KEY:
            back_up(instance, target, frozen_now)
    stale = next(t for t in targets if t.asset_key == REDIS_SNAPSHOT_KEY)

    result = freshness_tick(instance)
    assert len(result.asset_events) == len(targets)  # first evaluation of each check
    assert "overdue: redis/snapshot;" in result.skip_reason.skip_message
    (evaluation,) = recorded(instance, stale.check_key)
    assert not evaluation.passed and evaluation.severity.value == "ERROR"
    missing_day = evaluation.metadata["partition"].value

    alerting = make_alerting(webhook, smtp)
    cursor, reason = alert_tick(instance, alerting)
    payload, subject, body = received(webhook, smtp)
    nothing_more(webhook, smtp)  # one alert: the passing checks are not alerted
    assert subject == f"[auction-backup] CHECK FAILED redis/snapshot {CHECK_NAME} {missing_day}"
    assert fields_of(payload)["Check"] == CHECK_NAME
    assert "redis_backup_job_schedule" in body
    assert "alerted 1 check failure(s)" in reason.skip_message

    # Unchanged: the sensor records nothing more, so nothing is alerted again.
    again = freshness_tick(instance)
    assert again.asset_events == [] and len(recorded(instance, stale.check_key)) == 1
    cursor, _ = alert_tick(instance, alerting, cursor)
    nothing_more(webhook, smtp)

    # The missing day is backed up: the check passes on the next tick.
    back_up(instance, stale, frozen_now)
    healed = freshness_tick(instance)
    assert [e.passed for e in healed.asset_events] == [True]
    assert recorded(instance, stale.check_key)[0].passed
    alert_tick(instance, alerting, cursor)
    nothing_more(webhook, smtp)


def test_a_fresh_install_is_not_stale_and_records_when_it_started_watching(instance, webhook, smtp):
    before = dt.datetime.now(dt.UTC)
    result = freshness_tick(instance)
    since = instance.daemon_cursor_storage.get_cursor_values({WATCHING_SINCE_KEY})[WATCHING_SINCE_KEY]
    assert dt.datetime.fromisoformat(since) >= before
    assert all(e.passed for e in result.asset_events) and result.asset_events
    assert all("no partition due yet" in (e.description or "") for e in result.asset_events)
    alert_tick(instance, make_alerting(webhook, smtp))
    nothing_more(webhook, smtp)


# --------------------------------------------------------------------------- verified_recently on day one


def run_check(instance, check_def, key) -> object:
    """Execute one `verified_recently` check in a run, as the daily job does; its evaluation."""
    job = define_asset_job("only_verified_recently", selection=AssetSelection.checks(AssetCheckKey(key, "verified_recently")))
    # The asset as a spec: the check reads only the instance, not the backup the asset would take.
    run = (
        Definitions(assets=[AssetSpec(key)], asset_checks=[check_def], jobs=[job])
        .resolve_job_def(job.name)
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert run.success
    (evaluation,) = [e.event_specific_data for e in run.all_events if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
    return evaluation


def test_verified_recently_passes_while_nothing_is_old_enough_to_need_verification(instance):
    check_def = verified_recently_check(LOGICAL_DUMP_KEY, DUMP_RESTORES, SETTINGS.verification.max_age_days)
    evaluation = run_check(instance, check_def, LOGICAL_DUMP_KEY)
    assert evaluation.passed
    assert evaluation.description.startswith("no backup old enough to need verification yet (none was taken yet")

    instance.report_runless_asset_event(AssetMaterialization(LOGICAL_DUMP_KEY, partition="2026-12-01"))
    evaluation = run_check(instance, check_def, LOGICAL_DUMP_KEY)
    assert evaluation.passed and "the first was taken " in evaluation.description


def test_verified_recently_warns_once_the_first_backup_is_older_than_the_maximum_age(instance):
    instance.report_runless_asset_event(AssetMaterialization(LOGICAL_DUMP_KEY, partition="2026-12-01"))
    # A maximum age of a tenth of a millisecond: the backup above is already older when the check runs.
    evaluation = run_check(instance, verified_recently_check(LOGICAL_DUMP_KEY, DUMP_RESTORES, 1e-9), LOGICAL_DUMP_KEY)
    assert not evaluation.passed and evaluation.severity.value == "WARN"
    assert "never succeeded although backups exist since" in evaluation.description

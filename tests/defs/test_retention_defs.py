"""The retention sensor and cleanup job through a real (ephemeral) Dagster instance.

Needs no external service: the repository is a temporary folder and the clock is fixed.
"""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import AssetKey, DagsterInstance, Definitions, build_sensor_context

from auction_backup_pipelines.defs.retention import jobs as ret
from auction_backup_pipelines.defs.retention.sensors import build_retention_sensor
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.storage import LocalBackend
from auction_backup_pipelines.settings import load_settings

NOW = dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC)
DAYS = [dt.date(2026, 12, 9) - dt.timedelta(days=i) for i in range(40)]  # 2026-10-31 .. 2026-12-09
LAST_WEEK = {f"2026-12-0{d}" for d in range(3, 10)}
# postgres 7/4/12: the 7 newest days; newest of ISO weeks 50 (12-09), 49 (12-06), 48 (11-29),
# 47 (11-22); newest of months Dec (12-09), Nov (11-30), Oct (10-31).
KEEP_POSTGRES = LAST_WEEK | {"2026-11-29", "2026-11-22", "2026-11-30", "2026-10-31"}
KEEP_REDIS = LAST_WEEK  # daily 7
ALL = {d.isoformat() for d in DAYS}


@pytest.fixture
def clock(monkeypatch):
    monkeypatch.delenv("RETENTION_DRY_RUN", raising=False)
    now = {"t": NOW}
    monkeypatch.setattr(pruning, "utcnow", lambda: now["t"])
    return now


@pytest.fixture
def resource(tmp_path):
    return BackupRepositoryResource(root=str(tmp_path / "backups"))


def put(repo, system, artifact, day):
    with repo.begin(system, artifact, day) as w:
        with w.open_file("data.bin") as f:
            f.write(day.isoformat().encode())


@pytest.fixture
def filled(resource, clock):
    repo = resource.repository()
    for day in DAYS:
        put(repo, "postgres", "logical_dump", day)
        put(repo, "redis", "snapshot", day)
    return repo


def tick(instance, resource, dry_run=False):
    ctx = build_sensor_context(instance=instance, resources={"backup_repo": resource})
    return build_retention_sensor(3600, dry_run).evaluate_tick(ctx)


def cleanup(instance, resource, request, **kwargs):
    return ret.cleanup_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources={"backup_repo": resource}, **kwargs
    )


def days_in(repo, system, artifact):
    return {b.partition for b in repo.list(system, artifact)}


def observed(instance, asset_key):
    records = instance.fetch_observations(asset_key, limit=1000).records
    return [r.event_log_entry.asset_observation for r in records]


def test_sensor_requests_one_cleanup_run_that_deletes_exactly_the_expired(filled, resource):
    instance = DagsterInstance.ephemeral()
    first = tick(instance, resource)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    keys = request.run_config["ops"][ret.CLEANUP_OP]["config"]["backup_keys"]
    assert len(keys) == (40 - len(KEEP_POSTGRES)) + (40 - len(KEEP_REDIS)) == 62
    assert keys == sorted(keys) and request.run_config["ops"][ret.CLEANUP_OP]["config"]["dry_run"] is False
    assert request.run_key == ret.run_key_for(keys, dry_run=False)
    assert tick(instance, resource).run_requests[0].run_key == request.run_key  # same set, same key

    result = cleanup(instance, resource, request)
    assert result.success
    assert days_in(filled, "postgres", "logical_dump") == KEEP_POSTGRES
    assert days_in(filled, "redis", "snapshot") == KEEP_REDIS
    # The run page shows exactly what was asked.
    stored = instance.get_run_by_id(result.run_id).run_config
    assert stored["ops"][ret.CLEANUP_OP]["config"]["backup_keys"] == keys

    for system, artifact, kept in (("postgres", "logical_dump", KEEP_POSTGRES), ("redis", "snapshot", KEEP_REDIS)):
        obs = observed(instance, AssetKey([system, artifact]))
        assert sorted(o.partition for o in obs) == sorted(ALL - kept)
        assert {o.metadata["status"].value for o in obs} == {"deleted"}
        assert {o.metadata["reason"].value for o in obs} == {"expired"}
        assert all(o.metadata["backup_id"].value for o in obs)
    assert set(result.output_for_node(ret.CLEANUP_OP)) == {pruning.DELETED}
    [out] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = out.event_specific_data.metadata
    assert meta["deleted_count"].value == 62 and len(meta["deleted_partitions"].value) == 62

    second = tick(instance, resource)
    assert second.run_requests == [] and "nothing expired; keeping all 18 backup(s)" in second.skip_message

    # A rerun of the same request deletes nothing more and records nothing more.
    again = cleanup(instance, resource, request)
    assert again.success and set(again.output_for_node(ret.CLEANUP_OP)) == {pruning.ALREADY_GONE}
    assert len(observed(instance, AssetKey(["redis", "snapshot"]))) == 40 - len(KEEP_REDIS)


def test_next_day_expires_a_new_set_under_a_new_run_key(filled, resource, clock):
    instance = DagsterInstance.ephemeral()
    request = tick(instance, resource).run_requests[0]
    cleanup(instance, resource, request)
    clock["t"] = NOW + dt.timedelta(days=1)
    put(filled, "redis", "snapshot", dt.date(2026, 12, 10))
    [nxt] = tick(instance, resource).run_requests
    assert nxt.run_key != request.run_key
    keys = nxt.run_config["ops"][ret.CLEANUP_OP]["config"]["backup_keys"]
    assert [BackupRef.parse(k).partition_ref.key for k in keys] == ["redis/snapshot/2026-12-03"]


def test_dry_run_requests_a_report_only_run_under_its_own_key(filled, resource):
    instance = DagsterInstance.ephemeral()
    real = tick(instance, resource).run_requests[0]
    [dry] = tick(instance, resource, dry_run=True).run_requests
    assert dry.run_config["ops"][ret.CLEANUP_OP]["config"]["dry_run"] is True
    assert dry.run_key != real.run_key  # a dry run must not use up the real run's key
    result = cleanup(instance, resource, dry)
    assert result.success and set(result.output_for_node(ret.CLEANUP_OP)) == {pruning.WOULD_DELETE}
    assert days_in(filled, "redis", "snapshot") == ALL
    assert observed(instance, AssetKey(["redis", "snapshot"])) == []


def test_a_failed_deletion_fails_the_run_after_recording_the_others(filled, resource, monkeypatch):
    instance = DagsterInstance.ephemeral()
    request = tick(instance, resource).run_requests[0]
    keys = request.run_config["ops"][ret.CLEANUP_OP]["config"]["backup_keys"]
    stuck = next(k for k in keys if k.startswith("redis/"))
    original = LocalBackend.delete

    def delete(backend, key):
        if key.startswith(stuck + "/"):
            raise PermissionError(13, "Permission denied", key)
        return original(backend, key)

    monkeypatch.setattr(LocalBackend, "delete", delete)
    result = cleanup(instance, resource, request, raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    assert "1 backup(s) could not be deleted" in failure.step_failure_data.error.message
    stuck_day = BackupRef.parse(stuck).day.isoformat()
    assert days_in(filled, "redis", "snapshot") == KEEP_REDIS | {stuck_day}
    obs = observed(instance, AssetKey(["redis", "snapshot"]))
    assert len(obs) == 40 - len(KEEP_REDIS) - 1 and stuck_day not in {o.partition for o in obs}


def test_a_deleted_kafka_backup_is_observed_on_its_topic_asset(resource, clock):
    repo = resource.repository()
    for day in DAYS[:10]:
        put(repo, "kafka", "topic_export/bid-events", day)
    instance = DagsterInstance.ephemeral()
    request = tick(instance, resource).run_requests[0]
    refs = [BackupRef.parse(k) for k in request.run_config["ops"][ret.CLEANUP_OP]["config"]["backup_keys"]]
    assert [r.artifact for r in refs] == ["topic_export/bid-events"] * 3  # kafka/*: daily 7
    assert cleanup(instance, resource, request).success
    obs = observed(instance, AssetKey(["kafka", "topic_export", "bid-events"]))  # the asset defs/kafka defines
    assert sorted(o.partition for o in obs) == sorted(r.day.isoformat() for r in refs)


def test_empty_repository_skips(resource, clock):
    result = tick(DagsterInstance.ephemeral(), resource)
    assert result.run_requests == [] and result.skip_message.startswith("no backups in ")


def test_sensor_and_job_load_in_one_definitions_with_the_shared_resource(resource):
    defs = Definitions(jobs=[ret.cleanup_job], sensors=[build_retention_sensor(3600, False)], resources={"backup_repo": resource})
    Definitions.validate_loadable(defs)
    sensor = defs.resolve_sensor_def("retention_sensor")
    assert sensor.default_status.value == "RUNNING"
    assert sensor.job_name == "retention_cleanup_job"


def test_sensor_interval_and_dry_run_come_from_the_settings():
    assert load_settings({}).retention.sensor_interval_s == 3600
    assert load_settings({"RETENTION_SENSOR_INTERVAL_S": "900"}).retention.sensor_interval_s == 900
    with pytest.raises(ConfigurationError, match="RETENTION_SENSOR_INTERVAL_S"):
        load_settings({"RETENTION_SENSOR_INTERVAL_S": "hourly"})
    assert load_settings({}).retention.dry_run is False and load_settings({"RETENTION_DRY_RUN": "1"}).retention.dry_run is True
    dry = build_retention_sensor(900, True)
    assert dry.minimum_interval_seconds == 900


def test_sensor_and_job_prune_the_wal_archive_after_the_base_backups(resource, clock, monkeypatch):
    from tests.policy.test_wal_pruning import put_base, put_wal, seg, wal_left

    monkeypatch.delenv("PITR_WINDOW_DAYS", raising=False)  # the job reads the 7-day default, as the sensor
    repo = resource.repository()
    put_base(repo, "2026-10-20", 2, 3)
    failed = put_base(repo, "2026-11-05", 10, 11, verification="failed")
    put_base(repo, "2026-12-02", 20, 21)  # the base backup of the 7-day window
    for n in range(1, 30):
        put_wal(repo, seg(n))
    instance = DagsterInstance.ephemeral()
    [request] = tick(instance, resource).run_requests
    config = request.run_config["ops"][ret.CLEANUP_OP]["config"]
    assert config["backup_keys"] == [failed.prefix]
    assert config["wal_runs"] == [seg(1), f"{seg(4)}..{seg(19)}"]
    assert request.run_key == ret.run_key_for([failed.prefix, f"wal:{seg(1)}", f"wal:{seg(4)}..{seg(19)}"], dry_run=False)

    result = cleanup(instance, resource, request)
    assert result.success
    assert wal_left(repo) == {seg(2), seg(3), *(seg(n) for n in range(20, 30))}
    assert failed.prefix not in {b.prefix for b in repo.list("postgres", "base_backup")}
    [out] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert out.event_specific_data.metadata["wal_deleted_files"].value == 17
    assert tick(instance, resource).run_requests == []


def test_wal_archive_check_passes_on_holes_retention_made_and_fails_on_a_lost_segment(resource):
    from auction_backup_pipelines.defs.postgres.wal import archive_status
    from auction_backup_pipelines.postgres.wal_archive import WalArchive
    from tests.policy.test_wal_pruning import put_base, put_wal, seg

    repo = resource.repository()
    today = dt.datetime.now(dt.UTC).date()  # the check judges against the real clock
    put_base(repo, (today - dt.timedelta(days=40)).isoformat(), 2, 3)
    put_base(repo, (today - dt.timedelta(days=8)).isoformat(), 20, 21)
    for n in (2, 3, *range(20, 30)):  # as a prune leaves it: the hole 4..19 is retention's
        put_wal(repo, seg(n))
    week = dt.timedelta(days=7)
    passed, description, metadata = archive_status(repo, 300.0, week)
    assert passed, description
    assert metadata["gaps"] == "none" and metadata["pruned_by_retention"] == f"{seg(3)}..{seg(20)}"
    WalArchive(repo.backend).delete(seg(25))
    passed, description, metadata = archive_status(repo, 300.0, week)
    assert not passed and description == f"the WAL archive has 1 gap(s): {seg(24)}..{seg(26)}"

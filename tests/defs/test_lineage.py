"""The operator's view of the code location: complete lineage, integrity checks of every Kafka
export and offsite copy, offsite copies that follow their source by automation, and daily jobs
that run in one process.

The checks run against test-owned repositories (a local folder, a random prefix of the stack's
S3-compatible server) and a topic of their own, then again after one stored file was damaged.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    DagsterInstance,
    DefaultSensorStatus,
    Definitions,
    ResourceDefinition,
    evaluate_automation_conditions,
    in_process_executor,
    materialize,
    multiprocess_executor,
)

from auction_backup_pipelines.defs.kafka.assets import build_topic_export_asset
from auction_backup_pipelines.defs.kafka.checks import build_export_integrity_check
from auction_backup_pipelines.defs.offsite.assets import offsite_copy_asset
from auction_backup_pipelines.defs.offsite.automation import FOLLOWS_SOURCE, SENSOR_NAME, WAL_COPY_SCHEDULE
from auction_backup_pipelines.defs.offsite.checks import build_offsite_wal_check, offsite_integrity_check
from auction_backup_pipelines.defs.offsite.wal import build_offsite_wal_asset
from auction_backup_pipelines.defs.shared.keys import (
    BASE_BACKUP_KEY,
    LOGICAL_DUMP_KEY,
    OFFSITE_WAL_ARCHIVE_KEY,
    POSTGRES_PRIMARY_KEY,
    REDIS_SERVER_KEY,
    REDIS_SNAPSHOT_KEY,
    WAL_ARCHIVE_KEY,
    backup_keys,
    offsite_key,
)
from auction_backup_pipelines.defs.shared.resources import (
    BackupRepositoryResource,
    KafkaResource,
    OffsiteRepositoryResource,
)
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository.repository import Repository
from tests.dagster_defs import PARTITIONS, SETTINGS, defs, redis_snapshot
from tests.kafka.test_export_restore import BOOTSTRAP, Kafka, Msg, at

pytestmark = pytest.mark.integration

DAILY_JOBS = ("postgres_backup_job", "redis_backup_job", "kafka_backup_job")
YESTERDAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def parents(key: AssetKey) -> set[AssetKey]:
    return set(defs.resolve_asset_graph().get(key).parent_keys)


def offsite_resource() -> OffsiteRepositoryResource:
    env = os.environ
    return OffsiteRepositoryResource(
        bucket=env["OFFSITE_S3_BUCKET"],
        prefix=f"test-lineage-{secrets.token_hex(4)}",
        endpoint_url=env["OFFSITE_S3_ENDPOINT_URL"],
        region=env.get("OFFSITE_S3_REGION", ""),
        access_key_id=env["OFFSITE_S3_ACCESS_KEY_ID"],
        secret_access_key=env["OFFSITE_S3_SECRET_ACCESS_KEY"],
    )


def damage(repo: Repository, key: str) -> None:
    """Flip one byte of the stored object `key`, keeping its length."""
    with repo.backend.reader(key) as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0xFF
    with repo.backend.writer(key) as out:
        out.write(bytes(data))


def check_result(result, check_name: str):
    """The evaluation of `check_name` in a run. The runs that re-check after damage select only the
    check and name no partition (Dagster 1.13 refuses a partition for a run of unpartitioned checks
    alone), so the check verifies the newest backup: the damaged one."""
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == check_name]
    return evaluation


def test_every_backup_has_its_source_and_the_wal_archive_feeds_postgres_backups():
    assert parents(WAL_ARCHIVE_KEY) == {POSTGRES_PRIMARY_KEY}
    # a base backup is a starting point of recovery only with the WAL after it; a past day's
    # dump is reconstructed from both (PITR)
    assert parents(BASE_BACKUP_KEY) == {POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY}
    assert parents(LOGICAL_DUMP_KEY) == {POSTGRES_PRIMARY_KEY, WAL_ARCHIVE_KEY}
    assert parents(REDIS_SNAPSHOT_KEY) == {REDIS_SERVER_KEY}
    graph = defs.resolve_asset_graph()
    for source in (POSTGRES_PRIMARY_KEY, REDIS_SERVER_KEY, WAL_ARCHIVE_KEY):
        assert not graph.get(source).is_materializable, source  # external: Dagster never writes them
    assert SETTINGS.offsite.configured  # the stack configures an offsite store
    for key in backup_keys(SETTINGS.kafka.topics):
        assert parents(offsite_key(key)) == {key}
    assert parents(OFFSITE_WAL_ARCHIVE_KEY) == {WAL_ARCHIVE_KEY}


def test_new_integrity_checks_exist_and_run_in_the_daily_jobs():
    checks = {c.to_user_string() for c in defs.resolve_asset_graph().asset_check_keys}
    for topic in SETTINGS.kafka.topics:
        assert f"kafka/topic_export/{topic}:export_integrity" in checks
    for key in [*backup_keys(SETTINGS.kafka.topics), WAL_ARCHIVE_KEY]:
        assert f"{offsite_key(key).to_user_string()}:offsite_integrity" in checks
    steps = {name: set(defs.resolve_job_def(name).graph.node_dict) for name in DAILY_JOBS}
    for topic in SETTINGS.kafka.topics:
        assert f"kafka__topic_export__{topic}_export_integrity".replace("-", "_") in steps["kafka_backup_job"]
    for key in (LOGICAL_DUMP_KEY, BASE_BACKUP_KEY):
        assert f"offsite__{'__'.join(key.path)}_offsite_integrity" in steps["postgres_backup_job"]
    assert "offsite__redis__snapshot_offsite_integrity" in steps["redis_backup_job"]


@pytest.mark.parametrize("name", DAILY_JOBS)
def test_daily_jobs_run_in_one_process(name):
    assert defs.resolve_job_def(name).executor_def is in_process_executor


def test_every_other_job_runs_in_one_process_but_the_weekly_verification():
    repo = defs.get_repository_def()
    executors = {job.name: job.executor_def for job in repo.get_all_jobs()}
    # The asset graph's own materializations and backfills run as the implicit asset job.
    assert executors.pop("__ASSET_JOB") is in_process_executor
    assert executors.pop("weekly_verification_job") is multiprocess_executor
    assert executors and all(e is in_process_executor for e in executors.values()), executors


def test_offsite_assets_follow_their_source_and_the_sensor_runs_by_default():
    graph = defs.resolve_asset_graph()
    copies = [offsite_key(k) for k in backup_keys(SETTINGS.kafka.topics)]
    for key in copies:
        assert graph.get(key).automation_condition == FOLLOWS_SOURCE, key
    assert graph.get(OFFSITE_WAL_ARCHIVE_KEY).automation_condition == WAL_COPY_SCHEDULE
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    assert sensor.default_status == DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(graph)
    assert targeted == {*copies, OFFSITE_WAL_ARCHIVE_KEY}


def test_a_backfill_of_the_source_requests_an_offsite_copy_of_every_day_it_wrote():
    """The automation evaluation of the instance: eager() would request only the newest day."""
    copy = offsite_copy_asset(REDIS_SNAPSHOT_KEY, PARTITIONS)
    # evaluation runs nothing: the resources are only there to make the definitions complete
    unused = {k: ResourceDefinition.none_resource() for k in ("redis", "backup_repo", "offsite_repo")}
    automation_defs = Definitions(assets=[redis_snapshot, copy], resources=unused)
    instance = DagsterInstance.ephemeral()
    first = evaluate_automation_conditions(defs=automation_defs, instance=instance)
    assert first.total_requested == 0  # nothing materialized yet: nothing to copy

    days = [(YESTERDAY - dt.timedelta(days=n)).isoformat() for n in (9, 5, 0)]
    for day in days:  # a backfill of three days, as the source's materializations record it
        instance.report_runless_asset_event(AssetMaterialization(REDIS_SNAPSHOT_KEY, partition=day))
    second = evaluate_automation_conditions(defs=automation_defs, instance=instance, cursor=first.cursor)
    assert second.get_requested_partitions(copy.key) == set(days)

    # requested once: the next evaluation asks again only after a new source materialization
    third = evaluate_automation_conditions(defs=automation_defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0
    instance.report_runless_asset_event(AssetMaterialization(REDIS_SNAPSHOT_KEY, partition=days[0]))
    fourth = evaluate_automation_conditions(defs=automation_defs, instance=instance, cursor=third.cursor)
    assert fourth.get_requested_partitions(copy.key) == {days[0]}

    # a daily job that copies in the same run handled the update itself: nothing asked twice
    for key in (REDIS_SNAPSHOT_KEY, copy.key):
        instance.report_runless_asset_event(AssetMaterialization(key, partition=days[1]))
    fifth = evaluate_automation_conditions(defs=automation_defs, instance=instance, cursor=fourth.cursor)
    assert fifth.total_requested == 0


def test_kafka_export_check_passes_then_fails_on_a_damaged_export(tmp_path):
    kafka = Kafka()
    try:
        topic = kafka.topic("lineage", 2)
        msgs = [Msg(i % 2, at(YESTERDAY, 1 + i), value=f"v{i}".encode(), headers=(("h", b"x"),)) for i in range(7)]
        kafka.produce(topic, msgs)
        export, check = build_topic_export_asset(topic, PARTITIONS), build_export_integrity_check(topic)
        resources = {
            "kafka": KafkaResource(bootstrap_servers=BOOTSTRAP, topics=[topic]),
            "backup_repo": BackupRepositoryResource(root=str(tmp_path / "b")),
        }
        instance = DagsterInstance.ephemeral()
        day = YESTERDAY.isoformat()
        ok = materialize([export, check], partition_key=day, resources=resources, instance=instance)
        passed = check_result(ok, "export_integrity")
        assert passed.passed, passed.description
        assert passed.metadata["messages"].value == 7 and passed.metadata["partitions"].value == 2

        repo = resources["backup_repo"].repository()
        backup = repo.get("kafka", f"topic_export/{topic}", day)
        damage(repo, backup.object_key(backup.file(f"{topic}.records")))
        again = materialize([export, check], selection=AssetSelection.checks(check), resources=resources, instance=instance)
        failed = check_result(again, "export_integrity")
        assert not failed.passed
        assert backup.prefix in (failed.description or "")
    finally:
        kafka.cleanup()


def write_backup(repo: Repository, day: str) -> None:
    with repo.begin("redis", "snapshot", day) as writer:
        with writer.open_file("dump.rdb") as f:
            f.write(secrets.token_bytes(64 * 1024))


def test_offsite_copy_check_verifies_the_copy_and_fails_on_a_damaged_file(tmp_path):
    offsite = offsite_resource()
    resources = {"backup_repo": BackupRepositoryResource(root=str(tmp_path / "b")), "offsite_repo": offsite}
    day = YESTERDAY.isoformat()
    write_backup(resources["backup_repo"].repository(), day)
    copy, check = offsite_copy_asset(REDIS_SNAPSHOT_KEY, PARTITIONS), offsite_integrity_check(REDIS_SNAPSHOT_KEY)
    instance = DagsterInstance.ephemeral()

    ok = materialize([copy, check], partition_key=day, resources=resources, instance=instance)
    passed = check_result(ok, "offsite_integrity")
    assert passed.passed, passed.description
    dst = offsite.repository()
    there = dst.get("redis", "snapshot", day)
    # it verified the copy this run made, named by its backup_id
    assert passed.metadata["backup_id"].text == there.backup_id
    assert passed.metadata["bytes_checked"].value == there.stored_size

    damage(dst, there.object_key(there.files[0]))
    again = materialize([copy, check], selection=AssetSelection.checks(check), resources=resources, instance=instance)
    failed = check_result(again, "offsite_integrity")
    assert not failed.passed
    assert "checksum mismatch" in (failed.description or "")


def test_offsite_wal_copy_and_its_check_fail_on_a_damaged_segment(tmp_path):
    offsite = offsite_resource()
    resources = {"backup_repo": BackupRepositoryResource(root=str(tmp_path / "b")), "offsite_repo": offsite}
    src = WalArchive(resources["backup_repo"].repository().backend)
    for n in (1, 2):
        segment = tmp_path / f"00000001000000000000000{n}"
        segment.write_bytes(secrets.token_bytes(32 * 1024))
        src.push(segment)
    copy, check = build_offsite_wal_asset(), build_offsite_wal_check()
    instance = DagsterInstance.ephemeral()

    ok = materialize([copy, check], resources=resources, instance=instance)
    [mat] = ok.asset_materializations_for_node("offsite__postgres__wal_archive")
    assert mat.metadata["copied"].value == 2
    passed = check_result(ok, "offsite_integrity")
    assert passed.passed, passed.description
    assert passed.metadata["files"].value == 2 and passed.metadata["not_yet_copied"].value == 0

    dst = WalArchive(offsite.repository().backend)
    record = dst.record("000000010000000000000002")
    assert record is not None
    damage(offsite.repository(), record.stored_key)
    again = materialize([copy, check], selection=AssetSelection.checks(check), resources=resources, instance=instance)
    failed = check_result(again, "offsite_integrity")
    assert not failed.passed
    assert "000000010000000000000002" in (failed.description or "")

"""Pure decisions of the Kafka backups: what retention may have removed, how committed offsets
translate, which days a restore covers, and how the assets and schedule are wired."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import Definitions

from auction_backup_pipelines.defs.kafka.assets import build_kafka_assets
from auction_backup_pipelines.defs.kafka.checks import build_export_integrity_check, export_integrity_key
from auction_backup_pipelines.defs.kafka.jobs import build_kafka_backup_job
from auction_backup_pipelines.defs.shared.backup_jobs import daily_schedule
from auction_backup_pipelines.defs.shared.keys import topic_export_key, topic_source_key
from auction_backup_pipelines.defs.shared.partitions import daily_partitions
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, KafkaResource, PostgresResource
from auction_backup_pipelines.defs.verification.checks import build_restore_checks
from auction_backup_pipelines.defs.verification.freshness import build_verified_recently_checks
from auction_backup_pipelines.kafka.export_retention import RetentionPolicy, data_gone, time_retention_cannot_reach
from auction_backup_pipelines.kafka.records import KafkaBackupError, TopicInfo, artifact_name, topic_of
from auction_backup_pipelines.kafka.restore import day_range, settle_partition
from auction_backup_pipelines.kafka.restore_offsets import OffsetTranslator, PartitionProgress
from auction_backup_pipelines.settings import AUCTION_TOPICS

UTC = dt.UTC
RESOURCES = {"kafka": KafkaResource(), "postgres": PostgresResource(), "backup_repo": BackupRepositoryResource(root="unused")}
NOW = dt.datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
WEEK = RetentionPolicy(retention_ms=7 * 86_400_000, retention_bytes=-1, deletes=True)
FOREVER = RetentionPolicy(retention_ms=-1, retention_bytes=-1, deletes=True)
YESTERDAY, LONG_AGO = dt.date(2026, 11, 26), dt.date(2026, 11, 10)
KAFKA_TOPICS = AUCTION_TOPICS
PARTITIONS = daily_partitions("2026-11-01")
kafka_assets = build_kafka_assets(KAFKA_TOPICS, PARTITIONS)
kafka_topic_exports = [a for a in kafka_assets if hasattr(a, "op")]
KAFKA_EXPORT_KEYS = [topic_export_key(t) for t in KAFKA_TOPICS]


def test_nothing_deleted_means_nothing_gone():
    assert not data_gone(LONG_AGO, log_start=0, high=100, first_at_day=-1, policy=FOREVER, now=NOW)


def test_first_remaining_message_before_the_day_proves_it_complete():
    # log start 50, but the day starts at 70: message 50 is older than D.
    assert not data_gone(YESTERDAY, 50, 100, first_at_day=70, policy=FOREVER, now=NOW)
    # no message at or after D at all, and older ones remain: D simply had no traffic
    assert not data_gone(YESTERDAY, 50, 100, first_at_day=-1, policy=FOREVER, now=NOW)


def test_first_remaining_message_inside_the_day_means_the_start_may_be_gone():
    assert data_gone(LONG_AGO, 50, 100, first_at_day=50, policy=WEEK, now=NOW)
    assert data_gone(YESTERDAY, 50, 100, first_at_day=50, policy=FOREVER, now=NOW)  # DeleteRecords: no bound


def test_time_retention_cannot_have_reached_a_recent_day():
    assert time_retention_cannot_reach(YESTERDAY, WEEK, NOW)
    assert not data_gone(YESTERDAY, 50, 100, first_at_day=50, policy=WEEK, now=NOW)
    assert not data_gone(YESTERDAY, 80, 80, first_at_day=-1, policy=WEEK, now=NOW)  # idle partition, all expired
    assert data_gone(LONG_AGO, 80, 80, first_at_day=-1, policy=WEEK, now=NOW)


def test_size_retention_or_compaction_gives_no_bound():
    sized = RetentionPolicy(retention_ms=7 * 86_400_000, retention_bytes=1 << 30, deletes=True)
    compact = RetentionPolicy(retention_ms=7 * 86_400_000, retention_bytes=-1, deletes=False)
    assert not time_retention_cannot_reach(YESTERDAY, sized, NOW)
    assert not time_retention_cannot_reach(YESTERDAY, compact, NOW)
    # a day that starts only 30 min inside the window is within the clock margin: not trusted
    day = dt.date(2026, 11, 20)
    now = dt.datetime.combine(day, dt.time(), tzinfo=UTC) + dt.timedelta(days=7) - dt.timedelta(minutes=30)
    assert not time_retention_cannot_reach(day, WEEK, now)
    assert time_retention_cannot_reach(day, WEEK, now - dt.timedelta(hours=1))


def test_retention_policy_from_configs():
    p = RetentionPolicy.from_configs({"retention.ms": "604800000", "retention.bytes": "-1", "cleanup.policy": "compact,delete"})
    assert p == RetentionPolicy(604800000, -1, True)
    assert not RetentionPolicy.from_configs({"cleanup.policy": "compact"}).deletes


def test_offsets_translate_to_the_restored_position_of_the_same_message():
    t = OffsetTranslator({0: [7, 3, 20], 1: [0]})
    # originals 5..9 restored at 100..104, with a compaction gap: 8 is missing
    for original, restored in ((5, 100), (6, 101), (7, 102), (9, 103), (10, 104)):
        t.delivered(0, original, restored)
    assert t.translate(0, 7, end=105) == 102
    assert t.translate(0, 3, end=105) == 100  # before the restored range: its first message
    assert t.translate(0, 20, end=105) == 105  # past the last restored message: the end
    assert t.translate(1, 0, end=0) == 0  # nothing restored in that partition
    t2 = OffsetTranslator({0: [8]})
    for original, restored in ((7, 0), (9, 1)):
        t2.delivered(0, original, restored)
    assert t2.translate(0, 8, end=2) == 1  # 8 was compacted away: the next message that exists


def test_positions_map_first_and_shift_to_the_restored_offsets_later():
    # The replay maps committed offsets to positions while producing, then learns the start.
    t = OffsetTranslator({0: [7, 3, 20]})
    assert t.threshold(0) == 3 and t.threshold(1) == float("inf")
    for position, original in enumerate((5, 6, 7, 9)):
        if original >= t.threshold(0):
            t.delivered(0, original, position)
    assert t.threshold(0) == 20
    t.shift(0, 100)
    assert t.translate(0, 3, end=104) == 100 and t.translate(0, 7, end=104) == 102
    assert t.translate(0, 20, end=104) == 104


def test_sparse_delivery_reports_must_show_consecutive_offsets():
    def settle(reports: list[tuple[int, int]], want: int = 2001) -> tuple[list[str], PartitionProgress]:
        st = PartitionProgress(base=0)
        return settle_partition(0, st, reports, want, 40, OffsetTranslator({})), st

    problems, st = settle([(2000, 2050), (0, 50), (1000, 1050)])  # reports of positions 0, 1000 and the last
    assert problems == [] and (st.first_original, st.first_restored, st.last_restored, st.delivered) == (40, 50, 2050, 2001)
    problems, st = settle([(0, 50), (1000, 1049), (2000, 2049)])  # a message before 1000 is not in the topic
    assert "message 1000 was written at offset 1049, not 1050" in problems[0] and st.delivered == 0
    problems, _ = settle([(0, 50), (1000, 1051), (2000, 2051)])  # one too many: a duplicate or a foreign write
    assert "not 1050" in problems[0]
    problems, _ = settle([(0, 50), (1000, 1050)])  # the last message's report never came
    assert "missing" in problems[0]


def test_day_range():
    assert day_range("2026-11-20", "2026-11-22") == [dt.date(2026, 11, 20), dt.date(2026, 11, 21), dt.date(2026, 11, 22)]
    with pytest.raises(KafkaBackupError, match="before --from"):
        day_range("2026-11-22", "2026-11-20")


def test_topic_of_is_the_inverse_of_artifact_name():
    assert artifact_name("bid-events") == "topic_export/bid-events"
    assert topic_of(artifact_name("bid-events")) == "bid-events"
    with pytest.raises(KafkaBackupError, match="not a Kafka topic export"):
        topic_of("logical_dump")


def test_topic_json_round_trip():
    info = TopicInfo("t", 3, 1, {"retention.ms": "-1"}, {"retention.ms": "-1"}, {"g": {0: 5, 2: 9}}, {})
    back = TopicInfo.from_json(info.to_json())
    assert (back.partitions, back.configs, back.consumer_groups) == (3, {"retention.ms": "-1"}, {"g": {0: 5, 2: 9}})


def test_one_partitioned_asset_per_topic_downstream_of_its_source():
    assert len(kafka_topic_exports) == len(KAFKA_TOPICS) > 0
    defs = Definitions(assets=kafka_assets, resources=RESOURCES)
    graph = defs.resolve_asset_graph()
    for topic in KAFKA_TOPICS:
        node = graph.get(topic_export_key(topic))
        assert node.parent_keys == {topic_source_key(topic)}
        assert node.partitions_def == PARTITIONS
        assert node.group_name == "kafka" and node.kinds == {"kafka"}
        assert not graph.get(topic_source_key(topic)).is_executable
    assert {a.op.pools.pop() for a in kafka_topic_exports} == {"kafka"}


def test_backup_job_and_schedule():
    job = build_kafka_backup_job(KAFKA_TOPICS, offsite=False)
    schedule = daily_schedule(job, 4, "Kafka")
    restore_checks = build_restore_checks(KAFKA_TOPICS)[3:]  # the Kafka ones, watched by verified_recently
    integrity = [build_export_integrity_check(t) for t in KAFKA_TOPICS]  # the daily job runs these
    checks = [*restore_checks, *build_verified_recently_checks(restore_checks, 8), *integrity]
    defs = Definitions(assets=kafka_assets, asset_checks=checks, jobs=[job], schedules=[schedule], resources=RESOURCES)
    resolved = defs.resolve_schedule_def("kafka_backup_job_schedule")
    assert resolved.cron_schedule == "0 4 * * *" and resolved.execution_timezone == "UTC"
    resolved_job = defs.resolve_job_def("kafka_backup_job")
    assert set(resolved_job.asset_layer.executable_asset_keys) == set(KAFKA_EXPORT_KEYS)
    assert {export_integrity_key(t) for t in KAFKA_TOPICS} <= set(resolved_job.asset_layer.asset_graph.asset_check_keys)

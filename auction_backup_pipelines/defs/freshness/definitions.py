"""Loader of the freshness domain: a `backed_up_on_time` check on every daily backup asset
(each Kafka topic's export too) and the sensor that evaluates them."""

import datetime as dt

import dagster as dg

from ..shared.backup_jobs import BACKUP_HOURS
from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY, REDIS_SNAPSHOT_KEY, topic_export_key
from ..shared.loading import current_settings
from .checks import Target, backed_up_on_time_check
from .sensors import build_backup_freshness_sensor


def backup_targets(topics: tuple[str, ...]) -> list[Target]:
    """Every daily backup asset with the schedule that takes it."""
    return [
        Target(LOGICAL_DUMP_KEY, "postgres_backup_job_schedule", BACKUP_HOURS["postgres"]),
        Target(BASE_BACKUP_KEY, "postgres_backup_job_schedule", BACKUP_HOURS["postgres"]),
        Target(REDIS_SNAPSHOT_KEY, "redis_backup_job_schedule", BACKUP_HOURS["redis"]),
        *(Target(topic_export_key(t), "kafka_backup_job_schedule", BACKUP_HOURS["kafka"]) for t in topics),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    targets = backup_targets(s.kafka.topics)
    grace, first_day = s.verification.deadline_grace, dt.date.fromisoformat(s.partitions_start)
    return dg.Definitions(
        asset_checks=[backed_up_on_time_check(t, grace, first_day) for t in targets],
        sensors=[build_backup_freshness_sensor(targets, grace, first_day)],
    )

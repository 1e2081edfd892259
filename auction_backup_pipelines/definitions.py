"""The code location: one Definitions object for every asset, check, job, schedule and sensor."""

from dagster import Definitions

from .defs.alerts import check_failure_alert_sensor, default_alerting_resource, run_failure_alert_sensor
from .defs.assets.kafka import kafka_assets
from .defs.assets.offsite import offsite_assets
from .defs.assets.postgres import postgres_base_backup, postgres_logical_dump
from .defs.assets.redis import redis_snapshot
from .defs.checks import postgres_base_backup_integrity, postgres_dump_integrity, redis_snapshot_integrity
from .defs.jobs import kafka_backup_job, postgres_backup_job, redis_backup_job
from .defs.resources import default_resources
from .defs.restores import kafka_restore_job, postgres_pitr_job, postgres_restore_job, redis_restore_job
from .defs.retention import cleanup_job, retention_sensor
from .defs.schedules import kafka_backup_schedule, postgres_backup_schedule, redis_backup_schedule
from .defs.verification import freshness_checks, restore_checks, weekly_verification_job, weekly_verification_schedule
from .defs.wal import wal_archive, wal_archive_check, wal_archive_sensor

defs = Definitions(
    assets=[postgres_logical_dump, postgres_base_backup, wal_archive, redis_snapshot, *kafka_assets, *offsite_assets],
    asset_checks=[
        postgres_dump_integrity, postgres_base_backup_integrity, wal_archive_check, redis_snapshot_integrity, *restore_checks, *freshness_checks.values(),
    ],
    jobs=[
        postgres_backup_job, redis_backup_job, kafka_backup_job,
        postgres_restore_job, postgres_pitr_job, redis_restore_job, kafka_restore_job,
        weekly_verification_job, cleanup_job,
    ],
    sensors=[retention_sensor, wal_archive_sensor, run_failure_alert_sensor, check_failure_alert_sensor],
    schedules=[postgres_backup_schedule, redis_backup_schedule, kafka_backup_schedule, weekly_verification_schedule],
    resources={**default_resources(), "alerting": default_alerting_resource()},
)

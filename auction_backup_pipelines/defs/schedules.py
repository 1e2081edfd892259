"""Schedules built from the partitioned jobs, so runs carry partition keys and missed days can
be backfilled from the UI. The partitions' timezone (UTC) is the schedules' timezone."""

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from .jobs import kafka_backup_job, postgres_backup_job, redis_backup_job

# Each fires on D+1 for partition D (core/capture.py), staggered so the systems' backups
# never compete: PostgreSQL 02:00, Redis 03:00, Kafka 04:00 UTC.
postgres_backup_schedule = build_schedule_from_partitioned_job(
    postgres_backup_job, hour_of_day=2, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING
)
redis_backup_schedule = build_schedule_from_partitioned_job(
    redis_backup_job, hour_of_day=3, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING
)
kafka_backup_schedule = build_schedule_from_partitioned_job(
    kafka_backup_job, hour_of_day=4, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING
)

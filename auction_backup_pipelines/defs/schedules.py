"""Schedules built from the partitioned jobs, so runs carry partition keys and missed days can
be backfilled from the UI. The partitions' timezone (UTC) is the schedules' timezone."""

from dagster import DefaultScheduleStatus, build_schedule_from_partitioned_job

from .jobs import postgres_backup_job

postgres_backup_schedule = build_schedule_from_partitioned_job(
    postgres_backup_job, hour_of_day=2, minute_of_hour=0, default_status=DefaultScheduleStatus.RUNNING
)

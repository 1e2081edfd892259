"""The code location: one Definitions object for every asset, check, job, schedule and sensor."""

from dagster import Definitions

from .defs.assets.postgres import postgres_base_backup, postgres_logical_dump
from .defs.checks import postgres_dump_integrity
from .defs.jobs import postgres_backup_job, postgres_pitr_job, postgres_restore_job
from .defs.resources import default_resources
from .defs.retention import cleanup_job, retention_sensor
from .defs.schedules import postgres_backup_schedule
from .defs.wal import wal_archive, wal_archive_check, wal_archive_sensor

defs = Definitions(
    assets=[postgres_logical_dump, postgres_base_backup, wal_archive],
    asset_checks=[postgres_dump_integrity, wal_archive_check],
    jobs=[postgres_backup_job, postgres_restore_job, postgres_pitr_job, cleanup_job],
    sensors=[retention_sensor, wal_archive_sensor],
    schedules=[postgres_backup_schedule],
    resources=default_resources(),
)

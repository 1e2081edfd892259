"""The code location: one Definitions object for every asset, check, job, schedule and sensor."""

from dagster import Definitions

from .defs.assets.postgres import postgres_logical_dump
from .defs.checks import postgres_dump_integrity
from .defs.jobs import postgres_backup_job, postgres_restore_job
from .defs.resources import default_resources
from .defs.retention import cleanup_job, retention_sensor
from .defs.schedules import postgres_backup_schedule

defs = Definitions(
    assets=[postgres_logical_dump],
    asset_checks=[postgres_dump_integrity],
    jobs=[postgres_backup_job, postgres_restore_job, cleanup_job],
    sensors=[retention_sensor],
    schedules=[postgres_backup_schedule],
    resources=default_resources(),
)

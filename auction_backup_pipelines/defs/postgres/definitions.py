"""Loader of the PostgreSQL domain's settings-dependent definitions.

Found by the autoloader on their own: the integrity checks (checks.py), the WAL archive asset and
its check (wal.py), the restore and PITR jobs (restores.py).
"""

import dagster as dg

from ..shared.backup_jobs import BACKUP_HOURS, daily_schedule
from ..shared.loading import current_settings
from ..shared.partitions import daily_partitions
from .assets import build_postgres_assets
from .jobs import build_postgres_backup_job
from .wal import build_wal_archive_sensor


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    job = build_postgres_backup_job(offsite=s.offsite.configured)
    return dg.Definitions(
        assets=build_postgres_assets(daily_partitions(s.partitions_start)),
        jobs=[job],
        schedules=[daily_schedule(job, BACKUP_HOURS["postgres"], "PostgreSQL backups of yesterday (UTC) at 02:00 UTC.")],
        sensors=[build_wal_archive_sensor(s.wal.sensor_interval_s, s.wal.max_lag_s, s.retention.pitr_window)],
    )

"""Loader of the Redis domain's settings-dependent definitions.

Found by the autoloader on their own: the integrity check (checks.py) and the restore job (restores.py).
"""

import dagster as dg

from ..shared.backup_jobs import BACKUP_HOURS, daily_schedule
from ..shared.loading import current_settings
from ..shared.partitions import daily_partitions
from .assets import build_redis_assets
from .jobs import build_redis_backup_job


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    job = build_redis_backup_job(offsite=s.offsite.configured)
    return dg.Definitions(
        assets=build_redis_assets(daily_partitions(s.partitions_start)),
        jobs=[job],
        schedules=[daily_schedule(job, BACKUP_HOURS["redis"], "The Redis snapshot of yesterday (UTC) at 03:00 UTC.")],
    )

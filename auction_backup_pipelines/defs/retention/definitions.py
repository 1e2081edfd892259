"""Loader of the retention sensor, whose interval and dry-run mode are settings.

Found by the autoloader on its own: the cleanup job (jobs.py).
"""

import dagster as dg

from ..shared.loading import current_settings
from .sensors import build_retention_sensor


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    return dg.Definitions(
        sensors=[
            build_retention_sensor(
                s.retention.sensor_interval_s,
                s.retention.dry_run,
                s.offsite,
                pitr_window=s.retention.pitr_window,
                leftover_safety_age=s.retention.leftover_safety_age,
            )
        ]
    )

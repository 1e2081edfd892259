"""Loader of the check-failure alert sensor, whose interval is a setting.

Found by the autoloader on its own: the run-failure alert sensor (sensors.py). The `alerting`
resource is bound with the shared resources (shared/definitions.py).
"""

import dagster as dg

from ..shared.loading import current_settings
from .sensors import build_check_failure_alert_sensor


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(sensors=[build_check_failure_alert_sensor(current_settings().alerting.check_sensor_interval_s)])

"""How offsite copies follow their source without a schedule of their own: a declarative
automation condition on every offsite asset, evaluated by this code location's automation sensor.

`AutomationCondition.eager()` would only consider the newest daily partition, so a ten-day
backfill of a backup asset would leave nine days without an offsite copy. The condition here is
eager's without that restriction: each partition of a copy is requested once its source partition
was materialized again (a scheduled run, a backfill, a rerun), unless the source is missing or
still running, or the copy is already running. A daily job that copies in the same run (when an
offsite store is configured the daily jobs select the copies too) handles that update itself, so
nothing is requested twice. The WAL archive is written outside Dagster and never "updates", so its
copy runs on a cron tick instead.

The automation sensor starts RUNNING: a location whose copies depend on it must not wait for an
operator to switch it on.
"""

from collections.abc import Sequence

from dagster import (
    AssetKey,
    AssetSelection,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
)

FOLLOWS_SOURCE = (
    AutomationCondition.any_deps_updated().since_last_handled()
    & ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
).with_label("copy each partition offsite once its source partition is (re)materialized")

WAL_COPY_CRON = "*/15 * * * *"

WAL_COPY_SCHEDULE = (AutomationCondition.cron_tick_passed(WAL_COPY_CRON, "UTC") & ~AutomationCondition.in_progress()).with_label(
    "copy new WAL offsite every 15 minutes"
)

SENSOR_NAME = "offsite_automation_sensor"


def build_offsite_automation_sensor(keys: Sequence[AssetKey]) -> AutomationConditionSensorDefinition:
    """Evaluates the offsite assets' conditions every 30 s; RUNNING by default (see the module doc)."""
    return AutomationConditionSensorDefinition(
        SENSOR_NAME,
        target=AssetSelection.assets(*keys),
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Launches the offsite copy of every backup partition materialized, and the WAL archive's copy.",
    )

"""Loader of the drill domain: the `platform/recovery_drill` asset with its `platform_drill` check,
the weekly job and its schedule."""

import dagster as dg

from .assets import build_platform_drill
from .jobs import build_platform_drill_job, build_platform_drill_schedule


@dg.definitions
def defs() -> dg.Definitions:
    job = build_platform_drill_job()
    return dg.Definitions(assets=[build_platform_drill()], jobs=[job], schedules=[build_platform_drill_schedule(job)])

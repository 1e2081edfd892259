"""Loader of the verification domain: the weekly restore checks (one per Kafka topic, too), the
daily `verified_recently` checks that watch them, and the weekly job and schedule."""

import dagster as dg

from ..shared.loading import current_settings
from .checks import build_restore_checks
from .freshness import build_verified_recently_checks
from .jobs import build_weekly_verification_job, build_weekly_verification_schedule


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    restore_checks = build_restore_checks(s.kafka.topics)
    job = build_weekly_verification_job(restore_checks)
    return dg.Definitions(
        asset_checks=[*restore_checks, *build_verified_recently_checks(restore_checks, s.verification.max_age_days)],
        jobs=[job],
        schedules=[build_weekly_verification_schedule(job)],
    )

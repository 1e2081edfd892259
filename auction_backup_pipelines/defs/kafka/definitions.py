"""Loader of the Kafka domain: one export asset and integrity check per topic of KAFKA_TOPICS, their job and schedule.

Found by the autoloader on its own: the restore job (restores.py).
"""

import dagster as dg

from ..shared.backup_jobs import BACKUP_HOURS, daily_schedule
from ..shared.loading import current_settings
from ..shared.partitions import daily_partitions
from .assets import build_kafka_assets
from .checks import build_export_integrity_check
from .jobs import build_kafka_backup_job


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    topics = s.kafka.topics
    job = build_kafka_backup_job(topics, offsite=s.offsite.configured)
    return dg.Definitions(
        assets=build_kafka_assets(topics, daily_partitions(s.partitions_start)),
        asset_checks=[build_export_integrity_check(t) for t in topics],
        jobs=[job],
        schedules=[daily_schedule(job, BACKUP_HOURS["kafka"], "The Kafka exports of yesterday (UTC) at 04:00 UTC.")],
    )

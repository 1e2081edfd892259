"""The daily Kafka backup job: each topic's export of the day, its configs and consumer-group offsets."""

from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from ..shared.backup_jobs import backup_job
from ..shared.keys import topic_export_key
from .checks import export_integrity_key


def build_kafka_backup_job(topics: tuple[str, ...], offsite: bool) -> UnresolvedAssetJobDefinition:
    return backup_job(
        "kafka_backup_job",
        "kafka",
        [topic_export_key(t) for t in topics],
        [export_integrity_key(t) for t in topics],
        offsite=offsite,
        description="Daily Kafka exports: each topic's messages of the partition day, its configs and consumer-group offsets, "
        "then a read-back of each export against its manifest.",
    )

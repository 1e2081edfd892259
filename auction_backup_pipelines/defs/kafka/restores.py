"""The Kafka restore job: backed-up days replayed into topics you name, verified, with translated group offsets.

The target's brokers must be those of KAFKA_BOOTSTRAP_SERVERS or listed in RESTORE_ALLOWED_KAFKA,
and this job has no way around it. Both come from the environment the code location was loaded
with, not from the `kafka` resource: a run's config can override a resource's fields.
"""

from dagster import Config, Failure, MetadataValue, OpExecutionContext, job, op

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.kafka.connection import for_target
from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.ops.restore_targets import check_kafka_target

from ..shared.keys import SYSTEM_TAG
from ..shared.loading import current_settings
from ..shared.resources import BackupRepositoryResource
from ..shared.restore_history import record_restores


class KafkaRestoreConfig(Config):
    from_day: str
    """First partition day to replay (YYYY-MM-DD)."""
    to_day: str
    """Last partition day to replay, inclusive."""
    topics: list[str] = []
    """Topics to restore (default: every topic backed up in the range)."""
    target_bootstrap: str = ""
    """Cluster to restore into (default: KAFKA_BOOTSTRAP_SERVERS; other brokers must be in RESTORE_ALLOWED_KAFKA)."""
    topic_prefix: str = ""
    """Write <prefix><topic> and set offsets of <prefix><group>, e.g. "restored-"."""
    force: bool = False
    """Append to non-empty target topics and replace the target groups' committed offsets."""
    apply_offsets: bool = False
    """Commit the translated consumer-group offsets (otherwise they are only reported)."""


@op(pool="kafka")
def restore_kafka_topics(context: OpExecutionContext, config: KafkaRestoreConfig, backup_repo: BackupRepositoryResource) -> dict:
    settings = current_settings()
    try:
        bootstrap = check_kafka_target(config.target_bootstrap, settings.kafka, settings.restore)  # before anything connects
        repo = backup_repo.repository()
        report = kafka_restore.restore_topics(
            repo,
            (config.from_day, config.to_day),
            config.topics or None,
            for_target(settings.kafka, bootstrap),
            topic_prefix=config.topic_prefix,
            force=config.force,
            apply_offsets=config.apply_offsets,
        )
    except BackupError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {report.messages} messages into {', '.join(t.target for t in report.topics.values())}, verified")
    context.add_output_metadata({"messages": MetadataValue.int(report.messages), "report": MetadataValue.json(report.as_dict())})
    record_restores(context, repo, lambda by, run_id: restore_records.for_kafka(repo, report, by, run_id))
    return report.as_dict()


@job(
    tags={SYSTEM_TAG: "kafka"},
    description="Replay backed-up Kafka days into topics you name, verified, with translated group offsets.",
)
def kafka_restore_job() -> None:
    restore_kafka_topics()

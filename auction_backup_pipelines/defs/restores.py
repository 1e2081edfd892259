"""Restore jobs: each restores into a target the user names, verified against the manifest.

The Dagster face of the same core functions the CLI calls; a restore needs no schedule, so
these are op jobs launched from the Launchpad with their config.
"""

from pathlib import Path

from dagster import Config, Failure, MetadataValue, OpExecutionContext, job, op

from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.redis import snapshot as rb
from auction_backup_pipelines.kafka.records import KafkaBackupError
from auction_backup_pipelines.repository.repository import RepositoryError
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from .jobs import SYSTEM_TAG
from .resources import BackupRepositoryResource, KafkaResource, PostgresResource, RedisResource


class PostgresRestoreConfig(Config):
    date: str
    """Partition day of the dump to restore (YYYY-MM-DD)."""
    target_db: str
    """Database to restore into (created if missing)."""
    force: bool = False
    """Replace the target database if it is not empty."""


@op(pool="postgres")
def restore_postgres_dump(
    context: OpExecutionContext, config: PostgresRestoreConfig, postgres: PostgresResource, backup_repo: BackupRepositoryResource
) -> dict:
    repo = backup_repo.repository()
    try:
        backup = repo.get(pg.SYSTEM, pg.LOGICAL_DUMP, config.date)
        result = pg.restore_logical(postgres.settings(), repo, backup, config.target_db, force=config.force)
    except (pg.PostgresError, RepositoryError) as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {result['backup']} into {result['target_db']}: {result['rows_total']} rows verified")
    context.add_output_metadata(result)
    return result


@job(tags={SYSTEM_TAG: "postgres"}, description="Restore a logical dump into a database you name, verified against its manifest.")
def postgres_restore_job() -> None:
    restore_postgres_dump()


class PitrConfig(Config):
    target_time: str
    """Moment to recover to, e.g. "2024-01-15 14:30:00"."""
    target_dir: str
    """New or empty folder for the recovered instance (never the primary's)."""
    timezone: str = "UTC"
    """Timezone of target_time when it has no offset."""
    port: int = 0
    """Port of the recovered instance (0: a free one)."""
    stop_after: bool = False
    """Stop the recovered instance once recovery is proven."""


@op(pool="postgres")
def pitr_restore(context: OpExecutionContext, config: PitrConfig, postgres: PostgresResource, backup_repo: BackupRepositoryResource) -> dict:
    repo = backup_repo.repository()
    try:
        target = pitr.parse_target(config.target_time, config.timezone)
        result = pitr.restore_to_time(postgres.settings(), repo, WalArchive(repo.backend), target, Path(config.target_dir),
                                      port=config.port or None, stop_after=config.stop_after)
    except (pitr.PitrError, pg.PostgresError, RepositoryError) as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"recovered to {result['reached_transaction_time']} in {result['data_dir']} (port {result['port']})")
    context.add_output_metadata({k: str(v) for k, v in result.items()})
    return result


@job(tags={SYSTEM_TAG: "postgres"}, description="Point-in-time recovery into a new instance; never touches the primary.")
def postgres_pitr_job() -> None:
    pitr_restore()


class RedisRestoreConfig(Config):
    date: str
    """Partition day of the snapshot to restore (YYYY-MM-DD)."""
    target: str
    """host:port of the Redis server or cluster node to restore into (credentials: the redis resource's)."""
    force: bool = False
    """Restore into a non-empty target, overwriting keys of the same name (other keys are kept)."""


@op(pool="redis")
def restore_redis_snapshot(
    context: OpExecutionContext, config: RedisRestoreConfig, redis: RedisResource, backup_repo: BackupRepositoryResource
) -> dict:
    repo = backup_repo.repository()
    try:
        backup = repo.get(rb.SYSTEM, rb.SNAPSHOT, config.date)
        result = rb.restore_snapshot(rb.parse_target(config.target, redis.settings()), repo, backup, force=config.force)
    except (rb.RedisBackupError, RepositoryError) as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {result['backup']} into {result['target']}: {result['keys_verified']} keys verified")
    context.add_output_metadata(result)
    return result


@job(tags={SYSTEM_TAG: "redis"}, description="Restore a Redis snapshot into a server or cluster you name, verified against its manifest.")
def redis_restore_job() -> None:
    restore_redis_snapshot()


class KafkaRestoreConfig(Config):
    from_day: str
    """First partition day to replay (YYYY-MM-DD)."""
    to_day: str
    """Last partition day to replay, inclusive."""
    topics: list[str] = []
    """Topics to restore (default: every topic backed up in the range)."""
    target_bootstrap: str = ""
    """Cluster to restore into (default: the kafka resource's bootstrap servers)."""
    topic_prefix: str = ""
    """Write <prefix><topic> and set offsets of <prefix><group>, e.g. "restored-"."""
    force: bool = False
    """Append to non-empty target topics and replace the target groups' committed offsets."""
    apply_offsets: bool = False
    """Commit the translated consumer-group offsets (otherwise they are only reported)."""


@op(pool="kafka")
def restore_kafka_topics(
    context: OpExecutionContext, config: KafkaRestoreConfig, kafka: KafkaResource, backup_repo: BackupRepositoryResource
) -> dict:
    try:
        report = kafka_restore.restore_topics(
            backup_repo.repository(), (config.from_day, config.to_day), config.topics or None,
            config.target_bootstrap or kafka.bootstrap_servers, topic_prefix=config.topic_prefix,
            force=config.force, apply_offsets=config.apply_offsets,
        )
    except (KafkaBackupError, RepositoryError) as exc:
        raise Failure(description=str(exc)) from None
    messages = sum(t["messages"] for t in report["topics"].values())
    context.log.info(f"restored {messages} messages into {', '.join(t['target'] for t in report['topics'].values())}, verified")
    context.add_output_metadata({"messages": MetadataValue.int(messages), "report": MetadataValue.json(report)})
    return report


@job(tags={SYSTEM_TAG: "kafka"}, description="Replay backed-up Kafka days into topics you name, verified, with translated group offsets.")
def kafka_restore_job() -> None:
    restore_kafka_topics()

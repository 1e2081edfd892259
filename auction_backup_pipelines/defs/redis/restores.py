"""The Redis restore job: a snapshot into a server or cluster you name, verified against its manifest."""

from dagster import Config, Failure, OpExecutionContext, job, op

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM, parse_target
from auction_backup_pipelines.redis.restore import restore_snapshot

from ..shared.keys import SYSTEM_TAG
from ..shared.resources import BackupRepositoryResource, RedisResource


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
        backup = repo.get(SYSTEM, SNAPSHOT, config.date)
        result = restore_snapshot(parse_target(config.target, redis.settings()), repo, backup, force=config.force)
    except BackupError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {result.backup} into {result.target}: {result.keys_verified} keys verified")
    context.add_output_metadata(result.as_dict())
    return result.as_dict()


@job(
    tags={SYSTEM_TAG: "redis"},
    description="Restore a Redis snapshot into a server or cluster you name, verified against its manifest.",
)
def redis_restore_job() -> None:
    restore_redis_snapshot()

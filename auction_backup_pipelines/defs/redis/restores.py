"""The Redis restore job: a snapshot into a server or cluster you name, verified against its manifest.

The target must be REDIS_HOST:REDIS_PORT or listed in RESTORE_ALLOWED_REDIS, and this job has no
way around it. The list and the credentials come from the environment the code location was
loaded with, not from the `redis` resource: a run's config can override a resource's fields.
"""

from dagster import Config, Failure, OpExecutionContext, job, op

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.ops.restore_targets import check_redis_target
from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM
from auction_backup_pipelines.redis.restore import restore_snapshot

from ..shared.keys import SYSTEM_TAG
from ..shared.loading import current_settings
from ..shared.resources import BackupRepositoryResource
from ..shared.restore_history import record_restores


class RedisRestoreConfig(Config):
    date: str
    """Partition day of the snapshot to restore (YYYY-MM-DD)."""
    target: str
    """host:port of the Redis server or cluster node to restore into: REDIS_HOST:REDIS_PORT or one of RESTORE_ALLOWED_REDIS."""
    force: bool = False
    """Restore into a non-empty target, overwriting keys of the same name (other keys are kept)."""


@op(pool="redis")
def restore_redis_snapshot(
    context: OpExecutionContext, config: RedisRestoreConfig, backup_repo: BackupRepositoryResource
) -> dict:
    settings = current_settings()
    try:
        target = check_redis_target(config.target, settings.redis, settings.restore)  # before anything connects
        repo = backup_repo.repository()
        backup = repo.get(SYSTEM, SNAPSHOT, config.date)
        result = restore_snapshot(target, repo, backup, force=config.force)
    except BackupError as exc:
        raise Failure(description=str(exc)) from None
    context.log.info(f"restored {result.backup} into {result.target}: {result.keys_verified} keys verified")
    context.add_output_metadata(result.as_dict())
    record_restores(context, repo, lambda by, run_id: restore_records.for_redis(result, by, run_id))
    return result.as_dict()


@job(
    tags={SYSTEM_TAG: "redis"},
    description="Restore a Redis snapshot into a server or cluster you name, verified against its manifest.",
)
def redis_restore_job() -> None:
    restore_redis_snapshot()

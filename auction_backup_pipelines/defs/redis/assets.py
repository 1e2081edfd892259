"""The daily Redis snapshot asset (the server, or every master of a cluster)."""

import datetime as dt

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.policy.capture_window import CaptureWindowError
from auction_backup_pipelines.redis.backup import backup_snapshot

from ..shared.keys import REDIS_SERVER_KEY, REDIS_SNAPSHOT_KEY
from ..shared.metadata import backup_metadata
from ..shared.refusals import refuse
from ..shared.resources import BackupRepositoryResource, RedisResource


class RedisSnapshotConfig(Config):
    allow_late_capture: bool = False
    """Back up a past day with today's data, recording the real capture time (the default is to refuse:
    Redis keeps no history to reconstruct a past day from)."""
    mode: str = "auto"
    """auto (bgsave+copy when the data dir is local, else redis-cli --rdb; AOF copy as the last resort),
    or one of bgsave, network, aof."""


def keyspace_markdown(content: dict) -> MetadataValue:
    lines = ["| db | keys | with TTL | by type |", "|---|---:|---:|---|"]
    for db, d in sorted(content["dbs"].items(), key=lambda item: int(item[0])):
        types = ", ".join(f"{k} {n}" for k, n in sorted(d["types"].items()))
        lines.append(f"| {db} | {d['keys']} | {d['volatile']} | {types} |")
    return MetadataValue.md("\n".join(lines))


def build_redis_assets(partitions: PartitionsDefinition) -> list[AssetsDefinition]:
    """The snapshot asset over `partitions`."""

    @asset(
        key=REDIS_SNAPSHOT_KEY,
        deps=[REDIS_SERVER_KEY],
        partitions_def=partitions,
        group_name="redis",
        pool="redis",
        kinds={"redis"},
        description=(
            "Snapshot (RDB, zstd) of the Auction Flow Redis, or of every master of a Redis Cluster, taken on the "
            "day after the partition day, with key counts and a content digest computed from the snapshot itself."
        ),
    )
    def redis_snapshot(
        context: AssetExecutionContext, config: RedisSnapshotConfig, redis: RedisResource, backup_repo: BackupRepositoryResource
    ) -> MaterializeResult:
        day = dt.date.fromisoformat(context.partition_key)
        repo = backup_repo.repository()
        try:
            source = redis.settings()
            backup = backup_snapshot(
                source,
                repo,
                day,
                allow_late_capture=config.allow_late_capture,
                # REDIS_DATA_DIR: without it, the network path only and no AOF fallback
                data_dir=source.data_dir or None,
                mode=config.mode,
            )
        except CaptureWindowError as exc:
            raise refuse(context, exc, late_capture_switch=not config.allow_late_capture) from None
        except BackupError as exc:
            raise Failure(description=str(exc)) from None
        m = backup.metadata
        for note in m.get("fallbacks", []):
            context.log.warning(f"snapshot path not used: {note}")
        context.log.info(f"published {backup.prefix}: {backup.stored_size} bytes, {m['keys_total']} keys, mode {m['mode']}")
        source = m["source"]
        extra = {
            "capture": "LATE CAPTURE: data as of captured_at, not the end of the day" if m["late_capture"] else "on time",
            "mode": m["mode"],
            "transfer": m["transfer"],
            "keys_total": MetadataValue.int(m["keys_total"]),
            "keyspace": keyspace_markdown(m["content"]),
            "content_digest": m["digest"],
            "redis_version": str(source.get("redis_version")),
            "used_memory": MetadataValue.int(int(source.get("used_memory") or 0)),
            "master_repl_offset": MetadataValue.int(int(source.get("master_repl_offset") or 0)),
            "transfer_duration_s": MetadataValue.float(m["transfer_duration_s"]),
            "digest_duration_s": MetadataValue.float(m["digest_duration_s"]),
            "duration_s": MetadataValue.float(m["duration_s"]),
        }
        if m["mode"] == "cluster":
            nodes = m["cluster"]["nodes"]
            extra["cluster_nodes"] = MetadataValue.md(
                "\n".join(
                    ["| node | id | slots | keys |", "|---|---|---|---:|"]
                    + [
                        f"| {n['host']}:{n['port']} | {n['id'][:12]} | {' '.join(f'{a}-{b}' for a, b in n['slots'])} | {n['keys']} |"
                        for n in nodes
                    ]
                )
            )
        return MaterializeResult(metadata=backup_metadata(repo, backup, **extra))

    return [redis_snapshot]

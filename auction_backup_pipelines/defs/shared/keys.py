"""Asset keys and run tags of the code location, in one place.

Keys follow the repository layout (`repository/layout.py`): an asset's path is its backup's
system and artifact, so `kafka/topic_export/<topic>` is both a key prefix and an asset key.
"""

from dagster import AssetKey

from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.kafka.records import artifact_name
from auction_backup_pipelines.postgres.base_backup import BASE_BACKUP
from auction_backup_pipelines.postgres.client import SYSTEM as POSTGRES
from auction_backup_pipelines.postgres.logical_dump import LOGICAL_DUMP
from auction_backup_pipelines.redis.client import SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.repository import layout

LOGICAL_DUMP_KEY = AssetKey(list(layout.asset_path(POSTGRES, LOGICAL_DUMP)))
BASE_BACKUP_KEY = AssetKey(list(layout.asset_path(POSTGRES, BASE_BACKUP)))
WAL_ARCHIVE_KEY = AssetKey([POSTGRES, "wal_archive"])
REDIS_SNAPSHOT_KEY = AssetKey(list(layout.asset_path(REDIS, SNAPSHOT)))
POSTGRES_PRIMARY_KEY = AssetKey([POSTGRES, "primary"])
"""The live PostgreSQL primary (a source asset): upstream of the WAL archive and every PostgreSQL backup."""
REDIS_SERVER_KEY = AssetKey([REDIS, "server"])
"""The live Redis server or cluster (a source asset), upstream of its snapshot."""
OFFSITE_WAL_ARCHIVE_KEY = AssetKey(["offsite", *WAL_ARCHIVE_KEY.path])

SYSTEM_TAG = "auction_backup/system"
"""Runs carrying the same value of this tag never run at once (dagster.yaml's run queue)."""


def topic_source_key(topic: str) -> AssetKey:
    """The live Kafka topic, upstream of its export."""
    return AssetKey(["kafka", "topic", topic])


def topic_export_key(topic: str) -> AssetKey:
    return AssetKey(list(layout.asset_path(KAFKA, artifact_name(topic))))


def offsite_key(upstream: AssetKey) -> AssetKey:
    """`offsite/<system>/<artifact>`: the offsite copy of a backup asset."""
    return AssetKey(["offsite", *upstream.path])


def backup_keys(topics: tuple[str, ...]) -> list[AssetKey]:
    """Every daily backup asset, in the order the UI lists them."""
    return [LOGICAL_DUMP_KEY, BASE_BACKUP_KEY, REDIS_SNAPSHOT_KEY, *(topic_export_key(t) for t in topics)]

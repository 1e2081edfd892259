"""Jobs that back up: one daily partitioned job per system."""

from dagster import AssetSelection, define_asset_job

from .assets.kafka import KAFKA_EXPORT_KEYS
from .assets.offsite import OFFSITE_KEYS
from .assets.postgres import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY
from .assets.redis import SNAPSHOT_KEY as REDIS_SNAPSHOT_KEY
from .checks import postgres_base_backup_integrity, postgres_dump_integrity, redis_snapshot_integrity
from .verification import freshness_checks


def _with_offsite(*keys):
    """The backup assets plus, when an offsite store is configured, their offsite copies."""
    return AssetSelection.assets(*keys, *(OFFSITE_KEYS[k] for k in keys if k in OFFSITE_KEYS)).without_checks()


# Runs carrying the same value of this tag never run at once (dagster.yaml's run queue).
SYSTEM_TAG = "auction_backup/system"

# without_checks(): a daily job must not run the weekly restore checks; the cheap integrity
# checks are added back so every backup is read back right after it is written, and the
# `verified_recently` checks so a stale weekly verification shows on the asset every day.
postgres_backup_job = define_asset_job(
    name="postgres_backup_job",
    selection=_with_offsite(LOGICAL_DUMP_KEY, BASE_BACKUP_KEY)
    | AssetSelection.checks(postgres_dump_integrity, postgres_base_backup_integrity, freshness_checks[LOGICAL_DUMP_KEY],
                            freshness_checks[BASE_BACKUP_KEY]),
    tags={SYSTEM_TAG: "postgres"},
    description="Daily PostgreSQL backups (logical dump and base backup), then integrity checks of both.",
)

redis_backup_job = define_asset_job(
    name="redis_backup_job",
    selection=_with_offsite(REDIS_SNAPSHOT_KEY)
    | AssetSelection.checks(redis_snapshot_integrity, freshness_checks[REDIS_SNAPSHOT_KEY]),
    tags={SYSTEM_TAG: "redis"},
    description="Daily Redis snapshot (the server, or every master of a cluster), then a read-back of its checksums.",
)

kafka_backup_job = define_asset_job(
    name="kafka_backup_job",
    selection=_with_offsite(*KAFKA_EXPORT_KEYS)
    | AssetSelection.checks(*(freshness_checks[k] for k in KAFKA_EXPORT_KEYS)),
    tags={SYSTEM_TAG: "kafka"},
    description="Daily Kafka exports: each topic's messages of the partition day, its configs and consumer-group offsets.",
)

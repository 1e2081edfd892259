"""Settings of the systems backed up (PostgreSQL, Redis, Kafka) and of the targets restores may write to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings.reader import Reader, items

AUCTION_TOPICS: tuple[str, ...] = ("auction-events", "bid-events", "auction-closed", "payment-events")


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    dbname: str = "auctionflow"
    user: str = "auctionuser"
    password: str = field(default="", repr=False)
    bin_dir: str = ""
    """Folder of PostgreSQL's programs (PGBIN); empty: /usr/lib/postgresql/15/bin, then PATH."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PostgresSettings:
        env = Reader(environ)
        return cls(
            host=env.text("POSTGRES_HOST", cls.host),
            port=env.integer("POSTGRES_PORT", cls.port, 1, 65535),
            dbname=env.text("POSTGRES_DB", cls.dbname),
            user=env.text("POSTGRES_USER", cls.user),
            password=env.raw("POSTGRES_PASSWORD"),
            bin_dir=env.raw("PGBIN"),
        )


@dataclass(frozen=True)
class RedisSettings:
    host: str = "localhost"
    port: int = 7001
    password: str = field(default="", repr=False)
    username: str = ""
    data_dir: str = ""
    """The server's data dir when it is on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        env = Reader(environ)
        return cls(
            host=env.text("REDIS_HOST", cls.host),
            port=env.integer("REDIS_PORT", cls.port, 1, 65535),
            password=env.raw("REDIS_PASSWORD"),
            username=env.raw("REDIS_USERNAME"),
            data_dir=env.raw("REDIS_DATA_DIR"),
        )


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    topics: tuple[str, ...] = AUCTION_TOPICS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        env = Reader(environ)
        topics = items(env.text("KAFKA_TOPICS", ",".join(AUCTION_TOPICS)))
        if not topics:
            raise ConfigurationError(f"KAFKA_TOPICS names no topic, got {env.raw('KAFKA_TOPICS')!r}")
        return cls(bootstrap_servers=env.text("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers), topics=topics)


@dataclass(frozen=True)
class RestoreSettings:
    """Targets a restore may write to besides the configured source, and their own credentials
    (ops/restore_targets.py). Nothing listed: a restore writes only into the source itself."""

    redis_targets: tuple[str, ...] = ()
    """host:port of Redis servers or cluster nodes (RESTORE_ALLOWED_REDIS)."""
    redis_username: str = ""
    redis_password: str = field(default="", repr=False)
    """Sent to those targets; REDIS_USERNAME/REDIS_PASSWORD go to REDIS_HOST:REDIS_PORT only."""
    kafka_targets: tuple[str, ...] = ()
    """host:port of Kafka brokers, besides those of KAFKA_BOOTSTRAP_SERVERS (RESTORE_ALLOWED_KAFKA)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RestoreSettings:
        env = Reader(environ)
        return cls(
            redis_targets=env.addresses("RESTORE_ALLOWED_REDIS"),
            redis_username=env.raw("RESTORE_REDIS_USERNAME"),
            redis_password=env.raw("RESTORE_REDIS_PASSWORD"),
            kafka_targets=env.addresses("RESTORE_ALLOWED_KAFKA"),
        )


# --------------------------------------------------------------------------- where backups go

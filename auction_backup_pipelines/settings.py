"""Settings read from the Auction Flow environment, with the platform's defaults.

Plain Python (no Dagster): the CLI uses these directly so a restore works while Dagster is
down, and the Dagster resources take their defaults from the same names through `EnvVar`.
Secrets are read here and handed to child processes through their environment only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

AUCTION_TOPICS: tuple[str, ...] = ("auction-events", "bid-events", "auction-closed", "payment-events")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    dbname: str = "auctionflow"
    user: str = "auctionuser"
    password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls) -> "PostgresSettings":
        return cls(
            host=_env("POSTGRES_HOST", cls.host),
            port=_env_int("POSTGRES_PORT", cls.port),
            dbname=_env("POSTGRES_DB", cls.dbname),
            user=_env("POSTGRES_USER", cls.user),
            password=os.environ.get("POSTGRES_PASSWORD", ""),
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
    def from_env(cls) -> "RedisSettings":
        return cls(
            host=_env("REDIS_HOST", cls.host),
            port=_env_int("REDIS_PORT", cls.port),
            password=os.environ.get("REDIS_PASSWORD", ""),
            username=os.environ.get("REDIS_USERNAME", ""),
            data_dir=os.environ.get("REDIS_DATA_DIR", ""),
        )


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = "localhost:9092"
    topics: tuple[str, ...] = AUCTION_TOPICS

    @classmethod
    def from_env(cls) -> "KafkaSettings":
        topics = tuple(t.strip() for t in _env("KAFKA_TOPICS", ",".join(AUCTION_TOPICS)).split(",") if t.strip())
        return cls(bootstrap_servers=_env("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers), topics=topics)


@dataclass(frozen=True)
class RepositorySettings:
    root: str = "backups"
    compression: str = "zstd"

    @classmethod
    def from_env(cls) -> "RepositorySettings":
        return cls(root=_env("BACKUP_ROOT", cls.root), compression=_env("BACKUP_COMPRESSION", cls.compression))

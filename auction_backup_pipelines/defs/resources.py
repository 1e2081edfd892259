"""Dagster resources: configuration of the systems and the repository, nothing more.

Each resource turns its fields into the plain settings object the core modules take, so the
same code paths serve the CLI (which reads the environment directly) and Dagster runs.
Passwords are only ever bound through `EnvVar`, which Dagster never displays.
"""


import os

from dagster import ConfigurableResource, EnvVar

from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from ..settings import KafkaSettings, PostgresSettings, RedisSettings, RepositorySettings


class PostgresResource(ConfigurableResource):
    """The PostgreSQL server to back up (POSTGRES_* variables)."""

    host: str = PostgresSettings.host
    port: int = PostgresSettings.port
    dbname: str = PostgresSettings.dbname
    user: str = PostgresSettings.user
    password: str = ""

    def settings(self) -> PostgresSettings:
        return PostgresSettings(host=self.host, port=self.port, dbname=self.dbname, user=self.user, password=self.password)


class RedisResource(ConfigurableResource):
    """The Redis server or cluster to back up (REDIS_* variables)."""

    host: str = RedisSettings.host
    port: int = RedisSettings.port
    username: str = ""
    password: str = ""
    data_dir: str = ""
    """The server's data dir, if on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""

    def settings(self) -> RedisSettings:
        return RedisSettings(host=self.host, port=self.port, username=self.username, password=self.password,
                             data_dir=self.data_dir)


class KafkaResource(ConfigurableResource):
    """The Kafka cluster and topics to back up (KAFKA_BOOTSTRAP_SERVERS, KAFKA_TOPICS)."""

    bootstrap_servers: str = KafkaSettings.bootstrap_servers
    topics: list[str] = list(KafkaSettings.topics)

    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap_servers, topics=tuple(self.topics))


class BackupRepositoryResource(ConfigurableResource):
    """Where backups are stored (BACKUP_ROOT, BACKUP_COMPRESSION, BACKUP_ENCRYPTION_KEY_FILE / _KEYS)."""

    root: str = RepositorySettings.root
    compression: str = RepositorySettings.compression
    encryption_key_file: str = ""
    encryption_keys: str = ""
    """A secret ("id:base64key,..."): bind with EnvVar."""

    def repository(self) -> Repository:
        return Repository.local(self.root, compression=self.compression,
                                encryption=Encryption.from_settings(self.encryption_key_file, self.encryption_keys))


class OffsiteRepositoryResource(ConfigurableResource):
    """The offsite copy in an S3-compatible store (OFFSITE_S3_*), with its own keys (OFFSITE_ENCRYPTION_*)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    compression: str = "zstd"
    encryption_key_file: str = ""
    encryption_keys: str = ""

    def repository(self) -> Repository:
        backend = S3Backend(self.bucket, self.prefix, endpoint_url=self.endpoint_url or None, region=self.region or None,
                            access_key_id=self.access_key_id or None, secret_access_key=self.secret_access_key or None)
        return Repository(backend, compression=self.compression,
                          encryption=Encryption.from_settings(self.encryption_key_file, self.encryption_keys))


def _secret(name: str):
    """EnvVar when set (Dagster stores the name only), else empty: an unset EnvVar fails at launch."""
    return EnvVar(name) if os.environ.get(name) else ""


def offsite_configured() -> bool:
    return bool(os.environ.get("OFFSITE_S3_BUCKET"))


def default_resources() -> dict[str, ConfigurableResource]:
    """Resources bound from the environment, with Auction Flow's defaults when unset."""
    pg, rd, kf, repo = (PostgresSettings.from_env(), RedisSettings.from_env(), KafkaSettings.from_env(), RepositorySettings.from_env())
    resources: dict[str, ConfigurableResource] = {
        "postgres": PostgresResource(
            host=pg.host, port=pg.port, dbname=pg.dbname, user=pg.user, password=EnvVar("POSTGRES_PASSWORD")
        ),
        "redis": RedisResource(host=rd.host, port=rd.port, username=rd.username, data_dir=rd.data_dir,
                               password=_secret("REDIS_PASSWORD")),
        "kafka": KafkaResource(bootstrap_servers=kf.bootstrap_servers, topics=list(kf.topics)),
        "backup_repo": BackupRepositoryResource(
            root=repo.root, compression=repo.compression,
            encryption_key_file=os.environ.get("BACKUP_ENCRYPTION_KEY_FILE", ""), encryption_keys=_secret("BACKUP_ENCRYPTION_KEYS"),
        ),
    }
    if offsite_configured():
        env = os.environ.get
        resources["offsite_repo"] = OffsiteRepositoryResource(
            bucket=env("OFFSITE_S3_BUCKET", ""), prefix=env("OFFSITE_S3_PREFIX", ""), endpoint_url=env("OFFSITE_S3_ENDPOINT_URL", ""),
            region=env("OFFSITE_S3_REGION", ""), access_key_id=_secret("OFFSITE_S3_ACCESS_KEY_ID"),
            secret_access_key=_secret("OFFSITE_S3_SECRET_ACCESS_KEY"), encryption_key_file=env("OFFSITE_ENCRYPTION_KEY_FILE", ""),
            encryption_keys=_secret("OFFSITE_ENCRYPTION_KEYS"),
        )
    return resources

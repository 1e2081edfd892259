"""Dagster resources: configuration of the systems and the repository, nothing more.

Each resource turns its fields into the plain settings object the engines take, so the
same code paths serve the CLI (which reads the environment directly) and Dagster runs.
Passwords are only ever bound through `EnvVar`, which Dagster never displays.
"""

from dagster import ConfigurableResource, EnvVar

from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings, RepositorySettings, Settings


class PostgresResource(ConfigurableResource):
    """The PostgreSQL server to back up (POSTGRES_* variables)."""

    host: str = PostgresSettings.host
    port: int = PostgresSettings.port
    dbname: str = PostgresSettings.dbname
    user: str = PostgresSettings.user
    password: str = ""
    bin_dir: str = ""
    """Folder of PostgreSQL's programs (PGBIN); empty: the packaged folder, then PATH."""

    def settings(self) -> PostgresSettings:
        return PostgresSettings(
            host=self.host, port=self.port, dbname=self.dbname, user=self.user, password=self.password, bin_dir=self.bin_dir
        )


class RedisResource(ConfigurableResource):
    """The Redis server or cluster to back up (REDIS_* variables)."""

    host: str = RedisSettings.host
    port: int = RedisSettings.port
    username: str = ""
    password: str = ""
    data_dir: str = ""
    """The server's data dir, if on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""

    def settings(self) -> RedisSettings:
        return RedisSettings(
            host=self.host, port=self.port, username=self.username, password=self.password, data_dir=self.data_dir
        )


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
        return Repository.local(
            self.root,
            compression=self.compression,
            encryption=Encryption.from_settings(self.encryption_key_file, self.encryption_keys),
        )


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
        backend = S3Backend(
            self.bucket,
            self.prefix,
            endpoint_url=self.endpoint_url or None,
            region=self.region or None,
            access_key_id=self.access_key_id or None,
            secret_access_key=self.secret_access_key or None,
        )
        return Repository(
            backend,
            compression=self.compression,
            encryption=Encryption.from_settings(self.encryption_key_file, self.encryption_keys),
            key_settings=OFFSITE_KEY_SETTINGS,
        )


def _secret(name: str, value: str):
    """EnvVar when set (Dagster stores and shows the variable's name only), else empty: an unset
    EnvVar would fail every run launch."""
    return EnvVar(name) if value else ""


def build_resources(s: Settings) -> dict[str, ConfigurableResource]:
    """Resources bound from the settings, with Auction Flow's defaults when unset."""
    pg, rd, kf, repo = s.postgres, s.redis, s.kafka, s.repository
    resources: dict[str, ConfigurableResource] = {
        "postgres": PostgresResource(
            host=pg.host,
            port=pg.port,
            dbname=pg.dbname,
            user=pg.user,
            password=EnvVar("POSTGRES_PASSWORD"),
            bin_dir=pg.bin_dir,
        ),
        "redis": RedisResource(
            host=rd.host,
            port=rd.port,
            username=rd.username,
            data_dir=rd.data_dir,
            password=_secret("REDIS_PASSWORD", rd.password),
        ),
        "kafka": KafkaResource(bootstrap_servers=kf.bootstrap_servers, topics=list(kf.topics)),
        "backup_repo": BackupRepositoryResource(
            root=repo.root,
            compression=repo.compression,
            encryption_key_file=s.encryption.key_file,
            encryption_keys=_secret("BACKUP_ENCRYPTION_KEYS", s.encryption.keys),
        ),
    }
    off = s.offsite
    if off.configured:
        resources["offsite_repo"] = OffsiteRepositoryResource(
            bucket=off.bucket,
            prefix=off.prefix,
            endpoint_url=off.endpoint_url,
            region=off.region,
            access_key_id=_secret("OFFSITE_S3_ACCESS_KEY_ID", off.access_key_id),
            secret_access_key=_secret("OFFSITE_S3_SECRET_ACCESS_KEY", off.secret_access_key),
            encryption_key_file=off.encryption_key_file,
            encryption_keys=_secret("OFFSITE_ENCRYPTION_KEYS", off.encryption_keys),
        )
    return resources

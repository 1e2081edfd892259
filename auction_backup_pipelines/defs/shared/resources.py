"""Dagster resources: configuration of the systems and the repository, nothing more.

Each resource turns its fields into the plain settings object the engines take, so the
same code paths serve the CLI (which reads the environment directly) and Dagster runs.
Passwords are only ever bound through `EnvVar`, which Dagster never displays.

A run's config may override any field of a bound resource (the Launchpad's `resources:` section),
so the resources `build_resources` binds are the `Pinned*` subclasses: they refuse to hand out
connection or repository settings that differ from those loaded from the environment, and a run
cannot point a backup, with production credentials, at a host of its choosing. Tests and tools
that build the base classes for scratch targets are not pinned.
"""

import dataclasses
from typing import Any

from dagster import ConfigurableResource, EnvVar, Failure

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.settings import (
    KafkaSettings,
    PostgresSettings,
    RedisSettings,
    RepositorySettings,
    Settings,
)

from .loading import current_settings


class PostgresResource(ConfigurableResource):
    """The PostgreSQL server to back up (POSTGRES_* variables)."""

    host: str = PostgresSettings.host
    port: int = PostgresSettings.port
    dbname: str = PostgresSettings.dbname
    user: str = PostgresSettings.user
    password: str = ""
    bin_dir: str = ""
    """Folder of PostgreSQL's programs (PGBIN); empty: the packaged folder, then PATH."""
    sslmode: str = ""
    """libpq's sslmode (POSTGRES_SSLMODE); empty: libpq's default, prefer."""
    sslrootcert: str = ""
    """CA file for the server's certificate (POSTGRES_SSLROOTCERT)."""
    base_backup_max_rate: str = ""
    """`pg_basebackup --max-rate` (BASE_BACKUP_MAX_RATE); empty: unlimited."""

    def settings(self) -> PostgresSettings:
        return PostgresSettings(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            bin_dir=self.bin_dir,
            sslmode=self.sslmode,
            sslrootcert=self.sslrootcert,
            base_backup_max_rate=self.base_backup_max_rate,
        )


class RedisResource(ConfigurableResource):
    """The Redis server or cluster to back up (REDIS_* variables)."""

    host: str = RedisSettings.host
    port: int = RedisSettings.port
    username: str = ""
    password: str = ""
    data_dir: str = ""
    """The server's data dir, if on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    def settings(self) -> RedisSettings:
        return RedisSettings(
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            data_dir=self.data_dir,
            tls=self.tls,
            tls_ca_file=self.tls_ca_file,
            tls_cert_file=self.tls_cert_file,
            tls_key_file=self.tls_key_file,
        )


class KafkaResource(ConfigurableResource):
    """The Kafka cluster and topics to back up, and how to reach it (KAFKA_* variables)."""

    bootstrap_servers: str = KafkaSettings.bootstrap_servers
    topics: list[str] = list(KafkaSettings.topics)
    security_protocol: str = KafkaSettings.security_protocol
    ssl_ca_file: str = ""
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    """A secret: bind with EnvVar."""
    export_max_bytes_per_s: int = 0
    """Pace of a topic export (KAFKA_EXPORT_MAX_BYTES_PER_S); 0: unlimited."""

    def settings(self) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.bootstrap_servers,
            topics=tuple(self.topics),
            security_protocol=self.security_protocol,
            ssl_ca_file=self.ssl_ca_file,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            export_max_bytes_per_s=self.export_max_bytes_per_s,
        )


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
    max_bytes_per_s: int = 0
    """Pace of uploads (OFFSITE_S3_MAX_BYTES_PER_S); 0: unlimited."""

    def repository(self) -> Repository:
        backend = S3Backend(
            self.bucket,
            self.prefix,
            endpoint_url=self.endpoint_url or None,
            region=self.region or None,
            access_key_id=self.access_key_id or None,
            secret_access_key=self.secret_access_key or None,
            max_bytes_per_s=self.max_bytes_per_s,
        )
        return Repository(
            backend,
            compression=self.compression,
            encryption=Encryption.from_settings(self.encryption_key_file, self.encryption_keys),
            key_settings=OFFSITE_KEY_SETTINGS,
        )


class RunConfigOverrideRefused(RefusedError, Failure):
    """A run's config changed a field of a pinned resource; refused before anything connects.

    Also a Dagster `Failure` (not retried): raised outside an op's `except BackupError`, the step
    still fails with this one line instead of a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(description=message, allow_retries=False)


VARIABLES: dict[str, dict[str, str]] = {
    "postgres": {"host": "POSTGRES_HOST", "port": "POSTGRES_PORT", "dbname": "POSTGRES_DB", "user": "POSTGRES_USER"}
    | {"password": "POSTGRES_PASSWORD", "bin_dir": "PGBIN", "sslmode": "POSTGRES_SSLMODE", "sslrootcert": "POSTGRES_SSLROOTCERT"}
    | {"base_backup_max_rate": "BASE_BACKUP_MAX_RATE"},
    "redis": {"host": "REDIS_HOST", "port": "REDIS_PORT", "username": "REDIS_USERNAME", "password": "REDIS_PASSWORD"}
    | {"data_dir": "REDIS_DATA_DIR", "tls": "REDIS_TLS", "tls_ca_file": "REDIS_TLS_CA_FILE"}
    | {"tls_cert_file": "REDIS_TLS_CERT_FILE", "tls_key_file": "REDIS_TLS_KEY_FILE"},
    "kafka": {"bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS", "topics": "KAFKA_TOPICS"}
    | {"security_protocol": "KAFKA_SECURITY_PROTOCOL", "ssl_ca_file": "KAFKA_SSL_CA_FILE"}
    | {"sasl_mechanism": "KAFKA_SASL_MECHANISM", "sasl_username": "KAFKA_SASL_USERNAME", "sasl_password": "KAFKA_SASL_PASSWORD"}
    | {"export_max_bytes_per_s": "KAFKA_EXPORT_MAX_BYTES_PER_S"},
    "backup_repo": {"root": "BACKUP_ROOT", "compression": "BACKUP_COMPRESSION"}
    | {"encryption_key_file": "BACKUP_ENCRYPTION_KEY_FILE", "encryption_keys": "BACKUP_ENCRYPTION_KEYS"},
    "offsite_repo": {"bucket": "OFFSITE_S3_BUCKET", "prefix": "OFFSITE_S3_PREFIX", "region": "OFFSITE_S3_REGION"}
    | {"endpoint_url": "OFFSITE_S3_ENDPOINT_URL", "compression": "OFFSITE_COMPRESSION"}
    | {"access_key_id": "OFFSITE_S3_ACCESS_KEY_ID", "secret_access_key": "OFFSITE_S3_SECRET_ACCESS_KEY"}
    | {"encryption_key_file": "OFFSITE_ENCRYPTION_KEY_FILE", "encryption_keys": "OFFSITE_ENCRYPTION_KEYS"}
    | {"max_bytes_per_s": "OFFSITE_S3_MAX_BYTES_PER_S"},
}
"""Per resource key, the variable behind each field a pinned resource compares."""


def compared(given: Any, loaded: Any) -> dict[str, tuple[object, object]]:
    """Field name -> (`given`'s value, the environment's) for each field of the settings dataclass `loaded`."""
    return {f.name: (getattr(given, f.name), getattr(loaded, f.name)) for f in dataclasses.fields(loaded)}


def refuse_overrides(key: str, values: dict[str, tuple[object, object]]) -> None:
    """Raise RunConfigOverrideRefused naming every field of resource `key` whose value (first)
    differs from the environment's (second). Every field, not only host and port: a user, a program
    folder, a repository root or a key redirects as much. No value is shown (some are secrets)."""
    changed = [f"{name} ({VARIABLES[key][name]})" for name, (given, loaded) in values.items() if given != loaded]
    if changed:
        repository = key.endswith("_repo")
        raise RunConfigOverrideRefused(
            f"this run's config changes the {key} resource's {', '.join(changed)}: "
            f"{'repository' if repository else 'connection'} settings come from the environment the code location "
            f"was loaded with, not from run config; remove resources.{key} from the run config. "
            + ("Nothing was read or written" if repository else "Nothing was sent")
        )


class PinnedPostgresResource(PostgresResource):
    """PostgresResource as bound by `build_resources`: no setting other than the environment's."""

    def settings(self) -> PostgresSettings:
        given = super().settings()
        refuse_overrides("postgres", compared(given, current_settings().postgres))
        return given


class PinnedRedisResource(RedisResource):
    """RedisResource as bound by `build_resources`: no setting other than the environment's."""

    def settings(self) -> RedisSettings:
        given = super().settings()
        refuse_overrides("redis", compared(given, current_settings().redis))
        return given


class PinnedKafkaResource(KafkaResource):
    """KafkaResource as bound by `build_resources`: no setting other than the environment's."""

    def settings(self) -> KafkaSettings:
        given = super().settings()
        refuse_overrides("kafka", compared(given, current_settings().kafka))
        return given


class PinnedBackupRepositoryResource(BackupRepositoryResource):
    """BackupRepositoryResource as bound by `build_resources`: the environment's root and keys only."""

    def repository(self) -> Repository:
        s = current_settings()
        refuse_overrides(
            "backup_repo",
            {
                "root": (self.root, s.repository.root),
                "compression": (self.compression, s.repository.compression),
                "encryption_key_file": (self.encryption_key_file, s.encryption.key_file),
                "encryption_keys": (self.encryption_keys, s.encryption.keys),
            },
        )
        return super().repository()


class PinnedOffsiteRepositoryResource(OffsiteRepositoryResource):
    """OffsiteRepositoryResource as bound by `build_resources`: the environment's bucket, endpoint and keys only."""

    def repository(self) -> Repository:
        # The fields the resource has (the same names as the settings'); the offsite retention
        # counts are settings only, read by the retention sensor, never by this resource.
        loaded = current_settings().offsite
        refuse_overrides(
            "offsite_repo", {name: (getattr(self, name), getattr(loaded, name)) for name in VARIABLES["offsite_repo"]}
        )
        return super().repository()


def _secret(name: str, value: str):
    """EnvVar when set (Dagster stores and shows the variable's name only), else empty: an unset
    EnvVar would fail every run launch."""
    return EnvVar(name) if value else ""


def build_resources(s: Settings) -> dict[str, ConfigurableResource]:
    """Resources bound from the settings, with Auction Flow's defaults when unset; pinned: pass
    `current_settings()`, which is what their every use is compared with."""
    pg, rd, kf, repo = s.postgres, s.redis, s.kafka, s.repository
    resources: dict[str, ConfigurableResource] = {
        "postgres": PinnedPostgresResource(
            host=pg.host,
            port=pg.port,
            dbname=pg.dbname,
            user=pg.user,
            password=EnvVar("POSTGRES_PASSWORD"),
            bin_dir=pg.bin_dir,
            sslmode=pg.sslmode,
            sslrootcert=pg.sslrootcert,
            base_backup_max_rate=pg.base_backup_max_rate,
        ),
        "redis": PinnedRedisResource(
            host=rd.host,
            port=rd.port,
            username=rd.username,
            data_dir=rd.data_dir,
            password=_secret("REDIS_PASSWORD", rd.password),
            tls=rd.tls,
            tls_ca_file=rd.tls_ca_file,
            tls_cert_file=rd.tls_cert_file,
            tls_key_file=rd.tls_key_file,
        ),
        "kafka": PinnedKafkaResource(
            bootstrap_servers=kf.bootstrap_servers,
            topics=list(kf.topics),
            security_protocol=kf.security_protocol,
            ssl_ca_file=kf.ssl_ca_file,
            sasl_mechanism=kf.sasl_mechanism,
            sasl_username=kf.sasl_username,
            sasl_password=_secret("KAFKA_SASL_PASSWORD", kf.sasl_password),
            export_max_bytes_per_s=kf.export_max_bytes_per_s,
        ),
        "backup_repo": PinnedBackupRepositoryResource(
            root=repo.root,
            compression=repo.compression,
            encryption_key_file=s.encryption.key_file,
            encryption_keys=_secret("BACKUP_ENCRYPTION_KEYS", s.encryption.keys),
        ),
    }
    off = s.offsite
    if off.configured:
        resources["offsite_repo"] = PinnedOffsiteRepositoryResource(
            bucket=off.bucket,
            prefix=off.prefix,
            endpoint_url=off.endpoint_url,
            region=off.region,
            access_key_id=_secret("OFFSITE_S3_ACCESS_KEY_ID", off.access_key_id),
            secret_access_key=_secret("OFFSITE_S3_SECRET_ACCESS_KEY", off.secret_access_key),
            encryption_key_file=off.encryption_key_file,
            encryption_keys=_secret("OFFSITE_ENCRYPTION_KEYS", off.encryption_keys),
            max_bytes_per_s=off.max_bytes_per_s,
        )
    return resources

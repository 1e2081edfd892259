"""Where backups go: the local repository, its encryption, the offsite copy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from auction_backup_pipelines.settings.reader import Reader

COMPRESSIONS: tuple[str, ...] = ("gzip", "none", "zstd")
"""The codecs the repository writes (repository.COMPRESSIONS); checked here to name the variable."""


@dataclass(frozen=True)
class RepositorySettings:
    root: str = "backups"
    compression: str = "zstd"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RepositorySettings:
        env = Reader(environ)
        return cls(
            root=env.text("BACKUP_ROOT", cls.root), compression=env.choice("BACKUP_COMPRESSION", cls.compression, COMPRESSIONS)
        )


@dataclass(frozen=True)
class EncryptionSettings:
    """Keys of the local repository; neither set: no encryption (repository.encryption.Encryption.from_settings)."""

    key_file: str = ""
    keys: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EncryptionSettings:
        env = Reader(environ)
        return cls(key_file=env.raw("BACKUP_ENCRYPTION_KEY_FILE"), keys=env.keyring("BACKUP_ENCRYPTION_KEYS"))


@dataclass(frozen=True)
class OffsiteSettings:
    """The S3-compatible offsite repository, with its own keys; no bucket: no offsite copies."""

    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    access_key_id: str = field(default="", repr=False)
    secret_access_key: str = field(default="", repr=False)
    compression: str = "zstd"
    """For backups written there directly (copies keep the source's compression)."""
    encryption_key_file: str = ""
    encryption_keys: str = field(default="", repr=False)
    retention_daily: int | None = None
    retention_weekly: int | None = None
    retention_monthly: int | None = None
    """Offsite retention counts; None (unset) keeps the local repository's count for every artifact
    (policy/offsite_retention.py), a number overrides that count for every artifact offsite."""
    max_bytes_per_s: int = 0
    """Pace of uploads to the bucket, in bytes per second (OFFSITE_S3_MAX_BYTES_PER_S; 0: unlimited)."""

    @property
    def configured(self) -> bool:
        return bool(self.bucket)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OffsiteSettings:
        env = Reader(environ)
        return cls(
            bucket=env.raw("OFFSITE_S3_BUCKET"),
            prefix=env.raw("OFFSITE_S3_PREFIX"),
            endpoint_url=env.raw("OFFSITE_S3_ENDPOINT_URL"),
            region=env.raw("OFFSITE_S3_REGION"),
            access_key_id=env.raw("OFFSITE_S3_ACCESS_KEY_ID"),
            secret_access_key=env.raw("OFFSITE_S3_SECRET_ACCESS_KEY"),
            compression=env.choice("OFFSITE_COMPRESSION", cls.compression, COMPRESSIONS),
            encryption_key_file=env.raw("OFFSITE_ENCRYPTION_KEY_FILE"),
            encryption_keys=env.keyring("OFFSITE_ENCRYPTION_KEYS"),
            retention_daily=_count(env, "OFFSITE_RETENTION_DAILY"),
            retention_weekly=_count(env, "OFFSITE_RETENTION_WEEKLY"),
            retention_monthly=_count(env, "OFFSITE_RETENTION_MONTHLY"),
            max_bytes_per_s=env.byte_rate("OFFSITE_S3_MAX_BYTES_PER_S"),
        )


def _count(env: Reader, name: str) -> int | None:
    """An optional retention count: None when unset (the local policy applies), else a whole number >= 0."""
    return env.integer(name, 0, 0, unit="buckets") if env.raw(name).strip() else None


# --------------------------------------------------------------------------- schedules and checks

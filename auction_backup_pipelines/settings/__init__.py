"""Every environment variable the project reads, parsed and validated once, with the platform's defaults.

Engines never read the environment: the CLI (`main`) and the Dagster loader call `load_settings()`
once and hand each engine the group it needs, so a restore works while Dagster is down and a
malformed variable fails with one line naming it instead of mid-run: at load for Dagster, at the
first use of its group for the CLI (a restore is not refused over a variable it never reads). Plain Python (no
Dagster). Secrets are kept out of every repr and every message; they reach child processes
through their environment only. README.md's Configuration table lists `ENVIRONMENT_VARIABLES`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings.alerting import AlertingSettings
from auction_backup_pipelines.settings.operations import MetricsSettings, RetentionSettings, VerificationSettings, WalSettings
from auction_backup_pipelines.settings.reader import Reader, host_port
from auction_backup_pipelines.settings.storage import COMPRESSIONS, EncryptionSettings, OffsiteSettings, RepositorySettings
from auction_backup_pipelines.settings.systems import (
    AUCTION_TOPICS,
    KafkaSettings,
    PostgresSettings,
    RedisSettings,
    RestoreSettings,
)

__all__ = [
    "AUCTION_TOPICS",
    "COMPRESSIONS",
    "ENVIRONMENT_VARIABLES",
    "SECRET_VARIABLES",
    "AlertingSettings",
    "EncryptionSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OffsiteSettings",
    "PostgresSettings",
    "RedisSettings",
    "RepositorySettings",
    "RestoreSettings",
    "RetentionSettings",
    "Settings",
    "UnusableGroup",
    "VerificationSettings",
    "WalSettings",
    "host_port",
    "load_settings",
]

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    *("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "PGBIN"),
    *("POSTGRES_SSLMODE", "POSTGRES_SSLROOTCERT", "BASE_BACKUP_MAX_RATE"),
    *("REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_DATA_DIR"),
    *("REDIS_TLS", "REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"),
    *("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPICS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SSL_CA_FILE"),
    *("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_EXPORT_MAX_BYTES_PER_S"),
    "KAFKA_EXPORT_PARALLEL_TOPICS",
    *("RESTORE_ALLOWED_REDIS", "RESTORE_REDIS_USERNAME", "RESTORE_REDIS_PASSWORD", "RESTORE_ALLOWED_KAFKA", "RESTORE_JOBS"),
    *("BACKUP_ROOT", "BACKUP_COMPRESSION", "BACKUP_ENCRYPTION_KEY_FILE", "BACKUP_ENCRYPTION_KEYS", "BACKUP_PARTITIONS_START"),
    *("OFFSITE_S3_BUCKET", "OFFSITE_S3_PREFIX", "OFFSITE_S3_ENDPOINT_URL", "OFFSITE_S3_REGION"),
    *("OFFSITE_S3_ACCESS_KEY_ID", "OFFSITE_S3_SECRET_ACCESS_KEY", "OFFSITE_COMPRESSION"),
    *("OFFSITE_ENCRYPTION_KEY_FILE", "OFFSITE_ENCRYPTION_KEYS", "OFFSITE_S3_MAX_BYTES_PER_S"),
    *("OFFSITE_RETENTION_DAILY", "OFFSITE_RETENTION_WEEKLY", "OFFSITE_RETENTION_MONTHLY"),
    *("WAL_SPOOL_DIR", "WAL_ARCHIVE_MAX_LAG_S", "WAL_ARCHIVE_SENSOR_INTERVAL_S"),
    *("WAL_METRICS_PORT", "METRICS_TEXTFILE_DIR"),
    *(
        "VERIFICATION_MAX_AGE_DAYS",
        "BACKUP_DEADLINE_GRACE_S",
        "RETENTION_SENSOR_INTERVAL_S",
        "RETENTION_DRY_RUN",
        "PITR_WINDOW_DAYS",
    ),
    "LEFTOVER_SAFETY_AGE_S",
    *("ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET_HEADER", "ALERT_WEBHOOK_TIMEOUT_S", "ALERT_WEBHOOK_ALLOW_HTTP"),
    *("ALERT_SMTP_HOST", "ALERT_SMTP_PORT", "ALERT_SMTP_FROM", "ALERT_SMTP_TO", "ALERT_SMTP_USER", "ALERT_SMTP_PASSWORD"),
    *("ALERT_SMTP_TLS", "ALERT_SMTP_STARTTLS", "ALERT_SMTP_CA_FILE", "ALERT_SMTP_TIMEOUT_S"),
    *("ALERT_CHECK_SENSOR_INTERVAL_S", "ALERT_CHECK_REPEAT_S", "ALERT_CHECK_LOOKBACK_S"),
    *("DAGSTER_WEBSERVER_URL", "DAGSTER_PORT"),
)
"""Every variable `load_settings` reads (README.md's Configuration table lists the same)."""

SECRET_VARIABLES: frozenset[str] = frozenset(
    {
        *("POSTGRES_PASSWORD", "REDIS_PASSWORD", "RESTORE_REDIS_PASSWORD", "BACKUP_ENCRYPTION_KEYS"),
        "KAFKA_SASL_PASSWORD",
        *("OFFSITE_S3_ACCESS_KEY_ID", "OFFSITE_S3_SECRET_ACCESS_KEY", "OFFSITE_ENCRYPTION_KEYS"),
        *("ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET_HEADER", "ALERT_SMTP_PASSWORD"),
    }
)
"""Variables whose value is never shown: not in a repr, not in an error (the Dagster layer binds them with EnvVar)."""


@dataclass(frozen=True)
class Settings:
    """Every setting of the project, one group per concern; build it with `load_settings`."""

    postgres: PostgresSettings = field(default_factory=PostgresSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    encryption: EncryptionSettings = field(default_factory=EncryptionSettings)
    offsite: OffsiteSettings = field(default_factory=OffsiteSettings)
    partitions_start: str = ""
    """First partition day of every backup asset (BACKUP_PARTITIONS_START, YYYY-MM-DD). Empty: chosen
    once by the Dagster loader and recorded in BACKUP_ROOT (repository/partitions_start.py)."""
    wal: WalSettings = field(default_factory=WalSettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


class UnusableGroup:
    """Stands in for a settings group whose variables are malformed: any use raises its parse error.

    Lets a CLI command run when a variable it never reads is wrong: a restore at 3 a.m. must not
    be refused because of a malformed alert port or offsite key (see `load_settings(tolerant=True)`).
    """

    def __init__(self, error: ConfigurationError) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        raise self.error


def load_settings(environ: Mapping[str, str] = os.environ, *, tolerant: bool = False) -> Settings:
    """Parse and validate every variable once; a malformed one raises ConfigurationError naming it
    (and its value, unless it is a secret). With `tolerant`, a malformed group is replaced by an
    `UnusableGroup` and raises only when something uses it (the CLI: each command reads only
    the groups it needs); the Dagster loaders stay strict, so a bad variable fails the load."""
    parsers: dict[str, Any] = {
        "postgres": PostgresSettings.from_env,
        "redis": RedisSettings.from_env,
        "kafka": KafkaSettings.from_env,
        "restore": RestoreSettings.from_env,
        "repository": RepositorySettings.from_env,
        "encryption": EncryptionSettings.from_env,
        "offsite": OffsiteSettings.from_env,
        "partitions_start": lambda env: (
            Reader(env).day("BACKUP_PARTITIONS_START", Settings.partitions_start)
            if Reader(env).raw("BACKUP_PARTITIONS_START")
            else ""
        ),
        "wal": WalSettings.from_env,
        "verification": VerificationSettings.from_env,
        "retention": RetentionSettings.from_env,
        "alerting": AlertingSettings.from_env,
        "metrics": MetricsSettings.from_env,
    }
    groups: dict[str, Any] = {}
    for name, parse in parsers.items():
        try:
            groups[name] = parse(environ)
        except ConfigurationError as exc:
            if not tolerant:
                raise
            groups[name] = UnusableGroup(exc)
    return Settings(**groups)

"""Every environment variable the project reads, parsed and validated once, with the platform's defaults.

Engines never read the environment: the CLI (`main`) and the Dagster loader call `load_settings()`
once and hand each engine the group it needs, so a restore works while Dagster is down and a
malformed variable fails with one line naming it instead of mid-run: at load for Dagster, at the
first use of its group for the CLI (a restore is not refused over a variable it never reads). Plain Python (no
Dagster). Secrets are kept out of every repr and every message; they reach child processes
through their environment only. README.md's Configuration table lists `ENVIRONMENT_VARIABLES`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auction_backup_pipelines.errors import ConfigurationError

AUCTION_TOPICS: tuple[str, ...] = ("auction-events", "bid-events", "auction-closed", "payment-events")
COMPRESSIONS: tuple[str, ...] = ("gzip", "none", "zstd")
"""The codecs the repository writes (repository.COMPRESSIONS); checked here to name the variable."""

ENVIRONMENT_VARIABLES: tuple[str, ...] = (
    *("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD", "PGBIN"),
    *("REDIS_HOST", "REDIS_PORT", "REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_DATA_DIR"),
    *("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TOPICS"),
    *("RESTORE_ALLOWED_REDIS", "RESTORE_REDIS_USERNAME", "RESTORE_REDIS_PASSWORD", "RESTORE_ALLOWED_KAFKA"),
    *("BACKUP_ROOT", "BACKUP_COMPRESSION", "BACKUP_ENCRYPTION_KEY_FILE", "BACKUP_ENCRYPTION_KEYS", "BACKUP_PARTITIONS_START"),
    *("OFFSITE_S3_BUCKET", "OFFSITE_S3_PREFIX", "OFFSITE_S3_ENDPOINT_URL", "OFFSITE_S3_REGION"),
    *("OFFSITE_S3_ACCESS_KEY_ID", "OFFSITE_S3_SECRET_ACCESS_KEY", "OFFSITE_COMPRESSION"),
    *("OFFSITE_ENCRYPTION_KEY_FILE", "OFFSITE_ENCRYPTION_KEYS"),
    *("WAL_SPOOL_DIR", "WAL_ARCHIVE_MAX_LAG_S", "WAL_ARCHIVE_SENSOR_INTERVAL_S"),
    *("VERIFICATION_MAX_AGE_DAYS", "RETENTION_SENSOR_INTERVAL_S", "RETENTION_DRY_RUN"),
    *("ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET_HEADER", "ALERT_WEBHOOK_TIMEOUT_S"),
    *("ALERT_SMTP_HOST", "ALERT_SMTP_PORT", "ALERT_SMTP_FROM", "ALERT_SMTP_TO", "ALERT_SMTP_USER", "ALERT_SMTP_PASSWORD"),
    *("ALERT_SMTP_STARTTLS", "ALERT_SMTP_TIMEOUT_S"),
    *("ALERT_CHECK_SENSOR_INTERVAL_S", "ALERT_CHECK_REPEAT_S", "ALERT_CHECK_LOOKBACK_S"),
    *("DAGSTER_WEBSERVER_URL", "DAGSTER_PORT"),
)
"""Every variable `load_settings` reads (README.md's Configuration table lists the same)."""

SECRET_VARIABLES: frozenset[str] = frozenset(
    {
        *("POSTGRES_PASSWORD", "REDIS_PASSWORD", "RESTORE_REDIS_PASSWORD", "BACKUP_ENCRYPTION_KEYS"),
        *("OFFSITE_S3_ACCESS_KEY_ID", "OFFSITE_S3_SECRET_ACCESS_KEY", "OFFSITE_ENCRYPTION_KEYS"),
        *("ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_SECRET_HEADER", "ALERT_SMTP_PASSWORD"),
    }
)
"""Variables whose value is never shown: not in a repr, not in an error (the Dagster layer binds them with EnvVar)."""

_KEY_ITEM = re.compile(r"^[A-Za-z0-9._-]{1,64}:(.+)$")
_HOST = re.compile(r"^[A-Za-z0-9._%:-]+$")


def host_port(text: str) -> tuple[str, int] | None:
    """("host", port) of "host:port" or "[IPv6]:port", the host lowercased and unbracketed; None if it is not one."""
    host, _, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    ok = _HOST.match(host) and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    return (host.lower(), int(port)) if ok else None


class _Reader:
    """Reads one variable at a time from a mapping, each with its validation and a one-line error."""

    def __init__(self, environ: Mapping[str, str] | None):
        self.environ = os.environ if environ is None else environ

    def raw(self, name: str) -> str:
        """The value as set, '' when unset (secrets and paths: taken verbatim)."""
        return self.environ.get(name) or ""

    def text(self, name: str, default: str) -> str:
        """The value, or `default` when unset or empty."""
        return self.raw(name) or default

    def stripped(self, name: str, default: str = "") -> str:
        return self.raw(name).strip() or default

    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None, unit: str = "") -> int:
        raw = self.raw(name)
        if not raw.strip():
            return default
        what = f"a whole number{' of ' + unit if unit else ''}"
        if minimum is not None and maximum is not None:
            what += f" from {minimum} to {maximum}"
        elif minimum is not None:
            what += f" >= {minimum}"
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be {what}, got {raw!r}") from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise ConfigurationError(f"{name} must be {what}, got {raw!r}")
        return value

    def positive(self, name: str, default: float, unit: str = "seconds") -> float:
        raw = self.raw(name)
        if not raw.strip():
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of {unit}, got {raw!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise ConfigurationError(f"{name} must be positive, got {raw!r}")
        return value

    def flag(self, name: str) -> bool:
        """1, true, yes, on (any case) are on; anything else, or unset, is off."""
        return self.raw(name).strip().lower() in ("1", "true", "yes", "on")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default)
        if value not in choices:
            raise ConfigurationError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def keyring(self, name: str) -> str:
        """'<key id>:<base64 32-byte key>', comma- or space-separated; decoded by repository/encryption."""
        raw = self.raw(name)
        items = [item for item in re.split(r"[,\s]+", raw.strip()) if item]
        for item in items or ([raw] if raw else []):
            match = _KEY_ITEM.match(item)
            try:
                ok = match is not None and len(base64.b64decode(match.group(1), validate=True)) == 32
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                raise ConfigurationError(
                    f"{name} is malformed (expected <key id>:<base64 of 32 bytes>, comma-separated; the value is not shown)"
                )
        return raw

    def addresses(self, name: str) -> tuple[str, ...]:
        """host:port items, comma- or space-separated, each checked by `host_port`."""
        items = _items(self.raw(name), ", ")
        if bad := [item for item in items if host_port(item) is None]:
            raise ConfigurationError(f"{name} must be host:port addresses, comma-separated, got {self.raw(name)!r} ({bad[0]!r})")
        return items

    def day(self, name: str, default: str) -> str:
        value = self.text(name, default)
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigurationError(f"{name} must be a day YYYY-MM-DD, got {value!r}") from None
        if len(value) != 10:
            raise ConfigurationError(f"{name} must be a day YYYY-MM-DD, got {value!r}")
        return value


def _items(raw: str, separators: str = ",") -> tuple[str, ...]:
    for sep in separators[1:]:
        raw = raw.replace(sep, separators[0])
    return tuple(item.strip() for item in raw.split(separators[0]) if item.strip())


# --------------------------------------------------------------------------- the systems backed up


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
        env = _Reader(environ)
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
        env = _Reader(environ)
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
        env = _Reader(environ)
        topics = _items(env.text("KAFKA_TOPICS", ",".join(AUCTION_TOPICS)))
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
        env = _Reader(environ)
        return cls(
            redis_targets=env.addresses("RESTORE_ALLOWED_REDIS"),
            redis_username=env.raw("RESTORE_REDIS_USERNAME"),
            redis_password=env.raw("RESTORE_REDIS_PASSWORD"),
            kafka_targets=env.addresses("RESTORE_ALLOWED_KAFKA"),
        )


# --------------------------------------------------------------------------- where backups go


@dataclass(frozen=True)
class RepositorySettings:
    root: str = "backups"
    compression: str = "zstd"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RepositorySettings:
        env = _Reader(environ)
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
        env = _Reader(environ)
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

    @property
    def configured(self) -> bool:
        return bool(self.bucket)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OffsiteSettings:
        env = _Reader(environ)
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
        )


# --------------------------------------------------------------------------- schedules and checks


@dataclass(frozen=True)
class WalSettings:
    spool_dir: str = "wal_spool"
    """Local folder pg_receivewal writes into before the receiver ships a segment (WAL_SPOOL_DIR)."""
    max_lag_s: float = 300.0
    """The archive check fails when the newest archived WAL is older than this."""
    sensor_interval_s: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WalSettings:
        env = _Reader(environ)
        return cls(
            spool_dir=env.text("WAL_SPOOL_DIR", cls.spool_dir),
            max_lag_s=env.positive("WAL_ARCHIVE_MAX_LAG_S", cls.max_lag_s),
            sensor_interval_s=env.integer("WAL_ARCHIVE_SENSOR_INTERVAL_S", cls.sensor_interval_s, 1, unit="seconds"),
        )


@dataclass(frozen=True)
class VerificationSettings:
    max_age_days: float = 8.0
    """`verified_recently` fails once the newest successful restore check is older than this."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VerificationSettings:
        return cls(max_age_days=_Reader(environ).positive("VERIFICATION_MAX_AGE_DAYS", cls.max_age_days, "days"))


@dataclass(frozen=True)
class RetentionSettings:
    sensor_interval_s: int = 3600
    """At least 30: the daemon's tick granularity; smaller values only add load."""
    dry_run: bool = False
    """Cleanup runs only report what they would delete."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionSettings:
        env = _Reader(environ)
        return cls(
            sensor_interval_s=env.integer("RETENTION_SENSOR_INTERVAL_S", cls.sensor_interval_s, 30, unit="seconds"),
            dry_run=env.flag("RETENTION_DRY_RUN"),
        )


@dataclass(frozen=True)
class AlertingSettings:
    """Alert sinks (ops/sinks.py) and the alert sensors; no sink configured: alerts are only logged.
    Whether a sink is complete is checked when sinks are built (`sinks.sinks_from_settings`)."""

    webhook_url: str = field(default="", repr=False)
    webhook_secret_header: str = field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    smtp_host: str = ""
    smtp_port: int = 0
    """0: 25, or 587 with STARTTLS."""
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    dagster_url: str = "http://127.0.0.1:3000"
    """Base URL of the Dagster webserver, for links in alerts."""
    check_sensor_interval_s: int = 60
    check_repeat_s: int = 86400
    """Alert a check that keeps failing (same partition) again after this long; 0: every failed evaluation."""
    check_lookback_s: int = 86400
    """On the check sensor's first tick, failures older than this are history, not alerts."""

    SINK_FIELDS = (
        "webhook_url",
        "webhook_secret_header",
        "webhook_timeout_s",
        "smtp_host",
        "smtp_port",
        "smtp_from",
        "smtp_to",
        "smtp_user",
        "smtp_password",
        "smtp_starttls",
        "smtp_timeout_s",
    )

    def sink_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `sinks.build_sinks` (and the sink fields of the Dagster resource)."""
        kwargs = {name: getattr(self, name) for name in self.SINK_FIELDS}
        kwargs["smtp_to"] = list(self.smtp_to)
        return kwargs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertingSettings:
        env = _Reader(environ)
        port = env.integer("DAGSTER_PORT", 3000, 1, 65535)
        return cls(
            webhook_url=env.stripped("ALERT_WEBHOOK_URL"),
            webhook_secret_header=env.stripped("ALERT_WEBHOOK_SECRET_HEADER"),
            webhook_timeout_s=env.positive("ALERT_WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s),
            smtp_host=env.stripped("ALERT_SMTP_HOST"),
            smtp_port=env.integer("ALERT_SMTP_PORT", cls.smtp_port, 0, 65535),
            smtp_from=env.stripped("ALERT_SMTP_FROM"),
            smtp_to=_items(env.raw("ALERT_SMTP_TO"), ",;"),
            smtp_user=env.stripped("ALERT_SMTP_USER"),
            smtp_password=env.raw("ALERT_SMTP_PASSWORD"),
            smtp_starttls=env.flag("ALERT_SMTP_STARTTLS"),
            smtp_timeout_s=env.positive("ALERT_SMTP_TIMEOUT_S", cls.smtp_timeout_s),
            dagster_url=env.stripped("DAGSTER_WEBSERVER_URL", f"http://127.0.0.1:{port}"),
            check_sensor_interval_s=env.integer("ALERT_CHECK_SENSOR_INTERVAL_S", cls.check_sensor_interval_s, 30, unit="seconds"),
            check_repeat_s=env.integer("ALERT_CHECK_REPEAT_S", cls.check_repeat_s, 0, unit="seconds"),
            check_lookback_s=env.integer("ALERT_CHECK_LOOKBACK_S", cls.check_lookback_s, 0, unit="seconds"),
        )


# --------------------------------------------------------------------------- all of it


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
    partitions_start: str = "2026-11-01"
    """First partition day of every backup asset (BACKUP_PARTITIONS_START, YYYY-MM-DD)."""
    wal: WalSettings = field(default_factory=WalSettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)


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
        "partitions_start": lambda env: _Reader(env).day("BACKUP_PARTITIONS_START", Settings.partitions_start),
        "wal": WalSettings.from_env,
        "verification": VerificationSettings.from_env,
        "retention": RetentionSettings.from_env,
        "alerting": AlertingSettings.from_env,
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

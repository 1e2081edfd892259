"""Settings of the systems backed up (PostgreSQL, Redis, Kafka) and of the targets restores may write to."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings.reader import Reader, items

AUCTION_TOPICS: tuple[str, ...] = ("auction-events", "bid-events", "auction-closed", "payment-events")
POSTGRES_SSLMODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
"""libpq's sslmode values; only verify-ca and verify-full check the server's certificate."""


@dataclass(frozen=True)
class PostgresSettings:
    host: str = "localhost"
    port: int = 5432
    dbname: str = "auctionflow"
    user: str = "auctionuser"
    password: str = field(default="", repr=False)
    bin_dir: str = ""
    """Folder of PostgreSQL's programs (PGBIN); empty: /usr/lib/postgresql/15/bin, then PATH."""
    sslmode: str = ""
    """libpq's sslmode for every connection and client program (POSTGRES_SSLMODE); empty: libpq's
    own default, prefer (or PGSSLMODE when the operator set that). Production: verify-full."""
    sslrootcert: str = ""
    """PEM file of the CA(s) trusted for the server's certificate (POSTGRES_SSLROOTCERT)."""
    base_backup_max_rate: str = ""
    """`pg_basebackup --max-rate` (BASE_BACKUP_MAX_RATE): kB/s, or with k or M, 32k to 1024M; empty: unlimited."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PostgresSettings:
        env = Reader(environ)
        sslmode = env.stripped("POSTGRES_SSLMODE")
        if sslmode and sslmode not in POSTGRES_SSLMODES:
            raise ConfigurationError(f"POSTGRES_SSLMODE must be one of {', '.join(POSTGRES_SSLMODES)}, got {sslmode!r}")
        sslrootcert = env.stripped("POSTGRES_SSLROOTCERT")
        if sslrootcert and sslmode not in ("require", "verify-ca", "verify-full"):
            # With prefer or allow libpq never looks at the CA: an operator who named one would
            # believe the server is verified while anyone on the path could answer in its place.
            raise ConfigurationError(
                f"POSTGRES_SSLROOTCERT is set but POSTGRES_SSLMODE is {sslmode or 'unset (prefer)'}, which does not "
                "verify the server's certificate; set POSTGRES_SSLMODE=verify-full"
            )
        return cls(
            host=env.text("POSTGRES_HOST", cls.host),
            port=env.integer("POSTGRES_PORT", cls.port, 1, 65535),
            dbname=env.text("POSTGRES_DB", cls.dbname),
            user=env.text("POSTGRES_USER", cls.user),
            password=env.raw("POSTGRES_PASSWORD"),
            bin_dir=env.raw("PGBIN"),
            sslmode=sslmode,
            sslrootcert=sslrootcert,
            base_backup_max_rate=base_backup_max_rate(env),
        )


_MAX_RATE = re.compile(r"^(\d+)([kM]?)$")


def base_backup_max_rate(env: Reader) -> str:
    """BASE_BACKUP_MAX_RATE as pg_basebackup takes it (kB/s by default, k or M suffix, 32 kB/s to 1 GB/s),
    checked here so that a typo fails at load with the variable's name, not mid-backup."""
    raw = env.stripped("BASE_BACKUP_MAX_RATE")
    match = _MAX_RATE.match(raw)
    if raw and not (match and 32 <= int(match.group(1)) * (1024 if match.group(2) == "M" else 1) <= 1048576):
        raise ConfigurationError(
            f"BASE_BACKUP_MAX_RATE must be pg_basebackup's --max-rate, 32 to 1048576 kB/s (e.g. 1024, 1024k, 32M; "
            f"empty: unlimited), got {env.raw('BASE_BACKUP_MAX_RATE')!r}"
        )
    return raw


@dataclass(frozen=True)
class RedisSettings:
    host: str = "localhost"
    port: int = 7001
    password: str = field(default="", repr=False)
    username: str = ""
    data_dir: str = ""
    """The server's data dir when it is on this machine (REDIS_DATA_DIR): BGSAVE-and-copy and the AOF fallback."""
    tls: bool = False
    """Connect with TLS, verifying the certificate and the host name (REDIS_TLS); also used for restore targets."""
    tls_ca_file: str = ""
    """PEM file of the CA(s) trusted for the server's certificate (REDIS_TLS_CA_FILE); empty: the system's."""
    tls_cert_file: str = ""
    """Client certificate (PEM) for servers that ask for one (REDIS_TLS_CERT_FILE), with REDIS_TLS_KEY_FILE."""
    tls_key_file: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisSettings:
        env = Reader(environ)
        tls = env.flag("REDIS_TLS")
        ca, cert, key = (env.stripped(f"REDIS_TLS_{name}_FILE") for name in ("CA", "CERT", "KEY"))
        if not tls and (ca or cert or key):
            raise ConfigurationError(
                "REDIS_TLS_CA_FILE/REDIS_TLS_CERT_FILE/REDIS_TLS_KEY_FILE are set but REDIS_TLS is off; set REDIS_TLS=1"
            )
        if bool(cert) != bool(key):
            raise ConfigurationError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together: set both or neither")
        return cls(
            host=env.text("REDIS_HOST", cls.host),
            port=env.integer("REDIS_PORT", cls.port, 1, 65535),
            password=env.raw("REDIS_PASSWORD"),
            username=env.raw("REDIS_USERNAME"),
            data_dir=env.raw("REDIS_DATA_DIR"),
            tls=tls,
            tls_ca_file=ca,
            tls_cert_file=cert,
            tls_key_file=key,
        )


KAFKA_SECURITY_PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSettings:
    """The cluster backed up, and how every client of ours reaches it (kafka/connection.py); a
    restore into another cluster uses the same security settings."""

    bootstrap_servers: str = "localhost:9092"
    topics: tuple[str, ...] = AUCTION_TOPICS
    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (KAFKA_SECURITY_PROTOCOL)."""
    ssl_ca_file: str = ""
    """PEM file of the CA(s) trusted for the brokers' certificates (KAFKA_SSL_CA_FILE); empty: the system's."""
    sasl_mechanism: str = ""
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (KAFKA_SASL_MECHANISM), with the SASL protocols only."""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    export_max_bytes_per_s: int = 0
    """Pace of a topic export, in bytes of messages per second (KAFKA_EXPORT_MAX_BYTES_PER_S; 0: unlimited)."""
    export_parallel_topics: int = 2
    """Topics `backup kafka` exports at once (KAFKA_EXPORT_PARALLEL_TOPICS, 1-16)."""

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSettings:
        env = Reader(environ)
        topics = items(env.text("KAFKA_TOPICS", ",".join(AUCTION_TOPICS)))
        if not topics:
            raise ConfigurationError(f"KAFKA_TOPICS names no topic, got {env.raw('KAFKA_TOPICS')!r}")
        s = cls(
            bootstrap_servers=env.text("KAFKA_BOOTSTRAP_SERVERS", cls.bootstrap_servers),
            topics=topics,
            security_protocol=env.choice("KAFKA_SECURITY_PROTOCOL", cls.security_protocol, KAFKA_SECURITY_PROTOCOLS),
            ssl_ca_file=env.stripped("KAFKA_SSL_CA_FILE"),
            sasl_mechanism=env.stripped("KAFKA_SASL_MECHANISM"),
            sasl_username=env.raw("KAFKA_SASL_USERNAME"),
            sasl_password=env.raw("KAFKA_SASL_PASSWORD"),
            export_max_bytes_per_s=env.byte_rate("KAFKA_EXPORT_MAX_BYTES_PER_S"),
            export_parallel_topics=env.integer("KAFKA_EXPORT_PARALLEL_TOPICS", 2, minimum=1, maximum=16),
        )
        protocol = f"KAFKA_SECURITY_PROTOCOL is {s.security_protocol}"
        if s.ssl_ca_file and not s.uses_tls:
            raise ConfigurationError(f"KAFKA_SSL_CA_FILE is set but {protocol}; use SSL or SASL_SSL")
        if s.uses_sasl:
            if s.sasl_mechanism not in KAFKA_SASL_MECHANISMS:
                raise ConfigurationError(
                    f"KAFKA_SASL_MECHANISM must be one of {', '.join(KAFKA_SASL_MECHANISMS)} when {protocol}, got {s.sasl_mechanism!r}"
                )
            if not s.sasl_username or not s.sasl_password:
                raise ConfigurationError(f"KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required when {protocol}")
        elif s.sasl_mechanism or s.sasl_username or s.sasl_password:
            raise ConfigurationError(f"KAFKA_SASL_* are set but {protocol}; use SASL_SSL (or SASL_PLAINTEXT)")
        return s


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
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Parallel sessions of a PostgreSQL logical restore (`pg_restore -j`) and of its fingerprinting
    (RESTORE_JOBS; default: this machine's core count)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RestoreSettings:
        env = Reader(environ)
        return cls(
            redis_targets=env.addresses("RESTORE_ALLOWED_REDIS"),
            redis_username=env.raw("RESTORE_REDIS_USERNAME"),
            redis_password=env.raw("RESTORE_REDIS_PASSWORD"),
            kafka_targets=env.addresses("RESTORE_ALLOWED_KAFKA"),
            jobs=env.integer("RESTORE_JOBS", os.cpu_count() or 1, minimum=1, maximum=64),
        )


# --------------------------------------------------------------------------- where backups go

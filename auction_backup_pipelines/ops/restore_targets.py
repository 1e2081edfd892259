"""Where a restore may write: a target is checked against an allowlist before anything connects.

A restore's target comes from whoever launches it (`auction-backup restore`, a Dagster run's
config), and a restore sends it a backup's data and, for Redis, a password. So a target must be
the configured source (REDIS_HOST:REDIS_PORT, the brokers of KAFKA_BOOTSTRAP_SERVERS) or listed in
RESTORE_ALLOWED_REDIS / RESTORE_ALLOWED_KAFKA; anything else is refused before a socket is opened.
The production credentials (REDIS_USERNAME/REDIS_PASSWORD) go to the source only; every other
target gets RESTORE_REDIS_USERNAME/RESTORE_REDIS_PASSWORD (none when unset), even one the CLI
allows with --allow-any-target. TLS settings (REDIS_TLS*, KAFKA_SECURITY_PROTOCOL and its
companions) apply to every target as to the source. Addresses are compared as written (host names are not resolved:
`localhost` and `127.0.0.1` are different entries).

PostgreSQL has no list: a dump is restored into a database of the configured server with its
credentials, so neither data nor password leaves that server, and a non-empty database is
refused without --force. A PITR target is a local folder, checked by postgres/restore_target.py.
"""

from __future__ import annotations

import dataclasses

from auction_backup_pipelines.errors import ConfigurationError, RefusedError
from auction_backup_pipelines.settings import KafkaSettings, RedisSettings, RestoreSettings, host_port


class RestoreTargetRefused(RefusedError):
    """A restore target is not allowlisted; nothing was sent to it."""


def _address(text: str, what: str) -> tuple[str, int]:
    address = host_port(text)
    if address is None:
        raise ConfigurationError(f"{what} must be host:port, got {text!r}; nothing was sent")
    return address


def check_redis_target(target: str, source: RedisSettings, allowed: RestoreSettings, *, allow_any: bool = False) -> RedisSettings:
    """The connection settings for a restore into `target` ("host:port"), or RestoreTargetRefused
    when it is neither the source nor in RESTORE_ALLOWED_REDIS (unless `allow_any`, the CLI's flag)."""
    host, port = _address(target, "restore target")
    if (host, port) == host_port(f"{source.host}:{source.port}"):
        return dataclasses.replace(source, host=host, port=port)
    if not allow_any and (host, port) not in {host_port(item) for item in allowed.redis_targets}:
        raise RestoreTargetRefused(
            f"restore target {target.strip()} is neither REDIS_HOST:REDIS_PORT ({source.host}:{source.port}) "
            "nor listed in RESTORE_ALLOWED_REDIS; add it there to restore into it. Nothing was sent"
        )
    # The source's TLS settings (REDIS_TLS*) apply to every Redis server we reach; nothing else of it does.
    return RedisSettings(
        host=host,
        port=port,
        username=allowed.redis_username,
        password=allowed.redis_password,
        tls=source.tls,
        tls_ca_file=source.tls_ca_file,
        tls_cert_file=source.tls_cert_file,
        tls_key_file=source.tls_key_file,
    )


def check_kafka_target(bootstrap: str, source: KafkaSettings, allowed: RestoreSettings, *, allow_any: bool = False) -> str:
    """The bootstrap servers of a restore (`bootstrap`, or the source's when empty), or
    RestoreTargetRefused when one of its brokers is neither the source's nor in RESTORE_ALLOWED_KAFKA."""
    if not bootstrap.strip():
        return source.bootstrap_servers
    brokers = [item.strip() for item in bootstrap.split(",") if item.strip()]
    if not brokers:
        raise ConfigurationError(f"the target bootstrap names no broker, got {bootstrap!r}; nothing was sent")
    addresses = [_address(item, "each broker of the target bootstrap") for item in brokers]
    if allow_any:
        return bootstrap
    known = {host_port(item) for item in (*source.bootstrap_servers.split(","), *allowed.kafka_targets)}
    refused = [item for item, address in zip(brokers, addresses, strict=True) if address not in known]
    if refused:
        raise RestoreTargetRefused(
            f"restore target bootstrap {', '.join(refused)} is neither in KAFKA_BOOTSTRAP_SERVERS "
            f"({source.bootstrap_servers}) nor listed in RESTORE_ALLOWED_KAFKA; add it there to restore into it. Nothing was sent"
        )
    return bootstrap

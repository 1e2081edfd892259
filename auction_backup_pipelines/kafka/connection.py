"""How every Kafka client of ours reaches a cluster: one config builder, and one clear line when it cannot.

Every producer, consumer and admin client the project creates takes its configuration from
`client_config`, so KAFKA_SECURITY_PROTOCOL, KAFKA_SSL_CA_FILE and the SASL settings apply to
all of them alike. With TLS (SSL, SASL_SSL) librdkafka verifies the broker's certificate against
KAFKA_SSL_CA_FILE (the system's CAs when empty) and that it names the host dialled
(`ssl.endpoint.identification.algorithm=https`). The SASL password goes into the client's
configuration only: never into a message, metadata or a child's argv.

librdkafka reports a failed TLS handshake or SASL login through its error callback and keeps
retrying; a metadata request then merely times out ("Broker transport failure"). So each client
records those errors per bootstrap address (`error_cb`), and `list_topics` polls in short steps
and stops at the first one with a sentence naming the setting to fix, instead of waiting out
its timeout and blaming the network.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings import KafkaSettings, host_port

Cluster = KafkaSettings | str
"""Where a client connects: the settings of a cluster (address and security), or a bare
bootstrap address, reached in PLAINTEXT (tests and tools on the local stack)."""

_log = logging.getLogger("auction_backup_pipelines.kafka.client")
# librdkafka logs every failed reconnect at ERROR: kept for whoever configures logging (Dagster,
# a debugging operator), but never printed by Python's last-resort handler on a CLI's stderr,
# where the one line we raise says it all.
_log.addHandler(logging.NullHandler())
_failures: dict[str, str] = {}
"""Bootstrap address -> the first TLS or SASL failure a client of ours met there."""


def settings_of(cluster: Cluster) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=cluster) if isinstance(cluster, str) else cluster


def address(cluster: Cluster) -> str:
    """The bootstrap address of `cluster` (safe to show: no credential)."""
    return settings_of(cluster).bootstrap_servers


def for_target(source: KafkaSettings, bootstrap: str) -> KafkaSettings:
    """The settings to restore into `bootstrap`: the source's when it is the source's address;
    for another cluster, the same protocol and CA but no SASL credentials (the production
    password goes to the production cluster only), so a SASL target is refused at login."""
    brokers = {host_port(item) for item in bootstrap.split(",") if item.strip()}
    if brokers <= {host_port(item) for item in source.bootstrap_servers.split(",") if item.strip()}:
        return dataclasses.replace(source, bootstrap_servers=bootstrap)
    protocol = {"SASL_SSL": "SSL", "SASL_PLAINTEXT": "PLAINTEXT"}.get(source.security_protocol, source.security_protocol)
    return KafkaSettings(
        bootstrap_servers=bootstrap, topics=source.topics, security_protocol=protocol, ssl_ca_file=source.ssl_ca_file
    )


def security_config(s: KafkaSettings) -> dict[str, Any]:
    """librdkafka's security properties for `s` (none for PLAINTEXT)."""
    config: dict[str, Any] = {"security.protocol": s.security_protocol.lower()}
    if s.uses_tls:
        config["ssl.endpoint.identification.algorithm"] = "https"  # the certificate must name the host dialled
        if s.ssl_ca_file:
            if not os.access(s.ssl_ca_file, os.R_OK) or not os.path.isfile(s.ssl_ca_file):
                raise ConfigurationError(f"KAFKA_SSL_CA_FILE {s.ssl_ca_file!r} is not a readable file")
            config["ssl.ca.location"] = s.ssl_ca_file
    if s.uses_sasl:
        config["sasl.mechanism"] = s.sasl_mechanism
        config["sasl.username"] = s.sasl_username
        config["sasl.password"] = s.sasl_password
    return config


def client_config(cluster: Cluster, timeout: float) -> dict[str, Any]:
    """The configuration every producer, consumer and admin client of ours starts from."""
    s = settings_of(cluster)
    where = s.bootstrap_servers
    _failures.pop(where, None)  # a new client, perhaps with corrected settings: judge it afresh

    def record(err: KafkaError) -> None:
        if problem := explain_error(err, s):
            _failures.setdefault(where, problem)

    return {
        "bootstrap.servers": where,
        "client.id": "auction-backup",
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
        # A broker that is down makes librdkafka log every reconnect; route that to logging
        # instead of stderr, the exception we raise says it once and clearly.
        "logger": _log,
        "error_cb": record,
        **security_config(s),
    }


def librdkafka_properties(config: dict[str, Any]) -> dict[str, str]:
    """`config` (a client_config) as librdkafka's string properties, for a native helper: the
    same settings as our Python clients', without the Python callbacks (logger, error_cb)."""
    props = {}
    for key, value in config.items():
        if isinstance(value, bool):
            props[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            props[key] = str(value)
    return props


def explain_error(err: KafkaError, s: KafkaSettings) -> str | None:
    """One sentence for a TLS or SASL failure librdkafka reported; None for any other error."""
    text, where = err.str(), f"Kafka at {s.bootstrap_servers}"
    low = text.lower()
    if err.code() == KafkaError._SSL and "certificate verify failed" in low:
        return (
            f"TLS certificate verification failed for {where}: the broker's certificate is not signed by a CA in "
            "KAFKA_SSL_CA_FILE, or does not name the host dialled (check KAFKA_SSL_CA_FILE and KAFKA_BOOTSTRAP_SERVERS)"
        )
    if "plaintext broker listener" in low:
        return f"{where} answers without TLS: KAFKA_SECURITY_PROTOCOL is {s.security_protocol} but that listener is PLAINTEXT"
    if err.code() == KafkaError._SSL:
        return f"TLS handshake with {where} failed ({text.split(': ', 1)[-1][:200]}); check KAFKA_SECURITY_PROTOCOL and KAFKA_SSL_CA_FILE"
    if err.code() == KafkaError._AUTHENTICATION:
        return (
            f"{where} refused the SASL login of user {s.sasl_username!r} with {s.sasl_mechanism or 'no mechanism'} "
            "(check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM, or KAFKA_SECURITY_PROTOCOL)"
        )
    return None


def failure(cluster: Cluster) -> str | None:
    """The TLS or SASL failure a client of ours met at `cluster`, if any."""
    return _failures.get(address(cluster))


def list_topics(admin: Any, cluster: Cluster, timeout: float, unreachable: str, error: type[Exception]) -> Any:
    """`admin.list_topics()` (an AdminClient's), polled in short steps so a TLS or SASL failure
    stops it at once. Raises `error` with that failure, or with `unreachable` (a sentence naming
    the address) when no broker answered within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        step = max(min(1.0, deadline - time.monotonic()), 0.05)
        try:
            return admin.list_topics(timeout=step)
        except KafkaException:
            admin.poll(0)  # serves the error callback
            if problem := failure(cluster):
                raise error(problem) from None
            if time.monotonic() >= deadline:
                raise error(unreachable) from None

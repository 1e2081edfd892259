"""Can we reach what we back up? One check per system, each failing with a message that names
the setting to fix (`auction-backup doctor`, and the first step of every backup)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from confluent_kafka.admin import AdminClient

from auction_backup_pipelines.errors import UnavailableError
from auction_backup_pipelines.kafka import connection as kafka_connection
from auction_backup_pipelines.postgres.client import PostgresError, connect
from auction_backup_pipelines.redis import tls as redis_tls
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings


class PreflightError(UnavailableError):
    """A system is unreachable or misconfigured; the message says which setting is wrong."""


@dataclass(frozen=True)
class CheckResult:
    system: str
    ok: bool
    detail: str


def check_postgres(s: PostgresSettings) -> str:
    try:
        with connect(s) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    except PostgresError as exc:
        raise PreflightError(str(exc)) from None
    return f"PostgreSQL {version} at {s.host}:{s.port}, database {s.dbname!r} as {s.user!r}"


def check_redis(s: RedisSettings) -> str:
    client = redis.Redis(
        host=s.host,
        port=s.port,
        username=s.username or None,
        password=s.password or None,
        socket_connect_timeout=5,
        socket_timeout=5,
        **redis_tls.redis_py_options(s),
    )
    where = f"Redis at {s.host}:{s.port}"
    try:
        info = client.info("server")
    except redis.AuthenticationError:
        raise PreflightError(f"{where} rejected the credentials (check REDIS_USERNAME / REDIS_PASSWORD)") from None
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise PreflightError(f"{where} requires a password and none was given (set REDIS_PASSWORD)") from None
        raise PreflightError(f"{where} answered with an error: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if problem := redis_tls.certificate_problem(str(exc), where) or redis_tls.reset_problem(str(exc), where, s):
            raise PreflightError(problem) from None
        raise PreflightError(f"nothing is listening at {s.host}:{s.port} (is Redis down, or REDIS_PORT wrong?)") from None
    finally:
        client.close()
    return f"Redis {info.get('redis_version')} at {s.host}:{s.port}"


def check_kafka(s: KafkaSettings, timeout: float = 10.0) -> str:
    admin = AdminClient(kafka_connection.client_config(s, timeout))
    unreachable = f"no Kafka broker answered at {s.bootstrap_servers} within {timeout:g} s (is Kafka down, or KAFKA_BOOTSTRAP_SERVERS wrong?)"
    metadata = kafka_connection.list_topics(admin, s, timeout, unreachable, PreflightError)
    missing = sorted(set(s.topics) - set(metadata.topics))
    if missing:
        raise PreflightError(
            f"Kafka at {s.bootstrap_servers} has no topic {', '.join(missing)} (check KAFKA_TOPICS; "
            f"existing: {', '.join(sorted(t for t in metadata.topics if not t.startswith('__')))})"
        )
    return f"Kafka at {s.bootstrap_servers}: {len(s.topics)} topics present"


def check_all(pg_settings: PostgresSettings, redis_settings: RedisSettings, kafka_settings: KafkaSettings) -> list[CheckResult]:
    results = []
    for system, probe in (
        ("postgres", lambda: check_postgres(pg_settings)),
        ("redis", lambda: check_redis(redis_settings)),
        ("kafka", lambda: check_kafka(kafka_settings)),
    ):
        try:
            results.append(CheckResult(system, True, probe()))
        except PreflightError as exc:
            results.append(CheckResult(system, False, str(exc)))
    return results

"""Auction Flow's Kafka topics for the local stack, and a readiness probe for stack/kafka.sh.

Importable (tests put the repository root on sys.path and ``import stack.kafka_topics``) and
runnable as a script by stack/kafka.sh:

    python stack/kafka_topics.py wait [--timeout S] [--pid PID]   # until the broker answers
    python stack/kafka_topics.py ensure                             # create missing topics
    python stack/kafka_topics.py scram-user NAME                    # SCRAM-SHA-256 user, password
                                                                    # from STACK_SCRAM_PASSWORD

The bootstrap address comes from ``--bootstrap`` or KAFKA_BOOTSTRAP_SERVERS
(default 127.0.0.1:9092).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    NewTopic,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
SEVEN_DAYS_MS = "604800000"
FOURTEEN_DAYS_MS = "1209600000"

# name -> (partitions, topic configs). Replication factor is always 1: a single local broker.
# payment-events carries deliberately non-default configs so that backups have dynamic
# topic configs (DYNAMIC_TOPIC_CONFIG in describe_configs) to save and restore.
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "auction-events": (6, {"retention.ms": SEVEN_DAYS_MS}),
    "bid-events": (6, {"retention.ms": SEVEN_DAYS_MS}),
    "auction-closed": (3, {"retention.ms": SEVEN_DAYS_MS}),
    "payment-events": (3, {"retention.ms": FOURTEEN_DAYS_MS, "min.insync.replicas": "1"}),
    "auction-state": (3, {"cleanup.policy": "compact"}),
}
REPLICATION_FACTOR = 1


def bootstrap_from_env() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP)


def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection at ERROR while the broker is still starting;
    # those are expected during `wait`, so the client gets a logger that drops them.
    logger = logging.getLogger("stack.kafka_topics.librdkafka")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    logger.setLevel(logging.CRITICAL + 1)
    return logger


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            # The default reconnect backoff grows to 10 s, which would delay noticing that a
            # freshly started broker is up by up to 10 s.
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "logger": _quiet_logger(),
        }
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_ready(bootstrap: str, timeout: float = 90.0, pid: int | None = None) -> float:
    """Poll until an AdminClient can list topics; return the seconds waited.

    Raises TimeoutError at the deadline, or RuntimeError as soon as process ``pid`` (the broker
    we started) has exited, so a broker that dies at startup fails fast instead of at the deadline.
    """
    start = time.monotonic()
    deadline = start + timeout
    admin = admin_client(bootstrap)
    last_error: Exception | None = None
    while True:
        if pid is not None and not _pid_alive(pid):
            raise RuntimeError(f"broker process {pid} exited before {bootstrap} became ready")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Kafka at {bootstrap} not ready after {timeout:.0f} s (last error: {last_error})")
        try:
            md = admin.list_topics(timeout=min(2.0, max(remaining, 0.1)))
            if md.brokers:
                return time.monotonic() - start
        except KafkaException as exc:
            last_error = exc
        time.sleep(0.2)


def _wait_topics_visible(admin: AdminClient, names: list[str], timeout: float) -> None:
    # create_topics returns when the controller accepted the topics; a producer started right
    # after could still see "unknown topic" until every partition has a leader in metadata.
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=5)
        missing = [
            n
            for n in names
            if n not in md.topics
            or md.topics[n].error is not None
            or len(md.topics[n].partitions) < TOPICS[n][0]
            or any(p.leader < 0 for p in md.topics[n].partitions.values())
        ]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics created but without leaders after {timeout:.0f} s: {missing}")
        time.sleep(0.2)


def ensure_topics(bootstrap: str) -> list[str]:
    """Create every topic of TOPICS that does not exist yet; return the names created now.

    Topics that already exist are left exactly as they are (partitions and configs are not
    altered), so a restored or hand-tuned topic is never "fixed" behind the operator's back.
    A concurrent creator winning the race counts as "already existed".
    """
    admin = admin_client(bootstrap)
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, num_partitions=parts, replication_factor=REPLICATION_FACTOR, config=dict(cfg))
        for name, (parts, cfg) in TOPICS.items()
        if name not in existing
    ]
    if not wanted:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(wanted, operation_timeout=30, request_timeout=40).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
    _wait_topics_visible(admin, [t.topic for t in wanted], timeout=30)
    return [n for n in TOPICS if n in created]


def ensure_scram_user(bootstrap: str, user: str, password: str) -> None:
    """Create the SCRAM-SHA-256 user of the SASL_SSL listener, or set its password again."""
    admin = admin_client(bootstrap)
    upsert = UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), password.encode())
    for future in admin.alter_user_scram_credentials([upsert], request_timeout=30).values():
        future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=bootstrap_from_env())
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_wait = sub.add_parser("wait", help="wait until the broker answers an AdminClient")
    p_wait.add_argument("--timeout", type=float, default=90.0)
    p_wait.add_argument("--pid", type=int, default=None, help="fail fast if this process exits")
    sub.add_parser("ensure", help="create the Auction Flow topics that are missing")
    p_scram = sub.add_parser("scram-user", help="create a SCRAM-SHA-256 user (password: $STACK_SCRAM_PASSWORD)")
    p_scram.add_argument("user")
    args = parser.parse_args(argv)

    try:
        if args.cmd == "wait":
            waited = wait_ready(args.bootstrap, args.timeout, args.pid)
            print(f"kafka ready at {args.bootstrap} after {waited:.1f} s")
        elif args.cmd == "scram-user":
            password = os.environ.get("STACK_SCRAM_PASSWORD", "")
            if not password:
                print("kafka_topics scram-user: STACK_SCRAM_PASSWORD is not set", file=sys.stderr)
                return 1
            ensure_scram_user(args.bootstrap, args.user, password)
            print(f"SCRAM user {args.user} ready")
        else:
            created = ensure_topics(args.bootstrap)
            print(f"topics created: {', '.join(created) if created else 'none (all existed)'}")
    except (TimeoutError, RuntimeError, KafkaException) as exc:
        print(f"kafka_topics {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

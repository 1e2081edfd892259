"""The local stack is real and holds Auction Flow's data; bad settings are named clearly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from auction_backup_pipelines.ops import preflight
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings
from stack.workload import SESSION_TTL_S, pg_connect, redis_client

pytestmark = pytest.mark.integration


def test_postgres_holds_the_seeded_auction_data():
    with pg_connect() as conn:
        counts = dict(
            conn.execute(
                "SELECT 'users', count(*) FROM users UNION ALL SELECT 'auctions', count(*) FROM auctions "
                "UNION ALL SELECT 'bids', count(*) FROM bids UNION ALL SELECT 'payments', count(*) FROM payments"
            ).fetchall()
        )
        orphan_bids = conn.execute(
            "SELECT count(*) FROM bids b LEFT JOIN auctions a ON a.id = b.auction_id WHERE a.id IS NULL"
        ).fetchone()[0]
        settings = dict(
            conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'archive_mode')").fetchall()
        )
    assert counts["users"] >= 200 and counts["auctions"] >= 50 and counts["bids"] >= 2000 and counts["payments"] > 0
    assert orphan_bids == 0
    assert settings == {"wal_level": "replica", "archive_mode": "on"}


def test_redis_holds_platform_keys_of_every_type():
    r = redis_client()
    types = {
        k: r.type(k).decode() for k in (b"auction:1", b"leaderboard:1", b"stream:bids", b"auctions:open", b"queue:notifications")
    }
    assert types == {
        b"auction:1": "hash",
        b"leaderboard:1": "zset",
        b"stream:bids": "stream",
        b"auctions:open": "set",
        b"queue:notifications": "list",
    }
    session = next(r.scan_iter(match="session:*", count=1000), None)
    assert session is not None, "no session keys: the stack was seeded over a month ago (re-seed it)"
    assert 0 < r.ttl(session) <= SESSION_TTL_S
    assert r.get(b"binary:\x00\xff") == bytes(range(256))
    assert r.config_get("appendonly")["appendonly"] == "yes"


def test_kafka_holds_events_with_keys_headers_and_topic_configs():
    s = KafkaSettings.from_env()
    admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
    topics = admin.list_topics(timeout=10).topics
    for name in ("auction-events", "bid-events", "auction-closed", "payment-events"):
        assert name in topics
    assert len(topics["bid-events"].partitions) == 6
    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "stack-test", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition("bid-events", p, 0) for p in topics["bid-events"].partitions])
        msg = None
        while msg is None or msg.error():
            msg = consumer.poll(10)
            assert msg is not None, "no event in bid-events"
        assert msg.key().startswith(b"auction:")
        assert dict(msg.headers())["source"] == b"workload"
    finally:
        consumer.close()


def test_preflight_passes_on_the_stack():
    results = preflight.check_all(PostgresSettings.from_env(), RedisSettings.from_env(), KafkaSettings.from_env())
    assert [(r.system, r.ok) for r in results] == [("postgres", True), ("redis", True), ("kafka", True)], results


@pytest.mark.parametrize(
    "env, system, message",
    [
        ({"POSTGRES_PASSWORD": "pw-Zq81x-not-it"}, "postgres", "rejected the password for user 'auctionuser'"),
        ({"POSTGRES_PORT": "1"}, "postgres", "nothing is listening at 127.0.0.1:1"),
        ({"REDIS_PORT": "1"}, "redis", "nothing is listening at 127.0.0.1:1"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "kafka", "no Kafka broker answered at 127.0.0.1:1"),
        ({"KAFKA_TOPICS": "bid-events,no-such-topic"}, "kafka", "has no topic no-such-topic"),
    ],
)
def test_doctor_names_the_bad_setting(env, system, message):
    proc = subprocess.run(
        [sys.executable, "-m", "auction_backup_pipelines.cli", "doctor"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    line = next(out for out in proc.stdout.splitlines() if f" {system} " in out and out.startswith("FAILED"))
    assert message in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "pw-Zq81x-not-it" not in proc.stdout + proc.stderr  # a password is never echoed

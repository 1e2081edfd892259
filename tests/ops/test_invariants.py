"""The cross-system invariants hold on what the workload writes, and each injected fault is caught.

A burst of the workload generator writes auctions, bids, closings and payments of its own to the
live stack; every check is scoped to the burst's auctions (other tests write the same tables and
topics). Faults are injected into copies: a scratch database holding the burst's rows, a scratch
Redis server holding its keys, and lists of its Kafka messages; the stack itself is never altered.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition

from auction_backup_pipelines.errors import UnavailableError
from auction_backup_pipelines.kafka.connection import client_config
from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.ops import invariants as inv
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings
from stack.workload import SCHEMA, Workload, redis_client

pytestmark = pytest.mark.integration
TOPICS = ("bid-events", "auction-closed", "payment-events")
TOL = inv.DEFAULT_TOLERANCE


@dataclasses.dataclass(frozen=True)
class Message:
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def conninfo(s: PostgresSettings, dbname: str | None = None) -> dict:
    info = {"host": s.host, "port": s.port, "dbname": dbname or s.dbname, "user": s.user, "password": s.password}
    return {**info, **({"sslmode": s.sslmode} if s.sslmode else {}), **({"sslrootcert": s.sslrootcert} if s.sslrootcert else {})}


def read_topics(since_ms: int) -> dict[str, list[Message]]:
    """Every message of TOPICS from `since_ms` to the end, as the drill would hand them over."""
    settings = KafkaSettings.from_env()
    consumer = Consumer(
        {**client_config(settings, 10), "group.id": f"invariants-{secrets.token_hex(4)}", "enable.auto.commit": False}
    )
    out: dict[str, list[Message]] = {}
    try:
        meta = consumer.list_topics(timeout=10).topics
        for topic in TOPICS:
            parts = [TopicPartition(topic, p, since_ms) for p in meta[topic].partitions]
            starts = consumer.offsets_for_times(parts, timeout=10)
            ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
            todo = {s.partition: (s.offset if s.offset >= 0 else ends[s.partition]) for s in starts}
            assign = [TopicPartition(topic, p, off) for p, off in todo.items() if off < ends[p]]
            out[topic] = []
            consumer.assign(assign)
            left = {tp.partition for tp in assign}
            deadline = time.monotonic() + 60
            while left:
                assert time.monotonic() < deadline, f"could not read {topic} to its end"
                msg = consumer.poll(1)
                if msg is None or msg.error():
                    continue
                if msg.offset() < ends[msg.partition()]:
                    out[topic].append(Message(msg.timestamp()[1], msg.key(), msg.value()))
                if msg.offset() >= ends[msg.partition()] - 1:
                    left.discard(msg.partition())
            consumer.unassign()
    finally:
        consumer.close()
    return out


@pytest.fixture(scope="module")
def burst():
    b = Workload(seed=int(time.time())).burst(auctions=3, bids=40, rate=20)
    return b, read_topics(int(b.started.timestamp() * 1000) - 1000)


@pytest.fixture
def pg_copy(burst, scratch_db):
    """A scratch database holding the burst's users, auctions, bids and payments (same ids)."""
    b, _ = burst
    s = PostgresSettings.from_env()
    with pg.connect(s, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    ids = b.auction_ids
    with pg.connect(s) as src, pg.connect(s, dbname=scratch_db) as dst:
        dst.execute(SCHEMA.read_text())
        for table, where in (
            (
                "users",
                "id IN (SELECT seller_id FROM auctions WHERE id = ANY(%(a)s) UNION SELECT bidder_id FROM bids WHERE auction_id = ANY(%(a)s))",
            ),
            ("auctions", "id = ANY(%(a)s)"),
            ("bids", "auction_id = ANY(%(a)s)"),
            ("payments", "auction_id = ANY(%(a)s)"),
        ):
            cur = src.execute(f"SELECT * FROM {table} WHERE {where}", {"a": ids})
            cols = [c.name for c in cur.description]
            rows = cur.fetchall()
            with dst.cursor() as c:
                c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})", rows)
    return conninfo(s, scratch_db)


@pytest.fixture
def redis_copy(burst, tmp_path):
    """A scratch Redis server holding the burst's auction hashes and leaderboards."""
    b, _ = burst
    live = redis_client()
    with scratch_server(tmp_path) as srv:
        copy = srv.client()
        for a in b.auction_ids:
            for key in (f"auction:{a}", f"leaderboard:{a}"):
                copy.restore(key, 0, live.dump(key), replace=True)
        yield srv


def check(pg_info, messages, redis_factory, burst, **kw):
    b, _ = burst
    at = kw.pop("at", b.ended + TOL + timedelta(seconds=1))  # nothing of the burst is still in flight at T
    captured = kw.pop("captured", b.ended)
    return inv.check_platform(pg_info, messages, redis_factory, at, captured, auction_ids=b.auction_ids, **kw)


def failing(results):
    return [r.name for r in results if not r.passed]


def has(result, what, ident):
    return any(v.startswith(f"{what} {ident}:") for v in result.violations)


def by_name(results):
    return {r.name: r for r in results}


def test_every_invariant_holds_on_the_live_burst(burst):
    b, messages = burst
    results = check(conninfo(PostgresSettings.from_env()), messages, redis_client, burst, since=b.started)
    assert [r.name for r in results] == [inv.BIDS, inv.CLOSED, inv.PAYMENTS, inv.REDIS]
    assert failing(results) == [], [(r.name, r.violations) for r in results]
    r = by_name(results)
    assert r[inv.BIDS].counts["rows"] == r[inv.BIDS].counts["matched"] == len(b.bid_ids) == 40
    assert r[inv.CLOSED].counts["matched"] == len(b.closed_ids) == 3
    assert r[inv.PAYMENTS].counts["matched"] == len(b.payment_ids) == 2
    assert r[inv.REDIS].counts["checked"] == 3 and r[inv.REDIS].note == ""


def without(messages, topic, field, ident):
    kept = [m for m in messages[topic] if not (m.value and f'"{field}": {ident},'.encode() in m.value)]
    assert len(kept) < len(messages[topic]), f"no {topic} event with {field} {ident}"
    return {**messages, topic: kept}


def test_a_bid_row_without_its_event_fails(burst, pg_copy):
    b, messages = burst
    bid = b.bid_ids[0]
    results = check(pg_copy, without(messages, "bid-events", "bid_id", bid), redis_client, burst)
    assert failing(results) == [inv.BIDS]
    assert has(by_name(results)[inv.BIDS], "bid", bid)
    assert by_name(results)[inv.BIDS].counts["rows_without_event"] == 1


def test_rows_older_than_the_recovered_kafka_are_not_matched_but_redis_is_still_checked(burst, pg_copy):
    b, messages = burst
    first = b.bid_ids[0]
    with pg.connect(PostgresSettings.from_env()) as conn:
        placed = conn.execute("SELECT placed_at FROM bids WHERE id = %s", (first,)).fetchone()[0]
    # the drill's case: the oldest export starts after this bid, so its event was never backed up
    events_since = placed + 2 * TOL
    results = check(pg_copy, without(messages, "bid-events", "bid_id", first), redis_client, burst, events_since=events_since)
    r = by_name(results)
    assert failing(results) == [], [(x.name, x.violations) for x in results]
    assert r[inv.BIDS].counts["rows"] < len(b.bid_ids)  # the older rows were left out of the matching
    assert r[inv.REDIS].counts["checked"] == 3  # ... but every auction's Redis state was still compared


def test_a_missing_event_within_the_tolerance_of_t_is_in_flight(burst, pg_copy):
    b, messages = burst
    bid = b.bid_ids[-1]
    with pg.connect(PostgresSettings.from_env()) as conn:
        placed = conn.execute("SELECT placed_at FROM bids WHERE id = %s", (bid,)).fetchone()[0]
    result = check(pg_copy, without(messages, "bid-events", "bid_id", bid), redis_client, burst, at=placed + TOL / 2)[0]
    assert result.name == inv.BIDS and result.passed and result.counts["in_flight"] >= 1


def test_an_event_without_its_bid_row_fails(burst, pg_copy):
    b, messages = burst
    with pg.connect(PostgresSettings.from_env(), dbname=pg_copy["dbname"]) as conn:
        # a bid below its auction's highest, so prices and leaderboards are unchanged
        (bid,) = conn.execute(
            "DELETE FROM bids WHERE id = (SELECT b.id FROM bids b WHERE b.amount < (SELECT max(amount) FROM bids "
            "WHERE auction_id = b.auction_id) ORDER BY b.id LIMIT 1) RETURNING id"
        ).fetchone()
    results = check(pg_copy, messages, redis_client, burst)
    assert failing(results) == [inv.BIDS]
    assert has(by_name(results)[inv.BIDS], "bid", bid)
    assert by_name(results)[inv.BIDS].counts["events_without_row"] == 1


def test_a_closed_auction_without_its_event_fails(burst, pg_copy):
    b, messages = burst
    auction = b.closed_ids[1]
    results = check(pg_copy, without(messages, "auction-closed", "auction_id", auction), redis_client, burst)
    assert failing(results) == [inv.CLOSED]
    assert has(by_name(results)[inv.CLOSED], "auction", auction)


def test_a_payment_that_differs_from_its_event_fails(burst, pg_copy):
    b, messages = burst
    payment = b.payment_ids[0]
    with pg.connect(PostgresSettings.from_env(), dbname=pg_copy["dbname"]) as conn:
        conn.execute("UPDATE payments SET amount = amount + 1 WHERE id = %s", (payment,))
    results = check(pg_copy, messages, redis_client, burst)
    assert failing(results) == [inv.PAYMENTS]
    assert has(by_name(results)[inv.PAYMENTS], "payment", payment)
    assert by_name(results)[inv.PAYMENTS].counts["mismatched"] == 1


def test_redis_disagreeing_before_its_capture_fails(burst, pg_copy, redis_copy):
    b, messages = burst
    auction = b.auction_ids[0]
    redis_copy.client().hset(f"auction:{auction}", "current_price", "0.01")
    results = check(pg_copy, messages, redis_copy.client, burst)
    assert failing(results) == [inv.REDIS]
    assert has(by_name(results)[inv.REDIS], "auction", auction)
    assert by_name(results)[inv.REDIS].counts["price_mismatch"] == 1


def test_redis_behind_after_its_capture_is_the_data_loss_window(burst, pg_copy, redis_copy):
    """A Redis copy holding the state just before the burst's last price rise, as a snapshot taken
    then would: with that capture time it passes and reports the bids after it; claimed as captured
    at the end of the burst, the same copy fails (its price for that auction is below the final)."""
    b, messages = burst
    tol = timedelta(milliseconds=20)  # the burst's bids are at least 50 ms apart
    with pg.connect(PostgresSettings.from_env(), dbname=pg_copy["dbname"]) as conn:
        bids = conn.execute("SELECT auction_id, bidder_id, amount, placed_at FROM bids ORDER BY placed_at").fetchall()
        starting = dict(conn.execute("SELECT id, starting_price FROM auctions").fetchall())
    # Bid amounts are random, so a capture at a fixed point (say the middle) may already hold every
    # auction's final price; the bid before the last rise of any running maximum never does.
    running, rises = dict(starting), []
    for i, (auction, _, amount, _) in enumerate(bids):
        if amount > running[auction]:
            running[auction] = amount
            rises.append(i)
    assert rises and rises[-1] > 0, "no bid of the burst raised a price after its first bid"
    captured = bids[rises[-1] - 1][3]
    client = redis_copy.client()
    for a in b.auction_ids:
        before = [(u, amount) for (auction, u, amount, placed) in bids if auction == a and placed <= captured]
        client.delete(f"leaderboard:{a}")
        for u, amount in before:
            client.zadd(f"leaderboard:{a}", {f"user:{u}": float(amount)}, gt=True)
        price = max([starting[a], *(amount for _, amount in before)])
        client.hset(f"auction:{a}", mapping={"current_price": str(price), "status": "open"})
    after = [row for row in bids if row[3] > captured + tol]
    assert after, "the burst left no bid after the capture"

    results = check(pg_copy, messages, redis_copy.client, burst, captured=captured, tolerance=tol)
    assert failing(results) == []
    redis_result = by_name(results)[inv.REDIS]
    assert redis_result.counts["bids_after_capture"] == len(after)
    assert redis_result.counts["closings_after_capture"] == 3
    assert "Redis data-loss window" in redis_result.note and f"{len(after)} bids" in redis_result.note

    results = check(pg_copy, messages, redis_copy.client, burst, tolerance=tol)  # captured at the end: too old
    assert failing(results) == [inv.REDIS]
    violations = by_name(results)[inv.REDIS].violations
    assert violations and all(any(v.startswith(f"auction {a}:") for a in b.auction_ids) for v in violations)


def test_a_freshly_seeded_platform_satisfies_every_invariant(scratch_db, tmp_path):
    """`seed` writes consistent systems: checked whole (no scope) on a scratch database, a scratch
    Redis server and the events the seed would produce (not sent: the topics are shared)."""
    s = PostgresSettings.from_env()
    with pg.connect(s, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    w = Workload(seed=9)
    w.pg = dataclasses.replace(s, dbname=scratch_db)
    with scratch_server(tmp_path, port=free_port()) as srv:
        w.redis = srv.settings()
        counts = w.seed_postgres(1)
        w.seed_redis(1)
        messages: dict[str, list[Message]] = {}
        for when, topic, auction, value in w.seed_events():
            messages.setdefault(topic, []).append(
                Message(int(when.timestamp() * 1000), f"auction:{auction}".encode(), json.dumps(value).encode())
            )
        now = datetime.now(UTC)
        results = inv.check_platform(conninfo(s, scratch_db), messages, srv.client, now, now)
    assert failing(results) == [], [(r.name, r.violations) for r in results]
    r = by_name(results)
    assert r[inv.BIDS].counts["matched"] == counts["bids"] == 2000
    assert r[inv.PAYMENTS].counts["matched"] == counts["payments"] > 0
    assert r[inv.CLOSED].counts["matched"] == r[inv.CLOSED].counts["closed_auctions"] > 0
    assert r[inv.REDIS].counts["checked"] == counts["auctions"]


def test_an_unreachable_database_is_one_line_without_the_password():
    info = {**conninfo(PostgresSettings.from_env()), "port": free_port(), "password": "pw-Inv4r-not-it"}
    now = datetime.now(UTC)
    with pytest.raises(UnavailableError) as caught:
        inv.check_platform(info, {}, redis_client, now, now)
    assert "cannot read PostgreSQL at 127.0.0.1" in str(caught.value) and "\n" not in str(caught.value)
    assert "pw-Inv4r-not-it" not in str(caught.value)

"""Auction Flow's data and traffic, for the demo, the tests and the benchmarks.

    python -m stack.workload seed [--scale N]          # once: schema + a realistic data set
    python -m stack.workload run [--seconds S] [--rate R]   # keep bidding, R bids per second

`seed` writes to all three systems what the platform would hold: users, auctions, bids and
payments in PostgreSQL; live auction hashes, leaderboards (sorted sets), sessions with TTLs,
rate-limit counters and a bid stream in Redis; events with keys, JSON values and headers in
the four Kafka topics. `run` places bids the way the platform does: a row in PostgreSQL, the
auction's hash and leaderboard in Redis, a bid event in Kafka. `burst` (for tests) opens auctions
of its own, bids on them, closes them and pays for them, and returns the ids it wrote.

Every action is written to the three systems in the platform's order, so the cross-system
invariants of `auction_backup_pipelines.ops.invariants` hold (its docstring defines the event
fields): a bid is a `bids` row (id, placed_at) committed with the auction's new current price,
then the Redis hash `auction:<id>` (current_price only ever rises, bids count) and leaderboard
`leaderboard:<id>` (`user:<id>` scored by that user's highest bid), then a `bid-events` event
{"bid_id", "auction_id", "user_id", "amount", "created_at"}; closing an auction sets status
'closed' and ends_at to the closing time, then the hash's status, then an `auction-closed`
event; a payment is a `payments` row, then a `payment-events` event. Auctions titled
`BURST_TITLE_PREFIX…` belong to the burst that opened them: `run` leaves them alone.

Connection settings come from the same environment as the backups (the settings package).
The bid and new-auction writes themselves live in the engine (ops/drill/platform_writes.py), since
the drill's failover rehearsal makes them too and `stack` is not part of the installed package.
The topics and Redis keys are the platform's own unless `names` (a `PlatformNames`) prefixes
them, e.g. for a test that seeds a platform of its own on the shared stack.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from confluent_kafka import Producer

from auction_backup_pipelines.kafka.connection import security_config
from auction_backup_pipelines.ops.drill import platform_writes
from auction_backup_pipelines.ops.platform_names import PLATFORM, TOPICS, PlatformNames
from auction_backup_pipelines.redis.tls import redis_py_options
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings

SCHEMA = Path(__file__).with_name("schema.sql")
SESSION_TTL_S = 30 * 86400
BURST_TITLE_PREFIX = "Burst "
# The platform's notification service: a consumer group on every topic. The seed leaves it having
# read everything it wrote, so exports record its offsets and a restore (or the drill's failover
# rehearsal) has a real group to resume; `run` and `burst` write past it, as a lagging consumer.
CONSUMER_GROUP = "auction-flow-notifications"
RAISE_PRICE = platform_writes.RAISE_PRICE  # the auction hash's price only rises (defined with the writes)


@dataclass
class Burst:
    """What one `Workload.burst` wrote, for a caller that checks exactly that."""

    auction_ids: list[int] = field(default_factory=list)
    bid_ids: list[int] = field(default_factory=list)
    closed_ids: list[int] = field(default_factory=list)
    payment_ids: list[int] = field(default_factory=list)
    started: datetime | None = None  # PostgreSQL's clock, before the first write
    ended: datetime | None = None  # after the last write was delivered everywhere


def pg_connect(settings: PostgresSettings | None = None, dbname: str | None = None) -> psycopg.Connection:
    """Autocommit, so each `conn.transaction()` block commits on its own (one bid, one commit)."""
    s = settings or PostgresSettings.from_env()
    return psycopg.connect(
        host=s.host,
        port=s.port,
        dbname=dbname or s.dbname,
        user=s.user,
        password=s.password,
        connect_timeout=10,
        autocommit=True,
        # The same transport security as the backups' own connections (POSTGRES_SSLMODE/SSLROOTCERT).
        sslmode=s.sslmode or None,
        sslrootcert=s.sslrootcert or None,
    )


def redis_client(settings: RedisSettings | None = None, db: int = 0) -> redis.Redis:
    s = settings or RedisSettings.from_env()
    return redis.Redis(
        host=s.host, port=s.port, password=s.password or None, username=s.username or None, db=db, **redis_py_options(s)
    )


class Workload:
    def __init__(self, seed: int = 7, names: PlatformNames = PLATFORM):
        self.pg = PostgresSettings.from_env()
        self.redis = RedisSettings.from_env()
        self.kafka = KafkaSettings.from_env()
        self.rng = random.Random(seed)
        self.names = names  # the topics and Redis keys written (prefixed for a platform of a test's own)

    # -- seeding -------------------------------------------------------------------------------

    def seed(self, scale: int = 1, systems: tuple[str, ...] = ("postgres", "redis", "kafka")) -> dict[str, int]:
        counts: dict[str, int] = {}
        if "postgres" in systems:
            counts.update(self.seed_postgres(scale))
        if "redis" in systems:
            counts["redis_keys"] = self.seed_redis(scale)
        if "kafka" in systems:
            counts["kafka_events"] = self.seed_kafka(scale)
        return counts

    def seed_postgres(self, scale: int) -> dict[str, int]:
        """Generated server-side (INSERT … SELECT generate_series) so large scales stay fast."""
        users, auctions, bids = 200 * scale, 50 * scale, 2000 * scale
        with pg_connect(self.pg) as conn, conn.transaction():
            conn.execute(SCHEMA.read_text())
            conn.execute(
                """INSERT INTO users (username, email, avatar, balance)
                   SELECT 'user' || g || '-' || substr(md5(random()::text), 1, 6), 'user' || g || '@auctionflow.test',
                          decode(md5(g::text), 'hex'), round((random() * 5000)::numeric, 2)
                   FROM generate_series(1, %s) g""",
                (users,),
            )
            conn.execute(
                """INSERT INTO auctions (seller_id, title, description, starting_price, current_price, status, ends_at)
                   SELECT u.id, 'Lot ' || g, repeat('Vintage item in fine condition. ', 1 + g %% 5),
                          p, p, CASE WHEN g %% 7 = 0 THEN 'closed' ELSE 'open' END,
                          -- a closed auction's ends_at is when it closed (the cross-system invariants rely on it)
                          now() + CASE WHEN g %% 7 = 0 THEN -1 ELSE 1 END * (1 + g %% 72) * interval '1 hour'
                   FROM generate_series(1, %s) g
                   CROSS JOIN LATERAL (SELECT round((1 + random() * 200)::numeric, 2) AS p) price
                   JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET (g %% %s) LIMIT 1) u ON true""",
                (auctions, users),
            )
            conn.execute(
                """INSERT INTO bids (auction_id, bidder_id, amount, placed_at)
                   SELECT a.id, 1 + (g * 7919) %% %s + (SELECT min(id) - 1 FROM users),
                          -- spread over the last three days, so each of those days has bids and bid events
                          a.starting_price + g %% 500, now() - (259200.0 * g / %s) * interval '1 second'
                   FROM generate_series(1, %s) g
                   JOIN LATERAL (SELECT id, starting_price FROM auctions ORDER BY id OFFSET (g %% %s) LIMIT 1) a ON true""",
                (users, bids, bids, auctions),
            )
            conn.execute(
                "UPDATE auctions a SET current_price = greatest(a.starting_price, b.top) "
                "FROM (SELECT auction_id, max(amount) AS top FROM bids GROUP BY auction_id) b WHERE b.auction_id = a.id"
            )
            conn.execute(
                """INSERT INTO payments (auction_id, payer_id, amount, status, paid_at)
                   -- paid half an hour after the auction closed, so past days hold payment events too
                   SELECT a.id, b.bidder_id, b.amount, 'captured', a.ends_at + interval '30 minutes'
                   FROM auctions a
                   JOIN LATERAL (SELECT bidder_id, amount FROM bids WHERE auction_id = a.id
                                 ORDER BY amount DESC, id LIMIT 1) b ON true
                   WHERE a.status = 'closed'
                   ON CONFLICT (auction_id) DO NOTHING"""
            )
            row = conn.execute(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM auctions), "
                "(SELECT count(*) FROM bids), (SELECT count(*) FROM payments)"
            ).fetchone()
        assert row is not None
        return dict(zip(("users", "auctions", "bids", "payments"), row))

    def seed_redis(self, scale: int) -> int:
        """Auction hashes and leaderboards as the platform's bids left them in PostgreSQL, plus the
        keys only Redis holds (sessions, rate limits, the bid stream, a queue, a binary key)."""
        r = redis_client(self.redis)
        pipe = r.pipeline(transaction=False)
        with pg_connect(self.pg) as conn:
            auctions = conn.execute(
                "SELECT a.id, a.status, a.current_price, count(b.id) FROM auctions a LEFT JOIN bids b ON b.auction_id = a.id "
                "GROUP BY a.id ORDER BY a.id"
            ).fetchall()
            tops = conn.execute("SELECT auction_id, bidder_id, max(amount) FROM bids GROUP BY auction_id, bidder_id").fetchall()
        for a, status, price, bids in auctions:
            pipe.hset(self.names.key(f"auction:{a}"), mapping={"status": status, "current_price": str(price), "bids": bids})
        for a, user, amount in tops:
            pipe.zadd(self.names.key(f"leaderboard:{a}"), {f"user:{user}": float(amount)})
        for s in range(20 * scale):
            # "remember me" sessions: a month, so a long-lived dev stack keeps keys with TTLs
            pipe.set(
                self.names.key(f"session:{uuid.UUID(int=self.rng.getrandbits(128))}"), json.dumps({"user": s}), ex=SESSION_TTL_S
            )
        for u in range(1, 20 * scale + 1):
            pipe.set(self.names.key(f"ratelimit:user:{u}"), u % 9, ex=60)
        for i in range(100 * scale):
            pipe.xadd(self.names.key("stream:bids"), {"auction": str(i % 50), "amount": str(i)})
        if open_ids := [str(a) for a, status, _, _ in auctions if status == "open"]:
            pipe.sadd(self.names.key("auctions:open"), *open_ids)
        pipe.rpush(self.names.key("queue:notifications"), *[f"notify:{i}" for i in range(20)])
        pipe.set(self.names.key_prefix.encode() + b"binary:\x00\xff", bytes(range(256)))
        pipe.execute()
        return int(r.dbsize())

    def seed_kafka(self, scale: int) -> int:
        """The events of PostgreSQL's bids (spread over the last three days), closings and payments,
        each timestamped just after its row and written oldest first, as the platform would have
        written them; so each of those days has something to export and restore."""
        events = self.seed_events()
        producer = Producer(
            {**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers, "enable.idempotence": True}
        )
        for when, topic, auction, value in events:
            headers = [("source", b"workload"), ("event-id", uuid.UUID(int=self.rng.getrandbits(128)).bytes)]
            producer.produce(
                self.names.topic(topic),
                key=f"auction:{auction}",
                value=json.dumps(value),
                headers=headers,
                timestamp=int(when.timestamp() * 1000),
            )
            producer.poll(0)
        left = producer.flush(30)
        if left:
            raise RuntimeError(f"{left} Kafka messages were not delivered to {self.kafka.bootstrap_servers}")
        self.commit_consumer_group()
        return len(events)

    def commit_consumer_group(self) -> None:
        """Commit the notification service's group at the end of every platform topic (prefixed like
        the topics, so a test's own platform has a group of its own)."""
        from confluent_kafka import Consumer, TopicPartition

        group = self.names.topic(CONSUMER_GROUP)
        consumer = Consumer(
            {**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers, "group.id": group}
            | {"enable.auto.commit": False}
        )
        try:
            metadata = consumer.list_topics(timeout=10)
            ends = []
            for topic in self.names.topics():
                for p in metadata.topics[topic].partitions if topic in metadata.topics else ():
                    _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
                    ends.append(TopicPartition(topic, p, high))
            if ends:
                consumer.commit(offsets=ends, asynchronous=False)
        finally:
            consumer.close()

    def seed_events(self) -> list[tuple[datetime, str, int, dict[str, Any]]]:
        """(timestamp, topic, auction id, JSON value) of every event PostgreSQL's rows call for, oldest first."""
        with pg_connect(self.pg) as conn:
            bids = conn.execute("SELECT id, auction_id, bidder_id, amount, placed_at FROM bids ORDER BY id").fetchall()
            closed = conn.execute(
                "SELECT a.id, a.ends_at, a.current_price, (SELECT bidder_id FROM bids WHERE auction_id = a.id "
                "ORDER BY amount DESC, id LIMIT 1) FROM auctions a WHERE a.status = 'closed' ORDER BY a.id"
            ).fetchall()
            payments = conn.execute(
                "SELECT id, auction_id, payer_id, amount, status, paid_at FROM payments ORDER BY id"
            ).fetchall()
        after = timedelta(milliseconds=20)  # an event is produced just after its row committed
        events: list[tuple[datetime, str, int, dict[str, Any]]] = []
        for bid_id, auction, user, amount, placed_at in bids:
            value = {
                "bid_id": bid_id,
                "auction_id": auction,
                "user_id": user,
                "amount": str(amount),
                "created_at": placed_at.isoformat(),
            }
            events.append((placed_at + after, "bid-events", auction, value))
            if bid_id % 4 == 0:
                events.append((placed_at + after, "auction-events", auction, {"type": "updated", "auction_id": auction}))
        for auction, ends_at, price, winner in closed:
            value = {"auction_id": auction, "closed_at": ends_at.isoformat(), "final_price": str(price), "winner_id": winner}
            events.append((ends_at + after, "auction-closed", auction, value))
        for payment, auction, payer, amount, status, paid_at in payments:
            value = {
                "payment_id": payment,
                "auction_id": auction,
                "payer_id": payer,
                "amount": str(amount),
                "status": status,
                "paid_at": paid_at.isoformat(),
            }
            events.append((paid_at + after, "payment-events", auction, value))
        events.sort(key=lambda e: e[0])
        return events

    def empty_systems(self) -> tuple[str, ...]:
        """The systems that hold none of the seed data yet (so `seed --if-empty` fills only those)."""
        from confluent_kafka import Consumer, TopicPartition

        empty = []
        with pg_connect(self.pg) as conn:
            has_table = conn.execute("SELECT to_regclass('users') IS NOT NULL").fetchone()
            if not (has_table and has_table[0] and conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0]):
                empty.append("postgres")
        if redis_client(self.redis).dbsize() == 0:
            empty.append("redis")
        consumer = Consumer(
            {**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers, "group.id": "workload-probe"}
        )
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(self.names.topic("bid-events"), 0), timeout=10)
            if high == 0:
                empty.append("kafka")
        finally:
            consumer.close()
        return tuple(empty)

    # -- continuous traffic --------------------------------------------------------------------

    def run(
        self,
        seconds: float | None = None,
        rate: float = 20.0,
        stop: threading.Event | None = None,
        systems: tuple[str, ...] = ("postgres", "redis", "kafka"),
        started: threading.Event | None = None,
        auctions: Sequence[int] | None = None,
    ) -> int:
        """Place bids until `seconds` pass or `stop` is set; returns how many were placed.

        `started` is set once the first bid is committed everywhere, so a caller can start a
        backup knowing the traffic is really flowing. `auctions` (default: the open auctions not
        opened by a burst) are the auctions bid on.
        """
        stop = stop or threading.Event()
        deadline = time.monotonic() + seconds if seconds is not None else None
        conn = pg_connect(self.pg) if "postgres" in systems else None
        r = redis_client(self.redis) if "redis" in systems else None
        producer = (
            Producer({**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers})
            if "kafka" in systems
            else None
        )
        placed = 0
        try:
            if auctions is None:
                auctions = (
                    [
                        a
                        for (a,) in conn.execute(
                            "SELECT id FROM auctions WHERE status = 'open' AND title NOT LIKE %s", (BURST_TITLE_PREFIX + "%",)
                        )
                    ]
                    if conn
                    else list(range(1, 51))
                )
            users = self.bidders(conn)
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                self.place_bid(conn, r, producer, self.rng.choice(auctions), self.rng.choice(users))
                placed += 1
                if started is not None:
                    started.set()
                # Pace the traffic; waiting on the event lets a caller stop us at once.
                stop.wait(1.0 / rate)
        finally:
            if producer is not None:
                producer.flush(30)
            if conn is not None:
                conn.close()
        return placed

    # -- the platform's actions, each written to PostgreSQL, then Redis, then Kafka ----------------

    def bidders(self, conn: psycopg.Connection | None) -> list[int]:
        return [u for (u,) in conn.execute("SELECT id FROM users ORDER BY id LIMIT 500")] if conn else list(range(1, 201))

    def place_bid(
        self, conn: psycopg.Connection | None, r: redis.Redis | None, producer: Producer | None, auction: int, user: int
    ) -> int | None:
        """One bid; returns its row id (None without PostgreSQL). The writes are the engine's
        (ops/drill/platform_writes.py), shared with the drill's failover rehearsal."""
        amount = Decimal(f"{self.rng.uniform(1, 1000):.2f}")
        return platform_writes.place_bid(
            conn, r, producer, auction, user, amount, self.topic_names(), key_prefix=self.names.key_prefix
        )

    def topic_names(self) -> dict[str, str]:
        """The platform's topics by their platform names (`bid-events` -> its real name)."""
        return {t: self.names.topic(t) for t in TOPICS}

    def open_auction(self, conn: psycopg.Connection, r: redis.Redis, producer: Producer, seller: int, title: str) -> int:
        starting = Decimal(f"{self.rng.uniform(1, 200):.2f}")
        return platform_writes.open_auction(
            conn, r, producer, seller, title, starting, self.topic_names(), key_prefix=self.names.key_prefix
        )

    def close_auction(self, conn: psycopg.Connection, r: redis.Redis, producer: Producer, auction: int) -> tuple[int | None, Any]:
        """Close `auction` now; returns (winner, final price)."""
        with conn.transaction():
            row = conn.execute(
                "UPDATE auctions SET status = 'closed', ends_at = now() WHERE id = %s RETURNING current_price, ends_at",
                (auction,),
            ).fetchone()
            assert row is not None
            top = conn.execute(
                "SELECT bidder_id FROM bids WHERE auction_id = %s ORDER BY amount DESC, id LIMIT 1", (auction,)
            ).fetchone()
        price, closed_at, winner = row[0], row[1], top[0] if top else None
        pipe = r.pipeline(transaction=True)
        pipe.hset(self.names.key(f"auction:{auction}"), "status", "closed")
        pipe.srem(self.names.key("auctions:open"), str(auction))
        pipe.execute()
        event = {"auction_id": auction, "closed_at": closed_at.isoformat(), "final_price": str(price), "winner_id": winner}
        producer.produce(self.names.topic("auction-closed"), key=f"auction:{auction}", value=json.dumps(event))
        return winner, price

    def pay(self, conn: psycopg.Connection, producer: Producer, auction: int, payer: int, amount: Any) -> int:
        row = conn.execute(
            "INSERT INTO payments (auction_id, payer_id, amount, status) VALUES (%s, %s, %s, 'captured') RETURNING id, paid_at",
            (auction, payer, amount),
        ).fetchone()
        assert row is not None
        event = {
            "payment_id": row[0],
            "auction_id": auction,
            "payer_id": payer,
            "amount": str(amount),
            "status": "captured",
            "paid_at": row[1].isoformat(),
        }
        producer.produce(self.names.topic("payment-events"), key=f"auction:{auction}", value=json.dumps(event))
        return int(row[0])

    def burst(self, auctions: int = 3, bids: int = 60, rate: float = 200.0, paid: int | None = None) -> Burst:
        """Open `auctions` auctions of its own, place `bids` bids on them (`rate` per second), close
        them all and pay for the first `paid` (default: all but one, so an unpaid closed auction
        exists too). Everything is delivered to the three systems when this returns."""
        out = Burst()
        conn, r = pg_connect(self.pg), redis_client(self.redis)
        producer = Producer(
            {**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers, "enable.idempotence": True}
        )
        try:
            out.started = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            users = self.bidders(conn)
            tag = uuid.uuid4().hex[:8]
            for n in range(auctions):
                title = f"{BURST_TITLE_PREFIX}{tag} lot {n + 1}"
                out.auction_ids.append(self.open_auction(conn, r, producer, self.rng.choice(users), title))
            for _ in range(bids):
                bid = self.place_bid(conn, r, producer, self.rng.choice(out.auction_ids), self.rng.choice(users))
                assert bid is not None
                out.bid_ids.append(bid)
                time.sleep(1.0 / rate)  # pacing the traffic, not waiting for anything
            for n, auction in enumerate(out.auction_ids):
                winner, price = self.close_auction(conn, r, producer, auction)
                out.closed_ids.append(auction)
                if winner is not None and n < (auctions - 1 if paid is None else paid):
                    out.payment_ids.append(self.pay(conn, producer, auction, winner, price))
            left = producer.flush(30)
            if left:
                raise RuntimeError(f"{left} Kafka messages were not delivered to {self.kafka.bootstrap_servers}")
            out.ended = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        finally:
            conn.close()
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.workload", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    seed = sub.add_parser("seed", help="create the schema and seed all three systems")
    seed.add_argument("--scale", type=int, default=1)
    seed.add_argument("--if-empty", action="store_true", help="do nothing when PostgreSQL already holds users")
    run = sub.add_parser("run", help="keep placing bids")
    run.add_argument("--seconds", type=float, default=None)
    run.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args(argv)
    w = Workload()
    if args.command == "seed":
        systems = w.empty_systems() if args.if_empty else ("postgres", "redis", "kafka")
        print(json.dumps(w.seed(args.scale, systems=systems)) if systems else "already seeded")
    else:
        print(f"placed {w.run(seconds=args.seconds, rate=args.rate)} bids")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

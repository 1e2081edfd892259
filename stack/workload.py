"""Auction Flow's data and traffic, for the demo, the tests and the benchmarks.

    python -m stack.workload seed [--scale N]          # once: schema + a realistic data set
    python -m stack.workload run [--seconds S] [--rate R]   # keep bidding, R bids per second

`seed` writes to all three systems what the platform would hold: users, auctions, bids and
payments in PostgreSQL; live auction hashes, leaderboards (sorted sets), sessions with TTLs,
rate-limit counters and a bid stream in Redis; events with keys, JSON values and headers in
the four Kafka topics. `run` places bids the way the platform does: a row in PostgreSQL, the
auction's hash and leaderboard in Redis, a bid event in Kafka.

Connection settings come from the same environment as the backups (the settings package).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import uuid
from pathlib import Path

import psycopg
import redis
from confluent_kafka import Producer

from auction_backup_pipelines.kafka.connection import security_config
from auction_backup_pipelines.redis.tls import redis_py_options
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings

SCHEMA = Path(__file__).with_name("schema.sql")
SESSION_TTL_S = 30 * 86400


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
    def __init__(self, seed: int = 7):
        self.pg = PostgresSettings.from_env()
        self.redis = RedisSettings.from_env()
        self.kafka = KafkaSettings.from_env()
        self.rng = random.Random(seed)

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
                          p, p, CASE WHEN g %% 7 = 0 THEN 'closed' ELSE 'open' END, now() + (g %% 72) * interval '1 hour'
                   FROM generate_series(1, %s) g
                   CROSS JOIN LATERAL (SELECT round((1 + random() * 200)::numeric, 2) AS p) price
                   JOIN LATERAL (SELECT id FROM users ORDER BY id OFFSET (g %% %s) LIMIT 1) u ON true""",
                (auctions, users),
            )
            conn.execute(
                """INSERT INTO bids (auction_id, bidder_id, amount, placed_at)
                   SELECT a.id, 1 + (g * 7919) %% %s + (SELECT min(id) - 1 FROM users),
                          a.starting_price + g %% 500, now() - (g %% 86400) * interval '1 second'
                   FROM generate_series(1, %s) g
                   JOIN LATERAL (SELECT id, starting_price FROM auctions ORDER BY id OFFSET (g %% %s) LIMIT 1) a ON true""",
                (users, bids, auctions),
            )
            conn.execute(
                """INSERT INTO payments (auction_id, payer_id, amount, status)
                   SELECT a.id, b.bidder_id, b.amount, 'captured'
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
        r = redis_client(self.redis)
        pipe = r.pipeline(transaction=False)
        for a in range(1, 50 * scale + 1):
            pipe.hset(f"auction:{a}", mapping={"status": "open", "current_price": f"{10 + a}.00", "bids": 0})
            pipe.zadd(f"leaderboard:{a}", {f"user:{u}": float(10 + a + u) for u in range(1, 6)})
        for s in range(20 * scale):
            # "remember me" sessions: a month, so a long-lived dev stack keeps keys with TTLs
            pipe.set(f"session:{uuid.UUID(int=self.rng.getrandbits(128))}", json.dumps({"user": s}), ex=SESSION_TTL_S)
        for u in range(1, 20 * scale + 1):
            pipe.set(f"ratelimit:user:{u}", u % 9, ex=60)
        for i in range(100 * scale):
            pipe.xadd("stream:bids", {"auction": str(i % 50), "amount": str(i)})
        pipe.sadd("auctions:open", *[str(a) for a in range(1, 50 * scale + 1)])
        pipe.rpush("queue:notifications", *[f"notify:{i}" for i in range(20)])
        pipe.set(b"binary:\x00\xff", bytes(range(256)))
        pipe.execute()
        return int(r.dbsize())

    def seed_kafka(self, scale: int) -> int:
        """Events spread over the last three days, oldest first (as the platform would have written
        them), so each of those days has something to export and restore."""
        producer = Producer(
            {**security_config(self.kafka), "bootstrap.servers": self.kafka.bootstrap_servers, "enable.idempotence": True}
        )
        n = 0
        total = 200 * scale
        start_ms = int((time.time() - 3 * 86400) * 1000)
        step_ms = 3 * 86400 * 1000 // total
        for i in range(total):
            auction = i % 50 + 1
            ts = start_ms + i * step_ms
            headers = [("source", b"workload"), ("event-id", uuid.UUID(int=self.rng.getrandbits(128)).bytes)]
            producer.produce(
                "bid-events",
                key=f"auction:{auction}",
                value=json.dumps({"auction": auction, "amount": i}),
                headers=headers,
                timestamp=ts,
            )
            n += 1
            if i % 4 == 0:
                producer.produce(
                    "auction-events",
                    key=f"auction:{auction}",
                    timestamp=ts,
                    value=json.dumps({"type": "updated", "auction": auction}),
                    headers=headers,
                )
                n += 1
            if i % 10 == 0:
                producer.produce("auction-closed", key=f"auction:{auction}", value=json.dumps({"auction": auction}), timestamp=ts)
                producer.produce(
                    "payment-events",
                    key=f"payment:{i}",
                    timestamp=ts,
                    value=json.dumps({"auction": auction, "status": "captured"}),
                )
                n += 2
        left = producer.flush(30)
        if left:
            raise RuntimeError(f"{left} Kafka messages were not delivered to {self.kafka.bootstrap_servers}")
        return n

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
            _, high = consumer.get_watermark_offsets(TopicPartition("bid-events", 0), timeout=10)
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
    ) -> int:
        """Place bids until `seconds` pass or `stop` is set; returns how many were placed.

        `started` is set once the first bid is committed everywhere, so a caller can start a
        backup knowing the traffic is really flowing.
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
            auctions = (
                [a for (a,) in conn.execute("SELECT id FROM auctions WHERE status = 'open'")] if conn else list(range(1, 51))
            )
            users = [u for (u,) in conn.execute("SELECT id FROM users LIMIT 500")] if conn else list(range(1, 201))
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                auction, user = self.rng.choice(auctions), self.rng.choice(users)
                amount = round(self.rng.uniform(1, 1000), 2)
                if conn is not None:
                    with conn.transaction():
                        conn.execute(
                            "INSERT INTO bids (auction_id, bidder_id, amount) VALUES (%s, %s, %s)", (auction, user, amount)
                        )
                        conn.execute(
                            "UPDATE auctions SET current_price = greatest(current_price, %s) WHERE id = %s", (amount, auction)
                        )
                if r is not None:
                    pipe = r.pipeline(transaction=True)
                    pipe.hincrby(f"auction:{auction}", "bids", 1)
                    pipe.zadd(f"leaderboard:{auction}", {f"user:{user}": amount}, gt=True)
                    pipe.xadd("stream:bids", {"auction": str(auction), "amount": str(amount)})
                    pipe.execute()
                if producer is not None:
                    producer.produce(
                        "bid-events",
                        key=f"auction:{auction}",
                        value=json.dumps({"auction": auction, "user": user, "amount": amount}),
                        headers=[("source", b"workload")],
                    )
                    producer.poll(0)
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

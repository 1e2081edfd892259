"""The platform's own writes (open an auction, place a bid), as one engine module both the drill's
failover rehearsal and the stack's workload generator (stack/workload.py) call.

Why here and not in stack/: the installed package (the wheel, the Dagster image) holds
`auction_backup_pipelines` only; `stack` is the repository's development stack and is not
packaged, so the engine cannot import it. The write functions moved into the engine and the
workload generator reuses them, so the failover writes exactly what the platform writes: a
`bids` row committed with the auction's new current price, then the Redis hash `auction:<id>`
(current_price only ever rises, bids count), leaderboard `leaderboard:<id>` and `stream:bids`,
then a bid event.

`topics` maps the platform's topic names (`bid-events`, `auction-events`) to the topics really
written. A platform topic missing from a mapping is not written at all: the failover points the
writes at scratch copies and must never fall back to a live topic by name. `key_prefix` prefixes
the Redis keys, as `PlatformNames.key` does for a platform whose keys carry a prefix.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

BID_EVENTS = "bid-events"
AUCTION_EVENTS = "auction-events"
# The auction hash's current price only rises, whatever order concurrent bidders' updates arrive in.
RAISE_PRICE = """
local current = redis.call('HGET', KEYS[1], 'current_price')
if not current or tonumber(ARGV[1]) > tonumber(current) then redis.call('HSET', KEYS[1], 'current_price', ARGV[1]) end
return redis.call('HINCRBY', KEYS[1], 'bids', 1)
"""


def topic_for(topics: Mapping[str, str] | None, platform_topic: str) -> str | None:
    """The topic to write `platform_topic`'s events to: itself without a mapping, else the mapped
    name, or None (not written) when the mapping leaves it out."""
    return platform_topic if topics is None else topics.get(platform_topic)


def place_bid(
    conn: Any | None,
    r: Any | None,
    producer: Any | None,
    auction: int,
    user: int,
    amount: Decimal,
    topics: Mapping[str, str] | None = None,
    on_delivery: Callable[[Any, Any], None] | None = None,
    key_prefix: str = "",
) -> int | None:
    """One bid, written to PostgreSQL (autocommit connection), Redis, then Kafka; returns its row id
    (None without PostgreSQL). `on_delivery` is the bid event's delivery callback."""
    bid_id: int | None = None
    placed_at: dt.datetime | None = None
    price = amount
    if conn is not None:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO bids (auction_id, bidder_id, amount) VALUES (%s, %s, %s) RETURNING id, placed_at",
                (auction, user, amount),
            ).fetchone()
            assert row is not None
            bid_id, placed_at = row
            got = conn.execute(
                "UPDATE auctions SET current_price = greatest(current_price, %s) WHERE id = %s RETURNING current_price",
                (amount, auction),
            ).fetchone()
            price = got[0] if got else amount
    if r is not None:
        pipe = r.pipeline(transaction=True)
        pipe.eval(RAISE_PRICE, 1, f"{key_prefix}auction:{auction}", str(price))
        pipe.zadd(f"{key_prefix}leaderboard:{auction}", {f"user:{user}": float(amount)}, gt=True)
        pipe.xadd(f"{key_prefix}stream:bids", {"auction": str(auction), "amount": str(amount)})
        pipe.execute()
    topic = topic_for(topics, BID_EVENTS)
    if producer is not None and topic is not None:
        event = {
            "bid_id": bid_id,
            "auction_id": auction,
            "user_id": user,
            "amount": str(amount),
            "created_at": (placed_at or dt.datetime.now().astimezone()).isoformat(),
        }
        extra = {"on_delivery": on_delivery} if on_delivery is not None else {}
        producer.produce(topic, key=f"auction:{auction}", value=json.dumps(event), headers=[("source", b"workload")], **extra)
        producer.poll(0)
    return bid_id


def open_auction(
    conn: Any,
    r: Any,
    producer: Any,
    seller: int,
    title: str,
    starting: Decimal,
    topics: Mapping[str, str] | None = None,
    key_prefix: str = "",
) -> int:
    """A new open auction: its row, its Redis hash and open-set entry, an `auction-events` event."""
    row = conn.execute(
        "INSERT INTO auctions (seller_id, title, starting_price, current_price, ends_at) "
        "VALUES (%s, %s, %s, %s, now() + interval '1 day') RETURNING id",
        (seller, title, starting, starting),
    ).fetchone()
    assert row is not None
    auction = int(row[0])
    r.hset(f"{key_prefix}auction:{auction}", mapping={"status": "open", "current_price": str(starting), "bids": 0})
    r.sadd(f"{key_prefix}auctions:open", str(auction))
    topic = topic_for(topics, AUCTION_EVENTS)
    if topic is not None:
        event = {"type": "created", "auction_id": auction, "seller_id": seller, "starting_price": str(starting)}
        producer.produce(topic, key=f"auction:{auction}", value=json.dumps(event), headers=[("source", b"workload")])
    return auction


@dataclass
class BidTraffic:
    """What `bid_for` placed: bid ids committed in PostgreSQL, events acknowledged by Kafka."""

    bid_ids: list[int]
    events_delivered: int
    delivery_errors: list[str]
    seconds: float


def bid_for(
    conn: Any,
    r: Any,
    producer: Any,
    auctions: Sequence[int],
    users: Sequence[int],
    seconds: float,
    rate: float,
    topics: Mapping[str, str] | None,
    rng: random.Random | None = None,
    stop: threading.Event | None = None,
    flush_timeout: float = 30.0,
    key_prefix: str = "",
) -> BidTraffic:
    """Place bids at `rate` per second for `seconds` (bounded: also stops when `stop` is set), then
    wait for every bid event's delivery report."""
    rng = rng or random.Random()
    stop = stop or threading.Event()
    delivered: list[int] = []
    errors: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(msg.offset())

    bids: list[int] = []
    started = time.monotonic()
    deadline = started + seconds
    while not stop.is_set() and time.monotonic() < deadline:
        amount = Decimal(f"{rng.uniform(1, 1000):.2f}")
        bid = place_bid(conn, r, producer, rng.choice(auctions), rng.choice(users), amount, topics, report, key_prefix)
        if bid is not None:
            bids.append(bid)
        stop.wait(1.0 / rate)  # pacing the traffic; the event lets a caller stop it at once
    left = producer.flush(flush_timeout) if producer is not None else 0
    if left:
        errors.append(f"{left} bid events were not delivered within {flush_timeout:g} s")
    return BidTraffic(bids, len(delivered), errors, round(time.monotonic() - started, 3))

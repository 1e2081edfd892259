"""The drill's failover rehearsal (`auction-backup drill --failover`): once the invariants passed,
run the platform on the recovered trio for a short, bounded period and prove it works.

  1. PostgreSQL: the PITR copy is promoted by recovery itself (recovery_target_action =
     'promote'); the rehearsal checks it accepts writes, and promotes it if it is still in
     recovery (pg_promote).
  2. Kafka: each recovered topic becomes a scratch topic on the same broker, its consumer
     groups' offsets translated and committed for scratch groups (scratch_topics.py).
  3. The platform's writes (platform_writes.py: one auction of its own, then bids at `rate` per
     second for `seconds`) go to the recovered PostgreSQL, the scratch Redis and the scratch
     topics; `names` (a `PlatformNames`, default the platform's own) says which recovered topic
     is which platform topic and how Redis keys are named, and a platform topic without a
     recovered copy is not written at all (never to a live topic).
  4. The proof, as figures: the bids PostgreSQL committed, the same count read back from Redis
     (the auction's hash and leaderboard), the bid events acknowledged on the scratch bid-events
     topic, and for every consumer group a consumer that starts exactly at the translated offset.
  5. Teardown, always (also on SIGTERM: the drill turns it into an exception): the scratch topics
     and groups are deleted here; the recovered PostgreSQL and Redis are stopped by the drill.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from confluent_kafka import Producer, TopicPartition

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import DEFAULT_TIMEOUT_S, admin_client, client_config, consumer
from auction_backup_pipelines.ops.drill import platform_writes, scratch_topics
from auction_backup_pipelines.ops.drill.kafka_state import TopicState
from auction_backup_pipelines.ops.drill.scratch import DrillInterrupted
from auction_backup_pipelines.ops.platform_names import PLATFORM, TOPICS, PlatformNames
from auction_backup_pipelines.repository.repository import Repository

DEFAULT_SECONDS = 10.0
MAX_SECONDS = 600.0  # a rehearsal, not a second production: the recovered copies are scratch targets
DEFAULT_RATE = 20.0
PROMOTE_WAIT_S = 60


class FailoverError(BackupError):
    """The recovered platform did not run as the platform does; the message names what failed."""


@dataclass
class FailoverOutcome:
    """The rehearsal's verdict and figures (`as_dict` is what --json prints under "failover")."""

    attempted: bool
    passed: bool = False
    reason: str = ""  # why it was not attempted, or what failed
    duration_s: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        if self.passed:
            return []
        return [f"failover {'failed' if self.attempted else 'not attempted'}: {self.reason}"]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lines(self) -> list[str]:
        if not self.attempted:
            return [f"skip  failover  not attempted: {self.reason}"]
        f = self.figures
        head = (
            f"{'PASS' if self.passed else 'FAIL'}  failover  {self.duration_s:g} s: "
            f"{f.get('bids_accepted', 0)} bids accepted by PostgreSQL, {f.get('bids_in_redis', 0)} read back from Redis, "
            f"{f.get('bid_events_produced', 0)} bid events produced to {f.get('bid_events_topic', '?')}; "
            f"consumers resumed at the translated offsets on {f.get('resumed_partitions', 0)} partitions "
            f"({len(f.get('consumer_groups', {}))} groups)"
        )
        return [head] + ([f"      failover problem: {self.reason}"] if not self.passed and self.reason else [])


def not_attempted(reason: str) -> FailoverOutcome:
    return FailoverOutcome(attempted=False, reason=reason)


def _promote(conninfo: Mapping[str, Any]) -> tuple[bool, bool]:
    """(writable now, promoted by the rehearsal)."""
    with psycopg.connect(**conninfo, autocommit=True, connect_timeout=10) as conn:
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
            return True, False  # PITR promoted it at the end of recovery
        conn.execute("SELECT pg_promote(true, %s)", (PROMOTE_WAIT_S,))
        return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], True  # type: ignore[index]


def _high_watermarks(cluster: Cluster, topic: str, partitions: int) -> int:
    c = consumer(cluster)
    try:
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=DEFAULT_TIMEOUT_S, cached=False)[1]
            for p in range(partitions)
        )
    finally:
        c.close()


def _judge(f: dict[str, Any]) -> list[str]:
    """What the figures fail on (empty: the rehearsal passed)."""
    bad = []
    n = f["bids_accepted"]
    if n <= 0:
        bad.append("no bid was accepted in the bounded period")
    if f["bids_in_postgres"] != n:
        bad.append(f"PostgreSQL holds {f['bids_in_postgres']} of the {n} bids it accepted")
    if f["bids_in_redis"] != n or f["leaderboard_entries"] <= 0:
        bad.append(f"Redis serves {f['bids_in_redis']} bids and {f['leaderboard_entries']} leaderboard entries for {n} bids")
    if f["bid_events_produced"] != n or f["bid_events_in_topic"] != n or f["delivery_errors"]:
        bad.append(
            f"{f['bid_events_produced']} bid events acknowledged and {f['bid_events_in_topic']} in the scratch topic for {n} bids"
            + (f" ({f['delivery_errors'][0]})" if f["delivery_errors"] else "")
        )
    checked = [
        (g, p, v) for g, parts in f["consumer_groups"].items() for p, v in parts["partitions"].items() if v["end"] is not None
    ]
    if not checked:
        bad.append("the exports record no consumer group on the recovered topics: nothing proves consumers resume")
    elif f["resumed_partitions"] == 0:
        bad.append("no consumer group had a message after its translated offset: nothing proves consumers resume")
    for g, p, v in checked:
        if v["stored"] != v["translated"]:
            bad.append(f"group {g} partition {p} holds offset {v['stored']}, not the translated {v['translated']}")
        elif v["first_consumed"] is not None and v["first_consumed"] != v["translated"]:
            bad.append(f"group {g} partition {p} resumed at {v['first_consumed']}, not at the translated {v['translated']}")
        elif v["first_consumed"] is None and v["end"] > v["translated"]:
            bad.append(f"group {g} partition {p} consumed nothing: {v['note']}")
    return bad


def rehearse(
    repo: Repository,
    pg_conninfo: Mapping[str, Any],
    redis_client_factory: Callable[[], Any],
    cluster: Cluster,
    states: Mapping[str, TopicState],
    at: dt.datetime,
    *,
    seconds: float = DEFAULT_SECONDS,
    rate: float = DEFAULT_RATE,
    names: PlatformNames = PLATFORM,
    pid: int,
    progress: Callable[[str], None] = lambda line: None,
) -> FailoverOutcome:
    """Run the platform's writes on the recovered trio for `seconds`, prove it, tear Kafka's part down."""
    started = time.monotonic()
    out = FailoverOutcome(attempted=True)
    name_prefix = scratch_topics.prefix(pid)
    copies: list[scratch_topics.ScratchTopic] = []
    try:
        try:
            out.figures.update(
                _run(
                    repo,
                    pg_conninfo,
                    redis_client_factory,
                    cluster,
                    states,
                    at,
                    seconds,
                    rate,
                    names,
                    name_prefix,
                    copies,
                    progress,
                )
            )
            problems = _judge(out.figures)
            out.passed, out.reason = not problems, "; ".join(problems)
        finally:
            topics = [c.scratch for c in copies]
            groups = [g.target_group for c in copies for g in c.groups.values()]
            left = scratch_topics.delete(cluster, topics, groups)
            out.figures["scratch_topics_deleted"] = [t for t in topics if t not in left]
            if left:
                out.passed = False
                out.reason = "; ".join(
                    filter(None, [out.reason, f"scratch topics still listed after deletion: {', '.join(left)}"])
                )
    except Exception as exc:  # reported as the rehearsal's failure in one line
        if isinstance(exc, DrillInterrupted):
            raise
        out.passed = False
        out.reason = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    out.duration_s = round(time.monotonic() - started, 3)
    return out


def _run(
    repo: Repository,
    pg_conninfo: Mapping[str, Any],
    redis_client_factory: Callable[[], Any],
    cluster: Cluster,
    states: Mapping[str, TopicState],
    at: dt.datetime,
    seconds: float,
    rate: float,
    names: PlatformNames,
    name_prefix: str,
    copies: list[scratch_topics.ScratchTopic],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    f: dict[str, Any] = {}
    writable, f["promoted_by_drill"] = _promote(pg_conninfo)
    if not writable:
        raise FailoverError("the recovered PostgreSQL is still in recovery after pg_promote: it cannot accept writes")
    # each platform topic the drill recovered, by its platform name (e.g. bid-events -> t-1-bid-events)
    roles = {t: names.topic(t) for t in TOPICS if names.topic(t) in states}
    if platform_writes.BID_EVENTS not in roles:
        raise FailoverError(
            f"the drill did not recover {names.topic(platform_writes.BID_EVENTS)}: the rehearsal has nowhere to send bid events"
        )
    admin = admin_client(cluster)
    for topic, state in states.items():
        info = scratch_topics.groups_at(repo, topic, at)
        copies.append(scratch_topics.ScratchTopic(topic, name_prefix + topic, 0))  # deleted at teardown even if the copy fails
        copies[-1] = scratch_topics.copy_topic(admin, cluster, state, info, name_prefix)
    f["scratch_topics"] = {c.topic: {"scratch": c.scratch, "messages": c.messages} for c in copies}
    progress(f"failover: {sum(c.messages for c in copies)} recovered messages copied into {len(copies)} scratch topics")
    topics = {platform: name_prefix + recovered for platform, recovered in roles.items()}
    bid_copy = next(c for c in copies if c.topic == roles[platform_writes.BID_EVENTS])
    before = _high_watermarks(cluster, bid_copy.scratch, bid_copy.partitions)

    r = redis_client_factory()
    producer = Producer({**client_config(cluster, DEFAULT_TIMEOUT_S), "enable.idempotence": True, "acks": "all"})
    rng = random.Random()
    with psycopg.connect(**pg_conninfo, autocommit=True, connect_timeout=10) as conn:
        users = [u for (u,) in conn.execute("SELECT id FROM users ORDER BY id LIMIT 500")]
        if not users:
            raise FailoverError("the recovered PostgreSQL holds no user to bid with")
        title = f"Drill failover {name_prefix.rstrip('-')}"
        key_prefix = names.key_prefix
        auction = platform_writes.open_auction(conn, r, producer, users[0], title, Decimal("1.00"), topics, key_prefix)
        progress(f"failover: bidding on auction {auction} for {seconds:g} s")
        traffic = platform_writes.bid_for(conn, r, producer, [auction], users, seconds, rate, topics, rng, key_prefix=key_prefix)
        f["bids_in_postgres"] = conn.execute("SELECT count(*) FROM bids WHERE auction_id = %s", (auction,)).fetchone()[0]  # type: ignore[index]
    f["auction"], f["auction_title"] = auction, title
    f["bids_accepted"] = len(traffic.bid_ids)
    f["bid_seconds"] = traffic.seconds
    f["bids_in_redis"] = int(r.hget(names.key(f"auction:{auction}"), "bids") or 0)
    f["leaderboard_entries"] = int(r.zcard(names.key(f"leaderboard:{auction}")))
    f["bid_events_topic"] = bid_copy.scratch
    f["bid_events_produced"] = traffic.events_delivered
    f["delivery_errors"] = traffic.delivery_errors[:3]
    also = 1 if topics.get(platform_writes.AUCTION_EVENTS) == bid_copy.scratch else 0  # the auction's own event
    f["bid_events_in_topic"] = _high_watermarks(cluster, bid_copy.scratch, bid_copy.partitions) - before - also

    f["consumer_groups"] = {}
    for c in copies:
        for group, parts in scratch_topics.probe_resume(cluster, c).items():
            f["consumer_groups"][f"{group}@{c.topic}"] = {"scratch_group": c.groups[group].target_group, "partitions": parts}
    seen = [v for g in f["consumer_groups"].values() for v in g["partitions"].values()]
    f["resumed_partitions"] = sum(1 for v in seen if v["stored"] == v["translated"] == v["first_consumed"])
    # nothing after the committed offset yet: the group holds the translated offset, no message to show it
    f["idle_partitions"] = sum(1 for v in seen if v["first_consumed"] is None and v["stored"] == v["translated"] == v["end"])
    return f


def after_invariants(
    invariants: Sequence[Any],
    repo: Repository,
    pg_conninfo: Mapping[str, Any] | None,
    redis_client_factory: Callable[[], Any] | None,
    cluster: Cluster,
    states: Mapping[str, TopicState] | None,
    at: dt.datetime,
    *,
    seconds: float = DEFAULT_SECONDS,
    names: PlatformNames = PLATFORM,
    progress: Callable[[str], None] = lambda line: None,
) -> FailoverOutcome:
    """The rehearsal when every invariant passed on a fully recovered platform; otherwise why it
    was not attempted."""
    if pg_conninfo is None or redis_client_factory is None or states is None or not invariants:
        return not_attempted("not every system was recovered and checked: there is no recovered platform to fail over to")
    failed = [i.name for i in invariants if not i.passed]
    if failed:
        return not_attempted(f"invariants failed ({', '.join(failed)}): a failover onto an inconsistent platform proves nothing")
    outcome = rehearse(
        repo,
        pg_conninfo,
        redis_client_factory,
        cluster,
        states,
        at,
        seconds=seconds,
        names=names,
        pid=os.getpid(),
        progress=progress,
    )
    for line in outcome.lines():
        progress(line)
    return outcome

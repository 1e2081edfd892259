"""Cross-system invariants of Auction Flow: do PostgreSQL, Kafka and Redis tell the same story up to T?

A whole-platform recovery drill restores PostgreSQL by PITR to a time T, the Kafka messages up to
T and the newest Redis snapshot taken before T into scratch targets. Each system's own
verification proves its restore matches its backup; only a check *across* systems shows that
the three backups, put together, give back a platform whose parts agree. `check_platform`
reads the recovered systems and returns one `InvariantResult` per invariant:

- ``bids_match_bid_events``: every bid row placed up to T has its `bid-events` event (same
  auction, bidder and amount), and every `bid-events` event up to T has its row.
- ``closed_auctions_have_events``: every closed auction has its `auction-closed` event (same
  final price), and every such event names an auction PostgreSQL holds as closed.
- ``payments_match_payment_events``: every payment row has its `payment-events` event, the
  newest event of each payment carries the row's auction, payer, amount and status, and every
  event has its row.
- ``redis_agrees_with_postgres``: each auction's Redis hash (`auction:<id>`: ``current_price``,
  ``status``) and leaderboard (`leaderboard:<id>`, members ``user:<id>`` scored by their highest
  bid) agree with PostgreSQL *as of the snapshot's capture time* (``redis_captured_at``). Bids,
  auctions and closings after that time are missing from Redis by construction: they are
  reported in the note as the Redis data-loss window (counts), not as violations.

Event format (JSON values; the platform and `stack/workload.py` write exactly these fields, and
each event's Kafka timestamp is when it was produced, after the row committed):

- `bid-events` (key ``auction:<id>``): ``{"bid_id", "auction_id", "user_id", "amount",
  "created_at"}``; ``created_at`` is the row's ``placed_at`` (ISO 8601), ``amount`` a decimal string.
- `auction-closed` (key ``auction:<id>``): ``{"auction_id", "closed_at", "final_price", "winner_id"}``;
  a closed auction's ``ends_at`` column is the time it closed.
- `payment-events` (key ``auction:<id>``): ``{"payment_id", "auction_id", "payer_id", "amount",
  "status", "paid_at"}``.

Events without these ids (older free-form events) cannot be matched: they are counted
(``unidentified_events``), never reported as violations.

Tolerance (default `DEFAULT_TOLERANCE`, 5 s): the platform writes one action to the three systems
one after the other within milliseconds, so a cut at T can fall between them: a bid committed
just before T whose event was produced after T, an event whose row is not visible at T, a Redis
update just after the snapshot. A row or event within the tolerance before T (or, for Redis,
around the capture time) that misses its counterpart is counted as ``in_flight``, not a
violation; anything older is a violation. 5 s covers the producer's batching and retries and a
small clock skew between hosts; pass a larger value for platforms with slower pipelines.

Names: `names` (a `PlatformNames`) gives the topics and keys of a platform with prefixes. Scope: by default every row and event up to T is checked. ``since`` restricts the checks to
rows and events from that time on (and auctions created from then on), ``auction_ids`` to those
auctions' bids, closings, payments and Redis keys, so a check can run on a shared server that
other writers use too. ``events_since`` (the drill: where the recovered Kafka begins) restricts
only the row-against-event checks: older rows' events were never backed up.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import psycopg

from auction_backup_pipelines.errors import ConfigurationError, UnavailableError
from auction_backup_pipelines.ops.platform_names import PLATFORM, PlatformNames

DEFAULT_TOLERANCE = timedelta(seconds=5)
MAX_VIOLATIONS = 5
BIDS, CLOSED, PAYMENTS, REDIS = (
    "bids_match_bid_events",
    "closed_auctions_have_events",
    "payments_match_payment_events",
    "redis_agrees_with_postgres",
)


class KafkaMessage(Protocol):
    @property
    def timestamp_ms(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class InvariantResult:
    name: str
    passed: bool
    counts: dict[str, int]
    violations: tuple[str, ...]  # the first MAX_VIOLATIONS, each naming the violating id
    note: str = ""


@dataclass(frozen=True)
class Event:
    at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Scope:
    """What is checked: up to `at`, from `since` on, only `auction_ids` (when given)."""

    at: datetime
    since: datetime | None
    auction_ids: frozenset[int] | None
    tolerance: timedelta

    def settled(self, when: datetime) -> bool:
        """In range and older than the tolerance: a missing counterpart is a violation."""
        return self.in_range(when) and when <= self.at - self.tolerance

    def in_range(self, when: datetime) -> bool:
        return when <= self.at and (self.since is None or when >= self.since)

    def has_auction(self, auction_id: Any) -> bool:
        return self.auction_ids is None or auction_id in self.auction_ids


class Findings:
    """Counts and violations of one invariant as they are found."""

    def __init__(self, name: str, *keys: str):
        self.name = name
        self.counts = dict.fromkeys(keys, 0)
        if name != REDIS:
            self.counts["unidentified_events"] = 0
        self.violations: list[str] = []
        self.total = 0

    def violation(self, text: str) -> None:
        self.total += 1
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(text)

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def result(self, note: str = "") -> InvariantResult:
        return InvariantResult(
            self.name, self.total == 0, {**self.counts, "violations": self.total}, tuple(self.violations), note
        )


def check_platform(
    pg_conninfo: dict,
    kafka_messages: Mapping[str, Sequence[KafkaMessage]],
    redis_client_factory: Callable[[], Any],
    at: datetime,
    redis_captured_at: datetime,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    *,
    since: datetime | None = None,
    auction_ids: Collection[int] | None = None,
    names: PlatformNames = PLATFORM,
    events_since: datetime | None = None,
) -> list[InvariantResult]:
    """Check every invariant of the module docstring on the recovered systems, as of `at` (T).

    `pg_conninfo` holds psycopg.connect keywords (host, port, dbname, user, password, sslmode…);
    `kafka_messages` maps a topic to its messages (anything with ``timestamp_ms``, ``key`` and
    ``value``); `redis_client_factory` returns a redis-py client on the recovered Redis database.
    Naive datetimes are taken as UTC.
    """
    scope = Scope(utc(at), utc(since) if since else None, frozenset(auction_ids) if auction_ids is not None else None, tolerance)
    starts = [utc(t) for t in (since, events_since) if t is not None]
    matched = Scope(scope.at, max(starts), scope.auction_ids, tolerance) if starts else scope
    captured = utc(redis_captured_at)
    events = {t: parse_events(kafka_messages.get(names.topic(t), ())) for t in ("bid-events", "auction-closed", "payment-events")}
    with connect(pg_conninfo) as conn:
        results = [
            check_bids(conn, events["bid-events"], matched),
            check_closed(conn, events["auction-closed"], matched),
            check_payments(conn, events["payment-events"], matched),
            check_redis(conn, redis_client_factory(), scope, captured, names),
        ]
    return results


def utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def connect(info: dict) -> psycopg.Connection:
    where = f"PostgreSQL at {info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"
    try:
        return psycopg.connect(**{"connect_timeout": 10, **info}, autocommit=True)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnavailableError(f"cannot read {where} for the invariant checks: {first}") from None
    except TypeError as exc:
        raise ConfigurationError(f"bad PostgreSQL connection settings for the invariant checks: {exc}") from None


def parse_events(messages: Sequence[KafkaMessage]) -> list[Event | None]:
    """Each message as an Event (its JSON value and timestamp); None when the value is no JSON object."""
    out: list[Event | None] = []
    for m in messages:
        try:
            data = json.loads(m.value) if m.value is not None else None
        except ValueError:
            data = None
        when = datetime.fromtimestamp(m.timestamp_ms / 1000, UTC)
        out.append(Event(when, data) if isinstance(data, dict) else None)
    return out


def as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def as_decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(value.decode() if isinstance(value, bytes) else str(value)) if value is not None else None
    except (InvalidOperation, ValueError):
        return None


def identified(events: list[Event | None], id_field: str, f: Findings, scope: Scope) -> dict[int, list[Event]]:
    """Events by their id (oldest first), counting the ones that cannot be matched."""
    by_id: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        ident = as_int(e.data.get(id_field)) if e is not None else None
        if e is None or ident is None:
            f.add("unidentified_events")
            continue
        if not scope.has_auction(as_int(e.data.get("auction_id"))):
            continue
        by_id[ident].append(e)
    for lst in by_id.values():
        lst.sort(key=lambda e: e.at)
    return by_id


def rows(conn: psycopg.Connection, sql: str, time_col: str, scope: Scope) -> list[tuple]:
    """Rows of `sql` (which ends in a WHERE clause) with `time_col` up to T, from `since` minus the
    tolerance on (their counterparts may sit just across `since`), for the scope's auctions."""
    lower = scope.since - scope.tolerance if scope.since else None
    ids = sorted(scope.auction_ids) if scope.auction_ids is not None else None
    return conn.execute(
        f"{sql} {time_col} <= %(at)s AND (%(lower)s::timestamptz IS NULL OR {time_col} >= %(lower)s)"
        " AND (%(ids)s::bigint[] IS NULL OR auction_id = ANY(%(ids)s)) ORDER BY id",
        {"at": scope.at, "lower": lower, "ids": ids},
    ).fetchall()


def existing(conn: psycopg.Connection, table: str, ids: Collection[int], where: str = "true") -> set[int]:
    if not ids:
        return set()
    found = conn.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) AND {where}", (sorted(ids),)).fetchall()
    return {r[0] for r in found}


def unmatched_events(
    f: Findings, by_id: dict[int, list[Event]], matched: set[int], present: set[int], scope: Scope, what: str
) -> None:
    """Report events whose id has no row in PostgreSQL (settled ones as violations)."""
    for ident in sorted(set(by_id) - matched - present):
        first = by_id[ident][0]
        if not scope.in_range(first.at):
            continue
        if scope.settled(first.at):
            f.add("events_without_row")
            f.violation(f"{what} {ident}: event at {first.at.isoformat()} but no row in PostgreSQL")
        else:
            f.add("in_flight")


def match_rows(
    f: Findings,
    table_rows: Iterable[tuple],
    found_for: Callable[[int], Sequence[Event]],
    scope: Scope,
    counter: str,
    missing: Callable[[int, datetime], str],
    compare: Callable[[tuple, dict[str, Any]], str | None],
) -> set[int]:
    """Each row inside the scope against the newest of its events (rows: id first, time last).

    Counts `counter`, matched, mismatched (the violation `compare` names), rows without event
    (`missing` names it) or in flight near T; returns the ids of every row read."""
    seen: set[int] = set()
    for row in table_rows:
        ident, at = row[0], row[-1]
        seen.add(ident)
        if not scope.in_range(at):
            continue
        f.add(counter)
        found = found_for(ident)
        if not found:
            if scope.settled(at):
                f.add("rows_without_event")
                f.violation(missing(ident, at))
            else:
                f.add("in_flight")
            continue
        problem = compare(row, found[-1].data)
        if problem:
            f.add("mismatched")
            f.violation(problem)
        else:
            f.add("matched")
    return seen


def check_bids(conn: psycopg.Connection, events: list[Event | None], scope: Scope) -> InvariantResult:
    f = Findings(BIDS, "rows", "events", "matched", "rows_without_event", "events_without_row", "mismatched", "in_flight")
    by_id = identified(events, "bid_id", f, scope)
    f.add("events", sum(1 for lst in by_id.values() for e in lst if scope.in_range(e.at)))

    def compare(row: tuple, e: dict[str, Any]) -> str | None:
        bid_id, auction_id, bidder_id, amount, _ = row
        got = (as_int(e.get("auction_id")), as_int(e.get("user_id")), as_decimal(e.get("amount")))
        want = (auction_id, bidder_id, amount)
        return None if got == want else f"bid {bid_id}: event says auction/user/amount {got}, row {want}"

    matched = match_rows(
        f,
        rows(conn, "SELECT id, auction_id, bidder_id, amount, placed_at FROM bids WHERE", "placed_at", scope),
        lambda ident: by_id.get(ident, []),
        scope,
        "rows",
        lambda ident, at: f"bid {ident}: placed at {at.isoformat()} but no bid-events event",
        compare,
    )
    unmatched_events(f, by_id, matched, existing(conn, "bids", set(by_id) - matched), scope, "bid")
    return f.result()


def check_closed(conn: psycopg.Connection, events: list[Event | None], scope: Scope) -> InvariantResult:
    f = Findings(
        CLOSED, "closed_auctions", "events", "matched", "rows_without_event", "events_without_row", "mismatched", "in_flight"
    )
    by_id = identified(events, "auction_id", f, scope)
    f.add("events", sum(1 for lst in by_id.values() for e in lst if scope.in_range(e.at)))

    def compare(row: tuple, e: dict[str, Any]) -> str | None:
        auction_id, price, _ = row
        final = as_decimal(e.get("final_price"))
        return None if final == price else f"auction {auction_id}: auction-closed says final price {final}, PostgreSQL {price}"

    sql = "SELECT id, current_price, ends_at FROM (SELECT *, id AS auction_id FROM auctions WHERE status = 'closed') a WHERE"
    matched = match_rows(
        f,
        rows(conn, sql, "ends_at", scope),
        lambda ident: by_id.get(ident, []),
        scope,
        "closed_auctions",
        lambda ident, at: f"auction {ident}: closed at {at.isoformat()} but no auction-closed event",
        compare,
    )
    present = existing(conn, "auctions", set(by_id) - matched, "status = 'closed'")
    unmatched_events(f, by_id, matched, present, scope, "auction")
    return f.result()


def check_payments(conn: psycopg.Connection, events: list[Event | None], scope: Scope) -> InvariantResult:
    f = Findings(PAYMENTS, "payments", "events", "matched", "rows_without_event", "events_without_row", "mismatched", "in_flight")
    by_id = identified(events, "payment_id", f, scope)
    f.add("events", sum(1 for lst in by_id.values() for e in lst if scope.in_range(e.at)))

    def compare(row: tuple, e: dict[str, Any]) -> str | None:  # the newest event carries the payment's state
        payment_id, auction_id, payer_id, amount, status, _ = row
        got = (as_int(e.get("auction_id")), as_int(e.get("payer_id")), as_decimal(e.get("amount")), e.get("status"))
        want = (auction_id, payer_id, amount, status)
        return None if got == want else f"payment {payment_id}: event says auction/payer/amount/status {got}, row {want}"

    sql = "SELECT id, auction_id, payer_id, amount, status, paid_at FROM payments WHERE"
    matched = match_rows(
        f,
        rows(conn, sql, "paid_at", scope),
        lambda ident: [e for e in by_id.get(ident, ()) if e.at <= scope.at],
        scope,
        "payments",
        lambda ident, at: f"payment {ident}: paid at {at.isoformat()} but no payment-events event",
        compare,
    )
    unmatched_events(f, by_id, matched, existing(conn, "payments", set(by_id) - matched), scope, "payment")
    return f.result()


def text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)


def top_score(reply: Any) -> Decimal | None:
    """The score of `ZREVRANGE key 0 0 WITHSCORES` (flat RESP2 list or RESP3 pairs), as a price."""
    flat: list[Any] = []
    for item in reply or ():
        flat.extend(item if isinstance(item, list | tuple) else [item])
    if len(flat) < 2:
        return None
    return Decimal(str(round(float(text(flat[1]) or 0), 2)))


def values_in_window(start: Decimal | None, bids: list[tuple[datetime, Decimal]], lo: datetime, hi: datetime) -> set:
    """Every running maximum (from `start`) the bids give between `lo` and `hi`: a Redis snapshot
    taken in that window may hold any of them."""
    running = start
    for placed, amount in bids:
        if placed <= lo:
            running = amount if running is None else max(running, amount)
    seen = {running}
    for placed, amount in bids:
        if lo < placed <= hi:
            running = amount if running is None else max(running, amount)
            seen.add(running)
    return seen


def status_at(status: str, ends_at: datetime, when: datetime) -> str:
    """An auction's status at `when`: a closed one closed at its `ends_at`."""
    return status if status == "open" or ends_at <= when else "open"


def check_redis(
    conn: psycopg.Connection, client: Any, scope: Scope, captured: datetime, names: PlatformNames = PLATFORM
) -> InvariantResult:
    f = Findings(
        REDIS, "auctions", "checked", "missing_hash", "price_mismatch", "leaderboard_mismatch", "status_mismatch", "in_flight"
    )
    sql = "SELECT id, starting_price, status, ends_at, created_at FROM (SELECT *, id AS auction_id FROM auctions) a WHERE"
    auctions = [a for a in rows(conn, sql, "created_at", scope) if scope.in_range(a[4])]
    bids: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for auction_id, placed_at, amount in conn.execute(
        "SELECT auction_id, placed_at, amount FROM bids WHERE placed_at <= %s AND auction_id = ANY(%s) ORDER BY placed_at, id",
        (scope.at, [a[0] for a in auctions]),
    ):
        bids[auction_id].append((placed_at, amount))
    pipe = client.pipeline(transaction=False)
    for a in auctions:
        pipe.hmget(names.key(f"auction:{a[0]}"), ["current_price", "status"])
        pipe.execute_command("ZREVRANGE", names.key(f"leaderboard:{a[0]}"), 0, 0, "WITHSCORES")
    replies = pipe.execute() if auctions else []
    lo, hi = captured - scope.tolerance, captured + scope.tolerance
    lost_bids, lost_auctions, new_auctions, late_closes, drifted = 0, set(), 0, 0, 0
    for i, (auction_id, starting, status, ends_at, created_at) in enumerate(auctions):
        f.add("auctions")
        history = bids[auction_id]
        after = [b for b in history if b[0] > hi]
        lost_bids += len(after)
        if after:
            lost_auctions.add(auction_id)
        if status != "open" and hi < ends_at <= scope.at:
            late_closes += 1
        (price_raw, status_raw), leaderboard = replies[2 * i], replies[2 * i + 1]
        price, redis_status = as_decimal(price_raw), text(status_raw)
        final = max([starting, *(amount for _, amount in history)])
        if price != final or (redis_status is not None and redis_status != status_at(status, ends_at, scope.at)):
            drifted += 1
        if created_at > hi:
            new_auctions += 1
            continue
        if price_raw is None and status_raw is None:
            if created_at > lo:
                f.add("in_flight")
            else:
                f.add("missing_hash")
                f.violation(
                    f"auction {auction_id}: created {created_at.isoformat()}, before the capture, but Redis has no "
                    f"current_price or status in {names.key(f'auction:{auction_id}')}"
                )
            continue
        f.add("checked")
        at_capture = values_in_window(starting, history, lo, hi)
        if price not in at_capture:
            f.add("price_mismatch")
            want = values_in_window(starting, history, captured, captured)
            f.violation(f"auction {auction_id}: Redis current_price {price}, PostgreSQL {want.pop()} at the capture")
        top, tops = top_score(leaderboard), values_in_window(None, history, lo, hi)
        if top not in tops:
            f.add("leaderboard_mismatch")
            f.violation(
                f"auction {auction_id}: Redis leaderboard top {top}, PostgreSQL highest bid {max(tops - {None}, default=None)}"
            )
        if redis_status is not None and redis_status not in {status_at(status, ends_at, lo), status_at(status, ends_at, hi)}:
            f.add("status_mismatch")
            f.violation(
                f"auction {auction_id}: Redis status {redis_status!r}, PostgreSQL {status_at(status, ends_at, captured)!r} at the capture"
            )
    f.counts.update(
        bids_after_capture=lost_bids,
        auctions_with_bids_after_capture=len(lost_auctions),
        auctions_created_after_capture=new_auctions,
        closings_after_capture=late_closes,
        auctions_drifted_by_t=drifted,
    )
    note = ""
    if lost_bids or new_auctions or late_closes or drifted:
        gap = (scope.at - captured).total_seconds()
        note = (
            f"Redis data-loss window: the snapshot was captured {gap:.0f} s before T; {lost_bids} bids on "
            f"{len(lost_auctions)} auctions, {new_auctions} new auctions and {late_closes} closings after it are "
            f"not in Redis, so {drifted} auctions' Redis state differs from PostgreSQL at T"
        )
    return f.result(note)

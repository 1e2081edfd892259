"""Kafka as it was at T, for a drill: every message up to T of each topic, in memory.

The same rule as the exports (kafka/export.py): a moment cuts each partition's log at an
offset, `offsets_for_times(T + 1 ms)`, the first message stamped after T (the high watermark when
there is none), and everything before that offset is "up to T". Exported days are read from the
repository (each file checked against its manifest as it streams); the part of the log after the
newest export up to that cut comes from the live topic. An exported day missing between the
oldest export and T's day is a hole in the log and fails the drill, naming the day (unless the
day's export is not due yet: its on-time window has not ended); so do offsets
neither exported nor still in the live log (deleted by retention).

Only what the invariants need is kept per message (timestamp, key, value, partition, offset);
`max_messages` bounds the memory a drill may take.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import (
    DEFAULT_TIMEOUT_S,
    SYSTEM,
    KafkaBackupError,
    admin_client,
    artifact_name,
    consumer,
    error_text,
    export_file,
    read_records,
    require_topic,
)
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

MAX_MESSAGES = 5_000_000
STALL_TIMEOUT_S = 30.0


class DrillMessage(NamedTuple):
    """One recovered message: what the invariants read (timestamp_ms, key, value) and where it was."""

    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int


@dataclass
class TopicState:
    """One topic recovered to T: its messages, and what served them."""

    topic: str
    messages: list[DrillMessage] = field(default_factory=list)
    exported_days: list[str] = field(default_factory=list)
    exported_messages: int = 0
    live_messages: int = 0
    exported_until: dt.datetime | None = None  # the end of what the exports hold (for the RPO)
    cut_offsets: dict[int, int] = field(default_factory=dict)  # per partition: first offset after T


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def exports_up_to(repo: Repository, topic: str, day: dt.date, now: dt.datetime | None = None) -> list[Backup]:
    """The newest export of each day from the oldest one to `day`. A day missing in between raises,
    and so does a day after the newest export whose on-time window (capture_window.py) is over
    before `now`: its export is overdue, and only days not due yet may come from the live log."""
    newest: dict[dt.date, Backup] = {}
    for b in repo.list(SYSTEM, artifact_name(topic)):
        newest[b.day] = b  # listed oldest first: the last of a day is its newest
    days = sorted(d for d in newest if d <= day)
    if not days:
        raise KafkaBackupError(f"no export of Kafka topic {topic} on or before {day} in {repo.describe()}")
    now = now or dt.datetime.now(dt.UTC)
    span = [days[0] + dt.timedelta(days=i) for i in range((day - days[0]).days)]
    missing = [d for d in span if d not in newest and (d < days[-1] or capture.day_end(d) + dt.timedelta(days=1) <= now)]
    if missing:
        shown = ", ".join(str(d) for d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise KafkaBackupError(
            f"Kafka export of {topic} missing for {shown}: the exported log from {days[0]} to T's day {day} has a hole "
            "the drill cannot recover from backups"
        )
    return [newest[d] for d in days]


def _cut_offsets(
    c: Any, topic: str, partitions: int, at: dt.datetime, timeout: float
) -> tuple[dict[int, int], dict[int, tuple[int, int]]]:
    try:
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False) for p in range(partitions)}
        found = c.offsets_for_times([TopicPartition(topic, p, _ms(at) + 1) for p in range(partitions)], timeout=timeout)
    except KafkaException as exc:
        raise KafkaBackupError(f"cannot look up the offsets of {topic!r} at T: {error_text(exc)}") from None
    cut = {}
    for tp in found:
        if tp.error is not None:
            raise KafkaBackupError(f"offsets_for_times on {topic!r} partition {tp.partition} failed: {tp.error.str()}")
        cut[tp.partition] = tp.offset if tp.offset >= 0 else marks[tp.partition][1]
    return cut, marks


def _read_live(c: Any, topic: str, p: int, start: int, end: int, state: TopicState, limit: int) -> None:
    c.assign([TopicPartition(topic, p, start)])
    try:
        nxt, progress_at = start, time.monotonic()
        while nxt < end:
            for m in c.consume(min(10_000, end - nxt), 0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaBackupError(f"reading {topic!r} partition {p} from the live log failed: {err.str()}")
                if m.offset() >= end:
                    nxt = end
                    break
                state.messages.append(DrillMessage(m.timestamp()[1], m.key(), m.value(), p, m.offset()))
                state.live_messages += 1
                nxt, progress_at = m.offset() + 1, time.monotonic()
            _check_limit(state, limit)
            if nxt < end and time.monotonic() - progress_at > STALL_TIMEOUT_S:
                raise KafkaBackupError(
                    f"reading {topic!r} partition {p} made no progress for {STALL_TIMEOUT_S:g} s at offset {nxt}"
                )
    finally:
        c.unassign()


def _check_limit(state: TopicState, limit: int) -> None:
    if len(state.messages) > limit:
        raise KafkaBackupError(
            f"Kafka topic {state.topic} holds more than {limit} messages up to T: too many for a drill to keep in memory"
        )


def recover_topic(
    repo: Repository,
    cluster: Cluster,
    topic: str,
    at: dt.datetime,
    *,
    max_messages: int = MAX_MESSAGES,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> TopicState:
    """Every message of `topic` up to `at`: the exports, then the live log past the newest export."""
    state = TopicState(topic)
    backups = exports_up_to(repo, topic, at.date())
    admin = admin_client(cluster, timeout)
    partitions = len(require_topic(admin, cluster, topic, timeout).partitions)
    c = consumer(cluster, timeout)
    try:
        cut, marks = _cut_offsets(c, topic, partitions, at, timeout)
        state.cut_offsets = cut
        exported_end: dict[int, int] = {}
        for b in backups:
            state.exported_days.append(b.partition)
            with repo.open(b, export_file(topic)) as f:  # IntegrityError at the end if a byte differs
                for r in read_records(f):
                    if r.offset >= cut.get(r.partition, r.offset + 1):
                        continue  # after T (only in T's own day)
                    state.messages.append(DrillMessage(r.timestamp, r.key, r.value, r.partition, r.offset))
                    state.exported_messages += 1
                _check_limit(state, max_messages)
            for p, stats in b.metadata.get("partitions", {}).items():
                exported_end[int(p)] = max(exported_end.get(int(p), 0), int(stats["end_offset"]))
        state.exported_until = min(capture.day_end(backups[-1].day), at)
        for p in range(partitions):
            low = marks[p][0]
            start = exported_end.get(p, low)
            if start >= cut[p]:
                continue
            if low > start:
                raise KafkaBackupError(
                    f"Kafka topic {topic} partition {p}: offsets {start}..{low - 1} are neither exported nor in the live log "
                    "any more (deleted by retention); the drill cannot recover them"
                )
            _read_live(c, topic, p, start, cut[p], state, max_messages)
    finally:
        c.close()
    state.messages.sort(key=lambda m: (m.partition, m.offset))
    return state


def recover_topics(
    repo: Repository, cluster: Cluster, topics: Sequence[str], at: dt.datetime, **kwargs: Any
) -> dict[str, TopicState]:
    return {t: recover_topic(repo, cluster, t, at, **kwargs) for t in topics}

"""Kafka as the failover rehearsal serves it: the recovered topics recreated as scratch topics on
the same broker, their consumer groups' offsets translated, and all of it deleted again.

Names: `drill-scratch-<host>-<pid>-<topic>` (groups likewise), so two drills never share a topic
and the next drill on this host deletes what a SIGKILLed one left (`sweep_stale_topics`): the
pid in the name is dead. A drill never touches a topic or group without that prefix.

A scratch topic gets every recovered message up to T in its partition and offset order, with its
timestamp, key and value (the drill keeps no headers). Kafka numbers the copies itself, so each
consumer group's committed offset, as the newest export up to T's day recorded it, is translated
with the Kafka restore's own code (kafka/restore_offsets.py): a committed offset c maps to the
copy of the first recovered message whose original offset is >= c, or to the end of the copy
when c lies after T. The translated offsets are committed for the scratch group, and
`probe_resume` proves a consumer of that group starts exactly there.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import (
    DEFAULT_TIMEOUT_S,
    TOPIC_FILE,
    KafkaBackupError,
    TopicInfo,
    admin_client,
    client_config,
    error_text,
)
from auction_backup_pipelines.kafka.restore_offsets import (
    OffsetTranslator,
    PartitionProgress,
    TopicJob,
    apply_group_offsets,
    by_partition,
)
from auction_backup_pipelines.kafka.restore_report import GroupRestore
from auction_backup_pipelines.localhost import pid_alive
from auction_backup_pipelines.ops.drill.kafka_state import TopicState, exports_up_to
from auction_backup_pipelines.repository.repository import Repository

STEM = "drill-scratch-"
RESUME_TIMEOUT_S = 30.0


def host_tag() -> str:
    """This host in a topic name: lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:32] or "host"


def prefix(pid: int) -> str:
    return f"{STEM}{host_tag()}-{pid}-"


@dataclass
class ScratchTopic:
    """One recovered topic copied into `scratch`, with its groups' offsets translated and committed."""

    topic: str
    scratch: str
    partitions: int
    copied: dict[int, int] = field(default_factory=dict)  # partition -> messages copied
    groups: dict[str, GroupRestore] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(self.copied.values())


def groups_at(repo: Repository, topic: str, at: dt.datetime) -> TopicInfo:
    """The topic's description in the newest export up to T's day: partition count, replication
    and the consumer groups' committed offsets when it was exported."""
    backups = exports_up_to(repo, topic, at.date())
    with repo.open(backups[-1], TOPIC_FILE) as f:
        return TopicInfo.from_json(f.read())


def _wait_leaders(admin: AdminClient, name: str, partitions: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        t = admin.list_topics(timeout=timeout).topics.get(name)
        if t is not None and len(t.partitions) == partitions and all(p.leader >= 0 for p in t.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise KafkaBackupError(f"scratch topic {name} was created but has no leader after {timeout:g} s")
        time.sleep(0.1)  # polling a real condition with a deadline


def create(admin: AdminClient, name: str, info: TopicInfo, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    brokers = len(admin.list_topics(timeout=timeout).brokers) or 1
    config = {"retention.ms": "-1", "message.timestamp.type": "CreateTime"}  # old timestamps stay until teardown
    if "max.message.bytes" in info.configs:
        config["max.message.bytes"] = info.configs["max.message.bytes"]
    rf = max(1, min(info.replication_factor or 1, brokers))
    try:
        admin.create_topics([NewTopic(name, info.partitions, rf, config=config)], operation_timeout=timeout)[name].result()
    except KafkaException as exc:
        raise KafkaBackupError(f"cannot create scratch topic {name!r}: {error_text(exc)}") from None
    _wait_leaders(admin, name, info.partitions, max(timeout, 30.0))


def copy_topic(
    admin: AdminClient, cluster: Cluster, state: TopicState, info: TopicInfo, name_prefix: str, timeout: float = DEFAULT_TIMEOUT_S
) -> ScratchTopic:
    """Create the scratch topic, copy the recovered messages into it, and commit each group's
    translated offsets for the group of the same name with the drill's prefix."""
    partitions = max(info.partitions, len(state.cut_offsets), 1 + max((m.partition for m in state.messages), default=0))
    info = TopicInfo(
        info.name, partitions, info.replication_factor, info.configs, info.effective, info.consumer_groups, info.unreadable_groups
    )
    out = ScratchTopic(state.topic, name_prefix + state.topic, partitions)
    create(admin, out.scratch, info, timeout)
    translator = OffsetTranslator({p: list(offs.values()) for p, offs in by_partition(info.consumer_groups).items()})
    progress = {p: PartitionProgress(base=0) for p in range(partitions)}
    errors: list[str] = []

    def report_for(original: int) -> Any:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(err.str())
                return
            st = progress[msg.partition()]
            if st.first_original is None:
                st.first_original, st.first_restored = original, msg.offset()
            st.last_restored = msg.offset()
            st.delivered += 1
            translator.delivered(msg.partition(), original, msg.offset())

        return delivered

    producer = Producer({**client_config(cluster, timeout), "enable.idempotence": True, "acks": "all", "linger.ms": 20})
    for m in state.messages:  # sorted by partition and offset: the copies keep the original order
        while True:
            try:
                producer.produce(
                    out.scratch, m.value, m.key, partition=m.partition, timestamp=m.timestamp_ms, on_delivery=report_for(m.offset)
                )
                break
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(max(timeout, 60.0)) or errors:
        raise KafkaBackupError(
            f"copying {state.topic} into scratch topic {out.scratch} failed: " + (errors[0] if errors else "not all delivered")
        )
    out.copied = {p: st.delivered for p, st in progress.items()}
    job = TopicJob(state.topic, out.scratch, [], info)
    out.groups = apply_group_offsets(admin, job, name_prefix, translator, progress, True, timeout)
    return out


def probe_resume(cluster: Cluster, copy: ScratchTopic, timeout: float = RESUME_TIMEOUT_S) -> dict[str, dict[str, dict[str, Any]]]:
    """For each scratch group of `copy`: a consumer of that group, assigned with no offset (so it
    starts at the group's committed offset, and fails rather than resetting when there is none),
    reads one message per partition. Per partition: committed (original), translated, the offset
    the group holds, and the first offset consumed (None when nothing follows it yet)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for group, g in copy.groups.items():
        c = Consumer(
            {
                **client_config(cluster, timeout),
                "group.id": g.target_group,
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        try:
            parts = [TopicPartition(copy.scratch, int(p), OFFSET_STORED) for p in g.partitions]
            stored = {tp.partition: tp.offset for tp in c.committed(parts, timeout=timeout)}
            ends = {tp.partition: c.get_watermark_offsets(tp, timeout=timeout, cached=False)[1] for tp in parts}
            first: dict[int, int | None] = {p: None for p in ends}
            waiting = {p for p, end in ends.items() if end > stored[p] >= 0}
            problems: dict[int, str] = {}
            c.assign(parts)
            deadline = time.monotonic() + timeout
            while waiting and time.monotonic() < deadline:
                for m in c.consume(100, 0.2):
                    err, p = m.error(), m.partition()
                    if p is None:
                        continue  # a client-level event, not a partition's
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            problems.setdefault(p, err.str())
                            waiting.discard(p)
                        continue
                    if first.get(p) is None:
                        first[p] = m.offset()
                    waiting.discard(p)
            for p in waiting:
                problems.setdefault(p, f"no message within {timeout:g} s")
        finally:
            c.close()
        found[group] = {
            str(p): {
                "committed": t.committed,
                "translated": t.restored,
                "stored": stored.get(int(p)),
                "first_consumed": first.get(int(p)),
                "end": ends.get(int(p)),
                "note": problems.get(int(p), t.note),
            }
            for p, t in g.partitions.items()
        }
    return found


def delete(cluster: Cluster, topics: Sequence[str], groups: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> list[str]:
    """Delete the scratch topics and groups; returns the topics still listed afterwards (none when done)."""
    admin = admin_client(cluster, timeout)
    if topics:
        for fut in admin.delete_topics(list(topics), operation_timeout=timeout).values():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args and exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise KafkaBackupError(f"cannot delete a scratch topic of the drill: {error_text(exc)}") from None
    if groups:
        for fut in admin.delete_consumer_groups(list(groups), request_timeout=timeout).values():
            fut.exception()  # a group without committed offsets may already be gone
    deadline = time.monotonic() + timeout
    while True:  # deletion is asynchronous on the broker: wait until the listing agrees
        left = [t for t in topics if t in admin.list_topics(timeout=timeout).topics]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)  # polling a real condition with a deadline


def sweep_stale_topics(cluster: Cluster, timeout: float = 10.0) -> list[str]:
    """Delete the scratch topics and groups of this host's drills whose process is gone (a
    SIGKILLed failover rehearsal); never fails a drill: an unreachable broker sweeps nothing."""
    stem = f"{STEM}{host_tag()}-"

    def dead(name: str) -> bool:
        owner = re.match(re.escape(stem) + r"(\d+)-", name)
        return bool(owner) and not pid_alive(int(owner.group(1)))  # type: ignore[union-attr]

    try:
        admin = admin_client(cluster, timeout)
        topics = [t for t in admin.list_topics(timeout=timeout).topics if dead(t)]
        groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=timeout).result().valid if dead(g.group_id)]
        if topics or groups:
            delete(cluster, topics, groups, timeout)
        return [f"kafka:{t}" for t in topics]
    except Exception:  # a sweep is best effort; the drill reports its own Kafka problems
        return []

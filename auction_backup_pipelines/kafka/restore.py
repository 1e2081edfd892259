"""Restore days D1..D2 of backed-up topics into a Kafka cluster, and prove the copy.

Order of events, so that a refusal or a bad backup changes nothing:
  1. find every day's backup of every topic, check their stored checksums and that their
     format is the one kafka.py reads (kafka-records-v2);
  2. check the target: broker reachable, target topics empty (or --force), groups to set idle;
  3. create missing topics with the saved partition count and dynamic configs;
  4. replay each day's messages into the same partition, in offset order, with their keys,
     values, headers and CreateTime timestamps (idempotent producer, acks=all), checking every
     delivery report;
  5. read the written range back and compare, per day and partition, count and sha256 with
     the manifest (timestamps, keys, values and headers byte for byte);
  6. translate the consumer groups' committed offsets to the new offsets and, only with
     apply_offsets, commit them for a group of the same name (prefixed like the topics).

Offsets are not preserved (Kafka assigns them), so a committed offset c, "the next message
to read", maps to the restored offset of the first restored message whose original offset
is >= c, or to the end of the restored partition when c is past everything restored.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.kafka import connection
from auction_backup_pipelines.kafka.connection import Cluster, address
from auction_backup_pipelines.kafka.records import (
    DEFAULT_TIMEOUT_S,
    FORMAT,
    SYSTEM,
    TOPIC_FILE,
    KafkaBackupError,
    KafkaUnavailable,
    RestoreRefused,
    TopicInfo,
    VerificationError,
    admin_client,
    artifact_name,
    client_config,
    consumer,
    encode_record,
    error_text,
    export_file,
    is_topic_artifact,
    read_records,
    topic_of,
)
from auction_backup_pipelines.kafka.restore_offsets import (
    OffsetTranslator,
    PartitionProgress,
    TopicJob,
    apply_group_offsets,
    by_partition,
    check_groups,
)
from auction_backup_pipelines.kafka.restore_report import (
    KafkaRestoreReport,
    PartitionRestore,
    TopicRestore,
)
from auction_backup_pipelines.repository.manifest import Backup, NotFoundError
from auction_backup_pipelines.repository.repository import Repository, parse_day

MAX_DAYS = 366
FLUSH_TIMEOUT_S = 120.0
POLL_EVERY = 1000


def day_range(first: dt.date | str, last: dt.date | str) -> list[dt.date]:
    d1, d2 = parse_day(first), parse_day(last)
    if d2 < d1:
        raise KafkaBackupError(f"--to {d2} is before --from {d1}")
    if (d2 - d1).days >= MAX_DAYS:
        raise KafkaBackupError(f"{d1}..{d2} spans more than {MAX_DAYS} days; restore it in pieces")
    return [d1 + dt.timedelta(days=i) for i in range((d2 - d1).days + 1)]


def _backups_for(repo: Repository, topics: Sequence[str] | None, days: list[dt.date]) -> dict[str, list[Backup]]:
    if not topics:
        found = {
            topic_of(b.artifact) for b in repo.list(SYSTEM) if is_topic_artifact(b.artifact) and days[0] <= b.day <= days[-1]
        }
        if not found:
            raise NotFoundError(f"no Kafka topic backups between {days[0]} and {days[-1]} in {repo.describe()}")
        topics = sorted(found)
    result: dict[str, list[Backup]] = {}
    missing: list[str] = []
    for topic in topics:
        result[topic] = []
        for d in days:
            try:
                result[topic].append(repo.get(SYSTEM, artifact_name(topic), d))
            except NotFoundError:
                missing.append(f"{topic} {d}")
    if missing:
        raise NotFoundError(
            f"no backup of {', '.join(missing)} in {repo.describe()}: a restore of {days[0]}..{days[-1]} would have "
            "a hole in each partition's log; back those days up, or restore a range without them. Nothing was written"
        )
    return result


def _target_state(admin: AdminClient, target: Cluster, timeout: float) -> Any:
    unreachable = f"no Kafka broker answered at {address(target)} within {timeout:g} s; nothing was written"
    return connection.list_topics(admin, target, timeout, unreachable, KafkaUnavailable)


def _non_empty(c: Any, topic: str, partitions: int, timeout: float) -> dict[int, int]:
    marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False) for p in range(partitions)}
    return {p: high - low for p, (low, high) in marks.items() if high > low}


def _create_config(info: TopicInfo, rf: int, notes: list[str]) -> dict[str, str]:
    cfg = dict(info.configs)
    if int(cfg.get("min.insync.replicas", "1")) > rf:
        notes.append(f"min.insync.replicas lowered from {cfg['min.insync.replicas']} to {rf} (only {rf} brokers)")
        cfg["min.insync.replicas"] = str(rf)
    if cfg.get("message.timestamp.type") == "LogAppendTime":
        # The broker would overwrite the original timestamps with the restore time.
        notes.append("message.timestamp.type set to CreateTime (was LogAppendTime) to keep the original timestamps")
        cfg["message.timestamp.type"] = "CreateTime"
    return cfg


def _wait_leaders(admin: AdminClient, names: list[str], partitions: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=timeout)
        waiting = [
            n
            for n in names
            if n not in md.topics
            or len(md.topics[n].partitions) < partitions[n]
            or any(p.leader < 0 for p in md.topics[n].partitions.values())
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise KafkaBackupError(f"topics {waiting} were created but have no leader after {timeout:g} s")
        time.sleep(0.1)  # polling a real condition with a deadline


def _producer(target: Cluster, timeout: float, max_message: int) -> Producer:
    return Producer(
        {
            **client_config(target, timeout),
            "enable.idempotence": True,  # retries never duplicate or reorder
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 200_000,
            "message.max.bytes": max(16 << 20, max_message + (64 << 10)),
        }
    )


def _replay(
    repo: Repository, job: TopicJob, target: Cluster, base: dict[int, int], translator: OffsetTranslator, timeout: float
) -> dict[int, PartitionProgress]:
    progress = {p: PartitionProgress(base=base.get(p, 0)) for p in range(job.info.partitions)}
    pending: dict[int, collections.deque[int]] = {p: collections.deque() for p in progress}
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        p = msg.partition()
        original = pending[p].popleft()  # reports arrive in produce order per partition
        if err is not None:
            failures.append(f"partition {p} original offset {original}: {err.str()}")
            return
        st, restored = progress[p], msg.offset()
        if st.last_restored is not None and restored <= st.last_restored:
            failures.append(f"partition {p}: restored offsets out of order ({restored} after {st.last_restored})")
        if st.first_restored is None:
            st.first_original, st.first_restored = original, restored
        st.last_restored = restored
        st.delivered += 1
        translator.delivered(p, original, restored)

    producer = _producer(target, timeout, int(job.info.configs.get("max.message.bytes", "0")))
    sent = 0
    for backup in job.backups:
        with repo.open(backup, export_file(job.topic)) as f:
            for rec in read_records(f):
                if rec.partition not in pending:
                    raise KafkaBackupError(f"{backup.prefix} has partition {rec.partition} but {job.target!r} has {len(pending)}")
                pending[rec.partition].append(rec.offset)
                while True:
                    try:
                        producer.produce(
                            job.target,
                            value=rec.value,
                            key=rec.key,
                            partition=rec.partition,
                            timestamp=max(rec.timestamp, 0),
                            # confluent-kafka types headers as an invariant list of (str, str | bytes | None);
                            # a list of (str, bytes | None) is valid input.
                            headers=rec.headers or None,  # type: ignore[arg-type]
                            on_delivery=delivered,
                        )
                        break
                    except BufferError:
                        producer.poll(0.1)  # the local queue is full: serve delivery reports
                    except KafkaException as exc:
                        raise KafkaBackupError(f"cannot produce to {job.target!r}: {error_text(exc)}") from None
                sent += 1
                if sent % POLL_EVERY == 0:
                    producer.poll(0)
                if failures:
                    break
        if failures:
            break
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while producer.flush(1.0) > 0 and time.monotonic() < deadline:
        pass
    left = len(producer)
    if failures or left:
        detail = "; ".join(failures[:5]) or f"{left} messages still unacknowledged after {FLUSH_TIMEOUT_S:g} s"
        raise KafkaBackupError(f"writing {job.target!r} failed: {detail}")
    return progress


def _verify(job: TopicJob, target: Cluster, progress: dict[int, PartitionProgress], timeout: float) -> int:
    """Read each partition's restored range back; compare every day's count and sha256."""
    c = consumer(target, timeout)
    problems, total = [], 0
    try:
        for p, st in progress.items():
            per_day = [(b.partition, b.metadata["partitions"].get(str(p), {"messages": 0})) for b in job.backups]
            segments: list[tuple[str, int, str | None]] = [
                (day, e["messages"], e.get("sha256")) for day, e in per_day if e["messages"]
            ]
            want = sum(n for _, n, _ in segments)
            if st.delivered != want:
                problems.append(f"partition {p}: {st.delivered} messages written, the backups hold {want}")
            elif want:
                if st.first_restored is None:  # delivered == want > 0, so a delivery report must have set it
                    raise KafkaBackupError(f"partition {p}: {want} messages delivered but no restored offset was recorded")
                problems += _compare_range(c, job.target, p, st.first_restored, segments, timeout)
                total += want
    finally:
        c.close()
    if problems:
        raise VerificationError(
            f"restored {job.target!r} does not match the backups: "
            + "; ".join(problems[:10])
            + ". The topic is left as written, for inspection"
        )
    return total


def _compare_range(
    c: Any, topic: str, p: int, first: int, segments: list[tuple[str, int, str | None]], timeout: float
) -> list[str]:
    """Stream partition `p` from `first`, hashing one day's slice after another (memory flat)."""
    problems: list[str] = []
    seg, in_seg, sha = 0, 0, hashlib.sha256()
    left = sum(n for _, n, _ in segments)
    c.assign([TopicPartition(topic, p, first)])
    try:
        stall = max(timeout, 60.0)
        deadline = time.monotonic() + stall
        while left:
            for m in c.consume(min(10_000, left), 0.2):
                if m.error() is not None or m.partition() != p:
                    continue
                sha.update(encode_record(m.timestamp()[1], m.key(), m.value(), m.headers()))
                in_seg += 1
                left -= 1
                day, n, expected = segments[seg]
                if in_seg == n:
                    if sha.hexdigest() != expected:
                        problems.append(f"partition {p} day {day}: content differs from the manifest's checksum")
                    seg, in_seg, sha = seg + 1, 0, hashlib.sha256()
                if not left:
                    break
                deadline = time.monotonic() + stall
            if left and time.monotonic() > deadline:
                raise VerificationError(f"reading back {topic!r} partition {p} stalled with {left} messages still to read")
    finally:
        c.unassign()
    return problems


def restore_topics(
    repo: Repository,
    days: tuple[dt.date | str, dt.date | str],
    topics: Sequence[str] | None,
    target: Cluster,
    topic_prefix: str = "",
    force: bool = False,
    apply_offsets: bool = False,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> KafkaRestoreReport:
    """Restore days[0]..days[1] (inclusive) of `topics` (None: every topic backed up in that range)
    into `target` (its settings, security included; or a bare PLAINTEXT bootstrap address)."""
    started = time.monotonic()
    span = day_range(*days)
    backups = _backups_for(repo, topics, span)
    for topic_backups in backups.values():
        for b in topic_backups:
            repo.verify(b)  # stored checksums, before anything is written
            _require_format(b)
    jobs = []
    for topic, bs in backups.items():
        with repo.open(bs[-1], TOPIC_FILE) as f:
            info = TopicInfo.from_json(f.read())
        partitions = max(b.metadata.get("partition_count", 0) for b in bs)
        if partitions > info.partitions:
            info = dataclasses.replace(info, partitions=partitions)
        jobs.append(TopicJob(topic, f"{topic_prefix}{topic}", bs, info))

    admin = admin_client(target, timeout)
    md = _target_state(admin, target, timeout)
    brokers = max(len(md.brokers), 1)
    c = consumer(target, timeout)
    refusals, bases = [], {}
    try:
        for job in jobs:
            t = md.topics.get(job.target)
            job.exists = t is not None and t.error is None
            if not job.exists:
                rf = min(job.info.replication_factor or 1, brokers)
                job.create_config = _create_config(job.info, rf, job.notes)
                continue
            if len(t.partitions) < job.info.partitions:
                refusals.append(f"{job.target!r} has {len(t.partitions)} partitions, the backup needs {job.info.partitions}")
                continue
            filled = _non_empty(c, job.target, len(t.partitions), timeout)
            if filled and not force:
                refusals.append(
                    f"{job.target!r} already holds {sum(filled.values())} messages (pass --force to append "
                    "to it, or restore under a --topic-prefix)"
                )
            marks = {
                p: c.get_watermark_offsets(TopicPartition(job.target, p), timeout=timeout, cached=False)
                for p in range(job.info.partitions)
            }
            bases[job.target] = {p: high for p, (_, high) in marks.items()}
    finally:
        c.close()
    if refusals:
        raise RestoreRefused("restore refused: " + "; ".join(refusals) + ". Nothing was written")
    if apply_offsets:
        check_groups(admin, jobs, topic_prefix, force, timeout)

    _create_topics(admin, jobs, brokers, timeout)
    restored: dict[str, TopicRestore] = {}
    for job in jobs:
        wanted = {p: list(offs.values()) for p, offs in by_partition(job.info.consumer_groups).items()}
        translator = OffsetTranslator(wanted)
        try:
            progress = _replay(repo, job, target, bases.get(job.target, {}), translator, timeout)
        except KafkaBackupError as exc:
            if not job.exists:
                admin.delete_topics([job.target], operation_timeout=timeout)
                raise KafkaBackupError(f"{exc}; {job.target!r} was created by this restore and has been deleted") from None
            raise KafkaBackupError(f"{exc}; {job.target!r} existed before and now holds a partial copy") from None
        verified = _verify(job, target, progress, timeout)
        restored[job.topic] = TopicRestore(
            target=job.target,
            created=not job.exists,
            configs=job.create_config if not job.exists else "kept (topic existed)",
            messages=verified,
            partitions={
                str(p): PartitionRestore(first_offset=st.first_restored, last_offset=st.last_restored, messages=st.delivered)
                for p, st in progress.items()
            },
            coverage_gaps=_coverage_gaps(job.backups),
            consumer_groups=apply_group_offsets(admin, job, topic_prefix, translator, progress, apply_offsets, timeout),
            notes=job.notes,
        )
    return KafkaRestoreReport(
        days=(span[0].isoformat(), span[-1].isoformat()),
        target_bootstrap=address(target),
        topics=restored,
        duration_s=round(time.monotonic() - started, 3),
    )


def _require_format(backup: Backup) -> None:
    found = backup.metadata.get("format")
    if found != FORMAT:
        # Backups without a format field are the base64 JSON Lines of earlier versions.
        raise KafkaBackupError(
            f"{backup.prefix} is stored as {found or 'JSON Lines (no format recorded)'}, but this version reads only "
            f"{FORMAT}; export that day again (or restore it with the version that wrote it). Nothing was written"
        )


def _create_topics(admin: AdminClient, jobs: list[TopicJob], brokers: int, timeout: float) -> None:
    new = [
        NewTopic(
            j.target,
            num_partitions=j.info.partitions,
            replication_factor=min(j.info.replication_factor or 1, brokers),
            config=j.create_config,
        )
        for j in jobs
        if not j.exists
    ]
    if not new:
        return
    for name, fut in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout + 5).items():
        try:
            fut.result()
        except KafkaException as exc:
            raise KafkaBackupError(f"cannot create topic {name!r}: {error_text(exc)}; nothing was written") from None
    _wait_leaders(admin, [t.topic for t in new], {t.topic: t.num_partitions for t in new}, max(timeout, 30.0))


def _coverage_gaps(backups: list[Backup]) -> list[str]:
    """Offsets between one day's end and the next day's start that no backup holds."""
    gaps = []
    for prev, cur in zip(backups, backups[1:]):
        for p, st in cur.metadata["partitions"].items():
            before = prev.metadata["partitions"].get(p)
            if before and st["start_offset"] > before["end_offset"]:
                gaps.append(
                    f"partition {p}: offsets {before['end_offset']}..{st['start_offset'] - 1} "
                    f"between {prev.partition} and {cur.partition} are in neither backup"
                )
    return gaps

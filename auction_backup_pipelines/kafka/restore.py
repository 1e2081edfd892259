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
     the manifest (timestamps, keys, values and headers byte for byte); each partition is read
     back (restore_verify.py) as soon as its last message is acknowledged, beside the replay;
  6. translate the consumer groups' committed offsets to the new offsets and, only with
     apply_offsets, commit them for a group of the same name (prefixed like the topics).

Steps 4 and 5 run in the native `kafka-replay` helper when it is installed (restore_native.py),
with the same checks; `_replay` and restore_verify.py are the Python path that stands in for it.

Offsets are not preserved (Kafka assigns them), so a committed offset c, "the next message
to read", maps to the restored offset of the first restored message whose original offset
is >= c, or to the end of the restored partition when c is past everything restored.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.kafka import connection, restore_native
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
    admin_client,
    artifact_name,
    client_config,
    consumer,
    error_text,
    export_file,
    is_topic_artifact,
    read_blocks,
    topic_of,
)
from auction_backup_pipelines.kafka.restore_offsets import (
    OffsetTranslator,
    PartitionProgress,
    TopicJob,
    apply_group_offsets,
    by_partition,
    check_groups,
    check_replay,
)
from auction_backup_pipelines.kafka.restore_report import (
    KafkaRestoreReport,
    PartitionRestore,
    TopicRestore,
)
from auction_backup_pipelines.kafka.restore_verify import ReadBack
from auction_backup_pipelines.repository.manifest import Backup, NotFoundError
from auction_backup_pipelines.repository.repository import Repository, parse_day

MAX_DAYS = 366
FLUSH_TIMEOUT_S = 120.0
REPORT_EVERY = 1000  # a partition's messages per delivery report (see _replay)


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


def producer_config(target: Cluster, timeout: float, max_message: int) -> dict[str, Any]:
    """The replay's producer (also handed to the native restore helper)."""
    largest = max(16 << 20, max_message + (64 << 10))
    return {
        **client_config(target, timeout),
        "enable.idempotence": True,  # retries never duplicate or reorder
        "acks": "all",
        "linger.ms": 50,  # measured: less CPU per message than 5 or 20, on the broker's side too
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        # The local queue is bounded by bytes as well as by count (librdkafka's default is
        # 1 GiB), so a restore's memory stays flat however large the topic or its messages;
        # it always holds two of the largest messages. It counts the messages in flight too:
        # 50 k messages (12 MB of 200 B) starved the 5 requests in flight per partition and
        # made the native replay 1.6x slower (measured, 1 M messages); 200 k / 128 MiB is as
        # fast as 500 k / 1 GiB.
        "queue.buffering.max.messages": 200_000,
        "queue.buffering.max.kbytes": max(128 << 10, 2 * largest >> 10),
        "message.max.bytes": largest,
    }


def _replay(
    repo: Repository,
    job: TopicJob,
    target: Cluster,
    base: dict[int, int],
    translator: OffsetTranslator,
    read_back: ReadBack,
    timeout: float,
) -> dict[int, PartitionProgress]:
    """Produce every message of the job's backups; return what was written per partition.

    A delivery report per message cost as much Python time as producing it, so only every
    REPORT_EVERY-th message of a partition, its first and its last ask for one. The idempotent
    producer writes a partition's messages in order at consecutive offsets, so each report must
    show offset first + position: a message lost or duplicated between two reports, or another
    producer writing into the range, breaks that equation and fails the restore. A partition
    whose last report checks out goes to `read_back` at once.
    """
    progress = {p: PartitionProgress(base=base.get(p, 0)) for p in range(job.info.partitions)}
    want = {p: job.messages(p) for p in progress}
    sent = dict.fromkeys(progress, 0)  # position of the next message, per partition
    firsts: dict[int, int] = {}  # original offset of each partition's first message
    thresholds = {p: translator.threshold(p) for p in progress}
    reports: dict[int, list[tuple[int, int]]] = {p: [] for p in progress}  # (position, restored offset)
    failures: list[str] = []

    def report_for(position: int, original: int) -> Any:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(f"partition {msg.partition()} original offset {original}: {err.str()}")
                return
            p = msg.partition()
            reports[p].append((position, msg.offset()))
            if position == want[p] - 1:  # reports arrive in produce order: the partition is complete
                problems = settle_partition(p, progress[p], reports[p], want[p], firsts.get(p), translator)
                failures.extend(problems)
                if not problems:
                    read_back.submit(p, progress[p].first_restored or 0)

        return delivered

    producer = Producer(producer_config(target, timeout, job.max_message_bytes))
    produce, poll, topic = producer.produce, producer.poll, job.target

    def produce_waiting(*args: Any) -> None:
        while True:
            try:
                return produce(*args)
            except BufferError:
                poll(0.1)  # the local queue is full: serve delivery reports
            except KafkaException as exc:
                raise KafkaBackupError(f"cannot produce to {topic!r}: {error_text(exc)}") from None

    for backup in job.backups:
        with repo.open(backup, export_file(job.topic)) as f:
            for block in read_blocks(f):
                p, offsets = block.partition, block.offsets
                i = sent.get(p)
                if i is None:
                    raise KafkaBackupError(f"{backup.prefix} has partition {p} but {topic!r} has {len(sent)}")
                if i + len(offsets) > want[p]:
                    raise KafkaBackupError(f"{backup.prefix} holds more messages in partition {p} than its manifests count")
                sent[p] = i + len(offsets)
                if i == 0:
                    firsts[p] = offsets[0]
                threshold, last = thresholds[p], want[p] - 1
                next_report = -(-i // REPORT_EVERY) * REPORT_EVERY  # the first multiple at or after i
                # One loop per message with everything in locals, the producer called with
                # positional arguments (topic, value, key, partition, on_delivery, callback,
                # timestamp, headers): keywords cost a tenth of the call (measured, 1 M messages).
                for o, ts, k, v, h in zip(offsets, block.timestamps, block.keys, block.values, block.headers):
                    if o >= threshold:
                        translator.delivered(p, o, i)  # mapped to a position; shifted once the start is known
                        threshold = thresholds[p] = translator.threshold(p)
                    cb = None
                    if i == next_report or i == last:
                        cb = report_for(i, o)
                        next_report = i - i % REPORT_EVERY + REPORT_EVERY
                    # confluent-kafka types headers as an invariant list of (str, str | bytes | None);
                    # a list of (str, bytes | None) is valid input.
                    try:
                        produce(topic, v, k, p, cb, None, ts if ts > 0 else 0, h or None)  # type: ignore[arg-type]
                    except (BufferError, KafkaException):
                        produce_waiting(topic, v, k, p, cb, None, ts if ts > 0 else 0, h or None)
                    i += 1
                poll(0)
                if failures:
                    break
        if failures:
            break
    deadline = time.monotonic() + FLUSH_TIMEOUT_S
    while producer.flush(1.0) > 0 and time.monotonic() < deadline:
        pass
    delivered = {p: st.delivered for p, st in progress.items()}
    check_replay(topic, want, sent, delivered, failures, len(producer), FLUSH_TIMEOUT_S)
    return progress


def settle_partition(
    p: int,
    st: PartitionProgress,
    reports: list[tuple[int, int]],
    want: int,
    first_original: int | None,
    translator: OffsetTranslator,
) -> list[str]:
    """Check one partition's delivery reports (see _replay) and record its restored range."""
    if not want:
        return []
    reports.sort()
    if not reports or reports[0][0] != 0 or reports[-1][0] != want - 1:
        return [f"partition {p}: delivery reports of its first or last message are missing"]
    first = reports[0][1]
    for position, restored in reports:
        if restored != first + position:
            return [
                f"partition {p}: message {position} was written at offset {restored}, not {first + position} "
                "(a message was lost or duplicated, or another producer wrote into the topic)"
            ]
    st.first_original, st.first_restored, st.last_restored, st.delivered = first_original, first, first + want - 1, want
    translator.shift(p, first)
    return []


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
        helper = restore_native.helper_path()
        read_back = None if helper else ReadBack(job, target, timeout)
        base = bases.get(job.target, {})
        outcome: ReadBack | restore_native.ReadBackReport
        try:
            if helper:
                producer = producer_config(target, timeout, job.max_message_bytes)
                timeouts = (timeout, FLUSH_TIMEOUT_S, max(timeout, 60.0))
                progress, outcome = restore_native.replay(helper, repo, job, producer, target, base, translator, timeouts)
            else:
                assert read_back is not None
                progress, outcome = _replay(repo, job, target, base, translator, read_back, timeout), read_back
        except KafkaBackupError as exc:
            if read_back is not None:
                read_back.abandon()
            if not job.exists:
                admin.delete_topics([job.target], operation_timeout=timeout)
                raise KafkaBackupError(f"{exc}; {job.target!r} was created by this restore and has been deleted") from None
            raise KafkaBackupError(f"{exc}; {job.target!r} existed before and now holds a partial copy") from None
        except BaseException:
            if read_back is not None:
                read_back.abandon()  # its thread would wait for partitions forever
            raise
        verified = outcome.finish()
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

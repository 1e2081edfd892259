"""Kafka topic exports and restores against the real broker of the local stack.

Every test works on topics and groups of its own (named after a random stem, deleted
afterwards), so it neither depends on nor disturbs the stack's Auction Flow topics.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType
from dagster import DagsterInstance, materialize

from auction_backup_pipelines.defs.kafka.assets import build_topic_export_asset
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, KafkaResource
from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.kafka import export_native, restore_native, restore_verify
from auction_backup_pipelines.kafka import restore as kr
from auction_backup_pipelines.kafka.records import (
    KafkaBackupError,
    KafkaUnavailable,
    RestoreRefused,
    RetentionGap,
    TopicNotFound,
    VerificationError,
    artifact_name,
    export_file,
    read_records,
)
from auction_backup_pipelines.kafka.restore_report import TranslatedOffset
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.manifest import NotFoundError
from auction_backup_pipelines.repository.storage import IntegrityError
from auction_backup_pipelines.repository.streams import ArtifactStream
from tests.dagster_defs import PARTITIONS

pytestmark = pytest.mark.integration

BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
UTC = dt.UTC
TODAY = dt.datetime.now(UTC).date()
D0, D1, D2, D3 = (TODAY - dt.timedelta(days=n) for n in (4, 3, 2, 1))
OLD = TODAY - dt.timedelta(days=10)


def at(day: dt.date, hour: int, minute: int = 0) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class Msg:
    partition: int
    ts: int
    key: bytes | None = b"k"
    value: bytes | None = b"v"
    headers: tuple = ()

    def content(self) -> tuple:
        return (self.ts, self.key, self.value, list(self.headers))


class Kafka:
    """Creates uniquely named topics and groups, and removes them all at teardown."""

    def __init__(self) -> None:
        self.stem = f"t-{uuid.uuid4().hex[:10]}"
        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})

    def topic(self, suffix: str, partitions: int, **config: str) -> str:
        name = f"{self.stem}-{suffix}"
        self.admin.create_topics([NewTopic(name, partitions, 1, config={"retention.ms": "-1", **config})])[name].result()
        self.wait_leaders(name, partitions)
        return name

    def wait_leaders(self, name: str, partitions: int) -> None:
        deadline = time.monotonic() + 30
        while True:
            t = self.admin.list_topics(timeout=10).topics.get(name)
            if t is not None and len(t.partitions) == partitions and all(p.leader >= 0 for p in t.partitions.values()):
                return
            assert time.monotonic() < deadline, f"topic {name} has no leaders"
            time.sleep(0.05)

    def produce(self, topic: str, msgs: list[Msg]) -> list[int]:
        """Produce in order; return each message's offset."""
        p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "linger.ms": 5})
        offsets: list[int | None] = [None] * len(msgs)

        def report(i: int):
            def cb(err, m):
                assert err is None, err
                offsets[i] = m.offset()

            return cb

        for i, m in enumerate(msgs):
            p.produce(
                topic,
                key=m.key,
                value=m.value,
                partition=m.partition,
                timestamp=m.ts,
                headers=list(m.headers) or None,
                on_delivery=report(i),
            )
        assert p.flush(30) == 0
        return offsets  # type: ignore[return-value]

    def read(self, topic: str) -> dict[int, list[tuple]]:
        """Every message of every partition, as (ts, key, value, headers)."""
        md = self.admin.list_topics(topic, timeout=10).topics[topic]
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{self.stem}-reader", "enable.auto.commit": False})
        out: dict[int, list[tuple]] = {}
        try:
            for p in md.partitions:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                out[p] = []
                if high <= low:
                    continue
                c.assign([TopicPartition(topic, p, low)])
                deadline = time.monotonic() + 30
                while len(out[p]) < high - low:
                    for m in c.consume(1000, 0.2):
                        if m.error() is None:
                            out[p].append((m.timestamp()[1], m.key(), m.value(), list(m.headers() or [])))
                    assert time.monotonic() < deadline, f"{topic}/{p} read stalled"
                c.unassign()
        finally:
            c.close()
        return out

    def watermarks(self, topic: str, partitions: int) -> list[tuple[int, int]]:
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"{self.stem}-wm"})
        try:
            return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in range(partitions)]
        finally:
            c.close()

    def commit(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        c.close()

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
        res = self.admin.list_consumer_group_offsets([req])[group].result()
        return {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}

    def configs(self, topic: str) -> dict[str, str]:
        res = ConfigResource(ResourceType.TOPIC, topic)
        return {k: v.value for k, v in self.admin.describe_configs([res])[res].result().items()}

    def cleanup(self) -> None:
        topics = [t for t in self.admin.list_topics(timeout=10).topics if self.stem in t]
        if topics:
            for f in self.admin.delete_topics(topics, operation_timeout=30).values():
                f.result()
        groups = [g.group_id for g in self.admin.list_consumer_groups().result().valid if self.stem in g.group_id]
        if groups:
            for f in self.admin.delete_consumer_groups(groups).values():
                f.exception()  # a group with nothing committed may already be gone


@pytest.fixture
def kafka():
    k = Kafka()
    yield k
    k.cleanup()


@pytest.fixture(params=["native", "python"])
def export_in(request, monkeypatch):
    """Runs an export test with the native kafka-export helper (the default once installed) and
    again with the Python read that stands in for it when it is missing."""
    if request.param == "python":
        monkeypatch.setattr(export_native, "helper_path", lambda: None)
    else:
        assert export_native.helper_path(), "stack/install.sh builds kafka-export into the virtualenv"
    return request.param


@pytest.fixture(params=["native", "python"])
def replay_in(request, monkeypatch):
    """Runs a restore test with the native kafka-replay helper (the default once installed) and
    again with the Python replay that stands in for it when it is missing: both must agree."""
    if request.param == "python":
        monkeypatch.setattr(restore_native, "helper_path", lambda: None)
    else:
        assert restore_native.helper_path(), "stack/install.sh builds kafka-replay into the virtualenv"
    return request.param


def day_slices(msgs: list[Msg], offsets: list[int], days: list[dt.date]) -> dict[dt.date, dict[int, list[Msg]]]:
    """The documented rule, modelled independently: per partition, day D is the offsets from the
    first message stamped >= D up to (excluding) the first message stamped >= D+1."""
    by_part: dict[int, list[tuple[int, Msg]]] = {}
    for o, m in sorted(zip(offsets, msgs), key=lambda x: (x[1].partition, x[0])):
        by_part.setdefault(m.partition, []).append((o, m))

    def first_at(rows, ms):
        return next((i for i, (_, m) in enumerate(rows) if m.ts >= ms), len(rows))

    out: dict[dt.date, dict[int, list[Msg]]] = {}
    for d in days:
        out[d] = {}
        for p, rows in by_part.items():
            lo, hi = first_at(rows, at(d, 0)), first_at(rows, at(d + dt.timedelta(days=1), 0))
            out[d][p] = [m for _, m in rows[lo:hi]]
    return out


BIN = bytes(range(256))
H = (("trace", b"\x00\x01"), ("nullable", None), ("trace", b""))  # ordered, repeated name, null value


def varied(partition: int, ts: int, i: int) -> Msg:
    """Keys and values that must survive exactly: binary, null, empty; headers of every kind."""
    key = [BIN[i % 7 :], None, b"", f"k{i}".encode()][i % 4]
    value = [b"\xff\xfe" * (i + 1), None, b"", BIN][i % 4]
    headers = [(), H, (("only", None),), (("u\u00e9", b"\x80"),)][i % 4]
    return Msg(partition, ts, key, value, headers)


def test_two_days_restore_byte_for_byte_with_out_of_order_timestamps(kafka, repo, replay_in):
    events = kafka.topic("events", 3)
    state = kafka.topic("state", 2, **{"cleanup.policy": "compact"})
    msgs: dict[str, list[Msg]] = {events: [], state: []}
    i = 0
    for topic, parts in ((events, 3), (state, 2)):
        for p in range(parts):
            stamps = [
                at(D0, 23, 30),  # the day before: not restored
                at(D1, 0, 0),  # exactly midnight: first of D1
                at(D1, 9),
                at(D1, 17),
                at(D2, 1),  # D2 starts here
                at(D1, 23, 59),  # straggler stamped D1, written inside D2's range: stored with D2
                at(D2, 12),
                at(D2, 23, 59),
                at(D3, 0, 10),  # D3 starts here
                at(D2, 22),  # straggler stamped D2 written in D3's range: stored with D3, not restored
            ][: 10 - p]  # partitions differ in length, and one ends inside D3
            for ts in stamps:
                m = varied(p, ts, i)
                if topic == state and m.key is None:  # a compacted topic refuses null keys
                    m = Msg(p, ts, b"state-key", m.value, m.headers)
                msgs[topic].append(m)
                i += 1
                if topic == state and ts == at(D2, 12):
                    msgs[topic].append(Msg(p, at(D2, 13), b"user-1", None))  # a tombstone: key, null value
    offsets = {t: kafka.produce(t, m) for t, m in msgs.items()}

    for topic in (events, state):
        expected = day_slices(msgs[topic], offsets[topic], [D1, D2])
        for day in (D1, D2):
            b = kx.backup_topic_day(BOOTSTRAP, repo, topic, day)
            parts = b.metadata["partitions"]
            assert {p: s["messages"] for p, s in parts.items()} == {str(p): len(v) for p, v in expected[day].items()}
            assert b.metadata["messages_total"] == sum(len(v) for v in expected[day].values())
            assert b.metadata["early_timestamps"] == sum(1 for v in expected[day].values() for m in v if m.ts < at(day, 0))
            assert b.metadata["capture"].startswith("backfill")
        assert repo.get("kafka", artifact_name(topic), D2).metadata["early_timestamps"] > 0

    assert any(
        m.value is None and m.key == b"user-1" for v in day_slices(msgs[state], offsets[state], [D2])[D2].values() for m in v
    )
    report = kr.restore_topics(repo, (D1, D2), [events, state], BOOTSTRAP, topic_prefix="r-")
    for topic in (events, state):
        expected = day_slices(msgs[topic], offsets[topic], [D1, D2])
        restored = kafka.read(f"r-{topic}")
        want = {p: [m.content() for m in expected[D1][p] + expected[D2][p]] for p in expected[D1]}
        assert restored == want  # timestamps, keys, values, headers: byte for byte, per partition, in order
        assert report.topics[topic].messages == sum(len(v) for v in want.values())
    assert kafka.configs(f"r-{state}")["cleanup.policy"] == "compact"
    assert kafka.configs(f"r-{events}")["retention.ms"] == "-1"


def test_consumer_group_offsets_translate_and_apply(kafka, repo, replay_in):
    topic = kafka.topic("orders", 2)
    msgs = [Msg(0, at(D1, h)) for h in range(5)] + [Msg(1, at(D1, h)) for h in range(3)]
    msgs += [Msg(0, at(D2, h)) for h in range(4)] + [Msg(1, at(D2, h)) for h in range(2)]
    kafka.produce(topic, msgs)  # p0: D1 = 0..4, D2 = 5..8; p1: D1 = 0..2, D2 = 3..4
    g1, g2 = f"{kafka.stem}-billing", f"{kafka.stem}-audit"
    kafka.commit(g1, topic, {0: 7, 1: 1})  # p0 mid-D2; p1 inside D1, before the restored range
    kafka.commit(g2, topic, {0: 9})  # p0 past the last message
    b = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2)
    assert set(b.metadata["consumer_groups"]) == {g1, g2}

    report = kr.restore_topics(repo, (D2, D2), [topic], BOOTSTRAP, topic_prefix="a-")
    groups = report.topics[topic].consumer_groups
    assert groups[g1].partitions["0"] == TranslatedOffset(committed=7, restored=2, note="")  # original 7 is the third of 5..8
    assert groups[g1].partitions["1"].restored == 0 and groups[g1].partitions["1"].note.startswith("before")
    assert groups[g2].partitions["0"].restored == 4 and groups[g2].partitions["0"].note.startswith("past")
    assert not groups[g1].applied
    assert report.as_dict()["topics"][topic]["consumer_groups"][g1]["partitions"]["0"] == {
        "committed": 7,
        "restored": 2,
        "note": "",
    }
    assert kafka.committed(f"a-{g1}", f"a-{topic}", 2) == {}  # reported only

    report = kr.restore_topics(repo, (D2, D2), [topic], BOOTSTRAP, topic_prefix="b-", apply_offsets=True)
    assert report.topics[topic].consumer_groups[g1].applied
    assert kafka.committed(f"b-{g1}", f"b-{topic}", 2) == {0: 2, 1: 0}
    assert kafka.committed(f"b-{g2}", f"b-{topic}", 2) == {0: 4}
    assert kafka.committed(g1, topic, 2) == {0: 7, 1: 1}  # the source group is untouched
    # The committed position resumes at the same message: original offset 7 is restored offset 2.
    assert kafka.read(f"b-{topic}")[0][2] == kafka.read(topic)[0][7]


def test_native_and_python_exports_store_the_same_bytes(kafka, repo, monkeypatch):
    topic = kafka.topic("same", 3)
    msgs = [
        varied(p, at(day, h, p), i)
        for i, (day, h, p) in enumerate((d, h, p) for d in (D1, D2) for h in range(0, 24, 2) for p in range(3))
    ]
    msgs.append(Msg(1, at(D1, 12)))  # written in D2's range, stamped D1: an early timestamp
    kafka.produce(topic, msgs)
    assert export_native.helper_path(), "stack/install.sh builds kafka-export into the virtualenv"
    compressed_by_helper: list[int] = []
    store = ArtifactStream.write_compressed
    monkeypatch.setattr(ArtifactStream, "write_compressed", lambda self, b: compressed_by_helper.append(len(b)) or store(self, b))
    native = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2)
    assert sum(compressed_by_helper) == native.file(export_file(topic)).stored_size > 0  # the helper compressed
    with repo.open(native, export_file(topic)) as f:
        native_bytes = f.read()  # the helper's frames decompress to the size and sha256 it declared
    monkeypatch.setattr(export_native, "helper_path", lambda: None)
    python = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2)
    assert native.backup_id != python.backup_id
    assert native.file(export_file(topic)).size == python.file(export_file(topic)).size
    assert native.file(export_file(topic)).sha256 == python.file(export_file(topic)).sha256
    with repo.open(python, export_file(topic)) as f:
        assert f.read() == native_bytes
    assert native.metadata["partitions"] == python.metadata["partitions"]
    assert native.metadata["messages_total"] == 36 + 1 and native.metadata["early_timestamps"] == 1


def test_a_day_ending_in_an_aborted_transaction_finishes(kafka, repo, export_in):
    # Three messages, then an aborted transaction stamped the same day: its marker (stamped now)
    # bounds the day, so the range ends in messages a read_committed reader never receives, and
    # the read must end on the end-of-partition event instead of waiting for them.
    topic = kafka.topic("txn", 1)
    kafka.produce(topic, [Msg(0, at(D2, h), value=f"m{h}".encode()) for h in range(3)])
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"{kafka.stem}-txn"})
    p.init_transactions(30)
    p.begin_transaction()
    for h in (4, 5):
        p.produce(topic, value=b"aborted", partition=0, timestamp=at(D2, h))
    p.flush(30)
    p.abort_transaction(30)
    started = time.monotonic()
    b = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2, stall_timeout=20)
    assert time.monotonic() - started < 15, "the read waited for messages that never come"
    assert b.metadata["partitions"]["0"]["end_offset"] == 5  # 3 messages and 2 aborted; the marker is at 5
    assert b.metadata["partitions"]["0"]["messages"] == 3
    with repo.open(b, export_file(topic)) as f:
        assert [r.value for r in read_records(f)] == [b"m0", b"m1", b"m2"]


def test_messages_produced_after_end_offsets_are_fixed_are_excluded(kafka, repo, export_in):
    topic = kafka.topic("live", 1)
    kafka.produce(topic, [Msg(0, at(D2, h), f"m{h}".encode()) for h in range(6)])
    plan = kx.plan_day(BOOTSTRAP, topic, D2)  # open end: no D3 message yet, so end = high watermark
    assert [(r.start, r.end, r.end_reason) for r in plan.partitions] == [(0, 6, "high_watermark")]
    late = kafka.produce(topic, [Msg(0, at(D2, 23)), Msg(0, at(D2, 23, 30)), Msg(0, int(time.time() * 1000))])
    assert late == [6, 7, 8]
    b = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2, plan=plan)
    assert b.metadata["partitions"]["0"]["messages"] == 6
    assert b.metadata["partitions"]["0"]["last_offset"] == 5
    assert b.metadata["source_position"]["0"]["end_reason"] == "high_watermark"
    with repo.open(b, export_file(topic)) as f:
        assert [r.offset for r in read_records(f)] == list(range(6))  # whole messages only, none of the later ones


def test_rerunning_a_day_while_producers_write_gives_identical_content(kafka, repo, export_in):
    topic = kafka.topic("busy", 3)
    kafka.produce(topic, [varied(p, at(day, h), h) for day in (D1, D2) for p in range(3) for h in (0, 6, 12, 18)])
    stop, first_delivery = threading.Event(), threading.Event()

    def keep_producing():  # the live head keeps moving with current timestamps
        p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 1})
        n = 0
        while not stop.is_set():
            p.produce(topic, value=b"now", partition=n % 3, on_delivery=lambda err, m: first_delivery.set())
            p.poll(0.01)
            n += 1
        p.flush(10)

    thread = threading.Thread(target=keep_producing)
    thread.start()
    try:
        assert first_delivery.wait(30)
        a = kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
        b = kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
    finally:
        stop.set()
        thread.join(30)
    assert a.backup_id != b.backup_id
    assert a.metadata["partitions"] == b.metadata["partitions"]
    assert a.metadata["messages_sha256"] == b.metadata["messages_sha256"]
    assert a.metadata["messages_total"] == 12
    fa, fb = a.file(export_file(topic)), b.file(export_file(topic))
    assert (fa.sha256, fa.stored_sha256, fa.size) == (fb.sha256, fb.stored_sha256, fb.size)
    assert [x.backup_id for x in repo.list("kafka", artifact_name(topic))] == [b.backup_id]  # the re-run replaced it


def test_broker_down_fails_clearly_and_stores_nothing(repo):
    with pytest.raises(KafkaUnavailable, match=r"no Kafka broker answered at 127\.0\.0\.1:1 .*nothing was written"):
        kx.backup_topic_day("127.0.0.1:1", repo, "auction-events", D1, timeout=3)
    assert repo.list() == []
    assert [p for p in repo.backend.root.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_missing_topic_fails_clearly_and_stores_nothing(kafka, repo):
    with pytest.raises(TopicNotFound, match=rf"no topic '{kafka.stem}-nope'"):
        kx.backup_topic_day(BOOTSTRAP, repo, f"{kafka.stem}-nope", D1)
    assert repo.list() == []


def test_day_deleted_by_retention_fails_but_an_empty_day_is_valid(kafka, repo, export_in):
    topic = kafka.topic("aged", 2)
    kafka.produce(
        topic,
        [Msg(0, at(OLD, h)) for h in range(4)]
        + [Msg(0, at(D1, h)) for h in range(4)]
        + [Msg(1, at(OLD, h)) for h in range(2)]
        + [Msg(1, at(D1, h)) for h in range(2)],
    )
    # Simulate retention: p0 loses OLD and the first two messages of D1, p1 exactly OLD.
    for f in kafka.admin.delete_records([TopicPartition(topic, 0, 6), TopicPartition(topic, 1, 2)]).values():
        f.result()
    with pytest.raises(RetentionGap) as err:
        kx.backup_topic_day(BOOTSTRAP, repo, topic, OLD)
    msg = str(err.value)
    assert f"Kafka no longer holds all of {OLD}" in msg and "nothing was written" in msg
    assert "partition 0: offsets 0..5 were deleted" in msg and "partition 1: offsets 0..1 were deleted" in msg
    with pytest.raises(RetentionGap, match="partition 0: offsets 0..5 were deleted"):
        kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)  # two of D1's messages are gone too
    assert repo.list() == []

    empty = kx.backup_topic_day(BOOTSTRAP, repo, topic, D2)  # no traffic on D2, nothing of it deleted
    assert empty.metadata["messages_total"] == 0
    assert [s["messages"] for s in empty.metadata["partitions"].values()] == [0, 0]
    assert repo.verify(empty, deep=True).deep  # still a zstd stream, of no bytes, that decompresses
    quiet = kafka.topic("quiet", 1)
    assert kx.backup_topic_day(BOOTSTRAP, repo, quiet, D1).metadata["messages_total"] == 0


def test_restore_refuses_non_empty_target_without_force(kafka, repo, replay_in):
    a, b = kafka.topic("a", 2), kafka.topic("b", 1)
    kafka.produce(a, [Msg(p, at(D1, h), value=f"a{p}{h}".encode()) for p in range(2) for h in range(3)])
    kafka.produce(b, [Msg(0, at(D1, 5))])
    for t in (a, b):
        kx.backup_topic_day(BOOTSTRAP, repo, t, D1)
    prefix = f"{kafka.stem}-x-"
    target_a = prefix + a  # exists and holds one message
    kafka.admin.create_topics([NewTopic(target_a, 2, 1)])[target_a].result()
    kafka.wait_leaders(target_a, 2)
    kafka.produce(target_a, [Msg(1, at(D3, 1), value=b"precious")])

    with pytest.raises(RestoreRefused, match="already holds 1 messages.*--force.*Nothing was written"):
        kr.restore_topics(repo, (D1, D1), [a, b], BOOTSTRAP, topic_prefix=prefix)
    assert kafka.watermarks(target_a, 2) == [(0, 0), (0, 1)]
    assert prefix + b not in kafka.admin.list_topics(timeout=10).topics  # the other target was not created either

    report = kr.restore_topics(repo, (D1, D1), [a, b], BOOTSTRAP, topic_prefix=prefix, force=True)
    assert not report.topics[a].created and report.topics[b].created
    restored = kafka.read(target_a)
    assert restored[1][0][2] == b"precious" and [m[2] for m in restored[1][1:]] == [b"a10", b"a11", b"a12"]
    assert [m[2] for m in restored[0]] == [b"a00", b"a01", b"a02"]


def test_read_back_that_differs_from_the_manifest_fails_and_keeps_the_topic(kafka, repo, replay_in, monkeypatch):
    # A broker that stored something else than it acknowledged cannot be staged on a real one,
    # so the manifest's expectation is changed instead: the read-back must notice either way.
    topic = kafka.topic("rb", 2)
    kafka.produce(topic, [Msg(p, at(D1, h), value=f"v{p}{h}".encode()) for p in range(2) for h in range(4)])
    kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
    wrong = "0" * 64
    real = restore_native.segments_of

    def tampered(job, p):
        return [(day, n, wrong if p == 1 else sha) for day, n, sha in real(job, p)]

    monkeypatch.setattr(restore_native, "segments_of", tampered)
    monkeypatch.setattr(restore_verify, "segments_of", tampered)
    with pytest.raises(VerificationError, match=rf"partition 1 day {D1}: content differs.*left as written, for inspection"):
        kr.restore_topics(repo, (D1, D1), [topic], BOOTSTRAP, topic_prefix="v-")
    assert [len(msgs) for msgs in kafka.read(f"v-{topic}").values()] == [4, 4]  # written, kept for inspection


def test_restore_checks_the_backups_before_writing(kafka, repo):
    topic = kafka.topic("c", 1)
    kafka.produce(topic, [Msg(0, at(D1, h)) for h in range(3)])
    backup = kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
    with pytest.raises(NotFoundError, match=rf"no backup of {topic} {D2}.*Nothing was written"):
        kr.restore_topics(repo, (D1, D2), [topic], BOOTSTRAP, topic_prefix="r-")
    stored = repo.backend.root / backup.prefix / backup.file(export_file(topic)).key
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    stored.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        kr.restore_topics(repo, (D1, D1), [topic], BOOTSTRAP, topic_prefix="r-")
    assert f"r-{topic}" not in kafka.admin.list_topics(timeout=10).topics
    stored.write_bytes(bytes(raw[: len(raw) // 2]) + bytes([raw[len(raw) // 2] ^ 0xFF]) + bytes(raw[len(raw) // 2 + 1 :]))
    with pytest.raises(KafkaUnavailable, match=r"no Kafka broker answered at 127\.0\.0\.1:1"):
        kr.restore_topics(repo, (D1, D1), [topic], "127.0.0.1:1", topic_prefix="r-", timeout=3)


def test_restore_refuses_a_backup_in_another_format(kafka, repo):
    topic = kafka.topic("fmt", 1)
    kafka.produce(topic, [Msg(0, at(D1, 3))])
    backup = kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
    assert backup.metadata["format"] == "kafka-records-v2"
    manifest = repo.backend.root / backup.manifest_key
    doc = json.loads(manifest.read_text())
    del doc["metadata"]["format"]  # as written by the JSON Lines versions: no own checksum, no catalog entry
    del doc["self_sha256"]
    manifest.write_text(json.dumps(doc))
    catalog.forget(repo, backup.ref)
    with pytest.raises(KafkaBackupError, match=r"stored as JSON Lines .*reads only kafka-records-v2.*Nothing was written"):
        kr.restore_topics(repo, (D1, D1), [topic], BOOTSTRAP, topic_prefix="f-")
    assert f"f-{topic}" not in kafka.admin.list_topics(timeout=10).topics


def test_dagster_asset_publishes_a_day_and_fails_clearly(kafka, tmp_path):
    topic = kafka.topic("dag", 2)
    kafka.produce(topic, [Msg(p, at(D1, h)) for p in range(2) for h in range(5)])
    resources = {
        "kafka": KafkaResource(bootstrap_servers=BOOTSTRAP, topics=[topic]),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }
    result = materialize(
        [build_topic_export_asset(topic, PARTITIONS)],
        partition_key=D1.isoformat(),
        resources=resources,
        instance=DagsterInstance.ephemeral(),
    )
    [event] = result.get_asset_materialization_events()
    mat = event.materialization
    assert mat.metadata["dagster/row_count"].value == 10
    assert mat.metadata["partition_offsets"].value == {"0": [0, 5], "1": [0, 5]}
    assert mat.partition == D1.isoformat()

    missing = f"{kafka.stem}-gone"
    failed = materialize(
        [build_topic_export_asset(missing, PARTITIONS)],
        partition_key=D1.isoformat(),
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not failed.success
    error = failed.get_step_failure_events()[0].step_failure_data.error
    assert f"has no topic '{missing}'" in error.message
    assert resources["backup_repo"].repository().list("kafka", artifact_name(missing)) == []


WHERE_WRITES_FAIL = [("native", "raw stream"), ("python", "raw stream"), ("native", "compressed by the helper")]


@pytest.mark.parametrize(("export_in", "where"), WHERE_WRITES_FAIL, indirect=["export_in"])
def test_a_write_failing_mid_export_publishes_nothing_and_stops_the_helper(kafka, repo, monkeypatch, export_in, where):
    topic = kafka.topic("full", 2)
    # Incompressible values, so that the compressed stream is as long as the raw one.
    kafka.produce(topic, [Msg(p, at(D2, h % 24), value=os.urandom(2000)) for p in range(2) for h in range(2000)])

    class DiskFull:
        def __init__(self, sink, limiter):
            self.written = 0

        def write(self, data):
            self.written += len(data)
            if self.written > 3 << 20:
                raise OSError(28, "No space left on device")
            return len(data)

    if where == "raw stream":
        monkeypatch.setattr(kx, "paced", DiskFull)  # not the ArtifactStream itself: the helper sends raw bytes
    else:
        full = DiskFull(None, None)
        monkeypatch.setattr(ArtifactStream, "write_compressed", lambda self, b: full.write(b))
    children = set(os.listdir("/proc"))
    with pytest.raises(OSError, match="No space left"):
        kx.backup_topic_day(BOOTSTRAP, repo, topic, D2)
    assert repo.list("kafka") == []
    helpers = [
        pid
        for pid in set(os.listdir("/proc")) - children
        if pid.isdigit()
        and os.path.exists(f"/proc/{pid}/cmdline")
        and b"kafka-export" in open(f"/proc/{pid}/cmdline", "rb").read()
    ]
    assert helpers == []  # killed and reaped, not left writing into a pipe nobody reads

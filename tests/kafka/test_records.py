"""The record format and the export's hot loop against a fake consumer: what it writes decodes
to exactly what it read, and its checksum is the record encoding a restore recomputes."""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pytest
from confluent_kafka import KafkaError

from auction_backup_pipelines.kafka import export as kafka_export
from auction_backup_pipelines.kafka.export import PartitionRange, export_partitions, messages_digest
from auction_backup_pipelines.kafka.records import (
    BLOCK_HEAD,
    RECORD_HEAD,
    KafkaBackupError,
    Record,
    block_head,
    encode_record,
    read_records,
)
from auction_backup_pipelines.kafka.restore_verify import compare_range

DAY = dt.date(2026, 11, 20)
DAY_MS = int(dt.datetime(2026, 11, 20, tzinfo=dt.UTC).timestamp() * 1000)


class FakeMessage:
    def __init__(self, partition, offset, ts, key, value, headers=None, tt=1, error=None):
        self._v = (partition, offset, ts, key, value, headers, tt, error)

    def partition(self):
        return self._v[0]

    def offset(self):
        return self._v[1]

    def timestamp(self):
        return self._v[6], self._v[2]

    def key(self):
        return self._v[3]

    def value(self):
        return self._v[4]

    def headers(self):
        return self._v[5]

    def error(self):
        return self._v[7]


class FakeConsumer:
    """Hands out the queued messages a few at a time, like consume() with small batches."""

    def __init__(self, messages, batch=3):
        self.queue = list(messages)
        self.batch = batch
        self.assigned = None

    def assign(self, tps):
        self.assigned = tps

    def unassign(self):
        self.assigned = None

    def consume(self, n, timeout):
        n = min(n, self.batch)
        out, self.queue = self.queue[:n], self.queue[n:]
        return out


EDGE = [
    (b"\x00\xff\x80", b"\x00"),
    (None, b"value"),
    (b"", b""),
    (b"key", None),  # a tombstone
    (None, None),
    (bytes(range(256)), bytes(range(256)) * 4),
]
HEADERS = [None, [("a", None)], [("dup", b"1"), ("dup", b"")], [('\u00e9t\u00e9 "quoted"', b"\xff")], [], None]


def messages(partition=2, start=10):
    return [
        FakeMessage(partition, start + i, DAY_MS + (i - 1) * 1000, k, v, h, tt=1 + (i % 2))
        for i, ((k, v), h) in enumerate(zip(EDGE, HEADERS))
    ]


def run(msgs, start=10, end=16, partition=2):
    out = io.BytesIO()
    stats = export_partitions(FakeConsumer(msgs), "t", [PartitionRange(partition, start, end, "next_day", 0, end)], out, DAY)
    return stats[str(partition)], out.getvalue()


def decode(raw: bytes) -> list[Record]:
    return list(read_records(io.BytesIO(raw)))


def test_records_decode_to_exactly_what_was_read():
    msgs = messages()
    stats, raw = run(msgs)
    records = decode(raw)
    assert len(records) == len(msgs) == stats["messages"]
    for r, m in zip(records, msgs):
        assert (r.partition, r.offset, r.timestamp_type, r.timestamp) == (m.partition(), m.offset(), *m.timestamp())
        assert r.key == m.key() and type(r.key) is type(m.key())  # None stays None, b"" stays b""
        assert r.value == m.value() and type(r.value) is type(m.value())
        assert r.headers == list(m.headers() or [])
    assert (stats["first_offset"], stats["last_offset"]) == (10, 15)
    assert stats["early_timestamps"] == 1  # the first one is stamped a second before the day


def test_checksum_is_the_record_encoding_without_offsets():
    msgs = messages()
    stats, _ = run(msgs)
    sha = hashlib.sha256()
    for m in msgs:
        sha.update(encode_record(m.timestamp()[1], m.key(), m.value(), m.headers()))
    assert stats["sha256"] == sha.hexdigest()
    # The same messages at other offsets (a restore) give the same checksum.
    moved, _ = run(messages(start=0), start=0, end=6)
    assert moved["sha256"] == stats["sha256"]


def test_null_and_empty_are_different_content():
    a = encode_record(1, None, b"", None)
    b = encode_record(1, b"", b"", None)
    c = encode_record(1, b"", None, None)
    d = encode_record(1, b"", b"", [("h", None)])
    e = encode_record(1, b"", b"", [("h", b"")])
    assert len({a, b, c, d, e}) == 5
    assert encode_record(1, b"", b"", []) == b


def test_encoder_and_decoder_round_trip_every_kind_of_field():
    rows = [  # (timestamp, timestamp type, key, value, headers)
        (-1, 0, b"\x00\xff\x80", b"\x00", []),  # binary; no timestamp
        (1, 1, None, b"value", [("a", None)]),  # null key, header with a null value
        (2, 2, b"", b"", [("dup", b"1"), ("dup", b"")]),  # empty key and value; repeated header names
        (3, 1, b"key", None, [('\u00e9t\u00e9 "quoted"', b"\xff")]),  # tombstone; non-ASCII header name
        (2**62, 1, None, None, []),
        (4, 1, bytes(range(256)), bytes(range(256)) * 300, [("big", bytes(70_000))]),
    ]
    offsets = [7, 8, 12, 13, 14, 2**40]
    raw = block_head(5, offsets, [r[1] for r in rows]) + b"".join(encode_record(ts, k, v, h) for ts, _, k, v, h in rows)
    raw += block_head(6, [0], [1]) + encode_record(9, b"k", b"v", None)
    want = [Record(5, o, ts, tt, k, v, h) for o, (ts, tt, k, v, h) in zip(offsets, rows)] + [Record(6, 0, 9, 1, b"k", b"v", [])]
    got = decode(raw)
    assert got == want
    assert [(type(r.key), type(r.value)) for r in got] == [(type(r.key), type(r.value)) for r in want]  # None stays None


def test_a_damaged_stream_is_refused():
    raw = block_head(0, [1, 2], [1, 1]) + encode_record(1, b"k", b"v", None) + encode_record(2, b"k", b"v", None)
    with pytest.raises(KafkaBackupError, match="damaged or ends in the middle of a block"):
        decode(raw[:-1])
    with pytest.raises(KafkaBackupError, match="damaged or ends in the middle of a block"):
        decode(raw + raw[: BLOCK_HEAD.size - 1])
    with pytest.raises(KafkaBackupError, match="not a kafka-records-v2 block"):
        decode(b"JSON" + raw[4:])
    bad_length = block_head(0, [1], [1]) + RECORD_HEAD.pack(1, -2, 1, 0) + b"v"  # -1 is null, -2 nothing
    with pytest.raises(KafkaBackupError, match="damaged"):
        decode(bad_length + raw)


def test_blocks_do_not_depend_on_how_consume_batches_the_messages(monkeypatch):
    monkeypatch.setattr(kafka_export, "BLOCK_RECORDS", 4)
    msgs = [FakeMessage(0, o, DAY_MS + o, b"k%d" % o, b"v" * o) for o in range(11)]
    outputs = set()
    for batch in (1, 3, 4, 7, 100):
        out = io.BytesIO()
        export_partitions(FakeConsumer(msgs, batch), "t", [PartitionRange(0, 0, 11, "next_day", 0, 11)], out, DAY)
        outputs.add(out.getvalue())
    assert len(outputs) == 1
    raw = outputs.pop()
    assert [r.offset for r in decode(raw)] == list(range(11))
    assert raw.count(b"KRB2") == 3  # blocks of 4, 4 and 3 messages


def test_stops_at_the_end_offset_and_skips_events():
    eof = KafkaError(KafkaError._PARTITION_EOF)
    msgs = messages()[:3] + [FakeMessage(2, 13, 0, None, None, error=eof)] + messages()[3:]
    stats, raw = run(msgs, end=13)
    assert stats["messages"] == 3 and stats["last_offset"] == 12
    assert len(decode(raw)) == 3


def test_range_ending_in_control_records_finishes_on_eof():
    # Offsets 13..15 are transaction markers: never delivered, EOF reported at 16.
    eof = KafkaError(KafkaError._PARTITION_EOF)
    msgs = messages()[:3] + [FakeMessage(2, 16, 0, None, None, error=eof)]
    stats, _ = run(msgs, end=16)
    assert stats["messages"] == 3


def test_empty_range_reads_nothing():
    stats, raw = run([], start=5, end=5)
    assert raw == b"" and stats["messages"] == 0 and stats["first_offset"] is None
    assert stats["sha256"] == hashlib.sha256().hexdigest()


def test_day_digest_depends_on_every_partition():
    parts = {"0": {"messages": 1, "sha256": "aa"}, "1": {"messages": 0, "sha256": "bb"}}
    assert messages_digest(parts) == messages_digest(dict(reversed(parts.items())))
    assert messages_digest(parts) != messages_digest({**parts, "1": {"messages": 1, "sha256": "bb"}})


def test_a_failing_write_surfaces_in_the_caller():
    class Full(io.RawIOBase):
        def write(self, b):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        export_partitions(FakeConsumer(messages()), "t", [PartitionRange(2, 10, 16, "next_day", 0, 16)], Full(), DAY)


def _day_sha(msgs) -> str:
    return hashlib.sha256(b"".join(encode_record(m.timestamp()[1], m.key(), m.value(), m.headers()) for m in msgs)).hexdigest()


@pytest.mark.parametrize("batch", [1, 2, 4, 5, 100])
def test_read_back_hashes_each_day_apart_however_consume_batches_them(batch):
    # Two days in one partition, an EOF event and a message of another partition among them:
    # each day's checksum is over its own messages only, whatever batches consume() hands out.
    day1, day2 = messages(start=10)[:4], messages(start=14)
    eof = KafkaError(KafkaError._PARTITION_EOF)
    stream = day1[:2] + [FakeMessage(2, 12, 0, None, None, error=eof), FakeMessage(3, 5, 0, b"x", b"y")] + day1[2:] + day2
    segments = [("2026-11-20", 4, _day_sha(day1)), ("2026-11-21", 6, _day_sha(day2))]
    assert compare_range(FakeConsumer(stream, batch), "t", 2, 10, segments, 1.0) == []
    tampered = day1 + day2[:3] + [FakeMessage(2, 17, DAY_MS, b"k", b"changed")] + day2[4:]
    assert compare_range(FakeConsumer(tampered, batch), "t", 2, 10, segments, 1.0) == [
        "partition 2 day 2026-11-21: content differs from the manifest's checksum"
    ]

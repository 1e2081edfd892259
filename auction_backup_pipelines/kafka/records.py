"""Kafka topic backups: what export and restore share (clients, errors, the record format).

A topic's day D is backed up as `kafka/topic_export/<topic>/<D>/…` with two files:

  <topic>.records  every message of the day in the format below, partition after partition in
                   offset order (see export.py for which messages belong to a day)
  topic.json       partition count, replication factor, dynamic topic configs and the committed
                   offsets of every consumer group on the topic when the backup ran

The manifest names the format in `metadata.format`; this module reads and writes only
"kafka-records-v2" (the base64 JSON Lines of earlier versions are no longer read). It is a
length-prefixed binary stream, every integer little-endian, so that encoding a message is one
struct.pack (base64 and JSON formatting made the export twice as slow as reading the topic):

  file    = block*
  block   = "KRB2"  partition:i32  n:i32          1 <= n <= BLOCK_RECORDS (10,000)
            offset:i64 * n                         ascending
            timestamp_type:u8 * n                  0 none, 1 CreateTime, 2 LogAppendTime
            record * n                             in the same order as the offsets
  record  = timestamp:i64  key_len:i32  value_len:i32  header_count:i32  key  value
            header * header_count
  header  = name_len:i32  value_len:i32  name (UTF-8)  value

A length of -1 means null (no bytes follow): a null key and a null value (a tombstone) stay
distinct from empty ones, and so does a header with a null value. Headers keep their order
and repeated names. A partition's messages are cut into blocks of exactly BLOCK_RECORDS
(its last block may be shorter), so two exports of the same messages are identical byte for
byte. The repository stores the file zstd-compressed, like every other backup file.

Each partition's `sha256` in the manifest is taken over its `record`s alone, concatenated:
timestamp, key, value and headers, but neither the offset nor the timestamp type. A restore
writes the same messages at new offsets (with CreateTime), so it can recompute exactly this
digest from what it reads back and prove the copy byte for byte.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from auction_backup_pipelines import errors
from auction_backup_pipelines.errors import BackupError, RefusedError, UnavailableError
from auction_backup_pipelines.kafka import connection
from auction_backup_pipelines.kafka.connection import Cluster, address
from auction_backup_pipelines.policy.capture_window import CaptureWindowError

SYSTEM = "kafka"
ARTIFACT_PREFIX = "topic_export"
TOPIC_FILE = "topic.json"
EXPORT_GROUP = "auction-backup-export"  # never subscribes or commits, so never becomes a real group
DEFAULT_TIMEOUT_S = 10.0


class KafkaBackupError(BackupError):
    """A Kafka backup or restore cannot proceed; the message names the topic and the cause."""


class KafkaUnavailable(KafkaBackupError, UnavailableError):
    """No broker answered at the bootstrap address, or the TLS handshake or SASL login failed."""


class TopicNotFound(KafkaBackupError):
    """The topic to back up does not exist."""


class RetentionGap(KafkaBackupError, CaptureWindowError):
    """Kafka already deleted messages that may belong to the requested day."""


class RestoreRefused(KafkaBackupError, RefusedError):
    """A restore would write into a non-empty topic or an in-use group without --force."""


class VerificationError(KafkaBackupError, errors.VerificationError):
    """What a restore reads back differs from what the backup recorded."""


def artifact_name(topic: str) -> str:
    """The artifact a topic's exports are stored under: `topic_export/<topic>`."""
    return f"{ARTIFACT_PREFIX}/{topic}"


def is_topic_artifact(artifact: str) -> bool:
    """Whether `artifact` is a topic export (`topic_export/<topic>`)."""
    return artifact.startswith(ARTIFACT_PREFIX + "/")


def topic_of(artifact: str) -> str:
    """The topic of a topic export's artifact; the inverse of `artifact_name`."""
    if not is_topic_artifact(artifact):
        raise KafkaBackupError(f"{artifact!r} is not a Kafka topic export (expected {ARTIFACT_PREFIX}/<topic>)")
    return artifact.split("/", 1)[1]


def export_file(topic: str) -> str:
    return f"{topic}.records"


# -- clients ---------------------------------------------------------------------------------------


def client_config(cluster: Cluster, timeout: float) -> dict[str, Any]:
    """Every client's base configuration, security included (kafka/connection.py)."""
    return connection.client_config(cluster, timeout)


def admin_client(cluster: Cluster, timeout: float = DEFAULT_TIMEOUT_S) -> AdminClient:
    return AdminClient(client_config(cluster, timeout))


FETCH_MAX_BYTES = 16 << 20
QUEUED_MAX_KBYTES = 16 << 10


def consumer(cluster: Cluster, timeout: float = DEFAULT_TIMEOUT_S) -> Consumer:
    """A reader for manual assignment: never commits, sees only committed transactions."""
    return Consumer(consumer_config(cluster, timeout))


def consumer_config(cluster: Cluster, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """The configuration of `consumer` (also handed to the native kafka-export and kafka-replay helpers)."""
    return {
        **client_config(cluster, timeout),
        "group.id": EXPORT_GROUP,  # required even with assign(); nothing is ever committed
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        # Fail loudly if retention deletes the offset we are reading instead of jumping.
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        # One partition is read at a time. Fetches of 16 MB and a prefetch queue of 16 MB keep
        # memory flat however large the topic (with 64 MB fetches a restore's peak RSS grew by
        # half from 1 M to 4 M messages); fetches that small were 2x slower only while a full
        # queue postponed the next fetch by librdkafka's default backoff of 1 s, hence 5 ms.
        "fetch.max.bytes": FETCH_MAX_BYTES,
        "max.partition.fetch.bytes": FETCH_MAX_BYTES,
        "queued.max.messages.kbytes": QUEUED_MAX_KBYTES,
        "fetch.wait.max.ms": 10,
        "fetch.queue.backoff.ms": 5,
    }


def error_text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, KafkaError):
        return f"{arg.name()}: {arg.str()}"
    return str(exc) or type(exc).__name__


def require_topic(admin: AdminClient, cluster: Cluster, topic: str, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """The topic's metadata; raises KafkaUnavailable or TopicNotFound with what to check."""
    bootstrap = address(cluster)
    unreachable = (
        f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
        "(is Kafka down, or KAFKA_BOOTSTRAP_SERVERS wrong?); nothing was written"
    )
    md = connection.list_topics(admin, cluster, timeout, unreachable, KafkaUnavailable)
    t = md.topics.get(topic)
    if t is None or (t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        existing = ", ".join(sorted(n for n in md.topics if not n.startswith("__"))[:20]) or "none"
        raise TopicNotFound(f"Kafka at {bootstrap} has no topic {topic!r} (existing: {existing}); nothing was written")
    if t.error is not None:
        raise KafkaBackupError(f"cannot read metadata of topic {topic!r} at {bootstrap}: {t.error.str()}")
    return t


# -- topic description -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]  # dynamic (non-default) topic configs only: what a restore must set
    effective: dict[str, str]  # every config's effective value, for decisions (retention)
    consumer_groups: dict[str, dict[int, int]]  # group -> partition -> committed offset
    unreadable_groups: dict[str, str]

    def to_json(self) -> bytes:
        doc = {
            "topic": self.name,
            "partitions": self.partitions,
            "replication_factor": self.replication_factor,
            "configs": self.configs,
            "consumer_groups": {
                g: {str(p): o for p, o in sorted(offs.items())} for g, offs in sorted(self.consumer_groups.items())
            },
            "unreadable_groups": self.unreadable_groups,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TopicInfo:
        doc = json.loads(raw)
        return cls(
            name=doc["topic"],
            partitions=int(doc["partitions"]),
            replication_factor=int(doc["replication_factor"]),
            configs=dict(doc["configs"]),
            effective={},
            consumer_groups={g: {int(p): int(o) for p, o in offs.items()} for g, offs in doc["consumer_groups"].items()},
            unreadable_groups=dict(doc.get("unreadable_groups", {})),
        )


def topic_configs(admin: AdminClient, topic: str, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[dict[str, str], dict[str, str]]:
    """(dynamic topic configs, every effective value) of `topic`."""
    res = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([res], request_timeout=timeout)[res].result()
    except KafkaException as exc:
        raise KafkaBackupError(f"cannot describe configs of topic {topic!r}: {error_text(exc)}") from None
    dynamic = {
        name: e.value
        for name, e in entries.items()
        if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and e.value is not None
    }
    effective = {name: e.value for name, e in entries.items() if e.value is not None}
    return dynamic, effective


def group_offsets(
    admin: AdminClient, topic: str, timeout: float = DEFAULT_TIMEOUT_S
) -> tuple[dict[str, dict[int, int]], dict[str, str]]:
    """Committed offsets on `topic` of every consumer group, and groups that could not be read."""
    try:
        listing = admin.list_consumer_groups(request_timeout=timeout).result()
    except KafkaException as exc:
        raise KafkaBackupError(f"cannot list consumer groups: {error_text(exc)}") from None
    names = sorted(g.group_id for g in listing.valid if g.group_id != EXPORT_GROUP)
    # One request per group (the API takes one group at a time); all in flight at once.
    futures = {
        name: admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(name)], request_timeout=timeout)[name]
        for name in names
    }
    found: dict[str, dict[int, int]] = {}
    unreadable: dict[str, str] = {}
    for name, fut in futures.items():
        try:
            result = fut.result()
        except KafkaException as exc:
            unreadable[name] = error_text(exc)
            continue
        offsets = {tp.partition: tp.offset for tp in result.topic_partitions or () if tp.topic == topic and tp.offset >= 0}
        if offsets:
            found[name] = offsets
    return found, unreadable


def read_topic(admin: AdminClient, topic_md: Any, timeout: float = DEFAULT_TIMEOUT_S) -> TopicInfo:
    dynamic, effective = topic_configs(admin, topic_md.topic, timeout)
    groups, unreadable = group_offsets(admin, topic_md.topic, timeout)
    return TopicInfo(
        name=topic_md.topic,
        partitions=len(topic_md.partitions),
        replication_factor=max((len(p.replicas) for p in topic_md.partitions.values()), default=0),
        configs=dynamic,
        effective=effective,
        consumer_groups=groups,
        unreadable_groups=unreadable,
    )


# -- record format ---------------------------------------------------------------------------------

FORMAT = "kafka-records-v2"
BLOCK_MAGIC = b"KRB2"
BLOCK_RECORDS = 10_000
BLOCK_HEAD = struct.Struct("<4sii")  # magic, partition, record count
RECORD_HEAD = struct.Struct("<qiii")  # timestamp, key length, value length, header count
HEADER_HEAD = struct.Struct("<ii")  # name length, value length
NULL = -1


class Record(NamedTuple):
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _len(b: bytes | None) -> int:
    return NULL if b is None else len(b)


def encode_record(timestamp: int, key: bytes | None, value: bytes | None, headers: Any) -> bytes:
    """The `record` of one message: what a partition's sha256 is taken over."""
    headers = headers or ()
    parts = [RECORD_HEAD.pack(timestamp, _len(key), _len(value), len(headers)), key or b"", value or b""]
    for name, hv in headers:
        raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
        parts += (HEADER_HEAD.pack(len(raw), _len(hv)), raw, hv or b"")
    return b"".join(parts)


def block_head(partition: int, offsets: list[int], timestamp_types: list[int]) -> bytes:
    """Everything of a block before its records."""
    n = len(offsets)
    return BLOCK_HEAD.pack(BLOCK_MAGIC, partition, n) + struct.pack(f"<{n}q", *offsets) + bytes(timestamp_types)


READ_CHUNK = 1 << 20  # bytes read from the stream at once; records are sliced out of this buffer
NO_HEADERS: list[tuple[str, bytes | None]] = []  # shared by every record without headers: never mutate


class Block(NamedTuple):
    """One block of a kafka-records-v2 stream, as columns (one entry per message)."""

    partition: int
    offsets: tuple[int, ...]
    timestamp_types: bytes
    timestamps: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    headers: list[list[tuple[str, bytes | None]]]  # NO_HEADERS for a message without any


def read_records(f: BinaryIO) -> Iterator[Record]:
    """Every message of a kafka-records-v2 stream, in stored order."""
    for b in read_blocks(f):
        p = b.partition
        for o, tt, ts, k, v, h in zip(b.offsets, b.timestamp_types, b.timestamps, b.keys, b.values, b.headers):
            yield Record(p, o, ts, tt, k, v, h)


def read_blocks(f: BinaryIO) -> Iterator[Block]:
    """Every block of a kafka-records-v2 stream, in stored order, decoded into columns.

    Fields are sliced out of a large read buffer with unpack_from (one read() call per field
    made decoding the restore's largest cost), and a block's messages land in plain lists:
    a tuple object per message cost a Kafka restore a tenth of its time (measured, 1 M messages).
    """
    buf, pos = b"", 0
    while True:
        if len(buf) - pos < BLOCK_HEAD.size:
            data = f.read(READ_CHUNK)
            if not data and pos == len(buf):
                return
            buf, pos = _refill(f, buf[pos:] + data, 0, BLOCK_HEAD.size), 0
        magic, partition, n = BLOCK_HEAD.unpack_from(buf, pos)
        pos += BLOCK_HEAD.size
        if magic != BLOCK_MAGIC or not 1 <= n <= BLOCK_RECORDS:
            raise KafkaBackupError(f"not a {FORMAT} block (magic {magic!r}, {n} records)")
        if len(buf) - pos < 9 * n:
            buf, pos = _refill(f, buf, pos, 9 * n), 0
        offsets = struct.unpack_from(f"<{n}q", buf, pos)
        types = buf[pos + 8 * n : pos + 9 * n]
        pos += 9 * n
        block = Block(partition, offsets, types, [], [], [], [])
        buf, pos = _decode_records(f, buf, pos, n, block)
        yield block


def _decode_records(f: BinaryIO, buf: bytes, pos: int, n: int, block: Block) -> tuple[bytes, int]:
    """Append `n` records from buf[pos:] (refilled from `f`) to `block`'s columns; (buf, pos) after them."""
    unpack_record, head = RECORD_HEAD.unpack_from, RECORD_HEAD.size  # locals: the loop runs once per message
    add_ts, add_key, add_value, add_headers = (
        block.timestamps.append,
        block.keys.append,
        block.values.append,
        block.headers.append,
    )
    for _ in range(n):
        if len(buf) - pos < head:
            buf, pos = _refill(f, buf, pos, head), 0
        timestamp, key_len, value_len, header_count = unpack_record(buf, pos)
        pos += head
        if key_len >= 0 and value_len >= 0 and not header_count and pos + key_len + value_len <= len(buf):
            at = pos + key_len  # the usual message: no nulls, no headers, already in the buffer
            pos = at + value_len
            add_ts(timestamp)
            add_key(buf[at - key_len : at])
            add_value(buf[at:pos])
            add_headers(NO_HEADERS)
            continue
        if key_len < NULL or value_len < NULL or header_count < 0:
            raise _damaged()
        kn, vn = (key_len if key_len > 0 else 0), (value_len if value_len > 0 else 0)  # null: no bytes
        if len(buf) - pos < kn + vn:
            buf, pos = _refill(f, buf, pos, kn + vn), 0
        add_ts(timestamp)
        add_key(None if key_len == NULL else buf[pos : pos + kn])
        pos += kn
        add_value(None if value_len == NULL else buf[pos : pos + vn])
        pos += vn
        headers: list[tuple[str, bytes | None]] = []
        for _ in range(header_count):
            if len(buf) - pos < HEADER_HEAD.size:
                buf, pos = _refill(f, buf, pos, HEADER_HEAD.size), 0
            name_len, hv_len = HEADER_HEAD.unpack_from(buf, pos)
            pos += HEADER_HEAD.size
            if name_len < 0 or hv_len < NULL:
                raise _damaged()
            if len(buf) - pos < name_len + max(hv_len, 0):
                buf, pos = _refill(f, buf, pos, name_len + max(hv_len, 0)), 0
            name = buf[pos : pos + name_len].decode("utf-8", "surrogateescape")
            pos += name_len
            hv = None if hv_len == NULL else buf[pos : pos + hv_len]
            pos += max(hv_len, 0)
            headers.append((name, hv))
        add_headers(headers or NO_HEADERS)
    return buf, pos


def _refill(f: BinaryIO, buf: bytes, pos: int, n: int) -> bytes:
    """buf[pos:] followed by enough of `f` to hold at least `n` bytes (the caller's pos becomes 0)."""
    parts, have = [buf[pos:]], len(buf) - pos
    while have < n:
        data = f.read(max(n - have, READ_CHUNK))
        if not data:
            raise _damaged()
        parts.append(data)
        have += len(data)
    return b"".join(parts)


def _damaged() -> KafkaBackupError:
    return KafkaBackupError(f"{FORMAT} stream is damaged or ends in the middle of a block")

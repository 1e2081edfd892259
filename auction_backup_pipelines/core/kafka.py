"""Kafka topic backups: what export and restore share (clients, errors, the record encoding).

A topic's day D is backed up as `kafka/topic_export/<topic>/<D>/…` with two files:

  <topic>.jsonl  every message of the day, one JSON object per line, partition after partition
                 in offset order (see kafka_export.py for which messages belong to a day)
  topic.json     partition count, replication factor, dynamic topic configs and the committed
                 offsets of every consumer group on the topic when the backup ran

A line is `{"p":P,"ts":T,"k":K,"v":V,"h":H,"tt":TT,"o":O}`: key K and value V are base64 or
null (null and empty stay distinct, so tombstones survive), H is the ordered list of
[name, base64-or-null] headers, TT the timestamp type (0 none, 1 CreateTime, 2 LogAppendTime).

Each partition's `sha256` in the manifest is taken over the line *bodies*, the part before
`,"tt"`, each followed by a newline: partition, timestamp, key, value and headers, but not the
offset. A restore writes the same messages at new offsets, so it can recompute exactly this
digest from what it reads back and prove the copy byte for byte.
"""

from __future__ import annotations

import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, KafkaException

try:  # 4-5x faster parsing of the lines a restore replays (measured); same result as json
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - the fallback when orjson is not installed
    _loads = json.loads
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

SYSTEM = "kafka"
ARTIFACT_PREFIX = "topic_export"
TOPIC_FILE = "topic.json"
EXPORT_GROUP = "auction-backup-export"  # never subscribes or commits, so never becomes a real group
DEFAULT_TIMEOUT_S = 10.0

_log = logging.getLogger("auction_backup_pipelines.kafka.client")


class KafkaBackupError(Exception):
    """A Kafka backup or restore cannot proceed; the message names the topic and the cause."""


class KafkaUnavailable(KafkaBackupError):
    """No broker answered at the bootstrap address."""


class TopicNotFound(KafkaBackupError):
    """The topic to back up does not exist."""


class RetentionGap(KafkaBackupError):
    """Kafka already deleted messages that may belong to the requested day."""


class RestoreRefused(KafkaBackupError):
    """A restore would write into a non-empty topic or an in-use group without --force."""


class VerificationError(KafkaBackupError):
    """What a restore reads back differs from what the backup recorded."""


def artifact_name(topic: str) -> str:
    return f"{ARTIFACT_PREFIX}/{topic}"


def export_file(topic: str) -> str:
    return f"{topic}.jsonl"


# -- clients ---------------------------------------------------------------------------------------


def client_config(bootstrap: str, timeout: float) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "client.id": "auction-backup",
        "socket.connection.setup.timeout.ms": int(timeout * 1000),
        # A broker that is down makes librdkafka log every reconnect; route that to logging
        # instead of stderr, the exception we raise says it once and clearly.
        "logger": _log,
    }


def admin_client(bootstrap: str, timeout: float = DEFAULT_TIMEOUT_S) -> AdminClient:
    return AdminClient(client_config(bootstrap, timeout))


def consumer(bootstrap: str, timeout: float = DEFAULT_TIMEOUT_S) -> Consumer:
    """A reader for manual assignment: never commits, sees only committed transactions."""
    return Consumer(
        {
            **client_config(bootstrap, timeout),
            "group.id": EXPORT_GROUP,  # required even with assign(); nothing is ever committed
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # Fail loudly if retention deletes the offset we are reading instead of jumping.
            "auto.offset.reset": "error",
            "enable.partition.eof": True,
            # Large fetches: one partition is read at a time, and with 8 MB per partition the
            # broker round trips made reading 4x slower (measured, 1M x 200 B); the prefetch
            # queue is capped so memory stays flat however large the partition.
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 32 << 20,
            "queued.max.messages.kbytes": 64 << 10,
            "fetch.wait.max.ms": 10,
        }
    )


def error_text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, KafkaError):
        return f"{arg.name()}: {arg.str()}"
    return str(exc) or type(exc).__name__


def require_topic(admin: AdminClient, bootstrap: str, topic: str, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """The topic's metadata; raises KafkaUnavailable or TopicNotFound with what to check."""
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException:
        raise KafkaUnavailable(
            f"no Kafka broker answered at {bootstrap} within {timeout:g} s "
            "(is Kafka down, or KAFKA_BOOTSTRAP_SERVERS wrong?); nothing was written"
        ) from None
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
            "consumer_groups": {g: {str(p): o for p, o in sorted(offs.items())} for g, offs in sorted(self.consumer_groups.items())},
            "unreadable_groups": self.unreadable_groups,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "TopicInfo":
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
        name: e.value for name, e in entries.items() if e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value and e.value is not None
    }
    effective = {name: e.value for name, e in entries.items() if e.value is not None}
    return dynamic, effective


def group_offsets(admin: AdminClient, topic: str, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[dict[str, dict[int, int]], dict[str, str]]:
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


# -- record encoding -------------------------------------------------------------------------------

b64 = binascii.b2a_base64
# One template per (key is null, value is null): a single %-format builds the whole body, and
# a null field gets an empty %s so every template takes the same five arguments.
BODY = {
    (False, False): b'{"p":%d,"ts":%d,"k":"%s","v":"%s","h":%s',
    (True, False): b'{"p":%d,"ts":%d,"k":null%s,"v":"%s","h":%s',
    (False, True): b'{"p":%d,"ts":%d,"k":"%s","v":null%s,"h":%s',
    (True, True): b'{"p":%d,"ts":%d,"k":null%s,"v":null%s,"h":%s',
}
TAIL = b',"tt":%d,"o":%d}\n'
NO_HEADERS = b"[]"


def encode_headers(headers: Iterable[tuple[str | bytes, bytes | None]] | None) -> bytes:
    if not headers:
        return NO_HEADERS
    items = []
    for name, value in headers:
        if isinstance(name, bytes):
            name = name.decode("utf-8", "surrogateescape")
        val = b"null" if value is None else b'"%s"' % b64(value, newline=False)
        items.append(b"[%s,%s]" % (json.dumps(name).encode(), val))
    return b"[" + b",".join(items) + b"]"


def encode_body(partition: int, timestamp: int, key: bytes | None, value: bytes | None, headers: Any) -> bytes:
    """The canonical encoding of one message (everything but offset and timestamp type)."""
    return BODY[key is None, value is None] % (
        partition,
        timestamp,
        b"" if key is None else b64(key, newline=False),
        b"" if value is None else b64(value, newline=False),
        encode_headers(headers),
    )


class Record(NamedTuple):
    partition: int
    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def _unb64(s: str | None) -> bytes | None:
    return None if s is None else binascii.a2b_base64(s)


def decode_line(line: bytes | str) -> Record:
    d = _loads(line)
    return Record(
        partition=d["p"],
        offset=d["o"],
        timestamp=d["ts"],
        timestamp_type=d["tt"],
        key=_unb64(d["k"]),
        value=_unb64(d["v"]),
        headers=[(name, _unb64(v)) for name, v in d["h"]],
    )

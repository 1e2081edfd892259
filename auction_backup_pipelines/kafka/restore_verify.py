"""A Kafka restore's read-back: each restored partition is read from the target and compared,
day by day, with the counts and sha256 the manifests recorded (timestamps, keys, values and
headers byte for byte).

It runs in a thread beside the replay: a backup file holds its partitions one after another,
so a partition is read back while the next ones are still being produced, and the consumer's
fetching overlaps the producer's work instead of following it (the read-back alone took a
quarter of a restore's time when it ran afterwards).
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Any

from confluent_kafka import TopicPartition

from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import RECORD_HEAD, VerificationError, consumer, encode_record
from auction_backup_pipelines.kafka.restore_offsets import TopicJob


def segments_of(job: TopicJob, p: int) -> list[tuple[str, int, str | None]]:
    """(day, messages, sha256) of partition `p` in each backup of the job that holds some."""
    per_day = [(b.partition, b.metadata["partitions"].get(str(p), {"messages": 0})) for b in job.backups]
    return [(day, e["messages"], e.get("sha256")) for day, e in per_day if e["messages"]]


def mismatch(target: str, problems: list[str]) -> VerificationError:
    """The error of a read-back that found `problems` (the first ten are named)."""
    return VerificationError(
        f"restored {target!r} does not match the backups: "
        + "; ".join(problems[:10])
        + ". The topic is left as written, for inspection"
    )


class ReadBack:
    """Compares partitions in a thread of its own as `submit` hands them over, in any order."""

    def __init__(self, job: TopicJob, target: Cluster, timeout: float):
        self._job, self._target, self._timeout = job, target, timeout
        self._queue: queue.Queue[tuple[int, int] | None] = queue.Queue()
        self.problems: list[str] = []
        self.compared = 0
        self._error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="kafka-restore-read-back", daemon=True)
        self._thread.start()

    def submit(self, partition: int, first_restored: int) -> None:
        """Partition `partition` is completely written, from `first_restored` on: compare it."""
        self._queue.put((partition, first_restored))

    def finish(self) -> int:
        """Wait for every submitted partition; return the messages compared (raises on a mismatch)."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        if self.problems:
            raise mismatch(self._job.target, self.problems)
        return self.compared

    def abandon(self) -> None:
        """Stop after the partition being compared (the replay failed)."""
        self._stop = True
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            c = consumer(self._target, self._timeout)
            # A consumer assigned a topic it has no metadata for (one the restore just created)
            # waits for its periodic refresh, a second, before its first fetch: ask for it now.
            c.list_topics(self._job.target, timeout=self._timeout)
        except BaseException as exc:  # re-raised by finish()
            self._error = exc
            return
        try:
            while (item := self._queue.get()) is not None:
                if self._stop or self._error is not None:
                    continue
                p, first = item
                segments = segments_of(self._job, p)
                try:
                    self.problems += compare_range(c, self._job.target, p, first, segments, self._timeout)
                except BaseException as exc:  # re-raised by finish() in the caller's thread
                    self._error = exc
                    continue
                self.compared += sum(n for _, n, _ in segments)
        finally:
            c.close()


def compare_range(
    c: Any, topic: str, p: int, first: int, segments: list[tuple[str, int, str | None]], timeout: float
) -> list[str]:
    """Stream partition `p` from `first`, hashing one day's slice after another (memory flat)."""
    problems: list[str] = []
    seg, in_seg, sha = 0, 0, hashlib.sha256()
    day, n, expected = segments[0]
    left = sum(n for _, n, _ in segments)
    pieces: list[bytes] = []  # encoded records not yet hashed: one sha256 update per batch
    c.assign([TopicPartition(topic, p, first)])
    try:
        stall = max(timeout, 60.0)
        deadline = time.monotonic() + stall
        while left:
            msgs = c.consume(min(10_000, left), 0.2)
            if msgs:
                deadline = time.monotonic() + stall
            at = 0
            while at < len(msgs) and left:
                chunk = msgs[at : at + n - in_seg]  # never past the end of the day being hashed
                at += len(chunk)
                got = encode_into(pieces, chunk, p)
                in_seg += got
                left -= got
                if in_seg == n:
                    sha.update(b"".join(pieces))
                    pieces.clear()
                    if sha.hexdigest() != expected:
                        problems.append(f"partition {p} day {day}: content differs from the manifest's checksum")
                    seg, in_seg, sha = seg + 1, 0, hashlib.sha256()
                    if left:
                        day, n, expected = segments[seg]
            if pieces:
                sha.update(b"".join(pieces))
                pieces.clear()
            if left and time.monotonic() > deadline:
                raise VerificationError(f"reading back {topic!r} partition {p} stalled with {left} messages still to read")
    finally:
        c.unassign()
    return problems


def encode_into(pieces: list[bytes], msgs: list[Any], p: int) -> int:
    """Append the `record` of each of `msgs` that is a message of partition `p`; return how many.

    The loop runs once per message read back, so it keeps to locals and one list call a message.
    """
    add, pack, got = pieces.extend, RECORD_HEAD.pack, 0
    for m in msgs:
        if m.error() is not None or m.partition() != p:
            continue
        k, v, h = m.key(), m.value(), m.headers()
        if k is None or v is None or h:
            add((encode_record(m.timestamp()[1], k, v, h),))
        else:  # encode_record inlined for the usual message: no nulls, no headers
            add((pack(m.timestamp()[1], len(k), len(v), 0), k, v))
        got += 1
    return got

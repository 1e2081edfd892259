"""Kafka day export against a plain consumer loop, on the same messages.

    python -m bench.bench_kafka [--messages 1000000] [--value-bytes 190] [--rounds 2] [--profile]

Creates its own topic (deleted at the end), produces --messages messages stamped across one
past UTC day, then times, alternating for --rounds rounds:
  plain  a confluent-kafka consumer that reads every message of the topic and touches its value
  ours   kafka_export.backup_topic_day of that day into a temporary repository (encode, hash,
         compress, fsync, manifest)
Each measurement runs in a fresh process, so its peak RSS is its own. The best round of each
is reported, with ours/plain (the target is >= 0.8). --profile prints where ours spends time.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import multiprocessing
import os
import pstats
import resource
import sys
import tempfile
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 6


def produce(bootstrap: str, topic: str, n: int, value_bytes: int, day: dt.date) -> int:
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    start = int(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp() * 1000)
    step = max(86_400_000 // max(n, 1), 1)
    # Auction-event-like JSON values: a varying part and a random slice, so zstd sees data about
    # as compressible as the real topics' rather than one repeated value.
    noise = os.urandom(1 << 20).hex().encode()
    payload = 0
    for i in range(n):
        key = b"auction-%07d" % (i % 50_000)
        head = b'{"type":"bid_placed","auction_id":%d,"bidder_id":%d,"amount_cents":%d,"currency":"EUR","ref":"' % (
            i % 50_000,
            (i * 7919) % 200_000,
            1000 + (i * 31) % 500_000,
        )
        cut = (i * 9973) % (len(noise) - value_bytes)
        value = head + noise[cut : cut + max(value_bytes - len(head) - 2, 0)] + b'"}'
        payload += len(key) + len(value)
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=i % PARTITIONS, timestamp=start + i * step)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise SystemExit("bench: producing did not finish within 120 s")
    return payload


def plain_read(bootstrap: str, topic: str) -> dict:
    # The same fetch sizes as our export's consumer: the baseline is not handicapped.
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-plain",
            "enable.auto.commit": False,
            "fetch.max.bytes": 64 << 20,
            "max.partition.fetch.bytes": 32 << 20,
            "fetch.wait.max.ms": 10,
        }
    )
    ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(PARTITIONS)]
    total, n, size = sum(ends), 0, 0
    cpu0, t0 = _cpu(), time.perf_counter()
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    while n < total:
        for m in c.consume(10_000, 0.1):
            if m.error() is None:
                n += 1
                size += len(m.value()) + len(m.key() or b"")
    seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
    c.close()
    return {"seconds": seconds, "cpu": cpu, "messages": n, "bytes": size}


def ours(bootstrap: str, topic: str, day: str, profile: bool) -> dict:
    from auction_backup_pipelines.kafka.export import backup_topic_day
    from auction_backup_pipelines.repository.repository import Repository

    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as root:
        repo = Repository.local(root)
        prof = cProfile.Profile() if profile else None
        cpu0, t0 = _cpu(), time.perf_counter()
        if prof:
            prof.enable()
        backup = backup_topic_day(bootstrap, repo, topic, day)
        if prof:
            prof.disable()
        seconds, cpu = time.perf_counter() - t0, _cpu() - cpu0
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "messages": backup.metadata["messages_total"],
        "stored": backup.stored_size,
        "raw": backup.size,
    }


def _cpu() -> float:
    """CPU seconds of this process, all threads (librdkafka's included): unlike wall time, not
    inflated by other work on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(fn, args, queue) -> None:
    result = fn(*args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def isolated(fn, *args) -> dict:
    """Run one measurement in a fresh process (its own memory peak, no warm state of ours)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=190, help="value size; keys add ~14 bytes")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--profile", action="store_true", help="print the top functions of our export (slows it)")
    args = ap.parse_args(argv)

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "-1"})])[topic].result()
    try:
        t0 = time.perf_counter()
        payload = produce(args.bootstrap, topic, args.messages, args.value_bytes, day)
        print(
            f"produced {args.messages:,} messages ({payload / args.messages:.0f} B each, {payload / 1e6:.0f} MB) "
            f"into {topic} in {time.perf_counter() - t0:.1f} s"
        )
        isolated(plain_read, args.bootstrap, topic)  # warm-up: the broker's page cache, not timed
        plain, mine = [], []
        for _ in range(args.rounds):
            plain.append(isolated(plain_read, args.bootstrap, topic))
            mine.append(isolated(ours, args.bootstrap, topic, day.isoformat(), False))
        if args.profile:
            isolated(ours, args.bootstrap, topic, day.isoformat(), True)
        p = min(plain, key=lambda r: r["seconds"])
        o = min(mine, key=lambda r: r["seconds"])
        assert p["messages"] == o["messages"] == args.messages, (p, o)
        for name, r in (("plain consumer", p), ("our export", o)):
            print(
                f"{name:>15}: {r['seconds']:6.2f} s  {payload / r['seconds'] / 1e6:7.1f} MB/s  "
                f"{r['messages'] / r['seconds']:>10,.0f} msgs/s  CPU {r['cpu']:5.2f} s  peak RSS {r['peak_rss_mb']:.0f} MB"
            )
        print(f"  all rounds (s): plain {[round(r['seconds'], 2) for r in plain]}, ours {[round(r['seconds'], 2) for r in mine]}")
        print(f"  stored {o['stored'] / 1e6:.1f} MB (records {o['raw'] / 1e6:.1f} MB, zstd x{o['raw'] / o['stored']:.1f})")
        ratio = p["seconds"] / o["seconds"]
        print(
            f"  ours/plain throughput: {ratio:.2f}x (target >= 0.8x){'' if ratio >= 0.8 else '  BELOW TARGET'}; "
            f"CPU per message ours/plain: {o['cpu'] / p['cpu']:.1f}x"
        )
    finally:
        admin.delete_topics([topic], operation_timeout=30)[topic].result()
    return 0


if __name__ == "__main__":
    sys.exit(main())

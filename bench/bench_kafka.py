"""Kafka day export and restore against plain confluent-kafka clients, on the same messages.

    python -m bench.bench_kafka [--messages 1000000] [--value-bytes 190] [--rounds 3] [--profile]
                              [--only export|restore|parallel]

Creates its own topic (deleted at the end), produces --messages messages stamped across one
past UTC day, then times, alternating for --rounds rounds, each measurement in a fresh process
(so its peak RSS is its own), reporting medians with CPU seconds (all threads) beside wall time:

export, once on an otherwise idle machine and once with a CPU-burning second process started
(and killed) by the benchmark, so that a ratio cannot lean on an idle second core:
  plain  a confluent-kafka consumer that reads every message of the topic and touches its value
  ours   backup_topic_day of that day into a temporary repository (encode, hash, compress,
         fsync, manifest; the reading, encoding, hashing and compression in the native
         kafka-export helper when installed, its CPU counted); targets: throughput >= 0.9x
         plain, CPU per message <= 1.3x plain
restore, of that day's backup (exported once, untimed), idle and again with the second core loaded:
  plain  an idempotent producer (acks=all, linger, lz4) writing the same messages, decoded into
         memory beforehand, into a new topic it creates
  ours   restore_topics into a new topic: read and decode the backup, replay, read everything
         back and compare with the manifest's checksums (in the native kafka-replay helper when
         installed; its CPU is counted); target: throughput >= 0.8x plain
parallel topics: 4 topics of --messages/4 messages each, exported with export_topics one at a
  time, then 2 at a time in threads (what `backup kafka` does, KAFKA_EXPORT_PARALLEL_TOPICS=2),
  then 2 at a time in child processes, for comparison; reports the speed-up over one at a time.
--profile prints where our export and restore spend time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import multiprocessing
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.kafka.records import FETCH_MAX_BYTES, QUEUED_MAX_KBYTES

from .common import own_peak_rss_mib

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
    # The same fetch settings as our export's consumer: the baseline is not handicapped (with
    # librdkafka's default fetch.queue.backoff.ms, 1 s, a full prefetch queue stalled its fetches).
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench-plain",
            "enable.auto.commit": False,
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "max.partition.fetch.bytes": FETCH_MAX_BYTES,
            "queued.max.messages.kbytes": QUEUED_MAX_KBYTES,
            "fetch.wait.max.ms": 10,
            "fetch.queue.backoff.ms": 5,
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
        cpu0, t0 = _cpu(children=True), time.perf_counter()
        if prof:
            prof.enable()
        backup = backup_topic_day(bootstrap, repo, topic, day)
        if prof:
            prof.disable()
        seconds, cpu = time.perf_counter() - t0, _cpu(children=True) - cpu0  # the kafka-export helper's included
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return {
        "seconds": seconds,
        "cpu": cpu,
        "messages": backup.metadata["messages_total"],
        "stored": backup.stored_size,
        "raw": backup.size,
        "helper_peak_rss_mb": _helper_peak_rss_mb(),
    }


def _helper_peak_rss_mb() -> float:
    """An upper bound of a native helper's peak RSS (Linux carries the forking interpreter's
    high-water mark into the child it execs)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _cpu(children: bool = False) -> float:
    """CPU seconds of this process, all threads (librdkafka's included): unlike wall time, not
    inflated by other work on a shared machine. With `children`, also its finished children's."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN) if children else None
    return r.ru_utime + r.ru_stime + (c.ru_utime + c.ru_stime if c else 0.0)


def _child(fn, args, queue) -> None:
    result = fn(*args)
    result["peak_rss_mb"] = own_peak_rss_mib()  # its own, not the spawning parent's (see common.py)
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


def _burn() -> None:
    while True:
        pass


@contextlib.contextmanager
def cpu_burner(on: bool) -> Iterator[None]:
    """A second process spinning on one core for the duration (none when `on` is False)."""
    if not on:
        yield
        return
    proc = multiprocessing.get_context("spawn").Process(target=_burn, daemon=True)
    proc.start()
    try:
        yield
    finally:
        proc.kill()
        proc.join()


def plain_restore(bootstrap: str, root: str, topic: str, day: str, new_topic: str) -> dict:
    """An idempotent producer writing the backup's messages (decoded beforehand) into a new topic."""
    from auction_backup_pipelines.kafka.records import artifact_name, export_file, read_records
    from auction_backup_pipelines.repository.repository import Repository

    repo = Repository.local(root)
    with repo.open(repo.get("kafka", artifact_name(topic), day), export_file(topic)) as f:
        records = [(r.partition, r.timestamp, r.key, r.value, r.headers or None) for r in read_records(f)]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    cpu0, t0 = _cpu(), time.perf_counter()
    admin.create_topics([NewTopic(new_topic, PARTITIONS, 1)])[new_topic].result()
    while any(p.leader < 0 for p in admin.list_topics(new_topic, timeout=10).topics[new_topic].partitions.values()):
        time.sleep(0.05)  # polling the leaders with no other signal
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
        }
    )
    for part, ts, key, value, headers in records:
        while True:
            try:
                p.produce(new_topic, value=value, key=key, partition=part, timestamp=max(ts, 0), headers=headers)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120) != 0:
        raise SystemExit("bench: the plain producer did not finish within 120 s")
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - cpu0, "messages": len(records)}


def ours_restore(bootstrap: str, root: str, topic: str, day: str, prefix: str, profile: bool) -> dict:
    from auction_backup_pipelines.kafka.restore import restore_topics
    from auction_backup_pipelines.repository.repository import Repository

    prof = cProfile.Profile() if profile else None
    cpu0, t0 = _cpu(children=True), time.perf_counter()
    if prof:
        prof.enable()
    report = restore_topics(Repository.local(root), (day, day), [topic], bootstrap, topic_prefix=prefix)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return {
        "seconds": time.perf_counter() - t0,
        "cpu": _cpu(children=True) - cpu0,  # the native kafka-replay helper's included
        "messages": report.messages,
        "helper_peak_rss_mb": _helper_peak_rss_mb(),
    }


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _print_pair(names: tuple[str, str], runs: tuple[list[dict], list[dict]], payload: int) -> tuple[float, float]:
    """Medians of both sides; returns (throughput ratio ours/plain, CPU per message ours/plain)."""
    for name, rs in zip(names, runs):
        secs, cpu, msgs = _median(rs, "seconds"), _median(rs, "cpu"), rs[0]["messages"]
        print(
            f"{name:>17}: {secs:6.2f} s  {payload / secs / 1e6:7.1f} MB/s  {msgs / secs:>10,.0f} msgs/s  "
            f"CPU {cpu:5.2f} s  peak RSS {max(r['peak_rss_mb'] for r in rs):.0f} MB"
        )
    print(f"  all rounds (s): {[round(r['seconds'], 2) for r in runs[0]]} / {[round(r['seconds'], 2) for r in runs[1]]}")
    plain, ours = runs
    ratio = _median(plain, "seconds") / _median(ours, "seconds")
    cpu = (_median(ours, "cpu") / ours[0]["messages"]) / (_median(plain, "cpu") / plain[0]["messages"])
    return ratio, cpu


def export_bench(args: argparse.Namespace, topic: str, day: str, payload: int, loaded: bool) -> None:
    plain: list[dict] = []
    mine: list[dict] = []
    with cpu_burner(loaded):
        for _ in range(args.rounds):
            plain.append(isolated(plain_read, args.bootstrap, topic))
            mine.append(isolated(ours, args.bootstrap, topic, day, False))
    assert {r["messages"] for r in plain + mine} == {args.messages}, (plain, mine)
    load = "a CPU-burning second process" if loaded else "no load of ours"
    print(f"\n== export, medians of {args.rounds} alternating rounds, {os.cpu_count()} cores, {load}")
    ratio, cpu = _print_pair(("plain consumer", "our export"), (plain, mine), payload)
    o = mine[0]
    print(f"  stored {o['stored'] / 1e6:.1f} MB (records {o['raw'] / 1e6:.1f} MB, zstd x{o['raw'] / o['stored']:.1f})")
    helper = max(r["helper_peak_rss_mb"] for r in mine)
    print(f"  our export's native helper (kafka-export): peak RSS at most {helper:.0f} MB, its CPU counted above")
    when = "loaded" if loaded else "idle"
    print(f"  verdict ({when}): throughput ours/plain {ratio:.2f}x (target >= 0.9x): {'MET' if ratio >= 0.9 else 'NOT MET'}")
    print(f"  verdict ({when}): CPU per message ours/plain {cpu:.2f}x (target <= 1.3x): {'MET' if cpu <= 1.3 else 'NOT MET'}")


def ours_topics(bootstrap: str, topics: list[str], day: str, parallel: int, processes: bool) -> dict:
    """export_topics of every topic, `parallel` at once (threads), or a pool of child processes."""
    from auction_backup_pipelines.kafka.export import backup_topic_day
    from auction_backup_pipelines.kafka.export_topics import export_topics
    from auction_backup_pipelines.repository.repository import Repository

    with tempfile.TemporaryDirectory(prefix="bench-kafka-topics-") as root:
        cpu0, t0 = _cpu(children=True), time.perf_counter()
        if processes:
            with multiprocessing.get_context("spawn").Pool(parallel) as pool:
                args = [(bootstrap, Repository.local(root), t, day) for t in topics]
                backups = pool.starmap(backup_topic_day, args)
        else:
            outcomes = export_topics(bootstrap, Repository.local(root), topics, day, parallel=parallel)
            assert all(o.backup is not None for o in outcomes), [o.error for o in outcomes]
            backups = [o.backup for o in outcomes if o.backup is not None]
        seconds, cpu = time.perf_counter() - t0, _cpu(children=True) - cpu0
    return {"seconds": seconds, "cpu": cpu, "messages": sum(b.metadata["messages_total"] for b in backups)}


def parallel_bench(args: argparse.Namespace, topics: list[str], day: str) -> None:
    variants = {"one at a time": (1, False), "2 threads": (2, False), "2 processes": (2, True)}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (parallel, processes) in variants.items():
            runs[name].append(isolated(ours_topics, args.bootstrap, topics, day, parallel, processes))
    assert {r["messages"] for rs in runs.values() for r in rs} == {args.messages // 4 * 4}, runs
    print(
        f"\n== {len(topics)} topics of {args.messages // 4:,} messages, medians of {args.rounds} rounds, {os.cpu_count()} cores"
    )
    serial = _median(runs["one at a time"], "seconds")
    for name, rs in runs.items():
        secs, cpu = _median(rs, "seconds"), _median(rs, "cpu")
        print(
            f"{name:>17}: {secs:6.2f} s  {rs[0]['messages'] / secs:>10,.0f} msgs/s  CPU {cpu:5.2f} s  "
            f"speed-up x{serial / secs:.2f}  all rounds (s): {[round(r['seconds'], 2) for r in rs]}"
        )
    threads = serial / _median(runs["2 threads"], "seconds")
    print(
        f"  verdict: 4 topics, 2 threads over one at a time x{threads:.2f} (target > 1.0x): {'MET' if threads > 1 else 'NOT MET'}"
    )


def restore_bench(args: argparse.Namespace, topic: str, day: str, payload: int, loaded: bool) -> None:
    from auction_backup_pipelines.kafka.export import backup_topic_day
    from auction_backup_pipelines.repository.repository import Repository

    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    with tempfile.TemporaryDirectory(prefix="bench-kafka-restore-") as root:
        backup_topic_day(args.bootstrap, Repository.local(root), topic, day)
        plain: list[dict] = []
        mine: list[dict] = []
        with cpu_burner(loaded):
            for i in range(args.rounds):
                stem = f"bench-r{i}-{uuid.uuid4().hex[:6]}-"
                try:
                    plain.append(isolated(plain_restore, args.bootstrap, root, topic, day, f"{stem}plain"))
                    mine.append(isolated(ours_restore, args.bootstrap, root, topic, day, stem, False))
                finally:
                    for f in admin.delete_topics([f"{stem}plain", stem + topic], operation_timeout=30).values():
                        with contextlib.suppress(Exception):
                            f.result()
        if args.profile and not loaded:
            stem = f"bench-rp-{uuid.uuid4().hex[:6]}-"
            try:
                isolated(ours_restore, args.bootstrap, root, topic, day, stem, True)
            finally:
                admin.delete_topics([stem + topic], operation_timeout=30)
    assert {r["messages"] for r in plain + mine} == {args.messages}, (plain, mine)
    load = "a CPU-burning second process" if loaded else "no load of ours"
    print(f"\n== restore into a new topic, medians of {args.rounds} alternating rounds, {os.cpu_count()} cores, {load}")
    ratio, cpu = _print_pair(("plain producer", "our restore"), (plain, mine), payload)
    helper = max(r["helper_peak_rss_mb"] for r in mine)
    print(f"  our restore's native helper (kafka-replay): peak RSS at most {helper:.0f} MB, its CPU counted above")
    print(
        f"  verdict ({'loaded' if loaded else 'idle'}): throughput ours (verification included)/plain {ratio:.2f}x "
        f"(target >= 0.8x), CPU per message {cpu:.2f}x: {'MET' if ratio >= 0.8 else 'NOT MET'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--value-bytes", type=int, default=190, help="value size; keys add ~14 bytes")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    ap.add_argument("--profile", action="store_true", help="print the top functions of our export and restore")
    ap.add_argument("--only", choices=["export", "restore", "parallel"], help="run one of the benchmarks (default: all)")
    args = ap.parse_args(argv)

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    topic = f"bench-kafka-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "-1"})])[topic].result()
    extra: list[str] = []
    try:
        t0 = time.perf_counter()
        payload = produce(args.bootstrap, topic, args.messages, args.value_bytes, day)
        print(
            f"produced {args.messages:,} messages ({payload / args.messages:.0f} B each, {payload / 1e6:.0f} MB) "
            f"into {topic} in {time.perf_counter() - t0:.1f} s; load average before: {os.getloadavg()[0]:.2f}"
        )
        isolated(plain_read, args.bootstrap, topic)  # warm-up: the broker's page cache, not timed
        if args.only in (None, "export"):
            export_bench(args, topic, day.isoformat(), payload, loaded=False)
            export_bench(args, topic, day.isoformat(), payload, loaded=True)
            if args.profile:
                isolated(ours, args.bootstrap, topic, day.isoformat(), True)
        if args.only in (None, "restore"):
            restore_bench(args, topic, day.isoformat(), payload, loaded=False)
            restore_bench(args, topic, day.isoformat(), payload, loaded=True)
        if args.only in (None, "parallel"):
            many = [f"{topic}-{i}" for i in range(4)]
            extra.extend(many)
            for name in many:
                admin.create_topics([NewTopic(name, PARTITIONS, 1, config={"retention.ms": "-1"})])[name].result()
                produce(args.bootstrap, name, args.messages // 4, args.value_bytes, day)
            parallel_bench(args, many, day.isoformat())
    finally:
        for f in admin.delete_topics([topic, *extra], operation_timeout=30).values():
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())

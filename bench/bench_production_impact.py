"""What a backup costs the platform while it runs: bid latency and throughput, with and without.

    python -m bench.bench_production_impact [--rate 50] [--window 5] [--rounds 4] [--limits]

A child process places bids like the platform (stack/workload.py: a PostgreSQL row and price
update, the Redis hash, leaderboard and stream, a Kafka bid event) at --rate bids per second,
and records each bid's wall time (place_bid: PostgreSQL and Redis round trips, the Kafka
produce call) and each bid event's delivery time (produce -> broker acknowledgement). Meanwhile,
in alternating rounds, the benchmark runs nothing (baseline) or one backup of the stack's own
systems, repeated back to back for --window seconds so that every bid of the window overlaps
it; a backup still running at the window's end is given one more window to finish (the window
grows to when it ended) and stopped then, so a window is exactly the time a backup ran. Backups go to a temporary repository (the offsite copy to
a prefix of the stack's bucket of its own), each in a child process leading its own process group.

Per case: p50 and p99 bid latency over every round's bids, the delivery p99, throughput, the
p99 ratio to the baseline's (pooled, and paired: each round against that round's baseline,
median over the rounds, which the verdict uses: short alternating windows keep the load of
other work on the machine on both sides of a ratio), and a verdict against the target (p99
at most 1.5x the baseline's during any backup, at default settings). --limits adds the rate-limited variants (BASE_BACKUP_MAX_RATE,
KAFKA_EXPORT_MAX_BYTES_PER_S, OFFSITE_S3_MAX_BYTES_PER_S); a limited backup that would outlast
the window is stopped at its end (its process group killed): the window then measures the
limited backup's steady state. Other work may share this machine: the load average is printed
at the start and for each window.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import multiprocessing
import os
import resource
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

TARGET = 1.5
CASES = ["baseline", "logical_dump", "base_backup", "redis_snapshot", "kafka_export", "offsite_copy"]
LIMITED = {  # case -> (variable, value) for --limits
    "base_backup": ("BASE_BACKUP_MAX_RATE", "32M"),
    "kafka_export": ("KAFKA_EXPORT_MAX_BYTES_PER_S", "4M"),
    "offsite_copy": ("OFFSITE_S3_MAX_BYTES_PER_S", "16M"),
}


# -- the workload -------------------------------------------------------------------------------------


def workload(rate: float, ready: Any, stop: Any, out: Any) -> None:
    """Place bids at `rate` per second until `stop`; put [(started, latency_s, ack_s | None)] on `out`."""
    from confluent_kafka import Producer

    from auction_backup_pipelines.kafka.connection import security_config
    from auction_backup_pipelines.ops.drill import platform_writes
    from stack.workload import BURST_TITLE_PREFIX, Workload, pg_connect, redis_client

    wl = Workload(seed=11)
    conn, r = pg_connect(wl.pg), redis_client(wl.redis)
    producer = Producer({**security_config(wl.kafka), "bootstrap.servers": wl.kafka.bootstrap_servers, "linger.ms": 5})
    auctions = [
        a
        for (a,) in conn.execute(
            "SELECT id FROM auctions WHERE status = 'open' AND title NOT LIKE %s", (BURST_TITLE_PREFIX + "%",)
        )
    ]
    users, topics = wl.bidders(conn), wl.topic_names()
    rows: list[list[Any]] = []

    def acked(row: list[Any]) -> Callable[[Any, Any], None]:
        def cb(err: Any, _msg: Any) -> None:
            row[2] = None if err else time.monotonic() - row[0]

        return cb

    ready.set()
    next_at = time.monotonic()
    while not stop.is_set():
        row: list[Any] = [time.monotonic(), 0.0, None]
        amount = Decimal(f"{wl.rng.uniform(1, 1000):.2f}")
        platform_writes.place_bid(conn, r, producer, wl.rng.choice(auctions), wl.rng.choice(users), amount, topics, acked(row))
        row[1] = time.monotonic() - row[0]
        rows.append(row)
        # A fixed schedule: a slow bid is not followed by a burst that would hide it in the throughput.
        next_at = max(next_at + 1.0 / rate, time.monotonic())
        stop.wait(max(0.0, next_at - time.monotonic()))
    producer.flush(30)
    conn.close()
    out.put([tuple(row) for row in rows])


# -- the backups ----------------------------------------------------------------------------------------


def backup_once(case: str, root: str, offsite_prefix: str) -> int:
    """One backup of `case` into the repository at `root`; returns the bytes it stored (or copied)."""
    from auction_backup_pipelines.kafka.export import backup_topic_day
    from auction_backup_pipelines.ops import offsite
    from auction_backup_pipelines.policy import capture_window as capture
    from auction_backup_pipelines.postgres.base_backup import take_base_backup
    from auction_backup_pipelines.postgres.logical_dump import backup_logical
    from auction_backup_pipelines.redis.backup import backup_snapshot
    from auction_backup_pipelines.repository.repository import Repository
    from auction_backup_pipelines.settings import load_settings

    s, repo, day = load_settings(), Repository.local(root), capture.default_partition()
    if case == "logical_dump":
        return backup_logical(s.postgres, repo, day).stored_size
    if case == "base_backup":
        return take_base_backup(s.postgres, repo, day).stored_size
    if case == "redis_snapshot":
        return backup_snapshot(s.redis, repo, day, allow_late_capture=True).stored_size
    if case == "kafka_export":
        return sum(backup_topic_day(s.kafka, repo, topic, day).stored_size for topic in s.kafka.topics)
    if case == "offsite_copy":  # the prepared backup, to a fresh prefix each time (a copy present is skipped)
        assert PREPARED, "prepare_offsite_source did not run"
        source = PREPARED[0]
        settings = dataclasses.replace(s.offsite, prefix=f"{offsite_prefix}{uuid.uuid4().hex[:8]}/")
        return offsite.copy_backup(repo, offsite.repository_from_settings(settings), source, reverify=False).bytes
    raise ValueError(case)


OFFSITE_SOURCE = ("base_backup", 64 << 20)
"""What the offsite case copies: a stored backup of this many bytes (incompressible, so the bytes
sent are the bytes stored), prepared once before the rounds and inherited by the forked children."""
PREPARED: list[Any] = []


def prepare_offsite_source(root: str) -> None:
    from auction_backup_pipelines.policy import capture_window as capture
    from auction_backup_pipelines.repository.repository import Repository

    artifact, size = OFFSITE_SOURCE
    with Repository.local(root).begin("postgres", artifact, capture.default_partition() - dt.timedelta(days=1)) as w:
        with w.open_file("base.tar.zst", compression="none") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))
    PREPARED.append(w.committed)


def backup_loop(case: str, root: str, offsite_prefix: str, seconds: float, env: dict[str, str], out: Any) -> None:
    """Backups of `case` back to back until `seconds` have passed; puts (count, bytes, durations)."""
    os.setsid()  # its own process group: the parent can stop it with every program it started
    os.environ.update(env)
    count, stored, durations = 0, 0, []
    deadline = time.monotonic() + seconds
    while case != "baseline" and time.monotonic() < deadline:
        t0 = time.monotonic()
        stored += backup_once(case, root, offsite_prefix)
        durations.append(time.monotonic() - t0)
        count += 1
    if case == "baseline":
        time.sleep(seconds)
    out.put((count, stored, durations))


@dataclasses.dataclass
class Window:
    case: str
    start: float
    end: float
    backups: int
    stored: int
    durations: list[float]
    cpu_s: float | None  # the backup's CPU seconds, its programs included (None when it was stopped)
    load: float
    stopped: bool


def run_window(case: str, env: dict[str, str], root: str, offsite_prefix: str, seconds: float, limited: bool) -> Window:
    ctx = multiprocessing.get_context("fork")  # forked after the imports below: no interpreter start in the window
    out = ctx.Queue()
    cpu0 = _children_cpu()
    proc = ctx.Process(target=backup_loop, args=(case, root, offsite_prefix, seconds, env, out))
    start = time.monotonic()
    proc.start()
    # An unlimited backup may run one more window to finish; a longer one (a base backup of a large
    # cluster on a busy machine) is stopped there, like a limited one at once: the default run stays short.
    proc.join(seconds + (1.0 if limited else seconds))
    stopped = proc.is_alive()
    if stopped:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.join()
    end = time.monotonic()
    if not stopped and proc.exitcode != 0:
        raise RuntimeError(f"the {case} backup failed (exit {proc.exitcode}); see its error above")
    count, stored, durations = (0, 0, []) if stopped else out.get(timeout=10)
    cpu = None if stopped else _children_cpu() - cpu0
    return Window(case, start, end, count, stored, durations, cpu, os.getloadavg()[0], stopped)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- the report -----------------------------------------------------------------------------------------


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


def summarize(name: str, windows: list[Window], bids: list[tuple[float, float, float | None]], limited: bool) -> dict[str, Any]:
    inside = [b for b in bids if any(w.start <= b[0] and b[0] + b[1] <= w.end for w in windows)]
    lat = [b[1] * 1000 for b in inside]
    acks = [b[2] * 1000 for b in inside if b[2] is not None]
    seconds = sum(w.end - w.start for w in windows)
    per_round = [pct([b[1] * 1000 for b in inside if w.start <= b[0] < w.end], 99) for w in windows]
    return {
        "name": name,
        "limited": limited,
        "bids": len(lat),
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
        "ack_p99": pct(acks, 99),
        "throughput": len(lat) / seconds if seconds else 0.0,
        "seconds": seconds,
        "per_round_p99": per_round,
        "backups": sum(w.backups for w in windows),
        "stored": sum(w.stored for w in windows),
        "duration": statistics.median(d for w in windows for d in w.durations) if any(w.durations for w in windows) else None,
        "cpu": sum(w.cpu_s for w in windows if w.cpu_s is not None),
        "stopped": any(w.stopped for w in windows),
        "load": [round(w.load, 1) for w in windows],
    }


def print_report(rows: list[dict[str, Any]], rate: float) -> bool:
    """One line per case. The verdict uses the paired ratio: each round's p99 over the baseline's p99
    of the same round, median over the rounds, so that load other work puts on the machine in one
    round weighs on both sides of that round's ratio, not on one case."""
    base = rows[0]
    head = f"{'bids':>6}{'p50 ms':>9}{'p99 ms':>9}{'pooled':>8}{'paired':>8}{'ack p99':>9}{'bids/s':>8}"
    print(f"\n{'case':<50}{head}  backup (p99 ratios to the baseline: pooled bids, median of per-round ratios)")
    met_all = True
    for r in rows:
        pooled = r["p99"] / base["p99"]
        paired = statistics.median(p / b for p, b in zip(r["per_round_p99"], base["per_round_p99"], strict=True))
        verdict = "" if r is base else f"  {'MET' if paired <= TARGET else 'NOT MET'}"
        met_all &= r is base or paired <= TARGET or r["limited"]
        what = ""
        if r is not base:
            dur = f"median {r['duration']:.1f} s" if r["duration"] else "none completed"
            what = f"{r['backups']} runs, {dur}, {r['stored'] / 1e6:.0f} MB, CPU {r['cpu']:.1f} s" + (
                ", stopped at window end" if r["stopped"] else ""
            )
        print(
            f"{r['name']:<50}{r['bids']:>6}{r['p50']:>9.1f}{r['p99']:>9.1f}{pooled:>7.2f}x{paired:>7.2f}x{r['ack_p99']:>9.1f}"
            f"{r['throughput']:>8.1f}  {what}{verdict}"
        )
        print(f"{'':<50}per-round p99 {[round(p, 1) for p in r['per_round_p99']]} ms, load average {r['load']}")
    print(
        f"\ntarget: p99 bid latency <= {TARGET}x the baseline's during any backup at default settings (offered {rate:g} bids/s)"
    )
    print(f"verdict (default settings, paired ratios): {'MET' if met_all else 'NOT MET'}")
    return met_all


def remove_prefix(prefix: str) -> None:
    """Every object the offsite copies wrote under `prefix` of the stack's bucket, hidden ones included."""
    from auction_backup_pipelines.repository.s3 import S3Backend
    from auction_backup_pipelines.settings import OffsiteSettings

    s3 = S3Backend.from_settings(OffsiteSettings.from_env())
    s3.prefix = prefix
    s3.remove_temporaries()
    for page in s3.client.get_paginator("list_objects_v2").paginate(Bucket=s3.bucket, Prefix=prefix):
        s3.delete_many(o["Key"][len(prefix) :] for o in page.get("Contents", []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0, help="bids per second offered")
    ap.add_argument("--window", type=float, default=5.0, help="seconds of each case per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cases", nargs="*", default=CASES[1:], choices=CASES[1:])
    ap.add_argument("--limits", action="store_true", help="also run the rate-limited variants")
    args = ap.parse_args(argv)

    # Imported before the children are forked (run_window): no interpreter work inside a window.
    import auction_backup_pipelines.kafka.export
    import auction_backup_pipelines.ops.offsite
    import auction_backup_pipelines.postgres.base_backup
    import auction_backup_pipelines.postgres.logical_dump
    import auction_backup_pipelines.redis.backup  # noqa: F401

    plan = [("baseline", "baseline", {})] + [(c, c, {}) for c in args.cases]
    if args.limits:
        plan += [(f"{c} ({v}={x})", c, {v: x}) for c, (v, x) in LIMITED.items() if c in args.cases]
    print(f"{os.cpu_count()} cores; load average at start {os.getloadavg()}; {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    ctx = multiprocessing.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    bidder = ctx.Process(target=workload, args=(args.rate, ready, stop, out))
    bidder.start()
    windows: dict[str, list[Window]] = {name: [] for name, _, _ in plan}
    offsite_prefix = f"bench-impact-{uuid.uuid4().hex[:8]}/"
    try:
        assert ready.wait(60), "the workload did not start"
        time.sleep(2)  # connections warm, first bids out of the way
        with tempfile.TemporaryDirectory(prefix="bench-impact-") as root:
            if "offsite_copy" in args.cases:
                prepare_offsite_source(root)
            for rnd in range(args.rounds):
                for name, case, env in plan:
                    w = run_window(case, env, root, offsite_prefix, args.window, limited=bool(env))
                    windows[name].append(w)
                    print(f"round {rnd + 1} {name}: {w.end - w.start:.1f} s, {w.backups} backups, load {w.load:.1f}", flush=True)
    finally:
        stop.set()
        bids = out.get(timeout=120)
        bidder.join()
        remove_prefix(offsite_prefix)
    rows = [summarize(name, windows[name], bids, bool(env)) for name, _, env in plan]
    print_report(rows, args.rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

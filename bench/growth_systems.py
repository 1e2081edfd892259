"""One size of each system for the growth curves (bench/growth.py): our backup and restore and
their anchors, built on the single-size benches' own functions so both measure the same thing.

Each function builds its own data set (a pgbench database, a scratch redis-server, a topic),
measures, removes what it made, and returns one result:

    {"actual": {...}, "backup": OP, "restore": OP}
    OP = {"ours": {"wall", "cpu", "peak_rss_mib"}, "anchor": {"wall", "cpu"}}

with medians over `rounds`. CPU seconds are the client side's (this process's children, or
the measured process and its children); server CPU is left out except where noted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings, RedisSettings

from . import bench_kafka, bench_postgres, bench_redis, bench_redis_place

# pgbench scale for each nominal size: about 16 MB of database per scale unit (30 ≈ 478 MB).
PG_SCALES = {0.5: 30, 2.0: 128, 8.0: 512}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def _op(ours: list[dict[str, float]], anchor: list[dict[str, float]]) -> dict[str, Any]:
    return {"ours": _median(ours), "anchor": _median(anchor), "rounds": len(ours)}


# --- PostgreSQL: logical dump and restore --------------------------------------------------------


def postgres_size(gb: float, rounds: int) -> dict[str, Any]:
    """`backup_logical` vs `pg_dump -Fc`, and `restore_logical` vs `pg_restore -j 2`, on a pgbench
    database of about `gb` GB; the database is dropped afterwards unless it existed before."""
    s = PostgresSettings.from_env()
    scale = PG_SCALES.get(gb) or max(1, round(gb * 1000 / 16))
    name = f"bench_pgbench_s{scale}"
    with pg.connect(s, dbname="postgres") as admin:
        existed = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    try:
        t0 = time.perf_counter()
        bench_postgres.ensure_pgbench_db(s, scale)
        setup_s = time.perf_counter() - t0
        dumped = bench_postgres.bench_dump_scale(s, scale, rounds, False)
        med = dumped["median"]
        backup = {
            "ours": {
                "wall": med["on"]["wall"],
                "cpu": med["on"]["client_cpu"],
                "server_cpu": med["on"]["server_cpu"],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in dumped["runs"]["on"]),
            },
            "anchor": {"wall": med["raw"]["wall"], "cpu": med["raw"]["client_cpu"], "server_cpu": med["raw"]["server_cpu"]},
            "rounds": rounds,
        }
        restored = bench_postgres.bench_restore(s, scale, rounds)
        med = restored["median"]
        restore = {
            "ours": {
                "wall": med["ours"]["wall"],
                "cpu": med["ours"]["client_cpu"],
                "server_cpu": med["ours"]["server_cpu"],
                "peak_rss_mib": restored["peak_rss_mib"],
            },
            "anchor": {"wall": med["raw"]["wall"], "cpu": med["raw"]["client_cpu"], "server_cpu": med["raw"]["server_cpu"]},
            "rounds": rounds,
        }
        actual = {
            "pgbench_scale": scale,
            "db_mb": round(dumped["db_mb"]),
            "dump_mb": round(dumped["median"]["raw"]["size"] / 2**20, 1),
            "stored_mb": round(dumped["median"]["on"]["size"] / 2**20, 1),
        }
    finally:
        if not existed:
            with pg.connect(s, dbname="postgres") as admin:
                pg.drop_database(admin, name)
    return {"actual": actual, "setup_s": setup_s, "backup": backup, "restore": restore}


# --- Redis: network snapshot and placed restore ----------------------------------------------------


def redis_backup_child(port: int, repo_root: str, day: dt.date) -> dict[str, Any]:
    """Our network snapshot, run in a fresh process by `bench_kafka.isolated` (its own peak RSS)."""
    from auction_backup_pipelines.redis.backup import backup_snapshot

    cpu0, t0 = bench_redis_place.cpu_seconds(), time.perf_counter()
    backup = backup_snapshot(RedisSettings(host="127.0.0.1", port=port), Repository.local(repo_root), day, mode="network")
    return {"wall": time.perf_counter() - t0, "cpu": bench_redis_place.cpu_seconds() - cpu0, "backup": backup}


def redis_place_child(work: str, repo_root: str, backup: Backup, keys: int) -> dict[str, Any]:
    """Our placed restore (decompress, checksums, start, keyspace check) in a fresh process."""
    t = bench_redis_place.timed(
        lambda: bench_redis_place.ours_place(Path(work), Repository.local(repo_root), backup, keys, False)
    )
    return {"wall": t["s"], "cpu": t["cpu"]}


def redis_size(gib: float, rounds: int) -> dict[str, Any]:
    """`backup_snapshot(mode="network")` vs `redis-cli --rdb`, and `place_snapshot` + start + check vs
    a redis-server started on a copy of the raw RDB, on a scratch server filled to `gib` GiB."""
    from auction_backup_pipelines.redis.scratch import scratch_server

    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-growth-redis-")))
        (work / "src").mkdir()
        port = free_port()
        extra = ["--enable-debug-command", "yes", "--repl-diskless-sync-delay", "0"]
        stack.enter_context(scratch_server(work / "src", port=port, extra_args=extra))
        r = redis.Redis(port=port, protocol=2)
        t0 = time.perf_counter()
        keys = bench_redis.fill(r, gib, 512)
        setup_s = time.perf_counter() - t0
        used = int(r.info("memory")["used_memory"])
        r.close()
        raw, repo_root = work / "raw.rdb", str(work / "repo")
        ours: list[dict[str, Any]] = []
        anchor: list[dict[str, float]] = []
        for _ in range(rounds):
            raw.unlink(missing_ok=True)
            t = bench_redis_place.timed(
                lambda: subprocess.run(["redis-cli", "-p", str(port), "--rdb", str(raw)], check=True, capture_output=True)
            )
            anchor.append({"wall": t["s"], "cpu": t["cpu"]})
            ours.append(bench_kafka.isolated(redis_backup_child, port, repo_root, day))
        backup: Backup = ours[-1]["backup"]
        backup_op = _op([{"wall": o["wall"], "cpu": o["cpu"], "peak_rss_mib": o["peak_rss_mb"]} for o in ours], anchor)
        r_ours: list[dict[str, float]] = []
        r_anchor: list[dict[str, float]] = []
        for _ in range(rounds):
            t = bench_redis_place.timed(lambda: bench_redis_place.anchor_place(work, raw, keys))
            r_anchor.append({"wall": t["s"], "cpu": t["cpu"]})
            o = bench_kafka.isolated(redis_place_child, str(work), repo_root, backup, keys)
            r_ours.append({"wall": o["wall"], "cpu": o["cpu"], "peak_rss_mib": o["peak_rss_mb"]})
        actual = {
            "keys": keys,
            "used_memory_mib": round(used / 2**20),
            "rdb_mib": round(raw.stat().st_size / 2**20, 1),
            "stored_mib": round(backup.stored_size / 2**20, 1),
        }
    return {"actual": actual, "setup_s": setup_s, "backup": backup_op, "restore": _op(r_ours, r_anchor)}


# --- Kafka: day export and restore into a new topic -----------------------------------------------


def _as_op_row(result: dict[str, Any], ours: bool) -> dict[str, float]:
    row = {"wall": result["seconds"], "cpu": result["cpu"]}
    if ours:
        # Ours and its native helper's (kafka-export, kafka-replay) together: an upper bound,
        # since the helper's figure starts from the interpreter's high-water mark at the fork.
        row["peak_rss_mib"] = result["peak_rss_mb"] + result.get("helper_peak_rss_mb", 0)
    return row


def kafka_size(millions: float, rounds: int, bootstrap: str) -> dict[str, Any]:
    """`backup_topic_day` vs a plain consumer, and `restore_topics` vs an idempotent producer, on a
    topic of its own holding `millions` million messages of one day (every topic deleted after)."""
    from auction_backup_pipelines.kafka.export import backup_topic_day

    n = int(millions * 1_000_000)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    topic = f"bench-growth-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, bench_kafka.PARTITIONS, 1, config={"retention.ms": "-1"})])[topic].result()
    try:
        t0 = time.perf_counter()
        payload = bench_kafka.produce(bootstrap, topic, n, 190, day)
        setup_s = time.perf_counter() - t0
        bench_kafka.isolated(bench_kafka.plain_read, bootstrap, topic)  # warm the broker's page cache, untimed
        e_ours: list[dict[str, float]] = []
        e_anchor: list[dict[str, float]] = []
        for _ in range(rounds):
            plain = bench_kafka.isolated(bench_kafka.plain_read, bootstrap, topic)
            mine = bench_kafka.isolated(bench_kafka.ours, bootstrap, topic, day.isoformat(), False)
            if plain["messages"] != n or mine["messages"] != n:
                raise SystemExit(f"bench: expected {n} messages, read {plain['messages']} and exported {mine['messages']}")
            e_anchor.append(_as_op_row(plain, False))
            e_ours.append(_as_op_row(mine, True))
        r_ours: list[dict[str, float]] = []
        r_anchor: list[dict[str, float]] = []
        with tempfile.TemporaryDirectory(prefix="bench-growth-kafka-") as root:
            backup_topic_day(bootstrap, Repository.local(root), topic, day.isoformat())
            for _ in range(rounds):
                stem = f"bench-growth-r-{uuid.uuid4().hex[:6]}-"
                try:
                    plain = bench_kafka.isolated(
                        bench_kafka.plain_restore, bootstrap, root, topic, day.isoformat(), f"{stem}plain"
                    )
                    mine = bench_kafka.isolated(bench_kafka.ours_restore, bootstrap, root, topic, day.isoformat(), stem, False)
                finally:
                    for f in admin.delete_topics([f"{stem}plain", stem + topic], operation_timeout=30).values():
                        with contextlib.suppress(Exception):
                            f.result()
                r_anchor.append(_as_op_row(plain, False))
                r_ours.append(_as_op_row(mine, True))
    finally:
        admin.delete_topics([topic], operation_timeout=30)[topic].result()
    actual = {"messages": n, "payload_mb": round(payload / 1e6)}
    return {"actual": actual, "setup_s": setup_s, "backup": _op(e_ours, e_anchor), "restore": _op(r_ours, r_anchor)}

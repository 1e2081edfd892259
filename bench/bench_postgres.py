"""PostgreSQL logical dump and restore: ours vs raw `pg_dump -Fc` / `pg_restore -j 2`, same database.

    python -m bench.bench_postgres [--scale 30] [--small-scale 5] [--restore-only] [--large] [--rounds 3]

Builds pgbench databases (scale 30 ≈ 480 MB) beside the Auction Flow database, then times
raw `pg_dump -Fc` into a file and `backup_logical` (pg_dump -Z0 | zstd into the repository,
with row counts and content checksums in the same snapshot) each in a fresh process. Prints
wall-time and size ratios, and our peak RSS at two database sizes to show it stays flat.

The restore part (bench_restore) times `restore_logical` (the dump copied out of the repository
to a local file, `pg_restore -j RESTORE_JOBS`, every table fingerprinted and compared) against
`pg_restore -j 2` of a local `pg_dump -Fc` file of the same database into a new database, in
alternating rounds, at scale 10 (`--large`: 30). Medians are reported, with the CPU seconds of
the client programs and of the PostgreSQL server (the postmaster and every backend, reaped or
live: other work on the server is counted too, so run it on a quiet machine when you can).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.settings import PostgresSettings

from .common import python_child, report, run_timed


def ensure_pgbench_db(s: PostgresSettings, scale: int) -> str:
    name = f"bench_pgbench_s{scale}"
    with pg.connect(s, dbname="postgres") as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{name}"')
    if not exists:
        print(f"creating {name} (pgbench -i -s {scale}) ...", flush=True)
        subprocess.run(
            [pg.pg_bin("pgbench", s.bin_dir), "-i", "-q", "-s", str(scale), name],
            env=pg.child_env(s, name),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return name


def measure(s: PostgresSettings, dbname: str, checksums: bool) -> dict:
    env = pg.child_env(s, dbname)
    with tempfile.TemporaryDirectory() as tmp:
        raw_file = os.path.join(tmp, "raw.dump")
        raw_wall, raw_rss = run_timed([pg.pg_bin("pg_dump", s.bin_dir), "-Fc", "-f", raw_file, dbname], env=env)
        raw_size = os.path.getsize(raw_file)
        os.remove(raw_file)
        ours = python_child(
            "import datetime as dt, dataclasses, time\n"
            "from auction_backup_pipelines.postgres import logical_dump as pg\n"
            "from auction_backup_pipelines.repository.repository import Repository\n"
            "from auction_backup_pipelines.settings import PostgresSettings\n"
            f"s = dataclasses.replace(PostgresSettings.from_env(), dbname={dbname!r})\n"
            "t = time.perf_counter()\n"
            f"b = pg.backup_logical(s, Repository.local({os.path.join(tmp, 'repo')!r}), dt.date(2026, 1, 1), checksums={checksums})\n"
            "RESULT = {'wall': time.perf_counter() - t, 'stored': b.stored_size, 'raw': b.size, 'rows': b.metadata['rows_total']}\n"
        )
    with pg.connect(s, dbname=dbname) as conn:
        db_size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    return {"db_mb": db_size / 2**20, "raw_wall": raw_wall, "raw_size": raw_size, "raw_rss": raw_rss, **ours}


def server_cpu_s() -> float:
    """CPU seconds of the local PostgreSQL server so far: the postmaster, its reaped children
    (every backend that ended), and the backends alive now, read from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    procs = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        procs[int(entry.name)] = (int(fields[1]), [int(f) for f in fields[11:15]])  # ppid, utime stime cutime cstime
    total = 0
    for ppid, (u, st, cu, cs) in procs.values():
        total += u + st + (cu + cs if ppid not in procs else 0)  # a postmaster's reaped children count once
    return total / ticks


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(run: Any) -> dict[str, float]:
    cpu0, srv0, t0 = children_cpu_s(), server_cpu_s(), time.perf_counter()
    run()
    return {"wall": time.perf_counter() - t0, "client_cpu": children_cpu_s() - cpu0, "server_cpu": server_cpu_s() - srv0}


def bench_restore(s: PostgresSettings, scale: int, rounds: int) -> None:
    """Ours vs `pg_restore -j 2` from a local file, alternating rounds; medians and a verdict."""
    db = ensure_pgbench_db(s, scale)
    target = f"bench_restore_s{scale}"

    def drop() -> None:
        with pg.connect(s, dbname="postgres") as admin:
            pg.drop_database(admin, target)

    with tempfile.TemporaryDirectory() as tmp:
        raw_file, repo_root = os.path.join(tmp, "raw.dump"), os.path.join(tmp, "repo")
        subprocess.run([pg.pg_bin("pg_dump", s.bin_dir), "-Fc", "-f", raw_file, db], env=pg.child_env(s, db), check=True)
        backup_code = (
            "import dataclasses, datetime as dt\n"
            "from auction_backup_pipelines.postgres import logical_dump as pg\n"
            "from auction_backup_pipelines.repository.repository import Repository\n"
            "from auction_backup_pipelines.settings import PostgresSettings\n"
            f"s = dataclasses.replace(PostgresSettings.from_env(), dbname={db!r})\n"
            f"b = pg.backup_logical(s, Repository.local({repo_root!r}), dt.date(2026, 1, 1))\n"
            "RESULT = {'raw': b.size, 'stored': b.stored_size, 'tables': len(b.metadata['tables'])}\n"
        )
        made = python_child(backup_code)
        ours_code = (
            "from auction_backup_pipelines.postgres import logical_dump as pg\n"
            "from auction_backup_pipelines.repository.repository import Repository\n"
            "from auction_backup_pipelines.settings import PostgresSettings, RestoreSettings\n"
            f"repo = Repository.local({repo_root!r})\n"
            "b = repo.get('postgres', pg.LOGICAL_DUMP, '2026-01-01')\n"
            "jobs = RestoreSettings.from_env().jobs\n"
            f"r = pg.restore_logical(PostgresSettings.from_env(), repo, b, {target!r}, force=True, jobs=jobs)\n"
            "RESULT = {'rows': r.rows_total, 'jobs': jobs}\n"
        )
        raw_argv = [pg.pg_bin("pg_restore", s.bin_dir), "-j", "2", "--no-owner", "--no-privileges", "-d", target, raw_file]
        results: dict[str, list[dict[str, float]]] = {"ours": [], "raw": []}
        jobs = 0
        ours_out: list[dict] = []
        for i in range(rounds):
            for name in ("ours", "raw") if i % 2 == 0 else ("raw", "ours"):
                drop()
                if name == "raw":

                    def run_raw() -> None:
                        with pg.connect(s, dbname="postgres") as admin:
                            admin.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
                        subprocess.run(raw_argv, env=pg.child_env(s, target), check=True)

                    results["raw"].append(timed(run_raw))
                else:
                    results["ours"].append(timed(lambda: ours_out.append(python_child(ours_code))))
                    jobs = ours_out[-1]["jobs"]
                print(f"  round {i + 1} {name}: {results[name][-1]['wall']:.2f} s", flush=True)
        drop()
    with pg.connect(s, dbname=db) as conn:
        db_mb = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20  # type: ignore[index]
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
    ratio = med["ours"]["wall"] / med["raw"]["wall"]
    report(
        f"restore of pgbench scale {scale} ({db_mb:.0f} MB, {made['tables']} tables), medians of {rounds} alternating rounds",
        [
            ("cores", os.cpu_count()),
            ("dump (MB raw / stored)", f"{made['raw'] / 2**20:.0f} / {made['stored'] / 2**20:.1f}"),
            ("pg_restore -j 2 from a local file, wall (s)", f"{med['raw']['wall']:.2f}"),
            ("  CPU client / server (s)", f"{med['raw']['client_cpu']:.1f} / {med['raw']['server_cpu']:.1f}"),
            (f"ours (jobs={jobs}, verification included), wall (s)", f"{med['ours']['wall']:.2f}"),
            ("  CPU client / server (s)", f"{med['ours']['client_cpu']:.1f} / {med['ours']['server_cpu']:.1f}"),
            (
                "all rounds ours / raw (s)",
                " ".join(f"{r['wall']:.1f}" for r in results["ours"])
                + " / "
                + " ".join(f"{r['wall']:.1f}" for r in results["raw"]),
            ),
            ("ratio ours/raw wall (target <= 1.2)", f"{ratio:.2f}x"),
        ],
    )
    print(f"  verdict: {'PASS' if ratio <= 1.2 else 'FAIL'} (ours {ratio:.2f}x pg_restore -j 2, target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--small-scale", type=int, default=5)
    parser.add_argument("--restore-only", action="store_true", help="only the restore benchmark")
    parser.add_argument("--large", action="store_true", help="restore benchmark at scale 30 instead of 10")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the restore benchmark")
    args = parser.parse_args()
    s = PostgresSettings.from_env()
    if not args.restore_only:
        bench_dump(s, args)
    bench_restore(s, 30 if args.large else 10, args.rounds)


def bench_dump(s: PostgresSettings, args: argparse.Namespace) -> None:
    results = {}
    for scale in (args.small_scale, args.scale):
        db = ensure_pgbench_db(s, scale)
        for checksums in (True, False):
            r = measure(s, db, checksums)
            results[(scale, checksums)] = r
            report(
                f"pgbench scale {scale} ({r['db_mb']:.0f} MB), content checksums {'on' if checksums else 'off'}",
                [
                    ("raw pg_dump -Fc wall (s)", f"{r['raw_wall']:.2f}"),
                    ("ours wall (s)", f"{r['wall']:.2f}"),
                    ("ratio ours/raw wall (target <= 1.2)", f"{r['wall'] / r['raw_wall']:.2f}x"),
                    ("raw output (MB)", f"{r['raw_size'] / 2**20:.1f}"),
                    ("ours output, zstd (MB)", f"{r['stored'] / 2**20:.1f}"),
                    ("ratio ours/raw size (target <= 1.0)", f"{r['stored'] / r['raw_size']:.2f}x"),
                    ("our peak RSS (MiB)", r["peak_rss_mib"]),
                    ("rows recorded", r["rows"]),
                ],
            )
    small, big = results[(args.small_scale, True)], results[(args.scale, True)]
    report(
        "memory vs database size",
        [
            (
                f"peak RSS at {small['db_mb']:.0f} MB / {big['db_mb']:.0f} MB",
                f"{small['peak_rss_mib']} / {big['peak_rss_mib']} MiB",
            ),
        ],
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")

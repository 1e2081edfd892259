"""PostgreSQL logical dump: our asset's backup path vs raw `pg_dump -Fc`, same database, same run.

    python -m bench.bench_postgres [--scale 30] [--small-scale 5]

Builds pgbench databases (scale 30 ≈ 480 MB) beside the Auction Flow database, then times
raw `pg_dump -Fc` into a file and `backup_logical` (pg_dump -Z0 | zstd into the repository,
with row counts and content checksums in the same snapshot) each in a fresh process. Prints
wall-time and size ratios, and our peak RSS at two database sizes to show it stays flat.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--small-scale", type=int, default=5)
    args = parser.parse_args()
    s = PostgresSettings.from_env()
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

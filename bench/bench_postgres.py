"""PostgreSQL logical dump and restore: ours vs raw `pg_dump -Fc` / `pg_restore -j 2`, same database.

    python -m bench.bench_postgres [--scale 30] [--small-scale 5] [--dump-rounds 5] [--idle | --loaded]
                                   [--restore-only | --dump-only] [--large] [--rounds 3]

Builds pgbench databases (scale 30 ≈ 480 MB) beside the Auction Flow database, then times
raw `pg_dump -Fc` into a file and `backup_logical` (pg_dump -Z0 | zstd into the repository,
with row counts and content checksums in the same snapshot; and with checksums off) in
alternating rounds, ours each in a fresh process, at both scales, first idle, then with a
second process spinning on one core (the other benchmarks of a shared machine do as much).
Prints medians of wall time and of CPU seconds (client programs; the server backends serving
that database), the core count, size ratios, our peak RSS at two database sizes (it stays
flat), and a verdict per scale and load for the target: a dump with content checksums takes
at most 1.1x the wall time of raw `pg_dump -Fc`.

The restore part (bench_restore) times `restore_logical` in a fresh process, its start-up
included (pgbench's accounts table holds nearly all rows, so the dump is streamed through
pg-stage into one `pg_restore` job; every table fingerprinted and compared) against `pg_restore -j 2`
of a local `pg_dump -Fc` file of the same database into a new database, in alternating rounds,
at scale 10 (`--large`: 30), idle and with the other core loaded. Medians are reported, with the
CPU seconds of the client programs and of the PostgreSQL server (the postmaster and every
backend, reaped or live: other work on the server is counted too, so run it on a quiet machine
when you can).

Measured at scale 30 (456 MB, 5 rounds, 2 cores), staged for -j: idle 4.12 s against 3.58 s,
1.15x (met); loaded 5.70 s against 4.37 s and 6.04 s against 5.17 s, 1.30x and 1.17x.
Streamed, on a busier day: idle 6.01 s against 4.86 s (1.24x), loaded 6.73 s against 5.53 s
(1.22x); streamed and staged side by side took the same time. Streamed, another day and
machine: idle 8.61 s against 7.40 s (1.16x), loaded 9.95 s against 8.52 s (1.17x). Client CPU
about 1.0 s against 0.3 s: the interpreter and imports (0.15 s), decompressing and hashing the
293 MB dump (0.25 s), pg-stage; the fingerprints (0.6 s) add about 0.3 s of server CPU. Idle, that work hides on the
second core; loaded, it does not. Before pg-stage (a plain copy of the piped dump): 1.48-1.56x.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.settings import PostgresSettings

from .bench_kafka import cpu_burner
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


class DatabaseServerCpu:
    """CPU seconds of the PostgreSQL backends serving one database, and of their parallel workers,
    sampled from /proc during a run: unlike `server_cpu_s`, other work on a shared server is not
    counted. The last few milliseconds of a backend that exits between two samples are missed."""

    def __init__(self, dbname: str, interval: float = 0.01):
        self.dbname, self.interval = dbname, interval
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="server-cpu", daemon=True)
        self._postmasters = [
            pid
            for pid, ppid in self._postgres().items()
            if ppid not in self._postgres()  # a postmaster's parent is not a PostgreSQL process
        ]
        self._ticks = os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _postgres() -> dict[int, int]:
        procs = {}
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    procs[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
        return procs

    def sample(self) -> None:
        ours = set(self.seen)
        for pm in self._postmasters:
            try:
                children = [int(c) for c in Path(f"/proc/{pm}/task/{pm}/children").read_text().split()]
            except OSError:
                continue
            for pid in children:
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                leader = int(title[-1]) if title[1:4] == ["parallel", "worker", "for"] and title[-1].isdigit() else None
                if pid in ours or (len(title) > 2 and title[2] == self.dbname) or leader in ours:
                    self.seen[pid] = (int(fields[11]) + int(fields[12])) / self._ticks
                    ours.add(pid)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> DatabaseServerCpu:
        self.sample()
        self.start = sum(self.seen.values())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def cpu_s(self) -> float:
        return sum(self.seen.values()) - self.start


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(run: Any) -> dict[str, float]:
    cpu0, srv0, t0 = children_cpu_s(), server_cpu_s(), time.perf_counter()
    run()
    return {"wall": time.perf_counter() - t0, "client_cpu": children_cpu_s() - cpu0, "server_cpu": server_cpu_s() - srv0}


def bench_restore(s: PostgresSettings, scale: int, rounds: int, loaded: bool = False) -> dict[str, Any]:
    """Ours vs `pg_restore -j 2` from a local file, alternating rounds (with `loaded`, while a
    CPU-burning process loads a core); prints medians and a verdict and returns them (with our
    peak RSS) for the growth curves (bench/growth.py)."""
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
        with cpu_burner(loaded):
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
        f"restore of pgbench scale {scale} ({db_mb:.0f} MB, {made['tables']} tables), medians of {rounds} alternating rounds, "
        + ("second core loaded" if loaded else "idle"),
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
    return {"db_mb": db_mb, "median": med, "peak_rss_mib": max(o["peak_rss_mib"] for o in ours_out), "jobs": jobs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--small-scale", type=int, default=5)
    parser.add_argument("--restore-only", action="store_true", help="only the restore benchmark")
    parser.add_argument("--dump-only", action="store_true", help="only the dump benchmark")
    parser.add_argument("--large", action="store_true", help="restore benchmark at scale 30 instead of 10")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the restore benchmark")
    parser.add_argument("--dump-rounds", type=int, default=5, help="alternating rounds of the dump benchmark")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--loaded", dest="loaded", action="store_true", default=None, help="only with the other core loaded")
    load.add_argument("--idle", dest="loaded", action="store_false", help="only without the loading process")
    args = parser.parse_args()
    s = PostgresSettings.from_env()
    if not args.restore_only:
        bench_dump(s, args)
    if not args.dump_only:
        for loaded in (False, True) if args.loaded is None else (args.loaded,):
            bench_restore(s, 30 if args.large else 10, args.rounds, loaded)


DUMP_TARGET = 1.1  # the dump with content checksums, over raw `pg_dump -Fc`, wall time


def dump_round(s: PostgresSettings, dbname: str, variant: str, tmp: str) -> dict[str, Any]:
    """One timed run: `raw` (`pg_dump -Fc` into a file) or ours with checksums `on` / `off`.

    Wall and client CPU of ours are measured inside the fresh interpreter around
    `backup_logical` alone (its start-up and imports are not part of a dump); its CPU counts
    pg_dump too (a finished child). Server CPU: the backends (and parallel workers) serving
    `dbname` during the run (DatabaseServerCpu), so other work on the server is left out."""
    if variant == "raw":
        raw_file = os.path.join(tmp, "raw.dump")
        with DatabaseServerCpu(dbname) as server:
            cpu0, t0 = children_cpu_s(), time.perf_counter()
            argv = [pg.pg_bin("pg_dump", s.bin_dir), "-Fc", "-f", raw_file, dbname]
            subprocess.run(argv, env=pg.child_env(s, dbname), check=True)
            r = {"wall": time.perf_counter() - t0, "client_cpu": children_cpu_s() - cpu0, "size": os.path.getsize(raw_file)}
        os.remove(raw_file)
        return {**r, "server_cpu": server.cpu_s}
    root = os.path.join(tmp, f"repo-{variant}")
    code = (
        "import dataclasses, datetime as dt, resource, shutil, time\n"
        "from auction_backup_pipelines.postgres import logical_dump as pg\n"
        "from auction_backup_pipelines.repository.repository import Repository\n"
        "from auction_backup_pipelines.settings import PostgresSettings\n"
        "def cpu():\n"
        "    return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) "
        "for f in ('ru_utime', 'ru_stime'))\n"
        f"s = dataclasses.replace(PostgresSettings.from_env(), dbname={dbname!r})\n"
        f"repo = Repository.local({root!r})\n"
        "c0, t0 = cpu(), time.perf_counter()\n"
        f"b = pg.backup_logical(s, repo, dt.date(2026, 1, 1), checksums={variant == 'on'})\n"
        "RESULT = {'wall': time.perf_counter() - t0, 'client_cpu': cpu() - c0, 'size': b.stored_size, "
        "'rows': b.metadata['rows_total']}\n"
        f"shutil.rmtree({root!r})\n"
    )
    with DatabaseServerCpu(dbname) as server:
        r = python_child(code)
    return {**r, "server_cpu": server.cpu_s}


def bench_dump_scale(s: PostgresSettings, scale: int, rounds: int, loaded: bool) -> dict[str, Any]:
    """Alternating rounds of raw / ours (checksums on) / ours (off) at one scale; medians and verdict."""
    db = ensure_pgbench_db(s, scale)
    with pg.connect(s, dbname=db) as conn:
        db_mb = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20  # type: ignore[index]
    variants = ["raw", "on", "off"]
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp, cpu_burner(loaded):
        dump_round(s, db, "raw", tmp)  # warm the cache: the first reader of a table pays its disk reads
        for i in range(rounds):
            for v in variants[i % 3 :] + variants[: i % 3]:  # rotate the order, so none always runs first
                runs[v].append(dump_round(s, db, v, tmp))
    med = {
        v: {m: statistics.median(r[m] for r in rs) for m in ("wall", "client_cpu", "server_cpu", "size")}
        for v, rs in runs.items()
    }
    for m in med.values():
        m["cpu"] = m["client_cpu"] + m["server_cpu"]
    ratio = {v: med[v]["wall"] / med["raw"]["wall"] for v in ("on", "off")}
    cpu_ratio = {v: med[v]["cpu"] / med["raw"]["cpu"] for v in ("on", "off")}
    label = "second core loaded" if loaded else "idle"
    report(
        f"dump of pgbench scale {scale} ({db_mb:.0f} MB), {label}, medians of {rounds} alternating rounds",
        [
            ("cores", os.cpu_count()),
            ("raw pg_dump -Fc wall (s)", f"{med['raw']['wall']:.2f}"),
            ("  CPU client / server (s)", f"{med['raw']['client_cpu']:.2f} / {med['raw']['server_cpu']:.2f}"),
            ("ours, checksums on, wall (s)", f"{med['on']['wall']:.2f}"),
            ("  CPU client / server (s)", f"{med['on']['client_cpu']:.2f} / {med['on']['server_cpu']:.2f}"),
            ("ours, checksums off, wall (s)", f"{med['off']['wall']:.2f}"),
            ("  CPU client / server (s)", f"{med['off']['client_cpu']:.2f} / {med['off']['server_cpu']:.2f}"),
            ("all rounds raw / on / off wall (s)", " / ".join(" ".join(f"{r['wall']:.2f}" for r in runs[v]) for v in variants)),
            ("ratio on/raw wall, CPU", f"{ratio['on']:.2f}x, {cpu_ratio['on']:.2f}x"),
            ("ratio off/raw wall, CPU", f"{ratio['off']:.2f}x, {cpu_ratio['off']:.2f}x"),
            ("size ours/raw (target <= 1.0)", f"{med['on']['size'] / med['raw']['size']:.2f}x"),
            ("our peak RSS (MiB)", max(r["peak_rss_mib"] for r in runs["on"])),
        ],
    )
    verdict = "PASS" if ratio["on"] <= DUMP_TARGET else "FAIL"
    print(
        f"  target: dump with checksums <= {DUMP_TARGET}x raw pg_dump -Fc (wall), scale {scale}, {label}: "
        f"{verdict} ({ratio['on']:.2f}x; CPU {cpu_ratio['on']:.2f}x)"
    )
    return {"db_mb": db_mb, "median": med, "ratio": ratio, "cpu_ratio": cpu_ratio, "verdict": verdict, "runs": runs}


def bench_dump(s: PostgresSettings, args: argparse.Namespace) -> None:
    results = {}
    for loaded in (False, True) if args.loaded is None else (args.loaded,):
        for scale in (args.small_scale, args.scale):
            results[(scale, loaded)] = bench_dump_scale(s, scale, args.dump_rounds, loaded)
    report(
        f"verdicts: dump with content checksums <= {DUMP_TARGET}x raw pg_dump -Fc (wall; CPU beside)",
        [
            (
                f"scale {scale}, {'loaded' if loaded else 'idle'}",
                f"{r['verdict']} {r['ratio']['on']:.2f}x (CPU {r['cpu_ratio']['on']:.2f}x)",
            )
            for (scale, loaded), r in results.items()
        ],
    )
    small, big = results[(args.small_scale, loaded)], results[(args.scale, loaded)]
    report(
        "memory vs database size",
        [
            (
                f"peak RSS at {small['db_mb']:.0f} MB / {big['db_mb']:.0f} MB",
                f"{max(r['peak_rss_mib'] for r in small['runs']['on'])} / {max(r['peak_rss_mib'] for r in big['runs']['on'])} MiB",
            ),
        ],
    )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")

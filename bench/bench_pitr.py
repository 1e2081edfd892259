"""Base backups, WAL archive latency and PITR restore time, against the raw tools in the same run.

    python -m bench.bench_pitr [--scale 30] [--pgbench-seconds 15]

1. base backup: raw `pg_basebackup -Ft --checkpoint=fast` into a folder vs ours (the tar
   compressed by pg_basebackup's client zstd, streamed into the repository): wall-time ratio
   (target <= 1.25x) and how much smaller our output is than the raw tar (target >= 5x);
2. WAL archive latency (RPO): seconds from a commit on the primary to the moment the archive
   provably holds it (the receiver's heartbeat), over 20 commits (target <= 5 s);
3. PITR: our `restore_to_time` vs a manual recovery from the raw tar and a folder of plain WAL
   segments (the stack's archive_command folder), to the same target time, in alternating
   rounds (`--rounds`, medians; `--loaded` adds a CPU-burning second process), with CPU
   seconds, our phases and the verdict against the target (<= 1.1x).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.logical_day import scratch_dir
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.postgres.wal_receiver import WalReceiver, wait_for_archived_time
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings

from .bench_kafka import cpu_burner
from .bench_postgres import ensure_pgbench_db
from .common import report


def _receiver(s: PostgresSettings, repo: Repository, spool: Path) -> tuple[WalReceiver, threading.Event, threading.Thread]:
    rx = WalReceiver(s, WalArchive(repo.backend), spool, slot="bench_pitr", ship_interval=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=rx.run, args=(stop,))
    thread.start()
    return rx, stop, thread


def bench_base_backup(s: PostgresSettings, repo: Repository, work: Path, rounds: int = 3) -> tuple[dict, Path]:
    """Alternating rounds, medians: a 600 MB write into the page cache varies a lot run to run."""
    raw_walls, ours_walls = [], []
    raw_dir = work / "raw"
    for i in range(rounds):
        shutil.rmtree(raw_dir, ignore_errors=True)
        t = time.perf_counter()
        subprocess.run(
            [pg.pg_bin("pg_basebackup", s.bin_dir), "-D", str(raw_dir), "-Ft", "--checkpoint=fast", "--no-password"],
            env=pg.child_env(s),
            check=True,
        )
        raw_walls.append(time.perf_counter() - t)
        t = time.perf_counter()
        backup = basebackup.take_base_backup(s, repo, dt.date(2026, 1, 1 + i))
        ours_walls.append(time.perf_counter() - t)
    raw_size = sum(p.stat().st_size for p in raw_dir.iterdir())
    raw_wall, ours_wall = statistics.median(raw_walls), statistics.median(ours_walls)
    report(
        f"base backup (median of {rounds} alternating rounds)",
        [
            ("raw pg_basebackup -Ft wall (s)", f"{raw_wall:.2f}  {[round(w, 2) for w in raw_walls]}"),
            ("ours (client zstd, streamed into repository) wall (s)", f"{ours_wall:.2f}  {[round(w, 2) for w in ours_walls]}"),
            ("ratio ours/raw wall (target <= 1.25)", f"{ours_wall / raw_wall:.2f}x"),
            ("raw tar size (MB)", f"{raw_size / 2**20:.0f}"),
            ("ours stored (MB)", f"{backup.stored_size / 2**20:.1f}"),
            ("raw / ours size (target >= 5)", f"{raw_size / backup.stored_size:.1f}x smaller"),
        ],
    )
    return {"raw_wall": raw_wall, "ours_wall": ours_wall}, raw_dir


def bench_rpo(s: PostgresSettings, archive: WalArchive, samples: int = 20) -> None:
    delays = []
    with pg.connect(s) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_rpo (id serial PRIMARY KEY, at timestamptz)")
        # warm-up: the receiver has connected and shipped once before we measure
        warm = conn.execute("INSERT INTO bench_rpo (at) VALUES (clock_timestamp()) RETURNING at").fetchone()[0]
        assert wait_for_archived_time(archive, warm, timeout=60), "archive never caught up"
        for _ in range(samples):
            committed = conn.execute("INSERT INTO bench_rpo (at) VALUES (clock_timestamp()) RETURNING at").fetchone()[0]
            assert wait_for_archived_time(archive, committed, timeout=60), "archive never caught up"
            delays.append((dt.datetime.now(dt.UTC) - committed).total_seconds())
        conn.execute("DROP TABLE bench_rpo")
    report(
        "WAL archive latency (commit -> provably in the archive)",
        [
            ("samples", samples),
            ("median (s)", f"{statistics.median(delays):.2f}"),
            ("max (s) (target <= 5)", f"{max(delays):.2f}"),
        ],
    )


def _wait_archived(s: PostgresSettings, segment: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with pg.connect(s) as conn:
        while time.monotonic() < deadline:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if last is not None and last >= segment:
                return
            time.sleep(0.2)
    raise AssertionError(f"archive_command never archived {segment}")


def _manual_recovery(raw_dir: Path, wal_dir: Path, target: dt.datetime, work: Path, port: int) -> float:
    """What an operator does by hand: untar base + pg_wal, point restore_command at plain WAL."""
    shutil.rmtree(work / "manual", ignore_errors=True)  # the previous round's
    data = work / "manual" / "data"
    data.mkdir(parents=True)
    t = time.perf_counter()
    with tarfile.open(raw_dir / "base.tar") as tar:
        tar.extractall(data, filter="fully_trusted")
    with tarfile.open(raw_dir / "pg_wal.tar") as tar:
        tar.extractall(data / "pg_wal", filter="fully_trusted")
    with open(data / "postgresql.auto.conf", "a") as f:
        f.write(
            f"\narchive_mode = off\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            f"restore_command = 'cp \"{wal_dir}/%f\" \"%p\"'\nrecovery_target_time = '{target.isoformat()}'\n"
            "recovery_target_action = 'promote'\n"
        )
    (data / "recovery.signal").touch()
    pitr.chown_postgres(work / "manual")
    os.chmod(data, 0o700)
    subprocess.run(
        pitr.as_postgres(
            [
                pg.pg_bin("pg_ctl", PostgresSettings.from_env().bin_dir),
                "-D",
                str(data),
                "-l",
                str(work / "manual" / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    inst = pitr.RestoredInstance(data, port, work / "manual" / "log")
    try:
        assert pitr.wait_promoted(inst, PostgresSettings.from_env()) is not None
        return time.perf_counter() - t
    finally:
        inst.stop()


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (pg_ctl, tar; not the servers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_pitr_rounds(
    s: PostgresSettings,
    repo: Repository,
    archive: WalArchive,
    raw_dir: Path,
    wal_dir: Path,
    target: dt.datetime,
    work: Path,
    args: argparse.Namespace,
) -> None:
    """Alternating rounds of ours and the manual path to the same target: medians, CPU, phases, verdict."""
    ours_walls: list[float] = []
    manual_walls: list[float] = []
    ours_cpu: list[float] = []
    manual_cpu: list[float] = []
    phases: list[dict[str, float]] = []
    staged = 0
    with cpu_burner(args.loaded):
        for i in range(args.rounds):
            for which in ("ours", "manual") if i % 2 == 0 else ("manual", "ours"):
                c = _cpu()
                if which == "ours":
                    folder = work / f"ours{i}"
                    result = pitr.restore_to_time(s, repo, archive, target, folder, stop_after=True)
                    ours_walls.append(result.duration_s)
                    ours_cpu.append(_cpu() - c)
                    phases.append(result.phases)
                    staged = result.wal_files_staged
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    manual_walls.append(_manual_recovery(raw_dir, wal_dir, target, work, free_port()))
                    manual_cpu.append(_cpu() - c)
    ours, manual = statistics.median(ours_walls), statistics.median(manual_walls)
    ratio = ours / manual
    load = "a CPU-burning second process" if args.loaded else "no load of ours"
    report(
        f"PITR to the same target after pgbench: medians of {args.rounds} alternating rounds, {os.cpu_count()} cores, {load}",
        [
            ("pgbench traffic replayed (s of pgbench)", args.pgbench_seconds),
            ("ours: verify + extract + stage WAL + recover (s)", f"{ours:.2f}  {[round(w, 2) for w in ours_walls]}"),
            ("manual: untar + recover from plain WAL (s)", f"{manual:.2f}  {[round(w, 2) for w in manual_walls]}"),
            (
                "CPU s ours / manual (this process + waited children)",
                f"{statistics.median(ours_cpu):.2f} / {statistics.median(manual_cpu):.2f}",
            ),
            *((f"ours phase {k} (median s)", f"{statistics.median(p[k] for p in phases):.2f}") for k in phases[0]),
            ("WAL files staged by ours", staged),
            ("ratio ours/manual (target <= 1.1x)", f"{ratio:.2f}x: {'MET' if ratio <= 1.1 else 'NOT MET'}"),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--pgbench-seconds", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loaded", action="store_true", help="with a CPU-burning second process during the PITR rounds")
    args = parser.parse_args()
    s = PostgresSettings.from_env()
    bench_db = ensure_pgbench_db(s, args.scale)
    work = scratch_dir("bench-pitr-")
    repo = Repository.local(work / "repo")
    archive = WalArchive(repo.backend)
    rx, stop, thread = _receiver(s, repo, work / "spool")
    try:
        _, raw_dir = bench_base_backup(s, repo, work)
        bench_rpo(s, archive)
        subprocess.run(
            [pg.pg_bin("pgbench", s.bin_dir), "-n", "-c", "2", "-T", str(args.pgbench_seconds), bench_db],
            env=pg.child_env(s, bench_db),
            check=True,
            capture_output=True,
        )
        with pg.connect(s) as conn:
            target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            conn.execute("SELECT txid_current()")  # a commit after the target, where recovery stops
        assert wait_for_archived_time(archive, target + dt.timedelta(seconds=1), timeout=120)
        # The stack's archive_command folder holds the same WAL as plain segments once switched
        # out and archived: the manual baseline replays from there.
        switched = subprocess.run(
            ["bash", "stack/postgres.sh", "psql", "-At", "-c", "SELECT pg_walfile_name(pg_switch_wal())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        _wait_archived(s, switched)
        wal_dir = Path(os.environ.get("POSTGRES_WAL_ARCHIVE", ".stack/postgres/wal_archive"))
        bench_pitr_rounds(s, repo, archive, raw_dir, wal_dir, target, work, args)
    finally:
        stop.set()
        thread.join(60)
        rx.drop_slot()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

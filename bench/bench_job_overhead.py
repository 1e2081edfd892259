"""What a daily backup job costs beyond its work: end to end through `dg launch` against the sum
of its steps' own durations, in one process (the project's jobs) and one process per step.

    python -m bench.bench_job_overhead [--job kafka_backup_job] [--rounds 2] [--no-offsite]

Each round launches the job for yesterday's partition twice, alternating: the project's job
(`in_process_executor`) and the same job on Dagster's multiprocess executor (bench/
job_overhead_defs.py). Both write into a temporary repository (BACKUP_ROOT) and offsite prefix of
their own, with a temporary DAGSTER_HOME whose run storage gives each step's start and end.
Reported, as medians over the rounds: wall seconds end to end (the CLI loading the code location,
the run, its steps), the part before the run starts (loading), the run itself, the sum of the
steps' durations (the work), and CPU seconds of the whole process tree beside the wall time.
Target: the in-process job ends at most 15 s or 1.3x beyond its work (whichever is larger);
exit status 1 when it does not. The Kafka job is the default: it reconstructs a past day, so it
runs for yesterday without a late-capture override, and it has the most steps (an export, its
integrity and freshness checks per topic, and the offsite copies and their checks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import ROOT, report

TARGET_EXTRA_S = 15.0
TARGET_RATIO = 1.3
VARIANTS = {
    "in-process (project)": [],
    "multiprocess (baseline)": ["-f", str(ROOT / "bench" / "job_overhead_defs.py"), "-a", "defs"],
}


def launch(job: str, day: str, extra: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run `dg launch` for one partition; (wall seconds, CPU seconds of its whole process tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run(
        [str(Path(sys.executable).with_name("dg")), "launch", *extra, "--job", job, "--partition", day],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"dg launch --job {job} failed (exit {out.returncode}):\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def run_figures(home: Path) -> dict[str, float]:
    """The newest run in `home`: run seconds and the sum of its steps' durations."""
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records(limit=1)
        stats = instance.get_run_step_stats(record.dagster_run.run_id)
        steps = [s.end_time - s.start_time for s in stats if s.start_time and s.end_time]
        return {
            "run_s": (record.end_time or 0) - (record.start_time or 0),
            "work_s": sum(steps),
            "steps": len(steps),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="kafka_backup_job")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-offsite", action="store_true", help="leave the offsite copies out (OFFSITE_S3_BUCKET unset)")
    args = ap.parse_args()
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="bench-job-overhead-") as tmp:
        for n in range(args.rounds):
            for name, extra in VARIANTS.items():
                home = Path(tmp) / f"home-{n}-{len(results[name])}-{extra and 'mp' or 'ip'}"
                home.mkdir()
                (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
                env = {
                    **os.environ,
                    "DAGSTER_HOME": str(home),
                    "BACKUP_ROOT": str(Path(tmp) / "repo"),
                    "OFFSITE_S3_PREFIX": f"bench-job-overhead-{os.getpid()}",
                }
                if args.no_offsite:
                    env.pop("OFFSITE_S3_BUCKET", None)
                wall, cpu = launch(args.job, day, extra, env)
                figures = run_figures(home)
                results[name].append({"wall_s": wall, "cpu_s": cpu, "load_s": wall - figures["run_s"], **figures})
                print(f"  round {n + 1} {name}: {wall:.1f} s wall, {figures['work_s']:.1f} s of steps", flush=True)
    rows: list[tuple[str, Any]] = [("job, partition", f"{args.job}, {day}"), ("cores", os.cpu_count())]
    rows.append(("load average (1, 5 min)", "{:.1f}, {:.1f}".format(*os.getloadavg()[:2])))
    med: dict[str, dict[str, float]] = {}
    for name, runs in results.items():
        med[name] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = med[name]
        rows.append(
            (
                name,
                f"{m['wall_s']:.1f} s wall ({m['load_s']:.1f} s loading, {m['run_s']:.1f} s run), "
                f"{m['work_s']:.1f} s of {m['steps']:.0f} steps, {m['cpu_s']:.1f} s CPU",
            )
        )
    ours = med["in-process (project)"]
    extra_s, ratio = ours["wall_s"] - ours["work_s"], ours["wall_s"] / max(ours["work_s"], 1e-9)
    ok = extra_s <= TARGET_EXTRA_S or ratio <= TARGET_RATIO
    rows.append(("in-process beyond the work", f"{extra_s:.1f} s, {ratio:.2f}x"))
    rows.append(("target", f"<= {TARGET_EXTRA_S:.0f} s or <= {TARGET_RATIO}x beyond the work: {'MET' if ok else 'MISSED'}"))
    base = med["multiprocess (baseline)"]
    rows.append(("multiprocess / in-process wall", f"{base['wall_s'] / ours['wall_s']:.2f}x"))
    report(f"Daily job overhead: {args.job} through dg launch, medians of {args.rounds} alternating rounds", rows)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

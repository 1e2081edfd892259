"""How fast `auction-backup info` and `auction-backup check` answer on the running stack.

Why: both are what an on-call engineer types first and what monitoring runs every minute; the
target is an answer in under 2 s on the demo stack (`make demo`: its repository, WAL archive
and offsite bucket), also with a second process loading the other core. Each command runs as an
operator runs it (a fresh interpreter, the stack's settings), in alternating rounds; the bench
prints medians of wall and CPU seconds, the core count, the target and a verdict per command.
Exit codes 0 and 1 of `check` (OK, WARN) both count as answers; 2 (FAIL) is reported.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from bench.bench_kafka import cpu_burner
from bench.common import ROOT

TARGET_S = 2.0
COMMANDS = {"info": ["info"], "check": ["check"]}


def run_once(argv: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, exit code) of one CLI run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "auction_backup_pipelines.cli", *argv], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def measure(rounds: int, loaded: bool) -> None:
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in COMMANDS}
    with cpu_burner(loaded):
        for _ in range(rounds):
            for name, argv in COMMANDS.items():
                times[name].append(run_once(argv))
    load = "a CPU-burning second process" if loaded else "no load of ours"
    print(f"\n== info and check, medians of {rounds} alternating rounds, {os.cpu_count()} cores, {load}")
    for name, runs in times.items():
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[1] for r in runs)
        codes = sorted({r[2] for r in runs})
        verdict = "MET" if wall <= TARGET_S and max(codes) < 2 else "NOT MET"
        print(f"  {name:<6} {wall:5.2f} s wall  {cpu:5.2f} s CPU  exit {codes}  target <= {TARGET_S:g} s: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for loaded in (False, True):
        measure(args.rounds, loaded)


if __name__ == "__main__":
    main()

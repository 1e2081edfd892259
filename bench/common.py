"""Helpers shared by the benchmarks: timing, peak memory of a child, and printing ratios."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_timed(argv: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> tuple[float, int]:
    """Run a command; return (wall seconds, peak RSS in MiB of that child alone)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, **kwargs)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the max over all waited-for children: only trustworthy when this
    # child set a new maximum, so the in-process measurements below run in fresh interpreters.
    return wall, max(after, before) // 1024


def own_peak_rss_mib() -> float:
    """Peak RSS (MiB) of this process's own memory since its exec: VmHWM. Not ru_maxrss, which a
    child started by exec inherits from its parent (Linux carries the high-water mark of the
    address space it replaced), so a fresh interpreter started by a large benchmark process
    reported the parent's peak, not its own."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def python_child(code: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `code` in a fresh interpreter that prints one JSON line; adds its own peak RSS (MiB)."""
    wrapper = (
        code + "\nimport json, resource, sys\n"
        "from bench.common import own_peak_rss_mib\n"
        "RESULT['peak_rss_mib'] = int(own_peak_rss_mib())\n"
        "print(json.dumps(RESULT))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", wrapper], env=env or dict(os.environ), cwd=ROOT, check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(title: str, rows: list[tuple[str, Any]]) -> None:
    print(f"\n== {title}")
    for name, value in rows:
        print(f"  {name:<44} {value}")

"""Growth curves: how our backups and restores scale with the data, beside the raw tools.

    python -m bench.growth [--large] [--only postgres|redis|kafka] [--rounds 3] [--report-only]

For each system, at each size, our backup and our restore and their anchors (the same pairs as
the single-size benches, bench/growth_systems.py):

  postgres  0.5 / 2 / 8 GB pgbench database   backup_logical vs pg_dump -Fc; restore_logical vs pg_restore -j 2
  redis     0.25 / 1 / 4 GiB of used memory     network snapshot vs redis-cli --rdb; placed restore vs
                                                redis-server started on a copy of the raw RDB
  kafka     1 / 4 / 16 M messages of one day     day export vs a plain consumer; restore into a new
                                                topic vs an idempotent producer

The two smaller sizes run by default; --large adds the largest (hours, and ~25 GiB of disk for
PostgreSQL). Each size's wall and CPU seconds, our peak RSS, the load average while it ran and
how long it took land in docs/performance/<system>.json (merged with earlier runs, so a --large
run adds to a default one); then docs/performance/<system>-<op>.png and docs/performance.md are
regenerated from every JSON file present (bench/growth_report.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

from . import growth_report, growth_systems
from .common import ROOT

OUT = ROOT / "docs" / "performance"
SIZES: dict[str, tuple[float, ...]] = {"postgres": (0.5, 2.0, 8.0), "redis": (0.25, 1.0, 4.0), "kafka": (1.0, 4.0, 16.0)}


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    mem_kib = 0
    model = platform.processor() or "unknown"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"arch": platform.machine(), "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1), "cpu": model}


class LoadSampler:
    """The 1-minute load average every few seconds while a size runs: 2 shared cores make a
    ratio meaningless without it."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        return {"mean": round(sum(self.samples) / len(self.samples), 2), "max": round(max(self.samples), 2)}


def measure_one(system: str, size: float, rounds: int, bootstrap: str) -> dict[str, Any]:
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "postgres": lambda: growth_systems.postgres_size(size, rounds),
        "redis": lambda: growth_systems.redis_size(size, rounds),
        "kafka": lambda: growth_systems.kafka_size(size, rounds, bootstrap),
    }
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    with LoadSampler() as load:
        result = runners[system]()
    result.update(
        measured_at=started.isoformat(timespec="seconds"),
        took_s=round(time.perf_counter() - t0, 1),
        load_average=load.summary(),
        machine=machine(),
    )
    return result


def save(system: str, size: float, result: dict[str, Any]) -> None:
    """Merge one size into docs/performance/<system>.json, written atomically."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{system}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"system": system, "sizes": {}}
    data["sizes"][f"{size:g}"] = result
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="also the largest size of each system (hours)")
    ap.add_argument("--only", choices=list(SIZES), action="append", help="one system (repeatable; default all)")
    ap.add_argument("--sizes", help="comma-separated sizes instead of the defaults, e.g. 0.5 (for one --only system)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per size; medians (default 3)")
    ap.add_argument("--report-only", action="store_true", help="only regenerate the plots and docs/performance.md")
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    args = ap.parse_args(argv)
    if not args.report_only:
        for system in args.only or list(SIZES):
            sizes = SIZES[system] if args.large else SIZES[system][:2]
            if args.sizes:
                sizes = tuple(float(x) for x in args.sizes.split(","))
            for size in sizes:
                print(f"\n######## growth: {system} at {size:g} {growth_report.UNITS[system]}", flush=True)
                result = measure_one(system, size, args.rounds, args.bootstrap)
                save(system, size, result)
                print(f"  {system} {size:g}: took {result['took_s']:.0f} s, load {result['load_average']}", flush=True)
    growth_report.write(OUT, ROOT / "docs" / "performance.md", SIZES)
    print(f"wrote {ROOT / 'docs' / 'performance.md'} and the plots in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m bench` (what `make bench` runs): every benchmark, one after the other."""

import importlib
import sys

BENCHES = [
    "bench_postgres",
    "bench_pitr",
    "bench_redis",
    "bench_redis_place",
    "bench_kafka",
    "bench_retention",
    "bench_encryption",
    "bench_job_overhead",
    "bench_operator_cli",
    "bench_production_impact",
    # last and longest: the growth curves at the two smaller sizes, rewriting docs/performance.md
    "growth",
]

if __name__ == "__main__":
    for name in BENCHES:
        module = importlib.import_module(f"bench.{name}")
        print(f"\n######## {name}", flush=True)
        sys.argv = [name]
        module.main()

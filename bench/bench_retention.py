"""How long one retention sensor tick takes on a repository of 10,000 backups.

    python -m bench.bench_retention [--backups N] [--ticks K]

Builds a temporary repository (5 artifacts, one tiny backup per artifact and day), then times
the decision alone (policy.pruning.plan: list + load manifests + evaluate) and a whole sensor
tick through Dagster (build_sensor_context + evaluate_tick), counting backend listings.
Exit status 1 when a tick misses the target or lists the store more than once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.repository.manifest import Backup, FileEntry
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import LocalBackend

NOW = dt.datetime(2026, 12, 10, 6, 0, tzinfo=dt.UTC)
ARTIFACTS = [
    ("postgres", "logical_dump"),
    ("postgres", "base_backup"),
    ("postgres", "wal"),
    ("redis", "snapshot"),
    ("kafka", "events"),
]
TARGET_S = 2.0


def build(root: Path, n: int) -> Repository:
    """Write n complete backups as the repository would lay them out.

    Files are written directly rather than through Repository.begin: its fsync per file and
    folder would make setup take minutes on a disk, and a plan only reads manifests.
    """
    repo = Repository.local(root)
    payload = b"x"
    digest = hashlib.sha256(payload).hexdigest()
    entry = FileEntry("data.bin", "data.bin", "none", 1, digest, 1, digest)
    per_artifact = -(-n // len(ARTIFACTS))
    written = 0
    for i in range(per_artifact):
        day = (NOW.date() - dt.timedelta(days=1 + i)).isoformat()
        for system, artifact in ARTIFACTS:
            if written == n:
                break
            b = Backup(
                system, artifact, day, f"{day.replace('-', '')}T020000Z-{i:06x}", f"{day}T02:00:00Z", f"{day}T02:00:05Z", (entry,)
            )
            (root / b.prefix).mkdir(parents=True)
            (root / b.object_key(entry)).write_bytes(payload)
            (root / b.manifest_key).write_bytes(b.to_json())
            written += 1
    return repo


class ListCounter:
    """Counts LocalBackend.list calls, whichever Repository object makes them."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = LocalBackend.list

    def __enter__(self) -> ListCounter:
        original = self._original

        def counting(backend, prefix=""):
            self.calls += 1
            return original(backend, prefix)

        LocalBackend.list = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        LocalBackend.list = self._original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args(argv)

    from dagster import DagsterInstance, build_sensor_context  # import time is not tick time

    from auction_backup_pipelines.defs.retention import jobs as ret
    from auction_backup_pipelines.defs.retention.sensors import build_retention_sensor
    from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource

    clock = pruning.utcnow
    pruning.utcnow = lambda: NOW  # fixed clock: the built history ends yesterday (restored below)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
            root = Path(tmp) / "repo"
            t0 = time.perf_counter()
            repo = build(root, args.backups)
            print(f"built {args.backups} backups in {time.perf_counter() - t0:.2f} s")

            plan_times, plan_calls = [], []
            for _ in range(args.ticks):
                with ListCounter() as c:
                    t0 = time.perf_counter()
                    decisions = pruning.plan(repo)
                    plan_times.append(time.perf_counter() - t0)
                plan_calls.append(c.calls)
            expired = sum(not d.keep for d in decisions)

            resource = BackupRepositoryResource(root=str(root))
            instance = DagsterInstance.ephemeral()
            tick_times, tick_calls = [], []
            for _ in range(args.ticks):
                ctx = build_sensor_context(instance=instance, resources={"backup_repo": resource})
                with ListCounter() as c:
                    t0 = time.perf_counter()
                    data = build_retention_sensor(3600, False).evaluate_tick(ctx)
                    tick_times.append(time.perf_counter() - t0)
                tick_calls.append(c.calls)
            requested = len(data.run_requests[0].run_config["ops"][ret.CLEANUP_OP]["config"]["backup_keys"])
    finally:
        pruning.utcnow = clock

    print(
        f"decision (records + plan): median {statistics.median(plan_times):.3f} s, max {max(plan_times):.3f} s "
        f"over {args.ticks}; {len(decisions)} backups, {expired} expired"
    )
    print(
        f"sensor tick (evaluate_tick): median {statistics.median(tick_times):.3f} s, max {max(tick_times):.3f} s; "
        f"run request lists {requested} keys"
    )
    worst_calls = max(plan_calls + tick_calls)
    print(f"list calls per tick: {worst_calls}")
    ok = max(tick_times) < TARGET_S and worst_calls == 1 and requested == expired
    print(f"target < {TARGET_S:.0f} s and one listing: {'ok' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Redis snapshot: raw `redis-cli --rdb` against our full path, on the same server in one run.

    python -m bench.bench_redis [--gb 1] [--value-size 512] [--values populate|random] [--rounds 3] [--bgsave] [--restore]

A scratch redis-server on a free loopback port is filled with DEBUG POPULATE to at least --gb
GiB of used memory. Then, --rounds times, alternating: `redis-cli --rdb <file>` (the raw tool),
and `backup_snapshot(mode="network")`, the whole path into a local repository (zstd, sha256,
fsync) including the content digest (computed by the rdb-facts helper while the bytes stream;
a step on a scratch server only when the helper cannot read some keys). Medians are compared.
--bgsave adds our BGSAVE-and-copy path, --restore a verified restore into a second fresh server.

The diskless-sync delay is set to 0 on the bench server: production's default 5 s would be
added to both sides alike. Peak RSS is reported for this process and, separately, for the
largest child that ended (redis-cli, the scratch server the digest runs on).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from auction_backup_pipelines.localhost import free_port
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.restore import restore_snapshot
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import RedisSettings

GIB = 1 << 30


def fill(r: redis.Redis, gb: float, value_size: int) -> int:
    target = int(gb * GIB)
    batch = 0
    while r.info("memory")["used_memory"] < target:
        per_key = value_size + 90  # value, key and dict entry; corrected by the next round
        missing = target - r.info("memory")["used_memory"]
        count = max(10_000, missing // per_key)
        r.execute_command("DEBUG", "POPULATE", count, f"bench{batch}", value_size)
        batch += 1
    return int(r.dbsize())


def fill_random(r: redis.Redis, gb: float, value_size: int) -> int:
    """Incompressible values (slices of random bytes): the RDB is as large as the data, unlike
    DEBUG POPULATE's zero-padded values, which LZF shrinks about 16-fold."""
    pool = os.urandom(64 << 20)
    target, i = int(gb * GIB), 0
    while r.info("memory")["used_memory"] < target:
        pipe = r.pipeline(transaction=False)
        for _ in range(20_000):
            at = (i * 7919) % (len(pool) - value_size)
            pipe.set(f"rand:{i}", pool[at : at + value_size])
            i += 1
        pipe.execute()
    return int(r.dbsize())


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_redis", description=__doc__.split("\n\n")[0])
    p.add_argument("--gb", type=float, default=1.0, help="GiB of used memory to fill the server with (default 1)")
    p.add_argument("--value-size", type=int, default=512)
    p.add_argument(
        "--values",
        choices=["populate", "random"],
        default="populate",
        help="DEBUG POPULATE's compressible values (default) or incompressible random ones",
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating raw/ours rounds (default 3)")
    p.add_argument("--bgsave", action="store_true", help="also time our BGSAVE-and-copy path")
    p.add_argument("--restore", action="store_true", help="also time a verified restore into a fresh server")
    args = p.parse_args(argv)
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    out: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-redis-")))
        (work / "src").mkdir()
        port = free_port()
        stack.enter_context(
            scratch_server(
                work / "src", port=port, extra_args=["--enable-debug-command", "yes", "--repl-diskless-sync-delay", "0"]
            )
        )
        settings = RedisSettings(host="127.0.0.1", port=port)
        r = redis.Redis(port=port, protocol=2)
        t = time.monotonic()
        keys = (fill_random if args.values == "random" else fill)(r, args.gb, args.value_size)
        used = r.info("memory")["used_memory"]
        print(f"filled {keys} keys, used_memory {mib(used)} in {time.monotonic() - t:.1f} s")
        out.update(keys=keys, used_memory=used)

        raw_file = work / "raw.rdb"
        repo = Repository.local(work / "repo")
        raws, ours = [], []
        for _ in range(args.rounds):
            t = time.monotonic()
            subprocess.run(["redis-cli", "-p", str(port), "--rdb", str(raw_file)], check=True, capture_output=True)
            raws.append(time.monotonic() - t)
            print(f"raw   redis-cli --rdb         {raws[-1]:7.2f} s   RDB {mib(raw_file.stat().st_size)}")
            out.update(rdb_bytes=raw_file.stat().st_size)
            raw_file.unlink()

            t = time.monotonic()
            backup = backup_snapshot(settings, repo, day, mode="network")
            ours.append(time.monotonic() - t)
            m = backup.metadata
            assert m["keys_total"] == keys, (m["keys_total"], keys)
            print(
                f"ours  backup_snapshot network {ours[-1]:7.2f} s   stored {mib(backup.stored_size)} (zstd)   "
                f"transfer+helper {m['transfer_duration_s']:.2f} s, scratch digest {m['digest_duration_s']:.2f} s "
                f"({m['digest_method']})"
            )
        raw_s, ours_s = statistics.median(raws), statistics.median(ours)
        print(f"ratio ours/raw {ours_s / raw_s:.2f} (medians of {args.rounds}; target <= 1.2)")
        out.update(
            raw_s=[round(x, 2) for x in raws],
            ours_s=[round(x, 2) for x in ours],
            stored_bytes=backup.stored_size,
            ratio=round(ours_s / raw_s, 2),
            digest_method=m["digest_method"],
        )

        if args.bgsave:
            t = time.monotonic()
            b2 = backup_snapshot(settings, repo, day, mode="bgsave", data_dir=str(work / "src"))
            s = time.monotonic() - t
            print(f"ours  backup_snapshot bgsave  {s:7.2f} s   transfer {b2.metadata['transfer_duration_s']:.2f} s")
            out.update(bgsave_s=round(s, 2), bgsave_transfer_s=b2.metadata["transfer_duration_s"])
            backup = b2

        if args.restore:
            (work / "dst").mkdir()
            dport = free_port()
            stack.enter_context(scratch_server(work / "dst", port=dport))
            t = time.monotonic()
            res = restore_snapshot(RedisSettings(host="127.0.0.1", port=dport), repo, backup)
            s = time.monotonic() - t
            print(f"restore (DUMP/RESTORE + verify) {s:7.2f} s for {res.keys_verified} keys")
            out.update(restore_s=round(s, 2))

        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(f"peak RSS: this process {mib(self_rss)}; largest finished child {mib(child_rss)}")
        out.update(peak_rss_self=self_rss, peak_rss_child=child_rss, cpus=os.cpu_count())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Encryption at rest: the same backups with and without AES-256-GCM, in the same run.

    python -m bench.bench_encryption [--scale 30] [--synthetic-mb 1024] [--rounds 3] [--skip-postgres]

1. A synthetic stream (~1 GB by default) of bid/auction records with realistic compressibility
   (zstd -3 shrinks it about 4x), written into a repository and read back with deep verification.
2. `backup_logical` of a pgbench database (scale 30 ≈ 460 MB, built by bench_postgres if missing).

Each case alternates plain and encrypted runs (`--rounds` each) so that cache and disk effects
hit both alike. Ratios use the best run of each (noise on a shared 2-core machine only ever
adds time; the WAL receiver and workload of the stack may be running); medians are shown too.
Set BENCH_TMP=/dev/shm to take the disk out of the comparison. Target: encrypted / plain <= 1.1x.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable

from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.keys import Key
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.streams import CHUNK
from auction_backup_pipelines.settings import PostgresSettings

from .bench_postgres import ensure_pgbench_db
from .common import report

DAY = dt.date(2026, 1, 1)


def synthetic_block(mb: int = 64, seed: int = 7) -> bytes:
    """Bid records as a dump would hold them: ids, amounts, timestamps, a few repeated words."""
    rnd = random.Random(seed)
    words = ["bid", "outbid", "reserve_met", "watch", "autobid", "closed", "paid", "shipped"]
    rows, size = [], 0
    t = 1_760_000_000_000
    while size < mb << 20:
        t += rnd.randint(1, 900)
        row = (
            f"{rnd.randint(1, 10**9)}\t{rnd.randint(1, 200_000)}\t{rnd.randint(1, 5_000_000)}\t"
            f"{rnd.randint(100, 10**7) / 100:.2f}\t{t}\t{rnd.choice(words)}\t{rnd.getrandbits(64):016x}\n"
        )
        rows.append(row)
        size += len(row)
    return "".join(rows).encode()


def _write_and_read(root: str, encryption: Encryption | None, block: bytes, total: int) -> tuple[float, float, int]:
    repo = Repository.local(root, encryption=encryption)
    t = time.perf_counter()
    with repo.begin("bench", "synthetic", DAY) as w:
        with w.open_file("stream.bin") as f:
            view = memoryview(block)
            for _ in range(total // len(block)):
                for off in range(0, len(block), CHUNK):
                    f.write(view[off : off + CHUNK])
    wrote = time.perf_counter() - t
    t = time.perf_counter()
    repo.verify(w.committed, deep=True)  # type: ignore[arg-type]
    return wrote, time.perf_counter() - t, w.committed.stored_size  # type: ignore[union-attr]


def _alternate(rounds: int, run: Callable[[Encryption | None], dict]) -> dict[str, list[dict]]:
    enc = Encryption([Key.generate("bench")])
    out: dict[str, list[dict]] = {"plain": [], "encrypted": []}
    for i in range(rounds):
        order = [("plain", None), ("encrypted", enc)] if i % 2 == 0 else [("encrypted", enc), ("plain", None)]
        for name, e in order:
            out[name].append(run(e))
    return out


def bench_synthetic(mb: int, rounds: int) -> None:
    block = synthetic_block(64)
    total = max(1, mb // 64) * len(block)

    def run(enc: Encryption | None) -> dict:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            w, r, stored = _write_and_read(os.path.join(tmp, "repo"), enc, block, total)
        return {"write": w, "read": r, "stored": stored}

    res = _alternate(rounds, run)
    best, med = _summaries(res, ("write", "read", "stored"))
    p, e = best["plain"], best["encrypted"]
    report(
        f"synthetic stream {total / 2**20:.0f} MiB (zstd -3 -> {p['stored'] / 2**20:.0f} MiB), best of {rounds}",
        [
            ("write plain / encrypted (s)", f"{p['write']:.2f} / {e['write']:.2f}"),
            ("write ratio (target <= 1.1)", f"{e['write'] / p['write']:.3f}x"),
            ("write ratio, medians", f"{med['encrypted']['write'] / med['plain']['write']:.3f}x"),
            ("deep verify plain / encrypted (s)", f"{p['read']:.2f} / {e['read']:.2f}"),
            ("read ratio (target <= 1.1)", f"{e['read'] / p['read']:.3f}x"),
            ("read ratio, medians", f"{med['encrypted']['read'] / med['plain']['read']:.3f}x"),
            (
                "write throughput plain / encrypted (MiB/s)",
                f"{total / 2**20 / p['write']:.0f} / {total / 2**20 / e['write']:.0f}",
            ),
        ],
    )


def _summaries(res: dict[str, list[dict]], fields: tuple[str, ...]) -> tuple[dict, dict]:
    best = {k: {m: min(x[m] for x in v) for m in fields} for k, v in res.items()}
    med = {k: {m: statistics.median(x[m] for x in v) for m in fields} for k, v in res.items()}
    return best, med


def bench_cipher(mb: int = 256) -> None:
    """The cipher alone, to tell its cost from the noise: seal and open `mb` MiB in 1 MiB segments."""
    import io

    class Discard(io.RawIOBase):
        def write(self, b) -> int:  # type: ignore[override]
            return len(b)

    enc = Encryption([Key.generate("bench")])
    data = os.urandom(1 << 20)
    t = time.perf_counter()
    w = enc.encrypting(Discard(), "k")  # type: ignore[arg-type]
    for _ in range(mb):
        w.write(data)
    w.finish()
    seal = time.perf_counter() - t
    sealed = io.BytesIO()
    w = enc.encrypting(sealed, "k")
    for _ in range(mb):
        w.write(data)
    w.finish()
    sealed.seek(0)
    t = time.perf_counter()
    r = enc.decrypting(sealed, "k")
    while r.read(128 << 10):  # the read size the zstd decompressor asks for
        pass
    opened = time.perf_counter() - t
    report(
        f"cipher alone ({mb} MiB, AES-256-GCM, 1 MiB segments)",
        [
            ("seal / open (MiB/s)", f"{mb / seal:.0f} / {mb / opened:.0f}"),
        ],
    )


def bench_postgres(scale: int, rounds: int) -> None:
    s = PostgresSettings.from_env()
    db = ensure_pgbench_db(s, scale)
    target = dataclasses.replace(s, dbname=db)

    def run(enc: Encryption | None) -> dict:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
            repo = Repository.local(os.path.join(tmp, "repo"), encryption=enc)
            t = time.perf_counter()
            b = pg.backup_logical(target, repo, DAY, checksums=False)
            wall = time.perf_counter() - t
            t = time.perf_counter()
            repo.verify(b, deep=True)
            return {"wall": wall, "read": time.perf_counter() - t, "stored": b.stored_size, "raw": b.size}

    res = _alternate(rounds, run)
    best, med = _summaries(res, ("wall", "read", "stored", "raw"))
    p, e = best["plain"], best["encrypted"]
    report(
        f"backup_logical of {db} (dump {p['raw'] / 2**20:.0f} MiB -> {p['stored'] / 2**20:.0f} MiB), best of {rounds}",
        [
            ("backup plain / encrypted (s)", f"{p['wall']:.2f} / {e['wall']:.2f}"),
            ("backup ratio (target <= 1.1)", f"{e['wall'] / p['wall']:.3f}x"),
            ("backup ratio, medians", f"{med['encrypted']['wall'] / med['plain']['wall']:.3f}x"),
            ("deep verify plain / encrypted (s)", f"{p['read']:.2f} / {e['read']:.2f}"),
            ("read ratio (target <= 1.1)", f"{e['read'] / p['read']:.3f}x"),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=30)
    parser.add_argument("--synthetic-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    bench_cipher()
    bench_synthetic(args.synthetic_mb, args.rounds)
    if not args.skip_postgres:
        bench_postgres(args.scale, args.rounds)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")

"""The fast Redis restore for an empty or stopped server: put the snapshot's RDB in its data
directory and let redis-server load it, instead of copying every key with DUMP/RESTORE.

Why: a logical restore costs a DUMP, a RESTORE and a read-back per key (about 14x the time a
redis-server takes to load the same RDB, measured on 890 k keys); loading the file is what
Redis does fastest. The procedure is the classic one (replace the data file, start the
server), with the checks a restore of ours owes:

1. `place_snapshot` refuses a directory a redis-server works in (it would overwrite the file
   when it exits), one holding an AOF (Redis would load that instead), and an existing
   non-empty RDB unless `force` (the old file is then kept aside). It streams the stored file
   (decrypted, decompressed) into a temp file beside the target; the repository proves at the
   end of the stream that these are the captured bytes (sha256 of the stored and of the
   original bytes, recorded in the manifest), the very bytes the manifest's facts were
   computed from. Only then is it fsynced and renamed: a corrupt snapshot leaves no
   `dump.rdb` behind and the directory as it was. With `recompute` the `rdb-facts` helper also
   reads the bytes as they stream and its facts are compared with the manifest's
   (`compare_facts`, as every restore does) before the rename; it costs about as much CPU as
   the server's load (without the helper, or for keys it cannot decode, a scratch server
   reads the file: `snapshot_facts`).
2. `check_loaded` waits for the server started on that directory (INFO persistence
   loading:0), then compares its keyspace with the manifest's facts: it works in that
   directory, per db its keys without TTL are the recorded ones and its keys with a TTL at
   most those, and the recorded keys expiring later than now are all there. With `deep` it
   reads every key back and compares it with the manifest, as the DUMP/RESTORE path does
   (about 10 µs of CPU a key).
3. `place_and_start` does both with a scratch server, for tests, drills and the benchmark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from auction_backup_pipelines.redis import rdb_facts
from auction_backup_pipelines.redis.capture import Captured
from auction_backup_pipelines.redis.client import (
    CHUNK,
    RDB_FILE,
    SNAPSHOT,
    SYSTEM,
    RedisBackupError,
    RestoreRefused,
    VerificationError,
    server_time_ms,
)
from auction_backup_pipelines.redis.facts import (
    BUCKET_MS,
    Facts,
    collect_facts,
    compare_facts,
    dbs_with_keys,
    snapshot_facts,
    unique_batches,
)
from auction_backup_pipelines.redis.resp import Runner
from auction_backup_pipelines.redis.scratch import ScratchServer, scratch_dir, scratch_server, servers_in
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


@dataclass(frozen=True)
class PlacedSnapshot:
    """An RDB placed in a data directory, whose bytes were proved to hold what the manifest records."""

    backup: str  # the backup's prefix in the repository
    placed: str  # the file written
    previous_kept_as: str | None  # with force: where the old file went
    bytes: int
    keys_recorded: int  # in the manifest
    content_check: str  # "sha256" (the bytes are the captured ones), or how the facts were recomputed
    keys_in_file: int | None  # recomputed: keys not yet expired when the file was read
    digest: str | None  # recomputed: their content digest (equal to the manifest's for the same keys)
    volatile_expired: int | None  # recomputed: keys with a TTL that expired since the snapshot
    duration_s: float
    expected: Facts = dataclasses.field(repr=False, compare=False)  # the manifest's

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict in declaration order (without the raw facts), for metadata and JSON."""
        d = dataclasses.asdict(self)
        del d["expected"]
        return d


@dataclass(frozen=True)
class LoadedCheck:
    """What the server started on the placed file proved: it loaded exactly that file's keyspace."""

    target: str
    keys_loaded: int
    load_wait_s: float  # from the first probe until INFO persistence said loading:0
    deep: bool  # every key read back and compared with the manifest
    keys_verified: int  # with deep: keys compared; else keys counted per db

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict in declaration order, for metadata and JSON."""
        return dataclasses.asdict(self)


def _check_kind(backup: Backup) -> None:
    """One server's RDB only: the manifest's facts describe the whole backup, so a cluster
    node's file alone could not be compared with them."""
    mode = backup.metadata.get("mode")
    if (backup.system, backup.artifact) != (SYSTEM, SNAPSHOT):
        raise RedisBackupError(f"{backup.prefix} is not a Redis snapshot")
    if mode == "aof":
        raise RedisBackupError(f"{backup.prefix} is an AOF copy, not an RDB: restore it with --target (DUMP/RESTORE)")
    if mode == "cluster":
        raise RedisBackupError(
            f"{backup.prefix} is a cluster backup: restore it with --target (DUMP/RESTORE), which checks the whole "
            "cluster against the manifest (redis/restore.py place_rdb places one master's file, unchecked)"
        )


def check_directory(folder: Path, dbfilename: str = RDB_FILE, force: bool = False) -> Path | None:
    """Refuse a directory the file must not be placed in; returns the existing file to keep aside (force)."""
    if not folder.is_dir():
        raise RestoreRefused(f"data dir {folder} does not exist or is not a directory; nothing was changed")
    if pids := servers_in(folder):
        raise RestoreRefused(
            f"redis-server (pid {', '.join(map(str, pids))}) is running in {folder}; stop it first "
            "(it would overwrite the file on exit). Nothing was changed"
        )
    if any(folder.glob("appendonlydir*")) or any(folder.glob("*.aof")):
        raise RestoreRefused(f"{folder} holds an AOF, which Redis loads instead of {dbfilename}; move it away first")
    final = folder / dbfilename
    if final.exists() and final.stat().st_size > 0:
        if not force:
            raise RestoreRefused(
                f"{final} exists and is not empty; nothing was changed. Pass --force to replace it (the old file is kept aside)"
            )
        return final
    return None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_facts(tmp: Path, doc: dict[str, Any] | None, problem: str, now_ms: int, databases: int) -> tuple[Facts, str]:
    """The helper's facts, completed (streams) or replaced (no helper) by a scratch server on a link to `tmp`."""
    if doc is not None and not doc["undecoded"]:
        return Facts.from_rdb_facts(doc, now_ms), "rdb-facts"
    with scratch_dir("place-") as folder:
        try:
            os.link(tmp, folder / RDB_FILE)
        except OSError:  # another file system than the data dir's
            shutil.copyfile(tmp, folder / RDB_FILE)
        return snapshot_facts(Captured(folder, captured_ms=now_ms, rdb_facts=doc, rdb_facts_problem=problem), databases)


def place_snapshot(
    repo: Repository,
    backup: Backup,
    data_dir: str | os.PathLike[str],
    *,
    dbfilename: str = RDB_FILE,
    force: bool = False,
    recompute: bool = False,
    ttl_tolerance_ms: int = 1000,
) -> PlacedSnapshot:
    """Write the backup's RDB into the data directory of a stopped Redis, proved, atomically.

    See the module docstring for the refusals and the order; start redis-server on the
    directory afterwards (appendonly no) and call `check_loaded`. The bytes are always proved
    to be the captured ones (sha256 recorded in the manifest), whose facts the manifest holds;
    `recompute` also derives the facts from the file again and compares them before the rename.
    """
    started = time.monotonic()
    _check_kind(backup)
    folder = Path(data_dir)
    kept_from = check_directory(folder, dbfilename, force)
    catalog.check_manifest(repo, backup)  # the manifest first; the file's bytes are checked as they stream
    try:
        expected = Facts.from_json(backup.metadata["content"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(
            f"backup {backup.prefix} records no usable content facts ({type(exc).__name__}); refused"
        ) from None
    databases = int(backup.metadata.get("source", {}).get("databases", 16))
    tmp = folder / f".{dbfilename}.restoring-{os.getpid()}"
    final = folder / dbfilename
    kept = None
    size = 0
    try:
        now_ms = int(time.time() * 1000)
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(rdb_facts.streaming(BUCKET_MS, now_ms)) if recompute else None
            src = stack.enter_context(repo.open(backup, RDB_FILE))  # IntegrityError at the end if a byte differs
            out = stack.enter_context(open(tmp, "wb"))
            while block := src.read(CHUNK * 4):
                out.write(block)
                if sink is not None:
                    sink.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
            doc = sink.result() if sink is not None else None
        actual: Facts | None = None
        method, summary = "sha256", dict[str, int]()
        if sink is not None:
            actual, method = _file_facts(tmp, doc, sink.problem, now_ms, databases)
            problems, summary = compare_facts(
                expected, actual, (now_ms - ttl_tolerance_ms, now_ms + ttl_tolerance_ms), ttl_tolerance_ms
            )
            if problems:
                raise VerificationError(
                    f"the RDB of {backup.prefix} does not hold what its manifest records; nothing was placed: "
                    + "; ".join(problems[:5])
                )
        if kept_from is not None:
            kept = kept_from.with_name(f"{dbfilename}.before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}")
            os.replace(kept_from, kept)
        os.replace(tmp, final)
        _fsync_dir(folder)
    except OSError as exc:
        raise RedisBackupError(f"cannot write {final}: {exc.strerror or exc}; nothing was placed") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return PlacedSnapshot(
        backup=backup.prefix,
        placed=str(final),
        previous_kept_as=str(kept) if kept else None,
        bytes=size,
        keys_recorded=expected.keys,
        content_check=method,
        keys_in_file=actual.keys if actual else None,
        digest=f"{actual.digest:016x}" if actual else None,
        volatile_expired=summary.get("volatile_expired"),
        duration_s=round(time.monotonic() - started, 3),
        expected=expected,
    )


def wait_loaded(r: redis.Redis, where: str, timeout: float) -> float:
    """Poll until the server answers and INFO persistence says loading:0; the seconds waited.

    Polled every 20 ms at most: INFO costs the server nothing, and a coarser poll would add up
    to its period to every restore's measured time."""
    t0 = time.monotonic()
    deadline, pause = t0 + timeout, 0.01
    while True:
        try:
            if not int(r.info("persistence").get("loading", 0)):
                return time.monotonic() - t0
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError, FileNotFoundError):
            pass  # not listening yet, or still loading
        if time.monotonic() > deadline:
            raise VerificationError(f"Redis at {where} did not finish loading within {timeout:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def check_loaded(
    r: redis.Redis,
    placed: PlacedSnapshot,
    where: str,
    *,
    deep: Callable[[int], Runner] | None = None,
    timeout: float = 1800.0,
    ttl_tolerance_ms: int = 1000,
) -> LoadedCheck:
    """Wait for the server `r` reaches (started on the placed file) to load, then prove it holds that file.

    Checked against the manifest's facts: the server works in the placed file's directory
    (when CONFIG is allowed); per db, its keys without TTL equal the recorded ones and its keys
    with a TTL are at most the recorded ones; in all, at least the recorded keys whose expiry
    bucket starts after now are there. With `deep` (a runner on the server for a db), every
    key is read back through it and compared with the manifest too.
    """
    try:
        waited = wait_loaded(r, where, timeout)
        placed_path = Path(placed.placed)
        with contextlib.suppress(redis.ResponseError):  # CONFIG may be renamed or denied in production
            dir_: Any = next(iter(r.config_get("dir").values()), None)
            dir_ = dir_.decode() if isinstance(dir_, bytes) else dir_
            if dir_ and os.path.realpath(dir_) != os.path.realpath(placed_path.parent):
                raise VerificationError(f"Redis at {where} works in {dir_}, not in {placed_path.parent} where the RDB was placed")
        loaded = {int(k[2:]): v for k, v in r.info("keyspace").items() if isinstance(v, dict)}
        now_ms = server_time_ms(r)
        problems = []
        recorded: dict[int, tuple[int, int]] = {}
        for (db, _kind, volatile), n in placed.expected.counts.items():
            p, v = recorded.get(db, (0, 0))
            recorded[db] = (p, v + n) if volatile else (p + n, v)
        for db in sorted(set(recorded) | set(loaded)):
            p, v = recorded.get(db, (0, 0))
            keys, expires = int(loaded.get(db, {}).get("keys", 0)), int(loaded.get(db, {}).get("expires", 0))
            if keys - expires != p:
                problems.append(f"db{db}: {keys - expires} keys without TTL loaded, the backup recorded {p}")
            if expires > v:
                problems.append(f"db{db}: {expires} keys with a TTL loaded, the backup recorded {v}")
        due = sum(b[0] for start, b in placed.expected.buckets.items() if start > now_ms + ttl_tolerance_ms)
        if (have := sum(int(v.get("expires", 0)) for v in loaded.values())) < due:
            problems.append(f"{have} keys with a TTL loaded, but {due} recorded ones expire later than now")
        if problems:
            raise VerificationError(f"Redis at {where} did not load the placed RDB: " + "; ".join(problems[:5]))
        total = sum(int(v.get("keys", 0)) for v in loaded.values())
        verified = total
        if deep is not None:
            verified = _deep_compare(r, placed, where, deep, ttl_tolerance_ms)
    except redis.RedisError as exc:
        raise VerificationError(f"Redis at {where}: {exc}") from None
    return LoadedCheck(
        target=where, keys_loaded=total, load_wait_s=round(waited, 3), deep=deep is not None, keys_verified=verified
    )


def _deep_compare(r: redis.Redis, placed: PlacedSnapshot, where: str, runner: Callable[[int], Runner], tolerance: int) -> int:
    """Every key of the server read back and compared with the manifest, as the DUMP/RESTORE path does."""
    actual = Facts(placed.expected.bucket_ms)
    t_lo = server_time_ms(r)
    for db in dbs_with_keys(r):
        run = runner(db)
        collect_facts(actual, db, run, unique_batches(run))
    t_hi = server_time_ms(r)
    problems, _ = compare_facts(placed.expected, actual, (t_lo - tolerance, t_hi + tolerance), tolerance)
    if problems:
        raise VerificationError(f"Redis at {where} does not match the manifest after loading: " + "; ".join(problems[:5]))
    return actual.keys


@contextlib.contextmanager
def place_and_start(
    repo: Repository, backup: Backup, data_dir: str | os.PathLike[str], *, force: bool = False, deep: bool = False
) -> Iterator[tuple[PlacedSnapshot, LoadedCheck, ScratchServer]]:
    """Place the snapshot in `data_dir`, start a scratch redis-server on it and check what it loaded
    (with `deep`: the file's facts recomputed before the rename, and every key read back).

    For tests, restore drills and the benchmark: the server persists nothing and stops on exit.
    """
    placed = place_snapshot(repo, backup, data_dir, force=force, recompute=deep)
    databases = int(backup.metadata.get("source", {}).get("databases", 16))
    with scratch_server(Path(data_dir), databases=databases) as srv:
        check = check_loaded(
            srv.client(), placed, f"scratch server on {data_dir}", deep=(lambda db: srv.bulk(db).run) if deep else None
        )
        yield placed, check, srv

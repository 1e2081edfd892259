"""Putting a Redis snapshot back, and proving what was written.

`restore_snapshot` is logical: every file is read back through the repository (sha256
checked), loaded into a scratch server, and each key copied with DUMP + RESTORE … ABSTTL into
the target (a cluster target through RedisCluster, so each key reaches the node owning its
slot); the target is then compared with the manifest's facts. Into a standalone server, the
native redis-load helper does the copy and the read-back instead, from the RDB itself and
several times faster (restore_native.py). `place_rdb` is the physical
alternative for a stopped server. `loaded_servers` (a backup in scratch servers, one at a time)
also serves the verification.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from auction_backup_pipelines.redis import restore_native, tls
from auction_backup_pipelines.redis.client import (
    CHUNK,
    RDB_FILE,
    SNAPSHOT,
    SYSTEM,
    RedisBackupError,
    RestoreRefused,
    VerificationError,
    connect,
    connect_cluster,
    explain,
    server_time_ms,
)
from auction_backup_pipelines.redis.cluster import topology
from auction_backup_pipelines.redis.facts import Facts, collect_facts, compare_facts, dbs_with_keys, unique_batches
from auction_backup_pipelines.redis.resp import BulkConnection, Runner, check_reply, cluster_runner
from auction_backup_pipelines.redis.scratch import ScratchServer, scratch_dir, scratch_server, servers_in
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import RedisSettings


def backup_layouts(backup: Backup) -> list[tuple[str, list[str], tuple[str, str] | None]]:
    """(folder name, files, aof) for each server the backup's files make up."""
    m = backup.metadata
    if m.get("mode") == "aof":
        aof = m["aof"]
        return [("aof", [aof["manifest"], *aof["files"]], (aof["appenddirname"], aof["appendfilename"]))]
    if m.get("mode") == "cluster":
        return [(n["file"][:-4], [n["file"]], None) for n in m["cluster"]["nodes"]]
    return [("rdb", [RDB_FILE], None)]


def materialize(repo: Repository, backup: Backup, folder: Path, files: list[str], aof: tuple[str, str] | None) -> None:
    """Write files of the backup into `folder` as a server expects them; each read is sha256-checked."""
    folder.mkdir()
    target = folder / aof[0] if aof else folder
    target.mkdir(exist_ok=True)
    for name in files:
        dest = target / name if aof else folder / RDB_FILE
        with repo.open(backup, name) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)


@contextlib.contextmanager
def loaded_servers(repo: Repository, backup: Backup, tmp: Path) -> Iterator[Generator[ScratchServer, None, None]]:
    """Scratch servers holding the backup, one after another (one node's memory at a time).

    Closing the generator on exit stops the current server even when the caller's loop failed.
    """
    databases = backup.metadata.get("source", {}).get("databases", 16)

    def servers() -> Generator[ScratchServer, None, None]:
        for name, files, aof in backup_layouts(backup):
            folder = tmp / name
            materialize(repo, backup, folder, files, aof)
            try:
                with scratch_server(folder, databases=databases, aof=aof) as srv:
                    yield srv
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    gen = servers()
    try:
        yield gen
    finally:
        gen.close()


def copy_keys(src: Runner, dst: Runner, batches: Iterable[list[bytes]], replace: bool) -> int:
    """DUMP each key through `src` and RESTORE it through `dst`, keeping its absolute expiry time."""
    copied = 0
    for keys in batches:
        res = src([c for k in keys for c in (("PEXPIRETIME", k), ("DUMP", k))])
        restores = []
        for k, expire_at, payload in zip(keys, res[0::2], res[1::2]):
            if check_reply(expire_at) == -2 or check_reply(payload) is None:
                continue  # expired since the scan
            restores.append(("RESTORE", k, max(expire_at, 0), payload, "ABSTTL", *(("REPLACE",) if replace else ())))
        for reply in dst(restores) if restores else []:
            if isinstance(reply, Exception) and "BUSYKEY" in str(reply):
                raise RestoreRefused(
                    f"a key of the backup appeared in the target during the restore ({reply}); "
                    "someone else is writing to it. Pass --force to overwrite such keys"
                )
            check_reply(reply)
        copied += len(restores)
    return copied


def _key_counts(target: Any, cluster: bool) -> dict[str, int]:
    """Keys per master of a cluster, or per db of a server."""
    if cluster:
        return {f"{n.host}:{n.port}": int(target.get_redis_connection(n).dbsize()) for n in target.get_primaries()}
    return {f"db{db}": int(v["keys"]) for db, v in ((k[2:], v) for k, v in target.info("keyspace").items()) if v.get("keys")}


@dataclass(frozen=True)
class RedisRestoreResult:
    """What a restore wrote and proved: the target holds the backup's keys, as its manifest records them."""

    backup: str  # the backup's prefix in the repository
    target: str  # host:port
    cluster_target: bool
    keys_restored: int
    keys_verified: int
    digest: str  # content digest of the verified keys, equal to the manifest's
    copied_by: str  # "redis-load" (the native helper, restore_native.py) or "python"
    keys_kept_from_before: int  # with force: keys of the target the backup did not have
    volatile_checked: int
    volatile_expired: int  # keys with a TTL that expired since the snapshot, as expected
    volatile_partly_expired: int
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict in declaration order, for metadata and JSON."""
        return dataclasses.asdict(self)


def _copy_and_read_back(
    repo: Repository,
    backup: Backup,
    r: redis.Redis,
    cluster: bool,
    force: bool,
    dst: Callable[[int], Runner],
    bulk: Callable[..., BulkConnection],
    actual: Facts,
) -> int:
    """The Python path of `restore_snapshot`: the backup into scratch servers, each key copied
    with DUMP/RESTORE, then read back into `actual`. Returns the keys copied."""
    copied = 0
    with scratch_dir() as tmp, loaded_servers(repo, backup, tmp) as servers:
        for srv in servers:
            for db in dbs_with_keys(srv.client()):
                src = srv.bulk(db).run
                copied += copy_keys(src, dst(db), unique_batches(src), replace=force)
                if force:  # the backup's keys, as the target now holds them
                    collect_facts(actual, db, dst(db), unique_batches(src))
    if not force:  # the whole target, which was empty: each master (or db) scanned on its own
        readers: list[tuple[int, Runner]]
        if cluster:
            readers = [(0, bulk(host=m["host"], port=m["port"]).run) for m in topology(r)]
        else:
            readers = [(db, dst(db)) for db in dbs_with_keys(r)]
        for db, run in readers:
            collect_facts(actual, db, run, unique_batches(run))
    return copied


def restore_snapshot(
    target: RedisSettings, repo: Repository, backup: Backup, force: bool = False, *, ttl_tolerance_ms: int = 1000
) -> RedisRestoreResult:
    """Load a snapshot into the Redis server or cluster `target` names, then prove it matches the manifest.

    Order, so a failure changes nothing it should not: check the backup's checksums; refuse a
    replica, a cluster target for keys outside db 0, a target lacking a db the backup uses,
    and a non-empty target unless `force`; then copy. Without `force` the target was empty
    and is compared whole; with `force` keys of the same name are overwritten, other keys are
    kept, and the backup's keys as found in the target are compared. The copy and the read-back
    run in the native redis-load helper when it can do them (restore_native.py), else here.
    """
    started = time.monotonic()
    if (backup.system, backup.artifact) != (SYSTEM, SNAPSHOT):
        raise RedisBackupError(f"{backup.prefix} is not a Redis snapshot")
    repo.verify(backup)  # integrity before any write
    expected = Facts.from_json(backup.metadata["content"])
    dbs = sorted({db for db, _, _ in expected.counts})
    where = f"{target.host}:{target.port}"
    r = connect(target)
    tls_context = tls.context(target)
    rc: RedisCluster | None = None
    conns: list[BulkConnection] = []
    runners: dict[int, Runner] = {}

    def bulk(db: int = 0, host: str = target.host, port: int = target.port) -> BulkConnection:
        conns.append(
            BulkConnection(host=host, port=port, db=db, username=target.username, password=target.password, tls=tls_context)
        )
        return conns[-1]

    def dst(db: int) -> Runner:
        if db not in runners:
            if rc is not None:
                raise RestoreRefused(f"the backup has keys in db {db}; a cluster at {where} has only db 0. Nothing was changed")
            try:
                runners[db] = bulk(db).run
            except RedisBackupError as exc:
                raise RestoreRefused(
                    f"Redis at {where} cannot select db {db}, which the backup uses ({exc}); nothing was changed"
                ) from None
        return runners[db]

    try:
        info = r.info()
        if info.get("role") != "master":
            raise RestoreRefused(f"Redis at {where} is a replica; restore into its master")
        cluster = bool(info.get("cluster_enabled"))
        if cluster:
            rc = connect_cluster(target)
            runners[0] = cluster_runner(rc)
        for db in dbs:
            dst(db)  # every refusal before the first write
        existing = _key_counts(rc or r, cluster)
        if sum(existing.values()) and not force:
            raise RestoreRefused(
                f"Redis at {where} is not empty ({existing}); nothing was changed. Restore into an empty "
                "server, or pass --force to overwrite keys of the same name (other keys are kept)"
            )
        t_lo = server_time_ms(r)
        actual = Facts(expected.bucket_ms)
        unexpected: list[str] = []
        helper = restore_native.usable(backup, backup_layouts(backup), cluster)
        if helper:
            with scratch_dir() as tmp:
                materialize(repo, backup, tmp / "rdb", [RDB_FILE], None)  # sha256-checked before any write
                copied, doc = restore_native.load(helper, target, tmp / "rdb" / RDB_FILE, expected.bucket_ms, force)
            actual = Facts.from_rdb_facts(doc, t_lo, expected.bucket_ms)
            unexpected = restore_native.keyspace_problems(doc, replaced=force)
        else:
            copied = _copy_and_read_back(repo, backup, r, cluster, force, dst, bulk, actual)
        t_hi = server_time_ms(r)
        problems, summary = compare_facts(expected, actual, (t_lo - ttl_tolerance_ms, t_hi + ttl_tolerance_ms), ttl_tolerance_ms)
        problems = unexpected + problems
        if problems:
            raise VerificationError(
                f"Redis at {where} does not match backup {backup.prefix} after the restore (it holds the "
                "restored keys; inspect them before relying on it): " + "; ".join(problems[:10])
            )
        after = _key_counts(rc or r, cluster)
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, target.host, target.port, target.username)) from None
    finally:
        for c in conns:
            c.close()
        if rc is not None:
            rc.close()
        r.close()
    return RedisRestoreResult(
        backup=backup.prefix,
        target=where,
        cluster_target=cluster,
        keys_restored=copied,
        keys_verified=actual.keys,
        digest=f"{actual.digest:016x}",
        copied_by=restore_native.HELPER if helper else "python",
        keys_kept_from_before=max(0, sum(after.values()) - actual.keys) if force else 0,
        **summary,
        duration_s=round(time.monotonic() - started, 3),
    )


def place_rdb(
    repo: Repository,
    backup: Backup,
    data_dir: str | os.PathLike[str],
    *,
    node: str | None = None,
    dbfilename: str = RDB_FILE,
    force: bool = False,
) -> dict[str, Any]:
    """Put a backup's RDB into the data dir of a *stopped* Redis, atomically (temp file, fsync, rename).

    Start redis-server on that dir afterwards (with appendonly no, or Redis would load an AOF
    instead) and it loads the snapshot. Refused while a redis-server works in that dir, when
    the dir holds an AOF, and, without `force`, over an existing file (with `force` the old
    file is kept as `<name>.before-restore-<time>`). For a cluster backup, `node` ("host:port")
    picks the master's file.
    """
    repo.verify(backup)
    folder = Path(data_dir)
    if backup.metadata.get("mode") == "aof":
        raise RedisBackupError(f"{backup.prefix} is an AOF copy, not an RDB; use restore_snapshot")
    if backup.metadata.get("mode") == "cluster":
        files = {f"{n['host']}:{n['port']}": n["file"] for n in backup.metadata["cluster"]["nodes"]}
        if node not in files:
            raise RedisBackupError(f"{backup.prefix} is a cluster backup: name the node, one of {sorted(files)}")
        name = files[node]
    else:
        name = RDB_FILE
    if not folder.is_dir():
        raise RedisBackupError(f"data dir {folder} does not exist")
    if pids := servers_in(folder):
        raise RestoreRefused(
            f"redis-server (pid {pids}) is running in {folder}; stop it first (it would overwrite the file on exit)"
        )
    if any(folder.glob("appendonlydir*")) or any(folder.glob("*.aof")):
        raise RestoreRefused(f"{folder} holds an AOF, which Redis loads instead of {dbfilename}; move it away first")
    final = folder / dbfilename
    kept = None
    if final.exists():
        if not force:
            raise RestoreRefused(f"{final} exists; nothing was changed. Pass force to replace it (the old file is kept aside)")
        kept = final.with_name(f"{dbfilename}.before-restore-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}")
    tmp = folder / f".{dbfilename}.restoring-{os.getpid()}"
    try:
        with repo.open(backup, name) as src, open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if kept:
            os.replace(final, kept)
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return {"backup": backup.prefix, "placed": str(final), "previous_kept_as": str(kept) if kept else None}

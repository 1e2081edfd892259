"""A Redis restore's copy and read-back in the native `redis-load` helper (native/rdb-facts).

Why a native helper: the Python path (restore.py) loads the snapshot into a scratch server,
DUMPs every key from it, RESTOREs it into the target and reads it back, each key passing
through Python's RESP packing and parsing three times: 6-11x the time `redis-cli --pipe` takes
to feed the same RESTORE commands. `redis-load` reads the snapshot itself, streams its keys to
the target over one pipelined connection, reads each batch of keys back right after writing it
into the same facts `facts.collect_facts` computes, and ends with INFO keyspace; the
comparison with the manifest, and `keyspace_problems`, stay here.

It takes the common case: a standalone target (with TLS too, verified as restore.py's own
connections verify it: the CA, the host name, a client certificate if configured), from a
snapshot of one RDB file whose every key rdb-facts decoded when it was taken (`digest_method`
"rdb-facts": no streams or module values). Into an empty target (no `--force`) its keyspace at the end must be exactly the
keys read back; with `--force` keys of the same name are replaced (RESTORE ... REPLACE, MSET),
the others kept, and the backup's keys as read back are what is compared, as in restore.py.
Everything else, or a missing helper, takes the Python path, which gives the same result.

The RDB is first copied out of the repository into a private scratch folder and checked
against its sha256, as the Python path does before its scratch server starts: nothing is
written to the target from bytes that were not proven. The job, password included, goes to
the helper's stdin: never into its argv or environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from auction_backup_pipelines import native
from auction_backup_pipelines.redis.client import RDB_FILE, RedisBackupError, RestoreRefused
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.settings import RedisSettings

HELPER = "redis-load"
TIMEOUT_S = 60.0  # one reply may take this long (a large key's RESTORE) before the helper gives up
BUSY_EXIT = 3
NOT_CONNECTED_EXIT = 4


def helper_path() -> str | None:
    return native.helper_path(HELPER)


def usable(backup: Backup, layouts: list[tuple[str, list[str], tuple[str, str] | None]], cluster: bool) -> str | None:
    """The helper's path when it can do this restore, else None (the Python path does it).
    `layouts`: restore.backup_layouts(backup); the helper takes one server's RDB file."""
    if cluster or backup.metadata.get("digest_method") != "rdb-facts" or layouts != [("rdb", [RDB_FILE], None)]:
        return None
    return helper_path()


def load(path: str, target: RedisSettings, rdb: Path, bucket_ms: int, replace: bool) -> tuple[int, dict[str, Any]]:
    """Write the keys of the local, verified RDB `rdb` into `target` (empty, or with `replace`
    over same-named keys), reading each back: (keys written, the helper's result: the facts of
    what it read back, for `Facts.from_rdb_facts`, and the `keyspace` counts `keyspace_problems`
    judges)."""
    where = f"{target.host}:{target.port}"
    job = {
        "host": target.host,
        "port": target.port,
        "username": target.username,
        "password": target.password,
        "rdb": str(rdb),
        "bucket_ms": bucket_ms,
        "timeout_s": TIMEOUT_S,
        "replace": replace,
        "tls": {"ca_file": target.tls_ca_file, "cert_file": target.tls_cert_file, "key_file": target.tls_key_file}
        if target.tls
        else None,
    }
    out: list[bytes] = []

    def talk(stdin: IO[bytes], stdout: IO[bytes]) -> None:
        stdin.write(json.dumps(job).encode() + b"\n")
        stdin.close()
        out.append(stdout.read())

    partial = f"Redis at {where} may hold part of the backup: empty it before restoring again"
    rc, err = native.run_helper(path, talk, RedisBackupError, "nothing was changed")
    line = native.last_line(err)
    if rc == BUSY_EXIT:
        raise RestoreRefused(
            f"a key of the backup appeared in the target during the restore ({line}); "
            f"someone else is writing to it. Pass --force to overwrite such keys. {partial}"
        )
    if rc == NOT_CONNECTED_EXIT:
        raise RedisBackupError(f"{HELPER} could not connect to Redis at {where}: {line}; nothing was changed")
    if rc != 0:
        raise RedisBackupError(f"the restore into {where} failed: {line or f'{HELPER} exited with {rc}'}. {partial}")
    try:
        doc = json.loads(b"".join(out))
        return int(doc["keys_written"]), doc
    except (ValueError, KeyError, TypeError) as exc:
        raise RedisBackupError(f"{HELPER} wrote a result that cannot be read ({exc}). {partial}") from None


def keyspace_problems(doc: dict[str, Any], replaced: bool) -> list[str]:
    """What INFO keyspace at the end says against the keys read back, per db: keys nobody read
    back (someone else wrote them; with `replaced`, a --force restore, they are the target's
    own), or restored keys gone since (other than by their TTL). The helper reads back only
    the keys it wrote, so these counts stand in for a whole scan."""
    problems = []
    for db, (read_back, expired, at_end) in sorted(doc["keyspace"].items(), key=lambda x: int(x[0])):
        if at_end > read_back and not replaced:
            problems.append(
                f"db{db} holds {at_end - read_back} keys the backup does not have (written by someone else meanwhile)"
            )
        elif at_end < read_back - expired:
            problems.append(f"db{db}: {read_back - expired - at_end} restored keys were deleted after they were read back")
    return problems

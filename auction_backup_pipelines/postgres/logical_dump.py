"""PostgreSQL logical backups (pg_dump) and their restore, with proof of content.

A dump is taken inside one REPEATABLE READ transaction whose snapshot is exported to pg_dump
(`--snapshot`), so the row counts and content checksums we record for every table describe
exactly the data the dump holds, even while the platform keeps writing. The fingerprint scan
runs on that same connection while pg_dump streams; it is the dump's main extra cost, so new
dumps use the cheaper typed checksums (client.CHECKSUM_TYPED) and the manifest names the
function, which the restore's verification recomputes (text checksums for older manifests).

pg_dump 15 can compress the custom format only with gzip, which is the slowest part of a
dump; we ask it for an uncompressed stream (`-Z0`) and compress with zstd on our side, which
is faster and smaller (see bench/). Passwords reach pg_dump/pg_restore through PGPASSWORD in
their environment, never argv.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from auction_backup_pipelines.child_env import base_env
from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.postgres import parallel_restore, stage_native
from auction_backup_pipelines.postgres.client import (
    CHECKSUM_FUNCTIONS,
    CHECKSUM_TEXT,
    CHECKSUM_TYPED,
    SYSTEM,
    PostgresError,
    RestoreRefused,
    VerificationError,
    child_env,
    compare_fingerprints,
    connect,
    database_objects,
    drop_database,
    explain_tls,
    feed_stdin,
    pg_bin,
    row_counts,
    run_capturing_stderr,
    stderr_tail,
    table_fingerprints,
)
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import BackupWriter, Repository
from auction_backup_pipelines.settings import PostgresSettings

LOGICAL_DUMP = "logical_dump"
DUMP_FILE = "dump.pgc"
CHUNK = 1 << 20


@dataclass(frozen=True)
class LogicalRestoreResult:
    """What `restore_logical` wrote, after every table matched the backup's manifest."""

    target_db: str
    backup: str  # the backup's key prefix
    tables: int
    rows_total: int
    replaced_existing: bool
    staged_by: str  # "pg-stage", "pg-stage, streamed into one pg_restore job (why)", or "copy" and why
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- backup --------------------------------------------------------------------------------------


def logical_dump(
    s: PostgresSettings,
    writer: BackupWriter,
    checksums: bool = True,
    conn: psycopg.Connection | None = None,
    checksum_function: str = CHECKSUM_TYPED,
) -> dict[str, Any]:
    """Stream `pg_dump -Fc` of the database into `writer` and return the manifest metadata.

    `conn`: an open autocommit connection to the database, which this takes over and closes
    (saves a second connection set-up, a fixed cost that shows on small databases); `None`
    connects. `checksum_function`: one of client.CHECKSUM_FUNCTIONS, recorded in the manifest."""
    started = time.monotonic()
    if checksums and checksum_function not in CHECKSUM_FUNCTIONS:
        raise PostgresError(f"unknown content checksum function {checksum_function!r}")
    conn = conn if conn is not None else connect(s)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot, snapshot_time, lsn, server_version = conn.execute(
            "SELECT pg_export_snapshot(), now(), "
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text, "
            "current_setting('server_version')"
        ).fetchone()  # type: ignore[misc]
        argv = [
            pg_bin("pg_dump", s.bin_dir),
            "--format=custom",
            "--compress=0",
            f"--snapshot={snapshot}",
            "--no-password",
            s.dbname,
        ]
        proc, err = run_capturing_stderr(argv, child_env(s), stdout=subprocess.PIPE)
        # Fingerprints are computed in our snapshot while pg_dump streams: same data, in parallel.
        fingerprints: dict[str, Any] = {}
        failure: list[BaseException] = []

        def fingerprint() -> None:
            try:
                fingerprints.update(table_fingerprints(conn, checksum_function) if checksums else row_counts(conn))
            except BaseException as exc:  # reported after pg_dump ends
                failure.append(exc)

        worker = threading.Thread(target=fingerprint, name="pg-fingerprints")
        worker.start()
        try:
            with writer.open_file(DUMP_FILE) as out:
                assert proc.stdout is not None
                out.copy_from(proc.stdout)
                rc = proc.wait()
                if rc != 0:
                    tail = stderr_tail(err)
                    raise PostgresError(
                        explain_tls(tail, s) or f"pg_dump of {s.dbname!r} at {s.host}:{s.port} failed (exit {rc}): {tail}"
                    )
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            worker.join()
            err.close()
        if failure:
            raise PostgresError(f"could not fingerprint tables of {s.dbname!r}: {failure[0]}")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {
        "database": s.dbname,
        "server": f"{s.host}:{s.port}",
        "server_version": server_version,
        "snapshot_time": snapshot_time.astimezone(dt.UTC).isoformat(),
        "wal_lsn": lsn,
        "format": "custom",
        "tables": fingerprints,
        "rows_total": sum(t["rows"] for t in fingerprints.values()),
        "content_checksums": checksums,
        "checksum_function": checksum_function if checksums else None,
        "duration_s": round(time.monotonic() - started, 3),
    }


def backup_logical(
    s: PostgresSettings, repo: Repository, partition: dt.date, extra: dict[str, Any] | None = None, checksums: bool = True
) -> Backup:
    """Take a logical dump and publish it as the `partition` day's backup."""
    conn = connect(s)  # fail fast, before a lock or a file exists, with a clear message; the dump reuses it
    # closing: if the lock is not taken; closing again after logical_dump closed it is harmless
    with contextlib.closing(conn), repo.begin(SYSTEM, LOGICAL_DUMP, partition) as writer:
        writer.metadata.update(logical_dump(s, writer, checksums=checksums, conn=conn))
        writer.metadata.update(extra or {})
        # the moment the data describes; a reconstruction passes the time it recovered to
        writer.metadata.setdefault("captured_at", writer.metadata["snapshot_time"])
    assert writer.committed is not None
    return writer.committed


# -- inspection ----------------------------------------------------------------------------------


def dump_toc(repo: Repository, backup: Backup, bin_dir: str = "") -> list[str]:
    """`pg_restore --list` of the dump: proves the archive is readable end to end.
    `bin_dir`: PostgresSettings.bin_dir (PGBIN)."""
    proc, err = run_capturing_stderr(
        # It reads a stream and connects nowhere: no PG* variables, no password.
        [pg_bin("pg_restore", bin_dir), "--list"],
        base_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    try:
        with repo.open(backup, DUMP_FILE) as source:
            assert proc.stdin is not None
            feed_stdin(source, proc.stdin, CHUNK)
    finally:
        rc = proc.wait()
        reader.join()
    if rc != 0:
        raise PostgresError(f"pg_restore --list cannot read {backup.prefix}: {stderr_tail(err)}")
    err.close()
    return [line for line in out[0].decode().splitlines() if line and not line.startswith(";")]


# -- restore -------------------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def _create_database(s: PostgresSettings, name: str) -> None:
    with connect(s, dbname="postgres") as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise RestoreRefused(
                f"role {s.user!r} may not create databases at {s.host}:{s.port} (a restore needs CREATEDB); nothing was changed"
            ) from None


@contextlib.contextmanager
def _staging_database(s: PostgresSettings, target: str) -> Iterator[Callable[[], str]]:
    """A fresh database to restore into, created in a thread while the caller stages the dump
    (CREATE DATABASE takes about 0.1 s); calling what this yields waits for it and gives its
    name. On exit it is dropped, unless the caller renamed it into place."""
    name = f"{target[:40]}__restoring_{secrets.token_hex(4)}"
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pg-staging-db")
    created = pool.submit(_create_database, s, name)

    def ready() -> str:
        created.result()  # raises what CREATE DATABASE raised (RestoreRefused without CREATEDB)
        return name

    try:
        yield ready
    finally:
        pool.shutdown(wait=True)
        if created.exception() is None:
            with connect(s, dbname="postgres") as admin:
                drop_database(admin, name)


def _load(s: PostgresSettings, repo: Repository, backup: Backup, staging_db: Callable[[], str], jobs: int, target_db: str) -> str:
    """The dump loaded into the staging database, streamed or staged for `-j jobs`
    (parallel_restore's docstring says which when); returns how, for the restore's record.

    Staged, the database is made while the dump is copied, and nothing is restored into it
    before the whole copy is local and verified against its sha256. Streamed, a dump that
    differs from its sha256 raises IntegrityError at its end, before the proof and the swap."""
    why_stream = parallel_restore.stream_reason(backup, jobs)
    try:
        # pg_restore_streamed says why it could not ("" when it restored): then the dump is staged
        if why_stream and not parallel_restore.pg_restore_streamed(s, repo, backup, DUMP_FILE, staging_db()):
            return f"{stage_native.HELPER}, streamed into one pg_restore job ({why_stream})"
        with parallel_restore.staged_dump(repo, backup, DUMP_FILE) as staged:
            parallel_restore.pg_restore_file(s, staged.path, staging_db(), jobs)
    except RefusedError:
        raise  # no room for the copy, no right to create the database: its one line says nothing changed
    except PostgresError as exc:
        raise PostgresError(f"{exc}; {target_db!r} is unchanged") from None
    # When streaming was refused, the copy's reason (no helper, not its archive) is also why.
    return staged.staged_by


def restore_logical(
    s: PostgresSettings, repo: Repository, backup: Backup, target_db: str, force: bool = False, jobs: int | None = None
) -> LogicalRestoreResult:
    """Restore a logical dump into `target_db` on the server `s` names, and prove it matches.

    Order of events, so that no failure can damage anything: check the backup's checksums;
    refuse a non-empty target unless `force`; restore the dump into a new staging database,
    streamed into one `pg_restore` job, or copied to a private local file first (checked
    against its sha256 on the way) for `pg_restore -j jobs` when parallel jobs can pay for the
    copy (`_load`); compare every table's row count and checksum with the manifest (in `jobs`
    connections); only then drop the old target (with `force`) and rename the staging
    database into its place. `jobs`: RestoreSettings.jobs (RESTORE_JOBS), default the core count.
    """
    started = time.monotonic()
    if not _DB_NAME.match(target_db):
        raise PostgresError(f"invalid target database name {target_db!r} (letters, digits, _ $ -; at most 63)")
    repo.verify(backup)  # integrity before any write
    existing = database_objects(s, target_db)
    if existing and not force:
        raise RestoreRefused(
            f"database {target_db!r} at {s.host}:{s.port} is not empty ({existing} relations); "
            "nothing was changed. Restore into a new database, or pass --force to replace it"
        )
    jobs = jobs or parallel_restore.default_jobs()
    checksums = backup.metadata.get("content_checksums", True)
    # manifests written before the function was named hashed the text form
    function = backup.metadata.get("checksum_function") or CHECKSUM_TEXT
    if checksums and function not in CHECKSUM_FUNCTIONS:
        raise VerificationError(
            f"backup {backup.prefix} records content checksums by an unknown function {function!r}; "
            "restore it with the version that took it. Nothing was changed"
        )
    with _staging_database(s, target_db) as staging_db:
        staged_by = _load(s, repo, backup, staging_db, jobs, target_db)
        staging = staging_db()
        actual = parallel_restore.parallel_fingerprints(s, staging, jobs, checksums, function)
        expected = backup.metadata.get("tables", {})
        if not checksums:
            actual = {k: {**v, "checksum": None} for k, v in actual.items()}
        problems = compare_fingerprints(expected, actual)
        if problems:
            raise VerificationError(f"restored data does not match backup {backup.prefix}: " + "; ".join(problems[:10]))
        with connect(s, dbname="postgres") as admin:
            if existing is not None:
                drop_database(admin, target_db)
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(target_db)))
    return LogicalRestoreResult(
        target_db=target_db,
        backup=backup.prefix,
        tables=len(actual),
        rows_total=sum(t["rows"] for t in actual.values()),
        replaced_existing=existing is not None,
        staged_by=staged_by,
        duration_s=round(time.monotonic() - started, 3),
    )

"""PostgreSQL logical backups (pg_dump) and their restore, with proof of content.

A dump is taken inside one REPEATABLE READ transaction whose snapshot is exported to pg_dump
(`--snapshot`), so the row counts and content checksums we record for every table describe
exactly the data the dump holds, even while the platform keeps writing.

pg_dump 15 can compress the custom format only with gzip, which is the slowest part of a
dump; we ask it for an uncompressed stream (`-Z0`) and compress with zstd on our side, which
is faster and smaller (see bench/). Passwords reach pg_dump/pg_restore through PGPASSWORD in
their environment, never argv.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterator

import psycopg
from psycopg import sql

from ..settings import PostgresSettings
from auction_backup_pipelines.repository.repository import Backup, BackupWriter, Repository
from auction_backup_pipelines.errors import BackupError, RefusedError
from auction_backup_pipelines import errors

SYSTEM = "postgres"
LOGICAL_DUMP = "logical_dump"
DUMP_FILE = "dump.pgc"
CHUNK = 1 << 20


class PostgresError(BackupError):
    """A PostgreSQL operation failed; the message names the server and the cause."""


class RestoreRefused(PostgresError, RefusedError):
    """A restore would overwrite data and was not explicitly allowed."""


class VerificationError(PostgresError, errors.VerificationError):
    """Restored data does not match what the backup recorded."""


def pg_bin(name: str) -> str:
    """Find a PostgreSQL client program: $PGBIN first (Debian keeps them off PATH), then PATH."""
    candidates = [os.path.join(os.environ["PGBIN"], name)] if os.environ.get("PGBIN") else []
    candidates += [f"/usr/lib/postgresql/15/bin/{name}", shutil.which(name) or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise PostgresError(f"{name} not found (set PGBIN to the folder holding PostgreSQL's programs)")


def child_env(s: PostgresSettings, dbname: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PGHOST=s.host,
        PGPORT=str(s.port),
        PGUSER=s.user,
        PGDATABASE=dbname or s.dbname,
        PGCONNECT_TIMEOUT="10",
        PGAPPNAME="auction-backup",
    )
    if s.password:
        env["PGPASSWORD"] = s.password
    else:
        env.pop("PGPASSWORD", None)
    return env


def _explain(exc: Exception, s: PostgresSettings, dbname: str) -> str:
    text = str(exc).strip()
    where = f"PostgreSQL at {s.host}:{s.port}"
    if "password authentication failed" in text or "no password supplied" in text:
        return f"{where} rejected the password for user {s.user!r} (check POSTGRES_PASSWORD)"
    if "Connection refused" in text or "could not connect" in text and "refused" in text:
        return f"nothing is listening at {s.host}:{s.port} (is PostgreSQL down, or POSTGRES_PORT wrong?)"
    if re.search(r'database ".*" does not exist', text):
        return f"{where} has no database {dbname!r} (check POSTGRES_DB)"
    if re.search(r'role ".*" does not exist', text):
        return f"{where} has no role {s.user!r} (check POSTGRES_USER)"
    if "timeout expired" in text:
        return f"{where} did not answer within 10 s (host unreachable or server overloaded)"
    return f"cannot connect to {where} as {s.user!r}: {text.splitlines()[0] if text else type(exc).__name__}"


def connect(s: PostgresSettings, dbname: str | None = None, autocommit: bool = True) -> psycopg.Connection:
    dbname = dbname or s.dbname
    try:
        return psycopg.connect(
            host=s.host,
            port=s.port,
            dbname=dbname,
            user=s.user,
            password=s.password or None,
            connect_timeout=10,
            application_name="auction-backup",
            autocommit=autocommit,
        )
    except psycopg.OperationalError as exc:
        raise PostgresError(_explain(exc, s, dbname)) from None


# -- content fingerprints ------------------------------------------------------------------------

_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""


def table_fingerprints(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Row count and an order-independent content checksum of every user table.

    The checksum is the sum (numeric, so it cannot overflow) of a 64-bit hash of each row's
    text form: no sort, one sequential scan that PostgreSQL may run with parallel workers,
    and a restored table has the same value when it has the same multiset of rows.
    hashtextextended is PostgreSQL's own hash (about 3x cheaper than md5 here; see
    bench/bench_postgres.py); it is not cryptographic, which is fine for proving a restore
    is faithful: the sha256 of the stored bytes is what guards against tampering.
    """
    result: dict[str, dict[str, Any]] = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        query = sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {}.{} t"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        rows, checksum = conn.execute(query).fetchone()  # type: ignore[misc]
        result[f"{schema}.{table}"] = {"rows": int(rows), "checksum": checksum}
    return result


def compare_fingerprints(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences; empty when the two match table for table."""
    problems = []
    for name in sorted(set(expected) | set(actual)):
        e, a = expected.get(name), actual.get(name)
        if e is None:
            problems.append(f"{name}: present after restore but not in the backup")
        elif a is None:
            problems.append(f"{name}: in the backup ({e['rows']} rows) but missing after restore")
        elif e["rows"] != a["rows"]:
            problems.append(f"{name}: {a['rows']} rows after restore, backup recorded {e['rows']}")
        elif e["checksum"] != a["checksum"]:
            problems.append(f"{name}: same row count ({e['rows']}) but content checksum differs")
    return problems


# -- backup --------------------------------------------------------------------------------------


@dataclass
class DumpResult:
    metadata: dict[str, Any] = field(default_factory=dict)


def _run_capturing_stderr(argv: list[str], env: dict[str, str], **kwargs: Any) -> tuple[subprocess.Popen, BinaryIO]:
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, env=env, stderr=err, **kwargs)
    return proc, err  # type: ignore[return-value]


def _stderr_tail(err: BinaryIO, limit: int = 2000) -> str:
    err.seek(0)
    text = err.read().decode(errors="replace").strip()
    return text[-limit:]


def logical_dump(s: PostgresSettings, writer: BackupWriter, checksums: bool = True) -> dict[str, Any]:
    """Stream `pg_dump -Fc` of the database into `writer` and return the manifest metadata."""
    started = time.monotonic()
    conn = connect(s)
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot, snapshot_time, lsn, server_version = conn.execute(
            "SELECT pg_export_snapshot(), now(), "
            "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text, "
            "current_setting('server_version')"
        ).fetchone()  # type: ignore[misc]
        argv = [pg_bin("pg_dump"), "--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password", s.dbname]
        proc, err = _run_capturing_stderr(argv, child_env(s), stdout=subprocess.PIPE)
        # Fingerprints are computed in our snapshot while pg_dump streams: same data, in parallel.
        fingerprints: dict[str, Any] = {}
        failure: list[BaseException] = []

        def fingerprint() -> None:
            try:
                fingerprints.update(table_fingerprints(conn) if checksums else _row_counts(conn))
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
                    raise PostgresError(f"pg_dump of {s.dbname!r} at {s.host}:{s.port} failed (exit {rc}): {_stderr_tail(err)}")
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
        "snapshot_time": snapshot_time.astimezone(dt.timezone.utc).isoformat(),
        "wal_lsn": lsn,
        "format": "custom",
        "tables": fingerprints,
        "rows_total": sum(t["rows"] for t in fingerprints.values()),
        "content_checksums": checksums,
        "checksum_function": "sum(hashtextextended(row::text, 0))" if checksums else None,
        "duration_s": round(time.monotonic() - started, 3),
    }


def _row_counts(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    out = {}
    for schema, table in conn.execute(_TABLES).fetchall():
        q = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        out[f"{schema}.{table}"] = {"rows": int(conn.execute(q).fetchone()[0]), "checksum": None}  # type: ignore[index]
    return out


def backup_logical(s: PostgresSettings, repo: Repository, partition: dt.date, extra: dict[str, Any] | None = None,
                   checksums: bool = True) -> Backup:
    """Take a logical dump and publish it as the `partition` day's backup."""
    connect(s).close()  # fail fast, before a lock or a file exists, with a clear message
    with repo.begin(SYSTEM, LOGICAL_DUMP, partition) as writer:
        writer.metadata.update(logical_dump(s, writer, checksums=checksums))
        writer.metadata.update(extra or {})
        # the moment the data describes; a reconstruction passes the time it recovered to
        writer.metadata.setdefault("captured_at", writer.metadata["snapshot_time"])
    assert writer.committed is not None
    return writer.committed


# -- inspection ----------------------------------------------------------------------------------


def _feed(source: BinaryIO, proc: subprocess.Popen) -> None:
    """Copy the backup stream into a child's stdin; a child that stops reading ends the copy."""
    assert proc.stdin is not None
    try:
        while block := source.read(CHUNK):
            proc.stdin.write(block)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()


def dump_toc(repo: Repository, backup: Backup) -> list[str]:
    """`pg_restore --list` of the dump: proves the archive is readable end to end."""
    proc, err = _run_capturing_stderr([pg_bin("pg_restore"), "--list"], dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out: list[bytes] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    try:
        with repo.open(backup, DUMP_FILE) as source:
            _feed(source, proc)
    finally:
        rc = proc.wait()
        reader.join()
    if rc != 0:
        raise PostgresError(f"pg_restore --list cannot read {backup.prefix}: {_stderr_tail(err)}")
    err.close()
    return [line for line in out[0].decode().splitlines() if line and not line.startswith(";")]


# -- restore -------------------------------------------------------------------------------------

_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


def database_objects(s: PostgresSettings, dbname: str) -> int | None:
    """Number of user relations in `dbname`, or None when the database does not exist."""
    with connect(s, dbname="postgres") as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
    if not exists:
        return None
    with connect(s, dbname=dbname) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' "
            "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
        ).fetchone()
    return int(row[0]) if row else 0


def drop_database(admin: psycopg.Connection, name: str) -> None:
    """Drop `name` if it exists, ending the sessions connected to it.

    A plain DROP first: it waits out autovacuum workers by itself, whereas WITH (FORCE) would
    try to terminate them and fail for a non-superuser. FORCE only when users are connected.
    """
    ident = sql.Identifier(name)
    try:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))
    except psycopg.errors.ObjectInUse:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


@contextlib.contextmanager
def _staging_database(s: PostgresSettings, target: str) -> Iterator[str]:
    """A fresh database to restore into; dropped unless the caller renamed it into place."""
    name = f"{target[:40]}__restoring_{secrets.token_hex(4)}"
    with connect(s, dbname="postgres") as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.errors.InsufficientPrivilege:
            raise RestoreRefused(
                f"role {s.user!r} may not create databases at {s.host}:{s.port} (a restore needs CREATEDB); nothing was changed"
            ) from None
    try:
        yield name
    finally:
        with connect(s, dbname="postgres") as admin:
            drop_database(admin, name)


def restore_logical(s: PostgresSettings, repo: Repository, backup: Backup, target_db: str, force: bool = False) -> dict[str, Any]:
    """Restore a logical dump into `target_db` on the server `s` names, and prove it matches.

    Order of events, so that no failure can damage anything: check the backup's checksums;
    refuse a non-empty target unless `force`; restore into a new staging database; compare
    every table's row count and checksum with the manifest; only then drop the old target
    (with `force`) and rename the staging database into its place.
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
    with _staging_database(s, target_db) as staging:
        argv = [pg_bin("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--no-password", "--dbname", staging]
        proc, err = _run_capturing_stderr(argv, child_env(s, staging), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            with repo.open(backup, DUMP_FILE) as source:
                _feed(source, proc)
        finally:
            rc = proc.wait()
        if rc != 0:
            raise PostgresError(f"pg_restore into {staging!r} failed (exit {rc}): {_stderr_tail(err)}; {target_db!r} is unchanged")
        err.close()
        with connect(s, dbname=staging) as conn:
            actual = table_fingerprints(conn) if backup.metadata.get("content_checksums", True) else _row_counts(conn)
        expected = backup.metadata.get("tables", {})
        if not backup.metadata.get("content_checksums", True):
            actual = {k: {**v, "checksum": None} for k, v in actual.items()}
        problems = compare_fingerprints(expected, actual)
        if problems:
            raise VerificationError(f"restored data does not match backup {backup.prefix}: " + "; ".join(problems[:10]))
        with connect(s, dbname="postgres") as admin:
            if existing is not None:
                drop_database(admin, target_db)
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(staging), sql.Identifier(target_db)))
    return {
        "target_db": target_db,
        "backup": backup.prefix,
        "tables": len(actual),
        "rows_total": sum(t["rows"] for t in actual.values()),
        "replaced_existing": existing is not None,
        "duration_s": round(time.monotonic() - started, 3),
    }

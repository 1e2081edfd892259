"""The PostgreSQL side every engine shares: errors, client programs, connections, fingerprints.

Dumps, base backups, the WAL receiver, PITR and the restore checks all connect the same way,
fail with the same explained messages (naming the POSTGRES_* setting to fix), run the same
client programs (with the password in their environment, never argv) and prove content with
the same per-table fingerprints; this module is that common ground.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from typing import IO, Any, BinaryIO

import psycopg
from psycopg import sql

from auction_backup_pipelines import errors
from auction_backup_pipelines.child_env import base_env
from auction_backup_pipelines.errors import BackupError, RefusedError
from auction_backup_pipelines.settings import PostgresSettings

SYSTEM = "postgres"


class PostgresError(BackupError):
    """A PostgreSQL operation failed; the message names the server and the cause."""


class RestoreRefused(PostgresError, RefusedError):
    """A restore would overwrite data and was not explicitly allowed."""


class VerificationError(PostgresError, errors.VerificationError):
    """Restored data does not match what the backup recorded."""


# -- client programs -----------------------------------------------------------------------------


def pg_bin(name: str, bin_dir: str = "") -> str:
    """Find a PostgreSQL program: in `bin_dir` (PostgresSettings.bin_dir, from PGBIN) first, since
    Debian keeps them off PATH, then PostgreSQL 15's Debian folder, then PATH."""
    candidates = [os.path.join(bin_dir, name)] if bin_dir else []
    candidates += [f"/usr/lib/postgresql/15/bin/{name}", shutil.which(name) or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    raise PostgresError(f"{name} not found (set PGBIN to the folder holding PostgreSQL's programs)")


# libpq's transport-security variables an operator may have set: our own connections (psycopg,
# in this process) honour them, so the client programs must too, or pg_dump would connect with
# weaker TLS than the fingerprint query beside it. None is a secret (PGSSLKEY names a file). Not
# PGSERVICE/PGSERVICEFILE/PGOPTIONS: a service file could send a child to another server.
LIBPQ_TRANSPORT = (
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLROOTCERT",
    "PGSSLCRL",
    "PGSSLCRLDIR",
    "PGSSLSNI",
    "PGSSLMINPROTOCOLVERSION",
    "PGSSLMAXPROTOCOLVERSION",
    "PGCHANNELBINDING",
    "PGPASSFILE",
)


def child_env(s: PostgresSettings, dbname: str | None = None) -> dict[str, str]:
    """Environment for a client program: `base_env`, where to connect, and the password (never on argv).

    HOME too, for ~/.pgpass when POSTGRES_PASSWORD is empty, as our own connections use it."""
    env = base_env(extra=("HOME", *LIBPQ_TRANSPORT))
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
    # POSTGRES_SSLMODE/POSTGRES_SSLROOTCERT win over the operator's PGSSL* (as in `connect`), so
    # pg_dump and pg_basebackup verify the server exactly as our own connection beside them does.
    if s.sslmode:
        env["PGSSLMODE"] = s.sslmode
    if s.sslrootcert:
        env["PGSSLROOTCERT"] = s.sslrootcert
    return env


def run_capturing_stderr(argv: list[str], env: dict[str, str], **kwargs: Any) -> tuple[subprocess.Popen, BinaryIO]:
    """Start a client program with its stderr in a temporary file (read it with `stderr_tail`)."""
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, env=env, stderr=err, **kwargs)
    return proc, err


def feed_stdin(source: BinaryIO, stdin: IO[bytes], chunk: int) -> None:
    """All of `source` into a child program's stdin, `chunk` bytes at a time, then its end, also
    when `source` fails (the child must not wait for more). A child that stops reading ends the
    copy: its exit code says why."""
    try:
        while block := source.read(chunk):
            stdin.write(block)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            stdin.close()


def stderr_tail(err: BinaryIO, limit: int = 2000) -> str:
    """The last `limit` characters a client program wrote to its stderr file."""
    err.seek(0)
    text = err.read().decode(errors="replace").strip()
    return text[-limit:]


# -- connections ---------------------------------------------------------------------------------


def explain_tls(text: str, s: PostgresSettings) -> str | None:
    """One line for a libpq TLS failure (from psycopg or a client program's stderr), naming the
    setting to fix; None when `text` is not one."""
    where = f"PostgreSQL at {s.host}:{s.port}"
    mode = f"POSTGRES_SSLMODE={s.sslmode or 'prefer'}"
    if "certificate verify failed" in text:
        return (
            f"TLS certificate verification failed for {where}: its certificate is not signed by the CA in "
            f"POSTGRES_SSLROOTCERT ({s.sslrootcert or 'unset'}), or has expired ({mode}); no password was sent"
        )
    if re.search(r"server certificate for .* does not match host name", text):
        return (
            f"TLS certificate verification failed for {where}: its certificate is not issued for {s.host!r} "
            f"({mode} checks POSTGRES_HOST against it); connect by a name the certificate lists"
        )
    if "root certificate file" in text or "could not read root certificate" in text:
        return (
            f"{mode} verifies the server's certificate but the CA file cannot be read: set POSTGRES_SSLROOTCERT "
            f"to a readable PEM file of the CA ({s.sslrootcert or 'unset'})"
        )
    if "server does not support SSL" in text:
        return f"{where} does not offer TLS but {mode} requires it (enable ssl on the server)"
    if "no encryption" in text and "pg_hba.conf" in text:
        return f"{where} accepts only TLS connections from this host: set POSTGRES_SSLMODE=verify-full"
    if re.search(r"SSL error|SSL SYSCALL error|ssl/tls alert", text, re.IGNORECASE):
        line = text.splitlines()[0]
        return f"TLS handshake with {where} failed ({mode}): {line[line.find('SSL') :] if 'SSL' in line else line}"
    return None


def _explain(exc: Exception, s: PostgresSettings, dbname: str) -> str:
    text = str(exc).strip()
    where = f"PostgreSQL at {s.host}:{s.port}"
    if tls := explain_tls(text, s):
        return tls
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
    """Connect to `dbname` (default: the settings' database); a failure names the setting to fix."""
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
            # None leaves libpq's default (or the operator's PGSSLMODE/PGSSLROOTCERT) in force.
            sslmode=s.sslmode or None,
            sslrootcert=s.sslrootcert or None,
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


# The checksum functions a manifest may name (`checksum_function`). TEXT is the first format: every
# row's text form hashed. TYPED (the default since) hashes each column with its type's own 64-bit
# hash and chains them (no text conversion: about a third of the scan's CPU, measured in
# bench/bench_postgres.py), but only in tables whose every column has a type in EXACT_HASHES;
# any other table keeps the text form. Which tables hash typed follows from the schema alone, so
# a restore (same schema) recomputes the same choice.
CHECKSUM_TEXT = "sum(hashtextextended(row::text, 0))"
CHECKSUM_TYPED = (
    "sum(chained 64-bit column hashes) where every column type hashes exactly, else sum(hashtextextended(row::text, 0))"
)
CHECKSUM_FUNCTIONS = (CHECKSUM_TEXT, CHECKSUM_TYPED)

# A hash (SQL on the column {}) that changes with any change of the value as pg_dump writes it.
# Not numeric (1.0 and 1.00 hash alike), float (0 and -0), interval (1 day and 24 hours), jsonb
# (its numbers are numeric), date (no exact callable hash covers infinity), bytea (its hash is not
# callable from SQL). Text types only under a deterministic collation; char(n) only with its
# length, so that values are padded to it (its hash ignores trailing blanks).
EXACT_HASHES = {
    "bool": "hashint4extended({}::int4, 0)",
    "char": "hashcharextended({}, 0)",
    "int2": "hashint2extended({}, 0)",
    "int4": "hashint4extended({}, 0)",
    "int8": "hashint8extended({}, 0)",
    "oid": "hashoidextended({}, 0)",
    "name": "hashnameextended({}, 0)",
    "text": "hashtextextended({}, 0)",
    "varchar": "hashtextextended({}, 0)",
    "bpchar": "hashbpcharextended({}, 0)",
    "uuid": "uuid_hash_extended({}, 0)",
    "time": "time_hash_extended({}, 0)",
    "timestamp": "timestamp_hash_extended({}, 0)",
    "timestamptz": "timestamp_hash_extended({} AT TIME ZONE 'UTC', 0)",  # same instant, same value
}

_COLUMNS = """
SELECT n.nspname, c.relname, a.attname, ty.typname, ty.typnamespace = 'pg_catalog'::regnamespace,
       a.atttypmod, coalesce(co.collisdeterministic, true)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_type ty ON ty.oid = a.atttypid
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2, a.attnum
"""


def row_hashes(conn: psycopg.Connection, function: str = CHECKSUM_TYPED) -> dict[tuple[str, str], sql.Composable]:
    """The row hash (SQL over the table's columns) of every user table `function` hashes column
    by column; the tables left out hash their rows' text form (all of them for CHECKSUM_TEXT)."""
    if function not in CHECKSUM_FUNCTIONS:
        raise PostgresError(f"unknown content checksum function {function!r}")
    if function == CHECKSUM_TEXT:
        return {}
    columns: dict[tuple[str, str], list[sql.Composable] | None] = {}
    for schema, table, column, typname, builtin, typmod, deterministic in conn.execute(_COLUMNS).fetchall():
        hashes = columns.setdefault((schema, table), [])
        if hashes is None or column is None:  # already left out, or a table without columns
            continue
        exact = builtin and deterministic and not (typname == "bpchar" and typmod < 0)
        template = EXACT_HASHES.get(typname) if exact else None
        if template is None:
            columns[(schema, table)] = None
            continue
        hashes.append(sql.SQL("coalesce(" + template + ", 0)").format(sql.Identifier("t", column)))
    result: dict[tuple[str, str], sql.Composable] = {}
    for key, hashes in columns.items():
        if hashes is None:
            continue
        row: sql.Composable = sql.SQL("0")
        for i, h in enumerate(hashes):  # in column order; each hash seeds the next: not linear
            row = h if i == 0 else sql.SQL("hashint8extended({}, {})").format(h, row)
        result[key] = row
    return result


def table_fingerprints(conn: psycopg.Connection, function: str = CHECKSUM_TYPED) -> dict[str, dict[str, Any]]:
    """Row count and an order-independent content checksum of every user table.

    The checksum is the sum (numeric, so it cannot overflow) of a 64-bit hash of each row
    (`function`: one of CHECKSUM_FUNCTIONS): no sort, one sequential scan that PostgreSQL may
    run with parallel workers, and a restored table has the same value when it has the same
    multiset of rows. The hashes are PostgreSQL's own (hashtextextended is about 3x cheaper than
    md5 here); they are not cryptographic, which is fine for proving a restore is faithful: the
    sha256 of the stored bytes is what guards against tampering.
    """
    hashes = row_hashes(conn, function)
    return {
        f"{schema}.{table}": table_fingerprint(conn, schema, table, row_hash=hashes.get((schema, table)))
        for schema, table in user_tables(conn)
    }


def row_counts(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Row count of every user table, without checksums (a dump taken with checksums off)."""
    return {f"{schema}.{table}": table_fingerprint(conn, schema, table, False) for schema, table in user_tables(conn)}


def user_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """(schema, table) of every user table the fingerprints cover, in name order."""
    return [(schema, table) for schema, table in conn.execute(_TABLES).fetchall()]


def table_fingerprint(
    conn: psycopg.Connection, schema: str, table: str, checksums: bool = True, row_hash: sql.Composable | None = None
) -> dict[str, Any]:
    """One table's row count and (with `checksums`) content checksum; see `table_fingerprints`.
    `row_hash`: the table's entry of `row_hashes`; None hashes the row's text form."""
    if not checksums:
        q = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        return {"rows": int(conn.execute(q).fetchone()[0]), "checksum": None}  # type: ignore[index]
    query = sql.SQL("SELECT count(*), coalesce(sum({}), 0)::text FROM {}.{} t").format(
        row_hash or sql.SQL("hashtextextended(t::text, 0)"), sql.Identifier(schema), sql.Identifier(table)
    )
    rows, checksum = conn.execute(query).fetchone()  # type: ignore[misc]
    return {"rows": int(rows), "checksum": checksum}


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


# -- databases -----------------------------------------------------------------------------------


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

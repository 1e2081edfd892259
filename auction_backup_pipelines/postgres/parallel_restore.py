"""The fast half of a logical restore: the dump into `pg_restore` by the quickest way, parallel proof.

`pg_restore` loads tables and builds indexes in several sessions only from a seekable file: from
stdin it runs one job. So for `-j N` the dump is first streamed out of the repository (decrypted,
decompressed and checked against its sha256 as it comes) into a private folder (mode 0700) of
the temporary directory (TMPDIR), which is removed afterwards, also on failure. Its size is in
the manifest, so a disk too small for it is refused in one line before a byte is written.

That copy only pays when jobs can share the work. When one table holds most of the rows (the
Auction Flow database's bids; pgbench's accounts), its load and its indexes are most of the
restore whatever the job count, and the copy buys nothing: it needs the dump's size in free
space and a full write (on a 293 MB pgbench dump, staging took 1.2 s before pg_restore started,
and creating the file's fresh pages cost this machine's kernel 0.65 s of CPU). So such a dump,
or any with one job, is streamed instead (`stream_reason`): pg-stage rechunks it on the way into
a one-job `pg_restore` reading its stdin, with no local copy and no disk space needed. Measured
side by side, the two ways took the same time here (bench_postgres's docstring); what streaming
saves is the space and the write.

After the load, every table's row count and content checksum are computed in up to N
connections at once, largest tables first, with exactly the queries `client.table_fingerprints`
runs for the checksum function the manifest names, so the results equal those recorded at
backup time. restore_logical (logical_dump.py)
keeps the order of events that makes a restore safe: staging database, proof, then swap.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.postgres import stage_native
from auction_backup_pipelines.postgres.client import (
    CHECKSUM_TEXT,
    PostgresError,
    child_env,
    connect,
    pg_bin,
    row_hashes,
    run_capturing_stderr,
    stderr_tail,
    table_fingerprint,
    user_tables,
)
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings

CHUNK = 1 << 20
# Room left beside the staged dump, so that a restore does not fill the disk to the last byte.
SPARE_BYTES = 64 << 20


class StagingSpaceError(PostgresError, RefusedError):
    """The local disk cannot hold the dump a parallel restore reads from."""


# Streamed when one table holds at least this share of the rows: parallel jobs could then share
# at most a quarter of the load. Rows stand in for bytes, which the manifest does not record.
STREAM_WHEN_ONE_TABLE_HOLDS = 0.75


def default_jobs() -> int:
    return os.cpu_count() or 1


def stream_reason(backup: Backup, jobs: int) -> str:
    """Why a restore of `backup` with `jobs` should stream the dump into one pg_restore job
    rather than stage it for `-j jobs`; "" when parallel jobs can pay for the copy."""
    if jobs <= 1:
        return "one job"
    rows = [t.get("rows", 0) for t in backup.metadata.get("tables", {}).values()]
    total = sum(rows)
    if not total:
        return "no rows to share between jobs"
    if max(rows) >= STREAM_WHEN_ONE_TABLE_HOLDS * total:
        return f"one table holds {max(rows) / total:.0%} of the rows"
    return ""


def pg_restore_streamed(s: PostgresSettings, repo: Repository, backup: Backup, name: str, dbname: str) -> str:
    """The backup's file `name` restored into the existing database `dbname` by a one-job
    `pg_restore` reading its stdin, fed by pg-stage. Returns "" when restored, else why it was
    not (the helper is missing or refused the archive; nothing was restored: stage it instead).
    IntegrityError if the dump differs from its manifest; PostgresError if pg_restore fails or
    the helper fails mid-stream (then the staging database holds part of the dump, and the
    restore fails rather than staging into it)."""
    helper = stage_native.helper_path()
    if helper is None:
        return f"{stage_native.HELPER} is not installed"
    with _pg_restore(s, dbname, stdin=subprocess.PIPE) as (proc, failed):
        assert proc.stdin is not None
        try:
            with repo.open(backup, name) as source:
                why = stage_native.stream(helper, source, proc.stdin)
        except PostgresError as helper_failed:
            if proc.wait() != 0:  # which stopped first cannot be told apart: say both
                raise PostgresError(f"{failed()}; {helper_failed}") from None
            raise
        rc = proc.wait()
        if why:
            return why  # pg_restore read an empty input and touched nothing
        if rc != 0:
            raise PostgresError(failed())
        return ""


@contextlib.contextmanager
def _pg_restore(s: PostgresSettings, dbname: str, *args: str, stdin: int) -> Iterator[tuple[subprocess.Popen, Callable[[], str]]]:
    """A running `pg_restore` (with `args`) into `dbname`, and what to say when it failed; killed
    if the block raises."""
    argv = [
        pg_bin("pg_restore", s.bin_dir),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--no-password",
        "--dbname",
        dbname,
        *args,
    ]
    proc, err = run_capturing_stderr(argv, child_env(s, dbname), stdin=stdin, stdout=subprocess.DEVNULL)
    try:
        yield proc, lambda: f"pg_restore into {dbname!r} failed (exit {proc.returncode}): {stderr_tail(err)}"
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        err.close()


class Staged(NamedTuple):
    path: Path
    staged_by: str  # "pg-stage", or "copy" and why the helper did not stage it


@contextlib.contextmanager
def staged_dump(repo: Repository, backup: Backup, name: str) -> Iterator[Staged]:
    """The backup's file `name` in a private temporary folder, removed on exit: staged by the
    pg-stage helper (stage_native.py) for a faster `pg_restore -j`, else its original bytes."""
    size = backup.file(name).size
    where = tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    if free < size + SPARE_BYTES:
        raise StagingSpaceError(
            f"the restore needs {size / 2**20:.0f} MiB (+{SPARE_BYTES >> 20} MiB spare) in {where} for the dump of "
            f"{backup.prefix}, only {free / 2**20:.0f} MiB is free; free space or point TMPDIR elsewhere. Nothing was changed"
        )
    folder = Path(tempfile.mkdtemp(prefix="pg-restore-"))  # mode 0700: only we can read the data
    try:
        path = folder / name
        helper = stage_native.helper_path()
        why = f"{stage_native.HELPER} is not installed" if helper is None else ""
        if helper is not None:
            with repo.open(backup, name) as source:
                why = stage_native.restage(helper, source, path)  # IntegrityError if a byte differs
        if why:
            with repo.open(backup, name) as source:
                copy_overlapped(source, path)  # IntegrityError at the end if a byte differs
        yield Staged(path, f"copy ({why})" if why else stage_native.HELPER)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_overlapped(source: BinaryIO, path: Path) -> None:
    """Copy `source` into a new file `path`, reading and writing in two threads at once.

    Reading a stored dump decompresses and hashes it, writing waits for the disk: measured on
    a 293 MB dump, each took about as long as the other, so overlapping them halves the copy.
    """
    blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            with open(path, "wb") as out:
                while (block := blocks.get()) is not None:
                    out.write(block)
        except BaseException as exc:  # reported by the reading side, which stops reading
            failures.append(exc)
            while blocks.get() is not None:  # so that a read already made can still be put
                pass

    writer = threading.Thread(target=write, name="pg-restore-stage")
    writer.start()
    try:
        while not failures and (block := source.read(CHUNK * 4)):
            blocks.put(block)
    finally:
        blocks.put(None)
        writer.join()
    if failures:
        raise PostgresError(f"could not write the dump to {path.parent}: {failures[0]}")


def pg_restore_file(s: PostgresSettings, dump: Path, dbname: str, jobs: int) -> None:
    """`pg_restore -j jobs` of the local file `dump` into the existing database `dbname`."""
    with _pg_restore(s, dbname, f"--jobs={max(1, jobs)}", str(dump), stdin=subprocess.DEVNULL) as (proc, failed):
        if proc.wait() != 0:
            raise PostgresError(failed())


def parallel_fingerprints(
    s: PostgresSettings, dbname: str, jobs: int, checksums: bool = True, function: str = CHECKSUM_TEXT
) -> dict[str, dict[str, Any]]:
    """`client.table_fingerprints(function)` (or `row_counts`) of `dbname`, over up to `jobs` connections.
    `function`: the backup manifest's `checksum_function` (CHECKSUM_TEXT for a manifest without one)."""
    with connect(s, dbname=dbname) as conn:
        tables = user_tables(conn)
        hashes = row_hashes(conn, function) if checksums else {}
        if tables:
            sizes = conn.execute(
                "SELECT pg_relation_size(format('%%I.%%I', s, t)::regclass) FROM unnest(%s::text[], %s::text[]) AS x(s, t)",
                ([t[0] for t in tables], [t[1] for t in tables]),
            ).fetchall()
            # largest first, so that the last table to finish is a small one
            tables = [t for _, t in sorted(zip((r[0] for r in sizes), tables, strict=True), key=lambda x: -x[0])]
        if jobs <= 1 or len(tables) <= 1:
            return {f"{sc}.{t}": table_fingerprint(conn, sc, t, checksums, hashes.get((sc, t))) for sc, t in tables}
    todo: queue.Queue[tuple[str, str]] = queue.Queue()
    for table in tables:
        todo.put(table)
    result: dict[str, dict[str, Any]] = {}
    failures: list[BaseException] = []

    def work() -> None:
        try:
            with connect(s, dbname=dbname) as conn:
                while not failures:
                    try:
                        schema, table = todo.get_nowait()
                    except queue.Empty:
                        return
                    result[f"{schema}.{table}"] = table_fingerprint(conn, schema, table, checksums, hashes.get((schema, table)))
        except BaseException as exc:  # reported once every worker has stopped
            failures.append(exc)

    workers = [threading.Thread(target=work, name=f"pg-fingerprint-{i}") for i in range(min(jobs, len(tables)))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if failures:
        if isinstance(failures[0], PostgresError):
            raise failures[0]
        raise PostgresError(f"could not fingerprint the tables of {dbname!r}: {failures[0]}")
    return dict(sorted(result.items()))

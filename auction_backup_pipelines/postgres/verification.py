"""Restore checks for PostgreSQL: prove a backup restores, in scratch targets made for the check.

A backup nobody restores is a hope. The dump check restores the dump into a scratch database
and compares every table with the manifest; the PITR check recovers a scratch instance from
the base backup and the WAL archive to a moment just taken on the primary and compares every
table with the primary as of that moment. Both remove their scratch target afterwards, also
on failure, and never touch the primary's data. The weekly Dagster checks and
`auction-backup verify --restore` both call these functions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import shutil
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.client import (
    VerificationError,
    compare_fingerprints,
    connect,
    drop_database,
    table_fingerprints,
)
from auction_backup_pipelines.postgres.logical_day import scratch_dir
from auction_backup_pipelines.postgres.logical_dump import restore_logical
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings


@dataclass(frozen=True)
class DumpVerification:
    """A logical dump restored into a scratch database whose every table matched the manifest."""

    tables_compared: int
    rows_compared: int
    mismatches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class PitrVerification:
    """A scratch instance recovered to `target_time` whose every table matched the primary then."""

    target_time: str  # ISO 8601
    base_backup_used: str  # key prefix of the base backup recovery started from
    tables_compared: int
    rows_compared: int
    wal_files_replayed: int
    recovery_s: float
    mismatches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify_dump_restores(s: PostgresSettings, repo: Repository, backup: Backup) -> DumpVerification:
    """Restore `backup` into a scratch database `verify_<hex>`, compare, and always drop it."""
    scratch = f"verify_{secrets.token_hex(4)}"
    try:
        result = restore_logical(s, repo, backup, scratch)  # compares every table with the manifest
    finally:
        with connect(s, dbname="postgres") as admin:
            drop_database(admin, scratch)
    return DumpVerification(tables_compared=result.tables, rows_compared=result.rows_total)


def verify_pitr(s: PostgresSettings, repo: Repository, archive: WalArchive, timeout_s: float = 120) -> PitrVerification:
    """Recover a scratch instance to a moment T just taken on the primary and compare it with
    the primary's tables at T; the instance is always stopped and its folder removed."""
    with connect(s) as conn:  # the reference: the primary's tables at a moment T
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        target: dt.datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        reference = table_fingerprints(conn)
        conn.execute("COMMIT")
    if not wait_for_archived_time(archive, target, timeout=timeout_s):
        raise pitr.PitrError(
            f"the WAL archive does not reach {pitr.format_utc(target)} UTC after {timeout_s:g} s: is the receiver running?"
        )
    workdir = scratch_dir("verify-pitr-")
    try:
        result = pitr.restore_to_time(s, repo, archive, target, workdir / "instance")
        with result.instance(s.bin_dir) as instance, connect(instance.settings(s)) as conn:
            restored = table_fingerprints(conn)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    problems = compare_fingerprints(reference, restored)
    if problems:
        raise VerificationError("recovered tables differ from the primary at the target: " + "; ".join(problems[:10]))
    return PitrVerification(
        target_time=target.isoformat(),
        base_backup_used=result.base_backup,
        tables_compared=len(reference),
        rows_compared=sum(t["rows"] for t in reference.values()),
        wal_files_replayed=result.wal_files_staged,
        recovery_s=result.duration_s,
    )

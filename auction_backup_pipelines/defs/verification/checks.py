"""Weekly restore verification: asset checks that really restore the newest backup of each
asset into a scratch target and compare it with what the backup recorded.

Backups nobody restores are hopes. Each check restores into a target made for it (a scratch
database, a scratch PostgreSQL instance, scratch redis-servers, prefixed scratch topics) and
removes that target afterwards, also on failure. A mismatch fails the check with severity
ERROR and the differences in its metadata. The checks are unpartitioned (partitioned checks
are a preview API in Dagster 1.13) and name the partition they verified.
"""

import datetime as dt
import os
import secrets
import shutil
import time
from typing import Any, Callable

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetChecksDefinition,
    AssetKey,
    AssetSelection,
    DefaultScheduleStatus,
    MetadataValue,
    ScheduleDefinition,
    asset_check,
    define_asset_job,
)
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.postgres import logical_day
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.redis import backup as rb
from auction_backup_pipelines.kafka.records import admin_client, artifact_name
from auction_backup_pipelines.repository.repository import Backup, Repository
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time

from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY, REDIS_SNAPSHOT_KEY, topic_export_key
from ..shared.resources import BackupRepositoryResource, KafkaResource, PostgresResource


def _missing(repo: Repository, what: str) -> AssetCheckResult:
    return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, description=f"no {what} in {repo.describe()} to verify yet")


def _run(backup: Backup, verify: Callable[[], dict[str, Any]]) -> AssetCheckResult:
    """Run one verification and turn its outcome into a check result with timings."""
    meta: dict[str, Any] = {"partition": backup.partition, "backup_id": backup.backup_id}
    started = time.monotonic()
    try:
        result = verify()
    except Exception as exc:  # any failure to restore is a failed verification, reported, never raised
        meta["duration_s"] = MetadataValue.float(round(time.monotonic() - started, 2))
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=str(exc)[:2000], metadata=meta)
    meta["duration_s"] = MetadataValue.float(round(time.monotonic() - started, 2))
    meta.update({k: v if isinstance(v, (int, float)) else str(v) for k, v in result.items()})
    return AssetCheckResult(passed=True, metadata=meta)


# -- PostgreSQL -------------------------------------------------------------------------------


@asset_check(asset=LOGICAL_DUMP_KEY, name="dump_restores", pool="postgres",
             description="Weekly: the newest dump restores into a scratch database whose every table matches the manifest.")
def postgres_dump_restores(postgres: PostgresResource, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    repo = backup_repo.repository()
    backup = repo.latest(pg.SYSTEM, pg.LOGICAL_DUMP)
    if backup is None:
        return _missing(repo, "logical dump")
    s = postgres.settings()
    scratch = f"verify_{secrets.token_hex(4)}"

    def verify() -> dict[str, Any]:
        try:
            result = pg.restore_logical(s, repo, backup, scratch)
            return {"tables_compared": result["tables"], "rows_compared": result["rows_total"], "mismatches": 0}
        finally:
            with pg.connect(s, dbname="postgres") as admin:
                pg.drop_database(admin, scratch)

    return _run(backup, verify)


@asset_check(asset=BASE_BACKUP_KEY, name="pitr_restores", pool="postgres",
             description="Weekly: base backup + WAL recover a scratch instance to a moment just taken on the primary, "
             "and every table matches the primary as of that moment.")
def postgres_pitr_restores(postgres: PostgresResource, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    repo = backup_repo.repository()
    backup = repo.latest(pg.SYSTEM, "base_backup")
    if backup is None:
        return _missing(repo, "base backup")
    s = postgres.settings()
    archive = WalArchive(repo.backend)

    def verify() -> dict[str, Any]:
        with pg.connect(s) as conn:  # the reference: the primary's tables at a moment T
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            target = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            reference = pg.table_fingerprints(conn)
            conn.execute("COMMIT")
        if not wait_for_archived_time(archive, target, timeout=120):
            raise pitr.PitrError(f"the WAL archive does not reach {target:%Y-%m-%d %H:%M:%S} UTC after 120 s: is the receiver running?")
        workdir = logical_day.scratch_dir("verify-pitr-")
        try:
            result = pitr.restore_to_time(s, repo, archive, target, workdir / "instance")
            instance = pitr.RestoredInstance(workdir / "instance" / "data", result["port"], workdir / "instance" / "postgres.log")
            try:
                with pg.connect(instance.settings(s)) as conn:
                    restored = pg.table_fingerprints(conn)
            finally:
                instance.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        problems = pg.compare_fingerprints(reference, restored)
        if problems:
            raise pg.VerificationError("recovered tables differ from the primary at the target: " + "; ".join(problems[:10]))
        return {"target_time": target.isoformat(), "base_backup_used": result["base_backup"], "tables_compared": len(reference),
                "rows_compared": sum(t["rows"] for t in reference.values()), "wal_files_replayed": result["wal_files_staged"],
                "recovery_s": result["duration_s"], "mismatches": 0}

    return _run(backup, verify)


# -- Redis ------------------------------------------------------------------------------------


@asset_check(asset=REDIS_SNAPSHOT_KEY, name="snapshot_restores", pool="redis",
             description="Weekly: the newest snapshot loads into scratch redis-servers whose key counts per db and type, "
             "content digest and TTLs match the manifest.")
def redis_snapshot_restores(backup_repo: BackupRepositoryResource) -> AssetCheckResult:
    repo = backup_repo.repository()
    backup = repo.latest(rb.SYSTEM, rb.SNAPSHOT)
    if backup is None:
        return _missing(repo, "Redis snapshot")
    return _run(backup, lambda: rb.verify_snapshot(repo, backup))


# -- Kafka ------------------------------------------------------------------------------------


def _kafka_restore_check(topic: str) -> AssetChecksDefinition:
    @asset_check(asset=topic_export_key(topic), name="export_restores", pool="kafka",
                 description=f"Weekly: the newest export of {topic} replays into a scratch topic with matching "
                 "per-partition counts and checksums; the scratch topic is deleted afterwards.")
    def check(kafka: KafkaResource, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
        repo = backup_repo.repository()
        backup = repo.latest("kafka", artifact_name(topic))
        if backup is None:
            return _missing(repo, f"export of {topic}")
        prefix = f"verify-{secrets.token_hex(3)}-"

        def verify() -> dict[str, Any]:
            try:
                report = kafka_restore.restore_topics(repo, (backup.partition, backup.partition), [topic],
                                                      kafka.bootstrap_servers, topic_prefix=prefix)
            finally:
                admin = admin_client(kafka.bootstrap_servers)  # kept in a variable: a client destroyed
                futures = admin.delete_topics([prefix + topic], operation_timeout=30)  # early never sends the request
                for f in futures.values():
                    try:
                        f.result(30)
                    except Exception:  # never created (the restore failed early)
                        pass
            t = report["topics"][topic]
            return {"messages_compared": t["messages"], "scratch_topic": t["target"], "mismatches": 0}

        return _run(backup, verify)

    return check


def build_restore_checks(topics: tuple[str, ...]) -> list[AssetChecksDefinition]:
    """Every weekly restore check: the dump, PITR, the Redis snapshot and each Kafka topic's export."""
    return [postgres_dump_restores, postgres_pitr_restores, redis_snapshot_restores, *(_kafka_restore_check(t) for t in topics)]

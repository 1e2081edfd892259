"""What each restore engine's result becomes in the restore history (repository/restore_log.py).

The CLI restores and the Dagster restore jobs record the same thing, so the conversion from an
engine's result (LogicalRestoreResult, PitrResult, RedisRestoreResult, KafkaRestoreReport) to
records lives here once: which backup it came from, where it went, its RTO and the count it
proved. A Kafka restore replays several days of several topics, so it yields one record per
topic and day (each day's backup is its own asset partition), each carrying the whole replay's
duration as its RTO and that day's message count. `append_all` stores them and reports a
storage failure as a line instead of failing a restore that already succeeded.
"""

from __future__ import annotations

from collections.abc import Callable

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.kafka.records import artifact_name
from auction_backup_pipelines.kafka.restore import day_range
from auction_backup_pipelines.kafka.restore_report import KafkaRestoreReport
from auction_backup_pipelines.postgres.logical_dump import LogicalRestoreResult
from auction_backup_pipelines.postgres.pitr import PitrResult
from auction_backup_pipelines.redis.restore import RedisRestoreResult
from auction_backup_pipelines.repository import restore_log
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.restore_log import RestoreRecord

__all__ = ["append_all", "for_kafka", "for_logical", "for_pitr", "for_redis"]


def for_logical(result: LogicalRestoreResult, by: str, run_id: str | None = None) -> list[RestoreRecord]:
    details = {"tables": result.tables, "replaced_existing": result.replaced_existing, "staged_by": result.staged_by}
    return [
        restore_log.new_record(
            BackupRef.parse(result.backup),
            kind="logical_dump",
            target=f"database {result.target_db}",
            rto_seconds=result.duration_s,
            verified=result.rows_total,
            verified_unit="rows",
            by=by,
            run_id=run_id,
            details=details,
        )
    ]


def for_pitr(result: PitrResult, by: str, run_id: str | None = None) -> list[RestoreRecord]:
    """PITR starts from a base backup: the record goes on that backup (its partition)."""
    details = {
        "target_time": result.target_time,
        "reached_transaction_time": result.reached_transaction_time or "",
        "reached_lsn": result.reached_lsn,
        "wal_files_staged": result.wal_files_staged,
        **result.phases,  # the RTO's parts: verify, extract + stage WAL, recover
    }
    return [
        restore_log.new_record(
            BackupRef.parse(result.base_backup),
            kind="pitr",
            target=f"{result.data_dir} (port {result.port})",
            rto_seconds=result.duration_s,
            verified=None,
            verified_unit="",
            by=by,
            run_id=run_id,
            details=details,
        )
    ]


def for_redis(result: RedisRestoreResult, by: str, run_id: str | None = None) -> list[RestoreRecord]:
    details = {
        "keys_restored": result.keys_restored,
        "digest": result.digest,
        "cluster_target": result.cluster_target,
        "copied_by": result.copied_by,
    }
    return [
        restore_log.new_record(
            BackupRef.parse(result.backup),
            kind="snapshot",
            target=result.target,
            rto_seconds=result.duration_s,
            verified=result.keys_verified,
            verified_unit="keys",
            by=by,
            run_id=run_id,
            details=details,
        )
    ]


def for_kafka(repo: Repository, report: KafkaRestoreReport, by: str, run_id: str | None = None) -> list[RestoreRecord]:
    """One record per topic and day replayed, on that day's backup (the one the replay read)."""
    records = []
    days = f"{report.days[0]}..{report.days[1]}"
    for topic, restored in report.topics.items():
        for day in day_range(*report.days):
            backup = repo.get(KAFKA, artifact_name(topic), day)
            messages = sum(int(p.get("messages", 0)) for p in backup.metadata.get("partitions", {}).values())
            records.append(
                restore_log.new_record(
                    backup.ref,
                    kind="topic_replay",
                    target=f"{restored.target} @ {report.target_bootstrap}",
                    rto_seconds=report.duration_s,
                    verified=messages,
                    verified_unit="messages",
                    by=by,
                    run_id=run_id,
                    details={"replayed_days": days, "topic_messages_verified": restored.messages},
                )
            )
    return records


def append_all(repo: Repository, build: Callable[[], list[RestoreRecord]]) -> tuple[list[RestoreRecord], list[str]]:
    """Build the records of a finished restore and store each: (records built, one line per
    record that could not be built or stored). Never raises: the restore itself succeeded."""
    try:
        records = build()
    except (BackupError, OSError) as exc:
        return [], [f"restore not recorded in {repo.describe()}: {exc}"]
    problems: list[str] = []
    for record in records:
        try:
            restore_log.append(repo, record)
        except (BackupError, OSError) as exc:
            problems.append(f"restore record of {record.backup} not stored in {repo.describe()}: {exc}")
    return records, problems

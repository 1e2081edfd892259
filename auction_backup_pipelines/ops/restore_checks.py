"""The restore checks as one list: which asset, which check, which backup, and running one.

The weekly Dagster checks (one per asset) and `auction-backup verify --restore` (which runs
while Dagster is stopped) must verify the same set: the newest logical dump, the newest base
backup (by point-in-time recovery), the newest Redis snapshot and the newest export of every
configured Kafka topic. `planned_checks` is that set; `run_check` runs one through its
system's verification engine and reports any failure as a failed outcome, with the reason;
`record_verdict` stores the outcome on the backup it tested, for retention to read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines import errors
from auction_backup_pipelines.errors import BackupError, ConfigurationError
from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.kafka.records import artifact_name
from auction_backup_pipelines.postgres.base_backup import BASE_BACKUP
from auction_backup_pipelines.postgres.client import SYSTEM as POSTGRES
from auction_backup_pipelines.postgres.logical_dump import LOGICAL_DUMP
from auction_backup_pipelines.redis.client import SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.repository import verdicts
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings

SYSTEMS = (POSTGRES, REDIS, KAFKA)

# check names, as the Dagster asset checks are named
DUMP_RESTORES = "dump_restores"
PITR_RESTORES = "pitr_restores"
SNAPSHOT_RESTORES = "snapshot_restores"
EXPORT_RESTORES = "export_restores"

# the figures a one-line summary shows, per check
KEY_FIGURES = {
    DUMP_RESTORES: ("tables_compared", "rows_compared"),
    PITR_RESTORES: ("target_time", "tables_compared", "rows_compared", "wal_files_replayed", "recovery_s"),
    SNAPSHOT_RESTORES: ("keys", "digest"),
    EXPORT_RESTORES: ("messages_compared",),
}


@dataclass(frozen=True)
class RestoreCheck:
    """One restore check to run: the asset (system/artifact), the check's name, the newest backup."""

    system: str
    artifact: str
    name: str
    what: str  # the backup in words, for "no <what> to verify yet"
    backup: Backup | None  # None: nothing to verify yet
    topic: str | None = None

    @property
    def asset(self) -> str:
        return f"{self.system}/{self.artifact}"


@dataclass(frozen=True)
class CheckOutcome:
    """The verdict of one restore check: the engine's figures when it passed, the reason when not."""

    check: RestoreCheck
    passed: bool
    figures: dict[str, Any]
    error: str | None
    duration_s: float
    conclusive: bool = True  # False: the check could not run to a verdict on the backup (a service down, ...)

    def as_dict(self) -> dict[str, Any]:
        b = self.check.backup
        return {
            "check": self.check.name,
            "asset": self.check.asset,
            "partition": b.partition if b else None,
            "backup_id": b.backup_id if b else None,
            "passed": self.passed,
            "error": self.error,
            "duration_s": self.duration_s,
            **self.figures,
        }

    def summary(self) -> str:
        """One line: PASS/FAIL, asset, partition, check, then key figures or the reason."""
        b = self.check.backup
        head = (
            f"{'PASS' if self.passed else 'FAIL'}  {self.check.asset:<36} {b.partition if b else '-':<10}  {self.check.name:<17}"
        )
        if not self.passed:
            return f"{head} {self.error}"
        figures = " ".join(f"{k}={self.figures[k]}" for k in KEY_FIGURES.get(self.check.name, ()) if k in self.figures)
        return f"{head} {figures} ({self.duration_s:g} s)"


def planned_checks(repo: Repository, kafka_topics: Sequence[str], systems: Iterable[str] | None = None) -> list[RestoreCheck]:
    """The restore checks of `systems` (default: all), each with the newest backup of its asset."""
    wanted = set(SYSTEMS if systems is None else systems)
    checks = []
    if POSTGRES in wanted:
        checks.append(RestoreCheck(POSTGRES, LOGICAL_DUMP, DUMP_RESTORES, "logical dump", repo.latest(POSTGRES, LOGICAL_DUMP)))
        checks.append(RestoreCheck(POSTGRES, BASE_BACKUP, PITR_RESTORES, "base backup", repo.latest(POSTGRES, BASE_BACKUP)))
    if REDIS in wanted:
        checks.append(RestoreCheck(REDIS, SNAPSHOT, SNAPSHOT_RESTORES, "Redis snapshot", repo.latest(REDIS, SNAPSHOT)))
    if KAFKA in wanted:
        for topic in kafka_topics:
            artifact = artifact_name(topic)
            checks.append(
                RestoreCheck(KAFKA, artifact, EXPORT_RESTORES, f"export of {topic}", repo.latest(KAFKA, artifact), topic)
            )
    return checks


def run_check(
    check: RestoreCheck, repo: Repository, postgres: PostgresSettings, kafka: KafkaSettings | str, pitr_timeout_s: float = 120
) -> CheckOutcome:
    """Run one restore check into its scratch target; a failure is an outcome, never raised.
    `kafka`: the cluster's settings (security included), or a bare PLAINTEXT bootstrap address."""
    started = time.monotonic()
    if check.backup is None:
        return CheckOutcome(check, False, {}, f"no {check.what} in {repo.describe()} to verify yet", 0.0)
    try:
        figures = _verify(check, check.backup, repo, postgres, kafka, pitr_timeout_s)
    except Exception as exc:  # any failure to restore is a failed verification, reported with its reason
        # Only a VerificationError (corrupt, truncated, or restored into something else than the
        # backup recorded) is a verdict on the backup; a scratch target that would not start or a
        # source that is down says nothing about it, and must not make retention distrust it.
        conclusive = isinstance(exc, errors.VerificationError)
        return CheckOutcome(
            check, False, {}, str(exc)[:2000] or type(exc).__name__, round(time.monotonic() - started, 2), conclusive
        )
    return CheckOutcome(check, True, figures, None, round(time.monotonic() - started, 2))


def tested_backup(outcome: CheckOutcome) -> BackupRef | None:
    """The backup a check's outcome is about: the planned one, or for a passed PITR check the base
    backup recovery really started from (the newest may not reach the target yet)."""
    used = outcome.figures.get("base_backup_used") if outcome.passed else None
    if isinstance(used, str) and used:
        with contextlib.suppress(ConfigurationError):
            return BackupRef.parse(used)
    backup = outcome.check.backup
    return backup.ref if backup is not None else None


def record_verdict(repo: Repository, outcome: CheckOutcome, by: str) -> str:
    """Record the outcome on the backup it tested (repository/verdicts.py), where retention reads
    it; returns one line saying where, or why nothing was recorded (never raises: a verdict that
    cannot be stored must not hide the verification's own result)."""
    ref = tested_backup(outcome)
    if ref is None:
        return "no verdict recorded: there was no backup to verify"
    try:
        if not outcome.conclusive and verdicts.read(repo, ref) is not None:
            return f"verdict on {ref.key} unchanged: the check could not run to a verdict on the backup"
        verdict = verdicts.record(
            repo, ref, outcome.check.name, outcome.passed, by, outcome.error, outcome.figures, conclusive=outcome.conclusive
        )
    except (BackupError, OSError) as exc:
        return f"verdict on {ref.key} NOT recorded: {exc}"
    return f"verdict {verdict.result} recorded on {ref.key}"


def _verify(
    check: RestoreCheck,
    backup: Backup,
    repo: Repository,
    postgres: PostgresSettings,
    kafka: KafkaSettings | str,
    pitr_timeout_s: float,
) -> dict[str, Any]:
    # each system's engine is imported when its check runs: a check of one system needs no other
    if check.name == DUMP_RESTORES:
        from auction_backup_pipelines.postgres.verification import verify_dump_restores

        return verify_dump_restores(postgres, repo, backup).as_dict()
    if check.name == PITR_RESTORES:
        from auction_backup_pipelines.postgres.verification import verify_pitr
        from auction_backup_pipelines.postgres.wal_archive import WalArchive

        return verify_pitr(postgres, repo, WalArchive(repo.backend), timeout_s=pitr_timeout_s).as_dict()
    if check.name == SNAPSHOT_RESTORES:
        from auction_backup_pipelines.redis.verification import verify_snapshot

        return verify_snapshot(repo, backup).as_dict()
    if check.name == EXPORT_RESTORES:
        from auction_backup_pipelines.kafka.verification import verify_topic_export

        assert check.topic is not None
        return verify_topic_export(repo, backup, check.topic, kafka).as_dict()
    raise ValueError(f"unknown restore check {check.name!r}")

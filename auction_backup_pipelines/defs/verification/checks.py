"""Weekly restore verification: asset checks that really restore the newest backup of each
asset into a scratch target and compare it with what the backup recorded.

Backups nobody restores are hopes. Each check runs one of `ops.restore_checks` — exactly what
`auction-backup verify --restore` runs while Dagster is down — into a target made for it (a
scratch database, a scratch PostgreSQL instance, scratch redis-servers, prefixed scratch topics)
that the engine removes afterwards, also on failure. A mismatch fails the check with severity
ERROR and the reason in its description. Either way the verdict is recorded on the backup it
tested (repository/verdicts.py): retention never keeps a backup whose latest verdict failed as
its "last good backup". The checks are unpartitioned (partitioned checks are a
preview API in Dagster 1.13) and name the partition they verified.

Only the weekly verification job runs them. A backfill or a materialization of a backup asset
would otherwise run every check of the asset, these included (a Kafka backfill of 11-28 would
restore the 12-01 export). Each carries an automation condition that never requests it: Dagster
leaves checks with their own condition out of the runs it builds for assets (backfills, run
requests), and the weekly job selects them by name.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    AutomationCondition,
    MetadataValue,
    asset_check,
)

from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.ops.restore_checks import (
    DUMP_RESTORES,
    EXPORT_RESTORES,
    PITR_RESTORES,
    SNAPSHOT_RESTORES,
    CheckOutcome,
    planned_checks,
    record_verdict,
    run_check,
)
from auction_backup_pipelines.postgres.client import SYSTEM as POSTGRES
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.settings import PostgresSettings

from ..shared.keys import BASE_BACKUP_KEY, LOGICAL_DUMP_KEY, REDIS_SNAPSHOT_KEY, topic_export_key


def check_result(outcome: CheckOutcome, verdict: str = "") -> AssetCheckResult:
    """A restore check's outcome as Dagster shows it: nothing to verify yet is a warning, a failure an error.
    `verdict`: where its verdict was recorded for retention (or why not)."""
    backup = outcome.check.backup
    if backup is None:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN, description=outcome.error)
    meta: dict = {
        "partition": backup.partition,
        "backup_id": backup.backup_id,
        "duration_s": MetadataValue.float(outcome.duration_s),
    }
    if verdict:
        meta["verdict"] = verdict
    if not outcome.passed:
        return AssetCheckResult(passed=False, severity=AssetCheckSeverity.ERROR, description=outcome.error, metadata=meta)
    meta.update({k: v if isinstance(v, (int, float)) else str(v) for k, v in outcome.figures.items()})
    return AssetCheckResult(passed=True, metadata=meta)


ONLY_WEEKLY_JOB = (AutomationCondition.initial_evaluation() & ~AutomationCondition.initial_evaluation()).with_label(
    "never by automation: only weekly_verification_job runs this check"
)
"""Never true: keeps the restore checks out of backfills and asset runs (see the module docstring)."""


def restore_check(
    asset_key: AssetKey, system: str, name: str, description: str, topic: str | None = None
) -> AssetChecksDefinition:
    """The weekly check `name` on `asset_key`: the newest backup of the asset restored and compared.
    It needs only its own system's resource, so an unset PostgreSQL password fails no Redis check."""
    topics = (topic,) if topic else ()
    needs = {"backup_repo", *({POSTGRES: ["postgres"], KAFKA: ["kafka"]}.get(system, []))}

    @asset_check(
        asset=asset_key,
        name=name,
        pool=system,
        description=description,
        required_resource_keys=needs,
        automation_condition=ONLY_WEEKLY_JOB,
    )
    def check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        resources = context.resources
        repo = resources.backup_repo.repository()
        postgres = resources.postgres.settings() if "postgres" in needs else PostgresSettings()
        kafka = resources.kafka.settings() if "kafka" in needs else ""
        (planned,) = [c for c in planned_checks(repo, topics, [system]) if c.name == name]
        outcome = run_check(planned, repo, postgres, kafka)
        recorded = record_verdict(repo, outcome, by=context.run.job_name)  # for retention's "last good backup"
        context.log.info(recorded)
        return check_result(outcome, recorded)

    return check


def build_restore_checks(topics: tuple[str, ...]) -> list[AssetChecksDefinition]:
    """Every weekly restore check: the dump, PITR, the Redis snapshot and each Kafka topic's export."""
    return [
        restore_check(
            LOGICAL_DUMP_KEY,
            POSTGRES,
            DUMP_RESTORES,
            "Weekly: the newest dump restores into a scratch database whose every table matches the manifest.",
        ),
        restore_check(
            BASE_BACKUP_KEY,
            POSTGRES,
            PITR_RESTORES,
            "Weekly: base backup + WAL recover a scratch instance to a moment just taken on the primary, "
            "and every table matches the primary as of that moment.",
        ),
        restore_check(
            REDIS_SNAPSHOT_KEY,
            REDIS,
            SNAPSHOT_RESTORES,
            "Weekly: the newest snapshot loads into scratch redis-servers whose key counts per db and type, "
            "content digest and TTLs match the manifest.",
        ),
        *(
            restore_check(
                topic_export_key(t),
                KAFKA,
                EXPORT_RESTORES,
                f"Weekly: the newest export of {t} replays into a scratch topic with matching per-partition "
                "counts and checksums; the scratch topic is deleted afterwards.",
                topic=t,
            )
            for t in topics
        ),
    ]

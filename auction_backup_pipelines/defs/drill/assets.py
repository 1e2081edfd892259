"""The weekly whole-platform recovery drill as an asset with one check, `platform_drill`.

Each run calls `ops.drill.engine.run_drill`, exactly what `auction-backup drill` runs: every
system recovered to one moment T in scratch targets (removed afterwards, also when the run is
terminated), measured, and checked against the cross-system invariants. The materialization
records T and, per system, the recovery time and data-loss window as numbers, so the asset's
page plots them week after week; the check fails (ERROR) on any violation or missing piece,
with the reason in its description. A refusal (no T inside every window) is recorded the same
way, as one line; a terminated run fails its step in one line, never with a traceback, after the
scratch targets are removed.
"""

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops.drill.engine import DrillReport, run_drill
from auction_backup_pipelines.ops.drill.window import DrillRefused

from ..shared.refusals import RefusalFailure

PLATFORM_DRILL_KEY = AssetKey(["platform", "recovery_drill"])
CHECK_NAME = "platform_drill"


def drill_metadata(report: DrillReport) -> dict[str, Any]:
    """T, why, and per system rto/rpo as floats (plotted by the UI), plus the invariants' verdicts."""
    meta: dict[str, Any] = {
        "at": report.at.isoformat(),
        "reason": report.reason,
        "platform_rto_s": MetadataValue.float(report.platform_rto_s),
        "invariants_failed": MetadataValue.int(sum(not i.passed for i in report.invariants)),
    }
    for s in report.systems:
        if s.rto_s is not None:
            meta[f"{s.system}_rto_s"] = MetadataValue.float(s.rto_s)
        if s.rpo_s is not None:
            meta[f"{s.system}_rpo_s"] = MetadataValue.float(s.rpo_s)
    for i in report.invariants:
        meta[f"invariant_{i.name}"] = ("passed " if i.passed else "FAILED ") + " ".join(f"{k}={v}" for k, v in i.counts.items())
    return meta


def build_platform_drill() -> AssetsDefinition:
    @asset(
        key=PLATFORM_DRILL_KEY,
        group_name="verification",
        kinds={"postgres", "kafka", "redis"},
        check_specs=[
            AssetCheckSpec(
                CHECK_NAME,
                asset=PLATFORM_DRILL_KEY,
                description="Weekly: PostgreSQL (PITR), Kafka (exports + live log) and Redis (snapshot) recovered to one "
                "moment T in scratch targets agree with each other; fails on any violation or missing piece.",
            )
        ],
        required_resource_keys={"backup_repo", "postgres", "kafka"},
        pool="drill",
        description="Whole-platform recovery drill: recovery time and data-loss window of each system at T (Sunday 06:00 UTC).",
    )
    def platform_drill(context: AssetExecutionContext) -> MaterializeResult:
        resources = context.resources
        kafka_settings = resources.kafka.settings()  # through the guard, like every resource
        try:
            report = run_drill(
                resources.backup_repo.repository(),
                resources.postgres.settings(),
                kafka_settings,
                kafka_settings.topics,
                progress=context.log.info,
            )
        except DrillRefused as exc:  # no T inside every window: a verdict, recorded as a failed check
            line = str(exc).splitlines()[0]
            context.log.error(line)
            return MaterializeResult(
                metadata={"refused": line},
                check_results=[
                    AssetCheckResult(check_name=CHECK_NAME, passed=False, severity=AssetCheckSeverity.ERROR, description=line)
                ],
            )
        except BackupError as exc:  # interrupted (run terminated) or unreadable repository: the step fails, in one line
            line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RefusalFailure(line, {"error": line}) from None
        meta = drill_metadata(report)
        problems = report.problems()
        return MaterializeResult(
            metadata=meta,
            check_results=[
                AssetCheckResult(
                    check_name=CHECK_NAME,
                    passed=not problems,
                    severity=AssetCheckSeverity.ERROR,
                    description="; ".join(problems)[:2000] if problems else f"T {report.at.isoformat()}: every invariant holds",
                    metadata={k: v for k, v in meta.items() if k.endswith("_s")},
                )
            ],
        )

    return platform_drill

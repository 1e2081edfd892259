"""The weekly drill in Dagster: its job and schedule, numeric objectives in the metadata, and a
refusal recorded as a failed `platform_drill` check in one line (the drill itself is exercised
on the real stack in tests/ops/test_drill.py)."""

from __future__ import annotations

import datetime as dt

from dagster import AssetCheckKey, AssetCheckSeverity, DagsterInstance, FloatMetadataValue, materialize

from auction_backup_pipelines.defs.drill.assets import CHECK_NAME, PLATFORM_DRILL_KEY, build_platform_drill, drill_metadata
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, KafkaResource, PostgresResource
from auction_backup_pipelines.ops.drill.checks import InvariantOutcome
from auction_backup_pipelines.ops.drill.engine import DrillReport, SystemOutcome
from tests.dagster_defs import defs


def test_the_weekly_drill_runs_sunday_after_the_weekly_verification():
    job = defs.resolve_job_def("platform_drill_job")
    assert AssetCheckKey(PLATFORM_DRILL_KEY, CHECK_NAME) in job.asset_layer.asset_graph.asset_check_keys
    schedules = {s.name: s for s in defs.get_repository_def().schedule_defs}
    (drill,) = [s for s in schedules.values() if s.job_name == "platform_drill_job"]
    (weekly,) = [s for s in schedules.values() if s.job_name == "weekly_verification_job"]
    assert (drill.cron_schedule, drill.execution_timezone) == ("0 6 * * 0", "UTC")
    assert weekly.cron_schedule == "0 5 * * 0"  # the verification an hour before


def test_objectives_are_numbers_per_system():
    report = DrillReport(
        at=dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC),
        reason="given",
        windows=[],
        systems=[
            SystemOutcome("postgres", True, 4.2, 0.5),
            SystemOutcome("kafka", True, 0.3, 43200.0),
            SystemOutcome("redis", False),
        ],
        invariants=[InvariantOutcome("bids_match_bid_events", True, {"bids": 3})],
        platform_rto_s=5.1,
    )
    meta = drill_metadata(report)
    assert isinstance(meta["postgres_rto_s"], FloatMetadataValue) and meta["postgres_rto_s"].value == 4.2
    assert meta["kafka_rpo_s"].value == 43200.0 and meta["platform_rto_s"].value == 5.1
    assert "redis_rto_s" not in meta  # not recovered: no figure rather than a made-up one
    assert meta["invariant_bids_match_bid_events"] == "passed bids=3"


def test_a_refused_drill_fails_its_check_in_one_line(tmp_path):
    resources = {
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "empty")),
        "postgres": PostgresResource(),
        "kafka": KafkaResource(topics=["drill-defs-topic"]),
    }
    result = materialize([build_platform_drill()], resources=resources, instance=DagsterInstance.ephemeral())
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CHECK_NAME and not evaluation.passed
    assert evaluation.severity == AssetCheckSeverity.ERROR
    assert "no moment can be recovered" in evaluation.description and "\n" not in evaluation.description
    assert "no export of drill-defs-topic" in evaluation.description

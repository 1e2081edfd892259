"""Daily integrity checks verify the partition their run wrote, and backfills leave the weekly
restore checks alone.

Before, every integrity check read the newest backup: a backfill of past days verified the
newest backup once per day and the backfilled days never, and a backfill of a Kafka day ran
the weekly restore check on another day's export.
"""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from dagster import AssetCheckKey, DagsterInstance
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests_with_backfill_policies
from dagster._core.definitions.events import AssetKeyPartitionKey

from auction_backup_pipelines.defs.shared.integrity import MATERIALIZED, RUN_PARTITIONS
from auction_backup_pipelines.defs.shared.keys import REDIS_SNAPSHOT_KEY
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, RedisResource
from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM
from auction_backup_pipelines.redis.scratch import scratch_server
from tests.dagster_defs import defs
from tests.redis.test_backup_restore import FAST_SYNC, free_port

pytestmark = pytest.mark.integration

LATE = {"ops": {"redis__snapshot": {"config": {"allow_late_capture": True}}}}
INTEGRITY = AssetCheckKey(REDIS_SNAPSHOT_KEY, "snapshot_integrity")
RESTORES = AssetCheckKey(REDIS_SNAPSHOT_KEY, "snapshot_restores")


@pytest.fixture
def resources(tmp_path):
    """The test's own redis-server (a few keys under its own prefix) and repository."""
    with contextlib.ExitStack() as stack:
        port = free_port()
        (tmp_path / "redis").mkdir()
        srv = stack.enter_context(scratch_server(tmp_path / "redis", port=port, extra_args=FAST_SYNC))
        c = srv.client()
        for i in range(20):
            c.set(f"partition-checks:{i}", f"value {i}")
        yield {
            "redis": RedisResource(host="127.0.0.1", port=port),
            "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
        }


@pytest.fixture
def late_day(on_time_day) -> dt.date:
    """A backfill's day: Redis keeps no history, so a late capture."""
    return on_time_day - dt.timedelta(days=3)


def checks_of(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def written_backup_id(result) -> str:
    (mat,) = result.asset_materializations_for_node("redis__snapshot")
    return mat.metadata["backup_id"].value


def test_each_run_checks_its_own_partition_and_damage_shows_on_that_partition_only(resources, tmp_path, on_time_day, late_day):
    instance = DagsterInstance.ephemeral()
    job = defs.resolve_job_def("redis_backup_job")
    # the snapshot and its integrity check, without the offsite copy (the stack's offsite store is shared)
    backup = job.get_subset(asset_selection={REDIS_SNAPSHOT_KEY}, asset_check_selection={INTEGRITY})
    runs = {}
    for day, config in ((on_time_day, None), (late_day, LATE)):  # the older day last: the newest backup is not its own
        result = backup.execute_in_process(
            partition_key=day.isoformat(), run_config=config, resources=resources, instance=instance, raise_on_error=False
        )
        check = checks_of(result)["snapshot_integrity"]
        assert check.passed, check.description
        assert check.metadata["partition"].value == day.isoformat()
        assert check.metadata["backup_id"].value == written_backup_id(result)
        assert check.metadata["verified"].value == MATERIALIZED
        runs[day] = result

    # Damage the older day's snapshot: a check run for that partition fails and names it; the
    # newer partition's still passes (a check that read "the newest" would pass both).
    repo = resources["backup_repo"].repository()
    older = repo.get(SYSTEM, SNAPSHOT, late_day)
    assert older.backup_id == written_backup_id(runs[late_day])
    entry = older.files[0]
    stored = repo.backend.root / older.object_key(entry)
    stored.write_bytes(stored.read_bytes()[: entry.stored_size // 2])

    only_check = job.get_subset(asset_selection=set(), asset_check_selection={INTEGRITY})
    verdicts = {}
    for day in (late_day, on_time_day):
        result = only_check.execute_in_process(
            tags={"dagster/partition": day.isoformat()}, resources=resources, instance=instance, raise_on_error=False
        )
        verdicts[day] = checks_of(result)["snapshot_integrity"]
        assert verdicts[day].metadata["verified"].value == RUN_PARTITIONS
        assert verdicts[day].metadata["partition"].value == day.isoformat()
    assert not verdicts[late_day].passed and verdicts[late_day].severity.value == "ERROR"
    assert older.prefix in verdicts[late_day].description and entry.key in verdicts[late_day].description
    assert verdicts[on_time_day].passed


def test_a_backfill_runs_the_integrity_check_but_not_the_weekly_restore_check(resources, late_day):
    """The run requests a backfill's daemon builds (the same function) carry only the checks
    without an automation condition of their own; the weekly restore checks stay out."""
    instance = DagsterInstance.ephemeral()
    days = [late_day, late_day + dt.timedelta(days=1)]
    requests = build_run_requests_with_backfill_policies(
        asset_partitions=[AssetKeyPartitionKey(REDIS_SNAPSHOT_KEY, d.isoformat()) for d in days],
        asset_graph=defs.resolve_asset_graph(),
        dynamic_partitions_store=instance,
    )
    assert sorted(r.partition_key for r in requests) == [d.isoformat() for d in days]  # one run per day
    for request in requests:
        assert request.asset_check_keys is not None  # None would mean "every check of the asset"
        assert INTEGRITY in request.asset_check_keys and RESTORES not in request.asset_check_keys

    # One of those runs, executed as the backfill would: its own day checked, no restore check run.
    request = requests[0]
    job = defs.resolve_implicit_job_def_def_for_assets([REDIS_SNAPSHOT_KEY])
    assert job is not None
    run = job.get_subset(asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys))
    result = run.execute_in_process(
        partition_key=request.partition_key,
        tags={**request.tags, "dagster/backfill": "partitionchecks"},
        run_config=LATE,
        resources=resources,
        instance=instance,
        raise_on_error=False,
    )
    executed = checks_of(result)
    assert "snapshot_restores" not in executed
    assert executed["snapshot_integrity"].passed
    assert executed["snapshot_integrity"].metadata["partition"].value == request.partition_key

    # The weekly job still runs it.
    weekly = defs.resolve_job_def("weekly_verification_job")
    assert RESTORES in weekly.asset_layer.asset_graph.asset_check_keys

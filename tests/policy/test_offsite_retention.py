"""The offsite repository is pruned by the same policy, on the real S3-compatible server (S3Proxy).

Synthetic backups of N days (tests/ops/synthetic_backups.py) are written locally and copied
offsite on a prefix of this test; then `auction-backup prune` (run as an operator runs it) and
the retention sensor + cleanup job prune the copies to the policy, with the same rails.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, build_sensor_context

from auction_backup_pipelines.defs.retention import jobs as ret
from auction_backup_pipelines.defs.retention.sensors import build_retention_sensor
from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.policy import offsite_retention, pruning, retention
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings
from tests.ops.synthetic_backups import redis_snapshot

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=i) for i in range(1, 13)]  # 12 days, newest first
OFFSITE_DAILY = 3


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """A local repository with DAYS of redis snapshots, all copied to a fresh offsite prefix."""
    prefix = f"test-{uuid.uuid4().hex[:10]}-offsite-retention"
    monkeypatch.setenv("OFFSITE_S3_PREFIX", prefix)
    monkeypatch.setenv("OFFSITE_RETENTION_DAILY", str(OFFSITE_DAILY))
    monkeypatch.setenv("BACKUP_ROOT", str(tmp_path / "backups"))
    monkeypatch.delenv("RETENTION_DRY_RUN", raising=False)
    current_settings.cache_clear()
    settings = OffsiteSettings.from_env()
    local = Repository.local(str(tmp_path / "backups"))
    remote = offsite.repository_from_settings(settings)
    for day in DAYS:
        redis_snapshot(local, day)
    assert len(offsite.copy_all(local, remote)) == len(DAYS)
    yield local, remote, settings
    current_settings.cache_clear()
    s3 = remote.storage
    s3.remove_temporaries()
    s3.delete_many(o.key for o in s3.list())


def days(repo: Repository) -> set[str]:
    return {b.partition for b in repo.list("redis", "snapshot")}


def newest(n: int) -> set[str]:
    return {d.isoformat() for d in DAYS[:n]}


def prune_cli(*args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "prune", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_offsite_policy_is_the_local_one_with_each_set_count_overridden():
    same = offsite_retention.offsite_policies(OffsiteSettings(bucket="b"))
    assert dict(same) == dict(retention.DEFAULT_POLICIES)
    monthly = offsite_retention.offsite_policies(OffsiteSettings(bucket="b", retention_monthly=24))
    assert monthly["postgres/*"] == retention.Policy(daily=7, weekly=4, monthly=24)
    assert monthly["redis/*"] == retention.Policy(daily=7, weekly=0, monthly=24)
    with pytest.raises(ConfigurationError, match="OFFSITE_RETENTION_WEEKLY"):
        OffsiteSettings.from_env({"OFFSITE_RETENTION_WEEKLY": "-1"})


def test_cli_prunes_both_repositories_offsite_by_its_own_counts_with_pins_and_dry_run(stores):
    local, remote, _ = stores
    everything = {d.isoformat() for d in DAYS}

    dry = prune_cli("--dry-run")
    assert "== local repository" in dry.stdout and "== offsite repository" in dry.stdout
    would = [line.split() for line in dry.stdout.splitlines() if line.startswith(pruning.WOULD_DELETE)]
    offsite_would = {parts[3].split("/")[2] for parts in would if parts[2] == "offsite"}
    assert offsite_would == everything - newest(OFFSITE_DAILY)
    assert days(local) == everything and days(remote) == everything  # a dry run deletes nothing

    # A day pinned locally (`auction-backup pin` writes there) is kept offsite too.
    pinned = DAYS[-1].isoformat()
    pruning.pin(local, "redis", "snapshot", pinned, note="audit")

    done = prune_cli("--offsite")
    assert "== local repository" not in done.stdout
    assert days(remote) == newest(OFFSITE_DAILY) | {pinned}
    assert days(local) == everything  # --offsite leaves the local repository alone

    prune_cli()  # both: the local repository keeps redis's 7 daily backups, and the pinned day
    assert days(local) == newest(7) | {pinned}
    assert days(remote) == newest(OFFSITE_DAILY) | {pinned}
    for b in remote.list():
        remote.verify(b)  # what is left offsite is whole


def test_last_good_backup_offsite_is_never_pruned(stores):
    local, remote, settings = stores
    # Every offsite copy but the oldest is recorded as failed: the oldest is the last good one.
    for b in remote.list("redis", "snapshot")[1:]:
        failed = dataclasses.replace(b, metadata={**b.metadata, "verification": "failed"})
        with remote.backend.writer(b.manifest_key) as f:
            f.write(failed.to_json())
    # Even with no daily backups kept offsite at all, the rail keeps the last good one.
    target = offsite_retention.offsite_target(remote, local, dataclasses.replace(settings, retention_daily=0))
    kept = {d.backup.day.isoformat(): d.reasons for d in offsite_retention.plan(target) if d.keep}
    assert kept == {DAYS[-1].isoformat(): (retention.LAST_GOOD,)}


def test_sensor_and_cleanup_job_prune_offsite_and_name_the_repository(stores):
    local, remote, settings = stores
    resource = BackupRepositoryResource(root=str(local.backend.root))
    instance = DagsterInstance.ephemeral()
    ctx = build_sensor_context(instance=instance, resources={"backup_repo": resource})
    [request] = build_retention_sensor(3600, False, settings).evaluate_tick(ctx).run_requests
    cfg = request.run_config["ops"][ret.CLEANUP_OP]["config"]
    doomed_local = {d.isoformat() for d in DAYS[7:]}
    doomed_offsite = {d.isoformat() for d in DAYS[OFFSITE_DAILY:]}
    assert {k.split("/")[2] for k in cfg["backup_keys"]} == doomed_local
    assert {k.split("/")[2] for k in cfg["offsite_backup_keys"]} == doomed_offsite

    result = ret.cleanup_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources={"backup_repo": resource}
    )
    assert result.success
    assert days(local) == newest(7) and days(remote) == newest(OFFSITE_DAILY)
    outcomes = result.output_for_node(ret.CLEANUP_OP)
    assert {k.split("/")[2] for k in outcomes[pruning.DELETED] if k.startswith("offsite:")} == doomed_offsite
    observed = instance.fetch_observations(AssetKey(["offsite", "redis", "snapshot"]), limit=100).records
    assert {r.event_log_entry.asset_observation.partition for r in observed} == doomed_offsite

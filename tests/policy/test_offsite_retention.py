"""The offsite repository is pruned by the same policy, on the real S3-compatible server (S3Proxy).

Synthetic backups of N days (tests/ops/synthetic_backups.py) are written locally and copied
offsite on a prefix of this test; then `auction-backup prune` (run as an operator runs it) and
the retention sensor + cleanup job prune the copies to the policy, with the same rails. Synthetic
base backups (start/stop LSNs) and a WAL archive copied offsite show the offsite WAL pruned by
the local WAL plan, with the PITR window of the settings.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
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
from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings
from tests.ops.synthetic_backups import redis_snapshot
from tests.policy.synthetic_wal import put_base, put_wal, seg, wal_left

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=i) for i in range(1, 13)]  # 12 days, newest first
OFFSITE_DAILY = 3
WEEK = dt.timedelta(days=7)
SIZE = wr.DEFAULT_SEGMENT_SIZE


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
    target = offsite_retention.offsite_target(remote, local, dataclasses.replace(settings, retention_daily=0), WEEK)
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


# -- the WAL archive offsite ------------------------------------------------------------------


def base_days(repo: Repository) -> set[dt.date]:
    return {b.day for b in repo.list("postgres", "base_backup")}


A, F, W, D = (TODAY - dt.timedelta(days=n) for n in (40, 25, 8, 1))
ALL_WAL = {seg(n) for n in range(1, 36)} | {seg(36) + ".partial"}


@pytest.fixture
def pg_stores(tmp_path, monkeypatch):
    """Base backups A (monthly-old, WAL 2..3), F (failed, 10..11), W (8 days old, 20..21) and D
    (yesterday, 30..31), WAL 1..35 and the partial of 36, all copied to a fresh offsite prefix.
    Offsite keeps one daily backup and no weekly or monthly one, so the PITR window decides."""
    prefix = f"test-{uuid.uuid4().hex[:10]}-offsite-wal"
    monkeypatch.setenv("OFFSITE_S3_PREFIX", prefix)
    for name, value in (("DAILY", "1"), ("WEEKLY", "0"), ("MONTHLY", "0")):
        monkeypatch.setenv(f"OFFSITE_RETENTION_{name}", value)
    monkeypatch.setenv("BACKUP_ROOT", str(tmp_path / "backups"))
    monkeypatch.delenv("RETENTION_DRY_RUN", raising=False)
    monkeypatch.delenv("PITR_WINDOW_DAYS", raising=False)
    current_settings.cache_clear()
    settings = OffsiteSettings.from_env()
    local = Repository.local(str(tmp_path / "backups"))
    remote = offsite.repository_from_settings(settings)
    keys = {
        "A": put_base(local, A, 2, 3).prefix,
        "F": put_base(local, F, 10, 11, verification="failed").prefix,
        "W": put_base(local, W, 20, 21).prefix,
        "D": put_base(local, D, 30, 31).prefix,
    }
    for n in range(1, 36):
        put_wal(local, seg(n))
    put_wal(local, seg(36) + ".partial")
    assert len(offsite.copy_all(local, remote)) == 4
    offsite.copy_wal(WalArchive(local.backend), WalArchive(remote.backend))
    assert wal_left(remote) == ALL_WAL
    yield local, remote, settings, keys
    current_settings.cache_clear()
    s3 = remote.storage
    s3.remove_temporaries()
    s3.delete_many(o.key for o in s3.list())


def local_plan_would_keep(local: Repository, settings: OffsiteSettings, window: dt.timedelta) -> set[str]:
    """The WAL the local plan keeps when given the offsite counts and window: what offsite must keep."""
    policies = offsite_retention.offsite_policies(settings)
    _, wal = pruning.plan_with_wal(local, pruning.utcnow(), policies, window)
    return ALL_WAL - set(wal.expired())


def test_cli_prunes_offsite_wal_by_the_local_plan_and_dry_run_lists_it(pg_stores):
    local, remote, settings, keys = pg_stores
    expected = {seg(n) for n in range(20, 36)} | {seg(36) + ".partial"}  # from W's start: the 7-day window
    assert local_plan_would_keep(local, settings, WEEK) == expected

    dry = prune_cli("--dry-run", "--offsite").stdout
    assert f"WAL archive (PITR window 7 days; its base backup: {keys['W']}):" in dry
    assert f"  {seg(1)}..{seg(19)}: expire (before the PITR window and outside every kept base backup)" in dry
    assert f"  {seg(20)}..{seg(35)}: keep (inside the PITR window (from the start of base backup {keys['W']}))" in dry
    assert "offsite: dry run: 2 backup(s) would be deleted, 2 kept; 19 WAL file(s) would be deleted" in dry
    assert f"would delete  offsite  WAL {seg(1)}..{seg(19)}  (19 file(s);" in dry
    plan = json.loads(prune_cli("--dry-run", "--offsite", "--json").stdout)["offsite"]
    assert plan["wal_expired"] == [f"{seg(1)}..{seg(19)}"] and plan["wal_expired_files"] == 19
    assert wal_left(remote) == ALL_WAL and len(base_days(remote)) == 4  # a dry run deletes nothing

    done = prune_cli("--offsite").stdout
    assert f"deleted       offsite  WAL {seg(1)}..{seg(19)}" in done
    assert "offsite WAL: 19 file(s) deleted, 0 file(s) kept, 0 file(s) error" in done
    assert base_days(remote) == {W, D}
    assert wal_left(remote) == expected
    assert wal_left(local) == ALL_WAL and len(base_days(local)) == 4  # --offsite leaves the local side alone
    assert "nothing expired" in prune_cli("--offsite").stdout  # a second prune has nothing left to do


def test_a_non_default_pitr_window_is_honoured_offsite(pg_stores, monkeypatch):
    local, remote, settings, keys = pg_stores
    monkeypatch.setenv("PITR_WINDOW_DAYS", "10")  # W is inside it: the window starts from A
    expected = ALL_WAL - {seg(1)}
    assert local_plan_would_keep(local, settings, dt.timedelta(days=10)) == expected

    done = prune_cli("--offsite").stdout
    assert f"WAL archive (PITR window 10 days; its base backup: {keys['A']}):" in done
    assert base_days(remote) == {A, D}  # A kept as the window's base, though offsite keeps no monthly
    assert wal_left(remote) == expected


def test_sensor_and_cleanup_job_prune_offsite_wal_with_the_window_of_the_settings(pg_stores, monkeypatch):
    local, remote, settings, keys = pg_stores
    monkeypatch.setenv("PITR_WINDOW_DAYS", "10")
    current_settings.cache_clear()
    window = current_settings().retention.pitr_window
    assert window == dt.timedelta(days=10)
    resource = BackupRepositoryResource(root=str(local.backend.root))
    instance = DagsterInstance.ephemeral()
    ctx = build_sensor_context(instance=instance, resources={"backup_repo": resource})
    sensor = build_retention_sensor(3600, False, settings, pitr_window=window)
    [request] = sensor.evaluate_tick(ctx).run_requests
    cfg = request.run_config["ops"][ret.CLEANUP_OP]["config"]
    assert cfg["offsite_wal_runs"] == [seg(1)]
    assert sorted(cfg["offsite_backup_keys"]) == sorted([keys["F"], keys["W"]])
    assert cfg["backup_keys"] == [keys["F"]] and cfg["wal_runs"] == [seg(1)]
    # Offsite WAL is part of the run key, so a set that differs only there is requested again.
    named = [keys["F"], f"offsite:{keys['F']}", f"offsite:{keys['W']}", f"wal:{seg(1)}", f"offsite:wal:{seg(1)}"]
    assert request.run_key == ret.run_key_for(named, False)

    result = ret.cleanup_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources={"backup_repo": resource}
    )
    assert result.success
    assert wal_left(remote) == ALL_WAL - {seg(1)} and base_days(remote) == {A, D}
    # the local side follows its own (default) counts with the same window: A, W and D kept
    assert wal_left(local) == ALL_WAL - {seg(1)} and base_days(local) == {A, W, D}
    [out] = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    meta = out.event_specific_data.metadata
    assert meta["offsite_wal_deleted_files"].value == 1 and meta["wal_deleted_files"].value == 1
    assert sensor.evaluate_tick(ctx).run_requests == []  # nothing left to request

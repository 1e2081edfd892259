"""The whole-platform recovery drill on the real stack: fresh backups of all three systems into a
test-owned repository (a base backup with its own WAL receiver, day exports of a test topic, a
Redis snapshot), then drills that recover them to T in scratch targets, measure, and clean up,
also after SIGTERM and SIGKILL; and the faults a drill must name (a WAL gap, a missing Kafka
day, a corrupted snapshot)."""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auction_backup_pipelines.cli.main import main
from auction_backup_pipelines.kafka.records import artifact_name
from auction_backup_pipelines.localhost import pid_alive
from auction_backup_pipelines.ops.drill import scratch
from auction_backup_pipelines.ops.drill.engine import run_drill
from auction_backup_pipelines.ops.drill.window import DrillRefused
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres.wal_archive import WalArchive, lsn_to_segment, segment_number
from auction_backup_pipelines.redis.client import SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.repository.repository import Repository
from tests.kafka.test_export_restore import BOOTSTRAP
from tests.ops.drill_fixtures import probe_check  # `platform`, the fixture, comes from conftest.py

pytestmark = pytest.mark.integration
UTC = dt.UTC


def _drill_folders(pid: int | None = None) -> list[str]:
    return glob.glob(str(scratch.scratch_root() / f"{scratch.DRILL_PREFIX}{pid if pid else ''}*"))


def test_drill_recovers_every_system_to_t_measures_and_removes_its_scratch(platform):
    seen: dict = {}
    report = run_drill(
        platform.repo, platform.pg, BOOTSTRAP, [platform.topic], platform.at, invariants=probe_check(platform, seen)
    )
    assert report.passed, report.problems()
    assert report.at == platform.at and "given with --at" in report.reason
    # each system holds exactly its state at T
    assert seen["rows"] == [1, 2, 3, 4]
    assert seen["redis"] == b"in the snapshot"  # the newest snapshot before T, not the live value
    assert seen["kafka"] == platform.kafka_before_t
    assert seen["captured"] <= platform.at
    kafka = report.system("kafka")
    assert (kafka.figures["from_exports"], kafka.figures["from_live_log"]) == (6, 2)
    for s in report.systems:
        assert s.recovered and s.rto_s > 0 and s.rpo_s is not None and s.rpo_s >= 0, s
    assert report.system("redis").rpo_s == pytest.approx((platform.at - seen["captured"]).total_seconds(), abs=0.01)
    assert kafka.rpo_s == pytest.approx((platform.at - capture.day_end(platform.days[2])).total_seconds(), abs=0.01)
    assert report.platform_rto_s >= sum(s.rto_s for s in report.systems)
    doc = json.loads(json.dumps(report.as_dict(), default=str))  # what --json prints
    assert doc["passed"] and doc["systems"]["postgres"]["rto_s"] == report.system("postgres").rto_s
    text = "\n".join(report.lines())
    assert f"T = {platform.at:%Y-%m-%d %H:%M:%S} UTC" in text and "drill PASSED" in text
    assert not _drill_folders(os.getpid())


def test_a_t_outside_a_window_is_refused_naming_the_window(platform, capsys):
    before = platform.at - dt.timedelta(days=1)  # before the base backup and the snapshot
    with pytest.raises(DrillRefused, match=r"outside the recoverable window of postgres: .* UTC \(base backups"):
        run_drill(platform.repo, platform.pg, BOOTSTRAP, [platform.topic], before)
    assert main(["--repo", str(platform.root), "drill", "--at", (platform.at + dt.timedelta(days=1)).isoformat()]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is in the future" in err and "postgres:" in err
    assert not _drill_folders(os.getpid())


def _start_cli_drill(platform) -> subprocess.Popen:
    env = {**os.environ, "KAFKA_TOPICS": platform.topic, "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP}
    argv = [
        sys.executable,
        "-m",
        "auction_backup_pipelines.cli",
        "--repo",
        str(platform.root),
        "drill",
        "--at",
        platform.at.isoformat(),
    ]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_recovered_postgres(proc: subprocess.Popen, what: str = "postgres/data/postmaster.pid") -> Path:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = glob.glob(str(scratch.scratch_root() / f"{scratch.DRILL_PREFIX}{proc.pid}-*/{what}"))
        if found:
            return Path(found[0])
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the drill never started its recovered PostgreSQL")


def test_sigterm_stops_the_drill_and_removes_its_scratch(platform):
    proc = _start_cli_drill(platform)
    try:
        _wait_for_recovered_postgres(proc, "postgres/data/PG_VERSION")  # the base backup is being extracted
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "stopped by SIGTERM" in err and "Traceback" not in err
    assert not _drill_folders(proc.pid)


def test_after_a_sigkilled_drill_the_next_one_removes_its_leftovers_chooses_t_and_prints_the_objectives(platform):
    killed = _start_cli_drill(platform)
    pid_file = _wait_for_recovered_postgres(killed)
    killed.kill()
    killed.wait()
    folder = pid_file.parents[2]
    postmaster = int(pid_file.read_text().splitlines()[0])
    assert folder.exists() and pid_alive(postmaster)  # a SIGKILL leaves the recovered server running

    env = {**os.environ, "KAFKA_TOPICS": platform.topic, "KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP}
    run = subprocess.run(
        [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(platform.root), "drill"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert not folder.exists() and not pid_alive(postmaster)
    out = run.stdout
    assert "Traceback" not in run.stderr + out
    first = out.splitlines()[0]
    assert first.startswith("T = ") and "the newest moment every system can recover (postgres window ends there)" in first
    t = dt.datetime.strptime(first[4:23], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert platform.at - dt.timedelta(seconds=1) <= t <= dt.datetime.now(UTC)
    for system in ("postgres", "kafka", "redis"):
        assert any(line.startswith(f"ok    {system}") and "rto=" in line and "rpo=" in line for line in out.splitlines()), out
    # the platform's own invariants ran on the recovered systems, each with its counts
    assert "bids_match_bid_events" in out and "redis_agrees_with_postgres" in out
    assert run.returncode == (0 if "drill PASSED" in out else 1), out


def _copy_if_present(src: str, dst: str) -> None:
    # the WAL receiver keeps shipping into the repository being copied: a spool file may vanish
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(src, dst)


def _copy(platform, name: str) -> Repository:
    """A copy of the repository to damage; the receiver's temporary files are left out."""
    root = platform.tmp / name
    shutil.copytree(platform.root, root, ignore=shutil.ignore_patterns(".*.tmp-*"), copy_function=_copy_if_present)
    return Repository.local(str(root))


def test_a_wal_gap_before_t_fails_naming_the_gap(platform):
    repo = _copy(platform, "wal-gap")
    archive = WalArchive(repo.backend)
    stop = segment_number(lsn_to_segment(platform.base.metadata["stop_lsn"], int(platform.base.metadata["timeline"])))
    done = sorted(
        (r for r in archive.records() if not r.partial and r.segment_no > stop and not r.name.endswith(".history")),
        key=lambda r: r.segment_no,
    )
    assert len(done) >= 2, "the fixture's segment switches made no complete segment after the base backup"
    archive.delete(done[0].name)
    with pytest.raises(DrillRefused) as refused:
        run_drill(repo, platform.pg, BOOTSTRAP, [platform.topic], platform.at)
    message = str(refused.value)
    assert "outside the recoverable window of postgres" in message and "WAL archive gap" in message
    assert "\n" not in message


def test_a_missing_kafka_day_and_a_corrupted_snapshot_fail_the_drill_naming_them(platform):
    repo = _copy(platform, "damaged")
    repo.delete(repo.get("kafka", artifact_name(platform.topic), platform.days[1]))
    (snapshot,) = repo.list(REDIS, SNAPSHOT)
    stored = platform.tmp / "damaged" / snapshot.object_key(snapshot.files[0])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))

    seen: dict = {}
    report = run_drill(repo, platform.pg, BOOTSTRAP, [platform.topic], platform.at, invariants=probe_check(platform, seen))
    assert not report.passed and not seen  # nothing was recovered, so no invariant ran
    assert report.system("postgres").skipped
    assert f"missing for {platform.days[1]}" in report.system("kafka").error
    assert snapshot.prefix in report.system("redis").error and "damaged" in report.system("redis").error
    assert "FAILED" in report.lines()[-1]
    assert not _drill_folders(os.getpid())

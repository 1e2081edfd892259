"""A real failed restore verification takes a backup out of retention's "last good backup".

Two Redis snapshots of the test's own server; the newer is truncated; `auction-backup verify
--restore redis`, run as an operator would, fails on it and records the verdict on that backup
(repository/verdicts.py); the pruning plan then keeps the older one as the last good backup.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.policy.retention import EXPIRED_FAILED, LAST_GOOD
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import SNAPSHOT, SYSTEM
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.repository import verdicts
from auction_backup_pipelines.settings import RedisSettings
from tests.redis.test_backup_restore import FAST_SYNC, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def source(tmp_path):
    with contextlib.ExitStack() as stack:
        port = free_port()
        (tmp_path / "src").mkdir()
        srv = stack.enter_context(scratch_server(tmp_path / "src", port=port, extra_args=FAST_SYNC))
        for i in range(50):
            srv.client().set(f"verdicts-test:{i}", f"bid {i}")
        yield RedisSettings(host="127.0.0.1", port=port)


def verify_restore(repo) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "auction_backup_pipelines.cli",
        "--repo",
        str(repo.backend.root),
        "verify",
        "--restore",
        "redis",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), timeout=300)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_a_failed_restore_verdict_excludes_the_backup_from_last_good(source, repo, on_time_day):
    older = backup_snapshot(source, repo, on_time_day - dt.timedelta(days=1), allow_late_capture=True)
    newer = backup_snapshot(source, repo, on_time_day)
    now = dt.datetime.now(dt.UTC)
    before = {d.backup.key: d for d in pruning.plan(repo, now)}
    assert LAST_GOOD in before[newer.prefix].reasons

    # The newest passes its restore check first: a "passed" verdict on it.
    passed = verify_restore(repo)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert verdicts.read(repo, newer.ref).passed

    entry = newer.files[0]
    stored = repo.backend.root / newer.object_key(entry)
    stored.write_bytes(stored.read_bytes()[: entry.stored_size // 2])
    failed = verify_restore(repo)
    assert failed.returncode == 1 and "FAIL" in failed.stdout

    verdict = verdicts.read(repo, newer.ref)
    assert verdict is not None and verdict.failed and verdict.check == "snapshot_restores"
    assert verdict.by == "auction-backup verify --restore" and entry.key in (verdict.error or "")
    assert verdicts.read(repo, older.ref) is None  # only the backup tested gets a verdict

    after = {d.backup.key: d for d in pruning.plan(repo, now)}
    assert after[newer.prefix].reasons == (EXPIRED_FAILED,) and not after[newer.prefix].keep
    assert LAST_GOOD in after[older.prefix].reasons and after[older.prefix].keep

    # Pruning deletes the failed backup, and its verdict with it.
    outcomes = pruning.delete_expired(repo, [newer.prefix], now=now)
    assert [o.action for o in outcomes] == [pruning.DELETED]
    assert verdicts.read(repo, newer.ref) is None
    assert [b.prefix for b in repo.list(SYSTEM, SNAPSHOT)] == [older.prefix]

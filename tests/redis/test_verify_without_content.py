"""`verify --deep` of a Redis snapshot whose manifest records no content facts fails in one line
naming the backup (once a KeyError traceback)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

from auction_backup_pipelines.redis.client import RDB_FILE, SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.repository.repository import Repository

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 18)


def test_deep_verify_of_a_snapshot_without_content_facts_is_one_line(tmp_path):
    repo = Repository.local(str(tmp_path / "repo"))
    with repo.begin(REDIS, SNAPSHOT, DAY) as w:
        with w.open_file(RDB_FILE) as f:
            f.write(b"REDIS0011\xff")
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(tmp_path / "repo")]
    argv += ["verify", "redis", "snapshot", "--date", DAY.isoformat(), "--deep"]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"backup {w.committed.prefix} records no usable content facts" in done.stdout + done.stderr

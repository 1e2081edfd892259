"""Every `--date` is parsed strictly: an empty or malformed day is refused by the parser before
anything connects or writes (once, `backup redis --date ''` silently backed up yesterday)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = [
    ("backup", "postgres"),
    ("backup", "redis"),
    ("backup", "kafka"),
    ("restore", "postgres", "--target-db", "scratch_never_created"),
    ("restore", "redis"),
    ("verify", "redis", "snapshot"),
    ("pin", "redis", "snapshot"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("value", ["", " ", "2026-13-01", "20261201", "2026-1-5", "yesterday"])
def test_a_malformed_date_is_refused_before_anything_happens(tmp_path, command, value):
    repo = tmp_path / "backups"
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo), *command, "--date", value]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"argument --date: not a day: {value!r} (expected YYYY-MM-DD)" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not repo.exists(), "a refused command must not create or write the repository"

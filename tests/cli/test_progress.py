"""Progress goes to stderr only when stderr is a terminal: a script (no TTY) gets the result on
stdout and nothing else; a person at a terminal sees the operation being done."""

from __future__ import annotations

import datetime as dt
import os
import pty
import subprocess
import sys
import time

from auction_backup_pipelines.repository.repository import Repository
from tests.cli.cli_run import ROOT, run_cli
from tests.cli.test_info import topic_day

DAY = dt.date(2026, 11, 30)


def repo_with_backups(tmp_path) -> str:
    repo = Repository.local(str(tmp_path / "backups"))
    for i in range(3):
        topic_day(repo, DAY - dt.timedelta(days=i))
    return str(tmp_path / "backups")


def test_without_a_terminal_there_is_no_progress_noise(tmp_path):
    root = repo_with_backups(tmp_path)
    for args in (["verify", "--deep"], ["verify", "--deep", "--json"]):
        done = run_cli("--repo", root, *args)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""
        assert "\x1b" not in done.stdout and "\r" not in done.stdout
    assert done.stdout.lstrip().startswith("{")


def test_on_a_terminal_stderr_shows_the_operation_and_stdout_stays_clean(tmp_path):
    root = repo_with_backups(tmp_path)
    leader, follower = pty.openpty()
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", root, "verify", "--deep"]
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=follower, env=env, cwd=ROOT, text=True)
    os.close(follower)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed: the command is done
            break
        if not chunk:
            break
        shown += chunk
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0, out
    assert b"verify --deep" in shown, shown
    assert "\x1b" not in out and out.splitlines()[-1] == "3 ok, 0 failed, 0 warning(s)"

"""Run `auction-backup` as an operator does: a subprocess with the stack's environment, no TTY."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI with `args`; `env` overrides the inherited environment ("" values stay set, empty).
    Asserts that no traceback reached the operator, whatever the exit code."""
    environ = {**os.environ, **(env or {})}
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=timeout)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def closed_port() -> int:
    """A loopback port nothing listens on (bound then released: connecting is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

"""Fixtures shared by the repository tests that talk to the stack's S3-compatible server."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _stack_env() -> dict[str, str]:
    path = ROOT / ".stack" / "stack.env"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line) if path.exists() else ()
    return {k: v for k, v in pairs if k.startswith("OFFSITE_S3_")}


@pytest.fixture(scope="module")
def s3_env():
    """S3Proxy running (started here when the stack did not), and its settings in os.environ."""
    subprocess.run(["bash", str(ROOT / "stack" / "s3.sh"), "up"], check=True, cwd=ROOT)
    env = _stack_env()
    os.environ.update(env)
    return env

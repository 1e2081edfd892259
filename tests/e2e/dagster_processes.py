"""Start Dagster's own processes for end-to-end tests, and always stop them.

`dagster dev` and `dagster-webserver` do not reliably exit on SIGTERM when started from a
script, so each runs in its own process group which is terminated, then killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"


def dg_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment `dg` runs in, as the Makefile sets it: the project's .venv active, its own instance."""
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": str(ROOT / ".venv"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "instance" / "dagster.yaml", home / "dagster.yaml")
    return home


@contextlib.contextmanager
def process_group(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def graphql(port: int, query: str, variables: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    if doc.get("errors"):
        raise AssertionError(doc["errors"])
    return doc["data"]


def wait_until(what: str, probe, deadline_s: float, proc: subprocess.Popen, log: Path):
    """Poll `probe` (a real condition) until it returns a truthy value; fail with the log."""
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} ({last}):\n{log.read_text()[-3000:]}")

"""The code location as a user sees it: loaded by the real webserver, queried over GraphQL."""

from __future__ import annotations

import os
import subprocess

import pytest

from auction_backup_pipelines.localhost import free_port

from .dagster_processes import BIN, ROOT, dagster_home, graphql, process_group, wait_until

pytestmark = pytest.mark.e2e

WORKSPACE = """
{ workspaceOrError { __typename ... on Workspace { locationEntries { name
    locationOrLoadError { __typename
      ... on PythonError { message }
      ... on RepositoryLocation { repositories { name
          assetNodes { assetKey { path } }
          schedules { name cronSchedule executionTimezone scheduleState { status } }
          jobs { name } } } } } } } }
"""


def test_definitions_validate(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(tmp_path))}
    proc = subprocess.run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation successful" in proc.stdout + proc.stderr


def test_webserver_loads_the_code_location(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(tmp_path))}
    log = tmp_path / "webserver.log"
    argv = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with process_group(argv, env, log) as proc:
        def loaded():
            entries = graphql(port, WORKSPACE)["workspaceOrError"]["locationEntries"]
            location = entries[0]["locationOrLoadError"]
            return location if location and location["__typename"] != "PythonError" or (location and location.get("message")) else None

        location = wait_until("the code location to load", loaded, 180, proc, log)
    assert location["__typename"] == "RepositoryLocation", location
    [repo] = location["repositories"]
    assets = {"/".join(a["assetKey"]["path"]) for a in repo["assetNodes"]}
    assert "postgres/logical_dump" in assets
    schedules = {s["name"]: s for s in repo["schedules"]}
    pg = schedules["postgres_backup_job_schedule"]
    assert (pg["cronSchedule"], pg["executionTimezone"], pg["scheduleState"]["status"]) == ("0 2 * * *", "UTC", "RUNNING")
    assert {"postgres_backup_job", "postgres_restore_job"} <= {j["name"] for j in repo["jobs"]}

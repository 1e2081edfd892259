"""The code location as a user sees it: loaded by the real webserver, queried over GraphQL."""

from __future__ import annotations

import os
import subprocess

import pytest

from auction_backup_pipelines.localhost import free_port

from .dagster_processes import BIN, ROOT, dagster_home, dg_env, graphql, process_group, wait_until

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


def test_dg_check_defs_passes_without_warnings(tmp_path):
    """`dg check defs` loads every definition; nothing it prints is a beta, supersession or instance warning."""
    proc = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=ROOT,
        env=dg_env(dagster_home(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All definitions loaded successfully" in out
    for warning in ("BetaWarning", "PreviewWarning", "superseded", "Found a dagster instance configuration", "does not match"):
        assert warning not in out, out


def test_dg_list_defs_shows_every_domain(tmp_path):
    proc = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=ROOT,
        env=dg_env(dagster_home(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = proc.stdout
    for name in (
        "postgres/logical_dump",
        "redis/snapshot",
        "kafka/topic_export/bid-events",
        "postgres_backup_job",
        "weekly_verification_job",
        "retention_sensor",
        "check_failure_alert_sensor",
        "postgres_backup_job_schedule",
    ):
        assert name in listed, name


def test_webserver_loads_the_code_location(tmp_path):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(tmp_path))}
    log = tmp_path / "webserver.log"
    argv = [str(BIN / "dagster-webserver"), "-m", "auction_backup_pipelines.definitions", "-h", "127.0.0.1", "-p", str(port)]
    with process_group(argv, env, log) as proc:

        def loaded():
            entries = graphql(port, WORKSPACE)["workspaceOrError"]["locationEntries"]
            location = entries[0]["locationOrLoadError"]
            return (
                location
                if location and location["__typename"] != "PythonError" or (location and location.get("message"))
                else None
            )

        location = wait_until("the code location to load", loaded, 180, proc, log)
    assert location["__typename"] == "RepositoryLocation", location
    [repo] = location["repositories"]
    assets = {"/".join(a["assetKey"]["path"]) for a in repo["assetNodes"]}
    assert "postgres/logical_dump" in assets
    schedules = {s["name"]: s for s in repo["schedules"]}
    pg = schedules["postgres_backup_job_schedule"]
    assert (pg["cronSchedule"], pg["executionTimezone"], pg["scheduleState"]["status"]) == ("0 2 * * *", "UTC", "RUNNING")
    assert {"postgres_backup_job", "postgres_restore_job"} <= {j["name"] for j in repo["jobs"]}

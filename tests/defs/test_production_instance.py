"""deploy/dagster.yaml (PostgreSQL storage, Docker run launcher) drives a real run.

The instance is built from the production file against the stack's PostgreSQL (a database
of its own); with no container engine here, the run executes in-process through it, which
exercises the run, event-log and schedule storage the daemon and webserver would use."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, asset, materialize
from psycopg import sql

from auction_backup_pipelines.postgres import client as pg

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@asset
def canary() -> int:
    return 42


@pytest.fixture
def storage_db(pg_settings):
    name = f"dagster_storage_{secrets.token_hex(4)}"
    with pg.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    with pg.connect(pg_settings, dbname="postgres") as admin:
        pg.drop_database(admin, name)


def test_run_completes_through_postgres_storage(tmp_path, monkeypatch, pg_settings, storage_db):
    for key, value in {
        "DAGSTER_PG_HOST": pg_settings.host,
        "DAGSTER_PG_PORT": str(pg_settings.port),
        "DAGSTER_PG_DB": storage_db,
        "DAGSTER_PG_USER": pg_settings.user,
        "DAGSTER_PG_PASSWORD": pg_settings.password,
    }.items():
        monkeypatch.setenv(key, value)
    shutil.copy(ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_launcher).__name__ == "DockerRunLauncher"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = materialize([canary], instance=instance)
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(canary.key) is not None
    finally:
        instance.dispose()
    # The rows really are in the PostgreSQL database, not in a local file.
    with pg.connect(pg_settings, dbname=storage_db) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE run_id = %s", (result.run_id,)).fetchone()[0] == 1

"""`auction-backup restore postgres` into a database that is not empty, without --force: refused
in one line, exit 1, and nothing changes (the target's tables, the server's databases).

Run as an operator runs it (a subprocess); the engine's refusal has its own test in
tests/postgres/test_logical_dump.py. A tiny database of this test is the source, so the dump
takes a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.repository.repository import Repository

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)


def databases(pg_settings, like: str) -> set[str]:
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        return {r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like + "%",)).fetchall()}


def test_cli_refuses_a_non_empty_target_without_force_and_changes_nothing(pg_settings, scratch_db, tmp_path):
    source, target = f"{scratch_db}_src", scratch_db  # both dropped by the scratch_db fixture
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{source}"')
        admin.execute(f'CREATE DATABASE "{target}"')
    with pg_client.connect(pg_settings, dbname=source) as conn:
        conn.execute("CREATE TABLE lots (id int PRIMARY KEY, title text)")
        conn.execute("INSERT INTO lots SELECT i, 'lot ' || i FROM generate_series(1, 10) i")
    with pg_client.connect(pg_settings, dbname=target) as conn:
        conn.execute("CREATE TABLE precious (v text)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
        before = pg_client.table_fingerprints(conn)
    root = tmp_path / "backups"
    pg.backup_logical(dataclasses.replace(pg_settings, dbname=source), Repository.local(str(root)), DAY)
    existing = databases(pg_settings, scratch_db)

    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(root), "restore", "postgres"]
    argv += ["--date", DAY.isoformat(), "--target-db", target]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=120)

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert target in lines[0] and "--force" in lines[0]
    with pg_client.connect(pg_settings, dbname=target) as conn:
        assert pg_client.table_fingerprints(conn) == before  # not a row touched
    assert databases(pg_settings, scratch_db) == existing  # no staging copy left behind

"""Shared fixtures. Integration tests talk to the real stack started by `stack/up.sh`
(`make test` starts it); its ports and password come from .stack/stack.env."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_stack_env() -> None:
    env_file = ROOT / ".stack" / "stack.env"
    if not env_file.exists():
        return
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            os.environ.setdefault(key, value)


_load_stack_env()


@pytest.fixture
def repo(tmp_path):
    from auction_backup_pipelines.core.repository import Repository

    return Repository.local(tmp_path / "backups")


@pytest.fixture
def pg_settings():
    from auction_backup_pipelines.settings import PostgresSettings

    return PostgresSettings.from_env()


@pytest.fixture
def scratch_db(pg_settings):
    """A database name that does not exist yet; dropped (with any staging copies) afterwards."""
    from auction_backup_pipelines.core import postgres as pg

    name = f"scratch_{secrets.token_hex(4)}"
    yield name
    with pg.connect(pg_settings, dbname="postgres") as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall()
        for (db,) in rows:
            pg.drop_database(admin, db)

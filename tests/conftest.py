"""Shared fixtures. Integration tests talk to the real stack started by `stack/up.sh`
(`make test` starts it); its ports and password come from .stack/stack.env."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import threading
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


TEST_PARTITIONS_START = "2026-11-01"
"""The tests' first partition day, whatever the stack recorded for its own install: tests name
fixed days and days up to a week back, which must be partitions of the assets they run."""
os.environ["BACKUP_PARTITIONS_START"] = TEST_PARTITIONS_START
_load_stack_env()


@pytest.fixture
def on_time_day():
    """The day an on-time capture may claim, read as each test starts (capture_window's own rule).
    Not a module constant: pytest imports every module before the first test, and a run that
    crosses midnight UTC would then ask for a day two days old, which a capture rightly refuses."""
    from auction_backup_pipelines.policy import capture_window

    return capture_window.default_partition()


@pytest.fixture
def repo(tmp_path):
    from auction_backup_pipelines.repository.repository import Repository

    return Repository.local(tmp_path / "backups")


@pytest.fixture
def pg_settings():
    from auction_backup_pipelines.settings import PostgresSettings

    return PostgresSettings.from_env()


@pytest.fixture
def scratch_db(pg_settings):
    """A database name that does not exist yet; dropped (with any staging copies) afterwards."""
    from auction_backup_pipelines.postgres import client as pg

    name = f"scratch_{secrets.token_hex(4)}"
    yield name
    with pg.connect(pg_settings, dbname="postgres") as admin:
        rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall()
        for (db,) in rows:
            pg.drop_database(admin, db)


@contextlib.contextmanager
def running_wal_receiver(pg_settings, repo, spool: Path):
    """A WAL receiver shipping into `repo` with a replication slot of its own, always dropped:
    a forgotten slot would make the primary keep WAL forever."""
    from auction_backup_pipelines.postgres.wal_archive import WalArchive
    from auction_backup_pipelines.postgres.wal_receiver import WalReceiver

    receiver = WalReceiver(pg_settings, WalArchive(repo.backend), spool, slot=f"test_{secrets.token_hex(4)}", ship_interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=receiver.run, args=(stop,))
    thread.start()
    try:
        yield receiver
    finally:
        stop.set()
        thread.join(60)
        receiver.drop_slot()


@pytest.fixture
def pitr_dir():
    """A folder the postgres user can reach (pytest's tmp folders are private to root)."""
    from auction_backup_pipelines.postgres import pitr
    from auction_backup_pipelines.postgres.logical_day import scratch_dir

    parent = scratch_dir("pitr-test-")
    yield parent / "restore"
    data = parent / "restore" / "data"
    if (data / "postmaster.pid").exists():
        pitr.RestoredInstance(data, 0, data / "log").stop()
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def webhook():
    """A real HTTP server on loopback recording webhook posts (tests/ops/test_notify.py)."""
    from tests.ops.test_notify import WebhookServer

    with WebhookServer() as server:
        yield server


@pytest.fixture
def smtp():
    """A real SMTP server on loopback recording mail (tests/ops/test_notify.py)."""
    from tests.ops.test_notify import SmtpServer

    with SmtpServer() as server:
        yield server

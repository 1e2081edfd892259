"""PostgreSQL logical backups against the real server of the local stack."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import threading

import pytest

from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError
from stack.workload import Workload

pytestmark = pytest.mark.integration
DAY = "2026-11-20"


@pytest.fixture
def own_database(pg_settings, scratch_db):
    """A seeded Auction Flow database of this test's own, dropped with the scratch database (its
    name starts with it). The traffic below writes bids without their events: in the shared
    database they would break the whole-platform drill's invariants on the demo stack."""
    source = dataclasses.replace(pg_settings, dbname=f"{scratch_db}_src")
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{source.dbname}"')
    workload = Workload(seed=11)
    workload.pg = source
    workload.seed_postgres(1)
    return workload


@pytest.fixture
def live_workload(own_database):
    """Bids keep flowing into the test's own database while the test runs."""
    stop, started = threading.Event(), threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(own_database.run(rate=200, stop=stop, started=started, systems=("postgres",)))
    )
    thread.start()
    assert started.wait(30), "the workload generator placed no bid"
    yield result
    stop.set()
    thread.join(30)


def test_backup_under_load_restores_to_exactly_the_snapshot(pg_settings, repo, scratch_db, own_database, live_workload):
    source = own_database.pg
    backup = pg.backup_logical(source, repo, DAY)
    recorded = backup.metadata["tables"]
    assert set(recorded) >= {"public.users", "public.auctions", "public.bids", "public.payments"}
    assert all(t["checksum"] for t in recorded.values())

    result = pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert result.rows_total == backup.metadata["rows_total"]
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        restored = pg_client.table_fingerprints(conn)
    assert restored == recorded  # every table: same row count and content checksum
    # The source kept changing: the dump is a snapshot, not a smear of the traffic.
    with pg_client.connect(source) as conn:
        live_bids = conn.execute("SELECT count(*) FROM bids").fetchone()[0]
    assert live_bids > recorded["public.bids"]["rows"]


def test_toc_lists_every_table(pg_settings, repo):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    toc = pg.dump_toc(repo, backup)
    data = {line.split()[-2] for line in toc if " TABLE DATA " in line}
    assert {"users", "auctions", "bids", "payments"} <= data


def test_killed_backup_leaves_nothing_complete(pg_settings, tmp_path):
    root = tmp_path / "backups"
    script = textwrap.dedent(
        f"""
        import datetime as dt, os, signal
        from auction_backup_pipelines.repository import repository, streams
        from auction_backup_pipelines.postgres import logical_dump as pg
        from auction_backup_pipelines.settings import PostgresSettings

        def die_mid_stream(self, source, chunk=1 << 16):
            self.write(source.read(chunk))   # some bytes reached the repository...
            os.kill(os.getpid(), signal.SIGKILL)   # ...then the process is killed

        streams.ArtifactStream.copy_from = die_mid_stream
        pg.backup_logical(PostgresSettings.from_env(), repository.Repository.local({str(root)!r}), dt.date(2026, 11, 20))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers, "the fault was injected before anything was written"
    repo = Repository.local(root)
    assert repo.list() == []
    repo.gc_incomplete()
    assert [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_corrupted_byte_detected_before_any_write(pg_settings, repo, scratch_db):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    stored = repo.backend.root / backup.prefix / backup.file(pg.DUMP_FILE).key
    raw = bytearray(stored.read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    stored.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert pg_client.database_objects(pg_settings, scratch_db) is None  # not even created


@pytest.mark.parametrize(
    "change, message",
    [
        ({"password": "wrong-password"}, "rejected the password"),
        ({"port": 1}, "nothing is listening at"),
        ({"dbname": "no_such_db"}, "has no database 'no_such_db'"),
    ],
)
def test_bad_settings_fail_clearly_and_store_nothing(pg_settings, repo, change, message):
    with pytest.raises(pg_client.PostgresError, match=message):
        pg.backup_logical(dataclasses.replace(pg_settings, **change), repo, DAY)
    assert repo.list() == []
    assert "wrong-password" not in str(change.get("port", ""))


def test_restore_over_non_empty_database_needs_force(pg_settings, repo, scratch_db):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE precious (v text)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
        before = pg_client.table_fingerprints(conn)

    with pytest.raises(pg_client.RestoreRefused, match="--force"):
        pg.restore_logical(pg_settings, repo, backup, scratch_db)
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == before

    result = pg.restore_logical(pg_settings, repo, backup, scratch_db, force=True)
    assert result.replaced_existing
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == backup.metadata["tables"]

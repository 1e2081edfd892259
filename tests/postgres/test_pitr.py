"""Point-in-time recovery on the real primary, with a real pg_receivewal archive."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import subprocess
import threading
from pathlib import Path

import pytest

from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.repository.repository import Repository
from stack.workload import Workload
from tests.conftest import running_wal_receiver

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)


@pytest.fixture
def archive_setup(pg_settings, tmp_path):
    """A repository, its WAL archive and a running receiver."""
    repo = Repository.local(tmp_path / "backups")
    with running_wal_receiver(pg_settings, repo, tmp_path / "spool") as receiver:
        yield repo, receiver.archive, receiver


@pytest.fixture
def probe_table(pg_settings):
    name = f"pitr_probe_{secrets.token_hex(3)}"
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
    yield name
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _now(conn) -> dt.datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def _restore_and_fingerprint(pg_settings, repo, archive, target, pitr_dir):
    result = pitr.restore_to_time(pg_settings, repo, archive, target, pitr_dir)
    with result.instance() as inst, pg_client.connect(inst.settings(pg_settings)) as conn:
        return result, pg_client.table_fingerprints(conn)


@pytest.fixture
def own_database(pg_settings, scratch_db):
    """A seeded Auction Flow database of this test's own (dropped with the scratch database): the
    traffic writes bids without their events and the test deletes bids, which in the shared
    database would break the whole-platform drill's invariants on the demo stack."""
    source = dataclasses.replace(pg_settings, dbname=scratch_db)
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    workload = Workload(seed=5)
    workload.pg = source
    workload.seed_postgres(1)
    with pg_client.connect(source) as conn:
        conn.execute("CREATE TABLE pitr_probe (id int PRIMARY KEY, v text)")
    return workload


def test_pitr_to_a_moment_under_load_gives_exactly_the_rows_of_that_moment(pg_settings, archive_setup, pitr_dir, own_database):
    repo, archive, _ = archive_setup
    source = own_database.pg  # a PITR recovers the whole cluster; the test compares its own database
    stop, started = threading.Event(), threading.Event()
    traffic = threading.Thread(target=own_database.run, kwargs=dict(rate=100, stop=stop, started=started, systems=("postgres",)))
    traffic.start()
    assert started.wait(30)
    basebackup.take_base_backup(pg_settings, repo, DAY)
    with pg_client.connect(source) as conn:
        conn.execute("INSERT INTO pitr_probe SELECT g, 'bid ' || g FROM generate_series(1, 500) g")
    stop.set()
    traffic.join(30)  # quiet at T, so the reference below is exactly the state at T
    with pg_client.connect(source) as conn:
        reference = pg_client.table_fingerprints(conn)
        target = _now(conn)
        conn.execute("DELETE FROM pitr_probe WHERE id <= 250")
        conn.execute("UPDATE pitr_probe SET v = 'changed'")
        conn.execute("DELETE FROM bids WHERE id IN (SELECT id FROM bids ORDER BY id DESC LIMIT 10)")
        after = _now(conn)
    assert wait_for_archived_time(archive, after), "the WAL of the changes never reached the archive"

    result, restored = _restore_and_fingerprint(source, repo, archive, target, pitr_dir)
    assert restored == reference
    assert dt.datetime.fromisoformat(result.reached_transaction_time) <= target
    # the RTO in its phases, which add up to (at most) the whole; WAL staging overlaps the extraction
    phases = result.phases
    assert set(phases) == {"verify_s", "extract_s", "extract_and_stage_wal_s", "recover_s"}
    assert phases["extract_s"] <= phases["extract_and_stage_wal_s"]
    assert phases["verify_s"] + phases["extract_and_stage_wal_s"] + phases["recover_s"] <= result.duration_s
    [record] = restore_records.for_pitr(result, by="cli")  # the restore history on the base backup keeps them
    assert {k: record.details[k] for k in phases} == phases
    # The primary ran on, untouched: it still has the changes made after T.
    with pg_client.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM pitr_probe").fetchone()[0] == 250
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is False


def test_pitr_across_a_segment_switch_and_a_primary_restart(pg_settings, archive_setup, pitr_dir, probe_table):
    repo, archive, receiver = archive_setup
    basebackup.take_base_backup(pg_settings, repo, DAY)
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"INSERT INTO {probe_table} VALUES (1, 'before switch')")
    # pg_switch_wal needs a superuser: the stack's own psql runs as postgres
    subprocess.run(
        ["bash", str(ROOT / "stack" / "postgres.sh"), "psql", "-c", "SELECT pg_switch_wal()"], check=True, capture_output=True
    )
    restarts_before = receiver.restarts
    subprocess.run(["bash", str(ROOT / "stack" / "postgres.sh"), "down"], check=True)
    subprocess.run(["bash", str(ROOT / "stack" / "postgres.sh"), "up"], check=True)
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"INSERT INTO {probe_table} VALUES (2, 'after restart')")
        reference = pg_client.table_fingerprints(conn)
        target = _now(conn)
        conn.execute(f"DELETE FROM {probe_table}")
        after = _now(conn)
    assert wait_for_archived_time(archive, after, timeout=60)
    assert receiver.restarts > restarts_before  # the receiver noticed the restart and came back

    result, restored = _restore_and_fingerprint(pg_settings, repo, archive, target, pitr_dir)
    assert restored[f"public.{probe_table}"] == reference[f"public.{probe_table}"]
    assert restored == reference
    assert result.wal_files_staged >= 2


def test_bad_targets_are_refused_naming_the_window_and_create_nothing(pg_settings, archive_setup, pitr_dir):
    repo, archive, _ = archive_setup
    base = basebackup.take_base_backup(pg_settings, repo, DAY)
    with pg_client.connect(pg_settings) as conn:
        after = _now(conn)
    assert wait_for_archived_time(archive, after)
    stop_time = dt.datetime.fromisoformat(base.metadata["stop_time"])
    cases = {
        "in the future": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        "before the earliest base backup": stop_time - dt.timedelta(minutes=5),
    }
    for phrase, target in cases.items():
        with pytest.raises(pitr.PitrError, match=f"{phrase}.*recoverable window: "):
            pitr.restore_to_time(pg_settings, repo, archive, target, pitr_dir)
        assert not pitr_dir.exists()
    with pytest.raises(pitr.PitrError, match="cannot read target time"):
        pitr.parse_target("15/01/2024 2pm")


def test_cli_show_window_and_future_target(pg_settings, archive_setup, pitr_dir):
    repo, archive, _ = archive_setup
    basebackup.take_base_backup(pg_settings, repo, DAY)
    with pg_client.connect(pg_settings) as conn:
        after = _now(conn)
    assert wait_for_archived_time(archive, after)
    cli = [str(ROOT / ".venv" / "bin" / "auction-backup"), "--repo", str(repo.backend.root)]
    shown = subprocess.run(cli + ["pitr", "--show-window"], capture_output=True, text=True, check=True).stdout
    assert shown.startswith("recoverable window: ") and "base backup 2026-11-20" in shown
    refused = subprocess.run(cli + ["pitr", "2999-01-01 00:00:00", "--target-dir", str(pitr_dir)], capture_output=True, text=True)
    assert refused.returncode == 1
    assert "is in the future" in refused.stderr and "recoverable window" in refused.stderr
    assert not pitr_dir.exists()


def test_reconstructed_dump_holds_the_database_as_of_the_target(pg_settings, archive_setup, probe_table, scratch_db):
    """The mechanism a backfill of a missed logical-dump day uses (as_of = the end of that day)."""
    from auction_backup_pipelines.postgres import logical_day

    repo, archive, _ = archive_setup
    basebackup.take_base_backup(pg_settings, repo, DAY)
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"INSERT INTO {probe_table} SELECT g, 'x' FROM generate_series(1, 40) g")
        reference = pg_client.table_fingerprints(conn)
        as_of = _now(conn)
        conn.execute(f"DELETE FROM {probe_table} WHERE id > 10")
        after = _now(conn)
    assert wait_for_archived_time(archive, after)

    backup = logical_day.reconstruct_dump(pg_settings, repo, DAY, as_of)
    assert backup.metadata["reconstructed_via_pitr"] is True
    assert backup.metadata["captured_at"] == as_of.isoformat()
    assert backup.metadata["tables"] == reference
    pg.restore_logical(pg_settings, repo, backup, scratch_db)
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert conn.execute(f"SELECT count(*) FROM {probe_table}").fetchone()[0] == 40

    # It depends on what it was recovered from, and retention keeps that while it keeps the dump.
    from auction_backup_pipelines.policy import pruning, retention
    from auction_backup_pipelines.postgres.wal_archive import lsn_to_segment

    (base,) = repo.list("postgres", "base_backup")
    assert backup.metadata["depends_on"] == [base.prefix]
    wal = backup.metadata["depends_on_wal"]
    timeline = int(base.metadata["timeline"])
    assert wal["first"] == lsn_to_segment(base.metadata["start_lsn"], timeline) <= wal["last"]
    assert any(r.name.removesuffix(".partial") == wal["last"] for r in archive.records())  # a segment the archive holds
    decisions = {d.backup.key: d for d in pruning.plan(repo, dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC))}
    assert f"needed by {backup.prefix}" in decisions[base.prefix].reasons
    assert retention.needed_wal(decisions.values()) == [(backup.prefix, retention.WalRange(wal["first"], wal["last"]))]

"""PostgreSQL over verified TLS: POSTGRES_SSLMODE=verify-full with the stack's CA reaches every
client we run (our connections, pg_dump, pg_restore, pg_basebackup, pg_receivewal), the server
sees those sessions as TLS, and a certificate from another CA stops a backup with one line.

The stack's PostgreSQL serves TLS with a certificate for 127.0.0.1 signed by its own CA
(stack/tls.sh, stack/postgres.sh); STACK_TLS_CA in .stack/stack.env names that CA.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.postgres import base_backup, logical_dump
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.settings import PostgresSettings
from tests.conftest import running_wal_receiver

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)
WAIT_S = 60


@pytest.fixture
def stack_ca() -> str:
    ca = os.environ["STACK_TLS_CA"]  # written by stack/postgres.sh
    assert Path(ca).is_file()
    return ca


@pytest.fixture
def other_ca(tmp_path) -> str:
    """A throwaway CA that signed nothing the server presents."""
    ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Some other CA"]
        + ["-keyout", str(tmp_path / "other-ca.key"), "-out", str(ca)],
        check=True,
        capture_output=True,
    )
    return str(ca)


@pytest.fixture
def source_db(pg_settings, scratch_db) -> str:
    """A small database of this test's own (the shared one belongs to the workload and other tests)."""
    with pg.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    with pg.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE lots (id int PRIMARY KEY, title text NOT NULL, reserve numeric(12, 2))")
        conn.execute("INSERT INTO lots SELECT g, 'lot ' || g, g * 1.5 FROM generate_series(1, 5000) g")
    return scratch_db


def verified(s: PostgresSettings, ca: str, **changes) -> PostgresSettings:
    return dataclasses.replace(s, sslmode="verify-full", sslrootcert=ca, **changes)


def ssl_of(conn, pid: int) -> tuple[bool, str | None]:
    row = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"no backend {pid}"
    return row[0], row[1]


def wait_for(what: str, probe):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if (found := probe()) is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_settings_accept_the_modes_and_refuse_a_ca_that_would_not_be_checked(stack_ca):
    s = PostgresSettings.from_env({"POSTGRES_SSLMODE": "verify-full", "POSTGRES_SSLROOTCERT": stack_ca})
    assert (s.sslmode, s.sslrootcert) == ("verify-full", stack_ca)
    assert PostgresSettings.from_env({}).sslmode == ""  # libpq's own default (prefer): plain servers keep working
    for mode in ("", "prefer", "allow", "disable"):
        with pytest.raises(ConfigurationError) as err:
            PostgresSettings.from_env({"POSTGRES_SSLMODE": mode, "POSTGRES_SSLROOTCERT": stack_ca})
        message = str(err.value)
        assert "\n" not in message and "POSTGRES_SSLROOTCERT" in message and "verify-full" in message
    with pytest.raises(ConfigurationError, match="POSTGRES_SSLMODE must be one of"):
        PostgresSettings.from_env({"POSTGRES_SSLMODE": "verify_full"})


def test_client_programs_get_the_tls_settings_in_their_environment(pg_settings, stack_ca, monkeypatch):
    monkeypatch.setenv("PGSSLMODE", "disable")  # an operator's weaker libpq default
    env = pg.child_env(verified(pg_settings, stack_ca))
    assert (env["PGSSLMODE"], env["PGSSLROOTCERT"]) == ("verify-full", stack_ca)
    assert pg.child_env(pg_settings)["PGSSLMODE"] == "disable"  # unset: the operator's PGSSL* still apply
    # A real libpq program with that environment: the server reports its session as TLS.
    psql = pg.pg_bin("psql", pg_settings.bin_dir)
    done = subprocess.run(
        [psql, "-XAtc", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "t"


def test_logical_backup_and_restore_over_verified_tls(pg_settings, repo, stack_ca, source_db):
    s = verified(pg_settings, stack_ca, dbname=source_db)
    with pg.connect(s) as conn:
        assert ssl_of(conn, conn.info.backend_pid)[0] is True
        expected = pg.table_fingerprints(conn)

    # Hold pg_dump at its first table lock, so its session can be looked at while it is open.
    with (
        pg.connect(pg_settings, dbname=source_db, autocommit=False) as blocker,
        pg.connect(pg_settings, dbname=source_db) as watch,
    ):
        blocker.execute("LOCK TABLE lots IN ACCESS EXCLUSIVE MODE")
        outcome: list = []
        worker = threading.Thread(target=lambda: outcome.append(_catch(logical_dump.backup_logical, s, repo, DAY)))
        worker.start()
        try:
            dump_pid = wait_for(
                "pg_dump waiting on its table lock",
                lambda: (
                    row[0]
                    if (
                        row := watch.execute(
                            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'auction-backup' "
                            "AND query LIKE 'LOCK TABLE%%' AND wait_event_type = 'Lock'",
                            (source_db,),
                        ).fetchone()
                    )
                    else None
                ),
            )
            assert ssl_of(watch, dump_pid)[0] is True  # pg_dump's own session is TLS
            sessions = watch.execute(
                "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                "WHERE a.datname = %s AND a.application_name = 'auction-backup'",
                (source_db,),
            ).fetchone()
            assert sessions is not None and sessions[0] >= 2 and sessions[0] == sessions[1]  # and our snapshot session
        finally:
            blocker.rollback()
            worker.join(WAIT_S)
    [backup] = outcome
    assert not isinstance(backup, BaseException), backup
    assert backup.metadata["tables"] == expected

    restored = f"{source_db}_restored"
    result = logical_dump.restore_logical(s, repo, backup, restored)
    assert result.rows_total == 5000
    with pg.connect(s, dbname=restored) as conn:
        assert pg.table_fingerprints(conn) == expected


def _catch(fn, *args):
    try:
        return fn(*args)
    except BaseException as exc:  # handed to the test thread
        return exc


def test_base_backup_and_wal_streaming_over_verified_tls(pg_settings, repo, stack_ca, tmp_path):
    s = verified(pg_settings, stack_ca)
    backup = base_backup.take_base_backup(s, repo, DAY)
    assert backup.metadata["start_lsn"] and backup.metadata["stop_lsn"]
    # The server's private key lives outside its data directory, so no backup carries it.
    with base_backup.open_tar(repo, backup) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        names = [member.name for member in tar]
    assert "PG_VERSION" in names and not [name for name in names if name.endswith(".key")]

    with running_wal_receiver(s, repo, tmp_path / "spool") as receiver, pg.connect(pg_settings) as watch:
        pid = wait_for(
            "pg_receivewal streaming from its slot",
            lambda: (
                row[0]
                if (
                    row := watch.execute(
                        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s AND active", (receiver.slot,)
                    ).fetchone()
                )
                else None
            ),
        )
        is_ssl, version = ssl_of(watch, pid)
        assert is_ssl is True and version in ("TLSv1.2", "TLSv1.3")


def test_a_certificate_from_another_ca_stops_every_backup_path_with_one_line(pg_settings, repo, other_ca, tmp_path):
    s = verified(pg_settings, other_ca)
    for attempt in (
        lambda: logical_dump.backup_logical(s, repo, DAY),
        lambda: base_backup.take_base_backup(s, repo, DAY),
    ):
        with pytest.raises(pg.PostgresError) as err:
            attempt()
        message = str(err.value)
        assert "\n" not in message
        assert "TLS certificate verification failed" in message and "POSTGRES_SSLROOTCERT" in message
    assert repo.list() == []  # refused before anything was written

    # The client programs verify on their own too, not only our connection in front of them.
    for argv in (
        [pg.pg_bin("pg_dump", s.bin_dir), "--schema-only", "--no-password"],
        [pg.pg_bin("pg_basebackup", s.bin_dir), "-D", str(tmp_path / "never"), "--no-password"],
    ):
        done = subprocess.run(argv, env=pg.child_env(s), capture_output=True, text=True, timeout=WAIT_S)
        assert done.returncode != 0
        explained = pg.explain_tls(done.stderr, s)
        assert explained is not None and "TLS certificate verification failed" in explained, done.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("command", ["postgres", "postgres-base"])
def test_cli_backup_with_the_wrong_ca_is_one_line_without_traceback(pg_settings, other_ca, tmp_path, command):
    cli = Path(sys.executable).with_name("auction-backup")
    env = dict(os.environ, POSTGRES_SSLMODE="verify-full", POSTGRES_SSLROOTCERT=other_ca)
    done = subprocess.run(
        [str(cli), "--repo", str(tmp_path / "backups"), "backup", command],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("auction-backup: error: TLS certificate verification failed")
    assert "POSTGRES_SSLROOTCERT" in lines[0] and other_ca in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert pg_settings.password not in done.stdout + done.stderr


def test_cli_backup_with_the_stack_ca_succeeds(pg_settings, stack_ca, source_db, tmp_path):
    cli = Path(sys.executable).with_name("auction-backup")
    env = dict(os.environ, POSTGRES_SSLMODE="verify-full", POSTGRES_SSLROOTCERT=stack_ca, POSTGRES_DB=source_db)
    done = subprocess.run(
        [str(cli), "--repo", str(tmp_path / "backups"), "backup", "postgres"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert '"rows_total": 5000' in done.stdout

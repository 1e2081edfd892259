"""No secret of ours reaches a program we start: every child's environment, read from /proc while it runs.

Our environment holds every secret of the platform; the engines give each child an allowlist
(`child_env.base_env`) plus the one credential it needs. Each test sets a distinctive value for
every secret variable, runs engines against the real services, and reads /proc/<pid>/environ
and cmdline of every process under ours, and of the server PITR recovers (pg_ctl detaches it).
No secret and no variable of our settings may appear there, except the PostgreSQL password as
PGPASSWORD of a PostgreSQL client program.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets

import pytest

from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.kafka import restore as kr
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.verification import verify_snapshot
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import ENVIRONMENT_VARIABLES, SECRET_VARIABLES, RedisSettings
from tests.conftest import running_wal_receiver
from tests.kafka.test_export_restore import BOOTSTRAP, D1, Kafka, Msg, at
from tests.ops.child_watch import ChildWatch, Seen

pytestmark = pytest.mark.integration
DAY = dt.date(2026, 11, 20)
PG_CLIENTS = {"pg_dump", "pg_basebackup", "pg_receivewal", "pg_restore"}
"""The programs that connect to PostgreSQL for us: the only ones that may hold its password (as PGPASSWORD)."""


@pytest.fixture
def redis_settings():
    return RedisSettings.from_env()


@pytest.fixture
def secret_env(pg_settings, redis_settings, monkeypatch) -> dict[str, str]:
    """Every secret variable set in our environment, after the settings were read, to a value found nowhere else.

    The engines parse none of them (they get settings objects), so no value needs to be valid;
    REDIS_PASSWORD, for one, is set although the stack's Redis has none (an unused secret)."""
    assert pg_settings.password, "the stack's PostgreSQL needs a password, or this proves nothing about PGPASSWORD"
    values = {name: f"{name.lower()}-{secrets.token_hex(8)}" for name in SECRET_VARIABLES}
    values["POSTGRES_PASSWORD"] = pg_settings.password
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def leaks(seen: Seen, secret_env: dict[str, str]) -> list[str]:
    """Every secret (and every variable of our settings) in the argv or environment of `seen`."""
    where = f"{seen.program} (pid {seen.pid})"
    found = [f"{key} in the environment of {where}" for key in seen.environ if key in ENVIRONMENT_VARIABLES]
    for name, value in secret_env.items():
        if value in seen.command:
            found.append(f"{name}'s value on the command line of {where}")
        for key, text in seen.environ.items():
            allowed = name == "POSTGRES_PASSWORD" and key == "PGPASSWORD" and seen.program in PG_CLIENTS
            if value in key + "=" + text and not allowed:
                found.append(f"{name}'s value in {key} of {where}")
    return found


def assert_no_leaks(watch: ChildWatch, secret_env: dict[str, str]) -> None:
    found = [leak for seen in watch.seen for leak in leaks(seen, secret_env)]
    assert found == [], "secrets reached child processes: " + "; ".join(sorted(set(found)))
    inherited = [s.argv[0] for s in watch.started if s.env is None]
    assert inherited == [], f"started with our whole environment (no env=): {inherited}"


def only(watch: ChildWatch, program: str) -> list[Seen]:
    seen = [s for s in watch.seen if s.program == program]
    assert seen, f"{program} was never seen running (seen: {sorted(watch.programs())})"
    return seen


def test_postgres_client_programs_get_their_connection_and_nothing_else(pg_settings, secret_env, tmp_path, monkeypatch):
    repo = Repository.local(tmp_path / "repo")
    with ChildWatch(monkeypatch) as watch:
        dump = pg.backup_logical(pg_settings, repo, DAY)
        pg.dump_toc(repo, dump)
    assert_no_leaks(watch, secret_env)
    for seen in only(watch, "pg_dump"):  # the credential it needs is still there, in its one place
        assert seen.environ["PGPASSWORD"] == pg_settings.password and seen.environ["PGPORT"] == str(pg_settings.port)
    # --list reads a stream and connects nowhere. It can run and exit between two samples of
    # /proc on a busy machine; then the environment it was started with (env=, recorded at
    # Popen) is what it had, and is checked instead.
    restores = [s for s in watch.seen if s.program == "pg_restore"]
    envs = [s.environ for s in restores] or [
        s.env or {} for s in watch.started if os.path.basename(s.argv[0]) == "pg_restore" and "--list" in s.argv
    ]
    assert envs, f"pg_restore was neither seen running nor started (seen: {sorted(watch.programs())})"
    assert all("--list" in s.argv for s in restores)
    for environ in envs:
        assert not any(k.startswith("PG") for k in environ), environ.keys()


def test_redis_cli_rdb_facts_and_scratch_servers_get_no_secret(redis_settings, secret_env, tmp_path, monkeypatch, on_time_day):
    repo = Repository.local(tmp_path / "repo")
    with ChildWatch(monkeypatch) as watch:
        snap = backup_snapshot(redis_settings, repo, on_time_day, mode="network")
        verify_snapshot(repo, snap)  # loads the snapshot into scratch redis-servers
    assert snap.metadata["transfer"] == "redis-cli --rdb"
    assert_no_leaks(watch, secret_env)
    for program in ("redis-cli", "rdb-facts", "redis-server"):
        assert all(s.environ.get("PATH") for s in only(watch, program))  # read, and the allowlist kept PATH


def test_the_server_pitr_recovers_holds_no_secret(pg_settings, secret_env, tmp_path, pitr_dir, monkeypatch):
    repo = Repository.local(tmp_path / "backups")
    with ChildWatch(monkeypatch) as watch:
        with running_wal_receiver(pg_settings, repo, tmp_path / "spool") as receiver:
            basebackup.take_base_backup(pg_settings, repo, DAY)
            with pg_client.connect(pg_settings) as conn:
                after = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            assert wait_for_archived_time(receiver.archive, after), "the WAL after the base backup never reached the archive"
            result = pitr.restore_to_time(pg_settings, repo, receiver.archive, None, pitr_dir)
        with result.instance(pg_settings.bin_dir) as inst:
            # pg_ctl detached the server from our tree: read it, and its backends, by its pid
            postmaster = int((inst.data_dir / "postmaster.pid").read_text().split()[0])
            watch.sample_tree(postmaster)
    assert_no_leaks(watch, secret_env)
    for program in ("pg_basebackup", "pg_receivewal"):
        assert all(s.environ["PGPASSWORD"] == pg_settings.password for s in only(watch, program))
    assert only(watch, "runuser")  # the start went through runuser as postgres
    server = [s for s in watch.seen if s.pid == postmaster]
    assert server and server[0].environ and "PGPASSWORD" not in server[0].environ, server
    assert any(s.program.startswith("postgres:") for s in watch.seen)  # its backends were read too


def test_the_kafka_helpers_get_their_job_on_stdin_and_no_secret(secret_env, tmp_path, monkeypatch):
    kafka = Kafka()
    try:
        topic = kafka.topic("env", 1)
        kafka.produce(topic, [Msg(0, at(D1, h)) for h in range(3)])
        repo = Repository.local(tmp_path / "repo")
        with ChildWatch(monkeypatch) as watch:
            kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)
            kr.restore_topics(repo, (D1, D1), [topic], BOOTSTRAP, topic_prefix=f"{kafka.stem}-env-")
        assert_no_leaks(watch, secret_env)
        # They may start and end between two samples of /proc: what they were started with counts.
        helpers = {os.path.basename(s.argv[0]): s for s in watch.started if os.path.basename(s.argv[0]).startswith("kafka-")}
        assert sorted(helpers) == ["kafka-export", "kafka-replay"]
        for started in helpers.values():
            assert started.argv[1:] == () and started.env is not None and started.env.get("PATH")
            assert not any(value in started.env.values() for value in secret_env.values())
    finally:
        kafka.cleanup()

"""Least privilege and secrets, against the stack's PostgreSQL and Redis (docs/least-privilege.md).

The roles and users made here have fresh random passwords, so finding one anywhere (argv,
logs, manifests, Dagster's storage) can only mean it leaked. The stack's superuser runs
`psql` with the SQL on stdin: a password in psql's argv would be the very leak we test for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import subprocess
from pathlib import Path

import pytest
import redis as redis_py

from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import connect as redis_connect
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import RedisSettings
from tests.ops.child_watch import ChildWatch

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)
REDIS_BACKUP_ACL = "-@all +@connection +info +time +config|get +sync +psync +replconf"


def superuser_sql(sql: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "stack" / "postgres.sh"), "psql", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-At"],
        input=sql,
        text=True,
        capture_output=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def make_role():
    """make_role(attributes, grants) -> PostgresSettings for a new role; all dropped afterwards."""
    from auction_backup_pipelines.settings import PostgresSettings

    made: list[str] = []

    def make(attributes: str, grant: str = "") -> PostgresSettings:
        name, password = f"abp_test_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        made.append(name)
        superuser_sql(
            f"CREATE ROLE {name} {attributes} PASSWORD '{password}';\n" + (f"GRANT {grant} TO {name};\n" if grant else "")
        )
        return dataclasses.replace(PostgresSettings.from_env(), user=name, password=password)

    yield make
    for name in made:
        dbs = superuser_sql(
            f"SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = '{name}');"
        )
        drops = "".join(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);\n' for db in dbs.split())
        superuser_sql(drops + f"DROP OWNED BY {name};\nDROP ROLE {name};\n")
    assert superuser_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'abp_test_%';").strip() == "0"


@pytest.fixture(scope="module")
def backup_role(make_role):
    return make_role("LOGIN REPLICATION", "pg_read_all_data")


@pytest.fixture
def redis_backup_user():
    """A Redis ACL user with the backup's grants only; the ACL is exactly as before afterwards."""
    s = RedisSettings.from_env()
    admin = redis_py.Redis(host=s.host, port=s.port, username=s.username or None, password=s.password or None)
    before = admin.acl_list()
    name, password = f"abp_test_{secrets.token_hex(4)}", secrets.token_urlsafe(24)
    admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{password}", *REDIS_BACKUP_ACL.split())
    try:
        yield dataclasses.replace(s, username=name, password=password)
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        assert admin.acl_list() == before
        admin.close()


# -- PostgreSQL role ------------------------------------------------------------------------------


def test_backup_role_needs_only_replication_and_pg_read_all_data(backup_role, tmp_path):
    attrs = superuser_sql(
        f"SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = '{backup_role.user}';"
    )
    assert attrs.strip() == "f|f|f|t"
    repo = Repository.local(tmp_path / "repo")
    dump = pg.backup_logical(backup_role, repo, DAY)
    assert dump.metadata["rows_total"] > 0 and all(t["checksum"] for t in dump.metadata["tables"].values())
    base = basebackup.take_base_backup(backup_role, repo, DAY)
    assert base.metadata["stop_lsn"]


def test_less_than_that_is_refused_clearly(make_role, tmp_path):
    repo = Repository.local(tmp_path / "repo")
    no_read = make_role("LOGIN REPLICATION")
    # The fingerprint query may hit "permission denied" first and abort the transaction whose
    # snapshot pg_dump imports; pg_dump then reports the lost snapshot instead.
    with pytest.raises(pg_client.PostgresError, match="permission denied|could not import the requested snapshot"):
        pg.backup_logical(no_read, repo, DAY)
    no_replication = make_role("LOGIN", "pg_read_all_data")
    with pytest.raises(pg_client.PostgresError, match="replication"):
        basebackup.take_base_backup(no_replication, repo, DAY)
    assert repo.list() == []


def test_restore_role_needs_only_createdb(backup_role, make_role, tmp_path):
    repo = Repository.local(tmp_path / "repo")
    dump = pg.backup_logical(backup_role, repo, DAY)
    restorer = make_role("LOGIN CREATEDB")
    target = f"abp_restored_{secrets.token_hex(3)}"
    result = pg.restore_logical(restorer, repo, dump, target)  # dropped with the role's databases
    assert result.rows_total == dump.metadata["rows_total"]
    cannot = make_role("LOGIN")
    with pytest.raises(pg_client.RestoreRefused, match="may not create databases.*needs CREATEDB"):
        pg.restore_logical(cannot, repo, dump, target + "_x")


# -- Redis ACL user -------------------------------------------------------------------------------


def test_redis_backup_user_can_snapshot_but_not_write(redis_backup_user, tmp_path, on_time_day):
    repo = Repository.local(tmp_path / "repo")
    backup = backup_snapshot(redis_backup_user, repo, on_time_day, mode="network")
    assert backup.metadata["transfer"] == "redis-cli --rdb" and backup.metadata["keys_total"] >= 0
    client = redis_connect(redis_backup_user)
    try:
        for command in (("SET", "abp:x", "1"), ("GET", "abp:x"), ("FLUSHALL",), ("CONFIG", "SET", "save", ""), ("ACL", "LIST")):
            with pytest.raises(redis_py.exceptions.NoPermissionError):
                client.execute_command(*command)
    finally:
        client.close()


# -- no password anywhere --------------------------------------------------------------------------


def _assert_absent(secret: str, where: str, text: str | bytes) -> None:
    needle = secret.encode() if isinstance(text, bytes) else secret
    assert needle not in text, f"the password leaked into {where}"


def test_password_never_in_argv_logs_or_manifest(backup_role, redis_backup_user, tmp_path, monkeypatch, caplog, on_time_day):
    caplog.set_level(logging.DEBUG)
    repo = Repository.local(tmp_path / "repo")
    with ChildWatch(monkeypatch) as watch:
        dump = pg.backup_logical(backup_role, repo, DAY)
        pg.dump_toc(repo, dump)
        snap = backup_snapshot(redis_backup_user, repo, on_time_day, mode="network")
    assert any("pg_dump" in a for a in watch.argvs) and any("redis-cli" in a for a in watch.argvs)
    assert {"pg_dump", "redis-cli"} <= watch.programs()  # read from /proc while they ran
    for secret in (backup_role.password, redis_backup_user.password):
        for text in watch.argvs + watch.commands:
            _assert_absent(secret, f"argv {text[:60]!r}", text)
        _assert_absent(secret, "the logs", caplog.text)
        _assert_absent(secret, "a manifest", dump.to_json() + snap.to_json())
        for path in (tmp_path / "repo").rglob("*"):
            if path.is_file():
                _assert_absent(secret, f"repository file {path.name}", path.read_bytes())


def test_password_not_in_dagster_event_logs_or_storage(backup_role, tmp_path, monkeypatch):
    from dagster import DagsterInstance, EnvVar, materialize
    from dagster._serdes import serialize_value

    from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
    from tests.dagster_defs import postgres_logical_dump

    monkeypatch.setenv("POSTGRES_PASSWORD", backup_role.password)
    day = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as instance:
        result = materialize(
            [postgres_logical_dump],
            partition_key=day,
            instance=instance,
            resources={
                "postgres": PostgresResource(
                    host=backup_role.host,
                    port=backup_role.port,
                    dbname=backup_role.dbname,
                    user=backup_role.user,
                    password=EnvVar("POSTGRES_PASSWORD"),
                ),
                "backup_repo": BackupRepositoryResource(root=str(tmp_path / "repo")),
            },
        )
        assert result.success
        events = instance.all_logs(result.run_id)
        assert any(e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION" for e in events)
        for e in events:
            _assert_absent(backup_role.password, "a Dagster event", serialize_value(e) + str(e.message))
        run = instance.get_run_by_id(result.run_id)
        _assert_absent(backup_role.password, "the run config", serialize_value(run))
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in stored)  # the sqlite run/event storage was written here
    for path in stored:
        _assert_absent(backup_role.password, f"Dagster storage {path.name}", path.read_bytes())

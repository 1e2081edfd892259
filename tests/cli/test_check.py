"""`auction-backup check`: one OK/WARN/FAIL line per check and a monitoring-plugin exit code
(0 ok, 1 warning, 2 failure), run as an operator runs it against the stack, with a repository,
an offsite prefix and a replication slot of each test's own."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import uuid

import pytest

from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings
from tests.cli.cli_run import closed_port, run_cli
from tests.cli.test_info import snapshot

pytestmark = pytest.mark.integration
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def checks_of(done) -> dict[str, dict[str, str]]:
    doc = json.loads(done.stdout)
    return {c["name"]: c for c in doc["checks"]} | {"overall": {"status": doc["status"]}}


@pytest.fixture
def env(tmp_path):
    """This test's repository (one backup in it) and offsite prefix; no encryption."""
    root = tmp_path / "backups"
    snapshot(Repository.local(str(root)), DAY, 100)
    values = {"BACKUP_ROOT": str(root), "OFFSITE_S3_PREFIX": f"test-{uuid.uuid4().hex[:10]}-check"}
    return values | {k: "" for k in ("BACKUP_ENCRYPTION_KEYS", "BACKUP_ENCRYPTION_KEY_FILE")}


@pytest.fixture
def idle_slot():
    """A physical replication slot of this test that holds WAL but has no receiver."""
    name = f"test_check_{secrets.token_hex(4)}"
    with pg.connect(PostgresSettings.from_env()) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    yield name
    with pg.connect(PostgresSettings.from_env()) as conn:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))


def test_warnings_only_exit_1_and_every_check_has_one_line(env, idle_slot, tmp_path):
    done = run_cli("check", "--slot", idle_slot, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    statuses = {line.split()[0] for line in lines[:-1]}
    assert statuses == {"OK", "WARN"}, done.stdout
    for name in ("repository local", "keys local", "repository offsite", "keys offsite", "service postgres"):
        assert any(line.startswith("OK") and f" {name} " in line for line in lines), (name, done.stdout)
    assert any(line.startswith("WARN") and "replication slot" in line and "no receiver connected" in line for line in lines)
    assert any(line.startswith("WARN") and "wal archive" in line and "empty" in line for line in lines)
    assert lines[-1].startswith("WARN: ")
    # the test objects were deleted again, locally (hidden files included) and offsite
    assert [p.name for p in (tmp_path / "backups").iterdir() if "check-probe" in p.name] == []


def test_json_and_a_missing_slot_fails_with_exit_2(env):
    done = run_cli("check", "--json", "--slot", f"never_created_{secrets.token_hex(3)}", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    found = checks_of(done)
    assert found["overall"]["status"] == "FAIL"
    assert found["replication slot"]["status"] == "FAIL" and "no replication slot" in found["replication slot"]["detail"]
    assert found["repository local"]["status"] == "OK" and found["service redis"]["status"] == "OK"
    assert found["free space"]["status"] == "OK" and "GiB free" in found["free space"]["detail"]


def test_keys_that_do_not_decrypt_the_newest_manifest_fail(tmp_path, idle_slot):
    root = tmp_path / "backups"
    snapshot(Repository.local(str(root), encryption=Encryption([("k1", secrets.token_bytes(32))])), DAY, 100)
    other = base64.b64encode(secrets.token_bytes(32)).decode()  # a different key under the same id
    done = run_cli(
        "check", "--json", "--slot", idle_slot, env={"BACKUP_ROOT": str(root), "BACKUP_ENCRYPTION_KEYS": f"k1:{other}"}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    found = checks_of(done)
    assert found["keys local"]["status"] == "FAIL" and "k1" in found["keys local"]["detail"]
    assert found["repository local"]["status"] == "OK"  # writing with the key works; reading old backups does not
    assert other not in done.stdout + done.stderr


def test_unreachable_offsite_store_and_services_are_fail_lines_not_errors(env, idle_slot):
    port = str(closed_port())
    broken = {
        "OFFSITE_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "REDIS_PORT": port,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
    }
    done = run_cli("check", "--json", "--slot", idle_slot, env=env | broken, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    found = checks_of(done)
    assert found["repository offsite"]["status"] == "FAIL"
    assert found["service redis"]["status"] == "FAIL" and port in found["service redis"]["detail"]
    assert found["service kafka"]["status"] == "FAIL"
    assert found["service postgres"]["status"] == "OK" and found["repository local"]["status"] == "OK"
    assert done.stderr == ""
    assert os.environ.get("OFFSITE_S3_SECRET_ACCESS_KEY", "unset-secret") not in done.stdout

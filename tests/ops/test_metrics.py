"""Prometheus metrics: the WAL receiver's endpoint while it runs, each backup's textfile, the dashboard.

The receiver runs as an operator runs it (`auction-backup wal-receive` with WAL_METRICS_PORT),
with a replication slot, a repository and a spool of this test's own; its endpoint is scraped
and parsed with prometheus_client's parser. The textfiles come from real tiny backups (the CLI
backing up a scratch Redis server, a Dagster asset dumping a database of this test's own).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from dagster import DagsterInstance, materialize
from prometheus_client.parser import text_string_to_metric_families

from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.ops.metrics import BACKUP_METRICS, METRIC_NAMES, WAL_METRICS, textfile_path
from auction_backup_pipelines.postgres import client as pg
from auction_backup_pipelines.redis.client import RedisBackupError
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.repository.repository import Repository
from tests.dagster_defs import postgres_logical_dump

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[str, list]:
    """Every sample of an exposition by sample name (the parser raises on a malformed line)."""
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def wait_for(what: str, probe, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def own_db(pg_settings):
    name = f"metrics_{secrets.token_hex(4)}"
    with pg.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with pg.connect(pg_settings, dbname="postgres") as admin:
            pg.drop_database(admin, name)


@contextlib.contextmanager
def wal_receive(tmp_path: Path, pg_settings, port: int):
    """`auction-backup wal-receive` in its own process group; stopped with SIGTERM, its slot dropped."""
    slot = f"test_metrics_{secrets.token_hex(4)}"
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(tmp_path / "backups")]
    argv += ["wal-receive", "--slot", slot, "--spool", str(tmp_path / "spool")]
    log = open(tmp_path / "wal-receive.log", "wb")
    env = {**os.environ, "WAL_METRICS_PORT": str(port)}
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        with pg.connect(pg_settings) as conn:  # a forgotten slot would make the primary keep WAL forever
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))


def test_the_wal_receiver_serves_its_metrics_while_it_runs(tmp_path, pg_settings, own_db):
    port = free_port()
    with wal_receive(tmp_path, pg_settings, port) as proc:

        def scrape() -> dict[str, list] | None:
            assert proc.poll() is None, (tmp_path / "wal-receive.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    return samples(response.read().decode())
            except OSError:
                return None  # not listening yet

        first = wait_for(
            "the receiver's first heartbeat", lambda: (s := scrape()) and "auction_backup_wal_lag_seconds" in s and s
        )
        assert first["auction_backup_wal_receiver_running"][0].value == 1
        assert 0 <= first["auction_backup_wal_lag_seconds"][0].value < 60
        assert first["auction_backup_wal_receiver_restarts_total"][0].value == 0
        slot = first["auction_backup_wal_lag_seconds"][0].labels["slot"]
        assert slot.startswith("test_metrics_")

        with pg.connect(pg_settings, dbname=own_db) as conn:  # WAL for the receiver to receive
            conn.execute("CREATE TABLE filler AS SELECT i, repeat('x', 200) AS pad FROM generate_series(1, 20000) i")
        # pg_switch_wal needs a superuser: the stack's own psql runs as postgres
        subprocess.run(
            ["bash", str(ROOT / "stack" / "postgres.sh"), "psql", "-c", "SELECT pg_switch_wal()"], check=True, capture_output=True
        )

        def received_and_segment() -> dict[str, list] | None:
            s = scrape()
            ok = s and s["auction_backup_wal_received_bytes_total"][0].value > 4_000_000
            return s if ok and "auction_backup_wal_last_segment_timestamp_seconds" in s else None

        later = wait_for("WAL received and a completed segment archived", received_and_segment)
        assert set(later) == set(WAL_METRICS)  # every metric the module documents, and nothing else
        assert abs(later["auction_backup_wal_last_segment_timestamp_seconds"][0].value - time.time()) < 120


def test_a_cli_backup_writes_the_textfile_atomically(tmp_path, on_time_day):
    folder = tmp_path / "textfile"
    folder.mkdir()
    (tmp_path / "redis").mkdir()
    with contextlib.ExitStack() as stack:
        for attempt in range(3):  # a free port can be taken between the probe and the bind
            port = free_port()
            try:
                stack.enter_context(scratch_server(tmp_path / "redis", port=port))
                break
            except RedisBackupError:
                if attempt == 2:
                    raise
        redis.Redis(host="127.0.0.1", port=port).mset({f"m:{i}": "v" * 100 for i in range(50)})
        env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(port), "REDIS_USERNAME": "", "REDIS_PASSWORD": ""}
        env |= {"REDIS_TLS": "", "METRICS_TEXTFILE_DIR": str(folder)}
        argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(tmp_path / "backups")]
        done = subprocess.run(
            [*argv, "backup", "redis", "--date", on_time_day.isoformat()],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )

    assert done.returncode == 0, done.stderr
    backup = Repository.local(tmp_path / "backups").latest("redis", "snapshot")
    assert [p.name for p in folder.iterdir()] == ["auction_backup_redis_snapshot.prom"]  # no temporary file left
    found = samples((folder / "auction_backup_redis_snapshot.prom").read_text())
    assert set(found) == set(BACKUP_METRICS)
    for [sample] in found.values():
        assert sample.labels == {"system": "redis", "artifact": "snapshot"}
    assert found["auction_backup_last_size_bytes"][0].value == backup.stored_size
    assert found["auction_backup_last_source_bytes"][0].value == backup.size
    assert abs(found["auction_backup_last_success_timestamp_seconds"][0].value - time.time()) < 120
    assert 0 <= found["auction_backup_last_duration_seconds"][0].value < 120


def test_a_dagster_backup_writes_the_textfile(tmp_path, pg_settings, own_db, monkeypatch, on_time_day):
    folder = tmp_path / "textfile"
    folder.mkdir()
    monkeypatch.setenv("METRICS_TEXTFILE_DIR", str(folder))
    current_settings.cache_clear()
    try:
        with pg.connect(pg_settings, dbname=own_db) as conn:
            conn.execute("CREATE TABLE lots AS SELECT i AS id FROM generate_series(1, 40) i")
        resources = {
            "postgres": PostgresResource(
                host=pg_settings.host, port=pg_settings.port, dbname=own_db, user=pg_settings.user, password=pg_settings.password
            ),
            "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
        }
        result = materialize(
            [postgres_logical_dump],
            partition_key=on_time_day.isoformat(),
            resources=resources,
            instance=DagsterInstance.ephemeral(),
        )
    finally:
        current_settings.cache_clear()

    assert result.success
    backup = resources["backup_repo"].repository().latest("postgres", "logical_dump")
    found = samples(textfile_path(folder, "postgres", "logical_dump").read_text())
    assert found["auction_backup_last_size_bytes"][0].value == backup.stored_size
    assert found["auction_backup_last_partition_timestamp_seconds"][0].labels == {
        "system": "postgres",
        "artifact": "logical_dump",
    }


def test_the_dashboard_uses_only_metrics_the_code_exports():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "auction-backup.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bauction_backup_[a-z_]+\b", expr)}
    assert used <= METRIC_NAMES, f"not exported: {sorted(used - METRIC_NAMES)}"
    assert used == METRIC_NAMES, f"exported but on no panel: {sorted(METRIC_NAMES - used)}"
    assert all(re.fullmatch(r"[a-z_]+(\{[^}]*\})?|[a-z]+\(.*\)|time\(\) - [a-z_]+", e) for e in exprs), exprs

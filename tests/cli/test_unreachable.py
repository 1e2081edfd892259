"""No command shows a traceback when a service is down: with PostgreSQL, Redis or Kafka pointed at a
closed loopback port, each command that needs it fails in one line on stderr, exit 1."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.repository.repository import Repository
from tests.cli.cli_run import closed_port, run_cli
from tests.ops.synthetic_backups import kafka_topic_day, redis_snapshot

DAY = dt.date(2026, 11, 30)
D = DAY.isoformat()

COMMANDS = [
    ("POSTGRES_PORT", ["backup", "postgres", "--date", D, "--allow-late-capture"]),
    ("POSTGRES_PORT", ["backup", "postgres-base", "--date", D, "--allow-late-capture"]),
    ("REDIS_PORT", ["backup", "redis", "--date", D, "--allow-late-capture", "--mode", "network"]),
    ("POSTGRES_PORT", ["wal-receive", "--spool", "{tmp}/spool"]),
    ("KAFKA", ["backup", "kafka", "--date", D, "--topics", "bids"]),
    ("REDIS_PORT", ["restore", "redis", "--date", D, "--target", "127.0.0.1:{port}", "--allow-any-target", "--json"]),
    ("KAFKA", ["restore", "kafka", "--from", D, "--to", D, "--target-bootstrap", "127.0.0.1:{port}", "--allow-any-target"]),
    ("KAFKA", ["restore", "kafka", "--latest", "--target-bootstrap", "127.0.0.1:{port}", "--allow-any-target", "--json"]),
]


@pytest.mark.parametrize(("service", "command"), COMMANDS, ids=lambda x: " ".join(x[:2]) if isinstance(x, list) else x)
def test_unreachable_service_is_one_line_and_exit_1(tmp_path, service, command):
    repo = Repository.local(str(tmp_path / "backups"))
    redis_snapshot(repo, DAY)
    kafka_topic_day(repo, "bids", DAY)
    port = str(closed_port())
    env = {"BACKUP_ROOT": str(tmp_path / "backups"), "RESTORE_ALLOWED_REDIS": "", "RESTORE_ALLOWED_KAFKA": ""}
    env |= {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"} if service == "KAFKA" else {service: port}
    argv = [a.replace("{port}", port).replace("{tmp}", str(tmp_path)) for a in command]
    done = run_cli(*argv, env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("auction-backup: --latest chose")]
    assert len(errors) == 1 and errors[0].startswith("auction-backup: error: "), done.stderr
    assert port in errors[0] or "127.0.0.1" in errors[0], errors[0]

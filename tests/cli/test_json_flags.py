"""`--json` on every command that prints results: machine output on stdout, the same exit codes;
and `list` prints aligned columns with the capture mode."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid

import pytest

from auction_backup_pipelines.cli.main import build_parser
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings
from tests.cli.cli_run import run_cli
from tests.cli.test_info import snapshot, topic_day

DAY = dt.date(2026, 11, 30)
RESULT_COMMANDS = [
    ["list"],
    ["verify"],
    ["prune", "--dry-run"],
    ["pin", "redis", "snapshot", "--date", "2026-11-30"],
    ["unpin", "redis", "snapshot", "--date", "2026-11-30"],
    ["offsite"],
    ["backup", "postgres"],
    ["backup", "postgres-base"],
    ["backup", "redis"],
    ["backup", "kafka"],
    ["restore", "postgres", "--latest", "--target-db", "x"],
    ["restore", "redis", "--latest", "--target", "h:1"],
    ["restore", "kafka", "--latest"],
    ["pitr", "--show-window"],
    ["wal-status"],
    ["doctor"],
    ["info"],
    ["check"],
]


@pytest.mark.parametrize("command", RESULT_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_every_command_that_prints_results_takes_json(command):
    assert build_parser().parse_args([*command, "--json"]).json is True


@pytest.fixture
def root(tmp_path):
    repo = Repository.local(str(tmp_path / "backups"))
    snapshot(repo, DAY, 10)
    snapshot(repo, DAY - dt.timedelta(days=1), 10)
    topic_day(repo, DAY)
    return str(tmp_path / "backups")


def cli(root: str, *args: str, **env: str):
    return run_cli("--repo", root, *args, env={"OFFSITE_S3_BUCKET": "", **env})


def test_list_columns_are_aligned_and_show_the_capture_mode(root):
    done = cli(root, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["system/artifact", "day", "stored", "captured_at", "capture", "backup_id"]
    for column in ("day", "captured_at", "capture", "backup_id"):
        at = lines[0].index(column)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in lines), f"{column}:\n{done.stdout}"
    stored_end = lines[0].index("stored") + len("stored")  # sizes are right-aligned under their header
    assert all(line[stored_end - 1].isdigit() for line in lines[1:])
    assert "rdb (bgsave+copy)" in lines[-1] and "on time" in lines[1]
    items = json.loads(cli(root, "list", "--json").stdout)
    assert {i["capture"] for i in items} == {"rdb (bgsave+copy)", "on time"}


def test_pin_unpin_prune_pitr_json(root):
    pinned = json.loads(cli(root, "pin", "redis", "snapshot", "--date", DAY.isoformat(), "--json").stdout)
    assert pinned["pinned"] is True and pinned["day"] == DAY.isoformat()
    plan = json.loads(cli(root, "prune", "--dry-run", "--json").stdout)
    decisions = {d["key"].split("/")[2]: d for d in plan["local"]["backups"] if d["key"].startswith("redis/")}
    assert decisions[DAY.isoformat()]["keep"] is True and "pinned" in decisions[DAY.isoformat()]["reasons"]
    assert "offsite" not in plan and plan["local"]["leftovers"] == []
    unpinned = json.loads(cli(root, "unpin", "redis", "snapshot", "--date", DAY.isoformat(), "--json").stdout)
    assert unpinned == {"pinned": False, "was_pinned": True, "system": "redis", "artifact": "snapshot", "day": DAY.isoformat()}
    refused = cli(root, "prune", "--json")
    assert refused.returncode == 1 and refused.stdout == "" and "--json goes with --dry-run" in refused.stderr
    window = json.loads(cli(root, "pitr", "--show-window", "--json").stdout)
    assert window["base_backups"] == [] and window["earliest"] is None


def test_offsite_json_reports_each_copy(root):
    prefix = f"test-{uuid.uuid4().hex[:10]}-json"
    done = run_cli("--repo", root, "offsite", "--json", env={"OFFSITE_S3_PREFIX": prefix})
    try:
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert len(doc["copies"]) == 3 and {c["status"] for c in doc["copies"]} == {"copied"}
        assert all(c["verified"]["bytes_checked"] > 0 for c in doc["copies"]) and doc["wal"] is None
    finally:
        s3 = offsite.repository_from_settings(OffsiteSettings.from_env({**os.environ, "OFFSITE_S3_PREFIX": prefix})).storage
        s3.delete_many(o.key for o in s3.list())


def test_doctor_json_same_exit_code(root):
    done = cli(root, "doctor", "--json", REDIS_PORT="1")
    assert done.returncode == 1
    found = {r["system"]: r for r in json.loads(done.stdout)}
    assert found["redis"]["ok"] is False and found["postgres"]["ok"] is True

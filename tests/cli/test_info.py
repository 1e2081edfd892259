"""`auction-backup info`: per artifact the newest backup with its age, sizes, capture, latest
verdict and offsite state; the PITR window; the key ids (never a key). Run as an operator runs it,
against a local repository of this test and an offsite prefix of its own on the stack's S3 server."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import uuid

import pytest

from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.repository import verdicts
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings
from tests.cli.cli_run import closed_port, run_cli

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()
KEYS = [("k-new", secrets.token_bytes(32)), ("k-old", secrets.token_bytes(32))]
KEYS_VAR = ",".join(f"{i}:{base64.b64encode(k).decode()}" for i, k in KEYS)


def snapshot(repo: Repository, day: dt.date, size: int) -> Backup:
    """A Redis snapshot of `day` as a bgsave capture records it (no server needed: info reads manifests)."""
    with repo.begin("redis", "snapshot", day) as w:
        with w.open_file("dump.rdb") as f:
            f.write(secrets.token_bytes(size))
        w.metadata.update(mode="rdb", transfer="bgsave+copy", captured_at=f"{day.isoformat()}T02:00:00+00:00")
    assert w.committed is not None
    return w.committed


def topic_day(repo: Repository, day: dt.date) -> Backup:
    with repo.begin("kafka", "bids", day) as w:
        with w.open_file("bids.records") as f:
            f.write(b"x" * 100)
        w.metadata.update(capture="on time", captured_at=f"{day.isoformat()}T02:00:00+00:00")
    assert w.committed is not None
    return w.committed


@pytest.fixture
def setup(tmp_path):
    """An encrypted local repository (two keys), and an offsite prefix of this test holding one backup."""
    root = tmp_path / "backups"
    local = Repository.local(str(root), encryption=Encryption(KEYS))
    prefix = f"test-{uuid.uuid4().hex[:10]}-info"
    env = {"BACKUP_ROOT": str(root), "BACKUP_ENCRYPTION_KEYS": KEYS_VAR, "OFFSITE_S3_PREFIX": prefix}
    env |= {"OFFSITE_ENCRYPTION_KEYS": KEYS_VAR, "BACKUP_ENCRYPTION_KEY_FILE": "", "OFFSITE_ENCRYPTION_KEY_FILE": ""}
    snapshot(local, TODAY - dt.timedelta(days=2), 4000)
    newest_redis = snapshot(local, TODAY - dt.timedelta(days=1), 3000)
    kafka = topic_day(local, TODAY - dt.timedelta(days=1))
    verdicts.record(local, newest_redis.ref, "snapshot_restores", False, by="test", error="digest differs")
    settings = OffsiteSettings.from_env({**os.environ, **env})
    remote = offsite.repository_from_settings(settings)
    offsite.copy_backup(local, remote, kafka)
    yield env, newest_redis, kafka
    s3 = remote.storage
    s3.remove_temporaries()
    s3.delete_many(o.key for o in s3.list())


def test_info_json_shows_the_newest_backup_of_each_artifact_with_verdict_offsite_and_key_ids(setup):
    env, redis_backup, kafka_backup = setup
    done = run_cli("info", "--json", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    rows = {(a["system"], a["artifact"]): a for a in doc["artifacts"]}
    assert set(rows) == {("redis", "snapshot"), ("kafka", "bids")}
    redis = rows[("redis", "snapshot")]
    assert redis["backup"] == redis_backup.prefix  # the newest of the two days
    assert redis["stored_size"] == redis_backup.stored_size and redis["size"] == 3000
    assert redis["capture"] == "rdb (bgsave+copy)"
    assert redis["verification"] == "failed" and redis["verified_at"]
    assert redis["offsite"] == "missing" and rows[("kafka", "bids")]["offsite"] == "present"
    assert rows[("kafka", "bids")]["verification"] == "none" and rows[("kafka", "bids")]["capture"] == "on time"
    captured = dt.datetime.combine(TODAY - dt.timedelta(days=1), dt.time(2, 0), tzinfo=dt.UTC)
    expected_age = (dt.datetime.now(dt.UTC) - captured).total_seconds()  # from its captured_at, not the clock's day
    assert expected_age - 300 <= redis["age_s"] <= expected_age
    assert redis["key_id"] == "k-new"
    keys = {k["repository"]: k for k in doc["keys"]}
    assert keys["local"]["encrypts_with"] == "k-new" and keys["local"]["decrypts_with"] == ["k-new", "k-old"]
    assert keys["offsite"]["encrypts_with"] == "k-new"
    assert doc["pitr"]["window"].startswith("nothing is recoverable yet") and doc["pitr"]["newest_segment"] is None
    for _, secret in KEYS:  # ids only, never a key
        assert base64.b64encode(secret).decode() not in done.stdout + done.stderr


def test_info_table_is_aligned_and_names_pitr_and_keys(setup):
    env, redis_backup, _ = setup
    done = run_cli("info", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("system"))
    table = lines[header : header + 3]  # the header and the two artifacts
    for column in ("artifact", "newest", "capture", "verified", "offsite"):
        at = table[0].index(column)
        assert all(row[at - 2 : at] == "  " and row[at] != " " for row in table), f"{column} not aligned:\n" + "\n".join(table)
    assert redis_backup.partition in done.stdout and "failed" in done.stdout and "rdb (bgsave+copy)" in done.stdout
    assert any(line.startswith("PITR: nothing is recoverable yet") for line in lines)
    assert "keys (local): encrypts with k-new, also decrypts k-old" in lines


def test_info_says_when_the_offsite_store_is_unreachable_and_still_answers(setup):
    env, _, _ = setup
    done = run_cli("info", "--json", env={**env, "OFFSITE_S3_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}"}, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["artifacts"] and all(a["offsite"].startswith("unknown: offsite unreachable") for a in doc["artifacts"])


def test_info_without_offsite_says_not_configured(tmp_path):
    repo = Repository.local(str(tmp_path / "backups"))
    snapshot(repo, TODAY - dt.timedelta(days=1), 10)
    done = run_cli("info", "--json", env={"BACKUP_ROOT": str(tmp_path / "backups"), "OFFSITE_S3_BUCKET": ""})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [a["offsite"] for a in doc["artifacts"]] == ["not configured"]
    assert doc["keys"] == [{"repository": "local", "encrypts_with": None, "decrypts_with": [], "problem": None}]

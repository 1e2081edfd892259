"""A Kafka backup's artifact has a slash (`topic_export/<topic>`): pin, unpin, prune and the
resumption of an interrupted deletion work on it, through the CLI and through the pruner.

Needs no service: published backups are written straight into a temporary repository.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from auction_backup_pipelines.kafka.records import export_file, topic_of
from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.policy.retention import Policy
from auction_backup_pipelines.repository.layout import BackupRef, PartitionRef
from auction_backup_pipelines.repository.repository import Repository

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "auction-backup"
TOPIC = "bid-events"
ARTIFACT = f"topic_export/{TOPIC}"
OTHER = "topic_export/bid-events-dlq"  # its name starts with the first one's
UTC = dt.UTC
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
KAFKA_3 = {"kafka/*": Policy(daily=3)}


def put(repo: Repository, artifact: str, day: dt.date):
    with repo.begin("kafka", artifact, day) as w:
        with w.open_file(export_file(topic_of(artifact))) as f:
            f.write(b"m" * 64)
        with w.open_file("topic.json") as f:
            f.write(b"{}")
    return w.committed


def history(repo: Repository, artifact: str, n: int, end: dt.date):
    """n daily backups ending at `end`, newest first."""
    return [put(repo, artifact, end - dt.timedelta(days=i)) for i in range(n)]


def keys(repo: Repository) -> set[str]:
    return {o.key for o in repo.backend.list("")}


# -- the pruner -------------------------------------------------------------------------------


def test_pins_are_found_in_the_one_listing_and_keep_a_slash_artifact(repo):
    backups = history(repo, ARTIFACT, 5, NOW.date() - dt.timedelta(days=1))
    history(repo, OTHER, 5, NOW.date() - dt.timedelta(days=1))
    oldest = backups[-1]
    key = pruning.pin(repo, "kafka", ARTIFACT, oldest.day)
    assert key == f"kafka/{ARTIFACT}/{oldest.partition}/PINNED" == PartitionRef("kafka", ARTIFACT, oldest.day).pin_key
    decisions = {d.backup.key: d for d in pruning.plan(repo, NOW, KAFKA_3)}
    assert decisions[oldest.prefix].keep and "pinned" in decisions[oldest.prefix].reasons
    assert decisions[oldest.prefix].backup.artifact == f"kafka/{ARTIFACT}"
    other_oldest = [k for k in decisions if k.startswith(f"kafka/{OTHER}/{oldest.partition}/")]
    assert [decisions[k].keep for k in other_oldest] == [False]  # the pin is per artifact
    assert pruning.unpin(repo, "kafka", ARTIFACT, oldest.day) is True
    assert not decisions[backups[-2].prefix].keep


def test_an_interrupted_deletion_of_a_slash_artifact_is_finished_by_the_rerun(repo):
    backups = history(repo, ARTIFACT, 4, NOW.date() - dt.timedelta(days=1))
    neighbour = put(repo, OTHER, backups[-1].day)
    victim = backups[-1]
    # A crash after the manifest and the first file were deleted, before the second file.
    repo.backend.delete(victim.manifest_key)
    repo.backend.delete(victim.object_key(victim.files[0]))
    left = {k for k in keys(repo) if victim.ref.owns(k)}
    assert left == {victim.object_key(victim.files[1])}
    [o] = pruning.delete_expired(repo, [victim.prefix], NOW, KAFKA_3)
    assert o.action == pruning.ALREADY_GONE and "removed 1 leftover file(s)" in o.reason
    assert not any(victim.ref.owns(k) for k in keys(repo))
    assert neighbour in repo.list() and len(repo.list("kafka", ARTIFACT)) == 3


def test_a_malformed_key_deletes_nothing(repo):
    b = put(repo, ARTIFACT, NOW.date() - dt.timedelta(days=9))
    before = keys(repo)
    for bad in (f"kafka/{ARTIFACT}", f"kafka/{ARTIFACT}/{b.partition}", f"kafka/{ARTIFACT}/{b.partition}/x/.."):
        [o] = pruning.delete_expired(repo, [bad], NOW, KAFKA_3)
        assert o.action == pruning.ALREADY_GONE and "leftover" not in o.reason
    assert keys(repo) == before


def test_pinning_a_hidden_or_escaping_artifact_is_refused(repo):
    put(repo, ARTIFACT, NOW.date())
    for bad in ("topic_export/../x", "topic_export/.x", "topic_export/", "/topic_export"):
        with pytest.raises(pruning.PruningError, match="invalid artifact"):
            pruning.pin(repo, "kafka", bad, NOW.date())


# -- the CLI ----------------------------------------------------------------------------------


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No offsite store: the stack's one is shared by every test (prefixes of their own), and a
    # prune there would plan the whole bucket while other tests write and delete in it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "OFFSITE_"))}
    env["BACKUP_ROOT"] = str(root)
    return subprocess.run([str(CLI), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def kafka_repo(tmp_path):
    """10 daily backups of one topic and of a topic with a longer name, ending yesterday (UTC)."""
    root = tmp_path / "backups"
    repo = Repository.local(root)
    yesterday = dt.datetime.now(UTC).date() - dt.timedelta(days=1)
    backups = history(repo, ARTIFACT, 10, yesterday)
    history(repo, OTHER, 10, yesterday)
    return root, repo, backups


def test_cli_pin_prune_unpin_prune_on_a_kafka_backup(kafka_repo):
    root, repo, backups = kafka_repo
    oldest = backups[-1]
    day = oldest.partition

    p = cli(root, "pin", "kafka", ARTIFACT, "--date", day, "--note", "legal hold")
    assert p.returncode == 0, p.stderr
    assert f"pinned kafka/{ARTIFACT} {day}" in p.stdout and f"kafka/{ARTIFACT}/{day}/PINNED" in p.stdout
    assert (root / "kafka" / "topic_export" / TOPIC / day / "PINNED").is_file()

    p = cli(root, "prune", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "dry run: 5 backup(s) would be deleted, 15 kept; nothing was deleted" in p.stdout
    [row] = [line for line in p.stdout.splitlines() if oldest.prefix in line]
    assert "KEEP" in row and "pinned" in row
    assert len(repo.list()) == 20

    p = cli(root, "prune")
    assert p.returncode == 0, p.stderr
    assert "5 deleted, 0 already gone, 0 kept, 0 error" in p.stdout
    assert [b.prefix for b in repo.list("kafka", ARTIFACT)][0] == oldest.prefix
    assert len(repo.list("kafka", ARTIFACT)) == 8 and len(repo.list("kafka", OTHER)) == 7

    p = cli(root, "unpin", "kafka", ARTIFACT, "--date", day)
    assert p.returncode == 0 and f"unpinned kafka/{ARTIFACT} {day}" in p.stdout
    p = cli(root, "unpin", "kafka", ARTIFACT, "--date", day)
    assert p.returncode == 0 and f"was not pinned: kafka/{ARTIFACT} {day}" in p.stdout

    p = cli(root, "prune")
    assert p.returncode == 0, p.stderr
    assert f"deleted       local  {oldest.prefix}  (expired)" in p.stdout and "1 deleted" in p.stdout
    assert oldest not in repo.list() and len(repo.list("kafka", ARTIFACT)) == 7
    assert not any(oldest.ref.owns(k) for k in keys(repo))


def test_cli_refuses_a_bad_artifact_or_a_day_without_backup_in_one_line(kafka_repo):
    root, repo, _ = kafka_repo
    before = keys(repo)
    p = cli(root, "pin", "kafka", "topic_export/../../etc", "--date", "2026-01-01")
    assert p.returncode == 1 and p.stderr.startswith("auction-backup: error: invalid artifact") and p.stderr.count("\n") == 1
    p = cli(root, "pin", "kafka", ARTIFACT, "--date", "2020-01-01")
    assert p.returncode == 1 and f"no complete kafka/{ARTIFACT} backup for 2020-01-01" in p.stderr
    assert keys(repo) == before


def test_cli_list_shows_the_whole_artifact(kafka_repo):
    root, _, backups = kafka_repo
    p = cli(root, "list", "kafka", ARTIFACT, "--json")
    assert p.returncode == 0, p.stderr
    assert BackupRef.parse(backups[0].prefix).artifact == ARTIFACT
    assert f'"key": "{backups[0].prefix}"' in p.stdout and OTHER not in p.stdout

"""policy.pruning: repository listings as retention records, pins, and guarded deletions."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.policy.retention import Policy
from auction_backup_pipelines.repository.manifest import NotFoundError
from tests.policy.synthetic_wal import prune

UTC = dt.UTC
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
TODAY = dt.date(2026, 11, 26)
REDIS_ONLY = {"redis/*": Policy(daily=3)}


def put(repo, system, artifact, day, **meta):
    with repo.begin(system, artifact, day) as w:
        with w.open_file("data.bin") as f:
            f.write(b"x" * 64)
        w.metadata.update(meta)
    return w.committed


def days_back(n, end=TODAY - dt.timedelta(days=1)):
    return [end - dt.timedelta(days=i) for i in range(n)]


def redis_history(repo, n):
    """n daily redis snapshots ending yesterday, newest first."""
    return [put(repo, "redis", "snapshot", d) for d in days_back(n)]


@pytest.fixture
def list_calls(repo, monkeypatch):
    calls = []
    original = repo.backend.list

    def counting(prefix=""):
        calls.append(prefix)
        return original(prefix)

    monkeypatch.setattr(repo.backend, "list", counting)
    return calls


def test_records_carry_key_artifact_day_status_deps_and_wal(repo):
    base = put(repo, "postgres", "base_backup", "2026-11-20")
    dump = put(repo, "postgres", "logical_dump", "2026-11-21", verification="failed", status="good")
    snap = put(repo, "redis", "snapshot", "2026-11-22", status="unverified")
    wal = put(repo, "postgres", "wal", "2026-11-23", depends_on=[base.prefix])
    recs = {r.key: r for r in pruning.records_from_repository(repo)}
    assert set(recs) == {base.prefix, dump.prefix, snap.prefix, wal.prefix}
    assert base.prefix.startswith("postgres/base_backup/2026-11-20/")
    assert recs[base.prefix].artifact == "postgres/base_backup" and recs[base.prefix].status == "good"
    assert recs[base.prefix].day == dt.date(2026, 11, 20) and recs[base.prefix].wal_for is None
    assert recs[dump.prefix].status == "failed"  # a failed verification wins over status
    assert recs[snap.prefix].status == "unverified"
    assert recs[wal.prefix].wal_for == "postgres/base_backup"
    assert recs[wal.prefix].depends_on == frozenset({base.prefix})
    assert not any(r.pinned for r in recs.values())


@pytest.mark.parametrize("meta, match", [({"status": "ok"}, "status 'ok'"), ({"depends_on": "x/y/z/w"}, "depends_on")])
def test_a_manifest_the_pruner_cannot_read_stops_the_plan(repo, meta, match):
    b = put(repo, "redis", "snapshot", "2026-11-20", **meta)
    with pytest.raises(pruning.PruningError, match=match) as err:
        pruning.plan(repo, NOW)
    assert b.manifest_key in str(err.value)


def test_one_listing_per_plan_whatever_the_repository_holds(repo, list_calls):
    redis_history(repo, 5)
    put(repo, "postgres", "logical_dump", "2026-11-20")
    pruning.pin(repo, "redis", "snapshot", days_back(5)[-1])
    list_calls.clear()
    decisions = pruning.plan(repo, NOW)
    assert len(decisions) == 6
    assert list_calls == [""]
    assert [d.backup.pinned for d in decisions if d.backup.artifact == "redis/snapshot"].count(True) == 1


def test_pin_keeps_an_expired_day_and_survives_a_new_backup_of_that_day(repo):
    oldest = redis_history(repo, 5)[-1]
    [d] = [d for d in pruning.plan(repo, NOW, REDIS_ONLY) if d.backup.key == oldest.prefix]
    assert not d.keep

    key = pruning.pin(repo, "redis", "snapshot", oldest.partition, note="legal hold")
    assert key == f"redis/snapshot/{oldest.partition}/PINNED"
    [d] = [d for d in pruning.plan(repo, NOW, REDIS_ONLY) if d.backup.day == oldest.day]
    assert d.keep and "pinned" in d.reasons

    again = put(repo, "redis", "snapshot", oldest.partition)  # replaces the day's backup
    [d] = [d for d in pruning.plan(repo, NOW, REDIS_ONLY) if d.backup.day == oldest.day]
    assert d.backup.key == again.prefix and d.keep and "pinned" in d.reasons

    assert pruning.unpin(repo, "redis", "snapshot", oldest.partition) is True
    assert pruning.unpin(repo, "redis", "snapshot", oldest.partition) is False
    [d] = [d for d in pruning.plan(repo, NOW, REDIS_ONLY) if d.backup.day == oldest.day]
    assert not d.keep


def test_pinning_a_day_without_a_backup_is_refused(repo):
    redis_history(repo, 2)
    with pytest.raises(NotFoundError, match="no complete redis/snapshot backup for 2026-01-01"):
        pruning.pin(repo, "redis", "snapshot", "2026-01-01")
    with pytest.raises(pruning.PruningError, match="invalid artifact"):
        pruning.pin(repo, "redis", "../x", "2026-01-01")
    assert not any(o.key.endswith("/PINNED") for o in repo.backend.list(""))


def test_delete_removes_exactly_the_expired_and_is_idempotent(repo):
    backups = redis_history(repo, 6)
    doomed = [b.prefix for b in backups[3:]]
    first = pruning.delete_expired(repo, doomed, NOW, REDIS_ONLY)
    assert [(o.key, o.action, o.reason) for o in first] == [(k, pruning.DELETED, "expired") for k in sorted(doomed)]
    assert [b.prefix for b in repo.list()] == sorted(b.prefix for b in backups[:3])
    assert not any(o.key.startswith(tuple(doomed)) for o in repo.backend.list(""))  # files too

    second = pruning.delete_expired(repo, doomed, NOW, REDIS_ONLY)
    assert {o.action for o in second} == {pruning.ALREADY_GONE}
    assert len(repo.list()) == 3


def test_an_interrupted_deletion_is_finished_by_the_rerun(repo):
    backups = redis_history(repo, 4)
    victim = backups[-1]
    repo.backend.delete(victim.manifest_key)  # crash after the manifest, before the files
    assert any(o.key.startswith(victim.prefix + "/") for o in repo.backend.list(""))
    [o] = pruning.delete_expired(repo, [victim.prefix], NOW, REDIS_ONLY)
    assert o.action == pruning.ALREADY_GONE and "removed 1 leftover file(s)" in o.reason
    assert not any(o.key.startswith(victim.prefix + "/") for o in repo.backend.list(""))


def test_fresh_plan_refuses_what_became_the_last_good_backup(repo):
    backups = redis_history(repo, 4)
    oldest = backups[-1]
    assert [d.keep for d in pruning.plan(repo, NOW, REDIS_ONLY) if d.backup.key == oldest.prefix] == [False]
    for newer in backups[:-1]:  # e.g. an operator removed the newer ones meanwhile
        repo.delete(newer)
    [o] = pruning.delete_expired(repo, [oldest.prefix], NOW, REDIS_ONLY)
    assert o.action == pruning.KEPT and "last good backup" in o.reason
    assert [b.prefix for b in repo.list()] == [oldest.prefix]


def test_fresh_plan_refuses_a_day_pinned_after_the_request(repo):
    oldest = redis_history(repo, 5)[-1]
    pruning.pin(repo, "redis", "snapshot", oldest.partition)
    [o] = pruning.delete_expired(repo, [oldest.prefix], NOW, REDIS_ONLY)
    assert o.action == pruning.KEPT and "pinned" in o.reason
    assert oldest.prefix in {b.prefix for b in repo.list()}


def test_only_the_requested_keys_are_deleted(repo):
    backups = redis_history(repo, 6)
    [o] = pruning.delete_expired(repo, [backups[-1].prefix], NOW, REDIS_ONLY)
    assert o.action == pruning.DELETED
    assert len(repo.list()) == 5  # backups[3] and [4] are expired too but were not asked for


def test_dry_run_deletes_nothing(repo):
    backups = redis_history(repo, 5)
    outcomes = pruning.delete_expired(repo, [b.prefix for b in backups], NOW, REDIS_ONLY, dry_run=True)
    assert [o.action for o in outcomes].count(pruning.WOULD_DELETE) == 2
    assert [o.action for o in outcomes].count(pruning.KEPT) == 3
    assert len(repo.list()) == 5


def test_prune_command_prints_reasons_and_deletes_unless_dry_run(repo, capsys):
    for d in days_back(9):
        put(repo, "redis", "snapshot", d)
    put(repo, "redis", "snapshot", days_back(9)[-1] - dt.timedelta(days=1), verification="failed")

    assert prune(repo, dry_run=True, now=NOW) == 0
    out = capsys.readouterr().out
    assert "REASONS" in out and "daily #1" in out and "expired: failed" in out
    assert "dry run: 3 backup(s) would be deleted, 7 kept; nothing was deleted" in out
    assert len(repo.list()) == 10

    assert prune(repo, dry_run=False, now=NOW) == 0
    out = capsys.readouterr().out
    assert "3 deleted, 0 already gone, 0 kept, 0 error" in out
    assert sorted(b.day for b in repo.list()) == sorted(days_back(7))

    assert prune(repo, dry_run=False, now=NOW) == 0
    assert "nothing expired; 7 backup(s) kept" in capsys.readouterr().out


def test_gc_incomplete_keeps_pins(repo):
    b = redis_history(repo, 1)[0]
    key = pruning.pin(repo, "redis", "snapshot", b.partition)
    repo.gc_incomplete()
    assert any(o.key == key for o in repo.backend.list(""))

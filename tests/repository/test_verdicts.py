"""Restore verdicts in a local repository: where they live, how the pruning listing reads them,
and that they never pass for a backup's files."""

from __future__ import annotations

import datetime as dt

from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.repository import layout, verdicts

DAY = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC)


def publish(repo, day=DAY, artifact="snapshot", system="redis"):
    with repo.begin(system, artifact, day.isoformat()) as w:
        with w.open_file("data.bin") as f:
            f.write(b"bytes of " + day.isoformat().encode())
    return w.committed


def statuses(repo) -> dict[str, str]:
    return {r.key: r.status for r in pruning.records_from_repository(repo)}


def test_verdict_keys_round_trip_and_are_not_backup_files(repo):
    b = publish(repo, artifact="topic_export/2026-11-19", system="kafka")  # a topic that looks like a day
    key = b.ref.verdict_key
    assert key == f"verdicts/{b.prefix}.json"
    assert layout.parse_verdict_key(key) == b.ref
    assert layout.parse_file_key(key) is None and layout.parse_catalog_key(key) is None
    assert layout.parse_verdict_key(b.manifest_key) is None
    verdicts.record(repo, b.ref, "export_restores", False, "test", error="counts differ")
    assert [x.prefix for x in repo.list()] == [b.prefix]  # a verdict is never listed as a backup
    assert repo.gc_incomplete() == []  # nor swept as a leftover of one


def test_latest_verdict_decides_the_status_and_inconclusive_ones_do_not(repo):
    b = publish(repo)
    assert statuses(repo) == {b.prefix: "good"}
    verdicts.record(repo, b.ref, "snapshot_restores", False, "test", error="digest differs")
    assert statuses(repo) == {b.prefix: "failed"}
    verdicts.record(repo, b.ref, "snapshot_restores", True, "test", figures={"keys": 3, "digest": "ab"})
    assert statuses(repo) == {b.prefix: "good"}
    v = verdicts.read(repo, b.ref)
    assert v is not None and v.passed and v.figures == {"keys": 3, "digest": "ab"} and v.error is None
    verdicts.record(repo, b.ref, "snapshot_restores", False, "test", error="scratch server did not start", conclusive=False)
    assert verdicts.read(repo, b.ref).result == verdicts.INCONCLUSIVE
    assert statuses(repo) == {b.prefix: "good"}


def test_an_unreadable_verdict_counts_as_none(repo):
    b = publish(repo)
    with repo.backend.writer(b.ref.verdict_key) as f:
        f.write(b"{not json")
    found, problems = verdicts.latest_verdicts(repo, [o.key for o in repo.backend.list("")])
    assert found == {} and len(problems) == 1 and b.ref.verdict_key in problems[0]
    assert statuses(repo) == {b.prefix: "good"}


def test_deleting_a_backup_deletes_its_verdict(repo):
    b = publish(repo)
    verdicts.record(repo, b.ref, "snapshot_restores", True, "test")
    repo.delete(b)
    assert verdicts.read(repo, b.ref) is None
    assert not [o.key for o in repo.backend.list(layout.verdicts_prefix())]

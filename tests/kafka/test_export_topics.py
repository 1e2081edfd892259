"""Several topics exported at once (export_topics, KAFKA_EXPORT_PARALLEL_TOPICS) on the real broker.

Topics are named after a random stem and deleted afterwards, like test_export_restore's.
"""

from __future__ import annotations

import threading

import pytest

from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.kafka import export_topics as ket
from auction_backup_pipelines.kafka.records import TopicNotFound
from auction_backup_pipelines.repository.repository import Repository
from tests.kafka.test_export_restore import BOOTSTRAP, D1, Msg, at, kafka  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def fill(kafka, suffix: str, n: int) -> str:  # noqa: F811
    topic = kafka.topic(suffix, 2)
    kafka.produce(topic, [Msg(i % 2, at(D1, 1) + i, b"k%d" % i, b"%s-%d" % (suffix.encode(), i)) for i in range(n)])
    return topic


def test_topics_export_in_parallel_as_they_would_one_by_one(kafka, tmp_path, monkeypatch):  # noqa: F811
    topics = [fill(kafka, name, n) for name, n in (("a", 30), ("b", 7), ("c", 12))]
    serial = {t: kx.backup_topic_day(BOOTSTRAP, Repository.local(str(tmp_path / "serial")), t, D1) for t in topics}

    # Each export waits until a second one has started: a pool that ran them one by one
    # would break the barrier (timeout) instead of passing it.
    barrier = threading.Barrier(2, timeout=60)
    real = ket.backup_topic_day

    def overlapping(*args, **kwargs):
        barrier.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(ket, "backup_topic_day", overlapping)
    done: list[str] = []
    repo = Repository.local(str(tmp_path / "parallel"))
    outcomes = ket.export_topics(BOOTSTRAP, repo, [topics[0], topics[1]], D1, parallel=2, on_done=lambda o: done.append(o.topic))
    monkeypatch.setattr(ket, "backup_topic_day", real)
    outcomes += ket.export_topics(BOOTSTRAP, repo, [topics[2]], D1, parallel=2)

    assert [o.topic for o in outcomes] == topics and sorted(done) == sorted(topics[:2])
    for o in outcomes:
        assert o.error is None and o.backup is not None
        mine, theirs = o.backup.metadata, serial[o.topic].metadata
        assert mine["messages_total"] == theirs["messages_total"] > 0
        assert mine["messages_sha256"] == theirs["messages_sha256"]  # the same bytes, whatever ran beside it
        assert mine["partitions"] == theirs["partitions"]


def test_a_failing_topic_does_not_stop_the_others(kafka, tmp_path):  # noqa: F811
    good = fill(kafka, "good", 5)
    missing = f"{kafka.stem}-missing"
    outcomes = ket.export_topics(BOOTSTRAP, Repository.local(str(tmp_path)), [missing, good], D1, parallel=2)
    assert [o.topic for o in outcomes] == [missing, good]
    assert isinstance(outcomes[0].error, TopicNotFound) and outcomes[0].backup is None
    assert outcomes[1].error is None and outcomes[1].backup is not None
    assert outcomes[1].backup.metadata["messages_total"] == 5

"""Export one day of several topics, a few at a time (KAFKA_EXPORT_PARALLEL_TOPICS).

One topic's export leaves a core partly idle: librdkafka's fetch, sha256 and zstd release
the GIL, and what holds it (encoding the blocks) is a small share of the work. So exports run
in threads of one process rather than in child processes: no second interpreter, repository
connection or broker metadata fetch per topic, and the same throughput (see bench_kafka's
parallel section). Each topic is still its own backup: a failure in one does not stop or
change the others, and each keeps its own pace limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from auction_backup_pipelines.kafka.connection import Cluster, settings_of
from auction_backup_pipelines.kafka.export import backup_topic_day
from auction_backup_pipelines.kafka.records import KafkaBackupError
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


@dataclass(frozen=True)
class TopicOutcome:
    """One topic's result: its published backup, or the one-line error that stopped it."""

    topic: str
    backup: Backup | None
    error: KafkaBackupError | None


def export_topics(
    cluster: Cluster,
    repo: Repository,
    topics: Sequence[str],
    day: dt.date | str,
    *,
    parallel: int | None = None,
    on_done: Callable[[TopicOutcome], None] | None = None,
) -> list[TopicOutcome]:
    """backup_topic_day for each topic, `parallel` at once (default: the cluster's
    export_parallel_topics); outcomes in the order of `topics`. `on_done` is called in the
    caller's thread as each topic finishes."""
    workers = max(1, min(parallel or settings_of(cluster).export_parallel_topics, len(topics)))
    outcomes: dict[str, TopicOutcome] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="kafka-export") as pool:
        futures = {pool.submit(backup_topic_day, cluster, repo, topic, day): topic for topic in dict.fromkeys(topics)}
        try:
            for future in as_completed(futures):
                topic = futures[future]
                try:
                    outcome = TopicOutcome(topic, future.result(), None)
                except KafkaBackupError as exc:  # one topic's failure does not stop the others
                    outcome = TopicOutcome(topic, None, exc)
                outcomes[topic] = outcome
                if on_done is not None:
                    on_done(outcome)
        except BaseException:  # Ctrl-C or a bug: start no further topic (running ones finish or fail)
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return [outcomes[topic] for topic in dict.fromkeys(topics)]

"""Restore check for Kafka: prove a topic export replays, into a scratch topic made for the check.

The export of one day is replayed into `verify-<hex>-<topic>` on the cluster and read back:
`restore_topics` compares every partition's count and checksum with the manifest. The scratch
topic is deleted afterwards, also on failure; the original topic and its consumer groups are
never touched. The weekly Dagster checks and `auction-backup verify --restore` both call this.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import admin_client
from auction_backup_pipelines.kafka.restore import restore_topics
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

DELETE_TIMEOUT_S = 30


@dataclass(frozen=True)
class TopicVerification:
    """A topic export replayed into a scratch topic whose every partition matched the manifest."""

    messages_compared: int
    scratch_topic: str  # deleted again by the time this is returned
    mismatches: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def verify_topic_export(repo: Repository, backup: Backup, topic: str, cluster: Cluster) -> TopicVerification:
    """Replay `backup` (the export of `topic` for one day) into a scratch topic, compare, delete it."""
    prefix = f"verify-{secrets.token_hex(3)}-"
    try:
        report = restore_topics(repo, (backup.partition, backup.partition), [topic], cluster, topic_prefix=prefix)
    finally:
        _delete_topic(cluster, prefix + topic)
    t = report.topics[topic]
    return TopicVerification(messages_compared=t.messages, scratch_topic=t.target)


def _delete_topic(cluster: Cluster, name: str) -> None:
    """Delete the scratch topic and wait for the answer; a topic never created is fine."""
    admin = admin_client(cluster)  # kept in a variable: a client destroyed
    futures = admin.delete_topics([name], operation_timeout=DELETE_TIMEOUT_S)  # early never sends the request
    for f in futures.values():
        try:
            f.result(DELETE_TIMEOUT_S)
        except Exception:  # never created (the restore failed early)
            pass

"""Backups written straight through the repository, with no server behind them.

For tests that only need a restore to get as far as connecting to its target (the restore
target allowlist): each is complete and verifies (manifest, digests) but holds no data.
"""

from __future__ import annotations

import datetime as dt

from auction_backup_pipelines.kafka import records
from auction_backup_pipelines.redis.client import RDB_FILE, SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.redis.facts import Facts
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


def redis_snapshot(repo: Repository, day: dt.date) -> Backup:
    """An empty snapshot of `day`, as `restore redis --date` finds it."""
    with repo.begin(REDIS, SNAPSHOT, day) as w:
        with w.open_file(RDB_FILE) as f:
            f.write(b"REDIS0011\xff")
        w.metadata.update(content=Facts().to_json(), keys_total=0, digest=Facts().to_json()["digest"])
    assert w.committed is not None
    return w.committed


def kafka_topic_day(repo: Repository, topic: str, day: dt.date) -> Backup:
    """An empty export of one partition of `topic` on `day`, as `restore kafka --from --to` finds it."""
    info = records.TopicInfo(topic, 1, 1, {}, {}, {}, {})
    with repo.begin(records.SYSTEM, records.artifact_name(topic), day) as w:
        with w.open_file(records.TOPIC_FILE) as f:
            f.write(info.to_json())
        with w.open_file(records.export_file(topic)) as f:
            f.write(b"")
        w.metadata.update(format=records.FORMAT, partition_count=1)
    assert w.committed is not None
    return w.committed

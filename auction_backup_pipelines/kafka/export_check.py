"""Read-back of one topic export without a broker: the daily integrity check of a Kafka backup.

The weekly restore check replays an export into a scratch topic; this one is cheap enough to run
after every export. It decodes the records file through `Repository.open` (which proves every
byte against the manifest's sha256) and recomputes, per partition, the message count, the offset
range and the sha256 over the records, exactly as the export computed them (kafka/export.py),
then compares them with the manifest's metadata. A file that decodes but disagrees, such as a
manifest edited after the fact, fails here with the partition named.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines.kafka.records import VerificationError, encode_record, export_file, read_records, topic_of
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


@dataclass(frozen=True)
class ExportReadBack:
    """An export whose every partition matched its manifest."""

    messages: int
    partitions: int


def read_back_export(repo: Repository, backup: Backup) -> ExportReadBack:
    """Decode `backup` (one topic's export of a day) and compare it with its manifest; see the module doc."""
    topic = topic_of(backup.artifact)
    counts: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    digests: dict[str, Any] = {}

    with repo.open(backup, export_file(topic)) as f:
        for r in read_records(f):
            p = str(r.partition)
            if p not in digests:
                digests[p], counts[p], first[p] = hashlib.sha256(), 0, r.offset
            digests[p].update(encode_record(r.timestamp, r.key, r.value, r.headers))
            counts[p] += 1
            last[p] = r.offset
    expected: dict[str, dict[str, Any]] = backup.metadata.get("partitions", {})
    problems = []
    for p in sorted(set(expected) | set(counts), key=int):
        want, n = expected.get(p), counts.get(p, 0)
        if want is None:
            problems.append(f"partition {p}: {n} messages in the file, none in the manifest")
            continue
        sha = digests[p].hexdigest() if p in digests else hashlib.sha256().hexdigest()
        if n != want["messages"] or (n and (first[p], last[p]) != (want["first_offset"], want["last_offset"])):
            problems.append(f"partition {p}: {n} messages in the file, the manifest says {want['messages']}")
        elif sha != want["sha256"]:
            problems.append(f"partition {p}: records sha256 {sha[:16]}… differs from the manifest's {want['sha256'][:16]}…")
    if problems:
        raise VerificationError(f"export {backup.prefix} does not match its manifest: " + "; ".join(problems))
    return ExportReadBack(messages=sum(counts.values()), partitions=len(expected))

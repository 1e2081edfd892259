"""What a Kafka restore reports: per topic, what was written, verified and translated.

`restore_topics` returns a `KafkaRestoreReport`; `as_dict()` is the JSON that
`auction-backup restore kafka` prints and the Dagster restore job records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartitionRestore:
    """The restored range of one partition (offsets in the target topic)."""

    first_offset: int | None  # None: nothing restored in this partition
    last_offset: int | None
    messages: int


@dataclass(frozen=True)
class TranslatedOffset:
    """A consumer group's committed offset in the backup and its equivalent in the restored topic."""

    committed: int
    restored: int
    note: str  # why `restored` is not the exact counterpart, or ""


@dataclass(frozen=True)
class GroupRestore:
    """One consumer group's offsets on a restored topic; `applied` when they were committed."""

    target_group: str
    partitions: dict[str, TranslatedOffset]  # by partition number, as a string (JSON keys)
    applied: bool


@dataclass(frozen=True)
class TopicRestore:
    """One topic replayed into `target` and read back: every partition matched the backups."""

    target: str
    created: bool
    configs: dict[str, str] | str  # the configs it was created with, or "kept (topic existed)"
    messages: int  # verified
    partitions: dict[str, PartitionRestore]
    coverage_gaps: list[str]
    consumer_groups: dict[str, GroupRestore]
    notes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KafkaRestoreReport:
    """Days D1..D2 of topics restored into `target_bootstrap`, each verified."""

    days: tuple[str, str]  # first and last day, ISO
    target_bootstrap: str
    topics: dict[str, TopicRestore]  # by source topic
    duration_s: float

    @property
    def messages(self) -> int:
        """Messages written and verified, all topics together."""
        return sum(t.messages for t in self.topics.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "target_bootstrap": self.target_bootstrap,
            "topics": {name: t.as_dict() for name, t in self.topics.items()},
            "duration_s": self.duration_s,
        }

"""Kafka retention and a day's export: may messages of day D already have been deleted?

The rule the export applies before writing anything (kafka/export.py's module docstring says
why): a partition whose log start moved past D's first message fails the export, unless only
time retention deletes on the topic and it cannot have reached D yet.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from auction_backup_pipelines.policy import capture_window as capture

# Broker and backup clocks differ a little: time retention must clear D by this much to count.
RETENTION_CLOCK_MARGIN_MS = 3_600_000


def epoch_ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


@dataclass(frozen=True)
class RetentionPolicy:
    retention_ms: int  # -1: no time limit
    retention_bytes: int  # -1: no size limit
    deletes: bool  # cleanup.policy includes "delete"

    @classmethod
    def from_configs(cls, effective: dict[str, str]) -> RetentionPolicy:
        return cls(
            retention_ms=int(effective.get("retention.ms", "-1")),
            retention_bytes=int(effective.get("retention.bytes", "-1")),
            deletes="delete" in effective.get("cleanup.policy", "delete"),
        )


def time_retention_cannot_reach(day: dt.date, policy: RetentionPolicy, now: dt.datetime) -> bool:
    """True when only time retention deletes on this topic and it cannot have reached `day`.

    Time retention deletes a segment only once its newest timestamp is older than
    now - retention.ms, so if D starts after that instant none of D's messages can be gone.
    Size retention, DeleteRecords and compaction give no such bound.
    """
    if not policy.deletes or policy.retention_bytes >= 0 or policy.retention_ms < 0:
        return False
    return epoch_ms(capture.day_start(day)) >= epoch_ms(now) - policy.retention_ms + RETENTION_CLOCK_MARGIN_MS


def data_gone(day: dt.date, log_start: int, high: int, first_at_day: int, policy: RetentionPolicy, now: dt.datetime) -> bool:
    """May messages of `day` have been deleted from this partition? (`first_at_day`: raw lookup.)"""
    if log_start == 0:
        return False  # nothing was ever deleted
    if high > log_start and first_at_day != log_start:
        return False  # the first message Kafka still holds is from before D
    return not time_retention_cannot_reach(day, policy, now)

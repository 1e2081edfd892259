"""When a backup run may claim a partition day.

A partition key is a UTC day D, and D's backup stands for the state at the end of D. The
schedules fire during D+1 (PostgreSQL 02:00, Redis 03:00, Kafka 04:00) for D, so a capture
taken any time on D+1 is "on time" for D: it is the first moment D is complete. A run for D
at any later time is a backfill: the live state no longer is D's state, so an engine must
either reconstruct D honestly (Kafka by timestamp window, PostgreSQL by PITR) or refuse. A run
for a day that has not ended yet is refused too: D's state is not known before D ends.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from auction_backup_pipelines.errors import RefusedError

UTC = dt.UTC


class CaptureWindowError(RefusedError):
    """A partition cannot be captured now; the message says why and what to do instead."""


@dataclass(frozen=True)
class CaptureTiming:
    day: dt.date
    now: dt.datetime
    on_time: bool

    @property
    def window_start(self) -> dt.datetime:
        return day_end(self.day)

    @property
    def window_end(self) -> dt.datetime:
        return day_end(self.day) + dt.timedelta(days=1)


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=UTC)


def day_end(day: dt.date) -> dt.datetime:
    return day_start(day) + dt.timedelta(days=1)


def default_partition(now: dt.datetime | None = None) -> dt.date:
    """The partition an on-time backup taken `now` belongs to: yesterday (UTC)."""
    now = now or dt.datetime.now(UTC)
    return now.astimezone(UTC).date() - dt.timedelta(days=1)


def classify(day: dt.date, now: dt.datetime | None = None) -> CaptureTiming:
    """Is a capture taken `now` on time for partition `day`? Raises for days not yet over."""
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
    if now < day_end(day):
        raise CaptureWindowError(
            f"partition {day} has not ended yet (it ends {day_end(day):%Y-%m-%d %H:%M} UTC); "
            f"a backup taken now belongs to partition {default_partition(now)}"
        )
    return CaptureTiming(day=day, now=now, on_time=now < day_end(day) + dt.timedelta(days=1))

"""When a day's backup is due, so "stale" means one thing in the UI, in alerts and in the docs.

The daily backup of partition day D runs at D+1 HH:00 UTC (its schedule's hour) and is overdue
once D+1 HH:00 + a grace period has passed without it: that is the recovery point objective an
operator can read on each asset. Two cases are not due, so a new install shows no false alarm:

* a day before the first partition day (BACKUP_PARTITIONS_START);
* a day whose scheduled backup time came before freshness was first watched on this Dagster
  instance (`watching_since`): nothing was running then to take it.

Pure functions of their arguments (no clock, no Dagster), so tests can place "now" anywhere.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Due:
    """The newest partition day whose deadline has passed, or None with the reason nothing is due."""

    partition: dt.date | None
    deadline: dt.datetime
    """The partition's deadline; when nothing is due, the deadline of the next day to be due."""
    reason: str = ""


def scheduled_at(day: dt.date, hour: int) -> dt.datetime:
    """When the schedule backs up `day`: the next day at `hour`:00 UTC."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(hour), dt.UTC)


def deadline_of(day: dt.date, hour: int, grace: dt.timedelta) -> dt.datetime:
    return scheduled_at(day, hour) + grace


def due_partition(now: dt.datetime, hour: int, grace: dt.timedelta, first_day: dt.date, watching_since: dt.datetime) -> Due:
    """The partition day that must be backed up by `now` (see the module docstring)."""
    day = (now - dt.timedelta(hours=hour) - grace).astimezone(dt.UTC).date() - dt.timedelta(days=1)
    if day < first_day:
        return Due(
            None,
            deadline_of(first_day, hour, grace),
            f"no partition due yet: the first day, {first_day}, is due by {iso(deadline_of(first_day, hour, grace))}",
        )
    if scheduled_at(day, hour) < watching_since:
        following = day + dt.timedelta(days=1)
        return Due(
            None,
            deadline_of(following, hour, grace),
            f"no partition due yet on this install: {day} was scheduled at {iso(scheduled_at(day, hour))}, before "
            f"backups were watched here ({iso(watching_since)}); {following} is due by {iso(deadline_of(following, hour, grace))}",
        )
    return Due(day, deadline_of(day, hour, grace))


def iso(moment: dt.datetime) -> str:
    """ISO-8601 in UTC to the second, e.g. 2026-12-02T04:00:00Z."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

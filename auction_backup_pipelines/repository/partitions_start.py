"""The first partition day of an install when BACKUP_PARTITIONS_START is unset: chosen once, then kept.

A fixed date in the code is wrong for every install but one: a new install would show a month
of missing days, a year later a year of them. "N days before today" is right on day one and
then moves every day, and a moving start hides history (days that drop off the start vanish
from the UI with their materializations). So the day is chosen the first time it is needed, as
`LEAD_DAYS` before that day, or the day of the oldest backup already in the repository if that
is earlier, and recorded in the repository (`layout.PARTITIONS_START_RECORD`). From then on it
is read, never recomputed: the repository is what outlives a Dagster instance or a container.

The record is plain JSON written through the store itself, not the encryption layer: it holds
nothing secret, and a process without keys (the Dagster loader may run without them) must
still be able to read it. Plain Python (no Dagster).
"""

from __future__ import annotations

import datetime as dt
import json

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.storage import Backend

LEAD_DAYS = 3
"""A new install shows this many days before its first day: a few to back up, not a month of red."""


def earliest_backup_day(storage: Backend) -> dt.date | None:
    """The partition day of the oldest backup whose manifest is in `storage`, or None."""
    days = []
    for obj in storage.list(layout.backups_prefix()):
        if layout.is_manifest_key(obj.key):
            parsed = layout.parse_file_key(obj.key)
            if parsed is not None:
                days.append(parsed[0].day)
    return min(days, default=None)


def first_partition_day(storage: Backend, today: dt.date) -> dt.date:
    """The recorded first partition day; recorded now (see the module docstring) when there is none."""
    key = layout.PARTITIONS_START_RECORD
    try:
        with storage.reader(key) as f:
            raw = f.read()
    except FileNotFoundError:
        chosen = today - dt.timedelta(days=LEAD_DAYS)
        oldest = earliest_backup_day(storage)
        if oldest is not None and oldest < chosen:
            chosen = oldest
        doc = {"first_partition_day": chosen.isoformat(), "chosen_on": today.isoformat()}
        with storage.writer(key) as f:
            f.write(json.dumps(doc, indent=2).encode() + b"\n")
        return chosen
    try:
        return dt.date.fromisoformat(json.loads(raw)["first_partition_day"])
    except (ValueError, KeyError, TypeError):
        raise ConfigurationError(
            f"{key} in {storage.describe()} is unreadable: set BACKUP_PARTITIONS_START (YYYY-MM-DD) or remove the file"
        ) from None

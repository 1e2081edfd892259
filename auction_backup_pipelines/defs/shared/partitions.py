"""One daily (UTC) partitioning shared by every backup asset.

end_offset=0: the newest partition is yesterday, the last complete day (see
policy/capture_window.py for what a partition day means and when a run may claim it).
Cached per start date, so every asset of a load shares one definition.
"""

from functools import lru_cache

from dagster import DailyPartitionsDefinition


@lru_cache
def daily_partitions(start_date: str) -> DailyPartitionsDefinition:
    """The daily partitions from `start_date` (BACKUP_PARTITIONS_START) to yesterday, UTC."""
    return DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=0)

"""One daily (UTC) partitioning shared by every backup asset.

end_offset=0: the newest partition is yesterday, the last complete day (see core/capture.py
for what a partition day means and when a run may claim it).
"""

import os

from dagster import DailyPartitionsDefinition

PARTITIONS_START = os.environ.get("BACKUP_PARTITIONS_START", "2026-11-01")

daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC", end_offset=0)

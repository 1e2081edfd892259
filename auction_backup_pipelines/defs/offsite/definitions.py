"""Loader of the offsite copies, only when an offsite store is configured (OFFSITE_S3_BUCKET): one
`offsite/<system>/<artifact>` asset per backup asset and `offsite/postgres/wal_archive`, each with
its integrity check, and the automation sensor that makes them follow their sources."""

import dagster as dg

from ..shared.keys import OFFSITE_WAL_ARCHIVE_KEY, backup_keys, offsite_key
from ..shared.loading import current_settings
from ..shared.partitions import daily_partitions
from .assets import offsite_copy_asset
from .automation import build_offsite_automation_sensor
from .checks import build_offsite_wal_check, offsite_integrity_check
from .wal import build_offsite_wal_asset


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    if not s.offsite.configured:
        return dg.Definitions()
    partitions = daily_partitions(s.partitions_start)
    sources = backup_keys(s.kafka.topics)
    return dg.Definitions(
        assets=[*(offsite_copy_asset(k, partitions) for k in sources), build_offsite_wal_asset()],
        asset_checks=[*(offsite_integrity_check(k) for k in sources), build_offsite_wal_check()],
        sensors=[build_offsite_automation_sensor([*(offsite_key(k) for k in sources), OFFSITE_WAL_ARCHIVE_KEY])],
    )

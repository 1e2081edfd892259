"""Loader of the offsite copies: one `offsite/<system>/<artifact>` asset per backup asset, only
when an offsite store is configured (OFFSITE_S3_BUCKET)."""

import dagster as dg

from ..shared.keys import backup_keys
from ..shared.loading import current_settings
from ..shared.partitions import daily_partitions
from .assets import offsite_copy_asset


@dg.definitions
def defs() -> dg.Definitions:
    s = current_settings()
    if not s.offsite.configured:
        return dg.Definitions()
    partitions = daily_partitions(s.partitions_start)
    return dg.Definitions(assets=[offsite_copy_asset(k, partitions) for k in backup_keys(s.kafka.topics)])

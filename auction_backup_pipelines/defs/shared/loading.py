"""The settings the Dagster layer is built from, read once per process, when the loader runs.

Never at import: a definitions module imports cleanly with nothing set, and a bad variable fails
the load with the settings module's one-line message instead of an import-time traceback.
"""

import dataclasses
import datetime as dt
from functools import lru_cache

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository.partitions_start import first_partition_day
from auction_backup_pipelines.repository.storage import LocalBackend
from auction_backup_pipelines.settings import Settings, load_settings


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """The settings, with the first partition day resolved: BACKUP_PARTITIONS_START, or the day
    recorded once in BACKUP_ROOT (repository/partitions_start.py), so the partitions never move."""
    settings = load_settings()
    if settings.partitions_start:
        return settings
    try:
        day = first_partition_day(LocalBackend(settings.repository.root), dt.datetime.now(dt.UTC).date())
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read or record the first partition day in {settings.repository.root} ({exc.strerror or exc}): "
            "set BACKUP_PARTITIONS_START (YYYY-MM-DD)"
        ) from None
    return dataclasses.replace(settings, partitions_start=day.isoformat())

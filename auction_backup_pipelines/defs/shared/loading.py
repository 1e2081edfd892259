"""The settings the Dagster layer is built from, read once per process, when the loader runs.

Never at import: a definitions module imports cleanly with nothing set, and a bad variable fails
the load with the settings module's one-line message instead of an import-time traceback.
"""

from functools import lru_cache

from auction_backup_pipelines.settings import Settings, load_settings


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    return load_settings()

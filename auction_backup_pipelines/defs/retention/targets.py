"""The repositories the retention sensor and cleanup job manage: the local one and, when the code
location has one configured (OFFSITE_S3_BUCKET), the offsite copy (policy/offsite_retention.py).

The offsite repository is opened from the code location's settings rather than a resource: the
cleanup job must load whether or not an offsite store exists, and the bound offsite resource
(PinnedOffsiteRepositoryResource) refuses any value but these settings anyway. The sensor is
built with the settings it plans for (definitions.py); the job reads them only when a run lists
offsite backups to delete.
"""

import datetime as dt

from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.policy import offsite_retention
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import OffsiteSettings


def offsite_target(
    local: Repository, settings: OffsiteSettings | None, pitr_window: dt.timedelta
) -> offsite_retention.Target | None:
    """The offsite repository under its retention policy and the PITR window (PITR_WINDOW_DAYS),
    or None when none is configured."""
    if settings is None or not settings.configured:
        return None
    return offsite_retention.offsite_target(offsite.repository_from_settings(settings), local, settings, pitr_window)

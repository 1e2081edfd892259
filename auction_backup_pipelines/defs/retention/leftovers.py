"""Crash leftovers in the retention domain: what the sensor asks to remove and how the job reports it.

The decision is policy/leftovers.py's (the same as `auction-backup prune`): a temp file, a backup
folder without a manifest or an unfinished S3 upload goes once untouched for LEFTOVER_SAFETY_AGE_S
and no live writer holds its partition's lock. The sensor names the ids to remove in the cleanup
run's config; the job decides again, under each partition lock, right before removing.
"""

import datetime as dt
from typing import Any

from dagster import Failure, MetadataValue, OpExecutionContext

from auction_backup_pipelines.policy import leftovers, offsite_retention
from auction_backup_pipelines.repository.repository import Repository

from ..shared.loading import current_settings
from .targets import offsite_target


def plan_ids(repo: Repository, safety_age: dt.timedelta) -> list[str]:
    """The leftovers of `repo` that the plan removes now (the sensor's request)."""
    return leftovers.removable_ids(leftovers.plan(repo.storage, safety_age=safety_age))


def _remove(
    context: OpExecutionContext, repo: Repository, ids: list[str], where: str, safety_age: dt.timedelta, dry_run: bool
) -> list[leftovers.Outcome]:
    found = leftovers.remove(repo.storage, ids, safety_age=safety_age, dry_run=dry_run)
    for o in found:
        level = {leftovers.KEPT: context.log.warning, leftovers.ERROR: context.log.error}.get(o.action, context.log.info)
        level(f"leftover {o.action}: {where} {o.id} ({o.reason})")
    return found


def remove_requested(context: OpExecutionContext, repo: Repository, config: Any, metadata: dict[str, Any]) -> int:
    """Remove the leftovers a cleanup run's config names (`leftovers`, `offsite_leftovers`), adding
    their outcomes to the run's `metadata`; returns how many failed."""
    if not config.leftovers and not config.offsite_leftovers:
        return 0
    safety_age = current_settings().retention.leftover_safety_age
    rows = [
        (offsite_retention.LOCAL, o)
        for o in _remove(context, repo, config.leftovers, offsite_retention.LOCAL, safety_age, config.dry_run)
    ]
    if config.offsite_leftovers:
        target = offsite_target(repo, current_settings().offsite, current_settings().retention.pitr_window)
        if target is None:
            raise Failure(description="offsite leftovers were listed for removal but no offsite repository is configured")
        found = _remove(context, target.repo, config.offsite_leftovers, offsite_retention.OFFSITE, safety_age, config.dry_run)
        rows += [(offsite_retention.OFFSITE, o) for o in found]
    metadata["leftovers_removed_count"] = MetadataValue.int(sum(o.action == leftovers.REMOVED for _, o in rows))
    table = ["| repository | action | leftover | reason |", "|---|---|---|---|"]
    table += [f"| {where} | {o.action} | {o.id} | {o.reason} |" for where, o in rows[:500]]
    metadata["leftover_outcomes"] = MetadataValue.md("\n".join(table))
    return sum(o.action == leftovers.ERROR for _, o in rows)

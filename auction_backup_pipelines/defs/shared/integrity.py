"""The shape every daily integrity check shares: read back the backup(s) its run wrote.

A check verifies what its own run materialized, not the newest backup: a ten-day backfill
checks each of its ten days, and a run for 11-28 never reads the 12-01 backup. Which backups:

1. those the run materialized for the check's asset (their backup_id is in the
   materialization's metadata), one or many (a run over a range of partitions);
2. in a re-execution that did not materialize again, those of the run it re-executes;
3. in a run that materialized nothing but names partitions (a check-only run of a partition
   or a range), the newest backup of each of those days;
4. in a run with no partition at all (the check launched on its own), the newest backup.

Before any of that, every backup of the artifact is audited against the catalog
(repository/catalog.py): a manifest missing, changed, unreadable or failing its own checksum
fails the check (ERROR), each named in the log. No backup to verify is a warning, not a failure; an engine's `BackupError` while reading one
back is an ERROR check naming the backup; otherwise the inspection's figures become the
check's metadata, with the partition(s) and backup_id(s) verified and how they were chosen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    DagsterEventType,
    MetadataValue,
)
from dagster._core.errors import DagsterInvalidPropertyError
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, PARTITION_NAME_TAG

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.repository import catalog, layout
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

MATERIALIZED = "materialized by this run"
REEXECUTED = "materialized by the run this one re-executes"
RUN_PARTITIONS = "newest backup of each partition of this run"
NEWEST = "newest backup (the run names no partition)"


def materialized_backups(context: AssetCheckExecutionContext, asset_key: AssetKey, run_id: str) -> list[tuple[str, str]]:
    """(partition, backup_id) of every materialization of `asset_key` in run `run_id`, in order."""
    found = []
    records = context.instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        mat = record.asset_materialization
        if mat is None or mat.asset_key != asset_key or mat.partition is None:
            continue
        backup_id = mat.metadata.get("backup_id")
        if backup_id is not None:
            found.append((mat.partition, str(backup_id.value)))
    return found


def run_partitions(tags: dict[str, str]) -> list[str]:
    """The partition days a run's tags name: one, a range (inclusive), or none."""
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if not (start and end):
        return []
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def backups_to_check(
    context: AssetCheckExecutionContext, repo: Repository, system: str, artifact: str, asset_key: AssetKey | None = None
) -> tuple[list[Backup], list[str], str]:
    """The backups this run's check verifies, problems finding them (one line each), and how chosen.
    `asset_key`: the asset whose materializations name them (default: the backup asset itself;
    an offsite copy's check passes its own asset, whose materializations carry the backup_id too)."""
    asset_key = asset_key or AssetKey(list(layout.asset_path(system, artifact)))
    try:
        run = context.run
    except DagsterInvalidPropertyError:  # invoked directly (a test), outside any run
        latest = repo.latest(system, artifact)
        return ([latest] if latest else []), [], NEWEST
    written, how = materialized_backups(context, asset_key, run.run_id), MATERIALIZED
    if not written and run.parent_run_id:
        written, how = materialized_backups(context, asset_key, run.parent_run_id), REEXECUTED
    if written:
        backups, missing = [], []
        for partition, backup_id in written:
            same = [b for b in repo.list(system, artifact, partition) if b.backup_id == backup_id]
            if same:
                backups.append(same[0])
            else:
                missing.append(
                    f"{system}/{artifact} backup {partition}/{backup_id}, written by the run, is no longer in "
                    f"{repo.describe()} (replaced by a later backup of that day, or deleted)"
                )
        return backups, missing, how
    days = run_partitions(dict(run.tags))
    if days:
        backups = []
        for day in days:
            of_day = repo.list(system, artifact, day)
            if of_day:
                backups.append(of_day[-1])
        return backups, [], RUN_PARTITIONS
    latest = repo.latest(system, artifact)
    return ([latest] if latest else []), [], NEWEST


def plain(value: Any) -> Any:
    """A metadata value as JSON can hold it."""
    return value.value if isinstance(value, MetadataValue) else value


def run_backups_integrity(
    context: AssetCheckExecutionContext,
    repo: Repository,
    system: str,
    artifact: str,
    what: str,
    inspect: Callable[[Backup], dict[str, Any]],
    extra: Callable[[Backup], dict[str, Any]] = lambda backup: {},
    asset_key: AssetKey | None = None,
) -> AssetCheckResult:
    """Run `inspect` on each backup of `system/artifact` the run wrote (`what` names them in messages)."""
    # First the whole artifact against the catalog (repository/catalog.py): a manifest of any day
    # that vanished, changed or cannot be read fails the check, whichever backups the run wrote.
    try:
        findings = [f"{f.key}: {f.problem}: {f.detail}" for f in catalog.audit(repo, system, artifact).errors]
    except BackupError as exc:  # the listing itself failed
        findings = [str(exc)]
    if findings:
        for line in findings:
            context.log.error(line)
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.ERROR,
            description=f"{len(findings)} {what} backup(s) fail the catalog audit: " + "; ".join(findings)[:2000],
            metadata={"catalog_findings": MetadataValue.json(findings)},
        )
    backups, problems, how = backups_to_check(context, repo, system, artifact, asset_key)
    if not backups and not problems:
        days = run_partitions(dict(context.run.tags)) if how == RUN_PARTITIONS else []
        where = f" of {', '.join(days)}" if days else ""
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.WARN, description=f"no {what}{where} in {repo.describe()} yet"
        )
    results: list[dict[str, Any]] = []
    for backup in backups:
        meta = {"partition": backup.partition, "backup_id": backup.backup_id, **extra(backup)}
        try:
            # the manifest first: still there, unchanged, and as the catalog recorded it
            meta["manifest_sha256"] = catalog.check_manifest(repo, backup)
            meta.update(inspect(backup))
        except BackupError as exc:
            problems.append(f"{backup.prefix}: {exc}")
        results.append(meta)
    for problem in problems:
        context.log.error(problem)
    summary: dict[str, Any] = {
        "partition": ", ".join(r["partition"] for r in results),
        "backup_id": ", ".join(r["backup_id"] for r in results),
        "verified": how,
    }
    if len(results) == 1:
        summary.update({k: v for k, v in results[0].items() if k not in summary})
    elif results:
        summary["backups"] = MetadataValue.json([{k: plain(v) for k, v in r.items()} for r in results])
    if problems:
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.ERROR, description="; ".join(problems)[:2000], metadata=summary
        )
    return AssetCheckResult(passed=True, metadata=summary)

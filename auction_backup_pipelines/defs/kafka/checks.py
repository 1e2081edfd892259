"""Integrity check of each topic's export, run by the daily Kafka job right after the exports, on
the export(s) that run wrote (shared/integrity.py): the records decoded and compared with the
manifest per partition (kafka/export_check.py), no broker needed."""

from typing import Any

from dagster import AssetCheckExecutionContext, AssetCheckKey, AssetCheckResult, AssetChecksDefinition, MetadataValue, asset_check

from auction_backup_pipelines.kafka.export_check import read_back_export
from auction_backup_pipelines.kafka.records import SYSTEM, artifact_name
from auction_backup_pipelines.repository.manifest import Backup

from ..shared.integrity import run_backups_integrity
from ..shared.keys import topic_export_key
from ..shared.resources import BackupRepositoryResource

CHECK_NAME = "export_integrity"


def export_integrity_key(topic: str) -> AssetCheckKey:
    return AssetCheckKey(topic_export_key(topic), CHECK_NAME)


def build_export_integrity_check(topic: str) -> AssetChecksDefinition:
    @asset_check(
        asset=topic_export_key(topic),
        name=CHECK_NAME,
        description=f"Each export of `{topic}` the run wrote: its files match their sha256, and every partition's "
        "message count, offset range and records sha256 match the manifest.",
    )
    def check(context: AssetCheckExecutionContext, backup_repo: BackupRepositoryResource) -> AssetCheckResult:
        repo = backup_repo.repository()

        def inspect(backup: Backup) -> dict[str, Any]:
            found = read_back_export(repo, backup)
            return {"messages": MetadataValue.int(found.messages), "partitions": MetadataValue.int(found.partitions)}

        return run_backups_integrity(context, repo, SYSTEM, artifact_name(topic), f"{topic} export", inspect)

    return check

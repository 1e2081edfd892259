"""Turn a manifest into the metadata an engineer reads on an asset's page."""

import os
from typing import Any

from dagster import MetadataValue

from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository


def backup_metadata(repo: Repository, backup: Backup, **extra: Any) -> dict[str, Any]:
    """Common fields for every backup: where it is, how big, its checksums (files, and the manifest's
    as the catalog recorded it), when it was captured."""
    entry = catalog.read_entry(repo, backup.ref)
    meta: dict[str, Any] = {
        "manifest": MetadataValue.path(os.path.join(repo.describe(), backup.manifest_key)),
        "backup_id": backup.backup_id,
        "size_bytes": MetadataValue.int(backup.size),
        "compressed_bytes": MetadataValue.int(backup.stored_size),
        "sha256": ", ".join(f"{f.name}={f.sha256[:16]}…" for f in backup.files),
        "started_at": backup.started_at,
        "finished_at": backup.finished_at,
        "encryption": repo.encryption.describe() if repo.encryption else "none",
        "manifest_sha256": entry.manifest_sha256 if entry else "",
    }
    captured = backup.metadata.get("captured_at")
    if captured:
        meta["captured_at"] = captured
    meta.update(extra)
    return meta


def table_markdown(tables: dict[str, dict[str, Any]]) -> MetadataValue:
    lines = ["| table | rows | checksum |", "|---|---:|---|"]
    for name, t in sorted(tables.items()):
        lines.append(f"| {name} | {t['rows']} | {(t.get('checksum') or '-')[:20]} |")
    return MetadataValue.md("\n".join(lines))

"""Turn a manifest into the metadata an engineer reads on an asset's page."""

from typing import Any

from dagster import MetadataValue

from auction_backup_pipelines.ops.metrics import write_backup_metrics
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

from .loading import current_settings
from .presentation import human_bytes, iso_utc, object_url


def backup_metadata(repo: Repository, backup: Backup, **extra: Any) -> dict[str, Any]:
    """Common fields for every backup: where it is, how big, its checksums (files, and the manifest's
    as the catalog recorded it), when it was captured. Every backup asset ends here, so this is
    also where its figures go to METRICS_TEXTFILE_DIR (a failure there shows in the metadata)."""
    entry = catalog.read_entry(repo, backup.ref)
    # A file the tool compressed itself (pg_basebackup's tar) is stored as is: its manifest size is
    # the compressed one, and the engine records the real size beside it.
    size = int(backup.metadata.get("uncompressed_bytes") or backup.size)
    meta: dict[str, Any] = {
        "manifest": MetadataValue.url(object_url(repo, backup.manifest_key)),
        "backup_id": backup.backup_id,
        "size": human_bytes(size),
        "size_bytes": MetadataValue.int(size),
        "compressed_size": human_bytes(backup.stored_size),
        "compressed_bytes": MetadataValue.int(backup.stored_size),
        "sha256": ", ".join(f"{f.name}={f.sha256[:16]}…" for f in backup.files),
        "started_at": iso_utc(backup.started_at),
        "finished_at": iso_utc(backup.finished_at),
        "encryption": repo.encryption.describe() if repo.encryption else "none",
        "manifest_sha256": entry.manifest_sha256 if entry else "",
    }
    captured = backup.metadata.get("captured_at")
    if captured:
        meta["captured_at"] = iso_utc(captured)
    problem = write_backup_metrics(current_settings().metrics.textfile_dir, backup)
    if problem:
        meta["metrics_textfile"] = problem
    meta.update(extra)
    return meta


def table_markdown(tables: dict[str, dict[str, Any]]) -> MetadataValue:
    lines = ["| table | rows | checksum |", "|---|---:|---|"]
    for name, t in sorted(tables.items()):
        lines.append(f"| {name} | {t['rows']} | {(t.get('checksum') or '-')[:20]} |")
    return MetadataValue.md("\n".join(lines))

"""What a complete backup is: its manifest, the one record every reader of the repository trusts.

Why a module of its own: restores, verification, the offsite copy, retention and the Dagster
metadata all read backups through `Backup`, while only the repository writes them. A backup
exists once its manifest does (see repository.py); the manifest names each file with its
compression and two digests, of the original and of the stored bytes (see streams.py), plus
the system's own metadata (source position, counts, capture mode). Its JSON form is the
on-disk format: a field added here must keep older manifests readable.

Each manifest carries its own checksum, `self_sha256`: the sha256 of its canonical JSON (sorted
keys, no spaces) without that field. A manifest edited by hand or by a faulty tool (one digit of a
row count, a partition number) no longer matches it and is refused wherever it is read, before a
restore writes anything. It is a checksum, not a signature: in an unencrypted repository whoever
can write the bucket can recompute it, which the catalog (catalog.py) and encryption answer.
Manifests written before it existed have none and are read as before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.storage import IntegrityError, RepositoryError

__all__ = ["MANIFEST_FORMAT", "SELF_CHECKSUM", "Backup", "FileEntry", "ManifestChecksumError", "NotFoundError", "content_sha256"]

MANIFEST_FORMAT = 1
SELF_CHECKSUM = "self_sha256"


class ManifestChecksumError(IntegrityError):
    """A manifest's content does not match its own checksum: it was changed after it was written."""


def content_sha256(doc: dict[str, Any]) -> str:
    """The sha256 of a manifest document's canonical JSON, without its own checksum field."""
    body = {k: v for k, v in doc.items() if k != SELF_CHECKSUM}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class NotFoundError(RepositoryError):
    """No complete backup matches the request."""


@dataclass(frozen=True)
class FileEntry:
    name: str  # logical name, e.g. "dump.pgc"
    key: str  # stored name inside the backup folder, e.g. "dump.pgc.zst"
    compression: str
    size: int  # bytes before compression
    sha256: str  # of the bytes before compression
    stored_size: int
    stored_sha256: str


@dataclass(frozen=True)
class Backup:
    """A complete backup: what its manifest says."""

    system: str
    artifact: str
    partition: str  # YYYY-MM-DD
    backup_id: str
    started_at: str
    finished_at: str
    files: tuple[FileEntry, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def ref(self) -> BackupRef:
        return BackupRef(self.system, self.artifact, self.day, self.backup_id)

    @property
    def prefix(self) -> str:
        """The backup's key, `<system>/<artifact>/<day>/<backup_id>` (see layout.BackupRef)."""
        return self.ref.key

    @property
    def manifest_key(self) -> str:
        return self.ref.manifest_key

    def object_key(self, entry: FileEntry) -> str:
        """The key under which one of this backup's files is stored."""
        return self.ref.file_key(entry.key)

    @property
    def day(self) -> dt.date:
        return dt.date.fromisoformat(self.partition)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def stored_size(self) -> int:
        return sum(f.stored_size for f in self.files)

    def file(self, name: str) -> FileEntry:
        for f in self.files:
            if f.name == name:
                return f
        raise NotFoundError(f"backup {self.prefix} has no file {name!r} (has: {[f.name for f in self.files]})")

    def to_json(self) -> bytes:
        """The manifest's bytes, with its own checksum (`self_sha256`)."""
        doc = asdict(self)
        doc["files"] = [asdict(f) for f in self.files]
        # Through JSON once, so the checksum covers exactly what a reader will load (tuples as
        # lists, values the encoder turns into strings).
        doc = json.loads(json.dumps(doc, default=str))
        doc[SELF_CHECKSUM] = content_sha256(doc)
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str = "manifest") -> Backup:
        """Parse a manifest; ManifestChecksumError when its content does not match its own checksum."""
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        recorded = doc.pop(SELF_CHECKSUM, None)
        if recorded is not None and recorded != content_sha256(doc):
            raise ManifestChecksumError(
                f"{where} does not match its own checksum ({SELF_CHECKSUM}): it was changed after it was written; "
                "refusing to use it"
            )
        doc["files"] = tuple(FileEntry(**f) for f in doc["files"])
        return cls(**doc)

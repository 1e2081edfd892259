"""What a complete backup is: its manifest, the one record every reader of the repository trusts.

Why a module of its own: restores, verification, the offsite copy, retention and the Dagster
metadata all read backups through `Backup`, while only the repository writes them. A backup
exists once its manifest does (see repository.py); the manifest names each file with its
compression and two digests, of the original and of the stored bytes (see streams.py), plus
the system's own metadata (source position, counts, capture mode). Its JSON form is the
on-disk format: a field added here must keep older manifests readable.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.storage import RepositoryError

__all__ = ["MANIFEST_FORMAT", "Backup", "FileEntry", "NotFoundError"]

MANIFEST_FORMAT = 1


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
        doc = asdict(self)
        doc["files"] = [asdict(f) for f in self.files]
        return json.dumps(doc, indent=2, sort_keys=True, default=str).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Backup:
        doc = json.loads(raw)
        doc["files"] = tuple(FileEntry(**f) for f in doc["files"])
        return cls(**doc)

"""The backup repository: every artifact of every system, with a manifest that makes it whole.

Layout (keys in a storage backend, built by layout.py)::

    <system>/<artifact>/<YYYY-MM-DD>/<backup_id>/<file>[.zst|.gz]
    <system>/<artifact>/<YYYY-MM-DD>/<backup_id>/manifest.json

A backup exists only once its manifest does. Files are streamed through compression and two
sha256 digests (of the stored bytes, to detect corruption before anything is decompressed,
and of the original bytes, to prove a restore read back exactly what was captured), each
published durably; the manifest is written last. A run that dies at any point leaves files
without a manifest: never listed, never restored, removed by `gc_incomplete`.

Each run writes a fresh backup_id, so re-running a day never rewrites the files of the backup
that is already there; the older backup of the same day is removed only after the new manifest
is durable.

Encryption at rest (optional, see crypto.py) is a layer under all of this: with an
`Encryption`, `self.backend` is the storage backend wrapped so that every object body it
writes (files, manifests, and whatever else goes through `repo.backend`: WAL segments and
their records, pins) is sealed, and every read is authenticated. The manifest's sizes and
digests describe the compressed bytes before encryption; key names stay readable, so
listing needs no key. `self.storage` is always the bare backend.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import hashlib
import io
import json
import queue
import threading
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Iterator

import zstandard

from auction_backup_pipelines.repository.encryption import MAGIC as _ENCRYPTED_MAGIC
from auction_backup_pipelines.repository.encryption import EncryptedBackend, Encryption, peek_key_id
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import MANIFEST, BackupRef, PartitionRef
from auction_backup_pipelines.repository.storage import Backend, IntegrityError, LocalBackend, LockedError, RepositoryError, StorageError

__all__ = [
    "Backup",
    "BackupWriter",
    "FileEntry",
    "IntegrityError",
    "LockedError",
    "NotFoundError",
    "Repository",
    "RepositoryError",
]

MANIFEST_FORMAT = 1
COMPRESSIONS = {"zstd": ".zst", "gzip": ".gz", "none": ""}
CHUNK = 1 << 20


class NotFoundError(RepositoryError):
    """No complete backup matches the request."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_day(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RepositoryError(f"not a day: {value!r} (expected YYYY-MM-DD)") from None


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
    def from_json(cls, raw: bytes) -> "Backup":
        doc = json.loads(raw)
        doc["files"] = tuple(FileEntry(**f) for f in doc["files"])
        return cls(**doc)


class _HashingSink(io.RawIOBase):
    """Counts and hashes the bytes that reach the backend (the stored, compressed bytes)."""

    def __init__(self, target: BinaryIO):
        self._target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.sha.update(b)
        self.size += len(b)
        self._target.write(b)
        return len(b)


class _BackgroundSha256:
    """sha256 of the original bytes, computed beside compression instead of before it.

    Hashing and zstd both release the GIL on large buffers, so for big streams (base backups,
    RDB files) a second thread hashes while the caller's thread compresses: on a 600 MB base
    backup this takes about 0.5 s off the critical path. Small writes (a Kafka line) are
    hashed inline, where a hand-off would cost more than the hash. Blocks are handed over as
    immutable bytes, so a caller reusing its buffer cannot change what gets hashed.
    """

    THRESHOLD = 256 * 1024

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, b) -> None:
        if len(b) < self.THRESHOLD and self._queue is None:
            self._sha.update(b)
            return
        if self._queue is None:
            self._queue = queue.Queue(maxsize=8)  # bounded: memory stays flat if hashing lags
            # The thread holds the queue and the hash, not this object: when a failed stream is
            # dropped without hexdigest(), the finalizer ends the thread.
            self._thread = threading.Thread(target=_hash_blocks, args=(self._queue, self._sha), name="artifact-sha256",
                                            daemon=True)
            self._thread.start()
            weakref.finalize(self, _stop_quietly, self._queue)
        self._queue.put(b if isinstance(b, bytes) else bytes(b))

    def hexdigest(self) -> str:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._queue = None
        return self._sha.hexdigest()


def _hash_blocks(blocks: "queue.Queue[bytes | None]", sha: "hashlib._Hash") -> None:
    while (block := blocks.get()) is not None:
        sha.update(block)


def _stop_quietly(blocks: "queue.Queue[bytes | None]") -> None:
    with contextlib.suppress(queue.Full):
        blocks.put_nowait(None)


class ArtifactStream(io.RawIOBase):
    """A file being written into a backup: raw bytes in, hashed, compressed, stored."""

    def __init__(self, name: str, compression: str, target: BinaryIO, zstd_level: int, zstd_threads: int):
        self.name = name
        self.compression = compression
        self._sink = _HashingSink(target)
        self._sha = _BackgroundSha256()
        self.size = 0
        if compression == "zstd":
            cctx = zstandard.ZstdCompressor(level=zstd_level, threads=zstd_threads)
            self._enc: Any = cctx.stream_writer(self._sink, closefd=False)
        elif compression == "gzip":
            self._enc = gzip.GzipFile(fileobj=self._sink, mode="wb", compresslevel=6, mtime=0)
        else:
            self._enc = self._sink

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._sha.update(b)
        self.size += len(b)
        self._enc.write(b)
        return len(b)

    def copy_from(self, source: BinaryIO, chunk: int = CHUNK) -> int:
        """Stream everything from `source` (a pipe or file) into this artifact."""
        total = 0
        while True:
            block = source.read(chunk)
            if not block:
                return total
            self.write(block)
            total += len(block)

    def finish(self) -> FileEntry:
        if self._enc is not self._sink:
            if self.compression == "zstd":
                self._enc.flush(zstandard.FLUSH_FRAME)
            self._enc.close()
        return FileEntry(
            name=self.name,
            key=self.name + COMPRESSIONS[self.compression],
            compression=self.compression,
            size=self.size,
            sha256=self._sha.hexdigest(),  # waits for the hashing thread
            stored_size=self._sink.size,
            stored_sha256=self._sink.sha.hexdigest(),
        )


class BackupWriter:
    """Collects the files of one backup and publishes them with a manifest on `commit()`."""

    def __init__(self, repo: "Repository", system: str, artifact: str, partition: str, started_at: dt.datetime):
        self._repo = repo
        self.system = system
        self.artifact = artifact
        self.partition = partition
        self.started_at = started_at
        self.ref = BackupRef.new(system, artifact, parse_day(partition), started_at)
        self.backup_id = self.ref.backup_id
        self.metadata: dict[str, Any] = {}
        self._files: list[FileEntry] = []
        self.committed: Backup | None = None

    @property
    def prefix(self) -> str:
        return self.ref.key

    @contextlib.contextmanager
    def open_file(self, name: str, compression: str | None = None) -> Iterator[ArtifactStream]:
        """Stream one file into the backup; durable when the block exits without an exception."""
        if any(f.name == name for f in self._files):
            raise RepositoryError(f"file {name!r} written twice in backup {self.prefix}")
        if "/" in name or name == MANIFEST or name.startswith("."):
            raise RepositoryError(f"invalid backup file name {name!r}")
        compression = compression or self._repo.compression
        key = self.ref.file_key(name + COMPRESSIONS[compression])
        with self._repo.backend.writer(key) as target:
            stream = ArtifactStream(name, compression, target, self._repo.zstd_level, self._repo.zstd_threads)
            yield stream
            entry = stream.finish()
        self._files.append(entry)

    def commit(self, finished_at: dt.datetime | None = None) -> Backup:
        if not self._files:
            raise RepositoryError(f"backup {self.prefix} has no files; nothing is published")
        backup = Backup(
            system=self.system,
            artifact=self.artifact,
            partition=self.partition,
            backup_id=self.backup_id,
            started_at=_iso(self.started_at),
            finished_at=_iso(finished_at or utcnow()),
            files=tuple(self._files),
            metadata=self.metadata,
        )
        with self._repo.backend.writer(backup.manifest_key) as f:
            f.write(backup.to_json())
        self.committed = backup
        return backup

    def abort(self) -> None:
        for entry in self._files:
            self._repo.backend.delete(self.ref.file_key(entry.key))
        self._files.clear()


class _VerifyingReader(io.RawIOBase):
    """Decompresses a stored file and proves, at end of stream, that it matched the manifest."""

    def __init__(self, stored: BinaryIO, entry: FileEntry, where: str):
        self._stored = stored
        self._entry = entry
        self._where = where
        self._stored_sha = hashlib.sha256()
        self._stored_size = 0
        self._sha = hashlib.sha256()
        self._size = 0
        self._done = False
        hashing = _ReadHasher(stored, self)
        if entry.compression == "zstd":
            self._dec: Any = zstandard.ZstdDecompressor().stream_reader(hashing, read_across_frames=True)
        elif entry.compression == "gzip":
            self._dec = gzip.GzipFile(fileobj=hashing, mode="rb")
        else:
            self._dec = hashing

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        n = len(data)
        b[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if self._done:
            return b""
        try:
            data = self._dec.read(size if size and size > 0 else CHUNK * 8)
        except (zstandard.ZstdError, OSError, EOFError) as exc:
            raise IntegrityError(f"{self._where}: cannot decompress ({exc}); the file is corrupt or truncated") from exc
        if data:
            self._sha.update(data)
            self._size += len(data)
            return data
        # Drain what the decompressor did not need, so the stored digest covers every byte.
        while True:
            rest = self._stored.read(CHUNK)
            if not rest:
                break
            self._stored_sha.update(rest)
            self._stored_size += len(rest)
        self._done = True
        self._check()
        return b""

    def _check(self) -> None:
        e = self._entry
        if self._stored_size != e.stored_size or self._stored_sha.hexdigest() != e.stored_sha256:
            raise IntegrityError(
                f"{self._where}: stored bytes do not match the manifest "
                f"(size {self._stored_size} vs {e.stored_size}, sha256 mismatch or truncation)"
            )
        if self._size != e.size or self._sha.hexdigest() != e.sha256:
            raise IntegrityError(f"{self._where}: content does not match the manifest (size {self._size} vs {e.size})")

    def close(self) -> None:
        self._stored.close()
        super().close()


class _ReadHasher(io.RawIOBase):
    def __init__(self, source: BinaryIO, owner: _VerifyingReader):
        self._source = source
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        data = self._source.read(size if size and size > 0 else CHUNK)
        self._owner._stored_sha.update(data)
        self._owner._stored_size += len(data)
        return data


class Repository:
    """Backups of all systems in one backend, each published atomically with its manifest."""

    def __init__(self, backend: Backend, compression: str = "zstd", zstd_level: int = 3, zstd_threads: int = 0,
                 encryption: Encryption | None = None):
        if compression not in COMPRESSIONS:
            raise RepositoryError(f"unknown compression {compression!r}; choose one of {sorted(COMPRESSIONS)}")
        self.storage = backend
        self.encryption = encryption
        self.backend: Backend = EncryptedBackend(backend, encryption) if encryption else backend
        self.compression = compression
        self.zstd_level = zstd_level
        self.zstd_threads = zstd_threads

    @classmethod
    def local(cls, root: str, compression: str = "zstd", **kwargs: Any) -> "Repository":
        return cls(LocalBackend(root), compression=compression, **kwargs)

    def describe(self) -> str:
        return self.backend.describe()

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def begin(
        self, system: str, artifact: str, partition: str | dt.date, started_at: dt.datetime | None = None
    ) -> Iterator[BackupWriter]:
        """Write one backup of (system, artifact, partition) under an exclusive lock.

        The backup is committed when the block exits cleanly (unless the caller committed it
        already) and older backups of the same partition are then removed; on any exception
        the files written so far are deleted and nothing is published.
        """
        part = PartitionRef(system, artifact, parse_day(partition))
        day = part.day.isoformat()
        with self.backend.lock(part.lock_name):
            writer = BackupWriter(self, system, artifact, day, started_at or utcnow())
            try:
                yield writer
                if writer.committed is None:
                    writer.commit()
            except BaseException:
                if writer.committed is None:
                    writer.abort()
                raise
            for old in self.list(system, artifact, partition=day):
                if old.backup_id != writer.backup_id:
                    self.delete(old)

    # -- reading -----------------------------------------------------------------------------

    def list(self, system: str | None = None, artifact: str | None = None, partition: str | None = None) -> list[Backup]:
        """Complete backups (those with a manifest), oldest partition first."""
        prefix = layout.backups_prefix(system or None, artifact or None, parse_day(partition) if partition else None)
        found = []
        for obj in self.backend.list(prefix):
            if layout.is_manifest_key(obj.key):
                backup = self.load_manifest(obj.key)
                if artifact is not None and backup.artifact != artifact:
                    continue  # an artifact whose name is a prefix of another's
                found.append(backup)
        return sorted(found, key=lambda b: (b.system, b.artifact, b.partition, b.backup_id))

    def load_manifest(self, key: str) -> Backup:
        """The manifest stored under `key`, decrypted and parsed (IntegrityError if unreadable)."""
        with self.backend.reader(key) as f:
            raw = f.read()
        if self.encryption is None and raw.startswith(_ENCRYPTED_MAGIC):
            raise RepositoryError(
                f"manifest {key} in {self.describe()} is encrypted (key id {peek_key_id(raw)!r}); "
                "open the repository with its encryption keys"
            )
        try:
            return Backup.from_json(raw)
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityError(f"manifest {key} is unreadable: {exc}") from exc

    def get(self, system: str, artifact: str, partition: str | dt.date) -> Backup:
        day = parse_day(partition).isoformat()
        backups = self.list(system, artifact, partition=day)
        if not backups:
            available = [b.partition for b in self.list(system, artifact)]
            shown = ", ".join(available[-10:]) if available else "none"
            raise NotFoundError(
                f"no complete {system}/{artifact} backup for {day} in {self.describe()} (latest days available: {shown})"
            )
        return backups[-1]

    def latest(self, system: str, artifact: str) -> Backup | None:
        backups = self.list(system, artifact)
        return backups[-1] if backups else None

    def open(self, backup: Backup, name: str) -> BinaryIO:
        """Stream a file's original bytes; raises IntegrityError at the end if anything differs."""
        entry = backup.file(name)
        where = backup.object_key(entry)
        try:
            stored = self.backend.reader(where)
        except FileNotFoundError:
            raise IntegrityError(f"{where}: file listed in the manifest is missing") from None
        return io.BufferedReader(_VerifyingReader(stored, entry, where), buffer_size=CHUNK)  # type: ignore[arg-type]

    def verify(self, backup: Backup, deep: bool = False) -> dict[str, Any]:
        """Check every file against the manifest without writing anything.

        The shallow check hashes the stored bytes (finds corruption and truncation); `deep`
        also decompresses and hashes the original bytes.
        """
        checked = 0
        for entry in backup.files:
            where = backup.object_key(entry)
            if deep:
                with self.open(backup, entry.name) as f:
                    while f.read(CHUNK * 8):
                        pass
            else:
                sha = hashlib.sha256()
                size = 0
                try:
                    with self.backend.reader(where) as f:
                        while block := f.read(CHUNK * 8):
                            sha.update(block)
                            size += len(block)
                except FileNotFoundError:
                    raise IntegrityError(f"{where}: file listed in the manifest is missing") from None
                if size != entry.stored_size or sha.hexdigest() != entry.stored_sha256:
                    raise IntegrityError(
                        f"{where}: checksum mismatch (stored {size} bytes, manifest says {entry.stored_size}); "
                        "the backup is corrupt or truncated"
                    )
            checked += entry.stored_size
        return {"files": len(backup.files), "bytes_checked": checked, "deep": deep}

    # -- deleting ----------------------------------------------------------------------------

    def delete(self, backup: Backup) -> None:
        """Remove a backup: the manifest first, so a half-deleted backup never looks complete."""
        self.backend.delete(backup.manifest_key)
        self.backend.delete_many(backup.object_key(entry) for entry in backup.files)

    def gc_incomplete(self, system: str | None = None) -> list[str]:
        """Delete files that belong to no manifest (left by crashed runs). Returns their keys.

        Call it only when no backup is being written: a running backup's files have no
        manifest yet either.
        """
        prefix = layout.backups_prefix(system or None)
        # Only keys inside a backup's folder are candidates: a day's pin (see pruning.py) belongs
        # to no backup on purpose, and the WAL archive (postgres/wal/...) has no manifests at all.
        inside = {o.key: found for o in self.backend.list(prefix) if (found := layout.parse_file_key(o.key))}
        complete = {ref for ref, name in inside.values() if name == MANIFEST}
        orphans = [key for key, (ref, _) in inside.items() if ref not in complete]
        self.backend.delete_many(orphans)
        return orphans + self.backend.remove_temporaries(prefix)

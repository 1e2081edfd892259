"""The backup repository: every artifact of every system, with a manifest that makes it whole.

Layout (keys in a storage backend, built by layout.py)::

    <system>/<artifact>/<YYYY-MM-DD>/<backup_id>/<file>[.zst|.gz]
    <system>/<artifact>/<YYYY-MM-DD>/<backup_id>/manifest.json
    catalog/<system>/<artifact>/<YYYY-MM-DD>/<backup_id>.json  its catalog entry (catalog.py)

A backup exists only once its manifest does. Files are streamed through compression and two
sha256 digests (of the stored bytes, to detect corruption before anything is decompressed,
and of the original bytes, to prove a restore read back exactly what was captured; see
streams.py), each published durably; the manifest (manifest.py) is written last. A run that
dies at any point leaves files without a manifest: never listed, never restored, removed by
the life cycle once older than a safety age (`prune`, the retention cleanup job:
policy/leftovers.py; `gc_incomplete` is the same with no age). After the manifest, the catalog records the backup with the sha256 of the
manifest's bytes (catalog.py), and `verify` checks the manifest against it before any file:
every restore verifies first, so an edited or vanished manifest is refused before a write.

Each run writes a fresh backup_id, so re-running a day never rewrites the files of the backup
that is already there; the older backup of the same day is removed only after the new manifest
is durable.

Encryption at rest (optional, see encryption.py) is a layer under all of this: with an
`Encryption`, `self.backend` is the storage backend wrapped so that every object body it
writes (files, manifests, and whatever else goes through `repo.backend`: WAL segments and
their records, pins) is sealed, and every read is authenticated. The manifest's sizes and
digests describe the compressed bytes before encryption; key names stay readable, so
listing needs no key. `self.storage` is always the bare backend.

Encryption fails closed (encryption_marker.py): every write passes `self.guard`, so once a
repository has held encrypted objects, a Repository opened without keys refuses to write
there (backups, WAL, pins, offsite copies) before writing anything; reading stays possible.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from auction_backup_pipelines.repository import catalog, layout
from auction_backup_pipelines.repository.encryption import MAGIC as _ENCRYPTED_MAGIC
from auction_backup_pipelines.repository.encryption import EncryptedBackend, Encryption, peek_key_id
from auction_backup_pipelines.repository.encryption_marker import LOCAL_KEY_SETTINGS, FailClosedBackend
from auction_backup_pipelines.repository.keys import shown_id
from auction_backup_pipelines.repository.layout import MANIFEST, BackupRef, PartitionRef
from auction_backup_pipelines.repository.manifest import Backup, FileEntry, NotFoundError
from auction_backup_pipelines.repository.storage import Backend, IntegrityError, LocalBackend, ObjectInfo, RepositoryError
from auction_backup_pipelines.repository.streams import CHUNK, COMPRESSIONS, ArtifactStream, VerifyingReader

__all__ = ["BackupWriter", "Repository", "VerifyReport", "parse_day", "utcnow"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_day(value: str | dt.date) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RepositoryError(f"not a day: {value!r} (expected YYYY-MM-DD)") from None


class BackupWriter:
    """Collects the files of one backup and publishes them with a manifest on `commit()`."""

    def __init__(self, repo: Repository, system: str, artifact: str, partition: str, started_at: dt.datetime):
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
    def open_file(self, name: str, compression: str | None = None, zstd_level: int | None = None) -> Iterator[ArtifactStream]:
        """Stream one file into the backup; durable when the block exits without an exception.

        `zstd_level` overrides the repository's level for this file (the format is the same)."""
        if any(f.name == name for f in self._files):
            raise RepositoryError(f"file {name!r} written twice in backup {self.prefix}")
        if "/" in name or name == MANIFEST or name.startswith("."):
            raise RepositoryError(f"invalid backup file name {name!r}")
        compression = compression or self._repo.compression
        key = self.ref.file_key(name + COMPRESSIONS[compression])
        with self._repo.backend.writer(key) as target:
            level = self._repo.zstd_level if zstd_level is None else zstd_level
            stream = ArtifactStream(name, compression, target, level, self._repo.zstd_threads)
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
        raw = backup.to_json()
        with self._repo.backend.writer(backup.manifest_key) as f:
            f.write(raw)
        try:
            catalog.record(self._repo, self.ref, raw)
        except BaseException:
            self._repo.backend.delete(backup.manifest_key)  # not published: `abort` removes the files
            raise
        self.committed = backup
        return backup

    def abort(self) -> None:
        for entry in self._files:
            self._repo.backend.delete(self.ref.file_key(entry.key))
        self._files.clear()


@dataclass(frozen=True)
class VerifyReport:
    """What `Repository.verify` checked: every file of a backup matched its manifest."""

    files: int
    bytes_checked: int  # stored bytes hashed (the manifest's stored sizes)
    deep: bool  # the original bytes were decompressed and hashed too
    manifest_sha256: str = ""  # of the manifest's bytes, as the catalog records it

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Repository:
    """Backups of all systems in one backend, each published atomically with its manifest."""

    def __init__(
        self,
        backend: Backend,
        compression: str = "zstd",
        zstd_level: int = 3,
        zstd_threads: int = 0,
        encryption: Encryption | None = None,
        key_settings: tuple[str, str] = LOCAL_KEY_SETTINGS,
    ):
        """`key_settings` names the variables that hold this repository's keys, for the refusal's message."""
        if compression not in COMPRESSIONS:
            raise RepositoryError(f"unknown compression {compression!r}; choose one of {sorted(COMPRESSIONS)}")
        self.storage = backend
        self.encryption = encryption
        self.guard = FailClosedBackend(backend, encryption, key_settings)
        self.backend: Backend = EncryptedBackend(self.guard, encryption) if encryption else self.guard
        self.compression = compression
        self.zstd_level = zstd_level
        self.zstd_threads = zstd_threads
        # Manifests parsed by listings, by key, with the (size, version) they were read at. A
        # sensor tick or a prune lists the repository several times (plan, then a fresh plan
        # before each deletion) and would otherwise read every manifest each time: on S3 one
        # GET per backup per listing. Only listings use it; verify and restores read afresh.
        self._listed: dict[str, tuple[tuple[int, str], Backup]] = {}

    @classmethod
    def local(cls, root: str, compression: str = "zstd", **kwargs: Any) -> Repository:
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
        self.guard.check_writable()  # before the lock too: a refused backup leaves no trace
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

    def list(self, system: str | None = None, artifact: str | None = None, partition: str | None = None) -> builtins.list[Backup]:
        """Complete backups (those with a manifest), oldest partition first."""
        prefix = layout.backups_prefix(system or None, artifact or None, parse_day(partition) if partition else None)
        found = []
        for obj in self.backend.list(prefix):
            if layout.is_manifest_key(obj.key):
                backup = self.listed_manifest(obj)
                if artifact is not None and backup.artifact != artifact:
                    continue  # an artifact whose name is a prefix of another's
                found.append(backup)
        return sorted(found, key=lambda b: (b.system, b.artifact, b.partition, b.backup_id))

    def load_manifest(self, key: str) -> Backup:
        """The manifest stored under `key`, decrypted and parsed (IntegrityError if unreadable)."""
        return self.read_manifest(key)[0]

    def listed_manifest(self, obj: ObjectInfo) -> Backup:
        """`load_manifest` for a manifest a listing returned, parsed once per version of it: a
        manifest written again (another size or version) is read again; a store that gives no
        version is always read."""
        seen = self._listed.get(obj.key)
        if obj.version and seen is not None and seen[0] == (obj.size, obj.version):
            return seen[1]
        backup = self.load_manifest(obj.key)
        if obj.version:
            self._listed[obj.key] = ((obj.size, obj.version), backup)
        return backup

    def read_manifest(self, key: str) -> tuple[Backup, bytes]:
        """`load_manifest` and the bytes it parsed (decrypted), whose sha256 the catalog records."""
        with self.backend.reader(key) as f:
            raw = f.read()
        if self.encryption is None and raw.startswith(_ENCRYPTED_MAGIC):
            raise RepositoryError(
                f"manifest {key} in {self.describe()} is encrypted (key id {shown_id(peek_key_id(raw) or '')!r}); "
                "open the repository with its encryption keys"
            )
        try:
            return Backup.from_json(raw, f"manifest {key}"), raw
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
        return io.BufferedReader(VerifyingReader(stored, entry, where), buffer_size=CHUNK)

    def verify(self, backup: Backup, deep: bool = False) -> VerifyReport:
        """Check every file against the manifest without writing anything.

        The shallow check hashes the stored bytes (finds corruption and truncation); `deep`
        also decompresses and hashes the original bytes. First of all the manifest itself is
        read again and checked against its own checksum and its catalog entry (catalog.py).
        """
        digest = catalog.check_manifest(self, backup)
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
        return VerifyReport(files=len(backup.files), bytes_checked=checked, deep=deep, manifest_sha256=digest)

    # -- deleting ----------------------------------------------------------------------------

    def delete(self, backup: Backup) -> None:
        """Remove a backup: its catalog entry, then the manifest (so a half-deleted backup never
        looks complete), then the files; catalog.py explains why the entry goes first."""
        catalog.forget(self, backup.ref)
        self.backend.delete(backup.manifest_key)
        self.backend.delete_many(backup.object_key(entry) for entry in backup.files)
        self.backend.delete(backup.ref.verdict_key)  # its restore verdict (verdicts.py), if it had one

    def gc_incomplete(self, system: str | None = None) -> builtins.list[str]:
        """Remove, now, what crashed runs left (temp files, backup folders without a manifest,
        unfinished uploads) that no live writer's partition lock guards; returns the removed keys.

        The life cycle (`prune`, the retention cleanup job) does the same with a safety age
        (policy/leftovers.py): this is that decision with an age of zero, for a caller that just
        saw its own writer die. The WAL archive, pins and the catalog are never candidates.
        """
        from auction_backup_pipelines.policy import leftovers  # the decision lives above the repository

        prefix = layout.backups_prefix(system or None)
        outcomes = leftovers.remove(self.storage, None, utcnow(), dt.timedelta(0), prefix=prefix)
        removed = [o.leftover for o in outcomes if o.action == leftovers.REMOVED and o.leftover is not None]
        return [key for x in removed for key in (x.keys or (x.key,))]

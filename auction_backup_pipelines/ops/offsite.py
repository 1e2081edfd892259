"""Offsite copies: a backup copied from one repository to another (say local -> S3), then proven there.

The copy moves the stored (compressed) bytes, not the original ones: nothing is decompressed
or recompressed. When either side is encrypted, its own layer decrypts or encrypts, so a
local repository and its offsite copy may use different keys (or only one side may encrypt).

Order, so that no failure leaves the destination lying:

0. an encrypted source is never copied into an unencrypted destination (unless asked);
1. each file is streamed and hashed on the way; a source that does not match its manifest
   fails the copy (a corrupt backup is never copied), and the destination's writer then
   publishes nothing;
2. the manifest is written last, exactly as the source has it, then its catalog entry
   (repository/catalog.py): the backup exists at the destination only once every file is
   durable there; a source manifest that no longer matches its own catalog is not copied;
3. the destination is read back and checked against the manifest (`Repository.verify`), and
   the manifest and its entry are removed again when that fails.

Idempotent: a backup whose manifest is already at the destination is only verified (and
copied again if that fails). With `replace_older`, backups of the same partition that the source no
longer has are removed from the destination after the copy, mirroring `Repository.begin`. The WAL archive is
copied segment by segment with `copy_wal` (record last, same rule).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import catalog, layout
from auction_backup_pipelines.repository.encryption import EncryptedBackend
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository, VerifyReport, parse_day
from auction_backup_pipelines.repository.storage import IntegrityError, RepositoryError
from auction_backup_pipelines.repository.streams import CHUNK
from auction_backup_pipelines.settings import OffsiteSettings

COPIED = "copied"
PRESENT = "already present"


@dataclass(frozen=True)
class CopyReport:
    backup: str  # the backup's key (system/artifact/day/backup_id)
    status: str  # COPIED or PRESENT
    files: int
    bytes: int  # stored bytes moved (0 when already present)
    destination: str
    verified: VerifyReport  # what the destination's read-back checked
    duration_s: float
    replaced: list[str] = field(default_factory=list)  # superseded backups removed at the destination

    def summary(self) -> str:
        return (
            f"{self.backup}: {self.status} to {self.destination} ({self.files} files, {self.bytes} bytes, "
            f"verified {self.verified.bytes_checked} bytes, {self.duration_s:.1f} s)"
        )


def _copy_file(src: Repository, dst: Repository, backup: Backup, key: str, size: int, sha256: str) -> int:
    where = backup.ref.file_key(key)
    sha, n = hashlib.sha256(), 0
    try:
        source = src.backend.reader(where)
    except FileNotFoundError:
        raise IntegrityError(f"{where}: listed in the source manifest but missing in {src.describe()}") from None
    with source, dst.backend.writer(where) as out:
        while block := source.read(CHUNK * 4):
            sha.update(block)
            n += len(block)
            out.write(block)
        if n != size or sha.hexdigest() != sha256:
            # Raised inside the writer: the destination object is never published.
            raise IntegrityError(f"{where}: source bytes do not match its manifest ({n} vs {size} bytes); not copied")
    return n


def _present(dst: Repository, backup: Backup) -> Backup | None:
    if not any(o.key == backup.manifest_key for o in dst.backend.list(backup.manifest_key)):
        return None
    there = dst.load_manifest(backup.manifest_key)
    return there if there.files == backup.files else None


def _refuse_downgrade(src: Repository, dst: Repository, allow_plaintext: bool) -> None:
    # Each side's layer decrypts or encrypts, so an unencrypted destination would get plaintext.
    if src.encryption is not None and dst.encryption is None and not allow_plaintext:
        raise RepositoryError(
            f"{src.describe()} is encrypted but {dst.describe()} is not: the copy would be stored in plaintext. "
            "Give the destination encryption keys (the same keys are fine), or pass allow_plaintext=True"
        )


def copy_backup(
    src: Repository,
    dst: Repository,
    backup: Backup,
    *,
    replace_older: bool = True,
    deep_verify: bool = False,
    allow_plaintext: bool = False,
    reverify: bool = True,
) -> CopyReport:
    """Copy one complete backup from `src` to `dst` and verify it there; see the module doc."""
    _refuse_downgrade(src, dst, allow_plaintext)
    catalog.check_manifest(src, backup)  # an edited or vanished source manifest is never copied
    started = time.monotonic()
    moved = 0
    with dst.backend.lock(backup.ref.partition_ref.lock_name):
        there = _present(dst, backup)
        status = PRESENT
        verified = VerifyReport(files=len(backup.files), bytes_checked=0, deep=False)
        if there is not None and reverify:
            try:
                verified = dst.verify(there, deep=deep_verify)
            except IntegrityError:
                there = None  # a damaged copy: copy again, below
        if there is None:
            status = COPIED
            try:
                for entry in backup.files:
                    moved += _copy_file(src, dst, backup, entry.key, entry.stored_size, entry.stored_sha256)
                raw = backup.to_json()
                with dst.backend.writer(backup.manifest_key) as f:
                    f.write(raw)
                catalog.record(dst, backup.ref, raw)
                verified = dst.verify(backup, deep=deep_verify)
            except BaseException:
                # Entry and manifest first (a half-removed backup never looks complete), then the
                # files copied so far, so a failed copy leaves no orphans for gc to find.
                catalog.forget(dst, backup.ref)
                dst.backend.delete(backup.manifest_key)
                dst.backend.delete_many(backup.object_key(e) for e in backup.files)
                raise
        replaced = []
        if replace_older:
            # backup ids sort by second only, so "older" means: gone from the source (whose
            # `begin` keeps one backup per day), never "a smaller id".
            keep = {b.backup_id for b in src.list(backup.system, backup.artifact, partition=backup.partition)}
            for old in dst.list(backup.system, backup.artifact, partition=backup.partition):
                if old.backup_id != backup.backup_id and old.backup_id not in keep:
                    dst.delete(old)
                    replaced.append(old.prefix)
    return CopyReport(
        backup.prefix, status, len(backup.files), moved, dst.describe(), verified, round(time.monotonic() - started, 3), replaced
    )


def repository_from_settings(settings: OffsiteSettings) -> Repository:
    """The offsite repository the settings name: its S3 bucket (see S3Backend.from_settings), its
    compression (for backups written there directly) and its own keys (may be the source's)."""
    from auction_backup_pipelines.repository.encryption import Encryption
    from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS
    from auction_backup_pipelines.repository.s3 import S3Backend

    return Repository(
        S3Backend.from_settings(settings),
        compression=settings.compression,
        encryption=Encryption.from_settings(settings.encryption_key_file, settings.encryption_keys),
        key_settings=OFFSITE_KEY_SETTINGS,
    )


def copy_partition(src: Repository, dst: Repository, system: str, artifact: str, partition: str, **kwargs: Any) -> CopyReport:
    """Copy the newest complete backup of one partition (what the offsite asset does)."""
    # No separate source verification: the copy hashes every stored byte on the way anyway.
    return copy_backup(src, dst, src.get(system, artifact, parse_day(partition)), **kwargs)


def copy_all(
    src: Repository, dst: Repository, system: str | None = None, reverify: bool = False, **kwargs: Any
) -> list[CopyReport]:
    """Copy every complete backup (of `system`) that the destination lacks; returns one report each.
    Copies already there are trusted by their manifest unless `reverify` (which reads them all back)."""
    return [copy_backup(src, dst, b, reverify=reverify, **kwargs) for b in src.list(system)]


@dataclass(frozen=True)
class WalCopyReport:
    copied: list[str]
    present: int
    bytes: int


def copy_wal(src: WalArchive, dst: WalArchive, allow_plaintext: bool = False) -> WalCopyReport:
    """Copy archived WAL files the destination lacks (completed segments, history; the newest
    `.partial` again when it changed): data first, record last, each checked against its record."""
    if isinstance(src.backend, EncryptedBackend) and not isinstance(dst.backend, EncryptedBackend) and not allow_plaintext:
        raise RepositoryError(
            f"the source WAL archive is encrypted but {dst.backend.describe()} is not; refusing to copy plaintext"
        )
    have = {r.name: r for r in dst.records()}
    copied, moved = [], 0
    for record in sorted(src.records(), key=lambda r: r.name):
        old = have.get(record.name)
        if old is not None and old.sha256 == record.sha256:
            continue
        # A `.partial`'s bytes live under the versioned key its record names (wal_archive.push).
        data_key, record_key = record.stored_key, layout.wal_record_key(record.name)
        sha, n = hashlib.sha256(), 0
        with src.backend.reader(data_key) as source, dst.backend.writer(data_key) as out:
            while block := source.read(CHUNK * 4):
                sha.update(block)
                n += len(block)
                out.write(block)
            if n != record.stored_size or sha.hexdigest() != record.stored_sha256:
                raise IntegrityError(f"archived WAL {record.name} does not match its record; not copied")
        with src.backend.reader(record_key) as f, dst.backend.writer(record_key) as out:
            out.write(f.read())
        if record.partial:
            dst.remove_stale_partial_data(record.name, keep=data_key)
        copied.append(record.name)
        moved += n
        if not record.partial and record.name + ".partial" in have:
            dst.drop_partial(record.name)  # as the receiver does at the source
    return WalCopyReport(copied, len(have), moved)

"""The catalog: what the repository published, so a lost or edited manifest is seen, not trusted.

A backup exists once its manifest does (repository.py), so a manifest that vanishes takes its
backup out of every listing without a trace, and a manifest edited in place (one digit of a
row count) is believed by the next restore. The catalog is a second, independent record.

Design: one small object per published backup, `catalog/<system>/<artifact>/<day>/<backup_id>.json`
(layout.BackupRef.catalog_key), holding the backup's key and the sha256 of its manifest's bytes
(as stored, before encryption). One object per backup rather than an append-only log or one
index file: each is written once by the run that published the backup, so there is no
read-modify-write to race with another run, an S3 bucket needs nothing but plain PUTs, and a
damaged entry affects one backup only. Orders, so that a crash never makes an intact backup look
tampered with nor hides a vanished one:

* publish: files, manifest, then the entry. A crash between the last two leaves a complete
  backup that is "not in the catalog" (a warning, like a backup written before the catalog
  existed); `auction-backup verify --adopt` records it.
* delete (pruning, a day backed up again): the entry first, then the manifest, then the files.
  A crash after the entry leaves a complete backup "not in the catalog" (a warning; the next
  prune deletes it again); after the manifest, files without manifest or entry, which the
  leftovers cleanup removes. Removing the entry last instead would turn every crash between
  the manifest and the entry into a false "manifest missing".

What `audit` reports (`auction-backup verify`, the daily integrity checks):

* errors: an entry whose manifest is gone ("manifest missing"), a manifest whose bytes differ
  from its entry ("manifest changed"), a manifest that does not match its own checksum
  (manifest.py's `self_sha256`), and anything unreadable (not JSON, not decryptable, not
  readable from the store), each reported on its own while the rest is still checked;
* warnings: a complete backup without an entry ("not in the catalog").

Authenticity: with encryption on, manifests and entries are written through the encrypted
backend, so each is sealed with AES-256-GCM under a key derived from the repository key, with
its own storage key as associated data (encryption.py): that is a MAC. Whoever holds the bucket
but not the key can neither edit a manifest or an entry, nor write one that decrypts, nor move
one under another backup's key; a plaintext object planted there is refused as unreadable. A
second HMAC inside would add nothing. Without encryption the digests catch accidents and
careless edits but not an attacker, who can rewrite both. Deleting a manifest and its entry
together leaves only data files, which the leftovers cleanup reports: the catalog proves what
is there, not what is absent from both records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup, ManifestChecksumError
from auction_backup_pipelines.repository.storage import IntegrityError, LockedError, RepositoryError

if TYPE_CHECKING:
    from auction_backup_pipelines.repository.repository import Repository

__all__ = [
    "CATALOG_FORMAT",
    "CHECKSUM_MISMATCH",
    "ERROR",
    "MANIFEST_CHANGED",
    "MANIFEST_MISSING",
    "NOT_IN_CATALOG",
    "UNREADABLE",
    "WARNING",
    "Audit",
    "Entry",
    "Finding",
    "adopt",
    "audit",
    "check_manifest",
    "forget",
    "has_entry",
    "manifest_sha256",
    "read_entry",
    "record",
]

CATALOG_FORMAT = 1

MANIFEST_MISSING = "manifest missing"
MANIFEST_CHANGED = "manifest changed"
CHECKSUM_MISMATCH = "checksum mismatch"
UNREADABLE = "unreadable"
NOT_IN_CATALOG = "not in the catalog"
ERROR = "error"
WARNING = "warning"


def manifest_sha256(raw: bytes) -> str:
    """The digest the catalog records: sha256 of a manifest's bytes as stored (decrypted)."""
    return hashlib.sha256(raw).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Entry:
    """One catalog entry: the backup it records and the sha256 of its manifest's bytes."""

    backup: str  # the backup's key, <system>/<artifact>/<day>/<backup_id>
    manifest_sha256: str
    recorded_at: str
    format: int = CATALOG_FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, ref: BackupRef) -> Entry:
        where = ref.catalog_key
        try:
            doc = json.loads(raw)
            entry = cls(**doc)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"catalog entry {where} is unreadable: {exc}") from None
        if entry.backup != ref.key:
            raise IntegrityError(f"catalog entry {where} records another backup ({entry.backup}); it was moved or edited")
        return entry


@dataclass(frozen=True)
class Finding:
    """Something `audit` reports about one backup (or one object that names none)."""

    key: str  # the backup's key, or the object's key when it names no backup
    problem: str  # MANIFEST_MISSING, MANIFEST_CHANGED, CHECKSUM_MISMATCH, UNREADABLE, NOT_IN_CATALOG
    detail: str
    severity: str = ERROR

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Audit:
    """The readable, consistent backups (oldest first) and one finding per problem."""

    backups: list[Backup] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # backup key -> manifest sha256

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]


# -- writing -------------------------------------------------------------------------------------


def record(repo: Repository, ref: BackupRef, raw: bytes) -> Entry:
    """Record a published backup: called with its manifest's bytes, after the manifest is durable."""
    entry = Entry(ref.key, manifest_sha256(raw), _now())
    with repo.backend.writer(ref.catalog_key) as f:
        f.write(entry.to_json())
    return entry


def forget(repo: Repository, ref: BackupRef) -> None:
    """Remove a backup's entry: the first step of deleting it, or an operator accepting a loss."""
    repo.backend.delete(ref.catalog_key)


def has_entry(repo: Repository, ref: BackupRef) -> bool:
    return any(o.key == ref.catalog_key for o in repo.backend.list(ref.catalog_key))


# -- reading -------------------------------------------------------------------------------------


def read_entry(repo: Repository, ref: BackupRef) -> Entry | None:
    """A backup's entry, None when it has none; IntegrityError when it cannot be read or trusted."""
    try:
        with repo.backend.reader(ref.catalog_key) as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except IntegrityError as exc:  # not decryptable: planted, damaged or moved
        raise IntegrityError(f"catalog entry {ref.catalog_key} is unreadable: {exc}") from None
    return Entry.from_json(raw, ref)


def check_manifest(repo: Repository, backup: Backup) -> str:
    """Before a backup is verified or restored: its manifest is still there, still says what
    `backup` says about its files, matches its own checksum and its catalog entry. Returns its
    sha256; raises IntegrityError (one line) otherwise."""
    key = backup.manifest_key
    try:
        stored, raw = repo.read_manifest(key)
    except FileNotFoundError:
        raise IntegrityError(f"manifest {key} is missing from {repo.describe()}: the backup is no longer complete") from None
    if stored.files != backup.files or stored.ref != backup.ref:
        raise IntegrityError(f"manifest {key} changed since it was read; refusing to use it")
    digest = manifest_sha256(raw)
    entry = read_entry(repo, backup.ref)
    if entry is not None and entry.manifest_sha256 != digest:
        raise IntegrityError(_changed(key, entry, digest))
    return digest


def _changed(key: str, entry: Entry, digest: str) -> str:
    return (
        f"manifest {key} changed after it was published: its sha256 {digest[:12]}… differs from the catalog's "
        f"{entry.manifest_sha256[:12]}… (recorded {entry.recorded_at}); refusing to use it"
    )


def _classify(exc: Exception) -> str:
    return CHECKSUM_MISMATCH if isinstance(exc, ManifestChecksumError) else UNREADABLE


def _manifest_refs(repo: Repository, system: str | None, artifact: str | None) -> list[BackupRef]:
    refs = []
    for obj in repo.backend.list(layout.backups_prefix(system or None, artifact or None)):
        found = layout.parse_file_key(obj.key) if layout.is_manifest_key(obj.key) else None
        if found is not None and (artifact is None or found[0].artifact == artifact):
            refs.append(found[0])
    return refs


def audit(repo: Repository, system: str | None = None, artifact: str | None = None, catalog: bool = True) -> Audit:
    """Every manifest (of a system, of an artifact) read on its own, compared with the catalog.

    Nothing stops at the first problem: each unreadable or inconsistent backup becomes a
    finding, the others are returned. `catalog=False` checks the manifests only (for `list`).
    Manifests are listed before entries: a deletion removes the entry first, so a backup
    pruned between the two listings can never look like a missing manifest.
    """
    result = Audit()
    manifests = _manifest_refs(repo, system, artifact)
    entries: set[BackupRef] = set()
    if catalog:
        for obj in repo.backend.list(layout.catalog_prefix(system or None, artifact or None)):
            ref = layout.parse_catalog_key(obj.key)
            if ref is not None and (artifact is None or ref.artifact == artifact):
                entries.add(ref)
    for ref in manifests:
        _audit_manifest(repo, ref, catalog and ref in entries, catalog, result)
    listed = set(manifests)
    for ref in sorted(entries - listed, key=lambda r: r.key):
        _audit_orphan_entry(repo, ref, result)
    result.backups.sort(key=lambda b: (b.system, b.artifact, b.partition, b.backup_id))
    result.findings.sort(key=lambda f: f.key)
    return result


def _audit_manifest(repo: Repository, ref: BackupRef, has_entry: bool, catalog: bool, result: Audit) -> None:
    try:
        backup, raw = repo.read_manifest(ref.manifest_key)
    except FileNotFoundError:
        return  # deleted since the listing: its entry went first
    except (RepositoryError, ConfigurationError, OSError) as exc:
        result.findings.append(Finding(ref.key, _classify(exc), str(exc)))
        return
    if backup.ref != ref:
        result.findings.append(
            Finding(ref.key, MANIFEST_CHANGED, f"manifest {ref.manifest_key} describes another backup ({backup.prefix})")
        )
        return
    digest = manifest_sha256(raw)
    if catalog and has_entry:
        try:
            entry = read_entry(repo, ref)
        except RepositoryError as exc:
            result.findings.append(Finding(ref.key, UNREADABLE, str(exc)))
            return
        if entry is not None and entry.manifest_sha256 != digest:
            result.findings.append(Finding(ref.key, MANIFEST_CHANGED, _changed(ref.manifest_key, entry, digest)))
            return
    elif catalog:
        result.findings.append(
            Finding(
                ref.key,
                NOT_IN_CATALOG,
                "complete, but not in the catalog (written before it existed, or a run stopped between its "
                "manifest and its entry); `auction-backup verify --adopt` records it",
                WARNING,
            )
        )
    result.digests[ref.key] = digest
    result.backups.append(backup)


def _audit_orphan_entry(repo: Repository, ref: BackupRef, result: Audit) -> None:
    # Listed as an entry but its manifest was not listed: look again, since a backup published
    # between the two listings has both by now.
    try:
        repo.read_manifest(ref.manifest_key)
    except FileNotFoundError:
        pass
    except (RepositoryError, ConfigurationError, OSError) as exc:
        result.findings.append(Finding(ref.key, _classify(exc), str(exc)))
        return
    else:
        return  # published meanwhile; the next audit checks it
    try:
        entry = read_entry(repo, ref)
    except RepositoryError as exc:
        result.findings.append(Finding(ref.key, UNREADABLE, f"manifest missing, and {exc}"))
        return
    if entry is None:
        return  # deleted meanwhile
    result.findings.append(
        Finding(
            ref.key,
            MANIFEST_MISSING,
            f"the catalog recorded this backup on {entry.recorded_at} (manifest sha256 {entry.manifest_sha256[:12]}…) "
            f"but {ref.manifest_key} is gone: the backup was lost or removed outside the life cycle",
        )
    )


# -- operator actions ----------------------------------------------------------------------------


def adopt(repo: Repository, found: Audit) -> tuple[list[str], list[str]]:
    """Record every backup `found` reported "not in the catalog"; returns (adopted, skipped with why).

    Each is read again under its partition's lock (no backup run of that day is publishing or
    replacing it meanwhile) and its entry is written from the bytes read then. A backup pruned
    while it was adopted loses the entry again, so it cannot turn into a "manifest missing".
    """
    adopted, skipped = [], []
    for finding in found.findings:
        if finding.problem != NOT_IN_CATALOG:
            continue
        ref = BackupRef.parse(finding.key)
        try:
            with repo.backend.lock(ref.partition_ref.lock_name):
                try:
                    _, raw = repo.read_manifest(ref.manifest_key)
                except FileNotFoundError:
                    skipped.append(f"{ref.key}: deleted meanwhile")
                    continue
                record(repo, ref, raw)
                if not any(o.key == ref.manifest_key for o in repo.backend.list(ref.manifest_key)):  # pruned meanwhile
                    forget(repo, ref)
                    skipped.append(f"{ref.key}: deleted meanwhile")
                    continue
        except LockedError:
            skipped.append(f"{ref.key}: a backup of that day is running; adopt it later")
            continue
        adopted.append(ref.key)
    return adopted, skipped

"""What the repositories hold right now, for an operator: the engine behind `auction-backup info`.

Why a module of its own: `info` answers "is my data protected?" in one screen, in the spirit of
`pgbackrest info`: per system and artifact the newest backup (age, size, how it was captured),
its latest restore verdict (repository/verdicts.py) and whether the offsite repository has it;
then the PITR window and WAL lag (postgres/pitr.py, postgres/wal_archive.py) and the encryption
key ids in use (ids only: a key never leaves keys.py). It must answer in about a second, also
when Dagster or a store is down, so it reads little: one listing of the backups area, then only
the newest manifest of each artifact and its verdict; the offsite store is asked about those
manifests only, with short timeouts, and an unreachable store is a column value, not a failure.
No Dagster.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.policy import wal_pruning
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.repository import layout, verdicts
from auction_backup_pipelines.repository.encryption import MAGIC, Encryption, peek_key_id
from auction_backup_pipelines.repository.keys import shown_id
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import Backend
from auction_backup_pipelines.settings import EncryptionSettings, OffsiteSettings

__all__ = [
    "ArtifactStatus",
    "KeyStatus",
    "PitrStatus",
    "Status",
    "capture_of",
    "collect",
    "newest_backups",
    "offsite_repository",
    "offsite_store",
]

NOT_CONFIGURED = "not configured"
PRESENT = "present"
MISSING = "missing"
# An operator's `info` must not hang on a dead store: a few seconds, then "unreachable".
OFFSITE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ArtifactStatus:
    """The newest backup of one artifact and what is known about it."""

    system: str
    artifact: str
    backup: str  # its key, system/artifact/day/backup_id
    day: str
    captured_at: str | None
    age_s: float | None  # now - captured_at (or finished_at)
    size: int
    stored_size: int
    capture: str  # how it was taken (capture_of)
    verification: str  # "passed", "failed", "inconclusive", "none" or "unreadable"
    verified_at: str | None
    offsite: str  # PRESENT, MISSING, NOT_CONFIGURED or "unknown: <why>"
    key_id: str | None = None  # the key its manifest is encrypted with (None: plaintext)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PitrStatus:
    """The recoverable window and how far the WAL archive lags behind."""

    window: str  # pitr.RecoveryWindow.describe()
    earliest: str | None
    latest: str | None
    newest_segment: str | None
    lag_seconds: float | None
    gaps: list[str] = field(default_factory=list)  # holes not made by retention
    problem: str | None = None  # the archive could not be read

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KeyStatus:
    """The key ids one repository is configured with: the first encrypts, every one decrypts."""

    repository: str  # "local" or "offsite"
    encrypts_with: str | None  # None: the repository is not encrypted
    decrypts_with: list[str] = field(default_factory=list)
    problem: str | None = None  # the keys could not be read (never their content)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Status:
    repository: str
    artifacts: list[ArtifactStatus] = field(default_factory=list)
    pitr: PitrStatus | None = None
    keys: list[KeyStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # manifests or verdicts that could not be read

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "artifacts": [a.as_dict() for a in self.artifacts],
            "pitr": self.pitr.as_dict() if self.pitr else None,
            "keys": [k.as_dict() for k in self.keys],
            "problems": self.problems,
        }


def capture_of(metadata: dict[str, Any]) -> str:
    """How a backup was captured, in a few words, from what its manifest's metadata records."""
    if "mode" in metadata:  # Redis: rdb / aof / cluster, and how the bytes travelled
        text = f"{metadata['mode']} ({metadata['transfer']})" if metadata.get("transfer") else str(metadata["mode"])
    elif "capture" in metadata:  # Kafka: on time, or rebuilt from the log by timestamp
        text = str(metadata["capture"])
    elif metadata.get("reconstructed_via_pitr"):
        text = "reconstructed via PITR"
    elif "wal_method" in metadata:  # a base backup
        text = "pg_basebackup"
    elif "source" in metadata:
        text = str(metadata["source"])
    elif "wal_for" in metadata:
        text = "WAL"
    else:
        text = "-"
    return text + (", late capture" if metadata.get("late_capture") else "")


def newest_backups(repo: Repository) -> tuple[list[Backup], list[str]]:
    """The newest complete backup of each artifact, from one listing; only those manifests are read.
    Returns them (by system, artifact) and one line per newest manifest that could not be read."""
    newest: dict[tuple[str, str], BackupRef] = {}
    for obj in repo.backend.list(layout.backups_prefix()):
        if not layout.is_manifest_key(obj.key) or (found := layout.parse_file_key(obj.key)) is None:
            continue
        ref = found[0]
        best = newest.get((ref.system, ref.artifact))
        if best is None or (ref.day, ref.backup_id) > (best.day, best.backup_id):
            newest[(ref.system, ref.artifact)] = ref
    backups, problems = [], []
    for _, ref in sorted(newest.items()):
        try:
            backups.append(repo.load_manifest(ref.manifest_key))
        except (BackupError, OSError) as exc:
            problems.append(f"{ref.key}: {exc}")
    return backups, problems


def offsite_store(settings: OffsiteSettings, timeout: float = OFFSITE_TIMEOUT_S) -> Backend:
    """The offsite bucket's raw store with short timeouts (listing needs no keys)."""
    from auction_backup_pipelines.repository.s3 import S3Backend

    return S3Backend.from_settings(
        settings, connect_timeout=timeout, read_timeout=timeout, max_attempts=1, outage_timeout=timeout
    )


def offsite_repository(settings: OffsiteSettings, timeout: float = OFFSITE_TIMEOUT_S) -> Repository:
    """The offsite repository (ops/offsite.repository_from_settings) with short timeouts, for checks."""
    from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS

    return Repository(
        offsite_store(settings, timeout),
        compression=settings.compression,
        encryption=Encryption.from_settings(settings.encryption_key_file, settings.encryption_keys),
        key_settings=OFFSITE_KEY_SETTINGS,
    )


def _offsite_presence(store: Backend | None, refs: list[BackupRef], unusable: str | None) -> dict[str, str]:
    if unusable is not None:
        return {r.key: f"unknown: {unusable}" for r in refs}
    if store is None:
        return {r.key: NOT_CONFIGURED for r in refs}
    found: dict[str, str] = {}
    for r in refs:
        try:
            there = any(o.key == r.manifest_key for o in store.list(r.manifest_key))
        except (BackupError, OSError) as exc:  # the store is down: say so for this and every later row
            reason = f"unknown: offsite unreachable ({str(exc).splitlines()[0]})"
            return {**found, **{x.key: reason for x in refs if x.key not in found}}
        found[r.key] = PRESENT if there else MISSING
    return found


def _verdict(repo: Repository, ref: BackupRef, problems: list[str]) -> tuple[str, str | None]:
    try:
        v = verdicts.read(repo, ref)
    except (BackupError, OSError) as exc:
        problems.append(str(exc))
        return "unreadable", None
    return (v.result, v.verified_at) if v else ("none", None)


def _key_id(repo: Repository, b: Backup) -> str | None:
    if repo.encryption is None:
        return None
    try:
        with repo.storage.reader(b.manifest_key) as f:
            head = f.read(len(MAGIC) + 1 + 255)
    except (BackupError, OSError):
        return None
    found = peek_key_id(head)
    return shown_id(found) if found is not None else None


def _age(b: Backup, now: dt.datetime) -> tuple[str | None, float | None]:
    stamp = b.metadata.get("captured_at") or b.finished_at
    try:
        at = dt.datetime.fromisoformat(str(stamp))
    except ValueError:
        return (str(stamp) if stamp else None), None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return at.isoformat(), round((now - at).total_seconds(), 1)


def artifact_statuses(
    repo: Repository, store: Backend | None, now: dt.datetime, unusable_offsite: str | None = None
) -> tuple[list[ArtifactStatus], list[str]]:
    """One ArtifactStatus per artifact (its newest backup), and the lines that could not be read."""
    backups, problems = newest_backups(repo)
    offsite = _offsite_presence(store, [b.ref for b in backups], unusable_offsite)
    rows = []
    for b in backups:
        captured_at, age = _age(b, now)
        result, verified_at = _verdict(repo, b.ref, problems)
        rows.append(
            ArtifactStatus(
                system=b.system,
                artifact=b.artifact,
                backup=b.prefix,
                day=b.partition,
                captured_at=captured_at,
                age_s=age,
                size=b.size,
                stored_size=b.stored_size,
                capture=capture_of(b.metadata),
                verification=result,
                verified_at=verified_at,
                offsite=offsite[b.prefix],
                key_id=_key_id(repo, b),
            )
        )
    return rows, problems


def pitr_status(repo: Repository, pitr_window: dt.timedelta, now: dt.datetime) -> PitrStatus:
    """The recoverable window, the archive's newest segment, its lag and its real gaps."""
    archive = WalArchive(repo.backend)
    try:
        records = list(archive.records())
        h = health(records, archive.heartbeat())
        window = pitr.recovery_window(repo, archive, records)
        gaps, _ = wal_pruning.archive_gaps(repo, records, h.gaps, pitr_window, now)
    except (BackupError, OSError, ValueError, KeyError) as exc:
        return PitrStatus("unknown", None, None, None, None, problem=f"WAL archive unreadable: {exc}")
    lag = h.lag_seconds(now)
    return PitrStatus(
        window=window.describe(),
        earliest=pitr.format_utc(window.earliest) if window.earliest else None,
        latest=pitr.format_utc(window.latest) if window.latest else None,
        newest_segment=h.newest.name if h.newest else None,
        lag_seconds=None if lag is None else round(lag, 1),
        gaps=[f"{a} .. {b}" for a, b in gaps],
    )


def key_status(repository: str, key_file: str, keys: str) -> KeyStatus:
    """The ids of the keys one repository is configured with (ids only; never a key)."""
    try:
        enc = Encryption.from_settings(key_file, keys)
    except BackupError as exc:
        return KeyStatus(repository, None, problem=str(exc))
    if enc is None:
        return KeyStatus(repository, None)
    return KeyStatus(repository, shown_id(enc.current.id), [shown_id(k) for k in enc.keys])


def collect(
    repo: Repository,
    encryption: EncryptionSettings,
    offsite: OffsiteSettings,
    pitr_window: dt.timedelta,
    now: dt.datetime | None = None,
) -> Status:
    """Everything `auction-backup info` shows, read from `repo` (and the offsite bucket when set)."""
    now = now or dt.datetime.now(dt.UTC)
    store: Backend | None = None
    unusable: str | None = None
    if offsite.configured:
        try:
            store = offsite_store(offsite)
        except BackupError as exc:
            unusable = f"offsite unusable ({exc})"
    status = Status(repository=repo.describe())
    status.artifacts, status.problems = artifact_statuses(repo, store, now, unusable)
    status.pitr = pitr_status(repo, pitr_window, now)
    status.keys = [key_status("local", encryption.key_file, encryption.keys)]
    if offsite.configured:
        status.keys.append(key_status("offsite", offsite.encryption_key_file, offsite.encryption_keys))
    return status

"""Every key of the backup repository is built and parsed here, and nowhere else.

Keys used to be f-strings and splits spread over the repository, the pruner, the offsite copy
and the WAL archive. A Kafka artifact (`topic_export/<topic>`) has a slash in it, so the code
that counted slashes failed on it: pins, resuming an interrupted deletion, asset keys. As in
restic's typed layout, this module owns the key format; the rest of the code handles typed
references (`BackupRef`, `PartitionRef`) and asks here for the keys of an area.

Keys are '/'-separated and relative to the backend's root (see storage.py)::

    <system>/<artifact>/<day>/<backup_id>/<file>[.zst|.gz]  a backup's files
    <system>/<artifact>/<day>/<backup_id>/manifest.json     written last: the backup exists once it does
    <system>/<artifact>/<day>/PINNED                        a pin: retention keeps every backup of the day
    catalog/<system>/<artifact>/<day>/<backup_id>.json      the catalog's entry for a published backup (catalog.py)
    verdicts/<system>/<artifact>/<day>/<backup_id>.json     the latest restore verification of a backup (verdicts.py)
    restores/<system>/<artifact>/<day>/<restore_id>.json    one restore made from that day's backup (restore_log.py)
    postgres/wal/<timeline>/<segment>[.partial].zst         the WAL archive: one segment, zstd
    postgres/wal/<timeline>/<segment>.partial.<v>.zst       one shipped version of a `.partial`
    postgres/wal/<timeline>/<segment>[.partial].json        its record, written after the data
    postgres/wal/history/<timeline>.history.{zst,json}      timeline history files
    postgres/wal_heartbeat.json                             how far the WAL archive reaches
    .encryption.json                                        the repository holds encrypted objects (key ids, no key)
    .partitions_start.json                                  the first partition day, chosen once (partitions_start.py)
    .locks/<lock name, '/' as '__'>.lock                    one lock per partition being written
    <folder>/.<name>.tmp-<hex>                              an unfinished write (local backend; `temp_target`)

An artifact may have several parts (Kafka's `topic_export/<topic>`); a system, a day and a
backup_id never do. A backup key is therefore read from both ends: the system is the first
part, the backup_id (`YYYYMMDDTHHMMSSZ-` and 6 hex digits) the last, the day the one before
it, and the artifact everything in between. A topic that looks like a date cannot confuse it.
Names that start with '.' belong to the store (locks, temporary files, the encryption marker)
and are never listed, so no part of a reference may start with one.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from auction_backup_pipelines.errors import ConfigurationError

__all__ = [
    "BACKUP_ID",
    "CATALOG_AREA",
    "ENCRYPTION_MARKER",
    "PARTITIONS_START_RECORD",
    "LOCKS",
    "MANIFEST",
    "VERDICTS_AREA",
    "RESTORES_AREA",
    "PIN",
    "TEMP_GLOB",
    "WAL_AREA",
    "WAL_HEARTBEAT",
    "WAL_HISTORY",
    "WAL_SEGMENT",
    "BackupRef",
    "PartitionRef",
    "artifact_from_asset_path",
    "artifact_key",
    "asset_path",
    "backups_prefix",
    "guarding_partition",
    "is_in_wal_area",
    "is_store_key",
    "temp_target",
    "catalog_prefix",
    "is_hidden",
    "is_manifest_key",
    "is_wal_record_key",
    "lock_key",
    "new_backup_id",
    "parse_catalog_key",
    "parse_file_key",
    "parse_pin_key",
    "parse_restore_key",
    "restore_record_key",
    "restores_prefix",
    "parse_verdict_key",
    "parse_wal_key",
    "temp_name",
    "verdicts_prefix",
    "wal_data_key",
    "wal_partial_data_key",
    "wal_record_key",
]

SEP = "/"
MANIFEST = "manifest.json"
PIN = "PINNED"
BACKUP_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}")  # used with fullmatch
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

CATALOG_AREA = "catalog"
CATALOG_SUFFIX = ".json"
VERDICTS_AREA = "verdicts"
RESTORES_AREA = "restores"
WAL_AREA = "postgres/wal"
WAL_HEARTBEAT = "postgres/wal_heartbeat.json"
WAL_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
WAL_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")

LOCKS = ".locks"
TEMP_GLOB = ".*.tmp-*"
PARTITIONS_START_RECORD = ".partitions_start.json"  # hidden like the encryption marker: never listed as a backup
ENCRYPTION_MARKER = ".encryption.json"
"""Plaintext JSON written before a repository's first encrypted object: from then on, a process
without keys refuses to write there (repository/encryption_marker.py). Hidden, so no listing
(retention, gc, offsite) ever takes it for a backup's file."""


# -- parts -----------------------------------------------------------------------------------


def _check_part(what: str, value: object) -> str:
    if not isinstance(value, str) or not value or SEP in value or value.startswith("."):
        raise ConfigurationError(f"invalid {what} {value!r}: expected a non-empty name without '/' that does not start with '.'")
    return value


def _check_artifact(value: object) -> str:
    if not isinstance(value, str) or not value or any(not p or p.startswith(".") for p in value.split(SEP)):
        raise ConfigurationError(
            f"invalid artifact {value!r}: expected one or more '/'-separated names, none empty or starting with '.'"
        )
    return value


def _check_day(value: object) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise ConfigurationError(f"invalid day {value!r}: expected a datetime.date")
    return value


def _day(text: str) -> dt.date | None:
    """The day `text` names in the one form a key uses (YYYY-MM-DD), else None."""
    try:
        return dt.date.fromisoformat(text) if _DAY.fullmatch(text) else None
    except ValueError:  # 2026-13-01
        return None


def new_backup_id(started_at: dt.datetime) -> str:
    """A fresh backup_id: the start time to the second, then 6 random hex digits."""
    return started_at.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


# -- artifacts and asset keys ----------------------------------------------------------------


def artifact_key(system: str, artifact: str) -> str:
    """`<system>/<artifact>`: how retention policies and messages name an artifact."""
    return SEP.join(asset_path(system, artifact))


def asset_path(system: str, artifact: str) -> tuple[str, ...]:
    """The Dagster asset key path of an artifact's backups, e.g. ("kafka", "topic_export", "bid-events")."""
    return (_check_part("system", system), *_check_artifact(artifact).split(SEP))


def artifact_from_asset_path(path: Sequence[str]) -> tuple[str, str]:
    """(system, artifact) of an asset key path: the inverse of `asset_path`."""
    if len(path) < 2:
        raise ConfigurationError(f"asset key path {list(path)!r} names no artifact (expected [system, artifact, ...])")
    system, artifact = path[0], SEP.join(path[1:])
    asset_path(system, artifact)  # validates
    return system, artifact


# -- backups and pins ------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionRef:
    """One day of one artifact: the folder of its backups, its pin and the name of its lock."""

    system: str
    artifact: str
    day: dt.date

    def __post_init__(self) -> None:
        _check_part("system", self.system)
        _check_artifact(self.artifact)
        _check_day(self.day)

    @property
    def key(self) -> str:
        """`<system>/<artifact>/<day>`."""
        return SEP.join((self.system, self.artifact, self.day.isoformat()))

    def __str__(self) -> str:
        return self.key

    @property
    def pin_key(self) -> str:
        return self.key + SEP + PIN

    @property
    def lock_name(self) -> str:
        """The name passed to `Backend.lock` by whoever writes backups of this day (see `lock_key`)."""
        return self.key

    @property
    def asset_path(self) -> tuple[str, ...]:
        return asset_path(self.system, self.artifact)

    def backup(self, backup_id: str) -> BackupRef:
        return BackupRef(self.system, self.artifact, self.day, backup_id)


@dataclass(frozen=True)
class BackupRef:
    """One published backup: `<system>/<artifact>/<day>/<backup_id>` (its key, and its retention key)."""

    system: str
    artifact: str
    day: dt.date
    backup_id: str

    def __post_init__(self) -> None:
        _check_part("system", self.system)
        _check_artifact(self.artifact)
        _check_day(self.day)
        if not isinstance(self.backup_id, str) or not BACKUP_ID.fullmatch(self.backup_id):
            raise ConfigurationError(f"invalid backup_id {self.backup_id!r}: expected YYYYMMDDTHHMMSSZ-xxxxxx (6 hex digits)")

    @classmethod
    def parse(cls, text: str) -> BackupRef:
        """The reference a backup key names; ConfigurationError when `text` is not one."""
        if not isinstance(text, str):
            raise ConfigurationError(f"not a backup key: {text!r} (expected <system>/<artifact>/<YYYY-MM-DD>/<backup_id>)")
        parts = text.split(SEP)
        if len(parts) < 4:
            raise ConfigurationError(f"not a backup key: {text!r} (expected <system>/<artifact>/<YYYY-MM-DD>/<backup_id>)")
        day = _day(parts[-2])
        if day is None:
            raise ConfigurationError(f"not a backup key: {text!r}: {parts[-2]!r} is not a day (expected YYYY-MM-DD)")
        try:
            return cls(parts[0], SEP.join(parts[1:-2]), day, parts[-1])
        except ConfigurationError as exc:
            raise ConfigurationError(f"not a backup key: {text!r}: {exc}") from None

    @classmethod
    def new(cls, system: str, artifact: str, day: dt.date, started_at: dt.datetime) -> BackupRef:
        """A reference with a fresh backup_id for a backup that starts now."""
        return cls(system, artifact, day, new_backup_id(started_at))

    @property
    def key(self) -> str:
        """`<system>/<artifact>/<day>/<backup_id>`: the one format of a backup key."""
        return SEP.join((self.system, self.artifact, self.day.isoformat(), self.backup_id))

    def __str__(self) -> str:
        return self.key

    @property
    def partition_ref(self) -> PartitionRef:
        return PartitionRef(self.system, self.artifact, self.day)

    @property
    def asset_path(self) -> tuple[str, ...]:
        return asset_path(self.system, self.artifact)

    @property
    def manifest_key(self) -> str:
        return self.key + SEP + MANIFEST

    def file_key(self, stored_name: str) -> str:
        """The key of one stored file of this backup (`stored_name` includes its compression suffix)."""
        return self.key + SEP + stored_name

    @property
    def catalog_key(self) -> str:
        """`catalog/<system>/<artifact>/<day>/<backup_id>.json`: this backup's catalog entry."""
        return CATALOG_AREA + SEP + self.key + CATALOG_SUFFIX

    @property
    def verdict_key(self) -> str:
        """`verdicts/<system>/<artifact>/<day>/<backup_id>.json`: the latest restore verification of this backup."""
        return VERDICTS_AREA + SEP + self.key + CATALOG_SUFFIX

    def owns(self, key: str) -> bool:
        """Whether `key` lies inside this backup's folder (a file or the manifest)."""
        return key.startswith(self.key + SEP)


def backups_prefix(system: str | None = None, artifact: str | None = None, day: dt.date | None = None) -> str:
    """The listing prefix of every backup, of a system's, an artifact's or one day's ('' = all)."""
    if system is None:
        if artifact is not None or day is not None:
            raise ConfigurationError("an artifact or a day to list needs a system")
        return ""
    if artifact is None:
        if day is not None:
            raise ConfigurationError("a day to list needs an artifact")
        return _check_part("system", system) + SEP
    if day is None:
        return artifact_key(system, artifact) + SEP
    return PartitionRef(system, artifact, day).key + SEP


def catalog_prefix(system: str | None = None, artifact: str | None = None) -> str:
    """The listing prefix of the catalog's entries (all, a system's or an artifact's).

    A catalog key can never pass for a backup's file: read from its end, the folder of an entry
    ends with a day, where a backup folder ends with a backup_id (see `parse_file_key`).
    """
    return CATALOG_AREA + SEP + backups_prefix(system, artifact)


def verdicts_prefix(system: str | None = None, artifact: str | None = None) -> str:
    """The listing prefix of the restore verdicts (all, a system's or an artifact's); like a
    catalog key, a verdict key can never pass for a backup's file."""
    return VERDICTS_AREA + SEP + backups_prefix(system, artifact)


def parse_verdict_key(key: str) -> BackupRef | None:
    """The backup a verdict's key names, or None when `key` is not one."""
    head, sep, rest = key.partition(SEP)
    if head != VERDICTS_AREA or not sep or not rest.endswith(CATALOG_SUFFIX):
        return None
    try:
        return BackupRef.parse(rest.removesuffix(CATALOG_SUFFIX))
    except ConfigurationError:
        return None


def restore_record_key(ref: BackupRef, restore_id: str) -> str:
    """`restores/<system>/<artifact>/<day>/<restore_id>.json`; a restore_id has a backup_id's form."""
    return SEP.join((RESTORES_AREA, ref.partition_ref.backup(restore_id).key + CATALOG_SUFFIX))


def restores_prefix(system: str | None = None, artifact: str | None = None) -> str:
    """The listing prefix of the restore records; like a catalog key, never a backup's file."""
    return RESTORES_AREA + SEP + backups_prefix(system, artifact)


def parse_restore_key(key: str) -> tuple[PartitionRef, str] | None:
    """(partition, restore_id) of a restore record's key, or None when `key` is not one."""
    head, sep, rest = key.partition(SEP)
    if head != RESTORES_AREA or not sep or not rest.endswith(CATALOG_SUFFIX):
        return None
    try:  # a restore id has a backup_id's form, so the key reads like a backup's
        ref = BackupRef.parse(rest.removesuffix(CATALOG_SUFFIX))
    except ConfigurationError:
        return None
    return ref.partition_ref, ref.backup_id


def parse_catalog_key(key: str) -> BackupRef | None:
    """The backup a catalog entry's key names, or None when `key` is not one."""
    head, sep, rest = key.partition(SEP)
    if head != CATALOG_AREA or not sep or not rest.endswith(CATALOG_SUFFIX):
        return None
    try:
        return BackupRef.parse(rest.removesuffix(CATALOG_SUFFIX))
    except ConfigurationError:
        return None


def is_manifest_key(key: str) -> bool:
    return key.endswith(SEP + MANIFEST)


def parse_file_key(key: str) -> tuple[BackupRef, str] | None:
    """(backup, stored name) for a key inside a backup's folder (manifest included), else None."""
    head, sep, name = key.rpartition(SEP)
    if not sep or not name:
        return None
    try:
        return BackupRef.parse(head), name
    except ConfigurationError:
        return None


def parse_pin_key(key: str) -> PartitionRef | None:
    """The day a pin key pins, or None when `key` is not a pin."""
    parts = key.split(SEP)
    day = _day(parts[-2]) if len(parts) >= 4 and parts[-1] == PIN else None
    if day is None:
        return None
    try:
        return PartitionRef(parts[0], SEP.join(parts[1:-2]), day)
    except ConfigurationError:
        return None


# -- the WAL archive -------------------------------------------------------------------------


def _wal_base(name: str) -> str:
    if WAL_HISTORY.match(name):
        return f"{WAL_AREA}/history/{name}"
    core = name.removesuffix(".partial")
    if not WAL_SEGMENT.match(core):
        raise ConfigurationError(f"not a WAL file name: {name!r}")
    return f"{WAL_AREA}/{core[:8]}/{name}"


def wal_data_key(name: str) -> str:
    """Where the archive keeps a WAL file's bytes (zstd): segment, `.partial` or timeline history."""
    return _wal_base(name) + ".zst"


def wal_partial_data_key(name: str, version: str) -> str:
    """Where one shipped version of a `.partial` segment keeps its bytes: `<segment>.partial.<version>.zst`.

    A `.partial` is shipped again and again; each version gets a key of its own and the record,
    rewritten last, names it (postgres/wal_archive.py), so a crash between the two writes leaves
    the previous data and record matching instead of new bytes under an old record."""
    if not name.endswith(".partial") or not re.fullmatch(r"[0-9a-f]{12}", version):
        raise ConfigurationError(f"not a versioned partial WAL key: {name!r}, {version!r}")
    return _wal_base(name) + f".{version}.zst"


def wal_record_key(name: str) -> str:
    """Where the archive keeps a WAL file's record (JSON), written after its data."""
    return _wal_base(name) + ".json"


def is_wal_record_key(key: str) -> bool:
    return key.startswith(WAL_AREA + SEP) and key.endswith(".json")


def parse_wal_key(key: str) -> str | None:
    """The WAL file name (segment, `.partial` or history) a data or record key of the archive
    holds, or None when `key` is neither (the heartbeat, anything else)."""
    if not key.startswith(WAL_AREA + SEP):
        return None
    versioned = re.fullmatch(r"(.*\.partial)\.[0-9a-f]{12}\.zst", key.rpartition(SEP)[2])
    if versioned is not None:  # one version of a `.partial`'s bytes (wal_partial_data_key)
        name = versioned.group(1)
        try:
            return name if wal_partial_data_key(name, key[-16:-4]) == key else None
        except ConfigurationError:
            return None
    for suffix in (".zst", ".json"):
        if key.endswith(suffix):
            name = key[: -len(suffix)].rpartition(SEP)[2]
            try:
                return name if _wal_base(name) + suffix == key else None
            except ConfigurationError:
                return None
    return None


# -- the store's own names -------------------------------------------------------------------


def lock_key(name: str) -> str:
    """The key (or, locally, the path under the root) of the lock called `name`."""
    return f"{LOCKS}/{name.replace(SEP, '__')}.lock"


def temp_name(name: str) -> str:
    """A unique, hidden name for a file being written beside its final name `name` (matches TEMP_GLOB)."""
    return f".{name}.tmp-{uuid.uuid4().hex}"


def is_hidden(key: str) -> bool:
    """Keys with a part that starts with '.' are the store's own (locks, temp files): never listed."""
    return any(p.startswith(".") for p in key.split(SEP))


_TEMP = re.compile(r"\.(.+)\.tmp-[0-9a-f]{32}")  # what temp_name makes


def temp_target(key: str) -> str | None:
    """The key a temporary file (`<folder>/.<name>.tmp-<hex>`) was being written for, else None."""
    folder, sep, name = key.rpartition(SEP)
    m = _TEMP.fullmatch(name)
    if m is None:
        return None
    return folder + sep + m.group(1)


def is_in_wal_area(key: str) -> bool:
    """Whether `key` lies in the WAL archive's area (segments, `.partial`, records, history, heartbeat)."""
    return key.startswith(WAL_AREA + SEP) or key == WAL_HEARTBEAT


def is_store_key(key: str) -> bool:
    """The store's own objects: its locks and the encryption marker (never a leftover, never a backup)."""
    return key.startswith(LOCKS + SEP) or key == ENCRYPTION_MARKER


def guarding_partition(key: str) -> PartitionRef | None:
    """The partition whose lock is held while `key` is written: a backup's file or manifest, the
    day's pin, the backup's catalog entry or verdict; None for keys no partition lock guards (WAL)."""
    if (found := parse_file_key(key)) is not None:
        return found[0].partition_ref
    if (pinned := parse_pin_key(key)) is not None:
        return pinned
    ref = parse_catalog_key(key) or parse_verdict_key(key)
    return ref.partition_ref if ref is not None else None

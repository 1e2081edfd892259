"""What crashed or killed runs leave in a repository, listed on both backends, and its removal.

Why a module of its own: a run killed mid-stream (SIGKILL during a dump, a snapshot, an export)
or stopped by a full disk leaves bytes nobody will ever read: the local backend's temporary
files (`.<name>.tmp-<hex>`), backup folders whose files were published but whose manifest never
was, and, on S3, multipart uploads that were started and never completed (invisible, but
billed). This module finds those candidates in one pass over the store, with what the decision
needs (when they were last written, which partition lock guards them and whether a live writer
holds it now), and removes one candidate under that lock after checking again that it is still
a leftover. It decides nothing: policy/leftovers.py does (the safety age), so the CLI's `prune`
and the Dagster cleanup job share one decision.

Never listed, whatever their age: the WAL archive's objects (segments, `.partial` segments,
records, history, heartbeat: they have no manifest by design), pins, catalog entries, verdicts,
the store's locks and its encryption marker. A temporary file in the WAL area is listed: it is
not WAL, only bytes a killed receiver never renamed into a segment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from botocore.exceptions import ClientError

from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import MANIFEST, BackupRef
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import Backend, LocalBackend, LockedError, StorageError, WrappingBackend

__all__ = [
    "INCOMPLETE_BACKUP",
    "TEMP_FILE",
    "UNFINISHED_UPLOAD",
    "Leftover",
    "bare",
    "find",
    "refresh",
    "remove",
]

TEMP_FILE = "temporary file"
INCOMPLETE_BACKUP = "backup without a manifest"
UNFINISHED_UPLOAD = "unfinished multipart upload"


@dataclass(frozen=True)
class Leftover:
    """One candidate: a temp file, a backup folder without a manifest, or an unfinished upload."""

    kind: str  # TEMP_FILE, INCOMPLETE_BACKUP or UNFINISHED_UPLOAD
    key: str  # the temp file's key; the backup's key (its folder); the upload's object key
    modified: dt.datetime  # the newest write (UTC): a folder's newest file, an upload's start
    size: int  # bytes (an upload: 0, the store does not say without listing its parts)
    lock_name: str | None  # the partition lock that guards it; None when none does (WAL area)
    locked: bool  # a live writer holds that lock now
    keys: tuple[str, ...] = ()  # INCOMPLETE_BACKUP: every object in the folder (temp files too)
    upload_id: str = ""
    catalogued: bool = False  # INCOMPLETE_BACKUP: the catalog records it, so its manifest vanished
    where: str = field(default="", compare=False)  # the store, for messages

    @property
    def id(self) -> str:
        """Names this candidate in a cleanup request; compared whole, never parsed."""
        return f"{self.kind}:{self.key}" + (f"#{self.upload_id}" if self.upload_id else "")


def bare(backend: Backend) -> Backend:
    """The driver under any wrappers (encryption, the fail-closed guard): key names are the same."""
    while isinstance(backend, WrappingBackend):
        backend = backend.inner
    return backend


@dataclass(frozen=True)
class _Object:
    key: str
    size: int
    modified: dt.datetime


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


# -- listing ---------------------------------------------------------------------------------


def _local_objects(b: LocalBackend, prefix: str) -> Iterator[_Object]:
    """Every file under the root, temp files included; the locks folder is skipped."""
    folder = prefix.rpartition("/")[0]  # walk only below the deepest folder the prefix names fully
    for dirpath, dirnames, filenames in os.walk(b.root.joinpath(*folder.split("/")) if folder else b.root):
        rel = Path(dirpath).relative_to(b.root).as_posix()
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != layout.LOCKS]
        for name in filenames:
            key = name if rel == "." else f"{rel}/{name}"
            if not key.startswith(prefix):
                continue
            try:
                st = os.stat(os.path.join(dirpath, name))
            except FileNotFoundError:  # removed while we walked
                continue
            yield _Object(key, st.st_size, _utc(st.st_mtime))


def _s3_objects(b: S3Backend, prefix: str) -> Iterator[_Object]:
    token: dict[str, str] = {}
    while True:
        try:
            page = b.call("list_objects_v2", prefix, Bucket=b.bucket, Prefix=b.prefix + prefix, MaxKeys=b.page_size, **token)
        except ClientError as exc:
            raise b.fail(exc, "listing", prefix) from None
        for obj in page.get("Contents", []):
            yield _Object(obj["Key"][len(b.prefix) :], int(obj["Size"]), obj["LastModified"].astimezone(dt.UTC))
        if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
            return
        token = {"ContinuationToken": page["NextContinuationToken"]}


def _s3_uploads(b: S3Backend, prefix: str) -> Iterator[tuple[str, str, dt.datetime]]:
    """(key, upload id, initiated) of every multipart upload started and not completed."""
    marker: dict[str, str] = {}
    while True:
        try:
            page = b.call("list_multipart_uploads", prefix, Bucket=b.bucket, Prefix=b.prefix + prefix, **marker)
        except ClientError as exc:
            raise b.fail(exc, "listing the unfinished uploads of", prefix) from None
        for up in page.get("Uploads", []):
            yield up["Key"][len(b.prefix) :], up["UploadId"], up["Initiated"].astimezone(dt.UTC)
        if not page.get("IsTruncated"):
            return
        marker = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}


def _local_lock_held(b: LocalBackend, name: str) -> bool:
    """Whether a live process holds the partition lock `name` (an flock is released when its holder dies)."""
    try:
        fd = os.open(b.root / layout.lock_key(name), os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        raise
    finally:
        os.close(fd)  # releases the probe's own flock, if it got one
    return False


def _s3_lock_held(b: S3Backend, name: str) -> bool:
    """Whether the lease `name` is live: present, not released, not expired, its holder not provably dead."""
    found = b.locks.read(layout.lock_key(name))
    return found is not None and b.locks.breakable(found[0]) is None


class _Locks:
    """Answers "is this partition locked?" once per partition and listing."""

    def __init__(self, b: Backend):
        self._b = b
        self._seen: dict[str, bool] = {}

    def held(self, name: str | None) -> bool:
        if name is None:
            return False
        if name not in self._seen:
            b = self._b
            self._seen[name] = _local_lock_held(b, name) if isinstance(b, LocalBackend) else _s3_lock_held(b, name)  # type: ignore[arg-type]
        return self._seen[name]


def _objects(b: Backend, prefix: str) -> Iterator[_Object]:
    if isinstance(b, LocalBackend):
        return _local_objects(b, prefix)
    if isinstance(b, S3Backend):
        return _s3_objects(b, prefix)
    raise StorageError(f"cannot list leftovers in {b.describe()}: unknown kind of store {type(b).__name__}")


def _lock_name(key: str) -> str | None:
    part = layout.guarding_partition(key)
    return part.lock_name if part is not None else None


def find(backend: Backend, prefix: str = "") -> list[Leftover]:
    """Every leftover candidate under `prefix`, from one listing (plus, on S3, one of the uploads)."""
    b = bare(backend)
    where = b.describe()
    locks = _Locks(b)
    found: list[Leftover] = []
    folders: dict[BackupRef, list[_Object]] = {}
    catalogued: set[BackupRef] = set()
    for obj in _objects(b, prefix):
        if layout.is_store_key(obj.key):
            continue
        target = layout.temp_target(obj.key)
        if target is not None:
            name = _lock_name(target)
            found.append(Leftover(TEMP_FILE, obj.key, obj.modified, obj.size, name, locks.held(name), where=where))
            parsed = layout.parse_file_key(target)
        elif layout.is_hidden(obj.key) or layout.is_in_wal_area(obj.key):
            continue  # the store's own names, the WAL archive: never leftovers
        else:
            if (ref := layout.parse_catalog_key(obj.key)) is not None:
                catalogued.add(ref)
            parsed = layout.parse_file_key(obj.key)
        if parsed is not None:
            folders.setdefault(parsed[0], []).append(obj)
    for ref, objs in folders.items():
        names = {o.key.rpartition("/")[2] for o in objs}
        published = [o for o in objs if layout.temp_target(o.key) is None]
        if MANIFEST in names or not published:
            continue  # complete; or only temp files, each listed on its own
        if prefix and ref not in catalogued:  # the listing did not cover the catalog: ask for this entry
            if any(o.key == ref.catalog_key for o in _objects(b, ref.catalog_key)):
                catalogued.add(ref)
        name = ref.partition_ref.lock_name
        found.append(
            Leftover(
                INCOMPLETE_BACKUP,
                ref.key,
                max(o.modified for o in objs),
                sum(o.size for o in objs),
                name,
                locks.held(name),
                keys=tuple(sorted(o.key for o in objs)),
                catalogued=ref in catalogued,
                where=where,
            )
        )
    if isinstance(b, S3Backend):
        for key, upload_id, initiated in _s3_uploads(b, prefix):
            name = _lock_name(key)
            found.append(Leftover(UNFINISHED_UPLOAD, key, initiated, 0, name, locks.held(name), upload_id=upload_id, where=where))
    return sorted(found, key=lambda x: (x.key, x.kind))


def refresh(backend: Backend, leftover: Leftover) -> Leftover | None:
    """The same candidate as the store shows it now (None when it is gone or no longer a leftover)."""
    prefix = leftover.key + "/" if leftover.kind == INCOMPLETE_BACKUP else leftover.key
    for now in find(backend, prefix):
        if now.kind == leftover.kind and now.key == leftover.key and now.upload_id == leftover.upload_id:
            return now
    return None


# -- removing --------------------------------------------------------------------------------


def _abort(b: S3Backend, leftover: Leftover) -> None:
    try:
        b.call(
            "abort_multipart_upload",
            leftover.key,
            Bucket=b.bucket,
            Key=b.object_key(leftover.key),
            UploadId=leftover.upload_id,
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":  # finished or aborted meanwhile
            raise b.fail(exc, "aborting the upload of", leftover.key) from None


@contextlib.contextmanager
def _guarded(b: Backend, name: str | None) -> Iterator[None]:
    if name is None:
        yield
        return
    with b.lock(name):
        yield


def remove(backend: Backend, leftover: Leftover, still: Callable[[Leftover], tuple[bool, str]]) -> tuple[bool, str]:
    """Remove one candidate under its partition lock, if `still(fresh)` says the fresh candidate is
    still to be removed. Returns (removed, why not): a writer holding the lock keeps it (LockedError)."""
    b = bare(backend)
    try:
        with _guarded(b, leftover.lock_name):
            fresh = refresh(b, leftover)
            if fresh is None:
                return False, "already gone"
            # Under the lock we hold, `locked` says nothing about other writers: judge the rest.
            ok, why = still(replace(fresh, locked=False))
            if not ok:
                return False, why
            if fresh.kind == UNFINISHED_UPLOAD:
                _abort(b, fresh)  # type: ignore[arg-type]
            elif fresh.kind == INCOMPLETE_BACKUP:
                b.delete_many(fresh.keys)
            else:
                b.delete(fresh.key)
            return True, ""
    except LockedError:
        return False, f"a writer took the lock of {leftover.lock_name} meanwhile"

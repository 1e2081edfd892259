"""Storage backends: where the repository's bytes live.

A backend stores named objects ("keys", '/'-separated) and knows nothing about backups.
The repository (repository.py) builds atomic publication on top of one rule every backend
keeps: an object written through `writer()` is either fully durable under its key when the
context exits cleanly, or absent. That rule holds for a local directory (temp file, fsync,
rename, fsync of the folder) and for an S3-compatible store (a multipart upload that is
completed only at the end), so callers never depend on which backend they have.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from auction_backup_pipelines.errors import BackupError, VerificationError
from auction_backup_pipelines.repository import layout

DIR_MODE = 0o700
FILE_MODE = 0o600


class StorageError(BackupError):
    """A backend could not do what was asked; the message names the object and the cause."""


class LockedError(StorageError):
    """Another writer holds the lock on the same backup partition."""


# Defined here, below every layer that detects them (the repository, its streams, the encryption
# layer), so that each imports them from this one place.
class RepositoryError(StorageError):
    """Base class of the repository's errors."""


class IntegrityError(RepositoryError, VerificationError):
    """Stored bytes do not match what the manifest recorded (corrupt, truncated or tampered)."""


FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""What a write to a full disk (or a used-up quota) fails with."""


class RepositoryFullError(RepositoryError, OSError):
    """The repository's file system has no room left (ENOSPC) or its quota is used up (EDQUOT).

    Also an OSError (errno ENOSPC/EDQUOT), so code that waits out an unavailable archive by
    catching OSError (the WAL receiver retries shipping) keeps doing so; its message is one line.
    """


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    version: str = ""
    """Changes whenever the object is written again (the S3 ETag, the local file's mtime in ns);
    empty when the store does not say. Lets a listing reuse what it parsed before (manifests)."""


class Backend(ABC):
    """The operations the repository needs from a store of named objects."""

    @abstractmethod
    def writer(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """Write `key`; visible and durable only when the context exits without an exception."""

    @abstractmethod
    def reader(self, key: str) -> BinaryIO:
        """Open `key` for streaming reads; raises FileNotFoundError when absent."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every published object whose key starts with `prefix` (temp objects are never listed)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing an absent key is not an error (deletes are idempotent)."""

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove several keys, in the given order (a store with batch deletes overrides this)."""
        for key in keys:
            self.delete(key)

    @abstractmethod
    def remove_temporaries(self, prefix: str = "") -> builtins.list[str]:
        """Remove every unfinished write now, live or not; returns what was removed. For tests and
        teardown only: the life cycle uses repository/leftovers.py (safety age, partition locks)."""

    @abstractmethod
    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """An exclusive, non-blocking lock; raises LockedError when someone else holds it."""

    @abstractmethod
    def describe(self) -> str:
        """A human-readable location for messages (never contains credentials)."""


class WrappingBackend(Backend):
    """A backend around another one: every operation goes to `inner` unless a subclass changes it.

    Wrappers (encryption, the fail-closed guard) add behaviour on top of any driver without
    touching it, as restic's backend wrappers do; each overrides only what it changes.
    """

    def __init__(self, inner: Backend):
        self.inner = inner

    def writer(self, key: str) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.inner.writer(key)

    def reader(self, key: str) -> BinaryIO:
        return self.inner.reader(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self.inner.delete_many(keys)

    def remove_temporaries(self, prefix: str = "") -> builtins.list[str]:
        return self.inner.remove_temporaries(prefix)

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.inner.lock(name)

    def describe(self) -> str:
        return self.inner.describe()


class TempFile(io.RawIOBase):
    """The buffered file the local writer hands out, which can drop its buffer without writing it.

    A BufferedWriter flushes again on close: after a write failed on a full disk, that flush
    fails too and the error path never reached the unlink, so a 50 MB temporary file stayed and
    every later backup on that disk failed as well. `discard` closes without writing anything.
    """

    def __init__(self, fd: int, buffer_size: int = 1 << 20):
        super().__init__()
        self._fd = fd
        self._buf = bytearray()
        self._limit = buffer_size
        self.write_error: OSError | None = None  # why writing to the disk failed, if it did

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def write(self, b) -> int:
        if self.closed:
            raise ValueError("write to a closed temporary file")
        n = memoryview(b).nbytes
        self._buf += b
        if len(self._buf) >= self._limit:
            self._drain()
        return n

    def _drain(self) -> None:
        done = 0
        try:
            with memoryview(self._buf) as view:
                while done < len(view):
                    done += os.write(self._fd, view[done:])
        except OSError as exc:
            self.write_error = exc
            raise
        finally:
            del self._buf[:done]

    def sync(self) -> None:
        """Flush and fsync: durable on disk (a file system may report a full disk only here)."""
        self.flush()
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.write_error = exc
            raise

    def flush(self) -> None:
        if not self.closed:
            self._drain()

    def close(self) -> None:
        """Write what is buffered, then close (the success path)."""
        if not self.closed:
            try:
                self._drain()
            finally:
                self.discard()

    def discard(self) -> None:
        """Close without writing the buffer (the error path): never fails, never writes."""
        if not self.closed:
            self._buf.clear()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            super().close()  # IOBase.close calls flush(), a no-op on an empty buffer


class LocalBackend(Backend):
    """A directory on a local or mounted file system.

    Folders are created 0700 and files 0600: backups hold the whole database. A root that
    other users may write to is refused, since anyone could then plant a manifest.
    """

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).absolute()
        self._ensure_dir(self.root)
        mode = self.root.stat().st_mode
        if mode & stat.S_IWOTH:
            raise StorageError(
                f"backup repository {self.root} is world-writable (mode {stat.S_IMODE(mode):o}); "
                f"refusing to use it: run `chmod o-w {self.root}`"
            )

    def describe(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StorageError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    @staticmethod
    def _ensure_dir(path: Path) -> None:
        # Each missing level is created 0700 (mkdir(parents=True) would give the parents the
        # umask's mode); an operator's existing folder keeps its permissions.
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=DIR_MODE)
            except FileExistsError:
                continue
            folder.chmod(DIR_MODE)

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        # A dot-prefixed temp name is never listed, so a crash leaves nothing that looks published.
        tmp = final.with_name(layout.temp_name(final.name))
        try:
            self._ensure_dir(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError as exc:
            full = self.full_error(exc)
            if full is None:
                raise
            raise full from None
        f = TempFile(fd)
        try:
            yield f  # type: ignore[misc]
            f.sync()
            f.close()
            os.replace(tmp, final)
            self._fsync_dir(final.parent)
        except BaseException as exc:
            f.discard()  # no second flush: on a full disk it would fail again before the unlink
            # Unlinks the temp file and prunes the folders it leaves empty (an aborted backup's).
            self.delete(tmp.relative_to(self.root).as_posix())
            # Only a full disk under this very file is reported as one (a capture's own scratch
            # space filling up is not the repository's), whatever a caller wrapped our error in.
            full = self.full_error(f.write_error) if f.write_error is not None and isinstance(exc, Exception) else None
            if full is not None and full is not exc:
                raise full from None
            raise

    def full_error(self, exc: BaseException | None) -> RepositoryFullError | None:
        """The one-line error for a write that failed because the disk or the quota is full, else None."""
        if isinstance(exc, RepositoryFullError):
            return exc
        if not isinstance(exc, OSError) or exc.errno not in FULL_ERRNOS:
            return None
        try:
            st = os.statvfs(self.root)
            free = f"{st.f_bavail * st.f_frsize} bytes free"
        except OSError:
            free = "free space unknown"
        what = "is full" if exc.errno == errno.ENOSPC else "is over its disk quota"
        err = RepositoryFullError(f"the repository at {self.root} {what}: {free}, the backup needed more; nothing was published")
        err.errno = exc.errno
        return err

    def reader(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb", buffering=1 << 20)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only below the deepest folder the prefix names fully.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(folder) if folder else self.root
        if not start.is_dir():
            return
        yield from self._walk(str(start), f"{folder}/" if folder else "", prefix)

    def _walk(self, path: str, key_prefix: str, prefix: str) -> Iterator[ObjectInfo]:
        # os.scandir with plain string keys, not os.walk with pathlib: a repository holds thousands
        # of WAL objects and `check`/`info` list it several times, where pathlib's parsing cost more
        # than the stat calls themselves. Order as before: a folder's files, then its sub-folders.
        try:
            with os.scandir(path) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):  # removed while we walked
            return
        folders = []
        for entry in entries:
            key = key_prefix + entry.name
            if entry.is_dir():
                if not entry.is_symlink():  # os.walk's default: a linked folder is not followed
                    folders.append((entry.path, key + "/"))
                continue
            if key.startswith(prefix):
                try:
                    st = entry.stat()
                except FileNotFoundError:  # deleted while we walked
                    continue
                yield ObjectInfo(key, st.st_size, str(st.st_mtime_ns))
        for sub, sub_prefix in folders:
            if sub_prefix.startswith(prefix) or prefix.startswith(sub_prefix):
                yield from self._walk(sub, sub_prefix, prefix)

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Prune folders left empty, up to the root, so deleted partitions leave no husk.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    break
                raise
            parent = parent.parent

    def remove_temporaries(self, prefix: str = "") -> builtins.list[str]:
        start = self._path(prefix) if prefix.strip("/") else self.root
        removed = []
        for tmp in list(start.rglob(layout.TEMP_GLOB)) if start.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp.relative_to(self.root).as_posix())
                self.delete(tmp.relative_to(self.root).as_posix())  # prunes empty folders
        return removed

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        path = self._path(layout.lock_key(name))
        self._ensure_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"another backup of {name} is running (lock {path} is held)") from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

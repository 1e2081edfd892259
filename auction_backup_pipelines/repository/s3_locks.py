"""Partition locks on an S3-compatible store: short leases, renewed while held, taken and given
back with conditional requests only. Split from s3.py, which keeps the backend.

Why leases: a lock object left by a killed writer used to block its partition for its whole
expiry (12 h), and a writer slower than that expiry lost its lock unnoticed. Now:

* A lock is created with `PUT If-None-Match: *`: of several creators, the store lets one win.
  A 412 is not always someone else: when a retried PUT had already succeeded (its answer was
  lost), the lock holds our own token, and then we hold it.
* It expires `ttl` seconds (default 5 min) after its last renewal; a background thread renews
  it every `ttl / 3` with `PUT If-Match: <its ETag>`, so a live writer keeps it and a dead
  writer's lock frees its partition within minutes. A renewal that finds another token (or no
  lock) marks the lease lost; so does a lease not renewed for `ttl` (the store was unreachable
  meanwhile, someone may have broken it). The backend checks the lease of the calling thread
  before it publishes anything (`check_held`): a writer whose lock was taken fails with
  `LockLostError` instead of publishing beside the new holder.
* A lock that is expired (by its writer's clock plus `CLOCK_SKEW`), released, unreadable, or
  whose holder is provably dead on this host (same host name, boot id and pid namespace, and
  that pid no longer runs, or runs a process started later) is taken over at once with
  `PUT If-Match: <the ETag we read>`: if anyone changed it in between, the takeover fails with
  a 412 and we look again. The takeover is logged, with the reason.
* Release is `DELETE If-Match: <our ETag>` where the store honours it (S3Proxy 4 and AWS S3 do),
  so a lock someone took over after our lease lapsed is never removed. Where it does not, an
  unconditional DELETE could remove someone else's lock, so the lock is instead overwritten,
  conditionally, by a "released" record that the next writer takes over; the small object stays.
* Once per backend instance, at its first lock, the store is probed: a second
  `If-None-Match: *` PUT of an existing object and an `If-Match` PUT with a wrong ETag must both
  give 412. A store that ignores either would let two writers in at once, so locking then
  fails with one line, unless the backend was created with `advisory_locks=True` (a read, then
  a plain write: racy, acceptable only where a single writer runs).

What no lock can do on S3: fence a write in flight. A writer paused (or cut off) for longer
than its lease between `check_held` and its last request can still publish after a breaker
took over; `check_held` renews first when half the lease is spent, to keep that window small.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.s3_streams import error_code, http_status
from auction_backup_pipelines.repository.storage import LockedError, StorageError

if TYPE_CHECKING:
    from auction_backup_pipelines.repository.s3 import S3Backend

log = logging.getLogger(__name__)

LOCK_TTL = 300.0  # seconds a lock outlives its last renewal
CLOCK_SKEW = 30.0  # how far the clocks of two writers may disagree; an expiry is trusted only past it
_PRECONDITION = {"PreconditionFailed", "ConditionalRequestConflict"}
_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest"}
_ABSENT = {"NoSuchKey", "NotFound", "404"}

# Tokens of the leases this process holds now, whatever backend instance took them: a lock of
# this very pid whose token is not here was left by a lease that ended without releasing it.
_LIVE: set[str] = set()


class LockLostError(LockedError):
    """The lease ran out or another writer took the lock over: nothing more may be published."""


class ConditionalWritesError(StorageError, RefusedError):
    """The store ignores conditional writes, so its locks could not keep two writers apart."""


def clock() -> float:
    """Seconds that keep counting while the machine sleeps (a lease expires then too)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic()


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot), or None when no live process has it."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[0] in ("Z", "X"):  # a zombie has finished running; only its exit status is left
        return None
    return int(fields[19])


def identity() -> dict[str, Any]:
    """Who holds a lock, precisely enough for another process on this host to tell that it died."""
    pid = os.getpid()
    ns = ""
    with contextlib.suppress(OSError):
        ns = os.readlink("/proc/self/ns/pid")
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "started": process_start(pid),
        "boot_id": _read("/proc/sys/kernel/random/boot_id"),
        "pid_ns": ns,  # two containers may share a host name, never a pid namespace
    }


def holder_gone(doc: dict[str, Any]) -> str | None:
    """Why the holder of the lock `doc` is provably dead, or None when that cannot be shown."""
    me = identity()
    if doc.get("host") != me["host"] or not me["boot_id"] or not doc.get("boot_id"):
        return None  # another host, or a lock without the facts needed to tell
    who = f"{doc['host']} pid {doc.get('pid')}"
    if doc["boot_id"] != me["boot_id"]:
        return f"{who} ran before this host rebooted"
    if doc.get("pid_ns") != me["pid_ns"] or not isinstance(doc.get("pid"), int):
        return None
    pid = doc["pid"]
    if pid == me["pid"]:
        return None if doc.get("token") in _LIVE else f"{who} (this process) no longer holds it"
    started = process_start(pid)
    if started is None:
        return f"{who} is not running on this host"
    if doc.get("started") is not None and started != doc["started"]:
        return f"{who} has exited (that pid now belongs to a process started later)"
    return None


def _precondition(exc: ClientError) -> bool:
    return error_code(exc) in _PRECONDITION or http_status(exc) in (409, 412)


def _absent(exc: ClientError) -> bool:
    return error_code(exc) in _ABSENT or http_status(exc) == 404


@dataclass
class Support:
    """What the store's probe found."""

    conditional: bool  # If-None-Match and If-Match on PUT are honoured
    conditional_delete: bool  # If-Match on DELETE is honoured


class Lease:
    """One lock held: its token, the ETag of its current version, and the thread that renews it."""

    def __init__(self, locks: S3Locks, name: str, key: str):
        self.locks = locks
        self.name = name
        self.key = key
        self.token = uuid.uuid4().hex
        self.ttl = locks.ttl()
        self.every = locks.renew_every or self.ttl / 3
        self.etag = ""
        self.valid_until = 0.0
        self.lost: str | None = None
        self.broke: str | None = None  # why a previous holder's lock was taken over, if it was
        self.acquired_at = dt.datetime.now(dt.UTC)
        self.renewals = 0
        self.mutex = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self.owner = threading.get_ident()

    def body(self, released: bool = False) -> bytes:
        now = dt.datetime.now(dt.UTC)
        doc = {"token": self.token, **identity()}
        doc |= {"acquired_at": self.acquired_at.isoformat(), "renewed_at": now.isoformat(), "ttl": self.ttl}
        doc["expires_at"] = (now if released else now + dt.timedelta(seconds=self.ttl)).isoformat()
        if released:
            doc["released"] = True
        return json.dumps(doc).encode()

    def start(self, etag: str, started: float) -> None:
        self.etag, self.valid_until = etag, started + self.ttl
        self.thread = threading.Thread(target=self._run, name=f"s3-lease {self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(self.every) and self.lost is None:
            try:
                self.renew()
            except (StorageError, BotoCoreError, ClientError) as exc:  # the next tick tries again
                log.debug("renewing lock %s failed: %s", self.name, exc)

    def renew(self) -> None:
        """Extend the lease by `ttl` (PUT If-Match); marks it lost if someone else has the lock."""
        with self.mutex:
            if self.lost is not None or self.stopped.is_set():
                return
            for _ in range(2):
                started = clock()
                try:
                    self.etag = self.locks.put(self.key, self.body(), IfMatch=self.etag)
                except ClientError as exc:
                    if not (_precondition(exc) or _absent(exc)):
                        raise self.locks.backend.fail(exc, "renewing the lock", self.key) from None
                    found = self.locks.read(self.key)
                    if found is None or found[0].get("token") != self.token:
                        self.lost = f"now held by {describe_holder(found[0])}" if found else "removed by someone else"
                        return
                    # Still ours: an earlier PUT whose answer was lost changed the ETag. Its
                    # expiry is not known here, so renew again with the ETag just read.
                    self.etag = found[1]
                    continue
                self.valid_until = started + self.ttl
                self.renewals += 1
                return

    def check(self) -> None:
        """Raise LockLostError unless the lease is ours and fresh (renewed now if half spent)."""
        if self.lost is None and self.valid_until - clock() < self.ttl / 2:
            with contextlib.suppress(StorageError, BotoCoreError):
                self.renew()
        if self.lost is None and clock() >= self.valid_until:
            self.lost = f"not renewed for {self.ttl:g} s (the store was unreachable); another writer may have taken it"
        if self.lost is not None:
            raise LockLostError(
                f"lost the lock of {self.name} ({self.locks.backend.where(self.key)}): {self.lost}; nothing more is published"
            )

    def stop(self) -> None:
        self.stopped.set()
        with self.mutex:  # a renewal in flight finishes first, so self.etag is final
            pass
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=self.every + 5)
        _LIVE.discard(self.token)


def describe_holder(doc: dict[str, Any]) -> str:
    return f"{doc.get('host', '?')} pid {doc.get('pid', '?')} since {doc.get('acquired_at', '?')}, expires {doc.get('expires_at', '?')}"


class S3Locks:
    """The locks of one S3Backend (see the module doc)."""

    def __init__(self, backend: S3Backend, *, renew_every: float | None = None, advisory: bool = False):
        self.backend = backend
        self.renew_every = renew_every
        self.advisory = advisory
        self.clock_skew = CLOCK_SKEW
        self.support: Support | None = None
        self.probes = 0  # how many times the store was probed (once per instance)
        self._probe_lock = threading.Lock()
        self._held: dict[int, list[Lease]] = {}

    def ttl(self) -> float:
        return float(self.backend.lock_ttl)

    # -- requests ----------------------------------------------------------------------------

    def put(self, key: str, body: bytes, **condition: str) -> str:
        """PUT the lock object; its new ETag. A failed condition raises ClientError (412/409/404)."""
        return str(self.backend.put_bytes(key, body, fenced=False, **condition)["ETag"])

    def read(self, key: str) -> tuple[dict[str, Any], str] | None:
        """The lock's record (empty when unreadable) and its ETag; None when there is no lock."""
        b = self.backend
        try:
            out = b.call("get_object", key, action="reading the lock", Bucket=b.bucket, Key=b.object_key(key))
            raw = out["Body"].read()
        except ClientError as exc:
            if _absent(exc):
                return None
            raise b.fail(exc, "reading the lock", key) from None
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        return (doc if isinstance(doc, dict) else {}), str(out.get("ETag", ""))

    def probe(self) -> Support:
        """Does the store honour conditional writes? Asked once per backend instance."""
        with self._probe_lock:
            if self.support is None:
                self.support = self._probe()
                self.probes += 1
        if not self.support.conditional and not self.advisory:
            raise ConditionalWritesError(
                f"{self.backend.describe()} ignores conditional writes (If-None-Match / If-Match): its locks "
                "could not keep two writers of a partition apart; refusing to write. Use a store that honours "
                "them (AWS S3, MinIO, S3Proxy 2.4+), or create the backend with advisory_locks=True if one writer only ever runs"
            )
        return self.support

    def _probe(self) -> Support:
        b = self.backend
        key = layout.lock_key(f"probe-{uuid.uuid4().hex}")
        etag = self.put(key, b"probe")
        conditional, conditional_delete = True, False
        try:
            for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"' + "0" * 32 + '"'}):
                try:
                    self.put(key, b"probe", **condition)
                    conditional = False  # the write went through: the condition was ignored
                except ClientError as exc:
                    if not _precondition(exc):
                        if error_code(exc) not in _UNSUPPORTED and http_status(exc) != 501:
                            raise b.fail(exc, "probing conditional writes at", key) from None
                        conditional = False
                if not conditional:
                    return Support(False, False)
            try:
                b.call("delete_object", key, Bucket=b.bucket, Key=b.object_key(key), IfMatch='"' + "0" * 32 + '"')
            except ClientError as exc:
                conditional_delete = _precondition(exc)
            return Support(True, conditional_delete)
        finally:
            with contextlib.suppress(StorageError, ClientError, BotoCoreError):
                b.call("delete_object", key, Bucket=b.bucket, Key=b.object_key(key), IfMatch=etag)
            with contextlib.suppress(StorageError, ClientError, BotoCoreError):  # if the store ignored If-Match
                b.call("delete_object", key, Bucket=b.bucket, Key=b.object_key(key))

    # -- taking, checking and giving back ----------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[Lease]:
        support = self.probe()
        key = layout.lock_key(name)
        lease = Lease(self, name, key)
        # Live before its PUT: another thread of this process that reads the new lock between
        # the PUT and start() must not take it for a leftover of this process.
        _LIVE.add(lease.token)
        try:
            self._acquire(lease, support)
        except BaseException:
            _LIVE.discard(lease.token)
            raise
        self._held.setdefault(lease.owner, []).append(lease)
        try:
            yield lease
            lease.check()  # the body published nothing after losing it, but its caller must know
        finally:
            self._held[lease.owner].remove(lease)
            if not self._held[lease.owner]:
                del self._held[lease.owner]
            lease.stop()
            try:
                self._release(lease, support)
            except (StorageError, ClientError, BotoCoreError) as exc:  # it expires within ttl anyway
                log.warning("could not release the lock of %s (it expires within %g s): %s", name, lease.ttl, exc)

    def held(self) -> list[Lease]:
        """The leases the calling thread holds now, innermost last."""
        return list(self._held.get(threading.get_ident(), ()))

    def check_held(self) -> None:
        """Before publishing: every lease the calling thread holds is still ours and fresh."""
        for lease in list(self._held.get(threading.get_ident(), ())):
            lease.check()

    def breakable(self, doc: dict[str, Any]) -> str | None:
        """Why the lock `doc` may be taken over now, or None when its holder may still be alive."""
        if not doc.get("token"):
            return "it is unreadable"
        if doc.get("released"):
            return "it was released"
        try:
            expires = dt.datetime.fromisoformat(str(doc.get("expires_at")))
        except ValueError:
            return "its expiry is unreadable"
        if expires + dt.timedelta(seconds=self.clock_skew) < dt.datetime.now(dt.UTC):
            return f"it expired at {doc['expires_at']} ({doc.get('host', '?')} pid {doc.get('pid', '?')} stopped renewing it)"
        return holder_gone(doc)

    def _acquire(self, lease: Lease, support: Support) -> None:
        key = lease.key
        doc: dict[str, Any] = {}
        for _ in range(6):
            started = clock()
            found = self.read(key) if not support.conditional else None
            try:
                if support.conditional or found is None:
                    condition = {"IfNoneMatch": "*"} if support.conditional else {}
                    lease.start(self.put(key, lease.body(), **condition), started)
                    return
            except ClientError as exc:
                if not _precondition(exc):
                    raise self.backend.fail(exc, "locking", key) from None
                found = self.read(key)
            if found is None:
                continue  # released meanwhile: compete again
            doc, etag = found
            if doc.get("token") == lease.token:
                lease.start(etag, started)  # a retried PUT that had succeeded: ours
                return
            why = self.breakable(doc)
            if why is None:
                break
            try:
                condition = {"IfMatch": etag} if support.conditional else {}
                lease.start(self.put(key, lease.body(), **condition), started)
            except ClientError as exc:
                if not (_precondition(exc) or _absent(exc)):
                    raise self.backend.fail(exc, "breaking the lock", key) from None
                continue  # someone changed it since we read it: look again
            lease.broke = why
            log.warning("took over the lock of %s (%s): %s", lease.name, self.backend.where(key), why)
            return
        raise self._held_error(lease.name, key, doc)

    def _release(self, lease: Lease, support: Support) -> None:
        if lease.lost is not None or not lease.etag:
            return  # someone else's now: never remove it
        b, key = self.backend, lease.key
        if not support.conditional:  # advisory: read, then delete (racy, as the module doc says)
            found = self.read(key)
            if found is not None and found[0].get("token") == lease.token:
                b.call("delete_object", key, Bucket=b.bucket, Key=b.object_key(key))
            return
        for _ in range(2):
            try:
                if support.conditional_delete:
                    b.call("delete_object", key, Bucket=b.bucket, Key=b.object_key(key), IfMatch=lease.etag)
                else:
                    # The store ignores If-Match on DELETE (the probe showed it): an unconditional
                    # DELETE could remove a lock someone took over after our lease lapsed, so the
                    # lock is overwritten, conditionally, by a released record instead.
                    self.put(key, lease.body(released=True), IfMatch=lease.etag)
                return
            except ClientError as exc:
                if _absent(exc):
                    return
                if not _precondition(exc):
                    raise b.fail(exc, "releasing the lock", key) from None
            found = self.read(key)  # 412: a renewal whose answer was lost changed the ETag?
            if found is None or found[0].get("token") != lease.token:
                return
            lease.etag = found[1]

    def _held_error(self, name: str, key: str, doc: dict[str, Any]) -> LockedError:
        where = "on another host"
        if doc.get("host") == socket.gethostname():
            where = "its process runs on this host"
            if doc.get("pid") == os.getpid():
                where = "held by this process"
        return LockedError(
            f"another backup of {name} is running (lock {self.backend.where(key)} held by {describe_holder(doc)}; {where})"
        )

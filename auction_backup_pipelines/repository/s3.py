"""An S3-compatible storage backend (AWS S3, MinIO, Ceph RGW, S3Proxy, ...), with boto3.

How it keeps the Backend rule (an object is fully durable under its key, or absent):

* `writer()` buffers `part_size` bytes (8 MiB) at a time and uploads each as a part of a
  multipart upload, so memory stays flat whatever the size. A clean exit completes the
  upload, which is when the object appears, whole; an exception aborts it. Objects smaller
  than one part are sent in a single PUT, also atomic. A process killed midway leaves an
  unfinished upload, invisible to readers and listings; `prune` and the cleanup job abort it
  once older than the safety age (repository/leftovers.py).
* Every PUT and part carries a checksum that the server verifies before it stores anything:
  SHA-256 (`x-amz-checksum-sha256`) by default, Content-MD5 on servers that reject the
  flexible checksums (`checksum="auto"` falls back once and remembers).
* Listing pages through ListObjectsV2; deletes go 1000 keys per DeleteObjects call.
* Retries: botocore's "standard" mode retries throttling, 5xx and connection errors a few
  times (`max_attempts`); on top of that, throttling that outlasts it (SlowDown, 503) is
  retried here with capped exponential backoff and jitter, since a backup should wait out a
  busy store, and an outage (connection refused or reset, timeouts, other 5xx) is retried
  with backoff for `outage_timeout` seconds (30) after its first failure. Then the call fails
  with one line, `StoreUnavailableError`, naming the operation, the object and the endpoint.
  The writer aborts its multipart upload on any failure, and the lock is released if the
  store answers again in time.
* Locks are objects under `.locks/`: short leases (`lock_ttl`, 5 min) renewed by a background
  thread while held, created, taken over and released with conditional requests only, and
  broken at once when their holder is provably dead on this host; a writer whose lease was
  lost publishes nothing more. A store that ignores conditional writes is detected once per
  backend and refused unless `advisory_locks=True`. See s3_locks.py.
* Uploads through `writer()` are paced to `max_bytes_per_s` (OFFSITE_S3_MAX_BYTES_PER_S; 0:
  unlimited) by a token bucket (ratelimit.py), so an offsite copy can be kept from filling the
  link production uses; reads (restores) are not paced.

Credentials come from the arguments or boto3's usual chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, instance roles, ...); they are never kept on this object, and
`describe()` names only the endpoint, bucket and prefix. The local repository's 0600/0700
modes and world-writable check have no S3 equivalent: access is the bucket policy's job
(docs/least-privilege.md lists the actions needed).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import hashlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.utils import parse_timestamp

from auction_backup_pipelines.errors import UnavailableError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.ratelimit import ByteRateLimiter
from auction_backup_pipelines.repository.s3_locks import LOCK_TTL, S3Locks
from auction_backup_pipelines.repository.s3_streams import MultipartUpload, RangeReader, b64, error_code, http_status
from auction_backup_pipelines.repository.storage import Backend, ObjectInfo, StorageError
from auction_backup_pipelines.settings import OffsiteSettings

PART_SIZE = 8 << 20
MIN_PART = 5 << 20  # S3's minimum for every part but the last
DELETE_BATCH = 1000
THROTTLING = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequests",
    "ServiceUnavailable",
    "RequestThrottled",
}
_NO_FLEXIBLE_CHECKSUMS = {"NotImplemented", "InvalidArgument", "InvalidRequest", "XAmzContentSHA256Mismatch"}
OUTAGE_TIMEOUT = 30.0
# What an operator reads for a call that failed (callers may name it more precisely).
_ACTIONS = {
    "put_object": "writing",
    "get_object": "reading",
    "head_object": "reading",
    "delete_object": "deleting",
    "delete_objects": "deleting",
    "list_objects_v2": "listing",
    "list_multipart_uploads": "listing the unfinished uploads of",
    "create_multipart_upload": "starting the upload of",
    "upload_part": "uploading a part of",
    "complete_multipart_upload": "completing the upload of",
    "abort_multipart_upload": "aborting the upload of",
}


class StoreUnavailableError(StorageError, UnavailableError):
    """The store did not answer (or answered 5xx) for longer than the backend's `outage_timeout`."""


def _outage_cause(exc: Exception) -> str | None:
    """Why a call failed, when it looks like an outage worth waiting out; None otherwise."""
    if isinstance(exc, ClientError):
        return (error_code(exc) or str(http_status(exc))) if http_status(exc) >= 500 else None
    if isinstance(exc, SSLError):
        return None  # a certificate problem does not heal by waiting
    if isinstance(exc, EndpointConnectionError):
        return "could not connect"
    if isinstance(exc, ConnectionClosedError):
        return "connection closed"
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    return None


def _timestamp(value: Any) -> dt.datetime:
    """An S3 timestamp as an aware datetime, ISO 8601 ones (every listed object's LastModified)
    by the standard library. botocore's own parser goes through dateutil, which took about a
    third of the CPU of a simulated year of retention on S3 (tests/repository/
    test_simulated_year.py: 124 s before, 108 s after), for a field only the leftover finder
    reads. Anything else (the RFC 1123 dates of headers) goes to botocore's."""
    if isinstance(value, str) and value.endswith("Z"):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value)
    return parse_timestamp(value)


def _botocore_session() -> botocore.session.Session:
    """A botocore session of our own whose responses parse timestamps with `_timestamp`."""
    session = botocore.session.get_session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_timestamp)
    return session


class S3Backend(Backend):
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = PART_SIZE,
        checksum: str = "auto",
        lock_ttl: float = LOCK_TTL,
        lock_renew_every: float | None = None,
        advisory_locks: bool = False,
        max_attempts: int = 3,
        throttle_retries: int = 8,
        backoff: float = 0.5,
        outage_timeout: float = OUTAGE_TIMEOUT,
        addressing_style: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        page_size: int = 1000,
        delete_batch: int = DELETE_BATCH,
        client: Any = None,
        max_bytes_per_s: int = 0,
    ):
        if checksum not in ("auto", "sha256", "md5"):
            raise StorageError(f"unknown checksum mode {checksum!r} (auto, sha256 or md5)")
        if lock_ttl <= 0 or (lock_renew_every is not None and not 0 < lock_renew_every < lock_ttl):
            raise StorageError(f"lock_ttl must be positive and lock_renew_every below it (got {lock_ttl}, {lock_renew_every})")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.part_size = max(part_size, MIN_PART)
        self.checksum = checksum
        self.lock_ttl = lock_ttl
        self.locks = S3Locks(self, renew_every=lock_renew_every, advisory=advisory_locks)
        self.throttle_retries = throttle_retries
        self.backoff = backoff
        self.outage_timeout = outage_timeout
        self.page_size = page_size
        self.delete_batch = min(delete_batch, DELETE_BATCH)
        self.limiter = ByteRateLimiter(max_bytes_per_s)  # uploads only (OFFSITE_S3_MAX_BYTES_PER_S)
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Only what the operation requires: botocore >= 1.36 would otherwise add CRC32
            # trailers (aws-chunked bodies) that many S3-compatible servers reject. We send
            # our own SHA-256 / MD5 below.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": addressing_style or ("path" if endpoint_url else "auto")},
            user_agent_extra="auction-backup",
        )
        # The secrets go straight into the client and are not kept here.
        self.client = client or boto3.session.Session(botocore_session=_botocore_session()).client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region or "us-east-1",
            config=config,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
        )

    @classmethod
    def from_settings(cls, settings: OffsiteSettings, **kwargs: Any) -> S3Backend:
        """The offsite bucket (OFFSITE_S3_BUCKET, required), its prefix, endpoint, region and credentials."""
        if not settings.bucket:
            raise StorageError("OFFSITE_S3_BUCKET is not set")
        return cls(
            settings.bucket,
            settings.prefix,
            endpoint_url=settings.endpoint_url or None,
            region=settings.region or None,
            access_key_id=settings.access_key_id or None,
            secret_access_key=settings.secret_access_key or None,
            **({"max_bytes_per_s": settings.max_bytes_per_s} | kwargs),
        )

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            host = parts.hostname or ""
            netloc = f"{host}:{parts.port}" if parts.port else host  # never user:password@
            where += f" at {urlunsplit((parts.scheme, netloc, parts.path, '', ''))}"
        return where

    # -- calls ---------------------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StorageError(f"invalid object key {key!r}")
        return self.prefix + "/".join(parts)

    def where(self, key: str) -> str:
        """An object's address for messages: s3://bucket/key, and the endpoint (never credentials)."""
        return f"s3://{self.bucket}/{self.object_key(key) if key else self.prefix}"

    def call(self, op: str, what: str, *, action: str = "", **kwargs: Any) -> Any:
        """One API call on the object `what`, retried through throttling and outages (module doc).

        Raises ClientError for what the caller decides on (404, 412, access denied...) and
        StoreUnavailableError, one line, when the store stays unreachable past `outage_timeout`."""
        throttled_attempts, outage_attempts, deadline = 0, 0, 0.0
        while True:
            try:
                return getattr(self.client, op)(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                if isinstance(exc, ClientError) and (error_code(exc) in THROTTLING or http_status(exc) in (429, 503)):
                    if throttled_attempts == self.throttle_retries:
                        raise
                    time.sleep(min(30.0, self.backoff * 2**throttled_attempts) * random.uniform(0.5, 1.0))
                    throttled_attempts += 1
                    continue
                cause = _outage_cause(exc)
                if cause is None:
                    if isinstance(exc, ClientError):
                        raise
                    raise self.fail(exc, action or _ACTIONS.get(op, op), what) from None
                now = time.monotonic()
                deadline = deadline or now + self.outage_timeout
                outage_attempts += 1
                if now >= deadline:
                    endpoint = self.describe().partition(" at ")[2]
                    raise StoreUnavailableError(
                        f"{action or _ACTIONS.get(op, op)} {self.where(what)} failed: {cause}; the store"
                        f"{' at ' + endpoint if endpoint else ''} did not recover within {self.outage_timeout:g} s "
                        f"({outage_attempts} attempts)"
                    ) from None
                pause = min(5.0, self.backoff * 2 ** min(outage_attempts - 1, 10)) * random.uniform(0.5, 1.0)
                time.sleep(min(pause, max(deadline - now, 0.0)))

    def fail(self, exc: Exception, action: str, key: str) -> StorageError:
        where = self.where(key)
        if isinstance(exc, ClientError):
            code = error_code(exc)
            hint = {
                "AccessDenied": " (the credentials' policy does not allow it; see docs/least-privilege.md)",
                "NoSuchBucket": " (create the bucket first)",
                "InvalidAccessKeyId": " (unknown access key id)",
                "SignatureDoesNotMatch": " (wrong secret key)",
                "BadDigest": " (the server received different bytes than were sent)",
            }.get(code, "")
            return StorageError(f"{action} {where} failed: {code or http_status(exc)}{hint}")
        return StorageError(f"{action} {where} failed: {type(exc).__name__}: {exc}")

    def _checksum_args(self, data: bytes | memoryview) -> dict[str, str]:
        if self.checksum != "md5":
            return {"ChecksumSHA256": b64(hashlib.sha256(data).digest())}
        return {"ContentMD5": b64(hashlib.md5(data, usedforsecurity=False).digest())}

    def _with_checksum_fallback(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ClientError as exc:
            if self.checksum != "auto" or error_code(exc) not in _NO_FLEXIBLE_CHECKSUMS:
                raise
            self.checksum = "md5"  # this server does not do x-amz-checksum-*: MD5 from now on
            return fn()

    # -- objects ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        upload = MultipartUpload(self, key)
        try:
            yield upload  # type: ignore[misc]
            self.locks.check_held()  # a writer whose lock was taken over publishes nothing
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def put_bytes(self, key: str, data: bytes, *, fenced: bool = True, **extra: Any) -> Any:
        """One PUT (atomic); `extra` adds request fields such as IfMatch. Unless `fenced` is off
        (the lock objects themselves), refused once the calling thread's lock was lost."""
        if fenced:
            self.locks.check_held()
        return self._with_checksum_fallback(
            lambda: self.call(
                "put_object", key, Bucket=self.bucket, Key=self.object_key(key), Body=data, **self._checksum_args(data), **extra
            )
        )

    def reader(self, key: str) -> BinaryIO:
        try:
            head = self.call("get_object", key, Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.object_key(key)}") from None
            raise self.fail(exc, "reading", key) from None
        return RangeReader(self, key, head)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Page by page through call(), so that an outage mid-listing is waited out like any call.
        token: dict[str, str] = {}
        while True:
            try:
                page = self.call(
                    "list_objects_v2", prefix, Bucket=self.bucket, Prefix=self.prefix + prefix, MaxKeys=self.page_size, **token
                )
            except ClientError as exc:
                raise self.fail(exc, "listing", prefix) from None
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                # dot-names are ours (locks), like the local backend's temp files and .locks
                if not layout.is_hidden(key):
                    yield ObjectInfo(key, int(obj["Size"]), str(obj.get("ETag", "")))
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(key)
            if len(batch) == self.delete_batch:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, keys: builtins.list[str]) -> None:
        if len(keys) == 1:  # plain DELETE: cheapest, and idempotent on S3 (204 for an absent key)
            try:
                self.call("delete_object", keys[0], Bucket=self.bucket, Key=self.object_key(keys[0]))
            except ClientError as exc:
                raise self.fail(exc, "deleting", keys[0]) from None
            return
        try:
            out = self.call(
                "delete_objects",
                keys[0],
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.object_key(k)} for k in keys], "Quiet": True},
            )
        except ClientError as exc:
            raise self.fail(exc, "deleting", keys[0]) from None
        errors = [e for e in out.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            e = errors[0]
            raise StorageError(
                f"deleting s3://{self.bucket}/{e.get('Key')} failed: {e.get('Code')} "
                f"({len(errors)} of {len(keys)} keys in the batch not deleted)"
            )

    def remove_temporaries(self, prefix: str = "") -> builtins.list[str]:
        """Abort unfinished multipart uploads (what a killed writer leaves); returns their keys."""
        removed: builtins.list[str] = []
        marker: dict[str, str] = {}
        while True:
            try:
                page = self.call("list_multipart_uploads", prefix, Bucket=self.bucket, Prefix=self.prefix + prefix, **marker)
            except ClientError as exc:
                raise self.fail(exc, "listing the unfinished uploads of", prefix) from None
            for up in page.get("Uploads", []):
                key = up["Key"][len(self.prefix) :]
                with contextlib.suppress(ClientError):  # finished or aborted meanwhile
                    self.call("abort_multipart_upload", key, Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    removed.append(key)
            if not page.get("IsTruncated"):
                return removed
            marker = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    # -- locks -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A lease on `name`, renewed while the block runs (s3_locks.py); LockedError if held."""
        with self.locks.lock(name):
            yield

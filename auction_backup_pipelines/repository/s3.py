"""An S3-compatible storage backend (AWS S3, MinIO, Ceph RGW, S3Proxy, ...), with boto3.

How it keeps the Backend rule (an object is fully durable under its key, or absent):

* `writer()` buffers `part_size` bytes (8 MiB) at a time and uploads each as a part of a
  multipart upload, so memory stays flat whatever the size. A clean exit completes the
  upload, which is when the object appears, whole; an exception aborts it. Objects smaller
  than one part are sent in a single PUT, also atomic. A process killed midway leaves an
  unfinished upload, invisible to readers and listings; `remove_temporaries` aborts those.
* Every PUT and part carries a checksum that the server verifies before it stores anything:
  SHA-256 (`x-amz-checksum-sha256`) by default, Content-MD5 on servers that reject the
  flexible checksums (`checksum="auto"` falls back once and remembers).
* Listing pages through ListObjectsV2; deletes go 1000 keys per DeleteObjects call.
* Retries: botocore's "standard" mode retries throttling, 5xx and connection errors with
  backoff; on top of that, throttling that outlasts it (SlowDown, 503) is retried here with
  capped exponential backoff and jitter, since a backup should wait out a busy store.
* Locks are objects under `.locks/`, created with a conditional PUT (If-None-Match: *): the
  store guarantees that only one creator wins (AWS S3 since 2024, MinIO, S3Proxy 2.4+). A lock
  records when it expires (`lock_ttl`), so one left by a killed process blocks its partition
  only until then. Limitations: a store that ignores If-None-Match makes the lock advisory
  (checked with HEAD first, racy); breaking an expired lock is not atomic either.

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
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.s3_streams import MultipartUpload, RangeReader, b64
from auction_backup_pipelines.repository.storage import Backend, LockedError, ObjectInfo, StorageError
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


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


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
        lock_ttl: float = 12 * 3600,
        max_attempts: int = 6,
        throttle_retries: int = 8,
        backoff: float = 0.5,
        addressing_style: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 120,
        page_size: int = 1000,
        delete_batch: int = DELETE_BATCH,
        client: Any = None,
    ):
        if checksum not in ("auto", "sha256", "md5"):
            raise StorageError(f"unknown checksum mode {checksum!r} (auto, sha256 or md5)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.part_size = max(part_size, MIN_PART)
        self.checksum = checksum
        self.lock_ttl = lock_ttl
        self.throttle_retries = throttle_retries
        self.backoff = backoff
        self.page_size = page_size
        self.delete_batch = min(delete_batch, DELETE_BATCH)
        self.conditional_puts = True
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
        self.client = client or boto3.session.Session().client(
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
            **kwargs,
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

    def call(self, op: str, what: str, **kwargs: Any) -> Any:
        """One API call, throttling retried beyond botocore's own attempts; errors explained."""
        for attempt in range(self.throttle_retries + 1):
            try:
                return getattr(self.client, op)(**kwargs)
            except ClientError as exc:
                throttled = _code(exc) in THROTTLING or _status(exc) in (429, 503)
                if not throttled or attempt == self.throttle_retries:
                    raise
            time.sleep(min(30.0, self.backoff * 2**attempt) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def fail(self, exc: Exception, action: str, key: str) -> StorageError:
        where = f"s3://{self.bucket}/{self.object_key(key) if key else self.prefix}"
        if isinstance(exc, ClientError):
            code = _code(exc)
            hint = {
                "AccessDenied": " (the credentials' policy does not allow it; see docs/least-privilege.md)",
                "NoSuchBucket": " (create the bucket first)",
                "InvalidAccessKeyId": " (unknown access key id)",
                "SignatureDoesNotMatch": " (wrong secret key)",
                "BadDigest": " (the server received different bytes than were sent)",
            }.get(code, "")
            return StorageError(f"{action} {where} failed: {code or _status(exc)}{hint}")
        return StorageError(f"{action} {where} failed: {type(exc).__name__}: {exc}")

    def _checksum_args(self, data: bytes | memoryview) -> dict[str, str]:
        if self.checksum != "md5":
            return {"ChecksumSHA256": b64(hashlib.sha256(data).digest())}
        return {"ContentMD5": b64(hashlib.md5(data, usedforsecurity=False).digest())}

    def _with_checksum_fallback(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ClientError as exc:
            if self.checksum != "auto" or _code(exc) not in _NO_FLEXIBLE_CHECKSUMS:
                raise
            self.checksum = "md5"  # this server does not do x-amz-checksum-*: MD5 from now on
            return fn()

    # -- objects ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        upload = MultipartUpload(self, key)
        try:
            yield upload  # type: ignore[misc]
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def put_bytes(self, key: str, data: bytes, **extra: Any) -> Any:
        return self._with_checksum_fallback(
            lambda: self.call(
                "put_object", key, Bucket=self.bucket, Key=self.object_key(key), Body=data, **self._checksum_args(data), **extra
            )
        )

    def reader(self, key: str) -> BinaryIO:
        try:
            head = self.call("get_object", key, Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self.object_key(key)}") from None
            raise self.fail(exc, "reading", key) from None
        return RangeReader(self, key, head)  # type: ignore[return-value]

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix, PaginationConfig={"PageSize": self.page_size}
        )
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    # dot-names are ours (locks), like the local backend's temp files and .locks
                    if layout.is_hidden(key):
                        continue
                    yield ObjectInfo(key, int(obj["Size"]))
        except ClientError as exc:
            raise self.fail(exc, "listing", prefix) from None

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
        removed = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for up in page.get("Uploads", []):
                with contextlib.suppress(ClientError):  # finished or aborted meanwhile
                    self.call("abort_multipart_upload", up["Key"], Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    removed.append(up["Key"][len(self.prefix) :])
        return removed

    # -- locks -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        key = layout.lock_key(name)
        token = uuid.uuid4().hex
        now = dt.datetime.now(dt.UTC)
        body = json.dumps(
            {
                "token": token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "acquired_at": now.isoformat(),
                "expires_at": (now + dt.timedelta(seconds=self.lock_ttl)).isoformat(),
            }
        )
        self._acquire(key, name, body.encode())
        try:
            yield
        finally:
            with contextlib.suppress(StorageError, FileNotFoundError):
                if self._lock_doc(key).get("token") == token:  # never remove a lock someone else broke and took
                    self.delete(key)

    def _lock_doc(self, key: str) -> dict[str, Any]:
        with self.reader(key) as f:
            try:
                return json.loads(f.read())
            except ValueError:
                return {}

    def _try_create(self, key: str, body: bytes) -> bool:
        if self.conditional_puts:
            try:
                self.put_bytes(key, body, IfNoneMatch="*")
                return True
            except ClientError as exc:
                if _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(exc) in (409, 412):
                    return False
                if _code(exc) != "NotImplemented":
                    raise self.fail(exc, "locking", key) from None
                self.conditional_puts = False  # this store ignores conditions: advisory locks (module doc)
        try:
            self._lock_doc(key)
            return False
        except FileNotFoundError:
            self.put_bytes(key, body)
            return True

    def _acquire(self, key: str, name: str, body: bytes) -> None:
        doc: dict[str, Any] = {}
        for attempt in range(2):
            if self._try_create(key, body):
                return
            try:
                doc = self._lock_doc(key)
            except FileNotFoundError:
                continue  # released meanwhile: compete again
            expires = doc.get("expires_at")
            if attempt == 0 and (not expires or dt.datetime.fromisoformat(expires) < dt.datetime.now(dt.UTC)):
                self.delete(key)  # its holder died (or it is garbage): break it and compete once more
                continue
            break
        raise self._held(key, name, doc)

    def _held(self, key: str, name: str, doc: dict[str, Any] | None = None) -> LockedError:
        doc = doc or {}
        who = f"{doc.get('host', '?')} pid {doc.get('pid', '?')} since {doc.get('acquired_at', '?')}, expires {doc.get('expires_at', '?')}"
        return LockedError(f"another backup of {name} is running (lock s3://{self.bucket}/{self.object_key(key)} held by {who})")

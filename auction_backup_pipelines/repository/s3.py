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

import base64
import contextlib
import datetime as dt
import hashlib
import io
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
from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from auction_backup_pipelines.repository import layout
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


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


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

    def _k(self, key: str) -> str:
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise StorageError(f"invalid object key {key!r}")
        return self.prefix + "/".join(parts)

    def _call(self, op: str, what: str, **kwargs: Any) -> Any:
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

    def _fail(self, exc: Exception, action: str, key: str) -> StorageError:
        where = f"s3://{self.bucket}/{self._k(key) if key else self.prefix}"
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
            return {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())}
        return {"ContentMD5": _b64(hashlib.md5(data, usedforsecurity=False).digest())}

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
        upload = _Upload(self, key)
        try:
            yield upload  # type: ignore[misc]
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def put_bytes(self, key: str, data: bytes, **extra: Any) -> Any:
        return self._with_checksum_fallback(
            lambda: self._call(
                "put_object", key, Bucket=self.bucket, Key=self._k(key), Body=data, **self._checksum_args(data), **extra
            )
        )

    def reader(self, key: str) -> BinaryIO:
        try:
            head = self._call("get_object", key, Bucket=self.bucket, Key=self._k(key))
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise FileNotFoundError(f"s3://{self.bucket}/{self._k(key)}") from None
            raise self._fail(exc, "reading", key) from None
        return _Reader(self, key, head)  # type: ignore[return-value]

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
            raise self._fail(exc, "listing", prefix) from None

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

    def _delete_batch(self, keys: list[str]) -> None:
        if len(keys) == 1:  # plain DELETE: cheapest, and idempotent on S3 (204 for an absent key)
            try:
                self._call("delete_object", keys[0], Bucket=self.bucket, Key=self._k(keys[0]))
            except ClientError as exc:
                raise self._fail(exc, "deleting", keys[0]) from None
            return
        try:
            out = self._call(
                "delete_objects",
                keys[0],
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._k(k)} for k in keys], "Quiet": True},
            )
        except ClientError as exc:
            raise self._fail(exc, "deleting", keys[0]) from None
        errors = [e for e in out.get("Errors", []) if e.get("Code") != "NoSuchKey"]
        if errors:
            e = errors[0]
            raise StorageError(
                f"deleting s3://{self.bucket}/{e.get('Key')} failed: {e.get('Code')} "
                f"({len(errors)} of {len(keys)} keys in the batch not deleted)"
            )

    def remove_temporaries(self, prefix: str = "") -> list[str]:
        """Abort unfinished multipart uploads (what a killed writer leaves); returns their keys."""
        removed = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            for up in page.get("Uploads", []):
                with contextlib.suppress(ClientError):  # finished or aborted meanwhile
                    self._call("abort_multipart_upload", up["Key"], Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
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
                    raise self._fail(exc, "locking", key) from None
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
        return LockedError(f"another backup of {name} is running (lock s3://{self.bucket}/{self._k(key)} held by {who})")


class _Upload(io.RawIOBase):
    """The file-like `writer()` yields: parts go up as they fill; nothing is visible before complete()."""

    def __init__(self, backend: S3Backend, key: str):
        self._b = backend
        self._key = key
        self._buf = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._algorithm: str | None = None

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self._buf += b
        while len(self._buf) >= self._b.part_size:
            self._send_part(bytes(self._buf[: self._b.part_size]))
            del self._buf[: self._b.part_size]
        return len(b)

    def _start(self) -> None:
        b = self._b

        def create() -> Any:
            self._algorithm = "SHA256" if b.checksum != "md5" else None
            extra = {"ChecksumAlgorithm": "SHA256"} if self._algorithm else {}
            return b._call("create_multipart_upload", self._key, Bucket=b.bucket, Key=b._k(self._key), **extra)

        self._upload_id = b._with_checksum_fallback(create)["UploadId"]

    def _send_part(self, data: bytes) -> None:
        b = self._b
        number = len(self._parts) + 1
        try:
            if self._upload_id is None:
                self._start()
            if self._algorithm:
                args = {"ChecksumSHA256": _b64(hashlib.sha256(data).digest())}
            else:
                args = {"ContentMD5": _b64(hashlib.md5(data, usedforsecurity=False).digest())}
            out = b._call(
                "upload_part",
                self._key,
                Bucket=b.bucket,
                Key=b._k(self._key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                **args,
            )
        except ClientError as exc:
            raise b._fail(exc, f"uploading part {number} of", self._key) from None
        part = {"PartNumber": number, "ETag": out["ETag"]}
        if self._algorithm:
            part["ChecksumSHA256"] = args["ChecksumSHA256"]
        self._parts.append(part)

    def complete(self) -> None:
        b = self._b
        if self._upload_id is None:  # under one part: a single atomic PUT
            try:
                b.put_bytes(self._key, bytes(self._buf))
            except ClientError as exc:
                raise b._fail(exc, "writing", self._key) from None
            return
        if self._buf:
            self._send_part(bytes(self._buf))
            self._buf.clear()
        try:
            b._call(
                "complete_multipart_upload",
                self._key,
                Bucket=b.bucket,
                Key=b._k(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except ClientError as exc:
            raise b._fail(exc, "completing the upload of", self._key) from None
        self._upload_id = None

    def abort(self) -> None:
        if self._upload_id is not None:
            # Best effort: if this fails too, remove_temporaries (gc) aborts it later.
            with contextlib.suppress(ClientError, BotoCoreError):
                self._b._call(
                    "abort_multipart_upload",
                    self._key,
                    Bucket=self._b.bucket,
                    Key=self._b._k(self._key),
                    UploadId=self._upload_id,
                )
            self._upload_id = None


class _Reader(io.RawIOBase):
    """A GET body that resumes (Range + If-Match on the first ETag) when the connection drops midway."""

    RESUMES = 5

    def __init__(self, backend: S3Backend, key: str, response: dict[str, Any]):
        self._b = backend
        self._key = key
        self._body = response["Body"]
        self._etag = response.get("ETag")
        self._size = int(response.get("ContentLength", -1))
        self._pos = 0
        self._resumes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 22), b""))
        while True:
            try:
                data = self._body.read(size)
            except (BotoConnectionError, ReadTimeoutError, OSError) as exc:
                self._resume(exc)
                continue
            if not data and 0 <= self._size and self._pos < self._size:
                self._resume(EOFError("connection closed early"))
                continue
            self._pos += len(data)
            return data

    def _resume(self, exc: BaseException) -> None:
        if self._resumes >= self.RESUMES:
            raise StorageError(f"reading s3://{self._b.bucket}/{self._b._k(self._key)} failed at byte {self._pos}: {exc}")
        self._resumes += 1
        time.sleep(self._b.backoff * self._resumes)
        with contextlib.suppress(Exception):
            self._body.close()
        extra = {"IfMatch": self._etag} if self._etag else {}
        try:
            out = self._b._call(
                "get_object", self._key, Bucket=self._b.bucket, Key=self._b._k(self._key), Range=f"bytes={self._pos}-", **extra
            )
        except ClientError as e:  # replaced meanwhile (412) or gone: the caller's digests would fail anyway
            raise self._b._fail(e, f"resuming at byte {self._pos}", self._key) from None
        self._body = out["Body"]

    def readinto(self, b) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()

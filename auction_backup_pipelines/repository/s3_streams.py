"""The byte streams of the S3 backend: a multipart upload that appears whole or not at all, and a
ranged reader that resumes after a dropped connection. Split from s3.py, which keeps the backend."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import time
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError
from botocore.exceptions import ConnectionError as BotoConnectionError

from auction_backup_pipelines.repository.storage import StorageError

if TYPE_CHECKING:
    from auction_backup_pipelines.repository.s3 import S3Backend


def b64(digest: bytes) -> str:
    """A digest as S3's checksum headers want it."""
    return base64.b64encode(digest).decode()


def error_code(exc: ClientError) -> str:
    """The S3 error code of a failed request ("NoSuchKey", "PreconditionFailed"...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: ClientError) -> int:
    """The HTTP status of a failed request (0 when unknown)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class MultipartUpload(io.RawIOBase):
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

    def write(self, b) -> int:
        self._b.limiter.take(len(b))  # OFFSITE_S3_MAX_BYTES_PER_S; a no-op when unlimited
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
            return b.call("create_multipart_upload", self._key, Bucket=b.bucket, Key=b.object_key(self._key), **extra)

        self._upload_id = b._with_checksum_fallback(create)["UploadId"]

    def _send_part(self, data: bytes) -> None:
        b = self._b
        number = len(self._parts) + 1
        try:
            if self._upload_id is None:
                self._start()
            if self._algorithm:
                args = {"ChecksumSHA256": b64(hashlib.sha256(data).digest())}
            else:
                args = {"ContentMD5": b64(hashlib.md5(data, usedforsecurity=False).digest())}
            out = b.call(
                "upload_part",
                self._key,
                action=f"uploading part {number} of",
                Bucket=b.bucket,
                Key=b.object_key(self._key),
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
                **args,
            )
        except ClientError as exc:
            raise b.fail(exc, f"uploading part {number} of", self._key) from None
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
                raise b.fail(exc, "writing", self._key) from None
            return
        if self._buf:
            self._send_part(bytes(self._buf))
            self._buf.clear()
        try:
            b.call(
                "complete_multipart_upload",
                self._key,
                action="completing the upload of",
                Bucket=b.bucket,
                Key=b.object_key(self._key),
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except ClientError as exc:
            raise b.fail(exc, "completing the upload of", self._key) from None
        self._upload_id = None

    def abort(self) -> None:
        if self._upload_id is not None:
            # Best effort (retried through an outage like any call): if this fails too,
            # the leftover life cycle (repository/leftovers.py, `prune`) aborts it later.
            with contextlib.suppress(ClientError, BotoCoreError, StorageError):
                self._b.call(
                    "abort_multipart_upload",
                    self._key,
                    Bucket=self._b.bucket,
                    Key=self._b.object_key(self._key),
                    UploadId=self._upload_id,
                )
            self._upload_id = None


class RangeReader(io.RawIOBase):
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

    def read(self, size: int = -1) -> bytes:
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
            raise StorageError(f"reading s3://{self._b.bucket}/{self._b.object_key(self._key)} failed at byte {self._pos}: {exc}")
        self._resumes += 1
        time.sleep(self._b.backoff * self._resumes)
        with contextlib.suppress(Exception):
            self._body.close()
        extra = {"IfMatch": self._etag} if self._etag else {}
        try:
            out = self._b.call(
                "get_object",
                self._key,
                Bucket=self._b.bucket,
                Key=self._b.object_key(self._key),
                Range=f"bytes={self._pos}-",
                **extra,
            )
        except ClientError as e:  # replaced meanwhile (412) or gone: the caller's digests would fail anyway
            raise self._b.fail(e, f"resuming at byte {self._pos}", self._key) from None
        self._body = out["Body"]

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._body.close()
        super().close()

"""The S3 backend against a real S3-compatible server (S3Proxy from stack/s3.sh) on loopback.

Faults the real server will not produce on demand (throttling, 500s, timeouts) are injected
at botocore's HTTP layer (`before-send`), so botocore's retry logic and ours run for real and
every successful attempt reaches the real server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError

from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.encryption import MAGIC, Encryption, WrongKeyError
from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS, EncryptionRequiredError
from auction_backup_pipelines.repository.keys import Key
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import IntegrityError, LockedError, StorageError
from auction_backup_pipelines.settings import OffsiteSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"
MiB = 1 << 20


@pytest.fixture
def backend(s3_env):
    """A backend on a fresh prefix of the stack's bucket; emptied afterwards."""
    b = S3Backend.from_settings(OffsiteSettings.from_env(), part_size=5 * MiB, backoff=0.01)
    b.prefix = f"test-{uuid.uuid4().hex[:10]}/"
    yield b
    b.remove_temporaries()
    b.delete_many(o.key for o in b.list())
    b.delete_many(
        [k["Key"][len(b.prefix) :] for k in b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix + ".").get("Contents", [])]
    )


def _uploads(b: S3Backend) -> list[str]:
    return [u["Key"] for u in b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix).get("Uploads", [])]


def _write(repo, data, name="dump.pgc", day=DAY):
    with repo.begin("postgres", "logical_dump", day) as w:
        with w.open_file(name) as f:
            f.write(data)
    return w.committed


def test_multipart_round_trip_with_sha256_checksums(backend):
    repo = Repository(backend, compression="none")
    data = os.urandom(12 * MiB + 123)
    backup = _write(repo, data)
    key = backend.object_key(backup.ref.file_key("dump.pgc"))
    head = backend.client.head_object(Bucket=backend.bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(data)
    assert head.get("ChecksumSHA256", "").endswith("-3")  # three parts, each checked by the server
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data
    assert repo.verify(backup, deep=True).files == 1
    assert repo.list() == [backup] and repo.get("postgres", "logical_dump", DAY) == backup
    assert _uploads(backend) == []
    repo.delete(backup)
    assert list(backend.list()) == []


def test_server_verifies_checksums_and_md5_mode_works(backend):
    with pytest.raises(ClientError) as err:
        backend.client.put_object(
            Bucket=backend.bucket,
            Key=backend.object_key("x"),
            Body=b"abc",
            ChecksumSHA256="n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        )
    assert err.value.response["Error"]["Code"] == "BadDigest"
    backend.checksum = "md5"
    repo = Repository(backend, compression="zstd")
    data = os.urandom(6 * MiB) + b"a" * (8 * MiB)
    backup = _write(repo, data)
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data


def test_encrypted_repository_on_s3(backend):
    repo = Repository(backend, encryption=Encryption([Key("offsite-1", os.urandom(32))]))
    data = b"bidder alice@example.com " * 100_000
    backup = _write(repo, data)
    raw = backend.client.get_object(Bucket=backend.bucket, Key=backend.object_key(backup.manifest_key))["Body"].read()
    assert raw.startswith(MAGIC) and b"dump.pgc" not in raw
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data
    with pytest.raises(WrongKeyError, match="offsite-1"):
        Repository(backend, encryption=Encryption([Key("other", os.urandom(32))])).list()


def _all_keys(b: S3Backend) -> set[str]:
    """Every object under the test's prefix, hidden ones (locks, the marker) included."""
    return {o["Key"] for o in b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix).get("Contents", [])}


def test_encrypted_s3_repository_refuses_plaintext_writes(backend):
    keyed = Repository(backend, encryption=Encryption([Key("offsite-1", os.urandom(32))]))
    backup = _write(keyed, b"encrypted" * 1000)
    raw = backend.client.get_object(Bucket=backend.bucket, Key=backend.object_key(layout.ENCRYPTION_MARKER))["Body"].read()
    assert json.loads(raw)["key_ids"] == ["offsite-1"]  # plaintext JSON, ids only
    before = _all_keys(backend)
    keyless = Repository(backend, key_settings=OFFSITE_KEY_SETTINGS)
    with pytest.raises(EncryptionRequiredError, match="set OFFSITE_ENCRYPTION_KEYS or OFFSITE_ENCRYPTION_KEY_FILE"):
        _write(keyless, b"plaintext", day="2026-11-21")
    with pytest.raises(EncryptionRequiredError):
        WalArchive(keyless.backend).write_heartbeat(dt.datetime(2026, 11, 20, tzinfo=dt.UTC), "0/3000000")
    assert _all_keys(backend) == before and _uploads(backend) == []
    # Without the marker (lost, or a repository encrypted before markers), the manifest tells.
    backend.delete(layout.ENCRYPTION_MARKER)
    with pytest.raises(EncryptionRequiredError, match=f"{backup.manifest_key} is encrypted.*offsite-1"):
        _write(Repository(backend), b"plaintext", day="2026-11-21")
    assert _all_keys(backend) == before - {backend.object_key(layout.ENCRYPTION_MARKER)}
    # Listing needs no key, as before; reading with the keys still works.
    assert {o.key for o in keyless.backend.list()} == {
        backup.ref.catalog_key,
        backup.manifest_key,
        backup.object_key(backup.files[0]),
    }
    keyed.verify(backup, deep=True)


def test_exception_mid_stream_leaves_nothing_visible(backend):
    repo = Repository(backend, compression="none")
    with pytest.raises(RuntimeError):
        with repo.begin("postgres", "logical_dump", DAY) as w:
            with w.open_file("dump.pgc") as f:
                f.write(os.urandom(11 * MiB))  # two parts already uploaded
                assert len(_uploads(backend)) == 1
                raise RuntimeError("source died")
    assert repo.list() == [] and list(backend.list()) == []
    assert _uploads(backend) == []  # aborted, not left to accrue storage


def test_killed_writer_leaves_an_invisible_upload_that_gc_aborts(backend):
    script = textwrap.dedent(f"""
        import os, signal
        from auction_backup_pipelines.repository.repository import Repository
        from auction_backup_pipelines.repository.s3 import S3Backend
        from auction_backup_pipelines.settings import OffsiteSettings
        b = S3Backend.from_settings(OffsiteSettings.from_env(), part_size={5 * MiB})
        b.prefix = {backend.prefix!r}
        with Repository(b, compression="none").begin("postgres", "logical_dump", "{DAY}") as w:
            with w.open_file("dump.pgc") as f:
                f.write(os.urandom({11 * MiB}))
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ))
    assert proc.returncode == -signal.SIGKILL
    repo = Repository(backend)
    assert repo.list() == [] and list(backend.list()) == []
    assert len(_uploads(backend)) == 1
    removed = repo.gc_incomplete()
    assert any(k.endswith("dump.pgc") for k in removed)
    assert _uploads(backend) == []


def test_listing_paginates_and_deletes_go_in_batches(backend):
    backend.page_size, backend.delete_batch = 7, 50
    keys = [f"many/{i:04d}" for i in range(120)]
    for k in keys:
        backend.put_bytes(k, b"x")
    calls: list[str] = []
    backend.client.meta.events.register(
        "before-send.s3.*",
        lambda request, **kw: calls.append(
            request.method + " " + request.url.split("?")[1][:20] if "?" in request.url else request.method
        ),
    )
    assert [o.key for o in backend.list("many/")] == keys
    assert sum(c.startswith("GET") for c in calls) == 18  # ceil(120 / 7) pages
    calls.clear()
    backend.delete_many(keys + ["many/absent"])
    assert sum(c.startswith("POST delete") for c in calls) == 3  # 121 keys, 50 per DeleteObjects
    assert list(backend.list("many/")) == []
    backend.delete("many/absent")  # idempotent


def test_locks_are_exclusive_and_expired_locks_are_broken(backend):
    repo = Repository(backend)
    with repo.begin("postgres", "logical_dump", DAY) as w:
        with w.open_file("dump.pgc") as f:
            f.write(b"y")
        with pytest.raises(LockedError, match=r"another backup of postgres/logical_dump/2026-11-20 is running .*pid"):
            with repo.begin("postgres", "logical_dump", DAY):
                pass
        with repo.begin("postgres", "logical_dump", "2026-11-21") as other:  # another day: independent
            with other.open_file("dump.pgc") as f:
                f.write(b"x")
    with backend.lock("postgres/logical_dump/2026-11-20"):
        pass  # released
    # A lock that expired long ago, as a writer on another host leaves it when it dies.
    stale = {"token": "t" * 32, "host": "elsewhere", "pid": 1, "expires_at": "2026-01-01T00:00:00+00:00"}
    backend.put_bytes(layout.lock_key("stale"), json.dumps(stale).encode())
    with backend.lock("stale"):
        with pytest.raises(LockedError):
            with backend.lock("stale"):
                pass
    assert backend.locks.support and backend.locks.support.conditional  # S3Proxy honours If-None-Match: real locks
    held = backend.client.list_objects_v2(Bucket=backend.bucket, Prefix=backend.prefix + ".locks/").get("Contents", [])
    assert [o["Key"].rsplit("/", 1)[1] for o in held] == []  # every lock released, the broken one too
    assert all(not o.key.startswith(".") for o in backend.list())


def test_describe_names_no_credentials(backend, s3_env):
    text = backend.describe()
    assert text.startswith(f"s3://{backend.bucket}/{backend.prefix}") and "127.0.0.1" in text
    assert s3_env["OFFSITE_S3_SECRET_ACCESS_KEY"] not in text and s3_env["OFFSITE_S3_ACCESS_KEY_ID"] not in text
    assert s3_env["OFFSITE_S3_SECRET_ACCESS_KEY"] not in repr(vars(backend))


# -- fault injection ---------------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_):
        yield self._body


def _error(status: int, code: str) -> AWSResponse:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    return AWSResponse("http://injected", status, {"Content-Type": "application/xml"}, _Raw(body))


def _inject(backend: S3Backend, operation: str, faults: list):
    """The next len(faults) requests of `operation` fail as given (a response or an exception)."""
    seen = {"attempts": 0}

    def hook(request, **_):
        seen["attempts"] += 1
        if faults:
            fault = faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        return None

    backend.client.meta.events.register_first(f"before-send.s3.{operation}", hook)
    return seen


def test_throttling_500s_and_timeouts_are_retried(backend):
    repo = Repository(backend, compression="none")
    parts = _inject(backend, "UploadPart", [_error(503, "SlowDown"), _error(500, "InternalError")])
    puts = _inject(backend, "PutObject", [ReadTimeoutError(endpoint_url="http://injected")])
    done = _inject(backend, "CompleteMultipartUpload", [_error(503, "SlowDown")])
    data = os.urandom(6 * MiB)
    backup = _write(repo, data)
    assert parts["attempts"] == 4 and puts["attempts"] >= 2 and done["attempts"] == 2
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data


def test_throttling_beyond_botocore_retries_is_waited_out(backend):
    fast = S3Backend(
        backend.bucket,
        backend.prefix,
        endpoint_url=backend.endpoint_url,
        max_attempts=1,
        throttle_retries=4,
        backoff=0.01,
        access_key_id=os.environ["OFFSITE_S3_ACCESS_KEY_ID"],
        secret_access_key=os.environ["OFFSITE_S3_SECRET_ACCESS_KEY"],
    )
    seen = _inject(fast, "PutObject", [_error(503, "SlowDown")] * 3)
    fast.put_bytes("throttled", b"ok")
    assert seen["attempts"] == 4
    with fast.reader("throttled") as f:
        assert f.read() == b"ok"


def test_persistent_server_errors_fail_clearly_and_publish_nothing(backend):
    repo = Repository(backend, compression="none")
    backend.outage_timeout = 1  # 500s are waited out as an outage: for one second here
    _inject(backend, "UploadPart", [_error(500, "InternalError")] * 50)
    with pytest.raises(StorageError, match=r"uploading part 1 of s3://.*dump.pgc.* failed: InternalError"):
        _write(repo, os.urandom(6 * MiB))
    assert repo.list() == [] and _uploads(backend) == []


def test_reader_resumes_after_a_dropped_connection(backend):
    data = os.urandom(3 * MiB)
    backend.put_bytes("big", data)
    reader = backend.reader("big")

    class Dropping:
        def __init__(self, inner):
            self.inner, self.reads = inner, 0

        def read(self, n):
            self.reads += 1
            if self.reads == 3:
                raise ReadTimeoutError(endpoint_url="http://injected")
            return self.inner.read(n)

        def close(self):
            self.inner.close()

    reader._body = Dropping(reader._body)
    out = b"".join(iter(lambda: reader.read(256 * 1024), b""))
    assert out == data and reader._resumes == 1


# -- offsite copies ------------------------------------------------------------------------------


def test_offsite_copy_of_a_real_dump_to_encrypted_s3_then_restore_from_there(backend, tmp_path, pg_settings, scratch_db):
    local = Repository.local(tmp_path / "local")
    backup = pg.backup_logical(pg_settings, local, dt.date(2026, 11, 20))
    remote = Repository(backend, encryption=Encryption([Key("offsite", os.urandom(32))]))
    report = offsite.copy_partition(local, remote, "postgres", "logical_dump", "2026-11-20")
    assert report.status == offsite.COPIED and report.bytes == backup.stored_size
    assert report.verified.bytes_checked == backup.stored_size
    assert offsite.copy_partition(local, remote, "postgres", "logical_dump", "2026-11-20").status == offsite.PRESENT
    [there] = remote.list()
    assert there == backup
    result = pg.restore_logical(pg_settings, remote, there, scratch_db)
    assert result.rows_total == backup.metadata["rows_total"]


def test_offsite_copy_failure_leaves_nothing_at_the_destination(backend, tmp_path):
    local = Repository.local(tmp_path / "local", compression="none")
    with local.begin("postgres", "logical_dump", DAY) as w:
        for name in ("a.bin", "b.bin"):
            with w.open_file(name) as f:
                f.write(os.urandom(2 * MiB))
    backup = w.committed
    path = tmp_path / "local" / backup.prefix / "b.bin"
    raw = bytearray(path.read_bytes())
    raw[10] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="b.bin"):
        offsite.copy_backup(local, Repository(backend), backup)
    assert list(backend.list()) == [] and _uploads(backend) == []


def test_listed_and_head_timestamps_are_aware_datetimes_of_the_write(backend):
    """LastModified parsed by the backend's own timestamp parser (not dateutil): a listing's ISO
    8601 form and HEAD's RFC 1123 header both give the same aware UTC moment of the write."""
    before = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(seconds=5)
    with backend.writer("stamped/object.bin") as f:
        f.write(b"x")
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    listed = backend.client.list_objects_v2(Bucket=backend.bucket, Prefix=backend.prefix + "stamped/")["Contents"]
    head = backend.client.head_object(Bucket=backend.bucket, Key=backend.prefix + "stamped/object.bin")
    stamps = [listed[0]["LastModified"], head["LastModified"]]
    assert all(isinstance(s, dt.datetime) and s.utcoffset() == dt.timedelta(0) for s in stamps), stamps
    assert all(before <= s <= after for s in stamps), (before, stamps, after)
    assert stamps[0].replace(microsecond=0) == stamps[1]

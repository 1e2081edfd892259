"""S3 locks (repository/s3_locks.py) and outages, against the stack's real S3Proxy on loopback.

Outages are real: the backend talks to S3Proxy through a loopback proxy that the test cuts
(every connection reset) and restores (tests/repository/cuttable_proxy.py); the shared S3Proxy
itself is never stopped. Faults a real server will not produce on demand (a response lost after
the server acted on the request, a store that ignores conditional headers) are injected at
botocore's HTTP layer, so every request that matters still reaches the real server.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ConnectionClosedError
from botocore.httpsession import URLLib3Session

from auction_backup_pipelines.errors import BackupError, UnavailableError
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend, StoreUnavailableError
from auction_backup_pipelines.repository.s3_locks import ConditionalWritesError, LockLostError, identity, process_start
from auction_backup_pipelines.repository.storage import LockedError

from .cuttable_proxy import CuttableProxy

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"
NAME = "postgres/logical_dump/2026-11-20"
MiB = 1 << 20


@pytest.fixture
def make(s3_env):
    """Backends on one fresh prefix of the stack's bucket (each call a new instance); emptied afterwards."""
    prefix = f"locks-{uuid.uuid4().hex[:10]}/"
    made: list[S3Backend] = []

    def factory(endpoint_url: str | None = None, **kwargs) -> S3Backend:
        kwargs.setdefault("backoff", 0.05)
        b = S3Backend(
            s3_env["OFFSITE_S3_BUCKET"],
            prefix,
            endpoint_url=endpoint_url or s3_env["OFFSITE_S3_ENDPOINT_URL"],
            access_key_id=s3_env["OFFSITE_S3_ACCESS_KEY_ID"],
            secret_access_key=s3_env["OFFSITE_S3_SECRET_ACCESS_KEY"],
            **kwargs,
        )
        made.append(b)
        return b

    yield factory
    clean = factory()
    clean.remove_temporaries()
    keys = [o["Key"] for o in clean.client.list_objects_v2(Bucket=clean.bucket, Prefix=prefix).get("Contents", [])]
    for key in keys:
        clean.client.delete_object(Bucket=clean.bucket, Key=key)


def _raw(b: S3Backend, key: str) -> dict | None:
    """The lock object as the store has it (None when absent)."""
    try:
        return json.loads(b.client.get_object(Bucket=b.bucket, Key=b.object_key(key))["Body"].read())
    except b.client.exceptions.NoSuchKey:
        return None


def _plant(b: S3Backend, name: str, **fields) -> dict:
    """A lock written by someone else, unconditionally (its fields as given)."""
    doc = {"token": uuid.uuid4().hex, "host": "elsewhere", "pid": 4242, "acquired_at": "2026-12-01T00:00:00+00:00"}
    doc |= {"expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()} | fields
    b.client.put_object(Bucket=b.bucket, Key=b.object_key(layout.lock_key(name)), Body=json.dumps(doc).encode())
    return doc


def _uploads(b: S3Backend) -> list[str]:
    return [u["Key"] for u in b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix).get("Uploads", [])]


def _lock_objects(b: S3Backend) -> list[str]:
    found = b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix + ".locks/").get("Contents", [])
    return [o["Key"] for o in found]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _killed_holder(b: S3Backend, name: str, host: str | None = None) -> int:
    """A process that takes the lock `name` and is killed while holding it; returns its pid."""
    fake_host = f"import socket; socket.gethostname = lambda: {host!r}" if host else ""
    script = textwrap.dedent(f"""
        import os, signal
        {fake_host}
        from auction_backup_pipelines.repository.s3 import S3Backend
        b = S3Backend({b.bucket!r}, {b.prefix!r}, endpoint_url={b.endpoint_url!r}, lock_ttl={b.lock_ttl!r},
                      access_key_id=os.environ["OFFSITE_S3_ACCESS_KEY_ID"],
                      secret_access_key=os.environ["OFFSITE_S3_SECRET_ACCESS_KEY"])
        with b.lock({name!r}):
            print(os.getpid(), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return int(proc.stdout.split()[0])


# -- leases --------------------------------------------------------------------------------------


def test_lease_is_renewed_while_held_and_a_dead_writers_lock_expires_in_seconds(make):
    holder = make(lock_ttl=2, lock_renew_every=0.3)
    rival = make(lock_ttl=2)
    rival.locks.clock_skew = 0  # both clocks are this machine's
    with holder.lock(NAME):
        [lease] = holder.locks.held()
        first_expiry = dt.datetime.fromisoformat(_raw(holder, lease.key)["expires_at"])
        # Hold it past its first expiry: the renewals keep it, so the rival never gets in.
        while dt.datetime.now(dt.UTC) < first_expiry + dt.timedelta(seconds=1) or lease.renewals < 3:
            with pytest.raises(LockedError, match="on another host|runs on this host|held by this process"):
                with rival.lock(NAME):
                    pass
            assert lease.lost is None
        assert dt.datetime.fromisoformat(_raw(holder, lease.key)["expires_at"]) > first_expiry
    assert _lock_objects(holder) == []

    # A writer on another host killed while holding it: its lock frees the partition after its
    # 2 s lease (the default is 5 min), not 12 h.
    killed_at = time.monotonic()
    _killed_holder(holder, NAME, host="another-host")
    with pytest.raises(LockedError, match=r"held by another-host pid \d+ .*; on another host"):
        with rival.lock(NAME):
            pass
    taken = None
    while taken is None:
        assert time.monotonic() - killed_at < 60, "the dead writer's lock never expired"
        try:
            with rival.lock(NAME):
                taken = rival.locks.held()[0].broke
        except LockedError:
            time.sleep(0.1)
    assert taken and "expired" in taken


def test_dead_holder_on_this_host_is_broken_at_once_and_pid_reuse_is_told_apart(make, caplog):
    b = make()
    pid = _killed_holder(b, NAME)  # default 5 min lease, but its process is gone
    assert process_start(pid) is None
    with caplog.at_level(logging.WARNING, logger="auction_backup_pipelines.repository.s3_locks"):
        with b.lock(NAME):
            broke = b.locks.held()[0].broke
    assert broke == f"{socket.gethostname()} pid {pid} is not running on this host"
    assert f"pid {pid} is not running on this host" in caplog.text and "took over the lock" in caplog.text

    # A live process on this host: its lock stands, and the message says it is alive here.
    sleeper = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        me = identity()
        _plant(b, NAME, **(me | {"pid": sleeper.pid, "started": process_start(sleeper.pid)}))
        with pytest.raises(
            LockedError, match=rf"held by {socket.gethostname()} pid {sleeper.pid} .*its process runs on this host"
        ):
            with b.lock(NAME):
                pass
        # The same pid, but a process started later than the lock's holder: that holder is gone.
        _plant(b, NAME, **(me | {"pid": sleeper.pid, "started": process_start(sleeper.pid) - 1}))
        with b.lock(NAME):
            assert "that pid now belongs to a process started later" in b.locks.held()[0].broke
    finally:
        sleeper.kill()
        sleeper.wait()
    assert _lock_objects(b) == []


def test_a_writer_whose_lock_was_taken_fails_before_publishing(make):
    b = make(lock_ttl=4, lock_renew_every=0.2)
    repo = Repository(b, compression="none")
    thief = None
    with pytest.raises(
        LockLostError, match=rf"lost the lock of {NAME} .*now held by thief-host pid 7.*nothing more is published"
    ):
        with repo.begin("postgres", "logical_dump", DAY) as w:
            with w.open_file("dump.pgc") as f:
                f.write(b"x" * 1000)
            [lease] = b.locks.held()
            # Another writer took the lock over (as it may once our lease has lapsed).
            thief = _plant(b, NAME, host="thief-host", pid=7)
            _wait(lambda: lease.lost is not None, 10, "the renewal to notice")
    assert repo.list() == [] and list(b.list()) == [] and _uploads(b) == []
    assert _raw(b, layout.lock_key(NAME)) == thief  # never released: it is the other writer's


def test_a_retried_create_that_had_succeeded_holds_the_lock(make):
    b = make()
    key = b.object_key(layout.lock_key(NAME))
    lost = []

    def lose_the_answer(request, **_):
        # The first create reaches the real server, which stores the lock; its answer is lost.
        if not lost and urlsplit(request.url).path.endswith(key) and "If-None-Match" in request.headers:
            response = URLLib3Session().send(request)
            lost.append(response.status_code)
            raise ConnectionClosedError(endpoint_url=request.url)
        return None

    b.client.meta.events.register_first("before-send.s3.PutObject", lose_the_answer)
    with b.lock(NAME):
        [lease] = b.locks.held()
        assert _raw(b, layout.lock_key(NAME))["token"] == lease.token
        assert lease.broke is None  # recognised as ours, not taken over as a leftover
    assert lost == [200]  # the first PUT had created it; the retry got 412 and read our token
    assert _lock_objects(b) == []


def test_breaking_an_expired_lock_is_conditional(make):
    b = make()
    _plant(b, NAME, expires_at="2026-01-01T00:00:00+00:00")
    newcomer: list[dict] = []

    def race(request, **_):
        # Between our read of the expired lock and our takeover, another writer takes it first.
        if not newcomer and "If-Match" in request.headers and urlsplit(request.url).path.endswith(layout.lock_key(NAME)):
            newcomer.append(_plant(b, NAME, host="quicker-host"))

    b.client.meta.events.register_first("before-send.s3.PutObject", race)
    with pytest.raises(LockedError, match="held by quicker-host"):
        with b.lock(NAME):
            pass
    assert newcomer and _raw(b, layout.lock_key(NAME)) == newcomer[0]  # not deleted, not overwritten


def test_release_is_conditional_and_the_store_is_probed_once(make):
    b = make()
    sent: list[tuple[str, str, bool]] = []
    b.client.meta.events.register(
        "before-send.s3.*",
        lambda request, **_: sent.append((request.method, urlsplit(request.url).path, "If-Match" in request.headers)),
    )
    with b.lock(NAME):
        pass
    with b.lock("postgres/logical_dump/2026-11-21"):
        pass
    probes = [s for s in sent if "/.locks/probe-" in s[1]]
    assert probes and all("/.locks/probe-" in p[1] for p in sent[: len(probes)])  # first, and once
    assert b.locks.support is not None and b.locks.support.conditional and b.locks.support.conditional_delete
    releases = [s for s in sent if s[0] == "DELETE" and "probe-" not in s[1]]
    assert len(releases) == 2 and all(if_match for _, _, if_match in releases)

    # A lock someone overwrote while we held it survives our release.
    with b.lock(NAME):
        other = _plant(b, NAME, host="other-host")
    assert _raw(b, layout.lock_key(NAME)) == other


def test_a_store_that_ignores_conditional_writes_is_refused_unless_advisory(make):
    def ignore_conditions(request, **_):
        for header in ("If-None-Match", "If-Match"):  # removed before signing: the store never sees it
            if header in request.headers:
                del request.headers[header]

    strict, advisory = make(), make(advisory_locks=True)
    for b in (strict, advisory):
        b.client.meta.events.register_first("before-sign.s3.PutObject", ignore_conditions)
    with pytest.raises(ConditionalWritesError) as err:
        with strict.lock(NAME):
            pass
    assert "ignores conditional writes" in str(err.value) and "\n" not in str(err.value)
    assert _lock_objects(strict) == []  # the probe cleaned up after itself
    with advisory.lock(NAME):
        with pytest.raises(LockedError):
            with make(advisory_locks=True).lock(NAME):
                pass
    assert advisory.locks.support is not None and not advisory.locks.support.conditional
    assert _lock_objects(advisory) == []


# -- outages -------------------------------------------------------------------------------------


def _source(tmp_path: Path) -> tuple[Repository, object]:
    local = Repository.local(tmp_path / "local", compression="none")
    with local.begin("postgres", "logical_dump", DAY) as w:
        with w.open_file("dump.pgc") as f:
            f.write(os.urandom(12 * MiB))  # three parts of 5 MiB
    return local, w.committed


def _cut_after_first_part(b: S3Backend, proxy: CuttableProxy) -> dict:
    seen = {"cut_at": 0.0}

    def cut(**_):
        if not seen["cut_at"]:
            seen["cut_at"] = time.monotonic()
            proxy.cut()

    b.client.meta.events.register("after-call.s3.UploadPart", cut)
    return seen


def _restore_when(proxy: CuttableProxy, condition, timeout: float = 120) -> threading.Thread:
    def run():
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        proxy.restore()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_an_outage_during_an_offsite_copy_is_waited_out(make, s3_env, tmp_path):
    target = urlsplit(s3_env["OFFSITE_S3_ENDPOINT_URL"])
    local, backup = _source(tmp_path)
    with CuttableProxy(target.hostname, target.port) as proxy:
        # botocore alone gives up after 2 attempts here: the waiting is the backend's own.
        b = make(proxy.url, part_size=5 * MiB, max_attempts=2, backoff=0.2, outage_timeout=60)
        seen = _cut_after_first_part(b, proxy)
        # Down for 5 s at least (the outage observed in production), retried throughout.
        restorer = _restore_when(proxy, lambda: len(proxy.refused) >= 4 and time.monotonic() - seen["cut_at"] >= 5)
        report = offsite.copy_backup(local, Repository(b), backup)
        restorer.join()
    outage = time.monotonic() - seen["cut_at"]
    assert seen["cut_at"] and len(proxy.refused) >= 4 and outage >= 5
    assert report.status == offsite.COPIED and report.verified.bytes_checked == backup.stored_size
    direct = make()  # the proxy is gone: look straight at S3Proxy
    assert Repository(direct).list() == [backup]
    assert _uploads(direct) == [] and _lock_objects(direct) == []
    print(f"outage of {len(proxy.refused)} refused attempts; copy finished {outage:.1f} s after the cut")


def test_an_outage_longer_than_the_bound_fails_in_one_line_and_cleans_up(make, s3_env, tmp_path):
    target = urlsplit(s3_env["OFFSITE_S3_ENDPOINT_URL"])
    local, backup = _source(tmp_path)
    with CuttableProxy(target.hostname, target.port) as proxy:
        b = make(proxy.url, part_size=5 * MiB, max_attempts=1, backoff=0.1, outage_timeout=1.5)
        _cut_after_first_part(b, proxy)
        # The store comes back only when the failed copy tries to abort its upload.
        restorer = _restore_when(proxy, lambda: any(r.startswith(b"DELETE") and b"uploadId=" in r for r in proxy.refused))
        started = time.monotonic()
        with pytest.raises(StoreUnavailableError) as err:
            offsite.copy_backup(local, Repository(b), backup)
        elapsed = time.monotonic() - started
        restorer.join()
    message = str(err.value)
    assert isinstance(err.value, UnavailableError) and isinstance(err.value, BackupError)
    assert "\n" not in message and "Traceback" not in message and len(message) < 400
    assert message.startswith("uploading part 2 of s3://") and "dump.pgc" in message
    assert "did not recover within 1.5 s" in message and f"127.0.0.1:{proxy.port}" in message
    assert elapsed < 30
    direct = make()  # the proxy is gone: look straight at S3Proxy
    assert _uploads(direct) == [], "the unfinished upload was aborted"
    assert _lock_objects(direct) == [], "the lock was released"
    assert list(direct.list()) == []

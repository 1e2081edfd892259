"""Crash leftovers on both backends (repository/leftovers.py, policy/leftovers.py) and the full disk.

Real runs: a CLI backup of a real PostgreSQL database killed with SIGKILL mid-stream, multipart
uploads on the stack's S3Proxy left by a killed writer, and a CLI backup into a 20 MB tmpfs that
fills it. Time passing is injected (`now`, or a file's mtime set back), never slept on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from auction_backup_pipelines.policy import leftovers, pruning
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository import leftovers as listing
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import RepositoryFullError
from auction_backup_pipelines.settings import OffsiteSettings, PostgresSettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)
SIX_H = dt.timedelta(hours=6)
LATER = dt.timedelta(hours=6, minutes=5)
MiB = 1 << 20
CLI = [sys.executable, "-m", "auction_backup_pipelines.cli"]


def _files(root: Path) -> list[str]:
    """Every file under the repository but the lock files (which stay, empty, by design)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


def _age(root: Path, by: dt.timedelta) -> None:
    """Make every file look `by` older (what the clock would do while nobody touches them)."""
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            os.utime(p, (st.st_atime - by.total_seconds(), st.st_mtime - by.total_seconds()))


def _orphan(repo: Repository, backup_id: str = "20261121T020000Z-000001", name: str = "x.bin.zst") -> str:
    """A file published in a backup folder whose manifest never came (a run that died between files)."""
    key = BackupRef("postgres", "logical_dump", DAY, backup_id).file_key(name)
    with repo.backend.writer(key) as f:
        f.write(b"left by a crash")
    return key


# -- a PostgreSQL database big enough to catch a dump mid-stream and to fill a small disk ------


@pytest.fixture
def big_db():
    """A database of the test's own, empty; `grow(mib)` adds `mib` MiB of incompressible rows."""
    settings = PostgresSettings.from_env()
    name = f"scratch_leftovers_{uuid.uuid4().hex[:8]}"
    with pg_client.connect(settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db = dataclasses.replace(settings, dbname=name)
    with pg_client.connect(db) as conn:
        conn.execute("CREATE TABLE blobs (id serial PRIMARY KEY, data bytea)")

    def grow(mib: int) -> None:
        with pg_client.connect(db) as conn:
            conn.execute(
                "INSERT INTO blobs (data) SELECT decode(string_agg(md5(random()::text || x), ''), 'hex') "
                "FROM generate_series(1, %s) g, generate_series(1, 65536) x GROUP BY g",
                (mib,),
            )

    yield name, grow
    with pg_client.connect(settings, dbname="postgres") as admin:
        pg_client.drop_database(admin, name)


def _cli(repo_root: Path, *args: str, db: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--repo", str(repo_root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "POSTGRES_DB": db, **env},
    )


# -- a killed run ----------------------------------------------------------------------------


def test_killed_cli_backup_leaves_leftovers_that_prune_removes_after_the_safety_age(tmp_path, big_db):
    name, grow = big_db
    grow(48)
    root = tmp_path / "backups"
    proc = subprocess.Popen(
        [*CLI, "--repo", str(root), "backup", "postgres", "--date", "2026-11-20", "--allow-late-capture"],
        cwd=ROOT,
        env={**os.environ, "POSTGRES_DB": name},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = dt.datetime.now() + dt.timedelta(seconds=60)
    try:
        while not any(p.stat().st_size > MiB for p in root.rglob(".*.tmp-*") if p.is_file()):  # mid-stream
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.01)
            assert proc.returncode is None, (
                f"the backup ended before it could be killed: {proc.stderr.read() if proc.stderr else ''}"
            )
            assert dt.datetime.now() < deadline, "the dump never started writing"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    repo = Repository.local(root)
    assert repo.list() == []
    left = _files(root)
    assert left and all(layout.temp_target(k) for k in left), left  # the killed writer's temp file
    orphan = _orphan(repo)  # and a file published by a run that died before its manifest

    now = dt.datetime.now(dt.UTC)
    plan = leftovers.plan(repo.storage, now, SIX_H)
    assert {d.leftover.kind for d in plan} == {listing.TEMP_FILE, listing.INCOMPLETE_BACKUP}
    assert not any(d.remove for d in plan) and all("within the safety age" in d.reason for d in plan)
    assert leftovers.remove(repo.storage, None, now, SIX_H) == []  # nothing before the safety age
    assert len(_files(root)) == len(left) + 1

    # The CLI: with the default safety age, `prune --dry-run` explains why each is kept...
    out = _cli(root, "prune", "--local", "--dry-run", db=name)
    assert out.returncode == 0, out.stderr
    assert re.search(r"keep +temporary file .*within the safety age \(6\.0 h\)", out.stdout), out.stdout
    assert re.search(r"keep +backup without a manifest +postgres/logical_dump/2026-11-20/", out.stdout), out.stdout
    # ...and once they are older than that, lists each removal with its reason, then removes them.
    _age(root, LATER)
    out = _cli(root, "prune", "--local", "--dry-run", db=name)
    assert re.search(r"would remove +temporary file .*no writer holds the lock of postgres/logical_dump/2026-11-20", out.stdout)
    assert "dry run: 2 leftover(s) to remove" in out.stdout and len(_files(root)) == len(left) + 1
    out = _cli(root, "prune", "--local", db=name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leftovers: 2 removed" in out.stdout
    assert _files(root) == [] and not (root / "postgres").exists()  # no empty folder husk either
    assert orphan not in {o.key for o in repo.backend.list("")}


def test_a_leftover_under_a_live_lock_is_kept(repo):
    key = _orphan(repo)
    _age(repo.storage.root, dt.timedelta(days=2))
    lock = BackupRef.parse(key.rpartition("/")[0]).partition_ref.lock_name
    now = dt.datetime.now(dt.UTC)
    planned = leftovers.plan(repo.storage, now, SIX_H)
    assert [d.remove for d in planned] == [True]
    with repo.storage.lock(lock):  # a writer of that partition is running
        d = leftovers.plan(repo.storage, now, SIX_H)[0]
        assert not d.remove and f"a live writer holds the lock of {lock}" in d.reason
        # A request planned before the writer started: the fresh decision keeps it.
        [o] = leftovers.remove(repo.storage, leftovers.removable_ids(planned), now, SIX_H)
        assert o.action == leftovers.KEPT and "a live writer holds" in o.reason
        assert repo.gc_incomplete() == []  # no age, but the lock still holds
    assert any(o.key == key for o in repo.backend.list(""))
    [o] = leftovers.remove(repo.storage, leftovers.removable_ids(planned), now, SIX_H)
    assert o.action == leftovers.REMOVED and "backup folder without a manifest" in o.reason
    assert list(repo.backend.list("")) == []


def test_wal_pins_catalog_and_locks_are_never_listed(repo, tmp_path):
    with repo.begin("postgres", "logical_dump", DAY) as w:
        with w.open_file("dump.pgc") as f:
            f.write(b"a complete backup")
    kept = w.committed
    pin = pruning.pin(repo, "postgres", "logical_dump", DAY)
    archive = WalArchive(repo.backend)
    for seg_name in ("000000010000000000000003", "000000010000000000000004.partial"):
        seg = tmp_path / seg_name
        seg.write_bytes(b"w" * 4096)
        archive.push(seg)
    archive.write_heartbeat(dt.datetime.now(dt.UTC), "0/4000000")
    with repo.storage.lock("postgres/logical_dump/2026-11-19"):  # a lock file, left on disk afterwards
        pass
    protected = {o.key for o in repo.backend.list("")}
    assert pin in protected and any(layout.parse_wal_key(k) for k in protected) and layout.WAL_HEARTBEAT in protected
    assert any(layout.parse_catalog_key(k) for k in protected)
    orphan = _orphan(repo)
    wal_tmp = repo.storage.root / "postgres/wal/00000001" / layout.temp_name("000000010000000000000005.zst")
    wal_tmp.write_bytes(b"never renamed")
    _age(repo.storage.root, dt.timedelta(days=30))

    found = listing.find(repo.storage)
    assert sorted((x.kind, x.key) for x in found) == sorted(
        [
            (listing.INCOMPLETE_BACKUP, orphan.rpartition("/")[0]),
            (listing.TEMP_FILE, wal_tmp.relative_to(repo.storage.root).as_posix()),
        ]
    )
    outcomes = leftovers.remove(repo.storage, None, dt.datetime.now(dt.UTC) + dt.timedelta(days=365), SIX_H)
    assert [o.action for o in outcomes] == [leftovers.REMOVED] * 2
    assert {o.key for o in repo.backend.list("")} == protected  # every WAL object, the pin, the catalog entry
    assert (repo.storage.root / layout.lock_key("postgres/logical_dump/2026-11-19")).exists()
    assert repo.list() == [kept] and repo.verify(kept).files == 1
    assert repo.gc_incomplete() == []  # the zero-age life cycle spares all of them too


def test_a_vanished_manifest_is_not_removed_as_a_leftover(repo):
    with repo.begin("redis", "snapshot", DAY) as w:
        with w.open_file("dump.rdb") as f:
            f.write(b"REDIS")
    b = w.committed
    repo.backend.delete(b.manifest_key)
    _age(repo.storage.root, dt.timedelta(days=2))
    [d] = leftovers.plan(repo.storage, dt.datetime.now(dt.UTC), SIX_H)
    assert not d.remove and "manifest vanished" in d.reason
    assert repo.gc_incomplete(system="redis") == []  # also when only the backups' area is listed


# -- S3: unfinished multipart uploads ----------------------------------------------------------


@pytest.fixture
def s3(tmp_path):
    subprocess.run(["bash", str(ROOT / "stack" / "s3.sh"), "up"], check=True, cwd=ROOT, capture_output=True)
    path = ROOT / ".stack" / "stack.env"
    env = {
        k: v
        for k, v in (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        if k.startswith("OFFSITE_S3_")
    }
    b = S3Backend.from_settings(OffsiteSettings.from_env(env), part_size=5 * MiB, backoff=0.01)
    b.prefix = f"test-leftovers-{uuid.uuid4().hex[:10]}/"
    yield b, env
    b.remove_temporaries()
    b.delete_many(o.key for o in b.list())
    hidden = b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix + ".").get("Contents", [])
    b.delete_many([k["Key"][len(b.prefix) :] for k in hidden])


def _uploads(b: S3Backend) -> list[str]:
    return [u["Key"] for u in b.client.list_multipart_uploads(Bucket=b.bucket, Prefix=b.prefix).get("Uploads", [])]


def test_unfinished_s3_uploads_of_a_killed_writer_are_listed_and_aborted(s3):
    backend, env = s3
    script = textwrap.dedent(f"""
        import os, signal
        from auction_backup_pipelines.repository.repository import Repository
        from auction_backup_pipelines.repository.s3 import S3Backend
        from auction_backup_pipelines.settings import OffsiteSettings
        b = S3Backend.from_settings(OffsiteSettings.from_env(), part_size={5 * MiB})
        b.prefix = {backend.prefix!r}
        with Repository(b, compression="none").begin("postgres", "logical_dump", "2026-11-20") as w:
            with w.open_file("first.bin") as f:
                f.write(b"published before the kill")
            with w.open_file("dump.pgc") as f:
                f.write(os.urandom({11 * MiB}))
                os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, **env})
    assert proc.returncode == -signal.SIGKILL
    assert len(_uploads(backend)) == 1
    # A live writer's upload in another partition: kept, whatever its age.
    other = BackupRef("postgres", "logical_dump", dt.date(2026, 11, 19), "20261120T020000Z-00000a").file_key("dump.pgc")
    live = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=backend.object_key(other))["UploadId"]

    now = dt.datetime.now(dt.UTC)
    found = listing.find(backend)
    killed = [x for x in found if x.key.startswith("postgres/logical_dump/2026-11-20/")]
    assert sorted(x.kind for x in killed) == [listing.INCOMPLETE_BACKUP, listing.UNFINISHED_UPLOAD]
    assert [x.kind for x in found if x.key == other] == [listing.UNFINISHED_UPLOAD]
    # The killed writer's lease is not live (its pid is gone), so it does not protect its leftovers.
    assert not any(x.locked for x in found)
    assert not any(d.remove for d in leftovers.plan(backend, now, SIX_H))  # younger than the safety age
    with backend.lock(BackupRef.parse(other.rpartition("/")[0]).partition_ref.lock_name):
        decisions = {d.leftover.key: d for d in leftovers.plan(backend, now + LATER, SIX_H)}
        assert not decisions[other].remove and "a live writer holds" in decisions[other].reason
        outcomes = leftovers.remove(backend, None, now + LATER, SIX_H)
    assert sorted(o.leftover.kind for o in outcomes if o.leftover) == [listing.INCOMPLETE_BACKUP, listing.UNFINISHED_UPLOAD]
    assert all(o.action == leftovers.REMOVED for o in outcomes) and "never completed" in " ".join(o.reason for o in outcomes)
    assert _uploads(backend) == [backend.object_key(other)]  # only the live writer's upload is left
    assert list(backend.list()) == []
    backend.client.abort_multipart_upload(Bucket=backend.bucket, Key=backend.object_key(other), UploadId=live)


# -- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def small_disk():
    """A 20 MB tmpfs: a real file system that fills up (root only, as the stack runs)."""
    where = Path(tempfile.mkdtemp(prefix="full-disk-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m,mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
        where.rmdir()


def test_a_full_disk_fails_in_one_line_and_leaves_nothing(small_disk):
    repo = Repository.local(small_disk / "repo")
    with repo.begin("redis", "snapshot", DAY) as w:
        with w.open_file("dump.rdb") as f:
            f.write(os.urandom(2 * MiB))
    earlier = w.committed
    with pytest.raises(RepositoryFullError) as caught:
        with repo.begin("redis", "snapshot", DAY + dt.timedelta(days=1)) as w:
            with w.open_file("dump.rdb") as f:
                for _ in range(40):  # 40 MiB of incompressible bytes into 20 MB
                    f.write(os.urandom(MiB))
    message = str(caught.value)
    assert re.fullmatch(
        rf"the repository at {small_disk / 'repo'} is full: \d+ bytes free, the backup needed more; nothing was published",
        message,
    )
    assert "\n" not in message
    left = _files(small_disk / "repo")
    assert earlier.manifest_key in left and not [k for k in left if ".tmp-" in k or "2026-11-21" in k], left
    assert repo.list() == [earlier] and repo.verify(earlier, deep=True).files == 1


def test_a_cli_backup_that_fills_the_disk_says_so_and_the_next_one_works(small_disk, big_db):
    name, grow = big_db
    root = small_disk / "repo"
    grow(2)
    first = _cli(root, "backup", "postgres", "--date", "2026-11-19", "--allow-late-capture", db=name)
    assert first.returncode == 0, first.stderr
    grow(30)  # the dump no longer fits in what is left of 20 MB
    full = _cli(root, "backup", "postgres", "--date", "2026-11-20", "--allow-late-capture", db=name)
    assert full.returncode == 1
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr
    assert re.fullmatch(
        rf"auction-backup: error: the repository at {root} is full: \d+ bytes free, the backup needed more; nothing was published",
        lines[0],
    )
    assert not [p for p in root.rglob(".*.tmp-*")], "a temporary file stayed"
    assert not (root / "postgres/logical_dump/2026-11-20").exists()
    check = _cli(root, "verify", "--deep", db=name)
    assert check.returncode == 0 and "2026-11-19" in check.stdout, check.stdout + check.stderr

    subprocess.run(["mount", "-o", "remount,size=120m", str(small_disk)], check=True)  # space freed
    again = _cli(root, "backup", "postgres", "--date", "2026-11-20", "--allow-late-capture", db=name)
    assert again.returncode == 0, again.stderr
    check = _cli(root, "verify", db=name)
    assert check.returncode == 0 and "2026-11-20" in check.stdout, check.stdout + check.stderr


# -- the Dagster life cycle: the retention sensor decides, the cleanup job removes -----------------


def test_the_retention_sensor_requests_and_the_cleanup_job_removes_leftovers(tmp_path):
    from dagster import DagsterInstance, build_sensor_context

    from auction_backup_pipelines.defs.retention import jobs
    from auction_backup_pipelines.defs.retention.sensors import build_retention_sensor
    from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource

    resource = BackupRepositoryResource(root=str(tmp_path / "backups"))
    repo = resource.repository()
    key = _orphan(repo)
    instance = DagsterInstance.ephemeral()
    sensor = build_retention_sensor(3600, False, leftover_safety_age=SIX_H)

    def tick():
        return sensor.evaluate_tick(build_sensor_context(instance=instance, resources={"backup_repo": resource}))

    young = tick()
    assert not young.run_requests and isinstance(young.skip_message, str)  # within the safety age: no run
    _age(repo.storage.root, LATER)
    [request] = tick().run_requests
    [planned] = leftovers.plan(repo.storage, safety_age=SIX_H)
    assert request.run_config["ops"][jobs.CLEANUP_OP]["config"]["leftovers"] == [planned.leftover.id]
    result = jobs.cleanup_job.execute_in_process(
        run_config=request.run_config, instance=instance, resources={"backup_repo": resource}
    )
    assert result.success
    assert key not in {o.key for o in repo.backend.list("")} and _files(repo.storage.root) == []
    outputs = [e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert outputs[0]["leftovers_removed_count"].value == 1
    assert "backup folder without a manifest" in outputs[0]["leftover_outcomes"].value
    assert not tick().run_requests  # nothing left to request

"""Crash safety, step by step: a backup, a deletion and a prune are failed at every storage
operation in turn (faulty_backend.py), on the local backend and on the real S3-compatible server.

Two kinds of fault at each step N:
- raised: the store refuses operation N (an exception every handler of the code sees);
- killed: a forked child runs the step and `os._exit`s at operation N, so no handler, `finally`
  or context exit runs; the parent then looks at the store as it is after that crash.

After each, the repository must list only complete backups, each verifying (deep) and reading
back exactly the bytes written, with no catalog error and no day lost; then the next cycle
(removal of unfinished writes and files without manifest, then a prune) must leave nothing but
complete backups behind. The backups are tiny so that the ~300 runs take seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.policy import leftovers, pruning, retention
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import catalog, layout
from auction_backup_pipelines.repository.layout import PartitionRef
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import Backend, LocalBackend
from auction_backup_pipelines.settings import OffsiteSettings
from tests.repository.faulty_backend import FaultyBackend, InjectedFault, count_operations, run_killed

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
DAYS = [dt.date(2026, 11, 19) - dt.timedelta(days=i) for i in range(4)]  # newest first
POLICY = {"redis/*": retention.Policy(daily=2)}
FILES = ("dump.rdb", "facts.json")


def content(day: dt.date, name: str, generation: int) -> bytes:
    return f"{name} of {day} generation {generation} ".encode() * 20


def put(repo: Repository, day: dt.date, generation: int = 1) -> None:
    with repo.begin("redis", "snapshot", day, started_at=NOW + dt.timedelta(seconds=generation)) as w:
        for name in FILES:
            with w.open_file(name) as f:
                f.write(content(day, name, generation))
        w.metadata["generation"] = generation


# -- the stores ------------------------------------------------------------------------------


class Stores:
    """Fresh stores of one kind: a folder each (local) or a prefix each (S3Proxy), each a copy of
    a template that the scenario's setup filled once (a copy costs a few requests, a setup dozens)."""

    def __init__(self, kind: str, tmp_path: Path):
        self.kind = kind
        self.tmp_path = tmp_path
        self.prefixes: list[str] = []
        self.parent_pid = os.getpid()
        self.session = boto3.session.Session()  # loads the S3 service model once, for every client
        self.settings = OffsiteSettings.from_env()
        self.config = S3Backend.from_settings(self.settings).client.meta.config if kind == "s3" else None
        self.client = self.new_client() if kind == "s3" else None

    def new_client(self) -> Any:
        s = self.settings
        return self.session.client(
            "s3",
            endpoint_url=s.endpoint_url,
            region_name=s.region or "us-east-1",
            config=self.config,  # the backend's own client settings (checksums, retries, addressing)
            aws_access_key_id=s.access_key_id or None,
            aws_secret_access_key=s.secret_access_key or None,
        )

    def backend(self, where: str) -> Backend:
        if self.kind == "local":
            return LocalBackend(where)
        # In a forked child: a client of its own (the parent's pooled connections stay the
        # parent's), built from the parent's loaded service model, which is fast.
        client = self.new_client() if os.getpid() != self.parent_pid else self.client
        b = S3Backend.from_settings(self.settings, backoff=0.01, client=client)
        b.prefix = where
        return b

    def factory(self, where: str) -> Callable[[], Backend]:
        cached: dict[int, Backend] = {}

        def make() -> Backend:
            pid = os.getpid()
            if pid not in cached:
                cached[pid] = self.backend(where)
            return cached[pid]

        return make

    def fresh(self) -> Callable[[], Backend]:
        """A factory of backends on one new empty store (called again in a forked child)."""
        if self.kind == "local":
            where = str(self.tmp_path / uuid.uuid4().hex[:8])
        else:
            where = f"test-{uuid.uuid4().hex[:10]}-crash/"
            self.prefixes.append(where)
        return self.factory(where)

    def copy(self, template: Callable[[], Backend]) -> Callable[[], Backend]:
        """A new store holding what `template`'s store holds (its published objects)."""
        source = template()
        make = self.fresh()
        if isinstance(source, LocalBackend):
            shutil.copytree(source.root, make().root, dirs_exist_ok=True)  # type: ignore[attr-defined]
            return make
        assert isinstance(source, S3Backend)
        target = make()
        assert isinstance(target, S3Backend)
        for o in source.list():
            source.client.copy_object(
                Bucket=source.bucket,
                Key=target.object_key(o.key),
                CopySource={"Bucket": source.bucket, "Key": source.object_key(o.key)},
            )
        return make

    def temporaries(self, backend: Backend) -> list[str]:
        """Unfinished writes: hidden temp files (local) or unfinished multipart uploads (S3)."""
        if isinstance(backend, LocalBackend):
            return [p.name for p in backend.root.rglob(layout.TEMP_GLOB)]
        assert isinstance(backend, S3Backend)
        ups = backend.client.list_multipart_uploads(Bucket=backend.bucket, Prefix=backend.prefix)
        return [u["Key"] for u in ups.get("Uploads", [])]

    def cleanup(self) -> None:
        for prefix in self.prefixes:
            b = self.backend(prefix)
            assert isinstance(b, S3Backend)
            b.remove_temporaries()
            keys = [o["Key"] for o in b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix).get("Contents", [])]
            b.client.delete_objects(Bucket=b.bucket, Delete={"Objects": [{"Key": k} for k in keys]}) if keys else None


@pytest.fixture(scope="module")
def s3_up():
    subprocess.run(["bash", str(ROOT / "stack" / "s3.sh"), "up"], check=True, cwd=ROOT, capture_output=True)


@pytest.fixture(params=["local", "s3"])
def stores(request, tmp_path) -> Iterator[Stores]:
    if request.param == "s3":
        request.getfixturevalue("s3_up")
    s = Stores(request.param, tmp_path)
    yield s
    s.cleanup()


# -- what must hold after a crash and after the next cycle --------------------------------------


def assert_consistent(repo: Repository, must_have: set[dt.date], where: str) -> None:
    """Only complete backups are listed; each verifies deeply and reads back its exact bytes."""
    found = catalog.audit(repo)
    assert not found.errors, f"{where}: {[f.detail for f in found.errors]}"
    listed = repo.list()
    for b in listed:
        repo.verify(b, deep=True)
        for name in FILES:
            with repo.open(b, name) as f:
                assert f.read() == content(b.day, name, b.metadata["generation"]), where
    assert must_have <= {b.day for b in listed}, f"{where}: a day was lost; listed {[b.prefix for b in listed]}"


def next_cycle_leaves_nothing(stores: Stores, backend: Backend, where: str) -> None:
    """The life cycle's next pass (the leftover cleanup of policy/leftovers.py once the safety age
    has passed, then a prune) leaves only complete backups: every object belongs to a listed
    backup (file, manifest, catalog entry) and no write is left unfinished."""
    later = dt.datetime.now(dt.UTC) + leftovers.DEFAULT_SAFETY_AGE + dt.timedelta(minutes=1)
    done = leftovers.remove(backend, now=later)
    if isinstance(backend, S3Backend) and any(o.action == leftovers.KEPT for o in done):
        # A killed writer's S3 lease stays valid for its TTL (5 min): until then its files look
        # exactly like a backup being written, and are rightly kept. Ending the lease as its
        # expiry would (the lock objects go), the next pass must then remove them.
        assert all("live writer" in o.reason for o in done if o.action == leftovers.KEPT), where
        locks = backend.client.list_objects_v2(Bucket=backend.bucket, Prefix=backend.prefix + ".locks/").get("Contents", [])
        for lock in locks:
            backend.client.delete_object(Bucket=backend.bucket, Key=lock["Key"])
        done = leftovers.remove(backend, now=later)
    assert all(o.action in (leftovers.REMOVED, leftovers.ALREADY_GONE) for o in done), f"{where}: {done}"
    repo = Repository(backend)
    expired = [b.key for b in retention.expired(pruning.plan(repo, NOW, POLICY))]
    outcomes = pruning.delete_expired(repo, expired, now=NOW, policies=POLICY)
    assert all(o.action != pruning.ERROR for o in outcomes), where
    assert_consistent(repo, set(), where)
    owned: set[str] = set()
    for b in repo.list():
        owned |= {b.manifest_key, b.ref.catalog_key, *(b.object_key(e) for e in b.files)}
    left = {o.key for o in backend.list()} - owned
    assert not left, f"{where}: leftovers {sorted(left)}"
    assert not stores.temporaries(backend), f"{where}: unfinished writes {stores.temporaries(backend)}"


# -- the scenarios: (setup on the bare store, the step under test, the days it must not lose) ----


def setup_two(backend: Backend) -> None:
    repo = Repository(backend)
    put(repo, DAYS[0])
    put(repo, DAYS[1])


def backup_again(backend: Backend) -> None:
    """A day backed up again: two new files, manifest, entry, then the older backup removed."""
    put(Repository(backend), DAYS[0], generation=2)


def delete_one(backend: Backend) -> None:
    repo = Repository(backend)
    repo.delete(repo.get("redis", "snapshot", DAYS[0]))


def setup_four(backend: Backend) -> None:
    repo = Repository(backend)
    for day in DAYS:
        put(repo, day)


def prune(backend: Backend) -> None:
    repo = Repository(backend)
    expired = [b.key for b in retention.expired(pruning.plan(repo, NOW, POLICY))]
    assert len(expired) == 2
    outcomes = pruning.delete_expired(repo, expired, now=NOW, policies=POLICY)
    if any(o.action == pruning.ERROR for o in outcomes):  # reported, as the cleanup job fails the run
        raise InjectedFault("; ".join(o.reason for o in outcomes))


SCENARIOS = {
    "backup": (setup_two, backup_again, {DAYS[0], DAYS[1]}),
    "delete": (setup_two, delete_one, {DAYS[1]}),
    "prune": (setup_four, prune, {DAYS[0], DAYS[1]}),
}


def fail_at_every_step(
    stores: Stores, setup: Callable[[Backend], None], step: Callable[[Backend], object], must_have: set[dt.date]
) -> int:
    """Run `step` on a copy of the set-up store once per storage operation N, failing at N (raised,
    then killed); check the store after each and after the next cycle. Returns the count of steps."""
    template = stores.fresh()
    setup(template())
    # On S3 a write() only fills a buffer in memory (tiny objects go up in the commit's one
    # PUT), so only the local backend counts writes as storage operations.
    writes = stores.kind == "local"
    total = count_operations(step, stores.copy(template), count_writes=writes)
    assert total >= 4, f"only {total} storage operations counted"
    for n in range(1, total + 1):
        for kill in (False, True):
            where = (
                f"{stores.kind} {getattr(step, '__name__', 'step')}: {'killed' if kill else 'fault'} at operation {n} of {total}"
            )
            make = stores.copy(template)
            if kill:
                assert run_killed(step, make, n, count_writes=writes), where
            else:
                with pytest.raises(InjectedFault):
                    step(FaultyBackend(make(), fail_at=n, count_writes=writes))
            assert_consistent(Repository(make()), must_have, where)
            next_cycle_leaves_nothing(stores, make(), where)
    return total


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_step_raised_or_killed_leaves_a_consistent_repository(stores, scenario):
    setup, step, must_have = SCENARIOS[scenario]
    fail_at_every_step(stores, setup, step, must_have)


def test_an_offsite_copy_raised_or_killed_at_every_step_leaves_a_consistent_destination(stores, tmp_path):
    source = Repository.local(str(tmp_path / "source"))
    put(source, DAYS[0])
    [backup] = source.list()

    def copy(backend: Backend) -> None:
        offsite.copy_backup(source, Repository(backend), backup)

    fail_at_every_step(stores, lambda backend: put(Repository(backend), DAYS[1]), copy, {DAYS[1]})


def test_local_objects_are_fsynced_before_their_rename_and_their_folder_after(tmp_path, monkeypatch):
    """What a kill cannot show (the page cache survives it, a power cut does not): every object
    of a backup reaches the disk before its name does, and its name before the manifest's."""
    trace: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        trace.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        trace.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    repo = Repository.local(str(tmp_path / "r"))
    put(repo, DAYS[0])
    renames = [i for i, (op, _) in enumerate(trace) if op == "replace"]
    published = [trace[i][1].split(" -> ")[1] for i in renames]
    assert len(published) == len(FILES) + 2  # the files, the manifest, the catalog entry
    assert published[len(FILES)].endswith("/manifest.json") and "/catalog/" in published[-1]
    for i, dst in zip(renames, published, strict=True):
        src = trace[i][1].split(" -> ")[0]
        assert ("fsync", src) in trace[:i], f"{dst} renamed before its bytes were synced"
        upto = renames[renames.index(i) + 1] if i != renames[-1] else len(trace)
        assert ("fsync", str(Path(dst).parent)) in trace[i:upto], f"{dst}: folder not synced before the next publication"


SEGMENT = "000000010000000000000003"
PINNED_DAY = DAYS[0]


def rewritten_objects(backend: Backend, generation: int, tmp: Path) -> None:
    """The objects the life cycle rewrites in place, at `generation`: the WAL segment being
    written (`.partial`, shipped again as it grows), the archive's heartbeat, a day's pin."""
    archive = WalArchive(backend)
    wal = tmp / f"{uuid.uuid4().hex}.partial"
    wal.write_bytes(f"wal generation {generation} ".encode() * 50)
    archive.push(wal, SEGMENT + ".partial")
    archive.write_heartbeat(NOW + dt.timedelta(minutes=generation), f"0/{generation}")
    pruning.pin(Repository(backend), "redis", "snapshot", PINNED_DAY, note=f"generation {generation}")


def test_rewritten_objects_are_never_read_half_written(stores, tmp_path):
    def setup(backend: Backend) -> None:
        put(Repository(backend), PINNED_DAY)
        rewritten_objects(backend, 1, tmp_path)

    def step(backend: Backend) -> None:
        rewritten_objects(backend, 2, tmp_path)

    template = stores.fresh()
    setup(template())
    writes = stores.kind == "local"
    total = count_operations(step, stores.copy(template), count_writes=writes)
    for n in range(1, total + 1):
        for kill in (False, True):
            where = f"{stores.kind} rewrite: {'killed' if kill else 'fault'} at operation {n} of {total}"
            make = stores.copy(template)
            if kill:
                assert run_killed(step, make, n, count_writes=writes), where
            else:
                with pytest.raises(InjectedFault):
                    step(FaultyBackend(make(), fail_at=n, count_writes=writes))
            backend = make()
            archive = WalArchive(backend)
            dest = tmp_path / "fetched"
            archive.fetch(SEGMENT, dest)  # proves the bytes against their record, or raises
            assert dest.read_bytes() in {f"wal generation {g} ".encode() * 50 for g in (1, 2)}, where
            assert archive.heartbeat() in {NOW + dt.timedelta(minutes=g) for g in (1, 2)}, where
            with backend.reader(PartitionRef("redis", "snapshot", PINNED_DAY).pin_key) as f:
                assert json.loads(f.read())["note"] in {"generation 1", "generation 2"}, where

"""The catalog (repository/catalog.py) and the manifests' own checksum, on a local folder and on S3.

Tampering is done the way it happens: bytes changed or removed in the store itself (through
the bare backend, below encryption), then the repository, `verify`, `list`, the restores and
the daily integrity check are asked about it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.redis import restore as redis_restore
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.keys import Key
from auction_backup_pipelines.repository.manifest import SELF_CHECKSUM, Backup, ManifestChecksumError, content_sha256
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.repository.storage import IntegrityError
from auction_backup_pipelines.settings import OffsiteSettings, RedisSettings
from tests.ops import synthetic_backups

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DAY = "2026-11-20"
MiB = 1 << 20


# -- repositories --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_settings():
    """S3Proxy running (started here when the stack did not), and its settings."""
    subprocess.run(["bash", str(ROOT / "stack" / "s3.sh"), "up"], check=True, cwd=ROOT)
    env = ROOT / ".stack" / "stack.env"
    pairs = (line.split("=", 1) for line in env.read_text().splitlines() if "=" in line) if env.exists() else ()
    os.environ.update({k: v for k, v in pairs if k.startswith("OFFSITE_S3_")})
    return OffsiteSettings.from_env()


def _s3_backend(s3_settings) -> S3Backend:
    b = S3Backend.from_settings(s3_settings, part_size=5 * MiB, backoff=0.01)
    b.prefix = f"test-catalog-{uuid.uuid4().hex[:10]}/"
    return b


def _empty(b: S3Backend) -> None:
    b.remove_temporaries()
    b.delete_many(o.key for o in b.list())
    hidden = b.client.list_objects_v2(Bucket=b.bucket, Prefix=b.prefix + ".").get("Contents", [])
    b.delete_many([k["Key"][len(b.prefix) :] for k in hidden])


@pytest.fixture(params=["local", "s3"])
def make_repo(request, tmp_path):
    """A factory of repositories (optionally encrypted) on the backend the test runs on."""
    made: list[S3Backend] = []

    def make(encryption: Encryption | None = None) -> Repository:
        if request.param == "local":
            return Repository.local(tmp_path / f"r{len(made)}-{uuid.uuid4().hex[:6]}", encryption=encryption)
        backend = _s3_backend(request.getfixturevalue("s3_settings"))
        made.append(backend)
        return Repository(backend, encryption=encryption)

    yield make
    for b in made:
        _empty(b)


def put(repo: Repository, artifact: str = "snapshot", day: str = DAY, **meta) -> Backup:
    with repo.begin("redis", artifact, day) as w:
        with w.open_file("data.bin") as f:
            f.write(b"x" * 256)
        w.metadata.update({"types": {"string": 3, "hash": 1}, "partition_count": 6, **meta})
    assert w.committed is not None
    return w.committed


def stored(repo: Repository, key: str) -> bytes:
    with repo.storage.reader(key) as f:
        return f.read()


def plant(repo: Repository, key: str, data: bytes) -> None:
    """Write bytes straight into the store, as someone with access to the bucket or folder would."""
    with repo.storage.writer(key) as f:
        f.write(data)


def resealed(raw: bytes) -> bytes:
    """A manifest's bytes with its own checksum recomputed, as a deliberate edit would leave them."""
    doc = json.loads(raw)
    doc[SELF_CHECKSUM] = content_sha256(doc)
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def problems(found: catalog.Audit) -> dict[str, str]:
    return {f.key: f.problem for f in found.findings}


# -- publishing and deleting ---------------------------------------------------------------------


def test_publish_records_the_manifest_digest_and_deletion_removes_the_entry_first(make_repo):
    repo = make_repo()
    b = put(repo)
    entry = catalog.read_entry(repo, b.ref)
    assert entry is not None and entry.backup == b.prefix
    assert entry.manifest_sha256 == hashlib.sha256(stored(repo, b.manifest_key)).hexdigest()
    assert repo.verify(b).manifest_sha256 == entry.manifest_sha256
    found = catalog.audit(repo)
    assert found.findings == [] and found.backups == [b]

    # A crash during deletion, right after the entry went: the backup is still complete and
    # only "not in the catalog" (a warning), never a missing or changed manifest.
    original = repo.backend.delete

    def crash_on_manifest(key: str) -> None:
        if key == b.manifest_key:
            raise OSError("power cut")
        original(key)

    repo.backend.delete = crash_on_manifest  # type: ignore[method-assign]
    with pytest.raises(OSError, match="power cut"):
        repo.delete(b)
    repo.backend.delete = original  # type: ignore[method-assign]
    found = catalog.audit(repo)
    assert problems(found) == {b.prefix: catalog.NOT_IN_CATALOG} and found.errors == [] and found.backups == [b]
    repo.delete(b)  # the rerun
    assert catalog.audit(repo).findings == [] and list(repo.backend.list("")) == []


def test_a_day_backed_up_again_replaces_the_older_entry(make_repo):
    repo = make_repo()
    first = put(repo)
    second = put(repo)
    assert catalog.read_entry(repo, first.ref) is None and catalog.read_entry(repo, second.ref) is not None
    assert catalog.audit(repo).findings == []


# -- what the audit finds ------------------------------------------------------------------------


def test_a_deleted_manifest_is_reported_missing_and_the_others_still_pass(make_repo):
    repo = make_repo()
    victim, other = put(repo, day="2026-11-19"), put(repo, day="2026-11-20")
    repo.storage.delete(victim.manifest_key)
    assert repo.list() == [other]  # the listing alone no longer shows it
    found = catalog.audit(repo)
    assert problems(found) == {victim.prefix: catalog.MANIFEST_MISSING}
    assert found.backups == [other] and "is gone" in found.errors[0].detail
    with pytest.raises(IntegrityError, match="is missing"):
        repo.verify(victim)


def test_one_digit_changed_fails_the_manifest_own_checksum_everywhere(make_repo):
    repo = make_repo()
    b, other = put(repo, day="2026-11-19"), put(repo, day="2026-11-20")
    raw = stored(repo, b.manifest_key)
    assert raw.count(b'"partition_count": 6') == 1
    plant(repo, b.manifest_key, raw.replace(b'"partition_count": 6', b'"partition_count": 7'))
    found = catalog.audit(repo)
    assert problems(found) == {b.prefix: catalog.CHECKSUM_MISMATCH} and found.backups == [other]
    assert "does not match its own checksum" in found.errors[0].detail
    with pytest.raises(ManifestChecksumError, match=f"manifest {b.manifest_key} does not match its own checksum"):
        repo.get("redis", "snapshot", b.partition)
    with pytest.raises(ManifestChecksumError):
        repo.verify(b)  # the backup as it was loaded before the edit


def test_an_edit_with_a_recomputed_checksum_differs_from_the_catalog(make_repo):
    repo = make_repo()
    b = put(repo)
    edited = resealed(stored(repo, b.manifest_key).replace(b'"string": 3', b'"string": 4'))
    plant(repo, b.manifest_key, edited)
    assert repo.get("redis", "snapshot", DAY).metadata["types"]["string"] == 4  # self-consistent now
    found = catalog.audit(repo)
    assert problems(found) == {b.prefix: catalog.MANIFEST_CHANGED} and found.backups == []
    with pytest.raises(IntegrityError, match="changed after it was published.*differs from the catalog"):
        repo.verify(repo.get("redis", "snapshot", DAY))


def test_unreadable_manifests_are_reported_one_by_one_beside_intact_ones(make_repo):
    repo = make_repo()
    good = put(repo, day="2026-11-18")
    not_json = put(repo, day="2026-11-19")
    not_a_manifest = put(repo, day="2026-11-20")
    plant(repo, not_json.manifest_key, b"\x00garbage")
    plant(repo, not_a_manifest.manifest_key, resealed(b'{"files": []}'))
    found = catalog.audit(repo)
    assert problems(found) == {not_json.prefix: catalog.UNREADABLE, not_a_manifest.prefix: catalog.UNREADABLE}
    assert found.backups == [good]
    assert all(f.detail.startswith(f"manifest {f.key}/manifest.json is unreadable") for f in found.errors)
    listed = catalog.audit(repo, catalog=False)
    assert listed.backups == [good] and len(listed.errors) == 2


def test_a_backup_from_before_the_catalog_is_a_warning_until_adopted(make_repo):
    repo = make_repo()
    old, new = put(repo, day="2026-11-19"), put(repo, day="2026-11-20")
    doc = json.loads(stored(repo, old.manifest_key))
    del doc[SELF_CHECKSUM]  # as written before manifests carried a checksum
    plant(repo, old.manifest_key, json.dumps(doc).encode())
    repo.storage.delete(old.ref.catalog_key)
    found = catalog.audit(repo)
    assert problems(found) == {old.prefix: catalog.NOT_IN_CATALOG} and found.errors == [] and found.backups == [old, new]
    repo.verify(old)  # still usable
    adopted, skipped = catalog.adopt(repo, found)
    assert adopted == [old.prefix] and skipped == []
    assert catalog.audit(repo).findings == []
    # From now on the catalog protects it, although the manifest has no checksum of its own.
    doc["metadata"]["partition_count"] = 7
    plant(repo, old.manifest_key, json.dumps(doc).encode())
    assert problems(catalog.audit(repo)) == {old.prefix: catalog.MANIFEST_CHANGED}


# -- encryption: the bucket alone cannot forge ---------------------------------------------------


def test_an_encrypted_repository_refuses_forged_and_swapped_manifests_and_entries(make_repo):
    repo = make_repo(Encryption([Key("k1", os.urandom(32))]))
    victim, donor, good = put(repo, day="2026-11-18"), put(repo, day="2026-11-19"), put(repo, day="2026-11-20")
    # Someone with the bucket but not the key writes a plaintext manifest that is self-consistent
    # (one count changed, checksum recomputed) and a catalog entry that matches it.
    doc = json.loads(victim.to_json())
    doc["metadata"]["partition_count"] = 7
    forged = resealed(json.dumps(doc).encode())
    plant(repo, victim.manifest_key, forged)
    entry = catalog.Entry(victim.prefix, hashlib.sha256(forged).hexdigest(), "2026-11-18T02:00:00Z")
    plant(repo, victim.ref.catalog_key, entry.to_json())
    # ...and moves another backup's genuine encrypted manifest and entry under the donor's keys.
    plant(repo, donor.manifest_key, stored(repo, good.manifest_key))
    plant(repo, donor.ref.catalog_key, stored(repo, good.ref.catalog_key))
    found = catalog.audit(repo)
    assert problems(found) == {victim.prefix: catalog.UNREADABLE, donor.prefix: catalog.UNREADABLE}
    details = {f.key: f.detail for f in found.findings}
    assert "not an encrypted object" in details[victim.prefix]  # plaintext: refused, whatever it says
    assert "failed authentication" in details[donor.prefix]  # sealed for another key: refused
    assert found.backups == [good]
    with pytest.raises(IntegrityError):
        repo.verify(victim)
    # The entries alone: a forged one is refused too, while the genuine manifest is intact.
    plant(repo, victim.manifest_key, stored(repo, good.manifest_key))  # still not the victim's
    with pytest.raises(IntegrityError, match=f"catalog entry {victim.ref.catalog_key} is unreadable"):
        catalog.read_entry(repo, victim.ref)


# -- restores refuse before writing --------------------------------------------------------------


def test_redis_and_kafka_restores_refuse_an_edited_manifest_before_connecting(tmp_path):
    repo = Repository.local(tmp_path / "r")
    snap = synthetic_backups.redis_snapshot(repo, dt.date(2026, 11, 20))
    topic = synthetic_backups.kafka_topic_day(repo, "bids", dt.date(2026, 11, 20))
    for b in (snap, topic):
        raw = stored(repo, b.manifest_key)
        plant(repo, b.manifest_key, resealed(raw.replace(b'"size": ', b'"size": 1', 1)))
    # Nothing listens on port 1: an error about the target would mean the restore got that far.
    nowhere = RedisSettings(host="127.0.0.1", port=1)
    with pytest.raises(IntegrityError, match=f"manifest {snap.manifest_key} changed after it was published"):
        redis_restore.restore_snapshot(nowhere, repo, repo.get("redis", "snapshot", "2026-11-20"), force=True)
    with pytest.raises(IntegrityError, match=f"manifest {topic.manifest_key} changed after it was published"):
        kafka_restore.restore_topics(repo, ("2026-11-20", "2026-11-20"), ["bids"], "127.0.0.1:1", timeout=3)


def test_pitr_refuses_a_base_backup_whose_manifest_was_edited_before_creating_anything(pg_settings, tmp_path):
    from auction_backup_pipelines.postgres import pitr
    from auction_backup_pipelines.postgres.wal_archive import WalArchive

    repo = Repository.local(tmp_path / "r")
    with repo.begin("postgres", "base_backup", DAY) as w:
        with w.open_file("base.tar") as f:
            f.write(b"t" * 512)
        w.metadata.update(timeline=1, start_lsn="0/2000028", stop_lsn="0/2000100", stop_time="2026-11-20T02:00:05+00:00")
    b = w.committed
    raw = stored(repo, b.manifest_key)
    plant(repo, b.manifest_key, raw.replace(b'"timeline": 1', b'"timeline": 2'))
    target = tmp_path / "pitr"
    with pytest.raises(ManifestChecksumError, match=f"manifest {b.manifest_key} does not match its own checksum"):
        pitr.restore_to_time(pg_settings, repo, WalArchive(repo.backend), None, target)
    assert not target.exists()


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(root), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def test_cli_postgres_restore_of_an_edited_manifest_leaves_the_target_untouched(pg_settings, tmp_path, scratch_db):
    from auction_backup_pipelines.postgres import client as pg_client
    from auction_backup_pipelines.postgres.logical_dump import backup_logical

    # A source database of this test (its name starts with the scratch name: dropped afterwards too).
    source = dataclasses.replace(pg_settings, dbname=f"{scratch_db}_src")
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{source.dbname}"')
        admin.execute(f'CREATE DATABASE "{scratch_db}"')
    with pg_client.connect(source) as conn:
        conn.execute("CREATE TABLE bids (id int PRIMARY KEY, amount int)")
        conn.execute("INSERT INTO bids SELECT i, i * 10 FROM generate_series(1, 500) i")
    root = tmp_path / "backups"
    repo = Repository.local(root)
    backup = backup_logical(source, repo, DAY)
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE precious (v text)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
        before = pg_client.table_fingerprints(conn)

    original = stored(repo, backup.manifest_key)
    table, facts = sorted(backup.metadata["tables"].items())[0]
    doc = json.loads(original)
    doc["metadata"]["tables"][table]["rows"] = facts["rows"] + 1  # one digit
    one_digit = json.dumps(doc, indent=2, sort_keys=True).encode()
    restore = ("restore", "postgres", "--date", DAY, "--target-db", scratch_db, "--force")
    for edited, phrase in ((one_digit, "does not match its own checksum"), (resealed(one_digit), "differs from the catalog")):
        plant(repo, backup.manifest_key, edited)
        done = _cli(root, *restore)
        assert done.returncode == 1 and phrase in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith(f"auction-backup: error: manifest {backup.manifest_key}")
        with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
            assert pg_client.table_fingerprints(conn) == before

    plant(repo, backup.manifest_key, original)  # the control: the genuine manifest restores
    done = _cli(root, *restore)
    assert done.returncode == 0, done.stderr
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        restored = pg_client.table_fingerprints(conn)
    assert "precious" not in restored and any(name.endswith("bids") for name in restored), restored


# -- the CLI's view ------------------------------------------------------------------------------


def test_cli_verify_and_list_report_each_problem_and_exit_1(tmp_path):
    root = tmp_path / "backups"
    repo = Repository.local(root)
    good, missing, edited, broken, legacy = (put(repo, day=f"2026-11-1{i}") for i in range(5))
    repo.storage.delete(missing.manifest_key)
    raw = stored(repo, edited.manifest_key)
    plant(repo, edited.manifest_key, raw.replace(b'"partition_count": 6', b'"partition_count": 7'))
    plant(repo, broken.manifest_key, b"not json")
    repo.storage.delete(legacy.ref.catalog_key)

    done = _cli(root, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert f"ok      {good.prefix}" in lines and f"ok      {legacy.prefix}" in lines
    assert f"ERROR   {missing.prefix}: the catalog recorded" in done.stdout
    assert f"ERROR   {edited.prefix}: manifest {edited.manifest_key} does not match its own checksum" in done.stdout
    assert f"ERROR   {broken.prefix}: manifest {broken.manifest_key} is unreadable" in done.stdout
    assert f"WARNING {legacy.prefix}: complete, but not in the catalog" in done.stdout
    assert lines[-1] == "2 ok, 3 failed, 1 warning(s)"

    done = _cli(root, "verify", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["failed"] == 3
    assert sorted((r["key"], r["status"]) for r in report["results"]) == sorted(
        [
            (good.prefix, "ok"),
            (legacy.prefix, "ok"),
            (legacy.prefix, catalog.NOT_IN_CATALOG),
            (missing.prefix, catalog.MANIFEST_MISSING),
            (edited.prefix, catalog.CHECKSUM_MISMATCH),
            (broken.prefix, catalog.UNREADABLE),
        ]
    )

    done = _cli(root, "list", "--json")
    assert done.returncode == 1
    items = {i["key"]: i.get("problem") for i in json.loads(done.stdout)}
    assert items == {
        good.prefix: None,
        legacy.prefix: None,
        edited.prefix: catalog.CHECKSUM_MISMATCH,
        broken.prefix: catalog.UNREADABLE,
    }
    done = _cli(root, "list")
    assert done.returncode == 1 and f"UNREADABLE  {broken.prefix}" in done.stdout and good.backup_id in done.stdout

    # The operator accepts the losses, adopts the old backup, and the repository is clean again.
    plant(repo, edited.manifest_key, raw)
    repo.storage.delete(broken.manifest_key)
    done = _cli(root, "verify", "--adopt", "--forget", missing.prefix, "--forget", broken.prefix)
    assert done.returncode == 0, done.stdout
    assert f"adopted {legacy.prefix}: recorded in the catalog" in done.stdout
    done = _cli(root, "verify")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "3 ok, 0 failed, 0 warning(s)", done.stdout


# -- offsite copies and the Dagster layer --------------------------------------------------------


def test_an_offsite_copy_is_catalogued_there_and_an_edited_source_is_not_copied(tmp_path, s3_settings):
    src = Repository.local(tmp_path / "src")
    dst_backend = _s3_backend(s3_settings)
    dst = Repository(dst_backend)
    try:
        b, edited = put(src, day="2026-11-19"), put(src, day="2026-11-20")
        offsite.copy_backup(src, dst, b)
        assert catalog.audit(dst).findings == [] and catalog.audit(dst).backups == [b]
        plant(src, edited.manifest_key, resealed(stored(src, edited.manifest_key).replace(b'"hash": 1', b'"hash": 2')))
        with pytest.raises(IntegrityError, match="differs from the catalog"):
            offsite.copy_backup(src, dst, edited)
        assert [x.prefix for x in dst.list()] == [b.prefix]
    finally:
        _empty(dst_backend)


def test_the_daily_integrity_check_fails_on_a_missing_manifest_and_metadata_carries_the_digest(tmp_path):
    from dagster import AssetCheckSeverity, build_asset_check_context

    from auction_backup_pipelines.defs.redis.checks import redis_snapshot_integrity
    from auction_backup_pipelines.defs.shared.metadata import backup_metadata
    from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource

    root = tmp_path / "backups"
    repo = Repository.local(root)
    older = synthetic_backups.redis_snapshot(repo, dt.date(2026, 11, 19))
    newest = synthetic_backups.redis_snapshot(repo, dt.date(2026, 11, 20))
    assert backup_metadata(repo, newest)["manifest_sha256"] == hashlib.sha256(stored(repo, newest.manifest_key)).hexdigest()
    resource = BackupRepositoryResource(root=str(root))
    ok = redis_snapshot_integrity(build_asset_check_context(), backup_repo=resource)
    shown = ok.metadata["manifest_sha256"]
    assert ok.passed and getattr(shown, "value", shown) == backup_metadata(repo, newest)["manifest_sha256"]

    repo.storage.delete(older.manifest_key)  # not even the newest: any loss fails the check
    failed = redis_snapshot_integrity(build_asset_check_context(), backup_repo=resource)
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    assert f"{older.prefix}: {catalog.MANIFEST_MISSING}" in (failed.description or "")

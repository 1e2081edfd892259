"""The repository's promises: atomic publication, integrity, locking, permissions."""

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from auction_backup_pipelines.repository.manifest import NotFoundError
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError, LockedError, RepositoryError, StorageError

DAY = "2026-11-20"


def _write(repo, data=b"hello " * 1000, artifact="logical_dump", day=DAY, **meta):
    with repo.begin("postgres", artifact, day) as w:
        with w.open_file("dump.pgc") as f:
            f.write(data)
        w.metadata.update(meta)
    return w.committed


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_round_trip_records_sizes_and_checksums(tmp_path, compression):
    repo = Repository.local(tmp_path / "repo", compression=compression)
    data = os.urandom(300_000) + b"x" * 2_000_000
    backup = _write(repo, data, rows=3)
    entry = backup.file("dump.pgc")
    assert entry.size == len(data)
    if compression != "none":
        assert entry.stored_size < len(data)
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data
    assert repo.verify(backup).files == 1
    assert repo.verify(backup, deep=True).deep is True
    [listed] = repo.list("postgres", "logical_dump")
    assert listed == backup and listed.metadata == {"rows": 3}


def test_files_0600_and_folders_0700(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    backup = _write(repo)
    root = tmp_path / "repo"
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.name.startswith(".locks") or path.suffix == ".lock":
            continue
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert (root / backup.manifest_key).exists()


def test_world_writable_root_is_refused(tmp_path):
    root = tmp_path / "open"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(StorageError, match="world-writable"):
        Repository.local(root)


def test_failure_mid_stream_publishes_nothing(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    with pytest.raises(RuntimeError):
        with repo.begin("postgres", "logical_dump", DAY) as w:
            with w.open_file("dump.pgc") as f:
                f.write(b"partial" * 1000)
                raise RuntimeError("source died")
    assert repo.list() == []
    assert [p for p in (tmp_path / "repo").rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_killed_writer_leaves_nothing_complete(tmp_path):
    """SIGKILL mid-stream: no manifest, nothing listed, and gc removes the leftovers."""
    root = tmp_path / "repo"
    script = textwrap.dedent(
        f"""
        import os, signal
        from auction_backup_pipelines.repository.repository import Repository
        repo = Repository.local({str(root)!r})
        with repo.begin("postgres", "logical_dump", "{DAY}") as w:
            with w.open_file("first.bin") as f:
                f.write(b"a" * 100000)
            with w.open_file("dump.pgc") as f:
                f.write(os.urandom(1 << 20))
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    repo = Repository.local(root)
    assert repo.list() == []
    orphans = repo.gc_incomplete()
    assert any(k.endswith("first.bin.zst") for k in orphans)
    assert [p for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"] == []


def test_flipped_byte_detected_by_verify_and_by_open(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    backup = _write(repo, os.urandom(200_000))
    path = tmp_path / "repo" / backup.prefix / backup.file("dump.pgc").key
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        repo.verify(backup)
    with pytest.raises(IntegrityError):
        with repo.open(backup, "dump.pgc") as f:
            f.read()


def test_truncation_detected(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    backup = _write(repo, os.urandom(500_000))
    path = tmp_path / "repo" / backup.prefix / backup.file("dump.pgc").key
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(IntegrityError):
        repo.verify(backup)
    with pytest.raises(IntegrityError):
        with repo.open(backup, "dump.pgc") as f:
            f.read()


def test_rerun_of_a_day_replaces_the_older_backup_only_after_commit(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    first = _write(repo, b"one")
    with pytest.raises(RuntimeError):
        with repo.begin("postgres", "logical_dump", DAY) as w:
            with w.open_file("dump.pgc") as f:
                f.write(b"two")
            raise RuntimeError("crash before commit")
    assert repo.list() == [first]
    second = _write(repo, b"three")
    assert repo.list() == [second]
    assert repo.get("postgres", "logical_dump", DAY) == second


def test_concurrent_writer_of_same_partition_is_refused(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    with repo.begin("postgres", "logical_dump", DAY) as outer:
        with outer.open_file("dump.pgc") as f:
            f.write(b"y")
        with pytest.raises(LockedError, match="another backup"):
            with repo.begin("postgres", "logical_dump", DAY):
                pass
        # another day is independent
        with repo.begin("postgres", "logical_dump", "2026-11-21") as w:
            with w.open_file("dump.pgc") as f:
                f.write(b"x")


def test_get_missing_names_available_days(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    _write(repo)
    with pytest.raises(NotFoundError, match="2026-11-20"):
        repo.get("postgres", "logical_dump", "2026-11-01")
    with pytest.raises(RepositoryError, match="not a day"):
        repo.get("postgres", "logical_dump", "yesterday")


def test_delete_removes_manifest_first_and_is_idempotent(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    backup = _write(repo)
    repo.delete(backup)
    repo.delete(backup)
    assert repo.list() == []
    assert not (tmp_path / "repo" / "postgres").exists()


def _write_compressed(repo, chunks, content, day=DAY):
    with repo.begin("kafka", "topic_export", day) as w:
        with w.open_file("export.krb") as f:
            for c in chunks:
                f.write_compressed(c)
            f.compressed_content(*content)
    return w.committed


def test_bytes_compressed_by_a_helper_are_stored_as_they_come_and_read_back_verified(tmp_path):
    import hashlib

    import zstandard

    repo = Repository.local(tmp_path / "repo")
    data = os.urandom(300_000) + b"x" * 2_000_000
    frame = zstandard.ZstdCompressor(level=1).compress(data)
    backup = _write_compressed(repo, [frame[:1000], frame[1000:]], (len(data), hashlib.sha256(data).hexdigest()))
    entry = backup.file("export.krb")
    assert (entry.size, entry.stored_size, entry.compression) == (len(data), len(frame), "zstd")
    assert (tmp_path / "repo" / backup.prefix / entry.key).read_bytes() == frame  # nothing added, nothing recompressed
    with repo.open(backup, "export.krb") as f:
        assert f.read() == data
    assert repo.verify(backup, deep=True).deep is True


def test_a_helper_that_misreports_its_content_is_caught_when_the_file_is_read(tmp_path):
    import hashlib

    import zstandard

    repo = Repository.local(tmp_path / "repo")
    data = os.urandom(100_000)
    frame = zstandard.ZstdCompressor(level=1).compress(data)
    backup = _write_compressed(repo, [frame], (len(data), hashlib.sha256(data + b"!").hexdigest()))
    with pytest.raises(IntegrityError, match="content does not match"):
        with repo.open(backup, "export.krb") as f:
            f.read()
    with pytest.raises(IntegrityError):
        repo.verify(backup, deep=True)


def test_compressed_and_raw_writes_do_not_mix_and_publish_nothing(tmp_path):
    repo = Repository.local(tmp_path / "repo")
    with pytest.raises(ValueError, match="raw bytes after compressed ones"):
        with repo.begin("kafka", "topic_export", DAY) as w, w.open_file("export.krb") as f:
            f.write_compressed(b"\x28\xb5\x2f\xfd")
            f.write(b"raw")
    with pytest.raises(ValueError, match="without the size and sha256"):
        with repo.begin("kafka", "topic_export", DAY) as w, w.open_file("export.krb") as f:
            f.write_compressed(b"\x28\xb5\x2f\xfd")
    with pytest.raises(ValueError, match="only start a zstd stream"):
        with repo.begin("kafka", "topic_export", DAY) as w, w.open_file("export.krb", compression="gzip") as f:
            f.write_compressed(b"\x1f\x8b")
    assert repo.list("kafka") == []

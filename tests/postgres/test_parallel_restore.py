"""A logical restore runs `pg_restore -j N` from a private local copy of the dump, which never
outlives it, when parallel jobs can share the work; otherwise it streams the dump into one job."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.postgres import parallel_restore, stage_native
from auction_backup_pipelines.repository.storage import IntegrityError
from tests.ops.child_watch import ChildWatch

pytestmark = pytest.mark.integration
DAY = "2026-11-21"


@pytest.fixture
def staging_root(tmp_path, monkeypatch):
    """The temporary directory the restore stages its dump in: a folder of this test's own."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def restore_argv(watch: ChildWatch) -> tuple[str, ...]:
    (argv,) = [s.argv for s in watch.started if Path(s.argv[0]).name == "pg_restore"]
    return argv


@pytest.fixture
def balanced_db(pg_settings):
    """Settings of a database whose rows are spread over three tables, none with most of them:
    parallel jobs can share its load, so its restore stages the dump for `pg_restore -j`."""
    name = f"balanced_{secrets.token_hex(4)}"
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        with pg_client.connect(pg_settings, dbname=name) as conn:
            for table in ("lots", "bidders", "bids"):
                conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, note text)")
                conn.execute(f"INSERT INTO {table} SELECT i, md5(i::text) FROM generate_series(1, 4000) i")
            conn.commit()
        yield dataclasses.replace(pg_settings, dbname=name)
    finally:
        with pg_client.connect(pg_settings, dbname="postgres") as admin:
            pg_client.drop_database(admin, name)


def test_restore_runs_parallel_jobs_from_a_private_file_removed_afterwards(
    pg_settings, balanced_db, repo, scratch_db, staging_root, monkeypatch
):
    backup = pg.backup_logical(balanced_db, repo, DAY)
    assert parallel_restore.stream_reason(backup, jobs=2) == ""  # a third of the rows each
    modes: list[int] = []
    original = parallel_restore.pg_restore_file

    def note_folder_mode(s, dump, dbname, jobs):
        modes.append(stat.S_IMODE(dump.parent.stat().st_mode))
        return original(s, dump, dbname, jobs)

    monkeypatch.setattr(parallel_restore, "pg_restore_file", note_folder_mode)
    with ChildWatch(monkeypatch) as watch:
        result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)

    argv = restore_argv(watch)
    assert "--jobs=2" in argv
    staged = Path(argv[-1])  # a seekable file, not stdin: the only way pg_restore runs jobs in parallel
    assert staged.parent.parent == staging_root and staged.name == pg.DUMP_FILE
    assert modes == [0o700]
    # pg_restore -j 2 forks two workers beside its leader while it loads the data
    restore_pids = {s.pid for s in watch.seen if s.program == "pg_restore"}
    assert len(restore_pids) >= 3, watch.commands
    assert not staged.parent.exists() and list(staging_root.iterdir()) == []
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        serial, counts = pg_client.table_fingerprints(conn), pg_client.row_counts(conn)
    assert serial == backup.metadata["tables"]
    assert result.tables == len(serial) == 3 and result.rows_total == backup.metadata["rows_total"] == 12_000
    assert result.staged_by == "pg-stage"
    assert restore_records.for_logical(result, by="test")[0].details["staged_by"] == "pg-stage"  # in `restores`
    # fingerprints over several connections are exactly the one-connection ones
    function = backup.metadata["checksum_function"]
    assert parallel_restore.parallel_fingerprints(pg_settings, scratch_db, jobs=3, function=function) == serial
    assert parallel_restore.parallel_fingerprints(pg_settings, scratch_db, jobs=2, checksums=False) == counts


def test_a_dump_with_one_dominant_table_streams_into_one_job_without_a_local_copy(
    pg_settings, repo, scratch_db, staging_root, monkeypatch
):
    backup = pg.backup_logical(pg_settings, repo, DAY)  # Auction Flow's: bids hold most of the rows
    tables = backup.metadata["tables"]
    assert max(t["rows"] for t in tables.values()) >= 0.75 * backup.metadata["rows_total"] > 0
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=0))  # no room for a copy
    with ChildWatch(monkeypatch) as watch:
        result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)

    argv = restore_argv(watch)
    assert not any(a.startswith("--jobs") for a in argv)
    assert argv[-1].startswith(scratch_db + "__restoring_")  # the staging database, and no file: it reads stdin
    (stage,) = [s.argv for s in watch.started if Path(s.argv[0]).name == stage_native.HELPER]
    assert stage[1:] == ("--stdout", "-")  # pg-stage writes into pg_restore's stdin
    assert len({s.pid for s in watch.seen if s.program == "pg_restore"}) == 1  # one job, no workers
    assert list(staging_root.iterdir()) == []  # nothing was written locally
    assert result.staged_by.startswith("pg-stage, streamed into one pg_restore job (one table holds")
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == tables
    assert result.rows_total == backup.metadata["rows_total"]


def test_one_job_always_streams(pg_settings, balanced_db, repo, scratch_db, staging_root, monkeypatch):
    backup = pg.backup_logical(balanced_db, repo, DAY)
    assert parallel_restore.stream_reason(backup, jobs=4) == ""
    with ChildWatch(monkeypatch) as watch:
        result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=1)
    assert result.staged_by == "pg-stage, streamed into one pg_restore job (one job)"
    assert not any(a.startswith("--jobs") for a in restore_argv(watch))
    assert list(staging_root.iterdir()) == []
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn, backup.metadata["checksum_function"]) == backup.metadata["tables"]


def test_a_helper_built_before_it_could_stream_makes_the_restore_stage_a_copy(
    pg_settings, repo, scratch_db, tmp_path, monkeypatch
):
    """A stale install (the Python package updated, the helpers not rebuilt): the old pg-stage
    takes one argument and stops with its usage line, writing nothing anywhere."""
    old = tmp_path / "pg-stage"
    old.write_text('#!/bin/sh\n[ "$#" = 1 ] || { echo "usage: pg-stage <output-file> < archive" >&2; exit 2; }\nexit 3\n')
    old.chmod(0o755)
    monkeypatch.setattr(stage_native, "helper_path", lambda: str(old))
    backup = pg.backup_logical(pg_settings, repo, DAY)
    result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    assert result.staged_by.startswith("copy (")  # the plain copy, after both refusals
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pg-stage", "backups"])  # no file named "-"
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn, backup.metadata["checksum_function"]) == backup.metadata["tables"]


def test_a_streamed_dump_that_differs_from_its_manifest_fails_and_changes_nothing(
    pg_settings, repo, scratch_db, tmp_path, monkeypatch
):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    path = tmp_path / "backups" / backup.prefix / backup.file(pg.DUMP_FILE).key  # the repo fixture's root
    monkeypatch.setattr(type(repo), "verify", lambda self, b, deep=False: None)  # as if it changed after the check
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}" TEMPLATE template0')
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        conn.commit()
    import zstandard

    raw = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30)
    flipped = bytearray(raw)
    flipped[-200] ^= 0x01  # inside the last table's rows: the archive still parses
    path.write_bytes(zstandard.ZstdCompressor().compress(bytes(flipped)))
    with ChildWatch(monkeypatch) as watch, pytest.raises(IntegrityError, match="do(es)? not match the manifest"):
        pg.restore_logical(pg_settings, repo, backup, scratch_db, force=True, jobs=2)  # found at the stream's end
    assert [s.argv[1:] for s in watch.started if Path(s.argv[0]).name == stage_native.HELPER] == [("--stdout", "-")]
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(42,)]
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (scratch_db + "%",)).fetchall()
    assert left == [(scratch_db,)]  # the staging database is gone


@pytest.mark.parametrize("loaded", ["staged for -j", "streamed"])
def test_failed_restore_removes_the_staged_file_and_the_staging_database(
    pg_settings, balanced_db, repo, scratch_db, staging_root, monkeypatch, loaded
):
    backup = pg.backup_logical(balanced_db if loaded == "staged for -j" else pg_settings, repo, DAY)
    original = parallel_restore.run_capturing_stderr

    def killed_at_start(argv, env, **kwargs):  # pg_restore dies as if the OOM killer took it
        proc, err = original(argv, env, **kwargs)
        proc.kill()
        return proc, err

    monkeypatch.setattr(parallel_restore, "run_capturing_stderr", killed_at_start)
    with ChildWatch(monkeypatch) as watch, pytest.raises(pg_client.PostgresError, match="is unchanged") as failure:
        pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    assert "\n" not in str(failure.value)
    if loaded == "staged for -j":
        assert not Path(restore_argv(watch)[-1]).parent.exists()
    assert list(staging_root.iterdir()) == []
    assert pg_client.database_objects(pg_settings, scratch_db) is None
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (scratch_db + "%",)).fetchall()
    assert left == []


def test_too_little_disk_for_the_dump_is_refused_in_one_line(
    pg_settings, balanced_db, repo, scratch_db, staging_root, monkeypatch
):
    backup = pg.backup_logical(balanced_db, repo, DAY)
    real = shutil.disk_usage
    free = backup.file(pg.DUMP_FILE).size  # the dump alone would fit, without the spare room

    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))
    with pytest.raises(parallel_restore.StagingSpaceError, match=r"the restore needs .* MiB .* free") as refused:
        pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert "\n" not in str(refused.value)
    assert list(staging_root.iterdir()) == []
    assert pg_client.database_objects(pg_settings, scratch_db) is None


# -- staging by the pg-stage helper (stage_native.py) --------------------------------------------


def read_toc_offsets(path: Path) -> tuple[dict[int, tuple[int, int]], bytes]:
    """Written here from pg_backup_archiver.c, independent of the helper: each TOC entry's data
    offset (flag, offset) by dump id, for archive 1.14; and the bytes after the TOC."""
    data = path.read_bytes()
    assert data[:5] == b"PGDMP" and data[5:7] == bytes([1, 14]), data[:8]
    int_size, off_size, pos = data[8], data[9], 11

    def read_int() -> int:
        nonlocal pos
        sign, value = data[pos], int.from_bytes(data[pos + 1 : pos + 1 + int_size], "little")
        pos += 1 + int_size
        return -value if sign else value

    def read_str() -> bytes | None:
        nonlocal pos
        n = read_int()
        if n < 0:
            return None
        pos += n
        return data[pos - n : pos]

    read_int()  # compression
    [read_int() for _ in range(7)]
    [read_str() for _ in range(3)]
    entries = {}
    for _ in range(read_int()):
        dump_id = read_int()
        read_int()
        [read_str() for _ in range(4)]
        read_int()
        [read_str() for _ in range(8)]
        while read_str() is not None:
            pass
        entries[dump_id] = (data[pos], int.from_bytes(data[pos + 1 : pos + 1 + off_size], "little"))
        pos += 1 + off_size
    return entries, data


def sql_script(s, dump: Path) -> list[bytes]:
    """The SQL pg_restore makes of `dump`, without the random key of its \\restrict lines."""
    out = subprocess.run([pg_client.pg_bin("pg_restore", s.bin_dir), "-f", "-", str(dump)], capture_output=True, check=True)
    return [line for line in out.stdout.splitlines() if not line.startswith((b"\\restrict", b"\\unrestrict"))]


def test_the_staged_dump_has_its_data_offsets_and_restores_the_same_script(pg_settings, repo, tmp_path):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    original, staged = tmp_path / "original.pgc", tmp_path / "staged.pgc"
    with repo.open(backup, pg.DUMP_FILE) as source, open(original, "wb") as out:
        shutil.copyfileobj(source, out)
    helper = stage_native.helper_path()
    assert helper, "pg-stage is not installed: run `bash stack/install.sh`"
    with repo.open(backup, pg.DUMP_FILE) as source:
        assert stage_native.restage(helper, source, staged) == ""

    before, _ = read_toc_offsets(original)
    after, data = read_toc_offsets(staged)
    with_data = [i for i, (flag, _) in before.items() if flag == 1]  # piped: "offset not set"
    assert with_data and len(with_data) == len(backup.metadata["tables"])
    for dump_id in with_data:
        flag, offset = after[dump_id]
        assert flag == 2  # "offset set", pointing at that entry's data block
        assert data[offset] == 1 and int.from_bytes(data[offset + 2 : offset + 6], "little") == dump_id
    assert sql_script(pg_settings, staged) == sql_script(pg_settings, original)  # every row, in order
    assert staged.stat().st_size < original.stat().st_size  # a chunk header per MiB, not per row


def test_an_archive_it_was_not_written_for_is_copied_as_it_is(pg_settings, repo, scratch_db, tmp_path, monkeypatch):
    gzip_dump = tmp_path / "plain.pgc"
    subprocess.run(
        [pg_client.pg_bin("pg_dump", pg_settings.bin_dir), "-Fc", "-f", str(gzip_dump), pg_settings.dbname],
        env=pg_client.child_env(pg_settings),
        check=True,
    )
    with open(gzip_dump, "rb") as source:
        why = stage_native.restage(stage_native.helper_path() or "", source, tmp_path / "out.pgc")
    assert "compressed archive" in why

    backup = pg.backup_logical(pg_settings, repo, DAY)
    assert parallel_restore.stream_reason(backup, jobs=2)  # it would stream, with the helper
    monkeypatch.setattr(stage_native, "helper_path", lambda: None)  # a machine without the helper
    result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    assert result.staged_by == "copy (pg-stage is not installed)"
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == backup.metadata["tables"]


def test_an_archive_the_helper_refuses_to_stream_is_copied_and_restored_instead(
    pg_settings, repo, scratch_db, tmp_path, monkeypatch
):
    """A dump pg-stage was not written for (here gzip-compressed by pg_dump itself) makes it exit
    before writing a byte: pg_restore reads nothing, and the same staging database gets the copy."""
    made = pg.backup_logical(pg_settings, repo, "2026-11-20")
    gzip_dump = tmp_path / "plain.pgc"
    subprocess.run(
        [pg_client.pg_bin("pg_dump", pg_settings.bin_dir), "-Fc", "-f", str(gzip_dump), pg_settings.dbname],
        env=pg_client.child_env(pg_settings),
        check=True,
    )
    with repo.begin("postgres", pg.LOGICAL_DUMP, DAY) as w:
        with w.open_file(pg.DUMP_FILE) as f, open(gzip_dump, "rb") as source:
            f.copy_from(source)
        w.metadata.update({k: made.metadata[k] for k in ("tables", "rows_total", "content_checksums", "checksum_function")})
    backup = w.committed
    assert parallel_restore.stream_reason(backup, jobs=2)  # it is meant to stream

    with ChildWatch(monkeypatch) as watch:
        result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    stages = [s.argv[1:] for s in watch.started if Path(s.argv[0]).name == stage_native.HELPER]
    assert stages[0] == ("--stdout", "-") and len(stages) == 2  # asked to stream, then to stage: it refused both
    assert len([s for s in watch.started if Path(s.argv[0]).name == "pg_restore"]) == 2
    assert result.staged_by.startswith("copy (pg-stage: ") and "compressed archive" in result.staged_by
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn, made.metadata["checksum_function"]) == made.metadata["tables"]


def test_large_objects_are_staged_and_restored(pg_settings, repo, scratch_db, tmp_path):
    """pg_dump writes large objects as a BLOBS block of its own kind: staged like table data."""
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{scratch_db}" TEMPLATE template0')
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body oid)")
        conn.execute(
            "INSERT INTO docs SELECT i, lo_from_bytea(0, convert_to(repeat('auction ' || i, 5000), 'UTF8')) FROM generate_series(1, 3) i"
        )
        conn.commit()
    dump = tmp_path / "piped.pgc"
    with open(dump, "wb") as out:  # written to a pipe, as our backups are: no data offsets
        pg_dump = subprocess.Popen(
            [pg_client.pg_bin("pg_dump", pg_settings.bin_dir), "-Fc", "-Z0", scratch_db],
            env=pg_client.child_env(pg_settings, scratch_db),
            stdout=subprocess.PIPE,
        )
        assert pg_dump.stdout is not None
        shutil.copyfileobj(pg_dump.stdout, out)
        assert pg_dump.wait() == 0
    staged = tmp_path / "staged.pgc"
    with open(dump, "rb") as source:
        assert stage_native.restage(stage_native.helper_path() or "", source, staged) == ""
    entries, data = read_toc_offsets(staged)
    assert any(flag == 2 and data[offset] == 3 for flag, offset in entries.values())  # the BLOBS block
    assert sql_script(pg_settings, staged) == sql_script(pg_settings, dump)  # lo_open/lowrite of every byte

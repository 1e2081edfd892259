"""A logical restore runs `pg_restore -j N` from a private local copy of the dump, which never outlives it."""

from __future__ import annotations

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


def test_restore_runs_parallel_jobs_from_a_private_file_removed_afterwards(
    pg_settings, repo, scratch_db, staging_root, monkeypatch
):
    backup = pg.backup_logical(pg_settings, repo, DAY)
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
    assert result.tables == len(serial) and result.rows_total == backup.metadata["rows_total"]
    assert result.staged_by == "pg-stage"
    assert restore_records.for_logical(result, by="test")[0].details["staged_by"] == "pg-stage"  # in `restores`
    # fingerprints over several connections are exactly the one-connection ones
    assert parallel_restore.parallel_fingerprints(pg_settings, scratch_db, jobs=3) == serial
    assert parallel_restore.parallel_fingerprints(pg_settings, scratch_db, jobs=2, checksums=False) == counts


def test_failed_restore_removes_the_staged_file_and_the_staging_database(
    pg_settings, repo, scratch_db, staging_root, monkeypatch
):
    backup = pg.backup_logical(pg_settings, repo, DAY)
    original = parallel_restore.run_capturing_stderr

    def killed_at_start(argv, env, **kwargs):  # pg_restore dies as if the OOM killer took it
        proc, err = original(argv, env, **kwargs)
        proc.kill()
        return proc, err

    monkeypatch.setattr(parallel_restore, "run_capturing_stderr", killed_at_start)
    with ChildWatch(monkeypatch) as watch, pytest.raises(pg_client.PostgresError, match="is unchanged") as failure:
        pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    assert "\n" not in str(failure.value)
    assert not Path(restore_argv(watch)[-1]).parent.exists()
    assert list(staging_root.iterdir()) == []
    assert pg_client.database_objects(pg_settings, scratch_db) is None
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        left = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (scratch_db + "%",)).fetchall()
    assert left == []


def test_too_little_disk_for_the_dump_is_refused_in_one_line(pg_settings, repo, scratch_db, staging_root, monkeypatch):
    backup = pg.backup_logical(pg_settings, repo, DAY)
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
    monkeypatch.setattr(stage_native, "helper_path", lambda: None)  # a machine without the helper
    result = pg.restore_logical(pg_settings, repo, backup, scratch_db, jobs=2)
    assert result.staged_by == "copy (pg-stage is not installed)"
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == backup.metadata["tables"]


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

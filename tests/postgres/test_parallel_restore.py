"""A logical restore runs `pg_restore -j N` from a private local copy of the dump, which never outlives it."""

from __future__ import annotations

import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.postgres import parallel_restore
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

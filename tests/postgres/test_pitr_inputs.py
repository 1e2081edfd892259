"""Hostile or malformed PITR inputs: refused in one line before anything exists, never run as code.

The target folder reaches /bin/sh through pg_ctl, so the CLI cases run against a real base
backup and archived WAL, with a target time inside the window: without the validation each
one would get as far as starting a server. The marker a shell would create is looked for
where that shell would run (the CLI's working directory). The tar cases build hostile tars
with tarfile, both on a bare stream and stored in a repository as a fake base backup.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard

from auction_backup_pipelines.errors import ConfigurationError, RefusedError
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.logical_day import scratch_dir
from auction_backup_pipelines.postgres.restore_target import extract_base_tar, validate_target_dir
from auction_backup_pipelines.postgres.wal_archive import SegmentRecord, WalArchive, segment_name
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError
from auction_backup_pipelines.settings import PostgresSettings
from tests.conftest import running_wal_receiver

ROOT = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 20)
MARKER = f"PWNED_{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def real_window(tmp_path_factory):
    """A repository holding a real base backup and the archived WAL after it; a target time inside."""
    settings = PostgresSettings.from_env()
    tmp = tmp_path_factory.mktemp("pitr-inputs")
    repo = Repository.local(tmp / "backups")
    with running_wal_receiver(settings, repo, tmp / "spool") as receiver:
        basebackup.take_base_backup(settings, repo, DAY)
        with pg_client.connect(settings) as conn:
            conn.execute("SELECT txid_current()")  # a commit after the backup, for recovery to replay
            target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        assert wait_for_archived_time(receiver.archive, target + dt.timedelta(seconds=1))
    pitr.check_target(pitr.recovery_window(repo, WalArchive(repo.backend)), target)  # inside the window
    return repo, target


@pytest.fixture
def workdir():
    """The CLI's working directory and the parent of the targets; the postgres user may write
    here, so a shell started by pg_ctl as postgres could leave its marker."""
    folder = scratch_dir("pitr-inputs-")
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _cli_pitr(repo: Repository, target: dt.datetime, target_dir: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo.backend.root)]
    argv += ["pitr", target.isoformat(), "--target-dir", target_dir, "--stop-after"]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300)


HOSTILE = {
    "command substitution": ("x$(touch {m})x", "'$'"),
    "backticks": ("x`touch {m}`x", "a backtick"),
    "double quote": ('x" & touch {m} & "x', "a double quote"),
    "newline": ("x\nrestore_command = 'touch {m}'\nx", "control or unprintable character '\\n'"),
}


@pytest.mark.integration
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_target_dir_is_refused_by_the_cli_and_never_runs(real_window, workdir, name):
    repo, target = real_window
    folder, phrase = HOSTILE[name]
    done = _cli_pitr(repo, target, f"{workdir}/{folder.format(m=MARKER)}", workdir)
    assert not (workdir / MARKER).exists(), "a shell ran a command from the folder name"
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("auction-backup: error: target folder ") and phrase in line, line
    assert line.endswith("Nothing was created.")
    assert list(workdir.iterdir()) == []  # no target folder, and no marker from a shell
    assert not (ROOT / MARKER).exists()


@pytest.mark.integration
@pytest.mark.parametrize(
    "name, phrase",
    [
        ("relative", "is relative; give an absolute path"),
        ("missing parent", "does not exist or is not a folder; create it first"),
        ("existing file", "exists and is not a folder"),
        ("inside a data directory", "is inside the PostgreSQL data directory"),
    ],
)
def test_malformed_target_dir_is_refused_in_one_line(real_window, workdir, name, phrase):
    repo, target = real_window
    (workdir / "a-file").write_text("keep me")
    (workdir / "a-cluster").mkdir()
    (workdir / "a-cluster" / "PG_VERSION").write_text("15\n")
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    folder = {
        "relative": "pitr-restore",
        "missing parent": f"{workdir}/missing/restore",
        "existing file": f"{workdir}/a-file",
        "inside a data directory": f"{workdir}/a-cluster/restore",
    }[name]
    done = _cli_pitr(repo, target, folder, workdir)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    [line] = done.stderr.splitlines()
    assert phrase in line and line.endswith("Nothing was created."), line
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before
    assert (workdir / "a-file").read_text() == "keep me"


@pytest.mark.integration
def test_a_target_with_a_space_recovers(pg_settings, real_window, workdir):
    repo, target = real_window
    result = pitr.restore_to_time(pg_settings, repo, WalArchive(repo.backend), target, workdir / "pitr restore", stop_after=True)
    assert result.data_dir == f"{workdir}/pitr restore/data" and result.running is False
    assert dt.datetime.fromisoformat(result.reached_transaction_time) <= target
    assert result.stop_with.startswith(f"pg_ctl -D '{workdir}/pitr restore/data' stop")
    # no folder name reaches the shell PostgreSQL runs restore_command with
    conf = (workdir / "pitr restore" / "data" / "postgresql.auto.conf").read_text()
    [command] = [line for line in conf.splitlines() if line.startswith("restore_command")]
    assert str(workdir) not in command


def test_validation_accepts_a_plain_new_folder_and_creates_nothing(tmp_path):
    assert validate_target_dir(f"{tmp_path}/a/../restore") == tmp_path / "restore"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").touch()
    with pytest.raises(RefusedError, match="is not empty"):
        validate_target_dir(tmp_path / "full")
    with pytest.raises(ConfigurationError, match="unprintable character '\\\\x00'"):
        validate_target_dir(f"{tmp_path}/a\0b")


# -- hostile tars ----------------------------------------------------------------------------------


def _tar(members: list[tuple[str, str, str]]) -> bytes:
    """A tar of (kind, name, link or content) members: kind is "dir", "file", "symlink" or "hardlink"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, extra in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            elif kind == "file":
                data = extra.encode()
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = extra
                tar.addfile(info)
    return buf.getvalue()


def _hostile_tars(outside: Path) -> dict[str, tuple[bytes, str]]:
    """Each tar escapes the data directory (`<parent>/restore/data`) into `outside` (`<parent>/outside`)."""
    return {
        "dot-dot": (_tar([("dir", ".", ""), ("file", "../../outside/evil", "x")]), "a path leaving the data directory"),
        "absolute": (_tar([("dir", ".", ""), ("file", f"{outside}/evil", "x")]), "an absolute path"),
        "symlink": (
            _tar([("dir", ".", ""), ("symlink", "pg_wal", str(outside)), ("file", "pg_wal/evil", "x")]),
            f"a symbolic link to '{outside}'",
        ),
        "hardlink": (_tar([("dir", ".", ""), ("hardlink", "evil", "/etc/passwd")]), "a hard link to '/etc/passwd'"),
    }


@pytest.mark.parametrize("kind", ["dot-dot", "absolute", "symlink", "hardlink"])
def test_extraction_refuses_members_that_are_not_plain_files_inside(tmp_path, kind):
    outside, dest = tmp_path / "outside", tmp_path / "restore" / "data"
    outside.mkdir()
    dest.mkdir(parents=True)
    raw, phrase = _hostile_tars(outside)[kind]
    with pytest.raises(IntegrityError, match="not a backup we wrote") as err:
        extract_base_tar(io.BytesIO(raw), dest, "postgres/base_backup/x")
    assert phrase in str(err.value) and "\n" not in str(err.value)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "evil").exists()


def test_extraction_writes_files_and_folders(tmp_path):
    raw = _tar(
        [
            ("dir", ".", ""),
            ("dir", "./pg_wal", ""),
            ("file", "pg_wal/000000010000000000000002", "w"),
            ("file", "PG_VERSION", "15"),
        ]
    )
    assert extract_base_tar(io.BytesIO(raw), tmp_path, "b") == 4
    assert (tmp_path / "pg_wal" / "000000010000000000000002").read_text() == "w"
    assert (tmp_path / "PG_VERSION").stat().st_mode & 0o777 == 0o600


def _fake_base_backup(repo: Repository, raw_tar: bytes, stop_time: dt.datetime) -> None:
    """A base backup record holding `raw_tar` (zstd, as pg_basebackup stores it) with WAL after it."""
    lsn = f"0/{2 * 0x1000000 + 0x28:X}"
    with repo.begin("postgres", "base_backup", "2026-11-20") as w:
        with w.open_file(basebackup.TAR_FILE, compression="none") as f:
            f.write(zstandard.ZstdCompressor().compress(raw_tar))
        w.metadata.update(start_lsn=lsn, stop_lsn=lsn, timeline=1, stop_time=stop_time.isoformat())
    for n in (3, 4):
        name = segment_name(1, n)
        archived = (stop_time + dt.timedelta(hours=n)).isoformat()
        rec = SegmentRecord(
            name=name, timeline=1, partial=False, size=1, sha256="-", stored_size=1, stored_sha256="-", archived_at=archived
        )
        with repo.backend.writer(layout.wal_record_key(name)) as out:
            out.write(json.dumps(dataclasses.asdict(rec)).encode())


@pytest.mark.parametrize("kind", ["dot-dot", "symlink"])
def test_restore_refuses_a_planted_base_backup_and_leaves_nothing(pg_settings, tmp_path, pitr_dir, kind):
    """A tar planted in an unencrypted repository (its manifest rewritten to match) cannot write
    outside the target: the restore refuses it and removes the half-made target."""
    outside = pitr_dir.parent / "outside"
    outside.mkdir()
    repo = Repository.local(tmp_path / "backups")
    stop_time = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    raw, phrase = _hostile_tars(outside)[kind]
    _fake_base_backup(repo, raw, stop_time)
    with pytest.raises(IntegrityError, match="not a backup we wrote") as err:
        pitr.restore_to_time(pg_settings, repo, WalArchive(repo.backend), stop_time + dt.timedelta(hours=1), pitr_dir)
    assert phrase in str(err.value)
    assert list(outside.iterdir()) == [] and not pitr_dir.exists()
    assert os.listdir(pitr_dir.parent) == ["outside"]

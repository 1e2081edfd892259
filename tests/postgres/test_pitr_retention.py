"""WAL retention on a real archive: after `prune`, `pitr --show-window` reports what is still
recoverable, and a recovery to a moment just inside that window gives that moment's rows."""

from __future__ import annotations

import datetime as dt
import re
import secrets

import pytest

from auction_backup_pipelines.cli.main import main
from auction_backup_pipelines.policy import wal_retention as wr
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.repository.repository import Repository
from tests.conftest import running_wal_receiver

pytestmark = pytest.mark.integration
TODAY = dt.datetime.now(dt.UTC).date()


@pytest.fixture
def probe_table(pg_settings):
    name = f"pitr_retention_{secrets.token_hex(3)}"
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    yield name
    with pg_client.connect(pg_settings) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def _segments(archive) -> list[int]:
    return sorted(r.segment_no for r in archive.records() if not r.partial and not r.name.endswith(".history"))


def test_prune_then_show_window_then_recover_just_inside_it(pg_settings, tmp_path, pitr_dir, probe_table, monkeypatch, capsys):
    # A tiny window, so the newest base backup is already the window's base; the local repository only.
    monkeypatch.setenv("PITR_WINDOW_DAYS", "0.000001")
    monkeypatch.delenv("OFFSITE_S3_BUCKET", raising=False)
    root = tmp_path / "backups"
    repo = Repository.local(root)
    with running_wal_receiver(pg_settings, repo, tmp_path / "spool") as receiver, pg_client.connect(pg_settings) as conn:
        archive = receiver.archive
        # An older base backup whose restore check failed: retention expires it, then its WAL
        # (each base backup ends with a segment switch, so its segments precede the next one's).
        old = basebackup.take_base_backup(pg_settings, repo, TODAY - dt.timedelta(days=2), extra={"verification": "failed"})
        conn.execute(f"INSERT INTO {probe_table} VALUES (1)")
        before_base = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        base = basebackup.take_base_backup(pg_settings, repo, TODAY - dt.timedelta(days=1))
        conn.execute(f"INSERT INTO {probe_table} VALUES (2)")  # the moment just inside is before this
        after = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        assert wait_for_archived_time(archive, after), "the WAL never reached the archive"
    start_seg = wr.segment_of_lsn(wr.parse_lsn(base.metadata["start_lsn"]))
    assert _segments(archive)[0] < start_seg  # WAL from before the kept base backup exists ...

    assert main(["--repo", str(root), "prune", "--local"]) == 0
    out = capsys.readouterr().out
    assert "expire (before the PITR window and outside every kept base backup)" in out
    assert [b.prefix for b in repo.list("postgres", "base_backup")] == [base.prefix]
    assert f"keep (WAL of kept base backup {old.prefix}" not in out and "deleted       local  WAL " in out
    assert _segments(archive)[0] >= start_seg  # ... and is gone; the window's WAL is whole
    assert main(["--repo", str(root), "wal-status"]) == 0, capsys.readouterr().out
    capsys.readouterr()

    assert main(["--repo", str(root), "pitr", "--show-window"]) == 0
    shown = capsys.readouterr().out
    m = re.match(r"recoverable window: (\S+ \S+) \.\. (\S+ \S+) \(UTC\)", shown)
    assert m, shown
    earliest = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
    stop_time = dt.datetime.fromisoformat(base.metadata["stop_time"])
    assert earliest == stop_time.replace(microsecond=0)  # starts at the kept base backup's end

    # Just inside the window: recovery from the kept base backup and the WAL retention kept.
    target = stop_time + dt.timedelta(milliseconds=1)
    result = pitr.restore_to_time(pg_settings, repo, archive, target, pitr_dir)
    with result.instance() as inst, pg_client.connect(inst.settings(pg_settings)) as restored:
        rows = [r[0] for r in restored.execute(f"SELECT id FROM {probe_table} ORDER BY id").fetchall()]
    assert result.base_backup == base.prefix and rows == [1]
    # Before the window (its WAL expired with the failed base backup) a recovery is refused up front.
    with pytest.raises(pitr.PitrError, match="before the earliest base backup"):
        pitr.check_target(pitr.recovery_window(repo, archive), before_base)

"""The first partition day when BACKUP_PARTITIONS_START is unset: chosen once, recorded in the
repository, never moved afterwards; and the Dagster loader uses it."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from auction_backup_pipelines.defs.shared import loading
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.partitions_start import LEAD_DAYS, first_partition_day
from auction_backup_pipelines.repository.repository import Repository

TODAY = dt.date(2026, 12, 2)


def publish(repo: Repository, day: str) -> None:
    with repo.begin("redis", "snapshot", day) as w:
        with w.open_file("data.bin") as f:
            f.write(b"bytes of " + day.encode())


def test_a_new_repository_starts_a_few_days_back_and_keeps_that_day(repo):
    assert first_partition_day(repo.storage, TODAY) == TODAY - dt.timedelta(days=LEAD_DAYS)
    record = json.loads((repo.storage.root / layout.PARTITIONS_START_RECORD).read_text())
    assert record == {"first_partition_day": "2026-11-29", "chosen_on": "2026-12-02"}
    # A month later, and with older backups added since, the start does not move.
    publish(repo, "2026-11-01")
    assert first_partition_day(repo.storage, TODAY + dt.timedelta(days=30)) == dt.date(2026, 11, 29)
    # The record is hidden: no listing takes it for a backup.
    assert [b.partition for b in repo.list()] == ["2026-11-01"]


def test_backups_older_than_the_lead_are_kept_in_the_partitions(repo):
    publish(repo, "2026-10-15")
    publish(repo, "2026-11-30")
    assert first_partition_day(repo.storage, TODAY) == dt.date(2026, 10, 15)


def test_an_unreadable_record_is_one_clear_line(repo):
    (repo.storage.root / layout.PARTITIONS_START_RECORD).write_text("{not json")
    with pytest.raises(ConfigurationError, match=r"unreadable: set BACKUP_PARTITIONS_START \(YYYY-MM-DD\) or remove"):
        first_partition_day(repo.storage, TODAY)


def test_the_loader_uses_the_recorded_day_when_the_variable_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("BACKUP_PARTITIONS_START")
    monkeypatch.setenv("BACKUP_ROOT", str(tmp_path / "backups"))
    loading.current_settings.cache_clear()
    try:
        first = loading.current_settings().partitions_start
        assert first == (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=LEAD_DAYS)).isoformat()
        assert (tmp_path / "backups" / layout.PARTITIONS_START_RECORD).exists()
        loading.current_settings.cache_clear()
        monkeypatch.setenv("BACKUP_PARTITIONS_START", "2026-01-31")  # the variable wins over the record
        assert loading.current_settings().partitions_start == "2026-01-31"
    finally:
        loading.current_settings.cache_clear()  # the next user reads the test environment again

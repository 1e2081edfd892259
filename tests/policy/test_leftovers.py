"""The leftover decision (policy/leftovers.py): the safety age, live locks, protected keys, reasons.

Pure: the candidates are built here and `now` is injected; nothing is listed or slept on.
"""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.policy import leftovers
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.leftovers import INCOMPLETE_BACKUP, TEMP_FILE, UNFINISHED_UPLOAD, Leftover

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
SIX_H = dt.timedelta(hours=6)
REF = BackupRef("postgres", "logical_dump", dt.date(2026, 11, 20), "20261121T020000Z-abcdef")
LOCK = REF.partition_ref.lock_name
TEMP = f"{REF.key}/.dump.pgc.zst.tmp-{'a' * 32}"


def _temp(age: dt.timedelta, locked: bool = False, key: str = TEMP, lock: str | None = LOCK) -> Leftover:
    return Leftover(TEMP_FILE, key, NOW - age, 50 << 20, lock, locked)


def _folder(age: dt.timedelta, **kw) -> Leftover:
    return Leftover(INCOMPLETE_BACKUP, REF.key, NOW - age, 3, LOCK, False, keys=(REF.file_key("dump.pgc.zst"),), **kw)


def test_removed_after_the_safety_age_not_before():
    young, old = _temp(SIX_H - dt.timedelta(minutes=1)), _temp(SIX_H + dt.timedelta(minutes=1))
    kept, removed = leftovers.decide([young, old], NOW, SIX_H)
    assert not kept.remove and "within the safety age (6.0 h)" in kept.reason
    assert removed.remove
    assert "temporary file of an unfinished write" in removed.reason and f"no writer holds the lock of {LOCK}" in removed.reason
    assert leftovers.removable_ids([kept, removed]) == [old.id]


def test_the_safety_age_is_a_setting():
    x = _folder(dt.timedelta(minutes=30))
    assert not leftovers.decide([x], NOW, SIX_H)[0].remove
    assert leftovers.decide([x], NOW, dt.timedelta(minutes=10))[0].remove


def test_a_live_lock_keeps_even_an_old_leftover():
    d = leftovers.decide([_temp(dt.timedelta(days=3), locked=True)], NOW, SIX_H)[0]
    assert not d.remove and "a live writer holds the lock of" in d.reason


def test_a_folder_the_catalog_records_is_a_vanished_manifest_not_a_leftover():
    d = leftovers.decide([_folder(dt.timedelta(days=3), catalogued=True)], NOW, SIX_H)[0]
    assert not d.remove and "verify --forget" in d.reason
    d = leftovers.decide([_folder(dt.timedelta(days=3))], NOW, SIX_H)[0]
    assert d.remove and "backup folder without a manifest (1 file(s), 3 bytes)" in d.reason


@pytest.mark.parametrize(
    "candidate",
    [
        Leftover(INCOMPLETE_BACKUP, "postgres/wal/00000001", NOW - dt.timedelta(days=9), 1, None, False),
        Leftover(INCOMPLETE_BACKUP, "postgres/logical_dump/2026-11-20/PINNED", NOW - dt.timedelta(days=9), 1, None, False),
        Leftover(INCOMPLETE_BACKUP, ".locks/postgres__logical_dump__2026-11-20.lock", NOW - dt.timedelta(days=9), 1, None, False),
        Leftover(
            TEMP_FILE, "postgres/wal/00000001/000000010000000000000003.partial.zst", NOW - dt.timedelta(days=9), 1, None, False
        ),
    ],
    ids=["wal-folder", "pin", "lock", "wal-partial-as-temp"],
)
def test_wal_pins_and_locks_are_refused_even_if_a_listing_offered_them(candidate):
    d = leftovers.decide([candidate], NOW, SIX_H)[0]
    assert not d.remove, d.reason


def test_a_temp_file_in_the_wal_area_is_not_wal_and_goes_after_the_safety_age():
    key = f"postgres/wal/00000001/.000000010000000000000003.zst.tmp-{'b' * 32}"
    d = leftovers.decide([_temp(dt.timedelta(hours=7), key=key, lock=None)], NOW, SIX_H)[0]
    assert d.remove and "no partition lock guards it" in d.reason


def test_an_unfinished_upload_has_its_own_reason_and_id():
    up = Leftover(UNFINISHED_UPLOAD, REF.file_key("dump.pgc"), NOW - dt.timedelta(hours=7), 0, LOCK, False, upload_id="u-1")
    d = leftovers.decide([up], NOW, SIX_H)[0]
    assert d.remove and "multipart upload started and never completed" in d.reason
    assert d.leftover.id.endswith("#u-1")

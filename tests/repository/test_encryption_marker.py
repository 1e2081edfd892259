"""Encryption fails closed: once a repository has held encrypted objects, writes without keys are
refused before anything is written (backups, WAL, pins, offsite copies), reads still work."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.encryption_marker import OFFSITE_KEY_SETTINGS, EncryptionRequiredError
from auction_backup_pipelines.repository.keys import Key
from auction_backup_pipelines.repository.layout import PartitionRef
from auction_backup_pipelines.repository.repository import Repository

DAY = "2026-11-20"
K1 = Key("k1", bytes(range(32)))
K2 = Key("k2", bytes(range(32, 64)))
SEGMENT = "000000010000000000000003"
NOON = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)


def _write(repo, data=b"rows" * 100, day=DAY, artifact="logical_dump"):
    with repo.begin("postgres", artifact, day) as w:
        with w.open_file("dump.pgc") as f:
            f.write(data)
    return w.committed


def _files(root: Path) -> set[str]:
    """Every file under the root, locks and temporaries included: what "nothing was written" compares."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _segment(tmp_path: Path) -> Path:
    seg = tmp_path / SEGMENT
    seg.write_bytes(os.urandom(1000) + b"\0" * 10_000)
    return seg


def _refusal(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "nothing was written" in message
    assert isinstance(excinfo.value, RefusedError)
    return message


def test_first_encrypted_write_records_the_marker_with_key_ids_only(tmp_path):
    root = tmp_path / "r"
    _write(Repository.local(root, encryption=Encryption([K1])))
    doc = json.loads((root / layout.ENCRYPTION_MARKER).read_bytes())  # plaintext: readable without keys
    assert doc["encrypted"] is True and doc["key_ids"] == ["k1"]
    assert base64.b64encode(K1.secret).decode() not in (root / layout.ENCRYPTION_MARKER).read_text()
    # Rotation: the new key id is added in front; a write with a known id leaves the marker alone.
    _write(Repository.local(root, encryption=Encryption([K2, K1])), day="2026-11-21")
    assert json.loads((root / layout.ENCRYPTION_MARKER).read_bytes())["key_ids"] == ["k2", "k1"]
    # A repository that never saw a key gets no marker and keeps working.
    plain = tmp_path / "plain"
    _write(Repository.local(plain))
    _write(Repository.local(plain), day="2026-11-21")
    assert not (plain / layout.ENCRYPTION_MARKER).exists()


def test_backup_without_keys_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "r"
    encrypted = Repository.local(root, encryption=Encryption([K2, K1]))
    backup = _write(encrypted)
    before = _files(root)
    plain = Repository.local(root)
    with pytest.raises(EncryptionRequiredError) as err:
        _write(plain, b"plaintext next to encrypted backups", day="2026-11-21")
    message = _refusal(err)
    assert "BACKUP_ENCRYPTION_KEYS" in message and "BACKUP_ENCRYPTION_KEY_FILE" in message
    assert "key ids: k2)" in message and str(root) in message  # the id that encrypted: k1 only decrypts
    assert _files(root) == before  # not even a lock file
    # Reading what does not need keys still works; with the keys, everything does.
    assert {o.key for o in plain.backend.list("postgres/")} == {backup.manifest_key, backup.object_key(backup.files[0])}
    assert encrypted.list() == [backup]
    encrypted.verify(backup, deep=True)


def test_wal_archive_pins_and_offsite_copies_obey_the_same_rule(tmp_path):
    root = tmp_path / "r"
    encrypted = Repository.local(root, encryption=Encryption([K1]))
    backup = _write(encrypted)
    WalArchive(encrypted.backend).push(_segment(tmp_path), SEGMENT)
    before = _files(root)
    plain = Repository.local(root)
    archive = WalArchive(plain.backend)
    partial = tmp_path / (SEGMENT + ".partial")
    partial.write_bytes(b"p" * 5000)
    with pytest.raises(EncryptionRequiredError, match="BACKUP_ENCRYPTION_KEYS"):
        archive.push(partial)
    with pytest.raises(EncryptionRequiredError):
        archive.write_heartbeat(NOON, "0/3000000")
    # Any other object written through the repository (a pin, say) passes the same check.
    with pytest.raises(EncryptionRequiredError):
        with plain.backend.writer(PartitionRef("postgres", "logical_dump", backup.day).pin_key) as f:
            f.write(b"{}")
    assert _files(root) == before

    # An offsite repository that holds encrypted copies, opened without its keys: the explicit
    # downgrade (allow_plaintext) no longer reaches it, and the message names the offsite settings.
    dst_root = tmp_path / "offsite"
    offsite.copy_backup(encrypted, Repository.local(dst_root, encryption=Encryption([K2])), backup)
    keyless_dst = Repository(Repository.local(dst_root).storage, key_settings=OFFSITE_KEY_SETTINGS)
    newer = _write(encrypted, b"newer" * 100)
    there = _files(dst_root)
    with pytest.raises(EncryptionRequiredError) as err:
        offsite.copy_backup(encrypted, keyless_dst, newer, allow_plaintext=True)
    message = _refusal(err)
    assert "OFFSITE_ENCRYPTION_KEYS" in message and "OFFSITE_ENCRYPTION_KEY_FILE" in message and "BACKUP_" not in message
    with pytest.raises(EncryptionRequiredError, match="OFFSITE_ENCRYPTION_KEYS"):
        offsite.copy_wal(WalArchive(encrypted.backend), WalArchive(keyless_dst.backend), allow_plaintext=True)
    assert _files(dst_root) == there


@pytest.mark.parametrize("evidence", ["manifest", "wal heartbeat"])
def test_without_a_marker_an_encrypted_object_is_evidence_enough(tmp_path, evidence):
    """A repository encrypted before markers existed, or whose marker was lost."""
    root = tmp_path / "r"
    encrypted = Repository.local(root, encryption=Encryption([K1]))
    if evidence == "manifest":
        backup = _write(encrypted)
        where = backup.manifest_key
    else:
        WalArchive(encrypted.backend).write_heartbeat(NOON, "0/3000000")
        where = layout.WAL_HEARTBEAT
    (root / layout.ENCRYPTION_MARKER).unlink()
    before = _files(root)
    with pytest.raises(EncryptionRequiredError) as err:
        _write(Repository.local(root), day="2026-11-21")
    message = _refusal(err)
    assert f"{where} is encrypted" in message and "k1" in message
    assert _files(root) == before
    # The next process that writes with keys puts the marker back.
    _write(Repository.local(root, encryption=Encryption([K1])), day="2026-11-22")
    assert (root / layout.ENCRYPTION_MARKER).exists()


def test_a_damaged_marker_still_refuses_and_no_message_shows_an_id_that_may_be_a_key(tmp_path):
    root = tmp_path / "r"
    secret = os.urandom(32)
    _write(Repository.local(root, encryption=Encryption([Key(secret.hex(), os.urandom(32))])))
    with pytest.raises(EncryptionRequiredError) as err:
        _write(Repository.local(root), day="2026-11-21")
    assert secret.hex()[:12] not in str(err.value) and "id not shown" in str(err.value)
    (root / layout.ENCRYPTION_MARKER).write_bytes(b"{not json")
    with pytest.raises(EncryptionRequiredError, match="key ids: not recorded"):
        _write(Repository.local(root), day="2026-11-21")

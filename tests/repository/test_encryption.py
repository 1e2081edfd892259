"""Encryption at rest: round trips, tampering, truncation, wrong keys, rotation, key files, WAL, offsite."""

import base64
import hashlib
import hmac
import io
import os
import stat
import struct
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import encryption as crypto
from auction_backup_pipelines.repository import keys, layout
from auction_backup_pipelines.repository.encryption import EncryptedBackend, Encryption, WrongKeyError
from auction_backup_pipelines.repository.keys import EncryptionError, Key
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import IntegrityError, LocalBackend, RepositoryError
from auction_backup_pipelines.settings import EncryptionSettings

DAY = "2026-11-20"
K1 = Key("k1", bytes(range(32)))
K2 = Key("k2", bytes(range(32, 64)))
SEG = 4096  # small segments so that a few KB span many of them


def _enc(*keys, segment=SEG):
    return Encryption(list(keys) or [K1], segment_size=segment)


def _write(repo, data, name="dump.pgc", day=DAY):
    with repo.begin("postgres", "logical_dump", day) as w:
        with w.open_file(name) as f:
            f.write(data)
    return w.committed


def _stored(root, backup, name="dump.pgc"):
    return Path(root) / backup.prefix / backup.file(name).key


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 5 * SEG, 300_000])
def test_round_trip_at_segment_edges(tmp_path, compression, size):
    repo = Repository.local(tmp_path / "r", compression=compression, encryption=_enc())
    data = os.urandom(size // 2) + b"b" * (size - size // 2)
    backup = _write(repo, data)
    with repo.open(backup, "dump.pgc") as f:
        assert f.read() == data
    assert repo.verify(backup).files == 1
    assert repo.verify(backup, deep=True).deep
    assert repo.list() == [backup]


def test_stored_bytes_and_manifest_are_ciphertext_but_listing_works(tmp_path):
    repo = Repository.local(tmp_path / "r", compression="none", encryption=_enc())
    secret = b"card 4111-1111-1111-1111 " * 500
    backup = _write(repo, secret)
    raw = _stored(tmp_path / "r", backup).read_bytes()
    manifest = (tmp_path / "r" / backup.manifest_key).read_bytes()
    assert raw.startswith(crypto.MAGIC) and b"4111" not in raw
    assert manifest.startswith(crypto.MAGIC) and b"sha256" not in manifest and b"dump.pgc" not in manifest
    assert crypto.peek_key_id(raw) == "k1"
    assert [b.backup_id for b in repo.list("postgres")] == [backup.backup_id]
    # 0600 files still (the encryption layer writes through the same backend)
    assert stat.S_IMODE(_stored(tmp_path / "r", backup).stat().st_mode) == 0o600


def test_flipped_byte_anywhere_is_an_integrity_error(tmp_path):
    repo = Repository.local(tmp_path / "r", encryption=_enc())
    backup = _write(repo, os.urandom(50_000))
    path = _stored(tmp_path / "r", backup)
    good = path.read_bytes()
    header = len(crypto.MAGIC) + 1 + len("k1") + crypto.SALT + crypto.PREFIX + 4 + crypto.CHECK
    for pos in (header + 5, len(good) // 2, len(good) - 1, len(crypto.MAGIC) + 1 + 2 + 3):
        raw = bytearray(good)
        raw[pos] ^= 0x01
        path.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError) as err:
            repo.verify(backup)
        assert str(backup.prefix) in str(err.value)
        with pytest.raises(IntegrityError, match="failed authentication|different key"):
            with repo.open(backup, "dump.pgc") as f:
                f.read()
    path.write_bytes(good)
    repo.verify(backup, deep=True)


# -- the construction itself: no repository, no manifest, no outer checksum ---------------------
# These tests read objects through EncryptedBackend or the decrypting reader alone, so a refusal
# can only come from the encryption layer (the repository's own sha256 check would also catch
# most of these, and would hide a construction that lets them through).

SEALED = SEG + crypto.TAG
TRUNCATED = r"failed authentication: the object is truncated \(its final segment is missing\)"
TAMPERED = r"failed authentication: the object is corrupt or tampered with"
OBJECT = "postgres/wal/00000001/000000010000000000000003.partial"  # rewritten in place every few seconds


class Header(NamedTuple):
    key_id: str
    salt: bytes
    prefix: bytes
    size: int  # where the segments start


def _header(raw):
    """An object's header fields, read as encryption.py's docstring lays them out."""
    at = len(crypto.MAGIC) + 1 + raw[len(crypto.MAGIC)]
    salt_end = at + crypto.SALT
    return Header(
        raw[len(crypto.MAGIC) + 1 : at].decode(),
        raw[at:salt_end],
        raw[salt_end : salt_end + crypto.PREFIX],
        salt_end + crypto.PREFIX + 4 + crypto.CHECK,
    )


def _split(raw):
    """(header bytes, sealed segments)."""
    size = _header(raw).size
    return raw[:size], [raw[i : i + SEALED] for i in range(size, len(raw), SEALED)]


def _seal(enc, data, name=OBJECT):
    out = io.BytesIO()
    sink = enc.encrypting(out, name)
    sink.write(data)
    sink.finish()
    return out.getvalue()


def _open(enc, raw, name=OBJECT):
    with enc.decrypting(io.BytesIO(raw), name) as f:
        return f.read()


def _seal_as_documented(key, data, name, flagged_last):
    """An object built from the documented format with `cryptography` alone, not encryption.py's
    code; `flagged_last` are the segments whose nonce says last=1 (a writer flags only the final one)."""
    salt, prefix = os.urandom(crypto.SALT), os.urandom(crypto.PREFIX)
    check = hmac.new(key.secret, b"key-check" + salt, hashlib.sha256).digest()[: crypto.CHECK]
    head = crypto.MAGIC + bytes([len(key.id)]) + key.id.encode() + salt + prefix + struct.pack(">I", SEG) + check
    aead = AESGCM(HKDF(hashes.SHA256(), 32, salt, b"auction-backup stream v1|" + key.id.encode()).derive(key.secret))
    chunks = [data[i : i + SEG] for i in range(0, len(data), SEG)] or [b""]
    return head + b"".join(
        aead.encrypt(prefix + struct.pack(">I", n) + bytes([n in flagged_last]), chunk, head + name.encode())
        for n, chunk in enumerate(chunks)
    )


def test_every_object_gets_its_own_salt_nonce_prefix_and_ciphertext():
    enc = _enc()
    data = b"x" * (4 * SEG)  # identical segments: only the salt, prefix and counter tell them apart
    objects = [_seal(enc, data) for _ in range(8)]  # one key, one object name, one plaintext
    headers = [_header(raw) for raw in objects]
    assert {h.key_id for h in headers} == {"k1"}
    assert len({h.salt for h in headers}) == len(objects)
    assert len({h.prefix for h in headers}) == len(objects)
    # A repeated (subkey, nonce) pair would show as the same sealed segment twice: it breaks GCM.
    segments = [segment for raw in objects for segment in _split(raw)[1]]
    assert len(segments) == 8 * 4 and len(set(segments)) == len(segments)
    assert all(_open(enc, raw) == data for raw in objects)


TAMPERING = {
    # case: (tampered object from (header, its segments, another version's segments), the error)
    "cut after 9 of 10 segments": (lambda h, s, o: h + b"".join(s[:9]), rf"segment 8 {TRUNCATED}"),
    "cut after 8 of 10 segments": (lambda h, s, o: h + b"".join(s[:8]), rf"segment 7 {TRUNCATED}"),
    "cut after the first segment": (lambda h, s, o: h + s[0], rf"segment 0 {TRUNCATED}"),
    "header only": (lambda h, s, o: h, r"truncated \(segment 0 incomplete\)"),
    "cut inside the header": (lambda h, s, o: h[:-5], "encryption header is truncated"),
    "cut mid-segment": (lambda h, s, o: h + b"".join(s)[:-100], rf"segment 9 {TAMPERED}"),
    "two segments swapped": (lambda h, s, o: h + s[1] + s[0] + b"".join(s[2:]), rf"segment 0 {TAMPERED}"),
    "a segment dropped": (lambda h, s, o: h + s[0] + b"".join(s[2:]), rf"segment 1 {TAMPERED}"),
    "a segment duplicated": (lambda h, s, o: h + s[0] + b"".join(s), rf"segment 1 {TAMPERED}"),
    "the last segment duplicated": (lambda h, s, o: h + b"".join(s) + s[-1], rf"segment 9 {TAMPERED}"),
    "appended garbage": (lambda h, s, o: h + b"".join(s) + os.urandom(50), rf"segment 9 {TAMPERED}"),
    # Same key, same name, same position: only a fresh salt and prefix per version refuse this.
    "a segment from another version": (lambda h, s, o: h + b"".join(s[:3] + o[3:4] + s[4:]), rf"segment 3 {TAMPERED}"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_tampered_stream_is_refused_by_the_encryption_layer_itself(tmp_path, case):
    build, error = TAMPERING[case]
    backend = EncryptedBackend(LocalBackend(tmp_path / "r"), _enc())
    path = tmp_path / "r" / OBJECT
    versions = []
    for _ in range(2):  # two versions, as a .partial rewrite makes: the second supplies the splice
        data = os.urandom(10 * SEG)
        with backend.writer(OBJECT) as f:
            f.write(data)
        versions.append(path.read_bytes())
    head, segments = _split(versions[0])
    assert [len(seg) for seg in segments] == [SEALED] * 10  # ten full segments, the last one flagged last
    path.write_bytes(build(head, segments, _split(versions[1])[1]))
    with pytest.raises(IntegrityError, match=error):
        with backend.reader(OBJECT) as f:
            f.read()
    path.write_bytes(versions[1])
    with backend.reader(OBJECT) as f:
        assert f.read() == data


def test_only_a_segment_flagged_last_ends_a_stream_built_as_documented():
    enc = _enc()
    data = os.urandom(4 * SEG)  # four full segments: nothing but the last flag marks the end
    assert _open(enc, _seal_as_documented(K1, data, OBJECT, {3})) == data
    with pytest.raises(IntegrityError, match=rf"segment 3 {TRUNCATED}"):
        _open(enc, _seal_as_documented(K1, data, OBJECT, set()))
    with pytest.raises(IntegrityError, match=rf"segment 1 {TAMPERED}"):
        _open(enc, _seal_as_documented(K1, data, OBJECT, {1, 3}))


def test_header_naming_another_key_is_refused_by_the_encryption_layer_itself():
    enc = _enc(K1, K2)  # both keys at hand: only the header says which one sealed the object
    data = os.urandom(3 * SEG)
    raw = _seal(enc, data)
    header = _header(raw)
    at = len(crypto.MAGIC) + 1
    assert raw[at : at + 2] == b"k1"
    swapped = raw[:at] + b"k2" + raw[at + 2 :]
    with pytest.raises(WrongKeyError, match="needs key id 'k2', but the key supplied under that id is a different key"):
        _open(enc, swapped)
    # A key check that matches k2 (only a holder of k2 could write one) gets no further: the
    # segments were sealed under k1's subkey, with the original header as associated data.
    check = hmac.new(K2.secret, b"key-check" + header.salt, hashlib.sha256).digest()[: crypto.CHECK]
    forged = swapped[: header.size - crypto.CHECK] + check + swapped[header.size :]
    with pytest.raises(IntegrityError, match=rf"segment 0 {TAMPERED}"):
        _open(enc, forged)
    assert _open(enc, raw) == data


def test_object_moved_under_another_key_is_detected(tmp_path):
    repo = Repository.local(tmp_path / "r", encryption=_enc())
    a = _write(repo, b"a" * 1000, day="2026-11-20")
    b = _write(repo, b"a" * 1000, day="2026-11-21")
    # Same plaintext, same key: only the key name in the AAD tells the two objects apart.
    _stored(tmp_path / "r", b).write_bytes(_stored(tmp_path / "r", a).read_bytes())
    with pytest.raises(IntegrityError, match="authentication"):
        repo.verify(b)


def test_wrong_or_missing_key_names_the_key_id_needed(tmp_path):
    root = tmp_path / "r"
    _write(Repository.local(root, encryption=_enc(K1)), b"x" * 100)
    with pytest.raises(WrongKeyError, match=r"key id 'k1'.*not among the keys given \(k2\)"):
        Repository.local(root, encryption=_enc(K2)).list()
    impostor = Key("k1", os.urandom(32))
    with pytest.raises(WrongKeyError, match="needs key id 'k1', but the key supplied under that id is a different key"):
        Repository.local(root, encryption=_enc(impostor)).list()
    with pytest.raises(RepositoryError, match=r"is encrypted \(key id 'k1'\).*encryption keys"):
        Repository.local(root).list()


def test_encrypted_repository_refuses_planted_plaintext(tmp_path):
    root = tmp_path / "r"
    plain = Repository.local(root)
    _write(plain, b"planted")
    with pytest.raises(IntegrityError, match="not an encrypted object"):
        Repository.local(root, encryption=_enc()).list()


def test_rotation_new_key_encrypts_old_keys_still_decrypt(tmp_path):
    root = tmp_path / "r"
    old = _write(Repository.local(root, encryption=_enc(K1)), b"old" * 100, day="2026-11-20")
    rotated = Repository.local(root, encryption=_enc(K2, K1))
    new = _write(rotated, b"new" * 100, day="2026-11-21")
    assert crypto.peek_key_id(_stored(root, new).read_bytes()) == "k2"
    assert crypto.peek_key_id(_stored(root, old).read_bytes()) == "k1"
    for b, data in ((old, b"old" * 100), (new, b"new" * 100)):
        with rotated.open(b, "dump.pgc") as f:
            assert f.read() == data
    with pytest.raises(WrongKeyError, match="'k2'"):
        Repository.local(root, encryption=_enc(K1)).list()


def test_failure_mid_stream_publishes_nothing(tmp_path):
    repo = Repository.local(tmp_path / "r", encryption=_enc())
    with pytest.raises(RuntimeError):
        with repo.begin("postgres", "logical_dump", DAY) as w:
            with w.open_file("dump.pgc") as f:
                f.write(os.urandom(5 * SEG))
                raise RuntimeError("source died")
    assert repo.list() == []
    # Only the marker stays (written before the first encrypted object): no object of the backup.
    left = [p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert left == [layout.ENCRYPTION_MARKER]


# -- keys ----------------------------------------------------------------------------------------


def test_key_file_must_be_private_and_rotation_cli_prepends(tmp_path, capsys):
    path = tmp_path / "keys"
    assert keys.main(["new-key", str(path), "--id", "2026-01"]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.main(["new-key", str(path), "--id", "2026-07"]) == 0
    out = capsys.readouterr().out
    enc = Encryption.from_file(path)
    assert enc.current.id == "2026-07" and list(enc.keys) == ["2026-07", "2026-01"]
    for k in enc.keys.values():  # the CLI prints ids only, never key material
        assert k.encoded() not in out
    assert keys.main(["new-key", str(path), "--id", "2026-07"]) == 1
    path.chmod(0o644)
    with pytest.raises(EncryptionError, match="chmod 600"):
        Encryption.from_file(path)


def test_keys_from_settings_string_and_no_secret_in_messages_or_repr():
    b1, b2 = base64.b64encode(K1.secret).decode(), base64.b64encode(K2.secret).decode()
    enc = Encryption.from_string(f"k2:{b2}, k1:{b1}")
    assert enc.current.id == "k2" and set(enc.keys) == {"k1", "k2"}
    assert b1 not in repr(enc) and b2 not in repr(enc) and "secret" not in repr(enc.current)
    with pytest.raises(EncryptionError) as err:
        Encryption.from_string("k1:not*base64*secretvalue")
    assert "secretvalue" not in str(err.value)
    with pytest.raises(EncryptionError, match="32"):
        Encryption.from_string("k1:" + base64.b64encode(b"short").decode())
    configured = EncryptionSettings.from_env({keys.ENV_KEYS: f"k1:{b1}"})
    assert Encryption.from_settings(configured.key_file, configured.keys).current.id == "k1"
    assert b1 not in repr(configured)
    unset = EncryptionSettings.from_env({})
    assert Encryption.from_settings(unset.key_file, unset.keys) is None


def _shows_key_material(message, secret):
    """Whether `message` holds 12 consecutive characters of `secret` in base64 (either alphabet) or hex."""
    forms = (base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode(), secret.hex())
    return any(form[i : i + 12] in message for form in forms for i in range(len(form) - 11))


def test_key_errors_never_echo_key_material(tmp_path):
    secret = os.urandom(32)
    b64, url, hexed = base64.b64encode(secret).decode(), base64.urlsafe_b64encode(secret).decode().rstrip("="), secret.hex()
    messages = []
    # Key and id the wrong way round (the secret lands where an id is echoed), a key cut short,
    # a hex key where base64 belongs, stray characters; each one refused, naming where it is.
    for text, where in (
        (f"{b64}:k1", "entry 1"),
        (f"{url}:k1", "entry 1"),
        (f"{hexed}:k1", "entry 1"),
        (f"{hexed}:abcd", "entry 1"),
        (f"k0:{base64.b64encode(os.urandom(32)).decode()},{b64}:k1", "entry 2"),
        (f"k1:{b64[:-4]}", "entry 1"),
        (f"k1:{hexed}", "entry 1"),
        (f"k1:{b64}x", "entry 1"),
    ):
        with pytest.raises(EncryptionError, match=rf"BACKUP_ENCRYPTION_KEYS \({where}\)") as err:
            Encryption.from_string(text)
        messages.append(str(err.value))
    path = tmp_path / "keys"
    path.write_text(f"{b64} k1\n")
    path.chmod(0o600)
    with pytest.raises(EncryptionError, match=r"keys:1: invalid key id") as err:
        Encryption.from_file(path)
    messages.append(str(err.value))
    with pytest.raises(EncryptionError, match="invalid key id") as err:
        Key(b64, secret)
    messages.append(str(err.value))
    # The wrong key for an object: the message names key ids, never the keys.
    root = tmp_path / "r"
    _write(Repository.local(root, encryption=_enc(Key("k1", secret))), b"x" * 100)
    impostor = os.urandom(32)
    with pytest.raises(WrongKeyError, match="different key") as err:
        Repository.local(root, encryption=_enc(Key("k1", impostor))).list()
    messages.append(str(err.value))
    leaks = [m for m in messages if _shows_key_material(m, secret) or _shows_key_material(m, impostor)]
    assert leaks == []


def test_a_key_where_an_id_or_the_key_file_goes_is_never_echoed(tmp_path):
    """A hex key passes as a key id (64 of [0-9a-f]) and a key pasted into the key file's variable is
    a path that does not exist: neither may come back in a message, a repr or a refusal."""
    secret = os.urandom(32)
    hex_id = secret.hex()
    messages = []
    for pasted in (f"k1:{base64.b64encode(secret).decode()}", base64.urlsafe_b64encode(secret).decode(), hex_id):
        with pytest.raises(EncryptionError, match="does not exist") as err:
            Encryption.from_settings(key_file=pasted)
        messages.append(str(err.value))
    missing = tmp_path / "no-such-keys"
    with pytest.raises(EncryptionError, match=str(missing)):  # a real path is still named
        Encryption.from_file(missing)
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(EncryptionError, match="cannot be read"):  # a folder: one line, not an OSError
        Encryption.from_file(tmp_path / "dir")
    enc = _enc(Key(hex_id, os.urandom(32)))
    messages += [repr(enc), enc.describe()]
    with pytest.raises(EncryptionError, match="duplicate key ids") as err:
        Encryption([Key(hex_id, os.urandom(32)), Key(hex_id, os.urandom(32))])
    messages.append(str(err.value))
    root = tmp_path / "r"
    _write(Repository.local(root, encryption=enc), b"x" * 100)
    for other in (_enc(K2), _enc(Key(hex_id, os.urandom(32)))):
        with pytest.raises(WrongKeyError) as err:
            Repository.local(root, encryption=other).list()
        messages.append(str(err.value))
    with pytest.raises(RepositoryError, match="is encrypted") as err:
        Repository.local(root).list()
    messages.append(str(err.value))
    assert [m for m in messages if _shows_key_material(m, secret)] == []


# -- WAL archive and offsite copies ---------------------------------------------------------------


def test_wal_archive_through_an_encrypted_repository(tmp_path):
    repo = Repository.local(tmp_path / "r", encryption=_enc())
    archive = WalArchive(repo.backend)
    seg = tmp_path / "000000010000000000000003"
    seg.write_bytes(os.urandom(20_000) + b"\0" * 100_000)
    record = archive.push(seg)
    base = tmp_path / "r" / "postgres" / "wal" / "00000001" / seg.name
    for suffix in (".zst", ".json"):
        assert (base.parent / (seg.name + suffix)).read_bytes().startswith(crypto.MAGIC)
    out = tmp_path / "restored"
    assert archive.fetch(seg.name, out) == record and out.read_bytes() == seg.read_bytes()
    raw = bytearray((base.parent / (seg.name + ".zst")).read_bytes())
    raw[-5] ^= 0x10
    (base.parent / (seg.name + ".zst")).write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        archive.fetch(seg.name, tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_offsite_copy_reencrypts_is_idempotent_and_refuses_a_corrupt_source(tmp_path):
    src = Repository.local(tmp_path / "src", encryption=_enc(K1))
    dst = Repository.local(tmp_path / "dst", encryption=_enc(K2))
    data = os.urandom(40_000) + b"z" * 200_000
    backup = _write(src, data)
    report = offsite.copy_partition(src, dst, "postgres", "logical_dump", DAY)
    assert report.status == offsite.COPIED and report.bytes == backup.stored_size
    assert dst.list() == [backup]
    assert crypto.peek_key_id(_stored(tmp_path / "dst", backup).read_bytes()) == "k2"
    with dst.open(backup, "dump.pgc") as f:
        assert f.read() == data
    again = offsite.copy_partition(src, dst, "postgres", "logical_dump", DAY)
    assert again.status == offsite.PRESENT and again.bytes == 0

    # A damaged copy at the destination is noticed and replaced on the next run.
    path = _stored(tmp_path / "dst", backup)
    raw = bytearray(path.read_bytes())
    raw[100] ^= 1
    path.write_bytes(bytes(raw))
    assert offsite.copy_backup(src, dst, backup).status == offsite.COPIED
    dst.verify(backup, deep=True)

    # A newer backup of the same day replaces the older copy; a corrupt source is never copied.
    newer = _write(src, b"newer" * 1000)
    offsite.copy_backup(src, dst, newer)
    assert dst.list() == [newer]
    third = _write(src, b"third" * 1000)
    path = _stored(tmp_path / "src", third)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        offsite.copy_backup(src, dst, third)
    assert dst.list() == [newer]
    assert not (tmp_path / "dst" / third.prefix).exists()


def test_offsite_wal_copy(tmp_path):
    src = WalArchive(Repository.local(tmp_path / "src").backend)
    dst = WalArchive(Repository.local(tmp_path / "dst", encryption=_enc()).backend)
    for n in (1, 2):
        seg = tmp_path / f"00000001000000000000000{n}"
        seg.write_bytes(bytes([n]) * 50_000)
        src.push(seg)
    partial = tmp_path / "000000010000000000000003.partial"
    partial.write_bytes(b"p" * 1000)
    src.push(partial)
    first = offsite.copy_wal(src, dst)
    assert sorted(first.copied) == ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003.partial"]
    assert offsite.copy_wal(src, dst).copied == []
    done = tmp_path / "000000010000000000000003"
    done.write_bytes(b"p" * 2000)
    src.push(done)
    assert offsite.copy_wal(src, dst).copied == ["000000010000000000000003"]
    assert dst.record("000000010000000000000003.partial") is None
    dst.fetch("000000010000000000000002", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == bytes([2]) * 50_000


def test_offsite_refuses_to_copy_encrypted_backups_into_plaintext(tmp_path):
    src = Repository.local(tmp_path / "src", encryption=_enc(K1))
    plain = Repository.local(tmp_path / "plain")
    _write(src, b"secret" * 100)
    with pytest.raises(RepositoryError, match="would be stored in plaintext"):
        offsite.copy_partition(src, plain, "postgres", "logical_dump", DAY)
    assert plain.list() == []
    with pytest.raises(RepositoryError, match="refusing to copy plaintext"):
        offsite.copy_wal(WalArchive(src.backend), WalArchive(plain.backend))
    # The same keys on both sides are fine; so is an explicit downgrade.
    assert (
        offsite.copy_partition(
            src, Repository.local(tmp_path / "same", encryption=_enc(K1)), "postgres", "logical_dump", DAY
        ).status
        == offsite.COPIED
    )
    assert offsite.copy_partition(src, plain, "postgres", "logical_dump", DAY, allow_plaintext=True).status == offsite.COPIED

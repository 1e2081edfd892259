"""Encryption at rest: authenticated, streaming AES-256-GCM for every stored object.

Construction (the STREAM scheme of Hoang, Reyhanitabar, Rogaway and Vizár, as in Tink's
AES-GCM-HKDF streaming AEAD): each object gets a fresh 32-byte salt, and its own key is
HKDF-SHA256(master key, salt, key id). The plaintext is cut into segments (1 MiB) and each
segment is sealed with AES-GCM under the nonce `prefix(7 random bytes) || counter(4) ||
last(1)`, with the object's header and its storage key as associated data. So:

* a flipped byte anywhere fails that segment's tag;
* reordered or dropped segments fail (the counter is in the nonce);
* truncation at a segment boundary fails (no segment carries last=1) and appended data too;
* an object moved under another key, or a header edited, fails (both are in the AAD);
* per-object keys make nonce reuse impossible in practice whatever the number of objects
  (WAL `.partial` copies are rewritten every few seconds: random 96-bit nonces under one
  master key would not be safe at that rate for years).

Object layout: header, then segments of `segment_size + 16` bytes (the last one shorter)::

    magic "ABPENC" 00 01 | key id length (1) | key id | salt (32) | nonce prefix (7)
    | segment size (4, big endian) | key check (16) = HMAC-SHA256(master, "key-check" || salt)[:16]

The key check lets a reader say "wrong key for key id X" instead of "corrupt" without
trying to decrypt. Key names (system/artifact/day/backup id/file) stay readable so that
listing works without keys; sizes leak as they do with any encryption.

Keys and keyrings (the first key encrypts, every key decrypts), their sources and the
`new-key` command that creates or rotates a key file are in keys.py.

Least privilege for the sources is in docs/least-privilege.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import secrets
import struct
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from auction_backup_pipelines.repository.keys import ENV_KEYS, EncryptionError, Key, keyring, parse_keys, read_key_file, shown_id
from auction_backup_pipelines.repository.storage import Backend, IntegrityError, WrappingBackend

MAGIC = b"ABPENC\x00\x01"
SEGMENT = 1 << 20
TAG = 16
SALT = 32
PREFIX = 7
CHECK = 16
_HAS_INTO = hasattr(AESGCM, "encrypt_into")  # cryptography >= 45: no allocation per segment


class WrongKeyError(IntegrityError):
    """An object cannot be authenticated with the keys at hand; the message names the key id it needs."""


class Encryption:
    """A keyring: the first key encrypts, every key decrypts. Never prints a secret."""

    def __init__(self, keys: Sequence[Key | tuple[str, bytes]], segment_size: int = SEGMENT):
        ring = keyring([k if isinstance(k, Key) else Key(k[0], k[1]) for k in keys])
        if not 1024 <= segment_size <= 1 << 26:
            raise EncryptionError(f"segment size {segment_size} out of range")
        self.keys = {k.id: k for k in ring}
        self.current = ring[0]
        self.segment_size = segment_size

    def __repr__(self) -> str:
        return f"Encryption({self.describe()})"

    def describe(self) -> str:
        return f"AES-256-GCM stream, key id {shown_id(self.current.id)}" + (
            f" (+{len(self.keys) - 1} older)" if len(self.keys) > 1 else ""
        )

    # -- sources (see keys.py) -------------------------------------------------------------

    @classmethod
    def from_string(cls, text: str, where: str = ENV_KEYS) -> Encryption:
        return cls(parse_keys(text, where))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Encryption:
        return cls(read_key_file(path))

    @classmethod
    def from_settings(cls, key_file: str = "", keys: str = "") -> Encryption | None:
        """Both sources together (file keys first); None when neither is set: no encryption."""
        ring: list[Key] = []
        if key_file:
            ring += list(cls.from_file(key_file).keys.values())  # in file order: its first key encrypts
        if keys:
            ring += list(cls.from_string(keys).keys.values())
        return cls(ring) if ring else None

    # -- objects ---------------------------------------------------------------------------

    def header(self) -> tuple[bytes, _Sealer]:
        k = self.current
        salt, prefix = secrets.token_bytes(SALT), secrets.token_bytes(PREFIX)
        head = (
            MAGIC
            + bytes([len(k.id)])
            + k.id.encode()
            + salt
            + prefix
            + struct.pack(">I", self.segment_size)
            + _key_check(k.secret, salt)
        )
        return head, _Sealer(_subkey(k, salt), prefix)

    def open_header(self, source: BinaryIO, where: str) -> tuple[bytes, _Sealer, int]:
        """Read and check an object's header; returns (header, sealer, segment size)."""
        fixed = _read_exactly(source, len(MAGIC) + 1)
        if fixed[: len(MAGIC)] != MAGIC:
            raise IntegrityError(
                f"{where}: not an encrypted object (no encryption header); this repository is configured with "
                "encryption and refuses unencrypted data, which anyone with write access could have planted "
                "(to encrypt existing backups, copy them into a new repository: offsite.copy_all)"
            )
        key_id_raw = _read_exactly(source, fixed[-1])
        rest = _read_exactly(source, SALT + PREFIX + 4 + CHECK)
        if len(key_id_raw) != fixed[-1] or len(rest) != SALT + PREFIX + 4 + CHECK:
            raise IntegrityError(f"{where}: encryption header is truncated")
        key_id = key_id_raw.decode(errors="replace")
        salt, prefix = rest[:SALT], rest[SALT : SALT + PREFIX]
        (segment,) = struct.unpack(">I", rest[SALT + PREFIX : SALT + PREFIX + 4])
        key = self.keys.get(key_id)
        if key is None:
            raise WrongKeyError(
                f"{where} was encrypted with key id {shown_id(key_id)!r}, which is not among the keys given "
                f"({', '.join(map(shown_id, self.keys))}); add that key ({ENV_KEYS} or the key file) to read it"
            )
        if not hmac.compare_digest(_key_check(key.secret, salt), rest[-CHECK:]):
            raise WrongKeyError(
                f"{where} needs key id {shown_id(key_id)!r}, but the key supplied under that id is a different key "
                "(or the header is corrupt)"
            )
        if not 1024 <= segment <= 1 << 26:
            raise IntegrityError(f"{where}: encryption header is corrupt (segment size {segment})")
        return fixed + key_id_raw + rest, _Sealer(_subkey(key, salt), prefix), segment

    def encrypting(self, target: BinaryIO, key: str) -> EncryptingWriter:
        return EncryptingWriter(self, target, key)

    def decrypting(self, source: BinaryIO, key: str) -> DecryptingReader:
        return DecryptingReader(self, source, key)


def _subkey(key: Key, salt: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, b"auction-backup stream v1|" + key.id.encode()).derive(key.secret)


def _key_check(secret: bytes, salt: bytes) -> bytes:
    return hmac.new(secret, b"key-check" + salt, hashlib.sha256).digest()[:CHECK]


def _read_exactly(source: BinaryIO, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        block = source.read(n - got)
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


class _Sealer:
    def __init__(self, subkey: bytes, prefix: bytes):
        self._aead = AESGCM(subkey)
        self._prefix = prefix

    def nonce(self, counter: int, last: bool) -> bytes:
        if counter >= 1 << 32:
            raise EncryptionError("object too large for one encryption stream (2^32 segments)")
        return self._prefix + struct.pack(">I", counter) + (b"\x01" if last else b"\x00")

    def seal(self, counter: int, last: bool, data, aad: bytes) -> bytes:
        return self._aead.encrypt(self.nonce(counter, last), data, aad)

    def seal_into(self, counter: int, last: bool, data, aad: bytes, out) -> int:
        if _HAS_INTO:
            return self._aead.encrypt_into(self.nonce(counter, last), data, aad, out)
        sealed = self.seal(counter, last, data, aad)
        out[: len(sealed)] = sealed
        return len(sealed)

    def open_into(self, counter: int, last: bool, data, aad: bytes, out) -> int:
        if _HAS_INTO:
            return self._aead.decrypt_into(self.nonce(counter, last), data, aad, out)
        plain = self.open(counter, last, data, aad)
        out[: len(plain)] = plain
        return len(plain)

    def open(self, counter: int, last: bool, data, aad: bytes) -> bytes:
        return self._aead.decrypt(self.nonce(counter, last), data, aad)


class EncryptingWriter(io.RawIOBase):
    """Plaintext in, header + sealed segments out to `target`; `finish()` seals the last segment.

    One segment buffer and one output buffer are allocated once and reused: fresh 1 MiB
    allocations per segment cost more than the cipher itself on a VM (page faults). The
    target must not keep a reference to what it is given, which io's contract forbids anyway.
    """

    def __init__(self, enc: Encryption, target: BinaryIO, key: str):
        self._target = target
        head, self._sealer = enc.header()
        self._aad = head + key.encode()
        self._segment = enc.segment_size
        self._buf = bytearray(self._segment)
        self._fill = 0
        self._out = bytearray(self._segment + TAG)
        self._counter = 0
        target.write(head)

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        # A full segment is sealed only once more data follows: only `finish` knows the last one.
        # Large writes are sealed straight from the caller's buffer, without copying.
        mv = memoryview(b).cast("B")
        n, pos, seg = len(mv), 0, self._segment
        if self._fill:
            pos = min(seg - self._fill, n)
            self._buf[self._fill : self._fill + pos] = mv[:pos]
            self._fill += pos
            if self._fill == seg and pos < n:
                self._emit(self._buf, False)
                self._fill = 0
        while n - pos > seg:
            self._emit(mv[pos : pos + seg], False)
            pos += seg
        if pos < n:  # the buffer is empty here
            self._buf[: n - pos] = mv[pos:]
            self._fill = n - pos
        return n

    def _emit(self, data, last: bool) -> None:
        with memoryview(self._out) as out:
            size = self._sealer.seal_into(self._counter, last, data, self._aad, out[: len(data) + TAG])
            self._target.write(out[:size])
        self._counter += 1

    def finish(self) -> None:
        with memoryview(self._buf) as mv:
            self._emit(mv[: self._fill], True)
        self._fill = 0


class DecryptingReader(io.RawIOBase):
    """Opens sealed segments one by one; any tampering or truncation raises IntegrityError.

    Reads one sealed segment ahead (the only way to know which one is the last) into two
    buffers used in turn, and opens each into one plaintext buffer: no allocation per segment.
    """

    def __init__(self, enc: Encryption, source: BinaryIO, key: str):
        self._source = source
        self._where = key
        head, self._sealer, segment = enc.open_header(source, key)
        self._aad = head + key.encode()
        self._sealed = segment + TAG
        self._counter = 0
        self._bufs = (bytearray(self._sealed), bytearray(self._sealed))
        self._plainbuf = bytearray(segment)
        self._plain = memoryview(self._plainbuf)[:0]
        self._pos = 0
        self._ahead = 0  # which of the two buffers holds the look-ahead segment
        self._ahead_len = self._fill(self._bufs[0])
        self._done = False

    def readable(self) -> bool:
        return True

    def _fill(self, buf: bytearray) -> int:
        view, got = memoryview(buf), 0
        readinto = getattr(self._source, "readinto", None)
        while got < len(buf):
            if readinto is not None:
                n = readinto(view[got:])
            else:
                block = self._source.read(len(buf) - got)
                n = len(block)
                view[got : got + n] = block
            if not n:
                break
            got += n
        return got

    def _advance(self) -> None:
        current, n = self._bufs[self._ahead], self._ahead_len
        if n == self._sealed:
            self._ahead ^= 1
            self._ahead_len = self._fill(self._bufs[self._ahead])
        else:
            self._ahead_len = 0
        last = self._ahead_len == 0
        if n < TAG:
            raise IntegrityError(f"{self._where}: encrypted object is truncated (segment {self._counter} incomplete)")
        try:
            size = self._sealer.open_into(
                self._counter, last, memoryview(current)[:n], self._aad, memoryview(self._plainbuf)[: n - TAG]
            )
        except InvalidTag:
            why = "truncated (its final segment is missing)" if last and n == self._sealed else "corrupt or tampered with"
            raise IntegrityError(
                f"{self._where}: encrypted segment {self._counter} failed authentication: the object is {why}"
            ) from None
        self._plain = memoryview(self._plainbuf)[:size]
        self._pos = 0
        self._counter += 1
        self._done = last

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(SEGMENT), b""))
        while self._pos >= len(self._plain):
            if self._done:
                return b""
            self._advance()
        out = bytes(self._plain[self._pos : self._pos + size])
        self._pos += len(out)
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._source.close()
        super().close()


class EncryptedBackend(WrappingBackend):
    """Any backend, with every object's body encrypted; key names, locks and deletes pass through.

    The repository wraps its backend in this when given an `Encryption`, so everything that
    writes through `repo.backend` (backups, manifests, WAL segments and their records, pins)
    is encrypted without knowing it. Listed sizes are the stored (encrypted) sizes.
    """

    def __init__(self, inner: Backend, encryption: Encryption):
        self.inner = inner
        self.encryption = encryption

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        with self.inner.writer(key) as target:
            sink = self.encryption.encrypting(target, key)
            yield sink  # type: ignore[misc]
            sink.finish()

    def reader(self, key: str) -> BinaryIO:
        source = self.inner.reader(key)
        try:
            return self.encryption.decrypting(source, key)  # type: ignore[return-value]
        except BaseException:
            source.close()
            raise


def peek_key_id(raw: bytes) -> str | None:
    """The key id named by an encrypted object's first bytes, or None for plaintext."""
    if not raw.startswith(MAGIC) or len(raw) <= len(MAGIC):
        return None
    n = raw[len(MAGIC)]
    return raw[len(MAGIC) + 1 : len(MAGIC) + 1 + n].decode(errors="replace")

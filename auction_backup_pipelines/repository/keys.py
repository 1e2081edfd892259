"""Encryption keys: what a key is, where keys are read from, and the command that writes a key file.

Why a module of its own: keys are the one part of encryption an operator handles by hand
(create, rotate, store a copy away from the backups), and reading them safely (a key file
readable by its owner only, no secret ever echoed in a message) is a concern apart from the
cipher in encryption.py.

Keys: 32 random bytes each, with a short id. A keyring is an ordered list: the first key
encrypts new objects, every key decrypts (rotation = put a new key first, keep the old ones
until nothing encrypted with them is retained). Sources: a key file, one `<id> <base64>` per
line and readable by its owner only (0600 or stricter, else refused), or the variable
BACKUP_ENCRYPTION_KEYS=`<id>:<base64>[,<id>:<base64>...]` (bind it through Dagster's EnvVar).
`python -m auction_backup_pipelines.repository.keys new-key FILE --id ID` creates or rotates a
key file; it prints only the key id. Lose every key and the backups are gone: store a copy
of the key file away from the backups (a password manager, a sealed envelope).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import os
import re
import secrets
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auction_backup_pipelines.repository.storage import StorageError

__all__ = ["ENV_KEYS", "EncryptionError", "Key", "add_key", "keyring", "main", "parse_keys", "read_key_file", "shown_id"]

ENV_KEYS = "BACKUP_ENCRYPTION_KEYS"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSHOWN = "id not shown: it may be a key written in the id's place"


class EncryptionError(StorageError):
    """Keys are missing, malformed or unsafely stored."""


@dataclass(frozen=True)
class Key:
    id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.id):
            raise EncryptionError(f"invalid key id, 1-64 of A-Z a-z 0-9 . _ - ({_UNSHOWN})")
        if len(self.secret) != 32:
            raise EncryptionError(f"{_named(self.id)} is {len(self.secret)} bytes; AES-256 needs exactly 32")

    @classmethod
    def generate(cls, key_id: str | None = None) -> Key:
        return cls(key_id or dt.datetime.now(dt.UTC).strftime("k%Y%m%d%H%M%S"), secrets.token_bytes(32))

    def encoded(self) -> str:
        return base64.b64encode(self.secret).decode()


def keyring(keys: Sequence[Key]) -> list[Key]:
    """`keys` as a keyring, in order (the first encrypts); refused when empty or when an id repeats."""
    ring = list(keys)
    if not ring:
        raise EncryptionError("encryption needs at least one key")
    ids = [k.id for k in ring]
    if len(set(ids)) != len(ids):
        raise EncryptionError(f"duplicate key ids in the keyring: {', '.join(shown_id(i) for i in ids)}")
    return ring


def shown_id(key_id: str) -> str:
    """A key id as a message may show it: itself, or a placeholder when the id could be a secret.

    A key and its id written the wrong way round (`<base64>:<id>`, or a hex key in the id's
    place) would otherwise be echoed into logs and alerts. A 32-byte key is 43 or more
    characters in base64 and 64 in hex: an id that long is not shown. Every message that
    names a key id (configured, or read from a stored object's header) goes through here.
    """
    return key_id if _KEY_ID.match(key_id) and len(key_id) < 40 else f"({_UNSHOWN})"


def _named(key_id: str) -> str:
    """How a message names a key: by its id (see `shown_id`), else by its position only."""
    return f"key {key_id!r}" if shown_id(key_id) == key_id else f"the key ({_UNSHOWN})"


def _looks_like_key(text: str) -> bool:
    """Whether `text` holds a 32-byte key in base64 (either alphabet) or hex, alone or as `<id>:<key>`."""
    decoders = (
        lambda t: base64.b64decode(t, validate=True),
        lambda t: base64.b64decode(t, altchars=b"-_", validate=True),
        bytes.fromhex,
    )
    for token in re.split(r"[:,\s]+", text):
        for decode in decoders:
            try:
                if len(decode(token)) == 32:
                    return True
            except (binascii.Error, ValueError):
                continue
    return False


def _shown_path(path: str) -> str:
    """A key file's path for a message, unless it is a key: keys pasted into the key file's variable
    (BACKUP_ENCRYPTION_KEY_FILE=<id>:<base64>) must not come back in the 'does not exist' error."""
    return "(path not shown: it looks like a key, not a file name)" if _looks_like_key(path) else path


def _decode(key_id: str, value: str, where: str) -> Key:
    if not _KEY_ID.match(key_id):
        raise EncryptionError(f"{where}: invalid key id, 1-64 of A-Z a-z 0-9 . _ - ({_UNSHOWN})")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        # The value itself is never echoed: it is (part of) a secret.
        raise EncryptionError(f"{where}: {_named(key_id)} is not valid base64") from None
    if len(raw) != 32:
        raise EncryptionError(f"{where}: {_named(key_id)} is {len(raw)} bytes; AES-256 needs exactly 32")
    return Key(key_id, raw)


def parse_keys(text: str, where: str = ENV_KEYS) -> list[Key]:
    """Keys written `<key id>:<base64 key>`, comma- or space-separated, in order."""
    keys = []
    for n, item in enumerate(filter(None, re.split(r"[,\s]+", text.strip())), 1):
        key_id, sep, value = item.partition(":")
        if not sep:
            raise EncryptionError(f"{where} (entry {n}): expected <key id>:<base64 key>, comma-separated")
        keys.append(_decode(key_id, value, f"{where} (entry {n})"))  # the position stands in for an unshown id
    return keys


def read_key_file(path: str | os.PathLike[str]) -> list[Key]:
    """The keys of a key file, in file order; refused unless only its owner can read or write it."""
    given = os.fspath(path)  # as written: Path() would fold a key's '//' and defeat `_shown_path`
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise EncryptionError(f"encryption key file {_shown_path(given)} does not exist") from None
    except OSError as exc:  # its own message would repeat the path, which may be a key
        raise EncryptionError(f"encryption key file {_shown_path(given)} cannot be read: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise EncryptionError(
            f"encryption key file {path} is readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"refusing to use it: run `chmod 600 {path}`"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:  # a folder, not ours, or binary: one line, never its content
        raise EncryptionError(
            f"encryption key file {path} cannot be read: {getattr(exc, 'strerror', None) or 'not text'}"
        ) from None
    keys = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            parts = line.split()
            if len(parts) != 2:
                raise EncryptionError(f"{path}:{n}: expected `<key id> <base64 key>`")
            keys.append(_decode(parts[0], parts[1], f"{path}:{n}"))
    return keys


def add_key(path: str | os.PathLike[str], key: Key) -> None:
    """Put `key` first in the key file (creating it 0600): it encrypts from now on, the others still decrypt."""
    path = Path(path)
    existing = keyring(read_key_file(path)) if path.exists() else []
    if key.id in {k.id for k in existing}:
        raise EncryptionError(f"{path} already has a key with id {shown_id(key.id)}")
    lines = [f"{key.id} {key.encoded()}"] + [f"{k.id} {k.encoded()}" for k in existing]
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# auction-backup encryption keys: the first encrypts, all decrypt. Keep a copy elsewhere.\n")
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auction_backup_pipelines.repository.keys")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new-key", help="create a key file, or rotate: the new key goes first")
    new.add_argument("file")
    new.add_argument("--id", default=None, help="key id (default: k<UTC timestamp>)")
    args = parser.parse_args(argv)
    key = Key.generate(args.id)
    try:
        add_key(args.file, key)
    except EncryptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"added key id {key.id} (first: it encrypts new objects) to {args.file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

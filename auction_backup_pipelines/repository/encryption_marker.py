"""Encryption fails closed: a repository that has held encrypted objects refuses plaintext writes.

Why a module of its own: keys reach a process through its environment, and a process started
without them (a run container its launcher did not hand BACKUP_ENCRYPTION_KEYS, a shell without
the key file) used to write plaintext next to the encrypted backups, silently. Every write to a
repository passes `FailClosedBackend`, which sits under the encryption layer:

* with keys, a process's first write makes sure the repository's marker exists before any
  encrypted object does (layout.ENCRYPTION_MARKER: plaintext JSON saying the repository is
  encrypted, with the key ids in use; ids only, never a key);
* without keys, every write first looks for that marker and, when it is there, refuses before
  anything is written, with one line naming the settings that hold the keys.

Reading, listing, verifying and deleting are untouched: they work without keys wherever they did.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.encryption import MAGIC, Encryption, peek_key_id
from auction_backup_pipelines.repository.keys import EncryptionError, shown_id
from auction_backup_pipelines.repository.storage import Backend, WrappingBackend

__all__ = ["LOCAL_KEY_SETTINGS", "OFFSITE_KEY_SETTINGS", "EncryptionRequiredError", "Evidence", "FailClosedBackend"]

LOCAL_KEY_SETTINGS = ("BACKUP_ENCRYPTION_KEYS", "BACKUP_ENCRYPTION_KEY_FILE")
OFFSITE_KEY_SETTINGS = ("OFFSITE_ENCRYPTION_KEYS", "OFFSITE_ENCRYPTION_KEY_FILE")
MARKER_FORMAT = 1
_PEEK = len(MAGIC) + 1 + 64  # magic, key id length, the longest key id


class EncryptionRequiredError(EncryptionError, RefusedError):
    """Plaintext was about to be written into a repository that holds encrypted objects; nothing was written."""


@dataclass(frozen=True)
class Evidence:
    """Why a repository counts as encrypted: its marker, or an encrypted object found without one."""

    where: str
    key_ids: tuple[str, ...]


class FailClosedBackend(WrappingBackend):
    """A backend whose `writer` refuses plaintext once the repository has held encrypted objects.

    With an `Encryption` (the repository wraps this in its EncryptedBackend), the first write
    records the marker; without one, every write checks for it. Everything else passes through,
    and so do the wrapped backend's own attributes (a LocalBackend's `root`, ...).
    """

    def __init__(self, inner: Backend, encryption: Encryption | None, key_settings: tuple[str, str] = LOCAL_KEY_SETTINGS):
        self.inner = inner
        self.encryption = encryption
        self.key_settings = key_settings
        self._marked = False  # with keys: the marker is there and names the current key id
        self._scanned = False  # without keys and without a marker: no encrypted object was found

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copying, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- the rule ----------------------------------------------------------------------------

    def check_writable(self) -> None:
        """Record the marker (with keys), or refuse when the repository needs keys we lack."""
        if self.encryption is not None:
            self._ensure_marker(self.encryption)
            return
        found = self.marker()
        if found is None and not self._scanned:
            # The marker alone is not enough. A repository encrypted before markers existed has
            # none, and one small object is easily lost while the encrypted backups stay (a
            # sync that skips dot files, a cleanup script, a restore of chosen folders). So,
            # without a marker, the objects that tell are read once: every manifest and the WAL
            # heartbeat start with the encryption header when they were written with keys (a
            # manifest has no "encrypted" field: the whole manifest object is sealed). Once is
            # enough per Repository object: whoever encrypts from now on writes the marker
            # first, and the marker is looked for on every write.
            found = self.scan()
            self._scanned = found is None
        if found is not None:
            ids = ", ".join(shown_id(i) for i in found.key_ids) or "not recorded"
            keys, key_file = self.key_settings
            raise EncryptionRequiredError(
                f"{self.inner.describe()} holds encrypted backups ({found.where}; key ids: {ids}) but no encryption "
                f"key is configured: set {keys} or {key_file}; refusing to write plaintext, nothing was written"
            )

    def marker(self) -> Evidence | None:
        """What the repository's marker records, or None when it has none."""
        try:
            with self.inner.reader(layout.ENCRYPTION_MARKER) as f:
                raw = f.read(1 << 16)
        except FileNotFoundError:
            return None
        try:
            doc = json.loads(raw)
            ids = tuple(str(i) for i in doc["key_ids"])
        except (ValueError, TypeError, KeyError):
            ids = ()  # damaged, but there: the repository still counts as encrypted
        return Evidence(f"marker {layout.ENCRYPTION_MARKER}", ids)

    def scan(self) -> Evidence | None:
        """The first manifest (or WAL heartbeat) stored encrypted, or None when none is."""
        for obj in self.inner.list(""):
            if layout.is_manifest_key(obj.key) or obj.key == layout.WAL_HEARTBEAT:
                try:
                    with self.inner.reader(obj.key) as f:
                        key_id = peek_key_id(f.read(_PEEK))
                except FileNotFoundError:  # deleted since the listing
                    continue
                if key_id is not None:
                    return Evidence(f"{obj.key} is encrypted", (key_id,))
        return None

    def _ensure_marker(self, encryption: Encryption) -> None:
        if self._marked:
            return
        current = encryption.current.id
        found = self.marker()
        recorded = found.key_ids if found else ()
        if current not in recorded:
            # Two processes rotating at once may each rewrite it; the last one wins and an older
            # id may drop out. Harmless: the ids are for the operator, the refusal needs only the marker.
            doc = {"format": MARKER_FORMAT, "encrypted": True, "key_ids": [current, *recorded]}
            with self.inner.writer(layout.ENCRYPTION_MARKER) as f:
                f.write(json.dumps(doc, indent=2).encode())
        self._marked = True

    # -- the Backend contract ----------------------------------------------------------------

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        self.check_writable()
        with self.inner.writer(key) as target:
            yield target

    def reader(self, key: str) -> BinaryIO:
        return self.inner.reader(key)

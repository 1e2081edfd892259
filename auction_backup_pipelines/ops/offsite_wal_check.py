"""Read-back of the offsite copy of the WAL archive: the offsite WAL asset's integrity check.

`copy_wal` proves each file while it copies; this proves, later and on its own, that what the
offsite archive holds is still what its records say (every stored byte hashed), that each record
is the source's record of the same file, and how far the copy is behind the source (completed
segments not copied yet). Nothing is written on either side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository.streams import CHUNK


@dataclass(frozen=True)
class WalCopyCheck:
    files: int  # WAL files (segments, history, partial) the offsite archive holds
    bytes_checked: int
    not_yet_copied: list[str]  # completed files of the source that the copy lacks
    problems: list[str] = field(default_factory=list)  # one line each: a damaged or different copy

    @property
    def passed(self) -> bool:
        return not self.problems


def verify_wal_copy(src: WalArchive, dst: WalArchive) -> WalCopyCheck:
    """Check every WAL file of `dst` (the offsite copy) against its record and `src`; see the module doc."""
    source = {r.name: r for r in src.records()}
    copied = sorted(dst.records(), key=lambda r: r.name)
    problems, checked = [], 0
    for record in copied:
        sha, n = hashlib.sha256(), 0
        try:
            with dst.backend.reader(record.stored_key) as f:
                while block := f.read(CHUNK * 4):
                    sha.update(block)
                    n += len(block)
        except FileNotFoundError:
            problems.append(f"{record.name}: recorded but its data is missing in {dst.backend.describe()}")
            continue
        checked += n
        if n != record.stored_size or sha.hexdigest() != record.stored_sha256:
            problems.append(f"{record.name}: stored bytes do not match its record ({n} vs {record.stored_size} bytes)")
        mine = source.get(record.name)
        # a `.partial` grows at the source between copies; a completed file never changes
        if mine is not None and not record.partial and mine.sha256 != record.sha256:
            problems.append(f"{record.name}: differs from the source archive's file of the same name")
    have = {r.name for r in copied}
    behind = sorted(name for name, r in source.items() if not r.partial and name not in have)
    return WalCopyCheck(files=len(copied), bytes_checked=checked, not_yet_copied=behind, problems=problems)

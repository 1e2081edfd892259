"""The continuous WAL archive: every WAL segment of the primary, for point-in-time recovery.

Layout (keys in the repository's storage backend, built by repository/layout.py)::

    postgres/wal/<timeline>/<segment>.zst          one completed 16 MB segment, zstd
    postgres/wal/<timeline>/<segment>.json         its record, written last: sizes, sha256, time
    postgres/wal/<timeline>/<segment>.partial.<v>.zst  the segment being written right now, one
                                                   key per shipped version (its record names it)
    postgres/wal/history/<timeline>.history        timeline history files

A segment counts as archived only once its record exists (written after the data is
durable), exactly like a backup's manifest. Segments are looked up by name, so a restore
fetches what recovery asks for without listing anything; listing is only for health
(newest segment, gaps) and retention.

The newest, unfinished segment is shipped as `.partial` again and again while it grows: it
is what brings the recovery point (RPO) down to seconds, and a recovery to "now" replays it
under its final name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from auction_backup_pipelines.errors import BackupError, ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.storage import Backend, IntegrityError
from auction_backup_pipelines.repository.streams import ArtifactStream

PREFIX = layout.WAL_AREA
HEARTBEAT = layout.WAL_HEARTBEAT
SEGMENT = layout.WAL_SEGMENT
HISTORY = layout.WAL_HISTORY
SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENTS_PER_XLOGID = 0x100000000 // SEGMENT_SIZE


class WalArchiveError(BackupError):
    """The archive cannot serve or accept a WAL file; the message names it."""


@dataclass(frozen=True)
class SegmentRecord:
    name: str  # e.g. 000000010000000000000003 (or with .partial)
    timeline: int
    partial: bool
    size: int
    sha256: str
    stored_size: int
    stored_sha256: str
    archived_at: str  # when the archive made it durable (UTC ISO)
    data_key: str = ""  # a `.partial`'s versioned data key; "" for the fixed key (layout.wal_data_key)

    @property
    def stored_key(self) -> str:
        """Where this record's bytes are."""
        return self.data_key or layout.wal_data_key(self.name)

    @property
    def day(self) -> dt.date:
        return dt.datetime.fromisoformat(self.archived_at).date()

    @property
    def archived(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.archived_at)

    @property
    def segment_no(self) -> int:
        return segment_number(self.name.removesuffix(".partial"))


def segment_number(name: str) -> int:
    m = SEGMENT.match(name)
    if not m:
        raise WalArchiveError(f"not a WAL segment name: {name!r}")
    return int(m.group(2), 16) * SEGMENTS_PER_XLOGID + int(m.group(3), 16)


def segment_name(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number // SEGMENTS_PER_XLOGID:08X}{number % SEGMENTS_PER_XLOGID:08X}"


def lsn_to_segment(lsn: str, timeline: int) -> str:
    hi, lo = (int(x, 16) for x in lsn.split("/"))
    return segment_name(timeline, ((hi << 32) | lo) // SEGMENT_SIZE)


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class WalArchive:
    def __init__(self, backend: Backend, zstd_level: int = 1):
        self.backend = backend
        self.zstd_level = zstd_level

    # -- keys --------------------------------------------------------------------------------

    @staticmethod
    def _keys(name: str) -> tuple[str, str]:
        """(data key, record key) of a WAL file; WalArchiveError when `name` is not one."""
        try:
            return layout.wal_data_key(name), layout.wal_record_key(name)
        except ConfigurationError as exc:
            raise WalArchiveError(str(exc)) from None

    # -- writing -----------------------------------------------------------------------------

    def push(self, path: Path, name: str | None = None) -> SegmentRecord:
        """Archive one WAL file durably; returns its record. Re-pushing identical bytes is a no-op,
        different bytes under a completed segment's name are refused (never overwritten)."""
        name = name or path.name
        data_key, record_key = self._keys(name)
        existing = self.record(name)
        if name.endswith(".partial"):
            # A `.partial` is rewritten while it grows. Overwriting its data and then its record
            # would leave, after a crash between the two, new bytes under the old record: the
            # segment that brings recovery closest to "now" would fail its check. So each version
            # gets a data key of its own, the record (one atomic write) switches to it, and only
            # then is the previous version removed.
            data_key = layout.wal_partial_data_key(name, uuid.uuid4().hex[:12])
        with open(path, "rb") as src:
            if existing is not None and not name.endswith(".partial"):
                if _sha256_file(src) == existing.sha256:
                    return existing
                raise WalArchiveError(f"{name} is already archived with different content; refusing to overwrite")
            src.seek(0)
            with self.backend.writer(data_key) as target:
                stream = ArtifactStream(name, "zstd", target, self.zstd_level, 0)
                stream.copy_from(src)
                entry = stream.finish()
        m = SEGMENT.match(name.removesuffix(".partial"))
        record = SegmentRecord(
            name=name,
            timeline=int(m.group(1), 16) if m else int(name[:8], 16),
            partial=name.endswith(".partial"),
            size=entry.size,
            sha256=entry.sha256,
            stored_size=entry.stored_size,
            stored_sha256=entry.stored_sha256,
            archived_at=_utcnow(),
            data_key=data_key if name.endswith(".partial") else "",
        )
        with self.backend.writer(record_key) as f:
            f.write(json.dumps(asdict(record)).encode())
        if record.partial:
            self.remove_stale_partial_data(name, keep=record.stored_key)
        return record

    def remove_stale_partial_data(self, name: str, keep: str) -> None:
        """Delete the data of a `.partial`'s earlier versions (all but `keep`), including any that a
        crash between a record's switch and this cleanup left behind."""
        base = self._keys(name)[1].removesuffix(".json")
        stale = [o.key for o in self.backend.list(base) if o.key != keep and layout.parse_wal_key(o.key) == name]
        self.backend.delete_many(k for k in stale if not layout.is_wal_record_key(k))

    def drop_partial(self, segment: str) -> None:
        """Forget the partial copy of a segment once the completed segment is archived: the record
        first (a half-dropped partial is never served), then every version of its data."""
        name = segment + ".partial"
        self.backend.delete(self._keys(name)[1])
        self.remove_stale_partial_data(name, keep="")

    # -- reading -----------------------------------------------------------------------------

    def record(self, name: str) -> SegmentRecord | None:
        try:
            with self.backend.reader(self._keys(name)[1]) as f:
                return SegmentRecord(**json.loads(f.read()))
        except FileNotFoundError:
            return None

    def fetch(self, name: str, dest: Path) -> SegmentRecord:
        """Write WAL file `name` to `dest` after proving it matches its record.

        A completed segment is preferred; when recovery asks for the newest segment and only
        its partial copy exists, the partial is served under the segment's name (that is how
        the last seconds before a failure are recovered)."""
        record = self.record(name)
        if record is None and SEGMENT.match(name):
            record = self.record(name + ".partial")
        if record is None:
            raise FileNotFoundError(name)
        tmp = dest.with_name(dest.name + ".fetching")
        sha = hashlib.sha256()
        size = 0
        with self.backend.reader(record.stored_key) as src, open(tmp, "wb") as out:
            reader = zstandard.ZstdDecompressor().stream_reader(src)
            while block := reader.read(1 << 20):
                sha.update(block)
                size += len(block)
                out.write(block)
        if size != record.size or sha.hexdigest() != record.sha256:
            tmp.unlink()
            raise IntegrityError(f"archived WAL {record.name} does not match its record (corrupt or truncated)")
        tmp.replace(dest)
        return record

    def records(self) -> Iterator[SegmentRecord]:
        for obj in self.backend.list(PREFIX + "/"):
            if layout.is_wal_record_key(obj.key):
                with self.backend.reader(obj.key) as f:
                    yield SegmentRecord(**json.loads(f.read()))

    def write_heartbeat(self, covered_until: dt.datetime, lsn: str) -> None:
        """Record that everything the primary had written at `covered_until` (up to `lsn`) is archived."""
        doc = {"covered_until": covered_until.isoformat(), "lsn": lsn}
        with self.backend.writer(HEARTBEAT) as f:
            f.write(json.dumps(doc).encode())

    def heartbeat(self) -> dt.datetime | None:
        try:
            with self.backend.reader(HEARTBEAT) as f:
                return dt.datetime.fromisoformat(json.loads(f.read())["covered_until"])
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        data_key, record_key = self._keys(name)
        record = self.record(name)
        self.backend.delete(record_key)  # the record first: a half-deleted segment never looks archived
        self.backend.delete(data_key)
        if record is not None and record.stored_key != data_key:
            self.backend.delete(record.stored_key)


def _sha256_file(f: BinaryIO) -> str:
    sha = hashlib.sha256()
    while block := f.read(1 << 20):
        sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class ArchiveHealth:
    newest: SegmentRecord | None
    completed: int
    gaps: list[tuple[str, str]]  # (last present, next present) around each hole, per timeline
    covered_until: dt.datetime | None  # newest moment whose WAL is in the archive

    def lag_seconds(self, now: dt.datetime | None = None) -> float | None:
        if self.covered_until is None:
            return None
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (now - self.covered_until).total_seconds())


# Without a heartbeat (see WalReceiver.ship_once), a shipped copy proves only the WAL that
# reached the receiver before the copy began; this margin keeps "covered until" honest then.
COVERAGE_MARGIN = dt.timedelta(seconds=1)


def health(records: list[SegmentRecord], heartbeat: dt.datetime | None = None) -> ArchiveHealth:
    """Newest segment, gaps and how far the archive reaches.

    `heartbeat` is the receiver's proof that the archive held everything the primary had
    written at that moment; on a quiet database it keeps advancing although no WAL changes.
    """
    segs = [r for r in records if not r.name.endswith(".history")]
    completed = sorted((r for r in segs if not r.partial), key=lambda r: (r.timeline, r.segment_no))
    gaps: list[tuple[str, str]] = []
    for a, b in zip(completed, completed[1:]):
        if a.timeline == b.timeline and b.segment_no != a.segment_no + 1:
            gaps.append((a.name, b.name))
    newest = max(segs, key=lambda r: r.archived) if segs else None
    candidates = [t for t in (newest.archived - COVERAGE_MARGIN if newest else None, heartbeat) if t is not None]
    covered = max(candidates) if candidates else None
    return ArchiveHealth(newest=newest, completed=len(completed), gaps=gaps, covered_until=covered)

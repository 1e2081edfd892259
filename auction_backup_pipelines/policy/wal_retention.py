"""WAL retention: which files of the continuous WAL archive point-in-time recovery still needs.

The archive has no manifests, so the GFS policy (retention.py) never sees it; this module
decides for it. Pure logic: no I/O, no Dagster, standard library only. :func:`decide` takes
the names the archive holds, the base backups (with their WAL range and whether retention
keeps them), ``now`` and the PITR window, and returns keep/expire with one reason per file.

Semantics
---------
1. **The window.** Every moment of ``[now - window, now]`` stays recoverable. Its *base* is the
   newest kept, good base backup whose stop time is at or before the window's start (pruning
   keeps that base backup whatever the GFS rules say; see :func:`window_base`). Every segment
   from that base backup's start LSN onward is kept: on its timeline from its start segment,
   and every segment of a newer timeline (``"inside the PITR window ..."``). With no such base
   backup (all are newer than the window's start), the oldest kept base backup takes its
   place (the one that starts earliest): nothing older can be replayed from anything.
2. **Older kept base backups** keep exactly their own WAL: the segments from their start LSN
   to their stop LSN on their timeline, so each stays a consistent restore point
   (``"WAL of kept base backup <key> (start..stop)"``). So does every WAL range a kept backup
   depends on (``needed``: a dump reconstructed through PITR, ``"needed by <key>"``).
3. **Always kept:** `.partial` files (the segment being written), the newest completed
   segment of each timeline, and every timeline history file (recovery reads them to follow
   a timeline switch; they are tiny).
4. **Fail safe.** Nothing is expired when the plan cannot tell: no kept base backup
   (``"no base backup kept; WAL kept"``), a kept base backup without a usable WAL range or
   stop time, or an unknown segment size. A name the plan does not understand is kept.
5. **Everything else** is expired with :data:`EXPIRED`.
6. **Deterministic.** One decision per distinct name, ordered by timeline and segment number
   (history files and unknown names after the segments); input order does not matter.

Segment arithmetic follows PostgreSQL: a segment name is the timeline, then the segment
number split into "xlogid" (``number // (2**32 / segment_size)``) and the rest, each as 8 hex
digits; an LSN ``X/Y`` falls in segment ``((X << 32) | Y) // segment_size``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "EXPIRED",
    "BaseBackup",
    "Needs",
    "Run",
    "WalDecision",
    "decide",
    "expired_names",
    "format_lsn",
    "needs",
    "parse_lsn",
    "parse_segment",
    "runs",
    "segment_name",
    "segment_of_lsn",
    "valid_segment_size",
    "window_base",
]

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
PARTIAL = ".partial"

# Reason strings (the prune output and the README quote them).
EXPIRED = "before the PITR window and outside every kept base backup"
PARTIAL_KEPT = "partial: the segment being written"
HISTORY_KEPT = "timeline history: recovery follows it"
NO_BASE_KEPT = "no base backup kept; WAL kept"
UNKNOWN_NAME = "not a WAL file name the plan understands; kept"


def valid_segment_size(size: int) -> bool:
    """PostgreSQL accepts powers of two from 1 MB to 1 GB (initdb --wal-segsize)."""
    return isinstance(size, int) and 1 << 20 <= size <= 1 << 30 and size & (size - 1) == 0


def parse_lsn(text: str) -> int:
    """``X/Y`` (hex) as an integer; ValueError when `text` is not one."""
    hi, sep, lo = text.partition("/")
    if not sep or not re.fullmatch(r"[0-9A-Fa-f]{1,8}", hi) or not re.fullmatch(r"[0-9A-Fa-f]{1,8}", lo):
        raise ValueError(f"not an LSN: {text!r} (expected X/Y in hex)")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_of_lsn(lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return lsn // segment_size


def segment_name(timeline: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int] | None:
    """(timeline, segment number) of a segment name (``.partial`` allowed), else None."""
    m = SEGMENT.match(name.removesuffix(PARTIAL))
    if not m:
        return None
    per_xlogid = 0x100000000 // segment_size
    low = int(m.group(3), 16)
    if low >= per_xlogid:
        return None  # impossible for this segment size
    return int(m.group(1), 16), int(m.group(2), 16) * per_xlogid + low


@dataclass(frozen=True)
class BaseBackup:
    """A base backup as WAL retention sees it. ``None`` fields: the manifest does not say."""

    key: str
    kept: bool
    good: bool = True  # only a good base backup can be the window's base
    timeline: int | None = None
    start_lsn: int | None = None
    stop_lsn: int | None = None
    stop_time: dt.datetime | None = None

    @property
    def known(self) -> bool:
        return (
            self.timeline is not None
            and self.start_lsn is not None
            and self.stop_lsn is not None
            and self.stop_time is not None
            and self.start_lsn <= self.stop_lsn
        )


@dataclass(frozen=True)
class WalDecision:
    name: str
    keep: bool
    reason: str


def _check_now(now: dt.datetime, window: dt.timedelta) -> None:
    if not isinstance(now, dt.datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    if not isinstance(window, dt.timedelta) or window < dt.timedelta(0):
        raise ValueError(f"window must be a non-negative timedelta, got {window!r}")


def window_base(bases: Iterable[BaseBackup], now: dt.datetime, window: dt.timedelta) -> BaseBackup | None:
    """The newest good base backup with a known WAL range whose stop time is at or before
    ``now - window`` (kept or not: the caller keeps it), or None when there is none."""
    _check_now(now, window)
    start = now - window
    fits = [b for b in bases if b.good and b.known and b.stop_time <= start]  # type: ignore[operator]
    return max(fits, key=lambda b: (b.stop_time, b.key)) if fits else None


@dataclass(frozen=True)
class Needs:
    """What the archive must hold, whatever it holds now (rules 1, 2 and 4 of the module)."""

    keep_all: str | None  # a fail-safe reason that keeps every file, or None
    segment_size: int
    onward: tuple[int, int] | None  # (timeline, segment): this and everything after it
    onward_reason: str
    ranges: tuple[tuple[int, int, int, str], ...]  # (timeline, first, last, reason): kept base backups, dependencies

    def reason(self, timeline: int, number: int) -> str | None:
        """Why segment `number` of `timeline` is needed, or None when it is not."""
        if self.keep_all is not None:
            return self.keep_all
        assert self.onward is not None
        if timeline > self.onward[0] or (timeline == self.onward[0] and number >= self.onward[1]):
            return self.onward_reason
        for tl, first, last, why in self.ranges:
            if tl == timeline and first <= number <= last:
                return why
        return None

    def needed_between(self, timeline: int, first: int, last: int) -> bool:
        """Whether any segment first..last of `timeline` is needed (e.g. to judge a hole)."""
        if first > last:
            return False
        if self.keep_all is not None or self.reason(timeline, last) is not None:
            return True  # `onward` is a suffix: if any segment of the span is in it, the last is
        return any(tl == timeline and a <= last and first <= b for tl, a, b, _ in self.ranges)


def needs(
    bases: Iterable[BaseBackup],
    now: dt.datetime,
    window: dt.timedelta,
    segment_size: int | None = DEFAULT_SEGMENT_SIZE,
    needed: Iterable[tuple[str, str, str]] = (),
) -> Needs:
    """The WAL that kept base backups, the window and `needed` ranges ((key of a kept backup,
    first segment, last segment), e.g. a dump reconstructed by PITR) need; see the module docstring."""
    _check_now(now, window)
    kept = sorted((b for b in bases if b.kept), key=lambda b: b.key)
    keep_all: str | None = None
    size: int = DEFAULT_SEGMENT_SIZE
    deps: list[tuple[int, int, int, str]] = []
    if segment_size is None or not valid_segment_size(segment_size):
        keep_all = "WAL segment size unknown; all WAL kept"
    else:
        size = segment_size
        for key, first, last in sorted(needed):
            lo, hi = parse_segment(first, size), parse_segment(last, size)
            if lo is None or hi is None or lo[0] != hi[0] or lo[1] > hi[1]:
                keep_all = f"the WAL range {first}..{last} that {key} needs is unreadable; all WAL kept"
                break
            deps.append((lo[0], lo[1], hi[1], f"needed by {key}"))
    unknown = [b.key for b in kept if not b.known]
    if keep_all is None and not kept:
        keep_all = NO_BASE_KEPT
    elif keep_all is None and unknown:
        keep_all = f"kept base backup {unknown[0]} records no usable WAL range or stop time; all WAL kept"
    if keep_all is not None:
        return Needs(keep_all, size, None, "", ())
    # Where the unbroken keep starts: the window's base, else the oldest kept base backup.
    anchor = window_base(kept, now, window)
    if anchor is not None:
        onward = f"inside the PITR window (from the start of base backup {anchor.key})"
    else:
        anchor = min(kept, key=lambda b: (b.timeline, b.start_lsn, b.key))  # the earliest start: keeps the most
        onward = f"the PITR window reaches back before every base backup: kept from the start of the oldest, {anchor.key}"
    ranges = []
    for b in kept:
        assert b.timeline is not None and b.start_lsn is not None and b.stop_lsn is not None
        why = f"WAL of kept base backup {b.key} (start..stop)"
        ranges.append((b.timeline, segment_of_lsn(b.start_lsn, size), segment_of_lsn(b.stop_lsn, size), why))
    assert anchor.timeline is not None and anchor.start_lsn is not None
    return Needs(None, size, (anchor.timeline, segment_of_lsn(anchor.start_lsn, size)), onward, tuple(ranges + deps))


def decide(
    names: Iterable[str],
    bases: Iterable[BaseBackup],
    now: dt.datetime,
    window: dt.timedelta,
    segment_size: int | None = DEFAULT_SEGMENT_SIZE,
    needed: Iterable[tuple[str, str, str]] = (),
) -> list[WalDecision]:
    """Keep or expire every WAL file in `names`; see the module docstring for the rules."""
    need = needs(bases, now, window, segment_size, needed)
    size = need.segment_size
    all_names = sorted(set(names))
    segments: dict[str, tuple[int, int]] = {}
    for name in all_names:
        if not name.endswith(PARTIAL) and (pos := parse_segment(name, size)) is not None:
            segments[name] = pos
    newest: dict[int, int] = {}
    for tl, n in segments.values():
        newest[tl] = max(n, newest.get(tl, n))

    def reason_for(name: str) -> tuple[bool, str]:
        if name.endswith(PARTIAL) and parse_segment(name, size) is not None:
            return True, PARTIAL_KEPT
        if HISTORY.match(name):
            return True, HISTORY_KEPT
        pos = segments.get(name)
        if pos is None:
            return True, UNKNOWN_NAME
        if need.keep_all is not None:
            return True, need.keep_all
        tl, n = pos
        why = need.reason(tl, n)
        if why is not None:
            return True, why
        if n == newest[tl]:
            return True, f"newest archived segment of timeline {tl}"
        return False, EXPIRED

    decided = [WalDecision(name, *reason_for(name)) for name in all_names]

    def order(d: WalDecision) -> tuple[int, int, int, str]:
        pos = parse_segment(d.name, size)
        return (0, *pos, d.name) if pos is not None else (1, 0, 0, d.name)

    return sorted(decided, key=order)


def expired_names(decisions: Iterable[WalDecision]) -> list[str]:
    return [d.name for d in decisions if not d.keep]


@dataclass(frozen=True)
class Run:
    """Consecutive files with one decision: segments ``first..last`` of one timeline, or one file."""

    first: str
    last: str
    keep: bool
    reason: str
    count: int

    @property
    def label(self) -> str:
        return self.first if self.first == self.last else f"{self.first}..{self.last}"

    def line(self) -> str:
        return f"{self.label}: {'keep' if self.keep else 'expire'} ({self.reason})"


def runs(decisions: Iterable[WalDecision], segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[Run]:
    """Summarise decisions as runs: consecutive segments (no hole between them) of one timeline
    with the same decision and reason; `.partial`, history and unknown files stand alone."""
    out: list[Run] = []
    prev: tuple[int, int] | None = None
    for d in decisions:
        pos = None if d.name.endswith(PARTIAL) else parse_segment(d.name, segment_size)
        last = out[-1] if out else None
        if (
            pos is not None
            and prev is not None
            and last is not None
            and pos == (prev[0], prev[1] + 1)
            and (last.keep, last.reason) == (d.keep, d.reason)
        ):
            out[-1] = Run(last.first, d.name, d.keep, d.reason, last.count + 1)
        else:
            out.append(Run(d.name, d.name, d.keep, d.reason, 1))
        prev = pos
    return out

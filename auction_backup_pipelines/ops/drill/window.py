"""Which moment T a recovery drill may recover to: the intersection of the three systems' windows.

PostgreSQL can reach the spans of `pitr.recovery_window` (a base backup plus unbroken archived
WAL). Kafka can reach from the start of the oldest day exported for every configured topic up to
now (the days not exported yet are read from the live log). Redis can reach from the capture time
of its oldest snapshot up to now (its state at T is the newest snapshot taken at or before T).
A T outside any of them is refused in one line that names that system's window; without --at the
drill picks the newest moment inside all three and says which system's window bounds it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from auction_backup_pipelines.errors import RefusedError
from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.kafka.records import artifact_name
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.client import SYSTEM as POSTGRES
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.redis.client import SNAPSHOT
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository

UTC = dt.UTC
Span = tuple[dt.datetime, dt.datetime]


class DrillRefused(RefusedError):
    """The drill cannot recover to the moment asked (or to any moment); nothing was created."""


def fmt(t: dt.datetime) -> str:
    return pitr.format_utc(t)


@dataclass(frozen=True)
class SystemWindow:
    """Where one system can be recovered to: `spans` (empty: nowhere), and why in words."""

    system: str
    spans: tuple[Span, ...]
    source: str  # what makes the window, e.g. "base backups + archived WAL"

    def contains(self, t: dt.datetime) -> bool:
        return any(a <= t <= b for a, b in self.spans)

    def describe(self) -> str:
        if not self.spans:
            return f"{self.system}: nothing recoverable ({self.source})"
        return f"{self.system}: " + ", ".join(f"{fmt(a)} .. {fmt(b)}" for a, b in self.spans) + f" UTC ({self.source})"


def snapshot_time(b: Backup) -> dt.datetime:
    """When a Redis snapshot was captured (its state), from its manifest."""
    return dt.datetime.fromisoformat(str(b.metadata["captured_at"]).replace("Z", "+00:00")).astimezone(UTC)


def postgres_window(repo: Repository, archive: WalArchive) -> SystemWindow:
    records = list(archive.records())
    window = pitr.recovery_window(repo, archive, records)
    gaps = health(records).gaps
    spans = sorted(((r.start, r.end) for r in window.reaches), key=lambda s: s[0])
    merged: list[Span] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    source = "base backups + archived WAL"
    if gaps:  # the window ends early at a gap: name the missing piece
        last, after = gaps[-1]
        source += f"; WAL archive gap: segments after {last} up to {after} are missing"
    return SystemWindow(POSTGRES, tuple(merged), source)


def kafka_window(repo: Repository, topics: Sequence[str], now: dt.datetime) -> SystemWindow:
    starts, missing = [], []
    for topic in topics:
        days = sorted({b.day for b in repo.list(KAFKA, artifact_name(topic))})
        if days:
            starts.append(capture.day_start(days[0]))
        else:
            missing.append(topic)
    if missing or not topics:
        what = f"no export of {', '.join(missing)} yet" if missing else "no topic configured (KAFKA_TOPICS)"
        return SystemWindow(KAFKA, (), what)
    start = max(starts)
    return SystemWindow(KAFKA, ((start, now),) if start <= now else (), "day exports, then the live log")


def redis_window(repo: Repository, now: dt.datetime) -> SystemWindow:
    times = [snapshot_time(b) for b in repo.list(REDIS, SNAPSHOT)]
    if not times:
        return SystemWindow(REDIS, (), "no snapshot yet")
    return SystemWindow(REDIS, ((min(times), now),), "newest snapshot at or before T")


def intersect(windows: Sequence[SystemWindow]) -> list[Span]:
    """The spans every window covers."""
    common: list[Span] = list(windows[0].spans)
    for w in windows[1:]:
        common = [(max(a, c), min(b, d)) for a, b in common for c, d in w.spans if max(a, c) <= min(b, d)]
    return sorted(common)


@dataclass(frozen=True)
class Target:
    at: dt.datetime
    reason: str
    windows: tuple[SystemWindow, ...]


def choose_target(windows: Sequence[SystemWindow], at: dt.datetime | None, now: dt.datetime) -> Target:
    """T as given (checked against every window) or, without one, the newest moment in all of them."""
    described = "; ".join(w.describe() for w in windows)
    if at is not None:
        at = at.astimezone(UTC)
        if at > now:
            raise DrillRefused(f"T {fmt(at)} UTC is in the future (now is {fmt(now)} UTC); windows: {described}")
        for w in windows:
            if not w.contains(at):
                raise DrillRefused(f"T {fmt(at)} UTC is outside the recoverable window of {w.describe()}")
        return Target(at, "given with --at; inside every system's window", tuple(windows))
    empty = [w for w in windows if not w.spans]
    if empty:
        raise DrillRefused("no moment can be recovered: " + "; ".join(w.describe() for w in empty))
    common = intersect(windows)
    if not common:
        raise DrillRefused(f"the systems' recoverable windows do not overlap: {described}")
    start, end = common[-1]
    bound = [w.system for w in windows if any(b == end for _, b in w.spans)]
    why = f"{' and '.join(bound)} window ends there" if bound else "the end of the common window"
    reason = f"the newest moment every system can recover ({why}); common window {fmt(start)} .. {fmt(end)} UTC"
    return Target(end, reason, tuple(windows))

"""Pruning of the continuous WAL archive: the repository seen through policy/wal_retention.py.

Plain Python (no Dagster), shared by `auction-backup prune`, the retention sensor and the
cleanup job, like pruning.py, which calls into this module: the GFS plan there keeps the
PITR window's base backup (`window_rail`), and the WAL plan here is made from the same
listing and the GFS decisions (`plan_wal`).

What the archive holds is read from key names only (layout.parse_wal_key), so a plan costs
no read per segment; the segment size is read from the record of the newest completed
segment (PostgreSQL's `wal_segment_size` is fixed at initdb, and a record's size is the
segment's), and a size that is not a valid segment size makes the plan keep everything.

Order of deletion: WAL goes only after the base backups. `delete_expired_wal` re-plans from
a fresh listing taken after the base backups were deleted, and there every base backup that
still exists counts as kept: a base backup whose deletion failed, or that a fresh GFS plan
kept, keeps its WAL. Files are removed record first (a half-deleted segment never looks
archived), then data; nothing here ever treats WAL as a leftover of a backup.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from auction_backup_pipelines.policy import wal_retention
from auction_backup_pipelines.policy.wal_retention import BaseBackup, Run, WalDecision
from auction_backup_pipelines.postgres.wal_archive import SegmentRecord
from auction_backup_pipelines.repository import layout, verdicts
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import StorageError

BASE_SYSTEM, BASE_ARTIFACT = "postgres", "base_backup"
DEFAULT_WINDOW = dt.timedelta(days=7)

# Outcome actions (the same words as pruning.py's).
DELETED = "deleted"
WOULD_DELETE = "would delete"
ALREADY_GONE = "already gone"
KEPT = "kept"
ERROR = "error"


def window_reason(window: dt.timedelta) -> str:
    days = window / dt.timedelta(days=1)
    return f"base backup of the PITR window ({days:g} days)"


def is_good(b: Backup) -> bool:
    """A base backup that can start a recovery, by its manifest (pruning.py reads it the same way
    when no restore verdict says otherwise)."""
    meta = b.metadata
    return meta.get("verification") != "failed" and meta.get("status", "good") == "good"


def goodness(repo: Repository, manifests: Iterable[Backup]) -> dict[str, bool]:
    """key -> good for each base backup: its latest restore verdict decides (repository/verdicts.py),
    else its manifest, as in pruning.py's status; for the paths that have no retention records."""
    keys = [o.key for o in repo.backend.list(layout.verdicts_prefix(BASE_SYSTEM, BASE_ARTIFACT))]
    found, _unreadable = verdicts.latest_verdicts(repo, keys)  # an unreadable verdict counts as none
    out = {}
    for b in _bases(manifests):
        v = found.get(b.prefix)
        out[b.prefix] = v.passed if v is not None and (v.passed or v.failed) else is_good(b)
    return out


def base_backup(b: Backup, kept: bool, good: bool | None = None) -> BaseBackup:
    """WAL retention's view of a base backup's manifest; what it cannot read stays None."""
    meta = b.metadata

    def read(field: str, parse: Callable[[Any], Any]) -> Any:
        try:
            return parse(meta[field])
        except (KeyError, ValueError, TypeError, AttributeError):
            return None

    stop_time = read("stop_time", dt.datetime.fromisoformat)
    if stop_time is not None and stop_time.utcoffset() is None:
        stop_time = None  # a naive time cannot be placed against the window
    timeline = read("timeline", int)
    return BaseBackup(
        key=b.prefix,
        kept=kept,
        good=is_good(b) if good is None else good,
        timeline=timeline if timeline is None or timeline > 0 else None,
        start_lsn=read("start_lsn", wal_retention.parse_lsn),
        stop_lsn=read("stop_lsn", wal_retention.parse_lsn),
        stop_time=stop_time,
    )


def _bases(manifests: Iterable[Backup]) -> list[Backup]:
    return [b for b in manifests if (b.system, b.artifact) == (BASE_SYSTEM, BASE_ARTIFACT)]


def wal_dependencies(manifests: Iterable[Backup]) -> list[tuple[str, str, str]]:
    """(key, first, last) of every `depends_on_wal` range the given backups record (a dump
    reconstructed through PITR); a malformed one is passed on as is, and keeps all WAL."""
    out = []
    for b in manifests:
        doc = b.metadata.get("depends_on_wal")
        if doc is None:
            continue
        first, last = (doc.get("first"), doc.get("last")) if isinstance(doc, dict) else (None, None)
        out.append((b.prefix, str(first), str(last)))
    return out


def window_rail(
    manifests: Iterable[Backup], now: dt.datetime, window: dt.timedelta, good: Mapping[str, bool] | None = None
) -> dict[str, str]:
    """{key: reason} for the base backup the GFS plan must keep so the whole window stays recoverable
    (`good`: key -> whether retention counts it good; by default its manifest says)."""
    good = good or {}
    bases = [base_backup(b, True, good.get(b.prefix)) for b in _bases(manifests)]
    base = wal_retention.window_base(bases, now, window)
    return {base.key: window_reason(window)} if base is not None else {}


def wal_names(objects: Iterable[str]) -> list[str]:
    """The WAL files (segments, partials, history) that the archive's keys name, once each."""
    return sorted({name for key in objects if (name := layout.parse_wal_key(key)) is not None})


def segment_size(repo: Repository, names: Iterable[str]) -> int | None:
    """The archive's segment size, from the newest completed segment's record (default when the
    archive has none); None when that record cannot be read or holds no valid segment size."""
    completed = [(pos, n) for n in names if not n.endswith(".partial") and (pos := wal_retention.parse_segment(n))]
    if not completed:
        return wal_retention.DEFAULT_SEGMENT_SIZE
    newest = max(completed)[1]
    try:
        with repo.backend.reader(layout.wal_record_key(newest)) as f:
            size = json.loads(f.read())["size"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return size if wal_retention.valid_segment_size(size) else None


@dataclass(frozen=True)
class WalPlan:
    decisions: list[WalDecision]
    window: dt.timedelta
    segment_size: int | None
    window_base: str | None  # key of the base backup the window starts from (None: none is old enough)

    def runs(self) -> list[Run]:
        return wal_retention.runs(self.decisions, self.segment_size or wal_retention.DEFAULT_SEGMENT_SIZE)

    def expired_runs(self) -> list[str]:
        """Labels (`first..last` or one name) of the runs to delete: what a cleanup run is asked for."""
        return [r.label for r in self.runs() if not r.keep]

    def expired(self) -> list[str]:
        return wal_retention.expired_names(self.decisions)

    def lines(self) -> list[str]:
        return [r.line() for r in self.runs()]


def plan_wal(
    repo: Repository,
    objects: Iterable[str],
    manifests: Iterable[Backup],
    kept: Mapping[str, bool],
    now: dt.datetime,
    window: dt.timedelta,
    good: Mapping[str, bool] | None = None,
) -> WalPlan:
    """Keep/expire for every file of the WAL archive, given one listing (`objects`), the manifests
    it holds and the GFS decisions (`kept`: key -> keep; absent: kept; `good` as in `window_rail`)."""
    manifests = list(manifests)
    good = good or {}
    names = wal_names(objects)
    bases = [base_backup(b, kept.get(b.prefix, True), good.get(b.prefix)) for b in _bases(manifests)]
    needed = wal_dependencies(b for b in manifests if kept.get(b.prefix, True))
    size = segment_size(repo, names) if names else wal_retention.DEFAULT_SEGMENT_SIZE
    decisions = wal_retention.decide(names, bases, now, window, size, needed)
    anchor = wal_retention.window_base([b for b in bases if b.kept], now, window)
    return WalPlan(decisions, window, size, anchor.key if anchor else None)


def report(plan: WalPlan) -> str:
    """The WAL part of `auction-backup prune`: the window, then one line per run of segments."""
    days = plan.window / dt.timedelta(days=1)
    base = plan.window_base or "none ended before the window started"
    head = f"WAL archive (PITR window {days:g} days; its base backup: {base}):"
    return "\n".join([head, *("  " + line for line in plan.lines())])


def archive_gaps(
    repo: Repository, records: Iterable[SegmentRecord], gaps: Iterable[tuple[str, str]], window: dt.timedelta, now: dt.datetime
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split the archive's holes (wal_archive.health's gaps) into (gaps, holes made by retention).

    A hole is a gap when a segment missing from it is one retention needs now: inside the PITR
    window, the WAL of a base backup that still exists (all of them count as kept here, as in
    `delete_expired_wal`), or a range a backup depends on. So the health check fails on a lost segment, not on pruning."""
    completed = [r for r in records if not r.partial and not r.name.endswith(".history")]
    newest = max(completed, key=lambda r: (r.timeline, r.segment_no), default=None)
    size = wal_retention.DEFAULT_SEGMENT_SIZE if newest is None else newest.size
    manifests = repo.list(BASE_SYSTEM)  # base backups, and dumps that depend on WAL
    good = goodness(repo, manifests)
    bases = [base_backup(b, True, good.get(b.prefix)) for b in _bases(manifests)]
    need = wal_retention.needs(bases, now, window, size, wal_dependencies(manifests))
    real, pruned = [], []
    for a, b in gaps:
        pa, pb = (wal_retention.parse_segment(x, need.segment_size) for x in (a, b))
        if pa is None or pb is None or pa[0] != pb[0] or need.needed_between(pa[0], pa[1] + 1, pb[1] - 1):
            real.append((a, b))
        else:
            pruned.append((a, b))
    return real, pruned


@dataclass(frozen=True)
class WalOutcome:
    label: str  # a run of segments, `first..last`, or one file
    action: str  # DELETED, WOULD_DELETE, ALREADY_GONE, KEPT or ERROR
    reason: str
    count: int = 0  # files concerned


def _within(label: str, name: str, size: int) -> bool:
    first, _, last = label.partition("..")
    if not last:
        return name == first
    a, b, n = (wal_retention.parse_segment(x, size) for x in (first, last, name))
    return a is not None and b is not None and n is not None and a[0] == b[0] == n[0] and a[1] <= n[1] <= b[1]


def delete_expired_wal(
    repo: Repository, labels: Iterable[str], now: dt.datetime, window: dt.timedelta, dry_run: bool = False
) -> list[WalOutcome]:
    """Delete the requested runs of WAL, each file only if a fresh plan still expires it.

    Call it after the base backups were deleted: the fresh plan counts every base backup that
    still exists as kept, so no base backup is ever left without its WAL."""
    objects = [o.key for o in repo.backend.list(layout.WAL_AREA + "/")]
    manifests = repo.list(BASE_SYSTEM)  # base backups, and dumps that depend on WAL
    # {}: every base backup still present counts as kept
    fresh = plan_wal(repo, objects, manifests, {}, now, window, goodness(repo, manifests))
    size = fresh.segment_size or wal_retention.DEFAULT_SEGMENT_SIZE
    outcomes: list[WalOutcome] = []
    for label in sorted(set(labels)):
        inside = [d for d in fresh.decisions if _within(label, d.name, size)]
        if not inside:
            outcomes.append(WalOutcome(label, ALREADY_GONE, "no archived WAL file in this range"))
            continue
        for run in wal_retention.runs(inside, size):
            names = [d.name for d in inside if _within(run.label, d.name, size) and d.keep == run.keep]
            if run.keep:
                outcomes.append(WalOutcome(run.label, KEPT, "kept by a fresh plan: " + run.reason, run.count))
            elif dry_run:
                outcomes.append(WalOutcome(run.label, WOULD_DELETE, run.reason, run.count))
            else:
                try:
                    # records first: a segment without its record is never served or counted
                    repo.backend.delete_many([layout.wal_record_key(n) for n in names])
                    repo.backend.delete_many([layout.wal_data_key(n) for n in names])
                except (StorageError, OSError) as exc:
                    outcomes.append(WalOutcome(run.label, ERROR, f"{type(exc).__name__}: {exc}", run.count))
                else:
                    outcomes.append(WalOutcome(run.label, DELETED, run.reason, run.count))
    return outcomes

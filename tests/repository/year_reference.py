"""An independent reference for what retention must keep, written from the README's words, not
from policy/retention.py, so the simulated year compares two implementations instead of one with
itself.

Grandfather-father-son over partition days (UTC): with N daily, W weekly and M monthly, a backup
is kept when it is the newest good backup of one of the N newest days, of one of the W newest
ISO weeks, or of one of the M newest months that hold a good backup; the newest good backup is
always kept; a backup that is not good is never counted; an unverified one is kept while no good
backup is newer (its verification may still be running), a failed one goes. Everything a kept
backup depends on is kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    """One published backup as the simulation knows it."""

    key: str
    day: dt.date
    status: str = "good"  # good, failed or unverified
    depends_on: frozenset[str] = field(default_factory=frozenset)


def _newest_per_bucket(good: list[Item], bucket: Callable[[dt.date], Hashable], count: int) -> set[str]:
    newest: dict[Hashable, Item] = {}
    for item in good:
        b = bucket(item.day)
        if b not in newest or (item.day, item.key) > (newest[b].day, newest[b].key):
            newest[b] = item
    chosen = sorted(newest.items(), key=lambda kv: (kv[1].day, kv[1].key), reverse=True)[:count]
    return {item.key for _, item in chosen}


def kept_keys(items: Iterable[Item], today: dt.date, daily: int, weekly: int = 0, monthly: int = 0) -> set[str]:
    """The keys of one artifact that retention must keep on `today` (dependencies not included)."""
    items = [i for i in items if i.day <= today]
    good = [i for i in items if i.status == "good"]
    keep: set[str] = set()
    keep |= _newest_per_bucket(good, lambda d: d, daily)
    keep |= _newest_per_bucket(good, lambda d: d.isocalendar()[:2], weekly)
    keep |= _newest_per_bucket(good, lambda d: (d.year, d.month), monthly)
    if good:
        last_good = max(good, key=lambda i: (i.day, i.key))
        keep.add(last_good.key)
        keep |= {i.key for i in items if i.status == "unverified" and i.day >= last_good.day}
    else:
        keep |= {i.key for i in items if i.status == "unverified"}  # nothing good yet: wait for a verdict
    return keep


def with_dependencies(keep: set[str], items: dict[str, Item]) -> set[str]:
    """`keep` plus everything its members depend on, transitively."""
    todo, done = list(keep), set(keep)
    while todo:
        item = items.get(todo.pop())
        for dep in item.depends_on if item else ():
            if dep not in done:
                done.add(dep)
                todo.append(dep)
    return done


def window_base(stops: dict[str, dt.datetime], items: dict[str, Item], window_start: dt.datetime) -> set[str]:
    """The base backup the PITR window starts from: the newest good one that ended at or before
    the window's start ({} while none has)."""
    before = [(stop, key) for key, stop in stops.items() if stop <= window_start and items[key].status == "good"]
    return {max(before)[1]} if before else set()

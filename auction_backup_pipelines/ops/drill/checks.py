"""The drill's link to the cross-system invariants (auction_backup_pipelines.ops.invariants).

The drill calls `check_platform` with the recovered systems and turns whatever result objects it
returns into `InvariantOutcome`s, so the report and its JSON do not depend on that module's
classes. If the module is not installed the drill cannot prove the platform consistent, and says
so as one failed invariant instead of passing quietly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

INVARIANTS_MODULE = "auction_backup_pipelines.ops.invariants"

PlatformCheck = Callable[..., Sequence[Any]]
"""check_platform(pg_conninfo, kafka_messages, redis_client_factory, at, redis_captured_at) -> results
(each with name, passed, counts, violations, note)."""


@dataclass(frozen=True)
class InvariantOutcome:
    name: str
    passed: bool
    counts: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in self.counts.items())
        head = f"{'PASS' if self.passed else 'FAIL'}  {self.name:<32} {counts}"
        tail = "; ".join(self.violations[:3])
        return head + (f"  violations: {tail}" if tail else "") + (f"  ({self.note})" if self.note else "")


def platform_check(events_since: dt.datetime | None = None) -> PlatformCheck:
    """`check_platform` of the invariants module, or a check that fails saying the module is missing.

    events_since: where the recovered Kafka begins (the oldest exported day); rows older than
    that are not compared with events, which no backup holds."""
    try:
        module = importlib.import_module(INVARIANTS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != INVARIANTS_MODULE:
            raise

        def missing(*args: Any, **kwargs: Any) -> list[InvariantOutcome]:
            return [InvariantOutcome("invariants", False, note=f"{INVARIANTS_MODULE} is not installed: nothing was checked")]

        return missing
    check: PlatformCheck = module.check_platform
    return functools.partial(check, events_since=events_since) if events_since is not None else check


def run_invariants(
    check: PlatformCheck,
    pg_conninfo: dict[str, Any],
    kafka_messages: Mapping[str, list[Any]],
    redis_client_factory: Callable[[], Any],
    at: dt.datetime,
    redis_captured_at: dt.datetime,
) -> list[InvariantOutcome]:
    """Run the invariants; a check that raises is one failed invariant with the reason."""
    try:
        results = check(pg_conninfo, kafka_messages, redis_client_factory, at, redis_captured_at)
    except Exception as exc:  # an invariant that cannot run is a failed drill, reported in one line
        return [
            InvariantOutcome("invariants", False, note=f"the invariants could not run: {str(exc)[:300] or type(exc).__name__}")
        ]
    if not results:
        return [InvariantOutcome("invariants", False, note="the invariants module returned no result")]
    return [
        InvariantOutcome(
            name=str(getattr(r, "name", "?")),
            passed=bool(getattr(r, "passed", False)),
            counts=dict(getattr(r, "counts", None) or {}),
            violations=[str(v) for v in (getattr(r, "violations", None) or [])][:10],
            note=str(getattr(r, "note", "") or ""),
        )
        for r in results
    ]

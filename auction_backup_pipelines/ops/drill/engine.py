"""Run a whole-platform recovery drill: choose T, recover every system into scratch targets,
measure, check the invariants, and always remove the scratch targets.

Recovery objectives, as measured and reported per system:
  rto_s  recovery time: wall time from the start of that system's recovery to its verification
         (PostgreSQL: PITR until the promoted copy answers; Redis: the snapshot checked, loaded
         and compared with its manifest; Kafka: every message up to T read). The platform's
         rto_s runs from the drill's start to the invariants' verdict.
  rpo_s  data-loss window at T: PostgreSQL, the WAL archive's lag behind the primary when the
         drill ran (what a loss of the primary would cost); Kafka, T minus the end of what the
         exports hold (what a loss of the cluster would cost; the live log served the rest);
         Redis, T minus the capture time of the snapshot recovered.
The systems are recovered one after the other, so the platform's time is their sum plus the
invariants. A piece missing before anything starts (a Kafka day not exported, a snapshot whose
checksum fails) fails the drill at once, naming it, since the platform cannot be recovered to T;
a failure during recovery is reported with its reason and the other systems still run.
With `failover`, once the invariants passed, failover.py runs the platform's writes on the
recovered systems for a bounded period and proves them; a failed or skipped rehearsal fails the drill.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.kafka.connection import Cluster
from auction_backup_pipelines.kafka.records import SYSTEM as KAFKA
from auction_backup_pipelines.ops.drill import checks, kafka_state, scratch, scratch_topics, window
from auction_backup_pipelines.ops.drill import failover as rehearsal
from auction_backup_pipelines.ops.drill.scratch import DrillInterrupted
from auction_backup_pipelines.ops.platform_names import PLATFORM, PlatformNames
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.client import SYSTEM as POSTGRES
from auction_backup_pipelines.postgres.client import connect
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.redis.client import SNAPSHOT, VerificationError
from auction_backup_pipelines.redis.client import SYSTEM as REDIS
from auction_backup_pipelines.redis.facts import Facts, compare_facts, server_facts
from auction_backup_pipelines.redis.restore import backup_layouts, materialize
from auction_backup_pipelines.redis.scratch import ScratchServer, scratch_server
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository, utcnow
from auction_backup_pipelines.settings import PostgresSettings

SYSTEM_ORDER = (POSTGRES, KAFKA, REDIS)


class DrillError(BackupError):
    """A piece the drill needs is missing or damaged; the message names it."""


@dataclass
class SystemOutcome:
    system: str
    recovered: bool = False
    rto_s: float | None = None
    rpo_s: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False  # not tried: another system's backups miss a piece

    def line(self) -> str:
        if self.skipped:
            return f"skip  {self.system:<9} not recovered: another system's backups miss a piece"
        if not self.recovered:
            return f"FAIL  {self.system:<9} {self.error}"
        figures = " ".join(f"{k}={v}" for k, v in self.figures.items() if not isinstance(v, (dict, list)))
        return f"ok    {self.system:<9} rto={self.rto_s:g} s  rpo={self.rpo_s:g} s  {figures}"


@dataclass
class DrillReport:
    at: dt.datetime
    reason: str
    windows: list[str]
    systems: list[SystemOutcome]
    invariants: list[checks.InvariantOutcome]
    platform_rto_s: float
    kept: str | None = None
    swept: list[str] = field(default_factory=list)
    failover: rehearsal.FailoverOutcome | None = None  # only when asked for (--failover)
    events_since: dt.datetime | None = None  # rows before it are not matched with events

    @property
    def passed(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        found = [f"{s.system}: {s.error}" for s in self.systems if not s.recovered and not s.skipped]
        if not found and not self.invariants:
            found.append("no invariant was checked")
        found += [f"invariant {i.name} failed" + (f": {i.note}" if i.note else "") for i in self.invariants if not i.passed]
        return found + (self.failover.problems() if self.failover is not None else [])

    def system(self, name: str) -> SystemOutcome:
        return next(s for s in self.systems if s.system == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "at": self.at.isoformat(),
            "reason": self.reason,
            "windows": self.windows,
            "platform_rto_s": self.platform_rto_s,
            "systems": {s.system: dataclasses.asdict(s) for s in self.systems},
            "invariants": [i.as_dict() for i in self.invariants],
            "problems": self.problems(),
            "kept": self.kept,
            "swept_stale_scratch": self.swept,
            "events_since": self.events_since.isoformat() if self.events_since else None,
            "failover": self.failover.as_dict() if self.failover is not None else None,
        }

    def lines(self) -> list[str]:
        out = [f"T = {pitr.format_utc(self.at)} UTC: {self.reason}"]
        out += [f"  window {w}" for w in self.windows]
        out += [s.line() for s in self.systems]
        if self.events_since is not None:
            since = pitr.format_utc(self.events_since)
            out.append(f"rows are matched with their events from {since} UTC on, where the recovered Kafka begins")
        out += [i.line() for i in self.invariants]
        out += self.failover.lines() if self.failover is not None else []
        if self.kept:
            out.append(
                f"kept scratch targets in {self.kept}; the recovered PostgreSQL runs on port "
                f"{self.system(POSTGRES).figures.get('port', '?')} until `pg_ctl -D {self.kept}/postgres/data stop` "
                "(as the postgres user); remove the folder when done"
            )
        verdict = "PASSED" if self.passed else "FAILED: " + "; ".join(self.problems())
        out.append(f"drill {verdict} (platform rto={self.platform_rto_s:g} s)")
        return out


def _elapsed(since: float) -> float:
    return round(time.monotonic() - since, 3)


def _fail(outcome: SystemOutcome, exc: Exception) -> None:
    if isinstance(exc, DrillInterrupted):
        raise exc
    outcome.error = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__


def _recover_postgres(
    s: PostgresSettings,
    repo: Repository,
    archive: WalArchive,
    at: dt.datetime,
    folder: Path,
    stack: contextlib.ExitStack,
    keep: bool,
) -> tuple[SystemOutcome, dict[str, Any] | None]:
    out = SystemOutcome(POSTGRES)
    started = time.monotonic()
    try:
        records = list(archive.records())
        out.rpo_s = round(health(records, archive.heartbeat()).lag_seconds() or 0.0, 3)
        result = pitr.restore_to_time(s, repo, archive, at, folder / "postgres")
        instance = result.instance(s.bin_dir)
        if not keep:
            stack.enter_context(instance)
        with connect(instance.settings(s)) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchone()[0]  # type: ignore[index]
        out.rto_s, out.recovered = _elapsed(started), True
        out.figures = {
            "base_backup": result.base_backup,
            "wal_files": result.wal_files_staged,
            "reached_transaction_time": result.reached_transaction_time,
            "tables": tables,
            "port": result.port,
            **result.phases,  # the RTO's parts: verify, extract + stage WAL, recover
        }
        settings = instance.settings(s)
        conninfo = {"host": settings.host, "port": settings.port, "dbname": s.dbname, "user": s.user, "password": s.password}
        return out, conninfo
    except Exception as exc:  # reported as this system's failure, the drill goes on
        _fail(out, exc)
        return out, None


def missing_pieces(repo: Repository, topics: Sequence[str], at: dt.datetime) -> dict[str, str]:
    """Per system, the first piece missing or damaged among the backups a recovery to `at` needs,
    found before anything is recovered (a WAL gap is already refused with the window)."""
    found: dict[str, str] = {}
    for topic in topics:
        try:
            kafka_state.exports_up_to(repo, topic, at.date())
        except BackupError as exc:
            found.setdefault(KAFKA, str(exc))
    try:
        backup = newest_snapshot(repo, at)
        try:
            repo.verify(backup)
        except BackupError as exc:
            raise DrillError(f"Redis snapshot {backup.prefix} is damaged: {exc}") from None
    except BackupError as exc:
        found[REDIS] = str(exc)
    return found


def newest_snapshot(repo: Repository, at: dt.datetime) -> Backup:
    before = [b for b in repo.list(REDIS, SNAPSHOT) if window.snapshot_time(b) <= at]
    if not before:
        raise DrillError(f"no Redis snapshot captured at or before {pitr.format_utc(at)} UTC in {repo.describe()}")
    return max(before, key=window.snapshot_time)


def _recover_redis(
    repo: Repository, at: dt.datetime, folder: Path, stack: contextlib.ExitStack
) -> tuple[SystemOutcome, ScratchServer | None, dt.datetime | None]:
    out = SystemOutcome(REDIS)
    started = time.monotonic()
    try:
        backup = newest_snapshot(repo, at)
        captured = window.snapshot_time(backup)
        out.rpo_s = round((at - captured).total_seconds(), 3)
        layouts = backup_layouts(backup)
        if len(layouts) != 1:
            raise DrillError(f"Redis snapshot {backup.prefix} is a cluster snapshot; the drill loads standalone snapshots only")
        name, files, aof = layouts[0]
        try:
            repo.verify(backup)
        except BackupError as exc:
            raise DrillError(f"Redis snapshot {backup.prefix} is damaged: {exc}") from None
        materialize(repo, backup, folder / "redis", files, aof)
        databases = backup.metadata.get("source", {}).get("databases", 16)
        srv = stack.enter_context(scratch_server(folder / "redis", databases=databases, aof=aof))
        expected = Facts.from_json(backup.metadata["content"])
        actual = server_facts(srv, expected.bucket_ms)
        assert actual.observed_ms is not None
        problems, _ = compare_facts(expected, actual, actual.observed_ms)
        if problems:
            raise VerificationError(f"Redis snapshot {backup.prefix} loads into something else than its manifest: {problems[0]}")
        out.rto_s, out.recovered = _elapsed(started), True
        out.figures = {"snapshot": backup.prefix, "captured_at": captured.isoformat(), "keys": actual.keys}
        return out, srv, captured
    except Exception as exc:  # reported as this system's failure, the drill goes on
        _fail(out, exc)
        return out, None, None


def _recover_kafka(
    repo: Repository, cluster: Cluster, topics: Sequence[str], at: dt.datetime, max_messages: int
) -> tuple[SystemOutcome, dict[str, kafka_state.TopicState] | None]:
    out = SystemOutcome(KAFKA)
    started = time.monotonic()
    try:
        states = kafka_state.recover_topics(repo, cluster, topics, at, max_messages=max_messages)
        out.rto_s, out.recovered = _elapsed(started), True
        until = [st.exported_until for st in states.values() if st.exported_until is not None]
        out.rpo_s = round(max((at - u).total_seconds() for u in until), 3) if until else None
        out.figures = {
            "messages": sum(len(st.messages) for st in states.values()),
            "from_exports": sum(st.exported_messages for st in states.values()),
            "from_live_log": sum(st.live_messages for st in states.values()),
            "topics": {t: {"days": st.exported_days, "cut_offsets": st.cut_offsets} for t, st in states.items()},
        }
        return out, states
    except Exception as exc:  # reported as this system's failure, the drill goes on
        _fail(out, exc)
        return out, None


def choose(repo: Repository, topics: Sequence[str], at: dt.datetime | None, now: dt.datetime | None = None) -> window.Target:
    """T and why (or DrillRefused naming the window), from what the repository holds now."""
    now = now or utcnow()
    windows = [
        window.postgres_window(repo, WalArchive(repo.backend)),
        window.kafka_window(repo, topics, now),
        window.redis_window(repo, now),
    ]
    return window.choose_target(windows, at, now)


def run_drill(
    repo: Repository,
    postgres: PostgresSettings,
    kafka: Cluster,
    topics: Sequence[str],
    at: dt.datetime | None = None,
    *,
    keep: bool = False,
    invariants: checks.PlatformCheck | None = None,
    scratch_parent: Path | None = None,
    max_messages: int = kafka_state.MAX_MESSAGES,
    progress: Callable[[str], None] = lambda line: None,
    failover: bool = False,
    failover_seconds: float = rehearsal.DEFAULT_SECONDS,
    failover_names: PlatformNames = PLATFORM,
) -> DrillReport:
    """Recover the platform to `at` (default: the newest moment every system can reach) in
    scratch targets, measure and check it; the targets are removed on every way out (unless `keep`).
    With `failover`, once the invariants passed, the platform's writes run on the recovered
    systems for `failover_seconds` (ops/drill/failover.py); the platform's rto_s stops before it."""
    started = time.monotonic()
    swept = scratch.sweep_stale(scratch_parent) + scratch_topics.sweep_stale_topics(kafka)
    target = choose(repo, topics, at)
    progress(f"T = {pitr.format_utc(target.at)} UTC: {target.reason}")
    missing = missing_pieces(repo, topics, target.at)
    if missing:  # the platform cannot be recovered to T: say what is missing, recover nothing
        return DrillReport(
            at=target.at,
            reason=target.reason,
            windows=[w.describe() for w in target.windows],
            systems=[SystemOutcome(name, error=missing.get(name), skipped=name not in missing) for name in SYSTEM_ORDER],
            invariants=[],
            platform_rto_s=_elapsed(started),
            swept=swept,
            failover=rehearsal.not_attempted("the backups miss a piece: nothing was recovered") if failover else None,
        )
    # rows older than the recovered Kafka have no recovered events to match (never exported)
    kafka_window = next(w for w in target.windows if w.system == KAFKA)
    events_since = next((a for a, b in kafka_window.spans if a <= target.at <= b), None)
    check = invariants or checks.platform_check(events_since)
    archive = WalArchive(repo.backend)
    folder = scratch.new_folder(keep, scratch_parent)
    with scratch.sigterm_raises():
        try:
            with contextlib.ExitStack() as stack:
                progress(f"recovering into {folder}")
                pg, conninfo = _recover_postgres(postgres, repo, archive, target.at, folder, stack, keep)
                progress(pg.line())
                kf, states = _recover_kafka(repo, kafka, topics, target.at, max_messages)
                progress(kf.line())
                rd, srv, captured = _recover_redis(repo, target.at, folder, stack)
                progress(rd.line())
                results: list[checks.InvariantOutcome] = []
                if conninfo is not None and states is not None and srv is not None and captured is not None:
                    messages = {t: st.messages for t, st in states.items()}
                    results = checks.run_invariants(check, conninfo, messages, srv.client, target.at, captured)
                platform_rto_s = _elapsed(started)
                outcome = None
                if failover:
                    outcome = rehearsal.after_invariants(
                        results,
                        repo,
                        conninfo,
                        srv.client if srv is not None else None,
                        kafka,
                        states,
                        target.at,
                        seconds=failover_seconds,
                        names=failover_names,
                        progress=progress,
                    )
            return DrillReport(
                at=target.at,
                reason=target.reason,
                windows=[w.describe() for w in target.windows],
                systems=[pg, kf, rd],
                invariants=results,
                platform_rto_s=platform_rto_s,
                kept=str(folder) if keep else None,
                swept=swept,
                failover=outcome,
                events_since=events_since if invariants is None else None,
            )
        finally:
            if not keep:
                scratch.stop_servers(folder)
                shutil.rmtree(folder, ignore_errors=True)

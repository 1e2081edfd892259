"""End-to-end health checks, the engine behind `auction-backup check` (pgBackRest's `check`).

Why: `info` shows what the repositories hold; `check` proves the machinery works right now, the
way a monitoring system wants it: one verdict per check, OK, WARN or FAIL, each with one line of
detail. It writes, reads back and deletes a test object in every repository (local, offsite);
decrypts the newest manifest of every artifact with the configured keys; asks PostgreSQL for the
WAL receiver's replication slot and how much WAL it holds back; reaches every service; reads the
WAL archive's lag and gaps; and compares the local repository's free space with what the
retention policy will need. A check never raises: what stops it is its FAIL line. No Dagster.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import status
from auction_backup_pipelines.policy import retention
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import LocalBackend
from auction_backup_pipelines.settings import PostgresSettings

__all__ = [
    "FAIL",
    "OK",
    "WARN",
    "Check",
    "check_free_space",
    "check_keys",
    "check_replication_slot",
    "check_wal_archive",
    "guarded",
    "probe_repository",
    "run_parallel",
    "worst",
]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
RANK = {OK: 0, WARN: 1, FAIL: 2}
DEFAULT_SLOT = "auction_backup_wal"  # what `auction-backup wal-receive` creates by default
SLOT_RETAINED_WARN = 1 << 30  # WAL held back by the slot before it is worth a look (1 GiB)


@dataclass(frozen=True)
class Check:
    name: str  # e.g. "repository local", "service postgres"
    status: str  # OK, WARN or FAIL
    detail: str  # one line

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def worst(checks: list[Check]) -> str:
    """The most severe status among `checks` (OK when there are none)."""
    return max((c.status for c in checks), key=RANK.__getitem__, default=OK)


def guarded(name: str, probe: Callable[[], Check]) -> Check:
    """`probe()`, or a FAIL line when it raised: one check never stops the others."""
    try:
        return probe()
    except (BackupError, OSError, ValueError) as exc:
        return Check(name, FAIL, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def run_parallel(probes: list[tuple[str, Callable[[], Check]]]) -> list[Check]:
    """Run independent probes (network round trips with their own timeouts) side by side, in order."""
    with ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        futures = [pool.submit(guarded, name, probe) for name, probe in probes]
        return [f.result() for f in futures]


def probe_repository(name: str, repo: Repository) -> Check:
    """Write a small random object, read it back, compare and delete it (through the encryption
    layer when the repository is encrypted). The object has a temporary file's name (layout.temp_name),
    so one left by a check that died midway is removed by the life cycle like any crash leftover."""
    key = layout.temp_name("check-probe")
    payload = secrets.token_bytes(256)
    started = time.monotonic()
    with repo.backend.writer(key) as f:
        f.write(payload)
    try:
        with repo.backend.reader(key) as f:
            back = f.read()
    finally:
        repo.backend.delete(key)
    ms = (time.monotonic() - started) * 1000
    if back != payload:
        return Check(name, FAIL, f"{repo.describe()}: the test object read back differs from what was written")
    return Check(name, OK, f"wrote, read back and deleted a test object in {repo.describe()} ({ms:.0f} ms)")


def check_keys(name: str, repo: Repository) -> Check:
    """The configured keys decrypt the newest manifest of every artifact (a rotation that dropped a
    key still needed, or a wrong key under the right id, fails here before a restore needs it)."""
    backups, problems = status.newest_backups(repo)
    if problems:
        return Check(name, FAIL, f"{len(problems)} newest manifest(s) cannot be read: {problems[0]}")
    if repo.encryption is None:
        return Check(name, OK, f"not encrypted; the newest manifest of {len(backups)} artifact(s) reads")
    ids = ", ".join(repo.encryption.keys)
    if not backups:
        return Check(name, OK, f"keys {ids} configured; no backup yet to decrypt")
    return Check(name, OK, f"keys {ids} decrypt the newest manifest of {len(backups)} artifact(s)")


def check_replication_slot(pg: PostgresSettings, slot: str = DEFAULT_SLOT) -> Check:
    """The WAL receiver's slot exists, is in use, and how much WAL it makes the primary keep."""
    name = "replication slot"
    with pg_client.connect(pg) as conn:
        row = conn.execute(
            "SELECT active, wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
    if row is None:
        return Check(name, FAIL, f"no replication slot {slot!r}: is `auction-backup wal-receive` running (--slot)?")
    active, wal_status, retained = row
    held = "unknown" if retained is None else f"{retained / (1 << 20):.1f} MiB"
    if wal_status == "lost":
        return Check(name, FAIL, f"slot {slot!r} lost WAL the receiver never got: the archive has a hole; take a base backup")
    if not active:
        return Check(name, WARN, f"slot {slot!r} has no receiver connected; the primary keeps {held} of WAL for it")
    if wal_status == "unreserved" or (retained or 0) > SLOT_RETAINED_WARN:
        return Check(name, WARN, f"slot {slot!r} lags: the primary keeps {held} of WAL for it ({wal_status})")
    return Check(name, OK, f"slot {slot!r} active, lag {held} ({wal_status})")


def check_wal_archive(repo: Repository, max_lag_s: float, pitr_window: dt.timedelta) -> Check:
    """The archive's lag against WAL_ARCHIVE_MAX_LAG_S, and no gap that retention did not make."""
    name = "wal archive"
    p = status.pitr_status(repo, pitr_window, dt.datetime.now(dt.UTC))
    if p.problem:
        return Check(name, FAIL, p.problem)
    if p.newest_segment is None:
        return Check(name, WARN, "the WAL archive is empty: point-in-time recovery is not possible")
    if p.gaps:
        return Check(name, FAIL, f"{len(p.gaps)} gap(s) in the WAL archive, first {p.gaps[0]}")
    lag = p.lag_seconds or 0.0
    if p.earliest is None:
        return Check(name, WARN, f"lag {lag:.0f} s, newest {p.newest_segment}; but {p.window}")
    if lag > max_lag_s:
        return Check(name, WARN, f"lag {lag:.0f} s exceeds WAL_ARCHIVE_MAX_LAG_S={max_lag_s:g}; newest {p.newest_segment}")
    return Check(name, OK, f"lag {lag:.0f} s, newest {p.newest_segment}; {p.window}")


def projected_need(repo: Repository, pitr_window: dt.timedelta) -> tuple[int, int, int]:
    """(projected, used, one day) in bytes: the newest stored size of each artifact times the number
    of backups its retention policy keeps, plus WAL per day times the PITR window; what the
    repository holds now; and what one more day adds (the newest of each artifact plus a day of WAL)."""
    backups, _ = status.newest_backups(repo)
    kept = 0
    for b in backups:
        policy = retention.policy_for(layout.artifact_key(b.system, b.artifact), retention.DEFAULT_POLICIES, retention.Policy())
        kept += b.stored_size * max(1, policy.daily + policy.weekly + policy.monthly)
    records = [r for r in WalArchive(repo.backend).records() if not r.partial]
    wal_per_day = 0
    if records:
        span_days = (max(r.archived for r in records) - min(r.archived for r in records)).total_seconds() / 86400
        wal_per_day = int(sum(r.stored_size for r in records) / max(1.0, span_days))
    used = sum(o.size for o in repo.storage.list(""))
    projected = kept + int(wal_per_day * pitr_window.total_seconds() / 86400)
    return projected, used, sum(b.stored_size for b in backups) + wal_per_day


def check_free_space(repo: Repository, pitr_window: dt.timedelta) -> Check:
    """FAIL when the next day's backups would not fit; WARN when the repository cannot grow to what
    retention will keep (plus one day); OK otherwise."""
    name = "free space"
    if not isinstance(repo.storage, LocalBackend):
        return Check(name, OK, f"{repo.describe()} is not a local folder; not measured")
    free = shutil.disk_usage(repo.storage.root).free
    projected, used, one_day = projected_need(repo, pitr_window)
    growth = max(0, projected - used)
    gib = 1 << 30
    figures = (
        f"{free / gib:.1f} GiB free; retention needs about {projected / gib:.2f} GiB "
        f"(holds {used / gib:.2f} GiB now, one day adds {one_day / gib:.2f} GiB)"
    )
    if free < one_day:
        return Check(name, FAIL, f"the next backups will not fit: {figures}")
    if free < growth + one_day:
        return Check(name, WARN, f"the repository will fill before retention balances: {figures}")
    return Check(name, OK, figures)

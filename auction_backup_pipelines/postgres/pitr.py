"""Point-in-time recovery: a base backup plus archived WAL, replayed to a moment you name.

The recoverable window is computed from what the repository holds, before anything is
created: each base backup can reach from its stop time up to the end of the unbroken run of
archived WAL segments that follows it (a gap ends that run). A target outside every such
interval — in the future, before the first base backup, past the newest archived WAL, or in a
gap — is refused with the window in the message.

The restore never touches the primary: it builds a new data directory, stages the WAL it
needs next to it (fetched from the archive in parallel and checked against the archive's
sha256), points `restore_command` at that staging folder (the server runs as `postgres`,
which must not need access to the repository), disables archiving on the copy, and starts it
on its own port with `recovery_target_time` and `recovery_target_action = 'promote'`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import os
import pwd
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import psycopg

from auction_backup_pipelines.child_env import base_env
from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.localhost import free_port, port_in_use
from auction_backup_pipelines.postgres.base_backup import BASE_BACKUP, open_tar
from auction_backup_pipelines.postgres.client import SYSTEM, PostgresError, connect, pg_bin
from auction_backup_pipelines.postgres.restore_target import check_shell_safe, extract_base_tar, validate_target_dir
from auction_backup_pipelines.postgres.wal_archive import (
    COVERAGE_MARGIN,
    SegmentRecord,
    WalArchive,
    health,
    lsn_to_segment,
    segment_name,
    segment_number,
)
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings

UTC = dt.UTC
TIME_FORMATS = "'YYYY-MM-DD HH:MM:SS' (UTC unless --timezone is given) or ISO 8601 with an offset"


class PitrError(BackupError):
    """The recovery cannot be done as asked; nothing was created."""


@dataclass(frozen=True)
class Reach:
    """What one base backup can recover: [start, end] and the WAL segments on the way."""

    backup: Backup
    start: dt.datetime
    end: dt.datetime
    timeline: int
    first_segment: int
    last_segment: int  # the last segment of the unbroken run (may be served from a .partial)
    ends_at_gap: bool


@dataclass
class RecoveryWindow:
    reaches: list[Reach] = field(default_factory=list)

    @property
    def earliest(self) -> dt.datetime | None:
        return min((r.start for r in self.reaches), default=None)

    @property
    def latest(self) -> dt.datetime | None:
        return max((r.end for r in self.reaches), default=None)

    def describe(self) -> str:
        if not self.reaches:
            return "nothing is recoverable yet (no base backup with archived WAL)"
        spans = _merge([(r.start, r.end) for r in self.reaches])
        text = ", ".join(f"{format_utc(a)} .. {format_utc(b)}" for a, b in spans)
        return f"recoverable window: {text} (UTC)"

    def reach_for(self, target: dt.datetime) -> Reach | None:
        fits = [r for r in self.reaches if r.start <= target <= r.end]
        return max(fits, key=lambda r: r.start) if fits else None


def format_utc(t: dt.datetime) -> str:
    """`t` as 'YYYY-MM-DD HH:MM:SS' in UTC, the form the window and the refusals print."""
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _merge(spans: list[tuple[dt.datetime, dt.datetime]]) -> list[tuple[dt.datetime, dt.datetime]]:
    merged: list[tuple[dt.datetime, dt.datetime]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def parse_target(text: str | dt.datetime, timezone: str = "UTC") -> dt.datetime:
    if isinstance(text, dt.datetime):
        value = text
    else:
        try:
            value = dt.datetime.fromisoformat(text.strip())
        except ValueError:
            raise PitrError(f"cannot read target time {text!r}; expected {TIME_FORMATS}") from None
    if value.tzinfo is None:
        try:
            value = value.replace(tzinfo=ZoneInfo(timezone))
        except ZoneInfoNotFoundError:
            raise PitrError(f"unknown timezone {timezone!r} (use an IANA name such as UTC or Europe/Paris)") from None
    return value.astimezone(UTC)


def recovery_window(repo: Repository, archive: WalArchive, records: list[SegmentRecord] | None = None) -> RecoveryWindow:
    records = list(archive.records()) if records is None else records
    covered_until = health(records, archive.heartbeat()).covered_until
    by_tl: dict[int, dict[int, SegmentRecord]] = {}
    for r in records:
        if r.name.endswith(".history"):
            continue
        slot = by_tl.setdefault(r.timeline, {})
        n = r.segment_no
        # a completed segment wins over a partial copy of the same segment
        if n not in slot or (slot[n].partial and not r.partial):
            slot[n] = r
    window = RecoveryWindow()
    for b in repo.list(SYSTEM, BASE_BACKUP):
        m = b.metadata
        tl = int(m["timeline"])
        first = segment_number(lsn_to_segment(m["start_lsn"], tl))
        stop_seg = segment_number(lsn_to_segment(m["stop_lsn"], tl))
        segs = by_tl.get(tl, {})
        n = stop_seg  # segments up to the stop LSN are inside the backup's own tar
        while n + 1 in segs:
            n += 1
        last = segs.get(n)
        stop_time = dt.datetime.fromisoformat(m["stop_time"])
        if last is None:
            continue  # no archived WAL after the backup yet: it restores only to its own end
        newest_no = max(segs)
        ends_at_gap = n < newest_no
        # An unbroken run up to the newest segment reaches as far as the archive does.
        end = last.archived - COVERAGE_MARGIN if ends_at_gap or covered_until is None else covered_until
        if end < stop_time:
            continue
        window.reaches.append(Reach(b, stop_time, end, tl, first, n, ends_at_gap))
    return window


def check_target(window: RecoveryWindow, target: dt.datetime, now: dt.datetime | None = None) -> Reach:
    now = now or dt.datetime.now(UTC)
    where = window.describe()
    if target > now:
        raise PitrError(f"target {format_utc(target)} UTC is in the future (now is {format_utc(now)} UTC); {where}")
    if not window.reaches:
        raise PitrError(f"cannot recover to {format_utc(target)} UTC: {where}")
    if target < window.earliest:  # type: ignore[operator]
        raise PitrError(f"target {format_utc(target)} UTC is before the earliest base backup; {where}")
    if target > window.latest:  # type: ignore[operator]
        raise PitrError(f"target {format_utc(target)} UTC is after the newest archived WAL; {where}")
    reach = window.reach_for(target)
    if reach is None:
        raise PitrError(f"target {format_utc(target)} UTC falls in a gap of the WAL archive; {where}")
    return reach


# -- running a server as `postgres` --------------------------------------------------------------


def as_postgres(argv: list[str]) -> list[str]:
    """`argv` run as the postgres user when we are root (a server refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


def chown_postgres(path: Path) -> None:
    """Give `path` and everything under it to the postgres user (when we are root)."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


def _check_reachable_by_postgres(path: Path) -> None:
    if os.geteuid() != 0:
        return
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise PitrError(f"the postgres user cannot reach {path}: {parent} is not searchable by others; choose another folder")


@dataclass
class RestoredInstance:
    """A recovered server running on 127.0.0.1:`port`; as a context manager it stops on exit."""

    data_dir: Path
    port: int
    log: Path
    bin_dir: str = ""
    """PostgresSettings.bin_dir (PGBIN): where pg_ctl is."""

    def __enter__(self) -> RestoredInstance:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                as_postgres([pg_bin("pg_ctl", self.bin_dir), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]),
                env=base_env(),
                capture_output=True,
            )

    def settings(self, base: PostgresSettings) -> PostgresSettings:
        return PostgresSettings(
            host="127.0.0.1", port=self.port, dbname=base.dbname, user=base.user, password=base.password, bin_dir=base.bin_dir
        )


@dataclass(frozen=True)
class PitrResult:
    """Where and to what `restore_to_time` recovered a new instance (`as_dict` is the CLI's JSON)."""

    target_time: str  # ISO 8601, or "end of archived WAL"
    data_dir: str
    port: int
    base_backup: str  # key prefix of the base backup recovery started from
    base_backup_stop_time: str
    wal_files_staged: int
    reached_transaction_time: str | None
    reached_lsn: str
    timeline_after_promotion: int
    reached_end_of_archived_wal: bool
    running: bool
    stop_with: str
    duration_s: float
    # wall seconds per phase (verify, extract + stage WAL side by side, recover): the RTO's parts
    phases: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def instance(self, bin_dir: str = "") -> RestoredInstance:
        """The recovered server (its log is next to the data directory); `bin_dir`: PostgresSettings.bin_dir."""
        data_dir = Path(self.data_dir)
        return RestoredInstance(data_dir, self.port, data_dir.parent / "postgres.log", bin_dir)


# -- the restore ---------------------------------------------------------------------------------


def _stage_wal(
    archive: WalArchive, records: list[SegmentRecord], reach: Reach, target: dt.datetime | None, stage: Path, workers: int = 4
) -> int:
    """Fetch the segments recovery will ask for, in parallel; returns how many were staged.

    Segments up to the backup's stop LSN may be missing from the archive (the receiver
    started after the backup did): the backup's own tar holds them in pg_wal."""
    segs = {r.segment_no: r for r in records if r.timeline == reach.timeline and not r.name.endswith(".history")}
    stop_seg = segment_number(lsn_to_segment(reach.backup.metadata["stop_lsn"], reach.timeline))
    wanted: list[tuple[str, bool]] = []  # (name, required)
    for n in range(reach.first_segment, reach.last_segment + 1):
        wanted.append((segment_name(reach.timeline, n), n > stop_seg))
        rec = segs.get(n)
        # once a segment was archived well after the target, later ones cannot be needed
        if target is not None and rec is not None and not rec.partial and rec.archived - COVERAGE_MARGIN > target:
            break
    wanted += [(r.name, True) for r in records if r.name.endswith(".history")]

    def fetch(item: tuple[str, bool]) -> int:
        name, required = item
        try:
            archive.fetch(name, stage / name)
            return 1
        except FileNotFoundError:
            if required:
                raise PitrError(f"WAL segment {name} vanished from the archive during the restore") from None
            return 0

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(fetch, wanted))


def _write_recovery_config(data_dir: Path, stage: Path, port: int, target: dt.datetime | None) -> None:
    # restore_command runs through /bin/sh in the server's working directory, which PostgreSQL
    # documents as the data directory (%p is relative to it). Naming the staging folder relative
    # to it ("../wal") keeps the operator's folder name out of that shell and out of this file's
    # '...' quoting altogether: shlex.quote plus '' escaping would have to hold across both
    # parsers, a constant cannot go wrong. %f and %p are PostgreSQL's own names.
    staged_from = os.path.relpath(stage, data_dir)
    check_shell_safe(staged_from, "WAL staging folder")
    lines = [
        "# written by auction-backup pitr: this copy must never archive into the primary's archive",
        "archive_mode = off",
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        "unix_socket_directories = ''",
        f'restore_command = \'cp "{staged_from}/%f" "%p"\'',
        "recovery_target_timeline = 'latest'",
        "hot_standby = on",
    ]
    if target is not None:
        lines += [f"recovery_target_time = '{target.isoformat()}'", "recovery_target_action = 'promote'"]
    with open(data_dir / "postgresql.auto.conf", "a") as f:
        f.write("\n" + "\n".join(lines) + "\n")
    (data_dir / "recovery.signal").touch()


def _drop_recovery_target(data_dir: Path) -> None:
    conf = data_dir / "postgresql.auto.conf"
    text = "\n".join(
        line for line in conf.read_text().splitlines() if not line.startswith(("recovery_target_time", "recovery_target_action"))
    )
    conf.write_text(text + "\n")
    (data_dir / "recovery.signal").touch()


def _start(data_dir: Path, log: Path, bin_dir: str) -> subprocess.CompletedProcess:
    pg_ctl = pg_bin("pg_ctl", bin_dir)
    # pg_ctl starts `exec "<its folder>/postgres" -D "<data_dir>" ... >> "<log>"` through /bin/sh -c,
    # so each of those must be literal inside double quotes (restore_target.validate_target_dir
    # refused the rest up front; this guards every other caller). runuser -u execs its argv as
    # is: no shell of its own.
    check_shell_safe(data_dir, "data directory")
    check_shell_safe(log, "server log")
    check_shell_safe(os.path.dirname(os.path.realpath(pg_ctl)), "PostgreSQL's program folder (PGBIN)")
    return subprocess.run(
        as_postgres([pg_ctl, "-D", str(data_dir), "-l", str(log), "-w", "-t", "600", "start"]),
        # The server inherits what pg_ctl gets (runuser adds only the postgres user's HOME, USER and
        # LOGNAME): none of our secrets, which any superuser of the recovered copy could read.
        env=base_env(),
        capture_output=True,
        text=True,
    )


def wait_promoted(inst: RestoredInstance, base: PostgresSettings, timeout: float = 600) -> psycopg.Connection | None:
    """Connection once recovery is over (promoted); None if the server stopped instead."""
    deadline = time.monotonic() + timeout
    s = inst.settings(base)
    while time.monotonic() < deadline:
        if not (inst.data_dir / "postmaster.pid").exists():
            return None
        try:
            conn = connect(s)
        except PostgresError:
            time.sleep(0.2)
            continue
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
            return conn
        conn.close()
        time.sleep(0.2)
    raise PitrError(f"recovery did not finish within {timeout:.0f} s; see {inst.log}")


def restore_to_time(
    s: PostgresSettings,
    repo: Repository,
    archive: WalArchive,
    target: dt.datetime | None,
    target_dir: Path,
    port: int | None = None,
    stop_after: bool = False,
) -> PitrResult:
    """Recover a new instance in `target_dir` to `target` (None: to the end of the archived WAL)."""
    started = time.monotonic()
    # first of all: the folder reaches pg_ctl's shell, and a refusal must come before anything exists
    target_dir = validate_target_dir(target_dir)
    records = list(archive.records())  # one listing serves the window check and the WAL staging
    window = recovery_window(repo, archive, records)
    if target is None:
        if not window.reaches:
            raise PitrError(f"cannot recover: {window.describe()}")
        reach = max(window.reaches, key=lambda r: (r.end, r.start))
    else:
        reach = check_target(window, target)
    port = port or free_port()
    if port_in_use(port):
        raise PitrError(f"port {port} is already in use on 127.0.0.1; choose another with --port")
    _check_reachable_by_postgres(target_dir.parent)
    phases: dict[str, float] = {}
    mark = time.monotonic()
    repo.verify(reach.backup)
    phases["verify_s"], mark = round(time.monotonic() - mark, 3), time.monotonic()

    created = not target_dir.exists()
    target_dir.mkdir(mode=0o700, exist_ok=True)  # its parent exists (validated)
    data_dir, stage, log = target_dir / "data", target_dir / "wal", target_dir / "postgres.log"
    inst = RestoredInstance(data_dir, port, log, s.bin_dir)
    ok = False
    try:
        data_dir.mkdir(mode=0o700)
        stage.mkdir(mode=0o700)
        # sha256 was verified above, and again as it streams; yet in an unencrypted repository a
        # planted tar can match its manifest, so only plain files and folders inside are written
        # The WAL is fetched while the base backup is extracted: the two write different folders
        # and each waits on its own reads, so recovery starts after the longer of them, not the sum.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            staging = pool.submit(_stage_wal, archive, records, reach, target, stage)
            with open_tar(repo, reach.backup) as stream:
                extract_base_tar(stream, data_dir, reach.backup.prefix)
            phases["extract_s"] = round(time.monotonic() - mark, 3)
            staged = staging.result()
        phases["extract_and_stage_wal_s"], mark = round(time.monotonic() - mark, 3), time.monotonic()
        _write_recovery_config(data_dir, stage, port, target)
        chown_postgres(target_dir)
        os.chmod(data_dir, 0o700)
        reached_end_of_wal = False
        proc = _start(data_dir, log, s.bin_dir)
        conn = wait_promoted(inst, s) if proc.returncode == 0 else None
        if conn is None:
            text = log.read_text(errors="replace") if log.exists() else proc.stderr
            if target is not None and "recovery ended before configured recovery target was reached" in text:
                # No commit after the target is in the archive, yet the window check proved the
                # archive covers the target: the end of the archived WAL *is* the state at target.
                _drop_recovery_target(data_dir)
                proc = _start(data_dir, log, s.bin_dir)
                conn = wait_promoted(inst, s) if proc.returncode == 0 else None
                reached_end_of_wal = True
            if conn is None:
                tail = (log.read_text(errors="replace") if log.exists() else proc.stderr)[-2000:]
                raise PitrError(f"the restored server did not finish recovery; log tail:\n{tail}")
        with conn:
            replay_ts, lsn, timeline = conn.execute(
                "SELECT pg_last_xact_replay_timestamp(), pg_current_wal_lsn()::text, timeline_id FROM pg_control_checkpoint()"
            ).fetchone()  # type: ignore[misc]
        phases["recover_s"] = round(time.monotonic() - mark, 3)
        ok = True
        return PitrResult(
            target_time=target.isoformat() if target else "end of archived WAL",
            data_dir=str(data_dir),
            port=port,
            base_backup=reach.backup.prefix,
            base_backup_stop_time=reach.backup.metadata["stop_time"],
            wal_files_staged=staged,
            reached_transaction_time=replay_ts.isoformat() if replay_ts else None,
            reached_lsn=lsn,
            timeline_after_promotion=timeline,
            reached_end_of_archived_wal=reached_end_of_wal or target is None,
            running=not stop_after,
            stop_with=f"pg_ctl -D {shlex.quote(str(data_dir))} stop" + (" (as the postgres user)" if os.geteuid() == 0 else ""),
            duration_s=round(time.monotonic() - started, 3),
            phases=phases,
        )
    finally:
        if stop_after or not ok:
            inst.stop()
        if not ok:
            # A failed restore leaves nothing half-made behind (the folder was new or empty).
            if created:
                shutil.rmtree(target_dir, ignore_errors=True)
            else:
                for child in target_dir.iterdir():
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()

"""Continuous WAL archiving by streaming replication (pg_receivewal), shipped into the archive.

Why streaming rather than `archive_command`: PostgreSQL hands a segment to archive_command
only when the 16 MB segment is full (or archive_timeout passes), so the recovery point lags
by minutes on a quiet database; pg_receivewal receives WAL as it is written and, with
`--synchronous`, flushes it at once. We then ship the segment being written (`.partial`)
into the archive every second or so, bringing the RPO to seconds. The receiver uses a
replication slot, so the primary keeps WAL while the receiver is down instead of losing it
(a slot whose receiver is gone for good must be dropped, or it fills the primary's pg_wal).

pg_receivewal runs with `--no-loop` and this module restarts it, so a primary restart costs
about a second and is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
import time
from pathlib import Path

from auction_backup_pipelines.postgres.client import PostgresError, child_env, connect, explain_tls, pg_bin
from auction_backup_pipelines.postgres.wal_archive import HISTORY, SEGMENT, SegmentRecord, WalArchive, health
from auction_backup_pipelines.settings import PostgresSettings

log = logging.getLogger(__name__)


class WalReceiver:
    def __init__(
        self,
        settings: PostgresSettings,
        archive: WalArchive,
        spool: Path,
        slot: str = "auction_backup_wal",
        ship_interval: float = 1.0,
    ):
        self.settings = settings
        self.archive = archive
        self.spool = Path(spool)
        self.slot = slot
        self.ship_interval = ship_interval
        self._proc: subprocess.Popen | None = None
        self._partial_seen: tuple[str, float, int] | None = None
        # What ops/metrics.py exposes while `wal-receive` runs (read from the metrics thread).
        self.restarts = 0
        self.received_bytes = 0  # WAL pg_receivewal flushed (the slot's progress) since this receiver started
        self.covered_until: dt.datetime | None = None  # the newest heartbeat this receiver wrote
        self.last_segment_at: dt.datetime | None = None  # when it last archived a completed segment
        self._flushed_at: int | None = None  # the slot's restart_lsn at the last look, in bytes

    def _env(self) -> dict[str, str]:
        return child_env(self.settings, dbname="replication")

    def ensure_slot(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        proc = subprocess.run(
            [
                pg_bin("pg_receivewal", self.settings.bin_dir),
                "--create-slot",
                "--if-not-exists",
                "-S",
                self.slot,
                "--no-password",
            ],
            env=self._env(),
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise PostgresError(
                explain_tls(proc.stderr, self.settings) or f"cannot create replication slot {self.slot!r}: {proc.stderr.strip()}"
            )

    def drop_slot(self) -> None:
        with connect(self.settings) as conn:
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
            )

    def _start(self) -> None:
        log_file = open(self.spool / "pg_receivewal.log", "ab")
        self._proc = subprocess.Popen(
            [
                pg_bin("pg_receivewal", self.settings.bin_dir),
                "-D",
                str(self.spool),
                "-S",
                self.slot,
                "--synchronous",
                "--no-loop",
                "--no-password",
            ],
            env=self._env(),
            stdout=log_file,
            stderr=log_file,
        )
        log_file.close()

    def ensure_running(self) -> bool:
        """Start pg_receivewal if it is not running; True when it was (re)started."""
        if self._proc is not None and self._proc.poll() is None:
            return False
        if self._proc is not None:
            self.restarts += 1
            log.warning("pg_receivewal exited with %s; restarting", self._proc.returncode)
        self._start()
        return True

    def _position(self) -> tuple[dt.datetime, str, bool, int | None] | None:
        """(time, primary's flush LSN, whether our receiver had flushed all of it, its flush LSN in bytes)."""
        try:
            with connect(self.settings) as conn:
                row = conn.execute(
                    # The primary's *flush* position: everything committed is flushed, while a lone
                    # background record can sit written-but-unflushed (and unsent) for minutes.
                    # A physical slot's restart_lsn is the flush position our receiver reported
                    # (pg_stat_replication would say the same but hides it from non-superusers).
                    "SELECT clock_timestamp(), pg_current_wal_flush_lsn()::text, "
                    "coalesce(restart_lsn >= pg_current_wal_flush_lsn(), false), "
                    "pg_wal_lsn_diff(restart_lsn, '0/0')::bigint "
                    "FROM pg_replication_slots WHERE slot_name = %s",
                    (self.slot,),
                ).fetchone()
        except PostgresError:
            return None  # primary unreachable: no proof of coverage this round
        return (row[0], row[1], bool(row[2]), row[3]) if row else None

    def ship_once(self) -> list[SegmentRecord]:
        """Push completed segments (then delete them locally), history files and the partial.

        Before shipping, ask the primary how far it has written and whether our receiver has
        flushed all of it; if so, once the partial is shipped the archive provably holds
        everything written up to that moment, and the heartbeat says so. That keeps the
        recovery point honest on a quiet database, where the partial stops changing.
        """
        position = self._position()
        if position is not None and position[3] is not None:
            if self._flushed_at is not None and position[3] > self._flushed_at:
                self.received_bytes += position[3] - self._flushed_at
            self._flushed_at = position[3]
        shipped = self._ship_completed()
        partials = sorted(p for p in self.spool.iterdir() if p.name.endswith(".partial") and SEGMENT.match(p.name[:-8]))
        # pg_receivewal may have finished a segment (renamed its .partial) since the first listing:
        # ship it before any newer partial, so the archive never shows a hole between the two,
        # and the heartbeat below never claims WAL that only an unshipped segment holds.
        shipped += self._ship_completed()
        honest = True
        if partials:
            newest = partials[-1]
            try:
                st = newest.stat()
                seen = (newest.name, st.st_mtime, st.st_size)
                if seen != self._partial_seen:
                    shipped.append(self.archive.push(newest))
                    self._partial_seen = seen
            except FileNotFoundError:
                # Finished while we looked: the next round ships it as a segment. Until then the
                # archive may lack its tail, so no heartbeat this round.
                honest = False
        if honest and position is not None and position[2]:
            self.archive.write_heartbeat(position[0], position[1])
            self.covered_until = position[0]
        return shipped

    def _ship_completed(self) -> list[SegmentRecord]:
        """Push every completed segment in the spool (then drop its partial copy in the archive
        and the local file) and any new timeline history file."""
        shipped = []
        for path in sorted(self.spool.iterdir()):
            name = path.name
            if SEGMENT.match(name):
                shipped.append(self.archive.push(path))
                self.archive.drop_partial(name)
                path.unlink()
                self.last_segment_at = dt.datetime.now(dt.UTC)
            elif HISTORY.match(name) and self.archive.record(name) is None:
                shipped.append(self.archive.push(path))
        return shipped

    def run(self, stop: threading.Event) -> None:
        """Receive and ship until `stop` is set; then stop pg_receivewal and ship what it wrote."""
        self.ensure_slot()
        try:
            while not stop.is_set():
                self.ensure_running()
                try:
                    self.ship_once()
                except OSError as exc:  # the archive is unavailable: keep receiving, retry shipping
                    log.error("shipping WAL failed: %s", exc)
                stop.wait(self.ship_interval)
        finally:
            self.stop_process()
            self.ship_once()

    def running(self) -> bool:
        """Whether pg_receivewal is running right now."""
        return self._proc is not None and self._proc.poll() is None

    def stop_process(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def wait_for_archived_time(archive: WalArchive, moment, timeout: float = 30.0) -> bool:
    """True once the archive holds WAL shipped after `moment` (so everything committed before it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = health(list(archive.records()), archive.heartbeat())
        if h.covered_until is not None and h.covered_until >= moment:
            return True
        time.sleep(0.2)
    return False

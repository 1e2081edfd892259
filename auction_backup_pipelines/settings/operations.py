"""Schedules and checks: the WAL archive, restore verification, retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from auction_backup_pipelines.settings.reader import Reader


@dataclass(frozen=True)
class WalSettings:
    spool_dir: str = "wal_spool"
    """Local folder pg_receivewal writes into before the receiver ships a segment (WAL_SPOOL_DIR)."""
    max_lag_s: float = 300.0
    """The archive check fails when the newest archived WAL is older than this."""
    sensor_interval_s: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WalSettings:
        env = Reader(environ)
        return cls(
            spool_dir=env.text("WAL_SPOOL_DIR", cls.spool_dir),
            max_lag_s=env.positive("WAL_ARCHIVE_MAX_LAG_S", cls.max_lag_s),
            sensor_interval_s=env.integer("WAL_ARCHIVE_SENSOR_INTERVAL_S", cls.sensor_interval_s, 1, unit="seconds"),
        )


@dataclass(frozen=True)
class VerificationSettings:
    max_age_days: float = 8.0
    """`verified_recently` fails once the newest successful restore check is older than this."""
    deadline_grace_s: float = 7200.0
    """A day's backup is overdue (its `backed_up_on_time` check fails) this long after its
    schedule's time (BACKUP_DEADLINE_GRACE_S; policy/backup_deadlines.py)."""

    @property
    def deadline_grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.deadline_grace_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VerificationSettings:
        env = Reader(environ)
        return cls(
            max_age_days=env.positive("VERIFICATION_MAX_AGE_DAYS", cls.max_age_days, "days"),
            deadline_grace_s=env.positive("BACKUP_DEADLINE_GRACE_S", cls.deadline_grace_s),
        )


@dataclass(frozen=True)
class RetentionSettings:
    sensor_interval_s: int = 3600
    """At least 30: the daemon's tick granularity; smaller values only add load."""
    dry_run: bool = False
    """Cleanup runs only report what they would delete."""
    pitr_window_days: float = 7.0
    """Every moment of the last N days stays recoverable by PITR: pruning keeps the base backup
    the window starts from and all WAL from its start onward (policy/wal_retention.py)."""

    leftover_safety_age_s: float = 21600.0
    """What crashed runs left (temp files, folders without a manifest, unfinished uploads) is removed
    only once it has not been written for this long (LEFTOVER_SAFETY_AGE_S; policy/leftovers.py)."""

    @property
    def pitr_window(self) -> dt.timedelta:
        return dt.timedelta(days=self.pitr_window_days)

    @property
    def leftover_safety_age(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.leftover_safety_age_s)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionSettings:
        env = Reader(environ)
        return cls(
            sensor_interval_s=env.integer("RETENTION_SENSOR_INTERVAL_S", cls.sensor_interval_s, 30, unit="seconds"),
            dry_run=env.flag("RETENTION_DRY_RUN"),
            pitr_window_days=env.positive("PITR_WINDOW_DAYS", cls.pitr_window_days, "days"),
            leftover_safety_age_s=env.positive("LEFTOVER_SAFETY_AGE_S", cls.leftover_safety_age_s),
        )


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics: the WAL receiver's endpoint and the backups' textfile (both off by default)."""

    wal_port: int = 0
    """`wal-receive` serves /metrics on 127.0.0.1:<port> (WAL_METRICS_PORT; 0 = off)."""
    textfile_dir: str = ""
    """Each backup writes its figures for node-exporter's textfile collector here (METRICS_TEXTFILE_DIR; empty = off)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MetricsSettings:
        env = Reader(environ)
        return cls(
            wal_port=env.integer("WAL_METRICS_PORT", cls.wal_port, 0, 65535),
            textfile_dir=env.stripped("METRICS_TEXTFILE_DIR"),
        )

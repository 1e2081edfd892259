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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VerificationSettings:
        return cls(max_age_days=Reader(environ).positive("VERIFICATION_MAX_AGE_DAYS", cls.max_age_days, "days"))


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

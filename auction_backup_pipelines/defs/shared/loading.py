"""The settings the Dagster layer is built from, read once per process, when the loader runs.

Never at import: a definitions module imports cleanly with nothing set, and a bad variable fails
the load with the settings module's one-line message instead of an import-time traceback.
"""

import os
from dataclasses import dataclass, field
from functools import lru_cache
from types import SimpleNamespace
from typing import Any

from auction_backup_pipelines.ops import notify as nt
from auction_backup_pipelines.settings import KafkaSettings, PostgresSettings, RedisSettings, RepositorySettings


@dataclass(frozen=True)
class _Alerting:  # TEMPORARY bridge until settings.load_settings lands
    args: dict = field(default_factory=dict)
    dagster_url: str = ""
    check_repeat_s: int = 86400
    check_lookback_s: int = 86400
    check_sensor_interval_s: int = 60

    def sink_arguments(self) -> dict[str, Any]:
        return dict(self.args)


@lru_cache(maxsize=1)
def current_settings() -> Any:
    e = os.environ
    port = e.get("DAGSTER_PORT", "").strip() or "3000"
    return SimpleNamespace(
        postgres=PostgresSettings.from_env(), redis=RedisSettings.from_env(), kafka=KafkaSettings.from_env(),
        repository=RepositorySettings.from_env(),
        encryption=SimpleNamespace(key_file=e.get("BACKUP_ENCRYPTION_KEY_FILE", ""), keys=e.get("BACKUP_ENCRYPTION_KEYS", "")),
        offsite=SimpleNamespace(configured=bool(e.get("OFFSITE_S3_BUCKET")), bucket=e.get("OFFSITE_S3_BUCKET", ""),
                                prefix=e.get("OFFSITE_S3_PREFIX", ""), endpoint_url=e.get("OFFSITE_S3_ENDPOINT_URL", ""),
                                region=e.get("OFFSITE_S3_REGION", ""), access_key_id=e.get("OFFSITE_S3_ACCESS_KEY_ID", ""),
                                secret_access_key=e.get("OFFSITE_S3_SECRET_ACCESS_KEY", ""),
                                encryption_key_file=e.get("OFFSITE_ENCRYPTION_KEY_FILE", ""),
                                encryption_keys=e.get("OFFSITE_ENCRYPTION_KEYS", "")),
        partitions_start=e.get("BACKUP_PARTITIONS_START", "2026-11-01"),
        wal=SimpleNamespace(max_lag_s=float(e.get("WAL_ARCHIVE_MAX_LAG_S", "300")),
                            sensor_interval_s=int(e.get("WAL_ARCHIVE_SENSOR_INTERVAL_S", "300"))),
        retention=SimpleNamespace(sensor_interval_s=int(e.get("RETENTION_SENSOR_INTERVAL_S", "") or 3600),
                                  dry_run=e.get("RETENTION_DRY_RUN", "").strip().lower() in ("1", "true", "yes", "on")),
        verification=SimpleNamespace(max_age_days=float(e.get("VERIFICATION_MAX_AGE_DAYS", "8"))),
        alerting=_Alerting(args=nt.alert_settings_from_env(e),
                           dagster_url=e.get("DAGSTER_WEBSERVER_URL", "").strip() or f"http://127.0.0.1:{port}",
                           check_repeat_s=int(e.get("ALERT_CHECK_REPEAT_S", "") or 86400),
                           check_lookback_s=int(e.get("ALERT_CHECK_LOOKBACK_S", "") or 86400),
                           check_sensor_interval_s=int(e.get("ALERT_CHECK_SENSOR_INTERVAL_S", "") or 60)),
    )

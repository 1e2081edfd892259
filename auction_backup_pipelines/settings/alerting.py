"""Alert sinks and the alert sensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auction_backup_pipelines.settings.reader import Reader, items


@dataclass(frozen=True)
class AlertingSettings:
    """Alert sinks (ops/sinks.py) and the alert sensors; no sink configured: alerts are only logged.
    Whether a sink is complete is checked when sinks are built (`sinks.sinks_from_settings`)."""

    webhook_url: str = field(default="", repr=False)
    webhook_secret_header: str = field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    smtp_host: str = ""
    smtp_port: int = 0
    """0: 25, or 587 with STARTTLS."""
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    dagster_url: str = "http://127.0.0.1:3000"
    """Base URL of the Dagster webserver, for links in alerts."""
    check_sensor_interval_s: int = 60
    check_repeat_s: int = 86400
    """Alert a check that keeps failing (same partition) again after this long; 0: every failed evaluation."""
    check_lookback_s: int = 86400
    """On the check sensor's first tick, failures older than this are history, not alerts."""

    SINK_FIELDS = (
        "webhook_url",
        "webhook_secret_header",
        "webhook_timeout_s",
        "smtp_host",
        "smtp_port",
        "smtp_from",
        "smtp_to",
        "smtp_user",
        "smtp_password",
        "smtp_starttls",
        "smtp_timeout_s",
    )

    def sink_arguments(self) -> dict[str, Any]:
        """The keyword arguments of `sinks.build_sinks` (and the sink fields of the Dagster resource)."""
        kwargs = {name: getattr(self, name) for name in self.SINK_FIELDS}
        kwargs["smtp_to"] = list(self.smtp_to)
        return kwargs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertingSettings:
        env = Reader(environ)
        port = env.integer("DAGSTER_PORT", 3000, 1, 65535)
        return cls(
            webhook_url=env.stripped("ALERT_WEBHOOK_URL"),
            webhook_secret_header=env.stripped("ALERT_WEBHOOK_SECRET_HEADER"),
            webhook_timeout_s=env.positive("ALERT_WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s),
            smtp_host=env.stripped("ALERT_SMTP_HOST"),
            smtp_port=env.integer("ALERT_SMTP_PORT", cls.smtp_port, 0, 65535),
            smtp_from=env.stripped("ALERT_SMTP_FROM"),
            smtp_to=items(env.raw("ALERT_SMTP_TO"), ",;"),
            smtp_user=env.stripped("ALERT_SMTP_USER"),
            smtp_password=env.raw("ALERT_SMTP_PASSWORD"),
            smtp_starttls=env.flag("ALERT_SMTP_STARTTLS"),
            smtp_timeout_s=env.positive("ALERT_SMTP_TIMEOUT_S", cls.smtp_timeout_s),
            dagster_url=env.stripped("DAGSTER_WEBSERVER_URL", f"http://127.0.0.1:{port}"),
            check_sensor_interval_s=env.integer("ALERT_CHECK_SENSOR_INTERVAL_S", cls.check_sensor_interval_s, 30, unit="seconds"),
            check_repeat_s=env.integer("ALERT_CHECK_REPEAT_S", cls.check_repeat_s, 0, unit="seconds"),
            check_lookback_s=env.integer("ALERT_CHECK_LOOKBACK_S", cls.check_lookback_s, 0, unit="seconds"),
        )


# --------------------------------------------------------------------------- all of it

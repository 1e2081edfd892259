"""Alert sinks and the alert sensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings.reader import Reader, items

SMTP_TLS_MODES: tuple[str, ...] = ("starttls", "implicit", "none")
"""How the SMTP sink protects its session: STARTTLS (port 587), TLS from the first byte (465), or not at all (25)."""


@dataclass(frozen=True)
class AlertingSettings:
    """Alert sinks (ops/sinks.py) and the alert sensors; no sink configured: alerts are only logged.
    Whether a sink is complete is checked when sinks are built (`sinks.sinks_from_settings`)."""

    webhook_url: str = field(default="", repr=False)
    webhook_secret_header: str = field(default="", repr=False)
    webhook_timeout_s: float = 5.0
    webhook_allow_http: bool = False
    """Accept an http:// webhook URL (ALERT_WEBHOOK_ALLOW_HTTP): a loopback test receiver only."""
    smtp_host: str = ""
    smtp_port: int = 0
    """0: 587 with STARTTLS, 465 with implicit TLS, 25 without TLS."""
    smtp_from: str = ""
    smtp_to: tuple[str, ...] = ()
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_tls: str = "none"
    """starttls, implicit or none (ALERT_SMTP_TLS; ALERT_SMTP_STARTTLS=1 is the older spelling of starttls)."""
    smtp_ca_file: str = ""
    """PEM file of the CA(s) trusted for the SMTP server's certificate (ALERT_SMTP_CA_FILE); empty: the system's."""
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
        "webhook_allow_http",
        "smtp_host",
        "smtp_port",
        "smtp_from",
        "smtp_to",
        "smtp_user",
        "smtp_password",
        "smtp_tls",
        "smtp_ca_file",
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
        webhook_url = env.stripped("ALERT_WEBHOOK_URL")
        allow_http = env.flag("ALERT_WEBHOOK_ALLOW_HTTP")
        if webhook_url.lower().startswith("http://") and not allow_http:
            # The URL is a secret (its path carries the token): name the variable, never the value.
            raise ConfigurationError(
                "ALERT_WEBHOOK_URL is an http:// URL: alerts and the token in the URL would cross the network "
                "unencrypted; use https://, or set ALERT_WEBHOOK_ALLOW_HTTP=1 for a loopback test receiver"
            )
        smtp_tls = smtp_tls_mode(env)
        smtp_password = env.raw("ALERT_SMTP_PASSWORD")
        smtp_ca_file = env.stripped("ALERT_SMTP_CA_FILE")
        if smtp_password and smtp_tls == "none":
            raise ConfigurationError(
                "ALERT_SMTP_PASSWORD is set but ALERT_SMTP_TLS is none: the password would cross the network "
                "unencrypted; set ALERT_SMTP_TLS=starttls (port 587) or implicit (port 465)"
            )
        if smtp_ca_file and smtp_tls == "none":
            raise ConfigurationError(
                "ALERT_SMTP_CA_FILE is set but ALERT_SMTP_TLS is none; set ALERT_SMTP_TLS=starttls or implicit"
            )
        return cls(
            webhook_url=webhook_url,
            webhook_secret_header=env.stripped("ALERT_WEBHOOK_SECRET_HEADER"),
            webhook_timeout_s=env.positive("ALERT_WEBHOOK_TIMEOUT_S", cls.webhook_timeout_s),
            webhook_allow_http=allow_http,
            smtp_host=env.stripped("ALERT_SMTP_HOST"),
            smtp_port=env.integer("ALERT_SMTP_PORT", cls.smtp_port, 0, 65535),
            smtp_from=env.stripped("ALERT_SMTP_FROM"),
            smtp_to=items(env.raw("ALERT_SMTP_TO"), ",;"),
            smtp_user=env.stripped("ALERT_SMTP_USER"),
            smtp_password=smtp_password,
            smtp_tls=smtp_tls,
            smtp_ca_file=smtp_ca_file,
            smtp_timeout_s=env.positive("ALERT_SMTP_TIMEOUT_S", cls.smtp_timeout_s),
            dagster_url=env.stripped("DAGSTER_WEBSERVER_URL", f"http://127.0.0.1:{port}"),
            check_sensor_interval_s=env.integer("ALERT_CHECK_SENSOR_INTERVAL_S", cls.check_sensor_interval_s, 30, unit="seconds"),
            check_repeat_s=env.integer("ALERT_CHECK_REPEAT_S", cls.check_repeat_s, 0, unit="seconds"),
            check_lookback_s=env.integer("ALERT_CHECK_LOOKBACK_S", cls.check_lookback_s, 0, unit="seconds"),
        )


def smtp_tls_mode(env: Reader) -> str:
    """ALERT_SMTP_TLS, or starttls when only the older ALERT_SMTP_STARTTLS flag is on, else none."""
    mode = env.stripped("ALERT_SMTP_TLS").lower()
    legacy = env.flag("ALERT_SMTP_STARTTLS")
    if mode and mode not in SMTP_TLS_MODES:
        raise ConfigurationError(f"ALERT_SMTP_TLS must be one of {', '.join(SMTP_TLS_MODES)}, got {mode!r}")
    if legacy and mode not in ("", "starttls"):
        raise ConfigurationError(f"ALERT_SMTP_STARTTLS is on but ALERT_SMTP_TLS is {mode}; unset ALERT_SMTP_STARTTLS")
    return mode or ("starttls" if legacy else "none")


# --------------------------------------------------------------------------- all of it

"""Where alerts go: the sinks' configuration as a Dagster resource (ops/sinks.py and ops/notify.py do the sending).

Secrets (the webhook URL, an auth header, the SMTP password) are bound with `EnvVar`, only when the
variable is set, so an unset optional variable never breaks a run launch or a sensor tick.
No `from __future__ import annotations` here: Dagster reads the resource annotations at decoration.
"""

from typing import Any

from dagster import ConfigurableResource, EnvVar

from auction_backup_pipelines.ops import notify as nt
from auction_backup_pipelines.ops.sinks import SECRET_SETTINGS, build_sinks
from auction_backup_pipelines.settings import Settings


class AlertingResource(ConfigurableResource):
    """Where alerts go (ALERT_* variables); no sink configured: alerts are only logged."""

    webhook_url: str = ""
    """Slack-compatible incoming webhook; a secret (the token is in the URL): bind with EnvVar."""
    webhook_secret_header: str = ""
    """Optional "Name: value" header for webhooks that authenticate by header; a secret."""
    webhook_timeout_s: float = 5.0
    webhook_allow_http: bool = False
    """Accept an http:// webhook (a loopback test receiver only)."""
    smtp_host: str = ""
    smtp_port: int = 0
    """0: 587 with STARTTLS, 465 with implicit TLS, 25 without TLS."""
    smtp_from: str = ""
    smtp_to: list[str] = []
    smtp_user: str = ""
    smtp_password: str = ""
    """A secret: bind with EnvVar."""
    smtp_tls: str = "none"
    """starttls, implicit or none; a password needs TLS."""
    smtp_ca_file: str = ""
    """CA file for the SMTP server's certificate; empty: the system's."""
    smtp_timeout_s: float = 10.0
    dagster_url: str = "http://127.0.0.1:3000"
    """Base URL of the Dagster webserver, for links in alerts."""
    check_repeat_after_s: int = 86400
    """Alert a check that keeps failing (same partition) again after this long; 0: every failed evaluation."""
    check_lookback_s: int = 86400
    """On the check sensor's first tick, failures older than this are history, not alerts."""
    tick_budget_s: float = 25.0
    """The check sensor starts no new alert after this long in one tick."""

    def sinks(self) -> list:
        return build_sinks(
            webhook_url=self.webhook_url,
            webhook_secret_header=self.webhook_secret_header,
            webhook_timeout_s=self.webhook_timeout_s,
            webhook_allow_http=self.webhook_allow_http,
            smtp_host=self.smtp_host,
            smtp_port=self.smtp_port,
            smtp_from=self.smtp_from,
            smtp_to=list(self.smtp_to),
            smtp_user=self.smtp_user,
            smtp_password=self.smtp_password,
            smtp_tls=self.smtp_tls,
            smtp_ca_file=self.smtp_ca_file,
            smtp_timeout_s=self.smtp_timeout_s,
        )

    def run_url(self, run_id: str) -> str:
        return f"{self.dagster_url.rstrip('/')}/runs/{run_id}"

    def asset_checks_url(self, asset_path: list[str]) -> str:
        return f"{self.dagster_url.rstrip('/')}/assets/{'/'.join(asset_path)}?view=checks"

    def send(self, alert: nt.Alert, logger) -> list[nt.NotifyResult]:
        """Notify every configured sink; never raises (a configuration error is logged and returned)."""
        try:
            sinks = self.sinks()
        except ValueError as exc:
            logger.error(f"alerting is misconfigured, alert only logged: {exc}")
            nt.notify(alert, [], logger)
            return [nt.NotifyResult("configuration", False, 0, str(exc))]
        return nt.notify(alert, sinks, logger)


def build_alerting_resource(s: Settings) -> AlertingResource:
    """The resource bound from the settings: secrets as EnvVar (only when set), the rest as values."""
    fields: dict[str, Any] = s.alerting.sink_arguments()
    for field_name, variable in SECRET_SETTINGS.items():
        fields[field_name] = EnvVar(variable) if fields.get(field_name) else ""
    return AlertingResource(
        **fields,
        dagster_url=s.alerting.dagster_url,
        check_repeat_after_s=s.alerting.check_repeat_s,
        check_lookback_s=s.alerting.check_lookback_s,
    )

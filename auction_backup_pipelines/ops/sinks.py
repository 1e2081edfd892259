"""Where alerts go: a chat webhook (Slack-compatible JSON) or an email, and which of them are configured.

Why a module of its own: notify.py says what an alert is and how one is handed to every sink
without ever failing the caller; this module holds the two concrete sinks, the network code
(retries, backoff, Retry-After, no redirects, STARTTLS) and their configuration, which change
for reasons of their own. `WebhookSink` posts Slack-compatible JSON, also accepted by
Mattermost and Rocket.Chat incoming webhooks; `SmtpSink` sends a plain-text email.

Transport: a webhook must be https:// (certificate and host name verified, no redirects) unless
http is explicitly allowed for a loopback test receiver; an SMTP login happens only inside TLS
(STARTTLS or implicit TLS, the server's certificate verified), never in clear text.

Secrets (the webhook URL, whose path or query carries the token; an auth header; the SMTP
password) never appear in a log line, a result or an exception message: sinks describe
themselves by scheme and host only, and every error text is scrubbed of the secret values
before it leaves the sink.

Configuration (`sinks_from_settings`): the ALERT_* variables, parsed by settings.AlertingSettings.
Nothing configured: no sink, alerts are only logged.
"""

from __future__ import annotations

import email.policy
import email.utils
import http.client
import json
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage

from auction_backup_pipelines.ops.notify import Alert, Sink, SinkError, redact_url, scrub
from auction_backup_pipelines.settings import AlertingSettings
from auction_backup_pipelines.settings.alerting import SMTP_TLS_MODES

__all__ = ["SECRET_SETTINGS", "SmtpSink", "WebhookSink", "build_sinks", "sinks_from_settings"]

# Lines up to RFC 5322's hard limit: the default 78 folds a long subject onto its own line.
_EMAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)


# --------------------------------------------------------------------------- webhook


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the body (and the secret header) to a host nobody configured."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


_RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class WebhookSink:
    """POST the alert as Slack-compatible JSON; retries 429/5xx and connection errors with backoff."""

    url: str = field(repr=False)
    timeout: float = 5.0
    secret_header: tuple[str, str] | str | None = field(default=None, repr=False)
    """Extra authentication header, ("Name", "value") or "Name: value"."""
    tries: int = 3
    backoff: float = 0.5
    """Seconds before the second try, doubled before each further one."""
    max_retry_after: float = 5.0
    """Cap on a server's Retry-After, so a sensor tick stays within its time limit."""
    allow_http: bool = False
    """Accept http:// (ALERT_WEBHOOK_ALLOW_HTTP): for a loopback test receiver only."""

    def __post_init__(self) -> None:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL itself is the secret: never echo it.
            raise ValueError("the alert webhook URL must be an http:// or https:// URL with a host")
        if parts.scheme == "http" and not self.allow_http:
            raise ValueError(
                "the alert webhook URL is http://: alerts and the token in the URL would cross the network "
                "unencrypted; use https://, or set ALERT_WEBHOOK_ALLOW_HTTP=1 for a loopback test receiver"
            )
        if isinstance(self.secret_header, str):
            name, sep, value = self.secret_header.partition(":")
            if not sep or not name.strip() or not value.strip():
                raise ValueError("the alert webhook secret header must look like 'Name: value'")
            self.secret_header = (name.strip(), value.strip())
        if self.tries < 1:
            raise ValueError("tries must be at least 1")

    def __repr__(self) -> str:
        return f"WebhookSink({self.describe()}, timeout={self.timeout}, tries={self.tries})"

    def describe(self) -> str:
        return f"webhook {redact_url(self.url)}"

    def secrets(self) -> list[str]:
        parts = urllib.parse.urlsplit(self.url)
        found = [self.url, parts.path, parts.query, parts.fragment, parts.password or ""]
        found += [seg for seg in parts.path.split("/") if len(seg) >= 8]  # tokens, not words like "hooks"
        found += [v for _, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
        if self.secret_header:
            found.append(self.secret_header[1])
        return found

    def send(self, alert: Alert) -> int:
        body = json.dumps(alert.slack_payload()).encode()
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "auction-backup-alerts/1"}
        if self.secret_header:
            headers[self.secret_header[0]] = self.secret_header[1]
        opener = urllib.request.build_opener(_NoRedirect)
        last = ""
        for attempt in range(1, self.tries + 1):
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            retry_after: float | None = None
            try:
                with opener.open(request, timeout=self.timeout) as response:
                    response.read(65536)
                return attempt
            except urllib.error.HTTPError as exc:
                detail = _read_error_body(exc)
                last = f"HTTP {exc.code} {exc.reason}{': ' + detail if detail else ''}"
                if exc.code not in _RETRY_STATUS:
                    raise SinkError(self._scrub(f"{self.describe()}: {last} (not retried)"), attempt) from None
                retry_after = _retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                last = f"{type(reason).__name__}: {reason}"
            if attempt < self.tries:
                delay = self.backoff * 2 ** (attempt - 1)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.max_retry_after))
                time.sleep(delay)
        raise SinkError(self._scrub(f"{self.describe()}: gave up after {self.tries} tries: {last}"), self.tries)

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets())


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
    except Exception:  # noqa: BLE001 - only decoration for the message
        return ""


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- email


@dataclass
class SmtpSink:
    """Send the alert as a plain-text email (smtplib); TLS (STARTTLS or implicit) and login when configured."""

    host: str
    port: int = 25
    sender: str = ""
    recipients: Sequence[str] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: str = "none"
    """starttls, implicit or none (settings.alerting.SMTP_TLS_MODES); a password needs one of the first two."""
    ca_file: str = ""
    """CA file for the server's certificate; empty: the system's trusted CAs."""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.recipients, str):
            self.recipients = _split_list(self.recipients)
        self.recipients = tuple(self.recipients)
        if not self.host:
            raise ValueError("SMTP host is empty")
        if not self.sender:
            raise ValueError("SMTP sender (ALERT_SMTP_FROM) is empty")
        if not self.recipients:
            raise ValueError("SMTP recipients (ALERT_SMTP_TO) are empty")
        if self.password and not self.username:
            raise ValueError("an SMTP password is set but no user (ALERT_SMTP_USER)")
        if self.tls not in SMTP_TLS_MODES:
            raise ValueError(f"SMTP TLS mode (ALERT_SMTP_TLS) must be one of {', '.join(SMTP_TLS_MODES)}, got {self.tls!r}")
        if self.password and self.tls == "none":
            raise ValueError(
                "an SMTP password is set but ALERT_SMTP_TLS is none: the password would cross the network "
                "unencrypted; set ALERT_SMTP_TLS=starttls (port 587) or implicit (port 465)"
            )

    def __repr__(self) -> str:
        return f"SmtpSink({self.describe()}, tls={self.tls}, timeout={self.timeout})"

    def describe(self) -> str:
        return f"smtp {self.host}:{self.port} -> {', '.join(self.recipients)}"

    def tls_context(self) -> ssl.SSLContext:
        """Verifies the server's certificate and host name, against `ca_file` when given."""
        return ssl.create_default_context(cafile=self.ca_file or None)

    def secrets(self) -> list[str]:
        return [self.password] if self.password else []

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage(policy=_EMAIL_POLICY)
        msg["Subject"] = alert.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.recipients)
        msg["Date"] = email.utils.format_datetime(alert.occurred_at_utc)
        msg["Message-ID"] = email.utils.make_msgid(domain="auction-backup")
        msg["X-Auction-Backup-Severity"] = alert.severity
        msg.set_content(alert.text())
        return msg

    def send(self, alert: Alert) -> int:
        msg = self.message(alert)
        try:
            if self.tls == "implicit":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self.tls_context())
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with smtp:
                smtp.ehlo()
                if self.tls == "starttls":
                    smtp.starttls(context=self.tls_context())
                    smtp.ehlo()
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise SinkError(self._scrub(f"{self.describe()}: login refused ({exc.smtp_code})"), 1) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise SinkError(self._scrub(f"{self.describe()}: {type(exc).__name__}: {exc}"), 1) from None
        if refused:
            raise SinkError(self._scrub(f"{self.describe()}: recipients refused: {', '.join(sorted(refused))}"), 1)
        return 1

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets())


# --------------------------------------------------------------------------- configuration

DEFAULT_SMTP_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
"""The submission port of each TLS mode, used when ALERT_SMTP_PORT is unset."""

SECRET_SETTINGS = {
    "webhook_url": "ALERT_WEBHOOK_URL",
    "webhook_secret_header": "ALERT_WEBHOOK_SECRET_HEADER",
    "smtp_password": "ALERT_SMTP_PASSWORD",
}
"""Settings that are secrets, with their variables (the Dagster resource binds these with EnvVar)."""


def build_sinks(
    *,
    webhook_url: str = "",
    webhook_secret_header: str = "",
    webhook_timeout_s: float = 5.0,
    webhook_allow_http: bool = False,
    smtp_host: str = "",
    smtp_port: int = 0,
    smtp_from: str = "",
    smtp_to: Sequence[str] | str = (),
    smtp_user: str = "",
    smtp_password: str = "",
    smtp_tls: str = "none",
    smtp_ca_file: str = "",
    smtp_timeout_s: float = 10.0,
) -> list[Sink]:
    """The configured sinks (empty when nothing is set). A half-configured sink raises ValueError."""
    sinks: list[Sink] = []
    if webhook_url:
        sinks.append(
            WebhookSink(
                webhook_url, timeout=webhook_timeout_s, secret_header=webhook_secret_header or None, allow_http=webhook_allow_http
            )
        )
    elif webhook_secret_header:
        raise ValueError("ALERT_WEBHOOK_SECRET_HEADER is set but ALERT_WEBHOOK_URL is not")
    if smtp_host:
        sinks.append(
            SmtpSink(
                host=smtp_host,
                port=smtp_port or DEFAULT_SMTP_PORTS.get(smtp_tls, 25),
                sender=smtp_from,
                recipients=smtp_to,
                username=smtp_user or None,
                password=smtp_password or None,
                tls=smtp_tls,
                ca_file=smtp_ca_file,
                timeout=smtp_timeout_s,
            )
        )
    elif smtp_to or smtp_password:
        raise ValueError("ALERT_SMTP_TO or ALERT_SMTP_PASSWORD is set but ALERT_SMTP_HOST is not")
    return sinks


def sinks_from_settings(settings: AlertingSettings) -> list[Sink]:
    """The sinks the alerting settings describe; none configured gives an empty list (alerts only logged)."""
    return build_sinks(**settings.sink_arguments())


def _split_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.replace(";", ",").split(",") if item.strip()]

"""Alerts: what failed, and how one alert reaches every sink without failing the caller. No Dagster.

An `Alert` names the failed asset, its partition day, the error and a link to the run, and
renders itself as text (email, log) and as Slack-compatible JSON. A `Sink` delivers it or
raises `SinkError`; the sinks themselves (webhook, SMTP) and their configuration are in
sinks.py. `notify` hands one alert to every sink independently and never raises: a sink that
fails is reported in the returned results and in the log, and the caller's run or sensor tick
goes on.

Secrets never appear in a log line, a result or an exception message: `redact_url` and
`scrub` are what every sink (and `notify`, for a sink's unexpected error) uses to keep them out.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Alert", "NotifyResult", "Sink", "SinkError", "notify", "redact_url", "scrub"]

log = logging.getLogger(__name__)

SUBJECT_PREFIX = "[auction-backup]"
REDACTED = "***"
# Slack rejects a section whose text exceeds 3000 characters and a header over 150.
_SLACK_SECTION_MAX = 2900
_SLACK_HEADER_MAX = 150
_EMAIL_ERROR_MAX = 20000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Alert:
    """One thing that went wrong, with enough context to act on it from the message alone."""

    title: str
    """Short headline, e.g. "FAILED postgres/logical_dump 2026-11-26"; the email subject."""
    severity: str = "ERROR"
    system: str = ""
    """postgres, redis or kafka (several joined by ", " when a run touched more)."""
    asset: str = ""
    """Asset key(s) as "postgres/logical_dump"; the job or op name when no asset is involved."""
    partition: str | None = None
    error: str = ""
    run_id: str | None = None
    run_url: str | None = None
    """Link to the run in the Dagster UI (to the asset's checks for a check recorded outside a run)."""
    occurred_at: dt.datetime = field(default_factory=utcnow)
    check: str | None = None
    """Name of the asset check that failed, for check alerts."""
    job: str | None = None

    @property
    def subject(self) -> str:
        return f"{SUBJECT_PREFIX} {self.title}"

    @property
    def occurred_at_utc(self) -> dt.datetime:
        """`occurred_at` as an aware UTC datetime (a naive one is taken to be UTC)."""
        return _aware(self.occurred_at)

    def fields(self) -> list[tuple[str, str]]:
        """The labelled facts shown by every sink, in order; empty ones left out."""
        rows = [
            ("Severity", self.severity),
            ("System", self.system),
            ("Asset", self.asset),
            ("Check", self.check or ""),
            ("Partition", self.partition or ""),
            ("Job", self.job or ""),
            ("Run", self.run_id or ""),
            ("When", _iso(self.occurred_at)),
        ]
        return [(k, v) for k, v in rows if v]

    def text(self) -> str:
        """Plain-text rendering (email body, log line)."""
        width = max(len(k) for k, _ in self.fields())
        lines = [self.title, ""]
        lines += [f"{k + ':':<{width + 1}} {v}" for k, v in self.fields()]
        if self.run_url:
            lines.append(f"{'Link:':<{width + 1}} {self.run_url}")
        lines += ["", "Error:", _truncate(self.error or "(no error message)", _EMAIL_ERROR_MAX)]
        return "\n".join(lines) + "\n"

    def slack_payload(self) -> dict[str, Any]:
        """Slack incoming-webhook JSON: `text` is the notification fallback, `blocks` the layout."""
        link = f" <{self.run_url}|open in Dagster>" if self.run_url else ""
        error_line = _first_line(self.error)
        text = f"{self.subject}: {error_line}{link}" if error_line else f"{self.subject}{link}"
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_escape(v)}"} for k, v in self.fields()]
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": _truncate(self.subject, _SLACK_HEADER_MAX)}},
            # Slack shows at most 10 fields per section.
            {"type": "section", "fields": fields[:10]},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Error*\n```"
                    + _slack_escape(_truncate(self.error or "(no error message)", _SLACK_SECTION_MAX))
                    + "```",
                },
            },
        ]
        if self.run_url:
            blocks.append(
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"<{self.run_url}|{'Open the run' if self.run_id else 'Open'} in Dagster>",
                    },
                }
            )
        return {"text": text, "blocks": blocks}


@dataclass(frozen=True)
class NotifyResult:
    """What happened to one alert at one sink. `sink` is a redacted description, safe to log."""

    sink: str
    ok: bool
    attempts: int
    error: str | None = None
    elapsed_s: float = 0.0


class SinkError(Exception):
    """A sink could not deliver; the message is already free of the sink's secrets."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts


class Sink(Protocol):
    def describe(self) -> str: ...

    def send(self, alert: Alert) -> int:
        """Deliver or raise SinkError; returns the number of attempts it took."""
        ...


# --------------------------------------------------------------------------- notify


def notify(alert: Alert, sinks: Iterable[Sink], logger: logging.Logger | None = None) -> list[NotifyResult]:
    """Send `alert` through every sink; one failing sink never stops the others. Never raises.

    The alert itself is always logged (so with no sink configured it is at least in the log);
    each delivery is logged with the sink's redacted description.
    """
    out = logger or log
    sinks = list(sinks)
    _safe_log(
        out,
        logging.ERROR,
        f"ALERT {alert.subject}: {_first_line(alert.error)}"
        + (f" ({alert.run_url})" if alert.run_url else "")
        + ("" if sinks else " [no alert sink: logged only]"),
    )
    results = []
    for sink in sinks:
        started = time.monotonic()
        try:
            description = sink.describe()
        except Exception:  # noqa: BLE001
            description = type(sink).__name__
        try:
            attempts = sink.send(alert)
            result = NotifyResult(description, True, attempts, None, time.monotonic() - started)
            _safe_log(out, logging.INFO, f"alert delivered via {description} ({attempts} attempt(s))")
        except SinkError as exc:
            result = NotifyResult(description, False, exc.attempts, str(exc), time.monotonic() - started)
            _safe_log(out, logging.ERROR, f"alert NOT delivered: {exc}")
        except Exception as exc:  # noqa: BLE001 - a sink bug must not break the caller's run
            secrets = _sink_secrets(sink)
            message = scrub(f"{description}: unexpected {type(exc).__name__}: {exc}", secrets)
            result = NotifyResult(description, False, 1, message, time.monotonic() - started)
            _safe_log(out, logging.ERROR, f"alert NOT delivered: {message}")
        results.append(result)
    return results


def _safe_log(logger: logging.Logger, level: int, message: str) -> None:
    try:
        logger.log(level, message)
    except Exception:  # noqa: BLE001 - logging must not turn a delivered alert into a crash
        pass


def _sink_secrets(sink: Any) -> list[str]:
    try:
        return list(sink.secrets())
    except Exception:  # noqa: BLE001
        return []


# --------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """scheme://host[:port]/*** : enough to tell which endpoint, nothing of the token."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    tail = f"/{REDACTED}" if (parts.path not in ("", "/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{tail}"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value (longest first) in `text` by ***."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4 and s != "/"}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
        quoted = urllib.parse.quote(secret, safe="")
        if quoted != secret:
            text = text.replace(quoted, REDACTED)
    return text


def _aware(t: dt.datetime) -> dt.datetime:
    return (t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t).astimezone(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return _aware(t).isoformat(timespec="seconds").replace("+00:00", "Z")


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return _truncate(line.strip(), 300)
    return ""


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

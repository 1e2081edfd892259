"""ops.notify and ops.sinks against real local sinks: an HTTP server and an SMTP server on loopback ports.

The servers record what they receive in queues; tests wait on those queues with a timeout
(delivery is synchronous, so "nothing more arrived" is checked right after the call returns).
The helpers here are reused by tests/defs/test_alerting.py.
"""

from __future__ import annotations

import collections
import email
import email.policy
import http.server
import json
import logging
import os
import queue
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from auction_backup_pipelines.ops import notify as nt
from auction_backup_pipelines.ops import sinks
from auction_backup_pipelines.settings import AlertingSettings

WAIT_S = 10

# The stack's own CA and its certificate for 127.0.0.1 (stack/tls.sh): the SMTP test server
# speaks real TLS with it and the sinks verify it, as they verify a production mail relay.
STACK_TLS = Path(os.environ.get("STACK_TLS_CA") or Path(__file__).resolve().parents[2] / ".stack" / "tls" / "ca.crt").parent
STACK_CA = str(STACK_TLS / "ca.crt")
SMTP_TLS = {"smtp_tls": "starttls", "smtp_ca_file": STACK_CA}
"""AlertingResource fields for `SmtpServer()` (STARTTLS, the stack's CA)."""

# Values that must never show up in a log line, a result or a repr.
TOKEN = "T0SECRETPATHTOKEN42"
QUERY_TOKEN = "q-secret-7f3a9c"
HEADER_SECRET = "Bearer hdr-secret-5b2e"
PASSWORD = "smtp-pw-Zq81!x"


# --------------------------------------------------------------------------- servers


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class WebhookServer:
    """http.server on a free loopback port; records POSTs; answers with scripted statuses (default 200)."""

    def __init__(self) -> None:
        self.posts: queue.Queue[Post] = queue.Queue()
        self.statuses: collections.deque[int] = collections.deque()
        self.server_log: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                outer.posts.put(Post(self.path, dict(self.headers.items()), body))
                status = outer.statuses.popleft() if outer.statuses else 200
                # An error body that echoes the request path, as some gateways do: the token
                # in it must not reach our logs.
                reply = b"ok" if status < 400 else f"error for {self.path}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                outer.server_log.append(format % args)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = f"/hooks/{TOKEN}?token={QUERY_TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def next_post(self) -> Post:
        return self.posts.get(timeout=WAIT_S)

    def drain(self) -> list[Post]:
        out = []
        while True:
            try:
                out.append(self.posts.get_nowait())
            except queue.Empty:
                return out

    def __enter__(self) -> WebhookServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=WAIT_S)


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    login: str | None = None
    tls: bool = False


@dataclass
class _Handler:
    mails: queue.Queue = field(default_factory=queue.Queue)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.authenticated else None
        tls = server.transport.get_extra_info("ssl_object") is not None
        self.mails.put(Mail(envelope.mail_from, list(envelope.rcpt_tos), message, login, tls))
        return "250 Message accepted for delivery"


class _FreePortController(Controller):
    """aiosmtpd's Controller on port 0: learn the port the OS gave before the readiness probe."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        return super()._trigger_server()


def server_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(STACK_TLS / "server.crt", STACK_TLS / "server.key")
    return context


class SmtpServer:
    """aiosmtpd on a free loopback port; records messages; accepts `user`/PASSWORD logins only.

    `tls`: "starttls" (offered, and required before a login, like a real submission port),
    "implicit" (TLS from the first byte) or "none" (a plain relay that offers no TLS)."""

    def __init__(self, user: str = "alerts", password: str = PASSWORD, tls: str = "starttls") -> None:
        self.handler = _Handler()
        tls_kwargs: dict = {"auth_require_tls": tls == "starttls"}
        if tls == "starttls":
            tls_kwargs["tls_context"] = server_tls_context()
        elif tls == "implicit":
            # Every byte is TLS here; aiosmtpd's auth_require_tls only recognises STARTTLS sessions.
            tls_kwargs["ssl_context"] = server_tls_context()

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = auth_data.login.decode() == user and auth_data.password.decode() == password
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        self.controller = _FreePortController(
            self.handler,
            hostname="127.0.0.1",
            port=0,
            authenticator=authenticator,
            **tls_kwargs,
        )

    @property
    def port(self) -> int:
        return self.controller.port

    def next_mail(self) -> Mail:
        return self.handler.mails.get(timeout=WAIT_S)

    def empty(self) -> bool:
        return self.handler.mails.empty()

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


def closed_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_sink(server: SmtpServer, **overrides) -> sinks.SmtpSink:
    args = dict(
        host="127.0.0.1",
        port=server.port,
        sender="auction-backup@example.test",
        recipients=["oncall@example.test", "dba@example.test"],
        username="alerts",
        password=PASSWORD,
        tls="starttls",
        ca_file=STACK_CA,
        timeout=WAIT_S,
    )
    return sinks.SmtpSink(**{**args, **overrides})


ALERT = nt.Alert(
    title="FAILED postgres/logical_dump 2026-11-26",
    severity="ERROR",
    system="postgres",
    asset="postgres/logical_dump",
    partition="2026-11-26",
    error='pg_dump: error: connection to server at "localhost" failed: <refused> & gone\nsecond line',
    run_id="6f1c2d3e-run",
    run_url="http://dagster.test:3000/runs/6f1c2d3e-run",
    job="postgres_backup_job",
)


def assert_no_secret(text: str) -> None:
    for secret in (TOKEN, QUERY_TOKEN, HEADER_SECRET, "hdr-secret-5b2e", PASSWORD):
        assert secret not in text, f"secret {secret!r} leaked into: {text[:500]}"


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_slack_compatible_payload(webhook):
    sink = sinks.WebhookSink(webhook.url(), allow_http=True, timeout=WAIT_S, secret_header=f"Authorization: {HEADER_SECRET}")

    [result] = nt.notify(ALERT, [sink])

    assert result.ok and result.attempts == 1 and result.error is None
    post = webhook.next_post()
    assert post.path == f"/hooks/{TOKEN}?token={QUERY_TOKEN}"
    assert post.headers["Content-Type"].startswith("application/json")
    assert post.headers["Authorization"] == HEADER_SECRET
    payload = post.json()
    assert payload["text"].startswith("[auction-backup] FAILED postgres/logical_dump 2026-11-26: pg_dump: error")
    assert "<http://dagster.test:3000/runs/6f1c2d3e-run|" in payload["text"]
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "[auction-backup] FAILED postgres/logical_dump 2026-11-26"},
    }
    fields = {f["text"].split("\n")[0].strip("*"): f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert fields["Asset"] == "postgres/logical_dump"
    assert fields["Partition"] == "2026-11-26"
    assert fields["System"] == "postgres"
    assert fields["Severity"] == "ERROR"
    assert fields["Run"] == "6f1c2d3e-run"
    error_block = blocks[2]["text"]["text"]
    # Slack mrkdwn needs &, <, > escaped; both lines of the error are there.
    assert "&lt;refused&gt; &amp; gone" in error_block and "second line" in error_block
    assert blocks[3]["text"]["text"] == "<http://dagster.test:3000/runs/6f1c2d3e-run|Open the run in Dagster>"
    assert webhook.drain() == []


def test_webhook_retries_a_5xx_then_succeeds(webhook):
    webhook.statuses.extend([500, 200])
    sink = sinks.WebhookSink(webhook.url(), allow_http=True, timeout=WAIT_S, backoff=0.01)

    [result] = nt.notify(ALERT, [sink])

    assert result.ok and result.attempts == 2
    first, second = webhook.next_post(), webhook.next_post()
    assert first.body == second.body  # the same alert, resent
    assert webhook.drain() == []


def test_webhook_gives_up_after_bounded_tries_with_a_clear_error(webhook):
    webhook.statuses.extend([503, 502, 500, 200])
    sink = sinks.WebhookSink(webhook.url(), allow_http=True, timeout=WAIT_S, tries=3, backoff=0.01)

    [result] = nt.notify(ALERT, [sink])

    assert not result.ok and result.attempts == 3
    assert "gave up after 3 tries" in result.error and "HTTP 500" in result.error
    assert len([webhook.next_post() for _ in range(3)]) == 3
    assert webhook.drain() == []  # the 4th status was never asked for
    assert_no_secret(result.error)  # the error body echoed the path with the token


def test_webhook_client_error_is_not_retried(webhook):
    webhook.statuses.append(404)
    sink = sinks.WebhookSink(webhook.url(), allow_http=True, timeout=WAIT_S, backoff=0.01)

    [result] = nt.notify(ALERT, [sink])

    assert not result.ok and result.attempts == 1
    assert "HTTP 404" in result.error and "not retried" in result.error
    webhook.next_post()
    assert webhook.drain() == []


def test_webhook_down_is_reported_and_email_still_goes_out(smtp):
    down = sinks.WebhookSink(
        f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}", timeout=WAIT_S, tries=2, backoff=0.01, allow_http=True
    )

    results = nt.notify(ALERT, [down, smtp_sink(smtp)])

    assert [r.ok for r in results] == [False, True]
    assert results[0].attempts == 2
    assert "gave up after 2 tries" in results[0].error and "Connection" in results[0].error
    assert smtp.next_mail().message["Subject"] == "[auction-backup] FAILED postgres/logical_dump 2026-11-26"


def test_webhook_refuses_to_follow_redirects(webhook):
    webhook.statuses.append(302)
    [result] = nt.notify(ALERT, [sinks.WebhookSink(webhook.url(), allow_http=True, timeout=WAIT_S)])
    assert not result.ok and "HTTP 302" in result.error


# --------------------------------------------------------------------------- email


def test_smtp_sends_a_plain_text_email_with_the_alert(smtp):
    [result] = nt.notify(ALERT, [smtp_sink(smtp)])

    assert result.ok, result.error
    mail = smtp.next_mail()
    assert mail.login == "alerts"  # it authenticated
    assert mail.mail_from == "auction-backup@example.test"
    assert mail.rcpt_tos == ["oncall@example.test", "dba@example.test"]
    msg = mail.message
    assert msg["Subject"] == "[auction-backup] FAILED postgres/logical_dump 2026-11-26"
    assert msg["To"] == "oncall@example.test, dba@example.test"
    assert msg["X-Auction-Backup-Severity"] == "ERROR"
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content().replace("\r\n", "\n")
    for expected in (
        "Asset:     postgres/logical_dump",
        "Partition: 2026-11-26",
        "System:    postgres",
        "Job:       postgres_backup_job",
        "Link:      http://dagster.test:3000/runs/6f1c2d3e-run",
        'connection to server at "localhost" failed: <refused> & gone\nsecond line',
    ):
        assert expected in body
    assert smtp.empty()


def test_smtp_without_login(smtp):
    [result] = nt.notify(ALERT, [smtp_sink(smtp, username=None, password=None)])
    assert result.ok, result.error
    assert smtp.next_mail().login is None


def test_smtp_starttls_not_offered_is_an_error_not_an_exception():
    with SmtpServer(tls="none") as plain:
        [result] = nt.notify(ALERT, [smtp_sink(plain)])
        assert not result.ok and "STARTTLS" in result.error
        assert plain.empty()  # nothing sent, and the password never left in clear text
    assert_no_secret(result.error)


# --------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_logs_results_or_reprs(webhook, smtp, caplog):
    caplog.set_level(logging.DEBUG)
    webhook.statuses.extend([500, 500])
    failing_webhook = sinks.WebhookSink(
        webhook.url(), allow_http=True, timeout=WAIT_S, tries=2, backoff=0.01, secret_header=("Authorization", HEADER_SECRET)
    )
    down_webhook = sinks.WebhookSink(
        f"http://user:{PASSWORD}@127.0.0.1:{closed_port()}/x/{TOKEN}?k={QUERY_TOKEN}", tries=1, allow_http=True
    )
    wrong_password = smtp_sink(smtp, password=PASSWORD + "-wrong")
    good_smtp = smtp_sink(smtp)

    results = nt.notify(ALERT, [failing_webhook, down_webhook, wrong_password, good_smtp])

    assert [r.ok for r in results] == [False, False, False, True]
    assert "login refused (535)" in results[2].error
    smtp.next_mail()
    seen = "\n".join(
        [caplog.text]
        + [f"{r.sink} {r.error}" for r in results]
        + [repr(s) for s in (failing_webhook, down_webhook, wrong_password, good_smtp)]
        + [repr(r) for r in results]
    )
    assert "alert NOT delivered" in caplog.text and f"webhook http://127.0.0.1:{webhook.port}/***" in caplog.text
    assert_no_secret(seen)  # covers the wrong password too: PASSWORD is its prefix


def test_a_broken_sink_is_contained_and_scrubbed(smtp, caplog):
    class Broken:
        def describe(self) -> str:
            return "broken sink"

        def secrets(self) -> list[str]:
            return [PASSWORD]

        def send(self, alert):
            raise RuntimeError(f"bug while using {PASSWORD}")

    results = nt.notify(ALERT, [Broken(), smtp_sink(smtp)])

    assert [r.ok for r in results] == [False, True]
    assert results[0].error == "broken sink: unexpected RuntimeError: bug while using ***"
    assert_no_secret(caplog.text)
    smtp.next_mail()


def test_no_sink_means_the_alert_is_only_logged(caplog):
    caplog.set_level(logging.INFO)
    assert nt.notify(ALERT, []) == []
    assert "ALERT [auction-backup] FAILED postgres/logical_dump 2026-11-26" in caplog.text
    assert "[no alert sink: logged only]" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "https://hooks.slack.com/***"),
        ("http://127.0.0.1:8080/hook?token=abc", "http://127.0.0.1:8080/***"),
        ("https://user:pw@chat.example.test", "https://chat.example.test"),
        ("https://[::1]:9000/x", "https://[::1]:9000/***"),
    ],
)
def test_redact_url(url, shown):
    assert nt.redact_url(url) == shown


def test_a_bad_webhook_url_is_rejected_without_echoing_it():
    with pytest.raises(ValueError) as err:
        sinks.WebhookSink(f"ftp://example.test/{TOKEN}")
    assert TOKEN not in str(err.value)


# --------------------------------------------------------------------------- environment


def sinks_from(environ):
    return sinks.sinks_from_settings(AlertingSettings.from_env(environ))


def test_sinks_from_settings_nothing_configured():
    assert sinks_from({}) == []


def test_sinks_from_settings_both_sinks():
    webhook_sink, smtp_sink_ = sinks_from(
        {
            "ALERT_WEBHOOK_URL": f"https://hooks.example.test/{TOKEN}",
            "ALERT_WEBHOOK_SECRET_HEADER": f"Authorization: {HEADER_SECRET}",
            "ALERT_SMTP_HOST": "mail.example.test",
            "ALERT_SMTP_FROM": "backup@example.test",
            "ALERT_SMTP_TO": "a@example.test, b@example.test",
            "ALERT_SMTP_USER": "alerts",
            "ALERT_SMTP_PASSWORD": PASSWORD,
            "ALERT_SMTP_STARTTLS": "true",  # the older spelling of ALERT_SMTP_TLS=starttls
        }
    )
    assert isinstance(webhook_sink, sinks.WebhookSink) and webhook_sink.secret_header == ("Authorization", HEADER_SECRET)
    assert isinstance(smtp_sink_, sinks.SmtpSink)
    assert (smtp_sink_.host, smtp_sink_.port, smtp_sink_.tls) == ("mail.example.test", 587, "starttls")
    assert smtp_sink_.recipients == ("a@example.test", "b@example.test")
    assert (smtp_sink_.username, smtp_sink_.password) == ("alerts", PASSWORD)
    assert_no_secret(repr(webhook_sink) + repr(smtp_sink_))


def test_sinks_from_settings_plain_smtp_defaults_to_port_25():
    [sink] = sinks_from({"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_FROM": "f@x.test", "ALERT_SMTP_TO": "t@x.test"})
    assert (sink.port, sink.tls, sink.username) == (25, "none", None)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_FROM": "f@x.test"}, "ALERT_SMTP_TO"),
        ({"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_TO": "t@x.test"}, "ALERT_SMTP_FROM"),
        ({"ALERT_SMTP_TO": "t@x.test"}, "ALERT_SMTP_HOST"),
        ({"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_PORT": "smtp", "ALERT_SMTP_FROM": "f", "ALERT_SMTP_TO": "t"}, "ALERT_SMTP_PORT"),
        ({"ALERT_WEBHOOK_SECRET_HEADER": "X: y"}, "ALERT_WEBHOOK_URL"),
        ({"ALERT_WEBHOOK_URL": f"https://h.test/{TOKEN}", "ALERT_WEBHOOK_SECRET_HEADER": "novalue"}, "Name: value"),
    ],
)
def test_sinks_from_settings_half_configured_is_an_error(environ, message):
    with pytest.raises(ValueError, match=message) as err:
        sinks_from(environ)
    assert TOKEN not in str(err.value)

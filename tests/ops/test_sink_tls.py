"""The alert sinks' transport security: SMTP logs in only inside TLS (STARTTLS or implicit,
the server's certificate verified) and a webhook must be https:// unless http is allowed for a
loopback test receiver; both are refused at configuration time with one line that shows no secret.

The SMTP servers are tests/ops/test_notify.py's real aiosmtpd listeners, with the stack's
certificate for 127.0.0.1 (stack/tls.sh).
"""

from __future__ import annotations

import subprocess

import pytest

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.ops import notify as nt
from auction_backup_pipelines.ops import sinks
from auction_backup_pipelines.settings import AlertingSettings
from tests.ops.test_notify import (
    ALERT,
    PASSWORD,
    QUERY_TOKEN,
    STACK_CA,
    TOKEN,
    SmtpServer,
    assert_no_secret,
    sinks_from,
    smtp_sink,
)

# --------------------------------------------------------------------------- SMTP


def test_smtp_logs_in_only_inside_starttls(smtp):
    [result] = nt.notify(ALERT, [smtp_sink(smtp)])
    assert result.ok, result.error
    mail = smtp.next_mail()
    assert mail.tls and mail.login == "alerts"


def test_smtp_implicit_tls_sends_with_login():
    with SmtpServer(tls="implicit") as server:
        [result] = nt.notify(ALERT, [smtp_sink(server, tls="implicit")])
        assert result.ok, result.error
        mail = server.next_mail()
    assert mail.tls and mail.login == "alerts"
    assert mail.message["Subject"] == "[auction-backup] FAILED postgres/logical_dump 2026-11-26"


def test_smtp_plain_relay_without_password_still_works():
    with SmtpServer(tls="none") as plain:
        [result] = nt.notify(ALERT, [smtp_sink(plain, tls="none", username=None, password=None)])
        assert result.ok, result.error
        mail = plain.next_mail()
    assert not mail.tls and mail.login is None


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
def test_smtp_certificate_of_another_ca_is_refused_before_login(tmp_path, tls):
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=Not the stack CA"]
        + ["-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca)],
        check=True,
        capture_output=True,
    )
    with SmtpServer(tls=tls) as server:
        [result] = nt.notify(ALERT, [smtp_sink(server, tls=tls, ca_file=str(other_ca))])
        assert not result.ok and "CERTIFICATE_VERIFY_FAILED" in result.error
        assert server.empty()
    assert_no_secret(result.error)


def test_smtp_password_without_tls_is_refused_when_the_sink_is_built(smtp):
    with pytest.raises(ValueError) as err:
        smtp_sink(smtp, tls="none")
    assert "ALERT_SMTP_TLS" in str(err.value) and "\n" not in str(err.value)
    assert_no_secret(str(err.value))


# --------------------------------------------------------------------------- configuration


def test_sinks_from_settings_implicit_tls_defaults_to_port_465():
    environ = {"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_FROM": "f@x.test", "ALERT_SMTP_TO": "t@x.test", "ALERT_SMTP_TLS": "implicit"}
    [sink] = sinks_from({**environ, "ALERT_SMTP_USER": "u", "ALERT_SMTP_PASSWORD": PASSWORD, "ALERT_SMTP_CA_FILE": STACK_CA})
    assert (sink.port, sink.tls, sink.ca_file) == (465, "implicit", STACK_CA)


SMTP_BASE = {"ALERT_SMTP_HOST": "mx", "ALERT_SMTP_FROM": "f@x.test", "ALERT_SMTP_TO": "t@x.test"}


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        # the password would cross the network in clear text
        ({**SMTP_BASE, "ALERT_SMTP_USER": "u", "ALERT_SMTP_PASSWORD": PASSWORD}, ("ALERT_SMTP_PASSWORD", "ALERT_SMTP_TLS")),
        (
            {**SMTP_BASE, "ALERT_SMTP_USER": "u", "ALERT_SMTP_PASSWORD": PASSWORD, "ALERT_SMTP_TLS": "none"},
            ("ALERT_SMTP_PASSWORD", "ALERT_SMTP_TLS"),
        ),
        ({**SMTP_BASE, "ALERT_SMTP_STARTTLS": "1", "ALERT_SMTP_TLS": "implicit"}, ("ALERT_SMTP_STARTTLS", "ALERT_SMTP_TLS")),
        ({**SMTP_BASE, "ALERT_SMTP_CA_FILE": STACK_CA}, ("ALERT_SMTP_CA_FILE", "ALERT_SMTP_TLS")),
        # the webhook's token would cross the network in clear text
        (
            {"ALERT_WEBHOOK_URL": f"http://hooks.example.test/services/{TOKEN}?t={QUERY_TOKEN}"},
            ("ALERT_WEBHOOK_URL", "ALERT_WEBHOOK_ALLOW_HTTP"),
        ),
        ({"ALERT_WEBHOOK_URL": f"HTTP://127.0.0.1:8080/{TOKEN}", "ALERT_WEBHOOK_ALLOW_HTTP": "0"}, ("ALERT_WEBHOOK_URL",)),
    ],
)
def test_transport_without_tls_is_refused_at_configuration_time(environ, names):
    with pytest.raises(ConfigurationError) as err:
        AlertingSettings.from_env(environ)
    message = str(err.value)
    assert "\n" not in message and all(name in message for name in names)
    assert_no_secret(message)
    assert "hooks.example.test" not in message and "127.0.0.1:8080" not in message  # the URL is a secret: not echoed at all


def test_http_webhook_is_refused_by_the_sink_unless_allowed(webhook):
    with pytest.raises(ValueError) as err:
        sinks.WebhookSink(webhook.url())
    assert "ALERT_WEBHOOK_ALLOW_HTTP" in str(err.value)
    assert_no_secret(str(err.value))
    assert f":{webhook.port}" not in str(err.value)
    [sink] = sinks_from({"ALERT_WEBHOOK_URL": webhook.url(), "ALERT_WEBHOOK_ALLOW_HTTP": "1"})
    [result] = nt.notify(ALERT, [sink])
    assert result.ok, result.error
    assert webhook.next_post().path == f"/hooks/{TOKEN}?token={QUERY_TOKEN}"

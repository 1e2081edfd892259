"""Kafka over TLS: a day exported through the stack's SSL listener and restored through it, byte for
byte; SASL_SSL with SCRAM; a wrong CA, a wrong password or TLS against a plain listener fails at
once with one line naming the setting, never a traceback, also through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auction_backup_pipelines import native
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.kafka import connection, restore_native
from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.kafka import restore as kr
from auction_backup_pipelines.kafka.records import KafkaUnavailable
from auction_backup_pipelines.settings import KafkaSettings
from tests.kafka.test_export_restore import BOOTSTRAP, D1, Kafka, Msg, at
from tests.redis.test_tls import make_ca

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CA = str(ROOT / ".stack" / "tls" / "ca.crt")


def stack_value(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not in the environment: run `bash stack/up.sh` and source .stack/stack.env")
    return value


def ssl_cluster(ca: str = CA, host: str = "127.0.0.1") -> KafkaSettings:
    port = stack_value("KAFKA_SSL_BOOTSTRAP_STACK").rsplit(":", 1)[1]
    return KafkaSettings(bootstrap_servers=f"{host}:{port}", security_protocol="SSL", ssl_ca_file=ca)


def sasl_cluster(password: str | None = None) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=stack_value("KAFKA_SASL_SSL_BOOTSTRAP_STACK"),
        security_protocol="SASL_SSL",
        ssl_ca_file=CA,
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username=stack_value("KAFKA_SASL_USERNAME_STACK"),
        sasl_password=stack_value("KAFKA_SASL_PASSWORD_STACK") if password is None else password,
    )


@pytest.fixture
def kafka():
    k = Kafka()
    yield k
    k.cleanup()


def day_topic(kafka: Kafka, suffix: str) -> tuple[str, list[tuple]]:
    """A topic of this test with messages stamped D1 in 2 partitions; returns it and their content."""
    topic = kafka.topic(suffix, 2)
    msgs = [Msg(i % 2, at(D1, 1 + i), f"k{i}".encode(), bytes([i]) * (i + 1), (("h", b"\x00"),)) for i in range(12)]
    kafka.produce(topic, msgs)
    return topic, [m.content() for m in msgs]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# -- settings ------------------------------------------------------------------------------------------


def test_settings_validate_the_protocol_and_its_companions():
    s = KafkaSettings.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": "/etc/ca.crt"})
    assert s.uses_tls and not s.uses_sasl and s.ssl_ca_file == "/etc/ca.crt"
    assert KafkaSettings.from_env({}).security_protocol == "PLAINTEXT"
    for env, message in [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({"KAFKA_SSL_CA_FILE": "/etc/ca.crt"}, "KAFKA_SSL_CA_FILE is set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_MECHANISM must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
        ({"KAFKA_SASL_PASSWORD": "pw-not-shown"}, "KAFKA_SASL_\\* are set but KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
    ]:
        with pytest.raises(ConfigurationError, match=message) as error:
            KafkaSettings.from_env(env)
        assert "pw-not-shown" not in str(error.value)
    assert "pw" not in repr(sasl_cluster(password="pw"))


def test_one_config_builder_carries_the_security_settings():
    config = connection.client_config(sasl_cluster(password="pw"), 5)
    assert config["security.protocol"] == "sasl_ssl" and config["ssl.ca.location"] == CA
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert (config["sasl.mechanism"], config["sasl.password"]) == ("SCRAM-SHA-256", "pw")
    assert connection.client_config("127.0.0.1:9092", 5)["security.protocol"] == "plaintext"
    with pytest.raises(ConfigurationError, match="KAFKA_SSL_CA_FILE '/nonexistent/ca.crt' is not a readable file"):
        connection.client_config(ssl_cluster(ca="/nonexistent/ca.crt"), 5)
    # another cluster gets the protocol and CA, never the production SASL password
    other = connection.for_target(sasl_cluster(password="pw"), "10.0.0.9:9093")
    assert (other.security_protocol, other.ssl_ca_file, other.sasl_password) == ("SSL", CA, "")
    assert connection.for_target(sasl_cluster(password="pw"), sasl_cluster().bootstrap_servers).sasl_password == "pw"


# -- export and restore through TLS ----------------------------------------------------------------------


def test_a_day_exports_and_restores_through_the_ssl_listener(kafka, repo):
    topic, content = day_topic(kafka, "ssl")
    backup = kx.backup_topic_day(ssl_cluster(), repo, topic, D1)  # the SSL port speaks nothing else
    assert backup.metadata["messages_total"] == 12
    assert backup.metadata["bootstrap"] == ssl_cluster().bootstrap_servers
    report = kr.restore_topics(repo, (D1, D1), [topic], ssl_cluster(host="localhost"), topic_prefix="r-")
    assert report.topics[topic].messages == 12 and report.target_bootstrap.startswith("localhost:")
    restored = kafka.read(f"r-{topic}")  # read back over PLAINTEXT, by the test's own client
    assert sorted(m for part in restored.values() for m in part) == sorted(content)


def test_sasl_ssl_with_scram_exports_and_keeps_the_password_out_of_everything(kafka, repo):
    topic, _ = day_topic(kafka, "sasl")
    cluster = sasl_cluster()
    backup = kx.backup_topic_day(cluster, repo, topic, D1)
    assert backup.metadata["messages_total"] == 12
    assert cluster.sasl_password not in json.dumps(backup.metadata)
    stored = [p.read_bytes() for p in repo.backend.root.rglob("*") if p.is_file()]
    assert not any(cluster.sasl_password.encode() in data for data in stored)

    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as error:
        kx.backup_topic_day(sasl_cluster(password="wrong-password-123"), repo, topic, D1, timeout=10)
    line = one_line(str(error.value))
    assert "refused the SASL login of user" in line and "KAFKA_SASL_PASSWORD" in line
    assert "wrong-password-123" not in line
    assert time.monotonic() - started < 8, "a refused login must not wait out the timeout"


def test_the_native_replay_restores_through_sasl_ssl_with_the_password_only_on_its_stdin(kafka, repo, monkeypatch):
    topic, content = day_topic(kafka, "sasl-restore")
    cluster = sasl_cluster()
    kx.backup_topic_day(cluster, repo, topic, D1)
    assert restore_native.helper_path(), "stack/install.sh builds kafka-replay into the virtualenv"
    started: list[tuple[list[str], dict[str, str]]] = []
    real_popen = subprocess.Popen

    def popen(argv, **kwargs):
        started.append((list(argv), dict(kwargs.get("env") or os.environ)))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(native.subprocess, "Popen", popen)
    report = kr.restore_topics(repo, (D1, D1), [topic], cluster, topic_prefix="s-")
    assert report.topics[topic].messages == 12
    assert sorted(m for part in kafka.read(f"s-{topic}").values() for m in part) == sorted(content)
    assert [Path(argv[0]).name for argv, _ in started] == ["kafka-replay"]  # the helper wrote it, through SCRAM
    argv, env = started[0]
    assert not any(cluster.sasl_password in part for part in argv)
    assert not any(cluster.sasl_password in value for value in env.values())


# -- refusals ----------------------------------------------------------------------------------------------


def test_a_wrong_ca_fails_export_and_restore_at_once_with_one_line(kafka, repo, tmp_path):
    topic, _ = day_topic(kafka, "wrongca")
    wrong = ssl_cluster(ca=str(make_ca(tmp_path)[0]))

    def refused(attempt) -> None:
        started = time.monotonic()
        with pytest.raises(KafkaUnavailable) as error:
            attempt()
        line = one_line(str(error.value))
        assert line.startswith(f"TLS certificate verification failed for Kafka at {wrong.bootstrap_servers}")
        assert "KAFKA_SSL_CA_FILE" in line
        assert time.monotonic() - started < 8, "a failed handshake must not wait out the timeout"

    refused(lambda: kx.backup_topic_day(wrong, repo, topic, D1, timeout=10))
    assert repo.list() == []
    kx.backup_topic_day(BOOTSTRAP, repo, topic, D1)  # a day to restore, taken over PLAINTEXT
    refused(lambda: kr.restore_topics(repo, (D1, D1), [topic], wrong, topic_prefix="r-", timeout=10))
    assert f"r-{topic}" not in kafka.admin.list_topics(timeout=10).topics


def test_tls_against_the_plain_listener_says_so(repo):
    plain = KafkaSettings(bootstrap_servers=BOOTSTRAP, security_protocol="SSL", ssl_ca_file=CA)
    with pytest.raises(
        KafkaUnavailable, match="answers without TLS: KAFKA_SECURITY_PROTOCOL is SSL but that listener is PLAINTEXT"
    ):
        kx.backup_topic_day(plain, repo, "auction-events", D1, timeout=10)


def run_cli(repo_root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": ssl_cluster().bootstrap_servers,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        **env,
    }
    argv = [sys.executable, "-m", "auction_backup_pipelines.cli", "--repo", str(repo_root), *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def test_cli_exports_and_restores_through_tls_and_names_the_ca_setting_when_it_is_wrong(kafka, tmp_path):
    topic, content = day_topic(kafka, "cli")
    repo_root = tmp_path / "backups"
    done = run_cli(repo_root, "backup", "kafka", "--date", D1.isoformat(), "--topics", topic, KAFKA_SSL_CA_FILE=CA)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["messages"] == 12
    restored = run_cli(
        repo_root,
        *("restore", "kafka", "--from", D1.isoformat(), "--to", D1.isoformat(), "--topics", topic, "--topic-prefix", "c-"),
        KAFKA_SSL_CA_FILE=CA,
    )
    assert restored.returncode == 0, restored.stderr
    assert sorted(m for part in kafka.read(f"c-{topic}").values() for m in part) == sorted(content)

    wrong = str(make_ca(tmp_path)[0])
    failed = run_cli(repo_root, "backup", "kafka", "--date", D1.isoformat(), "--topics", topic, KAFKA_SSL_CA_FILE=wrong)
    assert failed.returncode == 1 and json.loads(failed.stdout) == []
    line = one_line(failed.stderr)
    assert line.startswith(f"auction-backup: error: {topic}: TLS certificate verification failed for Kafka at ")
    assert "KAFKA_SSL_CA_FILE" in line
    doctor = run_cli(repo_root, "doctor", KAFKA_SSL_CA_FILE=wrong)
    assert "TLS certificate verification failed for Kafka" in doctor.stdout

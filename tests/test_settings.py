"""The settings package: every variable parsed once, with its default; one-line errors that name the
variable and never show a secret; the README table lists exactly the module's variables; and
nothing else in the package reads the environment."""

from __future__ import annotations

import ast
import base64
import dataclasses
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from auction_backup_pipelines import settings as st
from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.settings import (
    AlertingSettings,
    EncryptionSettings,
    KafkaSettings,
    OffsiteSettings,
    PostgresSettings,
    RedisSettings,
    RepositorySettings,
    RestoreSettings,
    RetentionSettings,
    Settings,
    VerificationSettings,
    WalSettings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "auction_backup_pipelines"
KEY = base64.b64encode(bytes(range(32))).decode()
SECRET = "s3cr3t-Value-never-shown"


class RecordingEnviron(Mapping[str, str]):
    """A mapping that remembers every name looked up."""

    def __init__(self, values: dict[str, str]):
        self.values, self.read = values, set()

    def __getitem__(self, name: str) -> str:
        self.read.add(name)
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        self.read.add(str(name))
        return name in self.values

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must look variables up by name, not scan the environment")

    def __len__(self) -> int:
        return len(self.values)


def test_defaults_when_nothing_is_set():
    s = load_settings({})
    assert s == Settings()
    assert (s.postgres.host, s.postgres.port, s.postgres.dbname, s.postgres.user) == (
        "localhost",
        5432,
        "auctionflow",
        "auctionuser",
    )
    assert (s.redis.host, s.redis.port) == ("localhost", 7001)
    assert s.kafka == KafkaSettings("localhost:9092", st.AUCTION_TOPICS)
    assert s.restore == RestoreSettings((), "", "", ())  # no target but the sources themselves
    assert (s.repository.root, s.repository.compression) == ("backups", "zstd")
    assert s.encryption == EncryptionSettings("", "") and not s.offsite.configured and s.offsite.compression == "zstd"
    assert s.partitions_start == ""  # unset: chosen once by the Dagster loader and recorded in BACKUP_ROOT
    assert s.wal == WalSettings("wal_spool", 300.0, 300)
    assert s.verification.max_age_days == 8.0
    assert s.retention == RetentionSettings(3600, False)
    a = s.alerting
    assert (a.webhook_timeout_s, a.smtp_port, a.smtp_timeout_s, a.smtp_to, a.smtp_tls) == (5.0, 0, 10.0, (), "none")
    assert not a.webhook_allow_http and a.smtp_ca_file == ""
    assert (s.postgres.sslmode, s.postgres.sslrootcert) == ("", "")
    assert (a.dagster_url, a.check_sensor_interval_s, a.check_repeat_s, a.check_lookback_s) == (
        "http://127.0.0.1:3000",
        60,
        86400,
        86400,
    )


def test_empty_values_mean_the_default():
    assert load_settings({name: "" for name in st.ENVIRONMENT_VARIABLES}) == Settings()


def test_every_variable_is_parsed():
    env = {
        "POSTGRES_HOST": "db",
        "POSTGRES_PORT": "5433",
        "POSTGRES_DB": "d",
        "POSTGRES_USER": "u",
        "POSTGRES_PASSWORD": SECRET,
        "PGBIN": "/opt/pg/bin",
        "POSTGRES_SSLMODE": "verify-full",
        "POSTGRES_SSLROOTCERT": "/etc/pg/ca.crt",
        "REDIS_HOST": "r",
        "REDIS_PORT": "7002",
        "REDIS_USERNAME": "backup",
        "REDIS_PASSWORD": SECRET,
        "REDIS_DATA_DIR": "/var/lib/redis",
        "REDIS_TLS": "on",
        "REDIS_TLS_CA_FILE": "/etc/redis/ca.crt",
        "REDIS_TLS_CERT_FILE": "/etc/redis/client.crt",
        "REDIS_TLS_KEY_FILE": "/etc/redis/client.key",
        "KAFKA_BOOTSTRAP_SERVERS": "k:9093",
        "KAFKA_TOPICS": " a, b ,,c",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CA_FILE": "/etc/kafka/ca.crt",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "backup",
        "KAFKA_SASL_PASSWORD": SECRET,
        "RESTORE_ALLOWED_REDIS": "r2:7001, [::1]:7003 r4:7004",
        "RESTORE_REDIS_USERNAME": "restorer",
        "RESTORE_REDIS_PASSWORD": SECRET,
        "RESTORE_ALLOWED_KAFKA": "k2:9093,",
        "BACKUP_ROOT": "/srv/backups",
        "BACKUP_COMPRESSION": "gzip",
        "BACKUP_ENCRYPTION_KEY_FILE": "/etc/keys",
        "BACKUP_ENCRYPTION_KEYS": f"k1:{KEY}, k2:{KEY}",
        "BACKUP_PARTITIONS_START": "2026-01-31",
        "OFFSITE_S3_BUCKET": "b",
        "OFFSITE_S3_PREFIX": "p/",
        "OFFSITE_S3_ENDPOINT_URL": "http://s3:9000",
        "OFFSITE_S3_REGION": "eu-west-1",
        "OFFSITE_S3_ACCESS_KEY_ID": "AK",
        "OFFSITE_S3_SECRET_ACCESS_KEY": SECRET,
        "OFFSITE_COMPRESSION": "none",
        "OFFSITE_ENCRYPTION_KEY_FILE": "/etc/okeys",
        "OFFSITE_ENCRYPTION_KEYS": f"o1:{KEY}",
        "WAL_SPOOL_DIR": "/spool",
        "WAL_ARCHIVE_MAX_LAG_S": "90.5",
        "WAL_ARCHIVE_SENSOR_INTERVAL_S": "45",
        "VERIFICATION_MAX_AGE_DAYS": "2.5",
        "RETENTION_SENSOR_INTERVAL_S": "30",
        "RETENTION_DRY_RUN": "Yes",
        "ALERT_WEBHOOK_URL": f" https://hooks.test/{SECRET} ",
        "ALERT_WEBHOOK_SECRET_HEADER": "X-Token: t",
        "ALERT_WEBHOOK_TIMEOUT_S": "2",
        "ALERT_WEBHOOK_ALLOW_HTTP": "1",
        "ALERT_SMTP_HOST": "mx",
        "ALERT_SMTP_PORT": "2525",
        "ALERT_SMTP_FROM": "f@x.test",
        "ALERT_SMTP_TO": "a@x.test; b@x.test,",
        "ALERT_SMTP_USER": "alerts",
        "ALERT_SMTP_PASSWORD": f" {SECRET} ",
        "ALERT_SMTP_TLS": "implicit",
        "ALERT_SMTP_CA_FILE": "/etc/mail/ca.crt",
        "ALERT_SMTP_TIMEOUT_S": "3",
        "ALERT_CHECK_SENSOR_INTERVAL_S": "120",
        "ALERT_CHECK_REPEAT_S": "0",
        "ALERT_CHECK_LOOKBACK_S": "600",
        "DAGSTER_PORT": "3100",
        "BASE_BACKUP_MAX_RATE": "32M",
        "KAFKA_EXPORT_MAX_BYTES_PER_S": "8M",
        "OFFSITE_S3_MAX_BYTES_PER_S": "4096k",
    }
    s = load_settings(env)
    limits = (s.postgres.base_backup_max_rate, s.kafka.export_max_bytes_per_s, s.offsite.max_bytes_per_s)
    assert limits == ("32M", 8 << 20, 4 << 20)
    s = load_settings({k: v for k, v in env.items() if not k.endswith(("_MAX_RATE", "_MAX_BYTES_PER_S"))})
    assert s.postgres == PostgresSettings("db", 5433, "d", "u", SECRET, "/opt/pg/bin", "verify-full", "/etc/pg/ca.crt")
    tls = ("/etc/redis/ca.crt", "/etc/redis/client.crt", "/etc/redis/client.key")
    assert s.redis == RedisSettings("r", 7002, SECRET, "backup", "/var/lib/redis", True, *tls)
    assert s.kafka == KafkaSettings("k:9093", ("a", "b", "c"), "SASL_SSL", "/etc/kafka/ca.crt", "SCRAM-SHA-512", "backup", SECRET)
    assert s.restore == RestoreSettings(("r2:7001", "[::1]:7003", "r4:7004"), "restorer", SECRET, ("k2:9093",))
    assert s.repository == RepositorySettings("/srv/backups", "gzip")
    assert s.encryption == EncryptionSettings("/etc/keys", f"k1:{KEY}, k2:{KEY}")
    assert s.offsite == OffsiteSettings("b", "p/", "http://s3:9000", "eu-west-1", "AK", SECRET, "none", "/etc/okeys", f"o1:{KEY}")
    assert s.offsite.configured
    assert s.partitions_start == "2026-01-31"
    assert s.wal == WalSettings("/spool", 90.5, 45)
    assert s.verification == VerificationSettings(2.5)
    assert s.retention == RetentionSettings(30, True)
    a = s.alerting
    assert a.webhook_url == f"https://hooks.test/{SECRET}" and a.smtp_password == f" {SECRET} "  # a password is verbatim
    assert a.smtp_to == ("a@x.test", "b@x.test") and a.sink_arguments()["smtp_to"] == ["a@x.test", "b@x.test"]
    assert (a.smtp_port, a.smtp_tls, a.webhook_timeout_s, a.smtp_timeout_s) == (2525, "implicit", 2.0, 3.0)
    assert a.webhook_allow_http and a.smtp_ca_file == "/etc/mail/ca.crt"
    assert (a.check_sensor_interval_s, a.check_repeat_s, a.check_lookback_s) == (120, 0, 600)
    assert a.dagster_url == "http://127.0.0.1:3100"
    assert (
        load_settings({"DAGSTER_WEBSERVER_URL": "https://dagster.test", "DAGSTER_PORT": "1"}).alerting.dagster_url
        == "https://dagster.test"
    )
    assert SECRET not in repr(s)


def test_the_module_reads_exactly_the_variables_it_lists():
    env = RecordingEnviron({})
    load_settings(env)
    assert env.read == set(st.ENVIRONMENT_VARIABLES)
    assert len(st.ENVIRONMENT_VARIABLES) == len(set(st.ENVIRONMENT_VARIABLES))
    assert st.SECRET_VARIABLES <= set(st.ENVIRONMENT_VARIABLES)


@pytest.mark.parametrize(
    "group",
    [
        PostgresSettings,
        RedisSettings,
        KafkaSettings,
        RestoreSettings,
        RepositorySettings,
        EncryptionSettings,
        OffsiteSettings,
        WalSettings,
        VerificationSettings,
        RetentionSettings,
        AlertingSettings,
    ],
)
def test_each_group_from_env_is_the_same_parser(group, monkeypatch):
    env = {
        "POSTGRES_PORT": "6543",
        "REDIS_HOST": "r",
        "KAFKA_TOPICS": "t",
        "RESTORE_ALLOWED_KAFKA": "k:1",
        "BACKUP_ROOT": "/b",
        "OFFSITE_S3_BUCKET": "x",
        "BACKUP_PARTITIONS_START": "2026-02-01",
        "WAL_SPOOL_DIR": "/s",
        "VERIFICATION_MAX_AGE_DAYS": "1",
        "RETENTION_DRY_RUN": "1",
        "ALERT_SMTP_HOST": "mx",
        "BACKUP_ENCRYPTION_KEYS": f"k:{KEY}",
    }
    name = {f.type if isinstance(f.type, str) else f.type.__name__: f.name for f in dataclasses.fields(Settings)}[group.__name__]
    assert group.from_env(env) == getattr(load_settings(env), name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert group.from_env() == getattr(load_settings(), name)  # no mapping: the process environment


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTGRES_PORT", "five"),
        ("POSTGRES_PORT", "0"),
        ("REDIS_PORT", "70000"),
        ("KAFKA_TOPICS", " , "),
        ("RESTORE_ALLOWED_REDIS", "redis.internal"),
        ("RESTORE_ALLOWED_REDIS", "r:7001,r:http"),
        ("RESTORE_ALLOWED_KAFKA", "k:65536"),
        ("BACKUP_COMPRESSION", "lz4"),
        ("OFFSITE_COMPRESSION", "xz"),
        ("BACKUP_PARTITIONS_START", "2026-13-01"),
        ("BACKUP_PARTITIONS_START", "20261101"),
        ("WAL_ARCHIVE_MAX_LAG_S", "-1"),
        ("WAL_ARCHIVE_MAX_LAG_S", "soon"),
        ("WAL_ARCHIVE_SENSOR_INTERVAL_S", "0"),
        ("VERIFICATION_MAX_AGE_DAYS", "nan"),
        ("RETENTION_SENSOR_INTERVAL_S", "29"),
        ("RETENTION_SENSOR_INTERVAL_S", "hourly"),
        ("POSTGRES_SSLMODE", "verify"),
        ("ALERT_WEBHOOK_TIMEOUT_S", "0"),
        ("ALERT_SMTP_PORT", "smtp"),
        ("ALERT_SMTP_TLS", "ssl"),
        ("ALERT_SMTP_TIMEOUT_S", "x"),
        ("ALERT_CHECK_SENSOR_INTERVAL_S", "5"),
        ("ALERT_CHECK_REPEAT_S", "-1"),
        ("ALERT_CHECK_LOOKBACK_S", "1d"),
        ("DAGSTER_PORT", "http"),
        ("BASE_BACKUP_MAX_RATE", "1G"),
        ("KAFKA_EXPORT_MAX_BYTES_PER_S", "fast"),
        ("OFFSITE_S3_MAX_BYTES_PER_S", "10 MB/s"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(name, value):
    with pytest.raises(ConfigurationError) as err:
        load_settings({name: value})
    message = str(err.value)
    assert "\n" not in message and message.startswith(name) and repr(value) in message
    assert isinstance(err.value, ValueError)  # callers that caught ValueError still do


@pytest.mark.parametrize("name", ["BACKUP_ENCRYPTION_KEYS", "OFFSITE_ENCRYPTION_KEYS"])
@pytest.mark.parametrize(
    "value",
    [
        *(SECRET, KEY, f"k1:{SECRET}", f"k1:{base64.b64encode(SECRET.encode()).decode()}", f"k1:{KEY},{SECRET}", " , "),
        # Key and id the wrong way round, a key split by a stray colon, a key without its last characters.
        *(f"{KEY}:k1", f"k1:{KEY[:20]}:{KEY[20:]}", f"k1:{KEY[:-4]}"),
    ],
)
def test_a_malformed_secret_is_named_but_never_shown(name, value):
    with pytest.raises(ConfigurationError) as err:
        load_settings({name: value})
    message = str(err.value)
    assert "\n" not in message and message.startswith(name) and "malformed" in message
    assert SECRET not in message and KEY not in message
    for part in re.split(r"[,:\s]+", value):
        assert len(part) < 4 or part not in message


def test_secrets_never_appear_in_a_repr():
    env = {name: f"{SECRET}-{name}" for name in st.SECRET_VARIABLES}
    env.update(BACKUP_ENCRYPTION_KEYS=f"k1:{KEY}", OFFSITE_ENCRYPTION_KEYS=f"k1:{KEY}")
    env.update(ALERT_SMTP_TLS="starttls")  # a password is accepted only with TLS
    env.update(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_MECHANISM="PLAIN", KAFKA_SASL_USERNAME="u")
    text = repr(load_settings(env))
    assert SECRET not in text and KEY not in text


# --------------------------------------------------------------------------- README


def readme_variables() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration\n") :]
    section = section[: section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])]


def test_the_readme_table_lists_exactly_the_variables_of_the_module():
    listed = readme_variables()
    assert len(listed) == len(set(listed)), "a variable is listed twice"
    assert set(listed) == set(st.ENVIRONMENT_VARIABLES), (
        f"missing from README: {sorted(set(st.ENVIRONMENT_VARIABLES) - set(listed))}; "
        f"not in the settings package: {sorted(set(listed) - set(st.ENVIRONMENT_VARIABLES))}"
    )


# --------------------------------------------------------------------------- nobody else reads the environment

CHILD_ENV_BUILDERS = {
    ("child_env.py", "base_env"),  # the allowlist every child starts from (PATH, locale, TZ, TMPDIR)
}
"""Functions that copy part of the process environment for a child process: not reading settings."""


def environment_reads(path: Path) -> Iterator[tuple[str, int]]:
    """(enclosing function, line) of every os.environ / os.getenv / environ use in a module."""
    tree = ast.parse(path.read_text(), str(path))
    parents: dict[ast.AST, ast.AST] = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}

    def enclosing(node: ast.AST) -> str:
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node.name
        return "<module>"

    for node in ast.walk(tree):
        hit = (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "environb", "getenv", "getenvb")
        ) or (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ("environ", "environb", "getenv", "getenvb") for a in node.names)
        )
        if hit:
            yield enclosing(node), node.lineno


def test_only_settings_reads_the_environment():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("settings/"):
            continue
        for function, line in environment_reads(path):
            if (rel, function) not in CHILD_ENV_BUILDERS:
                offenders.append(f"{rel}:{line} in {function}")
    assert offenders == [], "read the environment in the settings package and pass the settings in: " + ", ".join(offenders)


def test_the_allowed_child_environment_builders_exist():
    for rel, function in CHILD_ENV_BUILDERS:
        assert function in {f for f, _ in environment_reads(PACKAGE / rel)}, f"{rel}:{function} no longer copies the environment"


def test_tolerant_settings_raise_only_when_the_malformed_group_is_used():
    env = {"ALERT_SMTP_PORT": "abc", "OFFSITE_ENCRYPTION_KEYS": "not-a-key", "POSTGRES_PORT": "6543"}
    with pytest.raises(ConfigurationError, match="OFFSITE_ENCRYPTION_KEYS"):
        load_settings(env)  # strict, as the Dagster loaders use it: the first bad variable fails the load
    s = load_settings(env, tolerant=True)
    assert s.postgres.port == 6543 and s.repository.root == "backups"
    with pytest.raises(ConfigurationError, match="ALERT_SMTP_PORT"):
        s.alerting.sink_arguments()
    with pytest.raises(ConfigurationError, match="OFFSITE_ENCRYPTION_KEYS") as caught:
        _ = s.offsite.configured
    assert "not-a-key" not in str(caught.value)


def test_a_cli_command_is_not_refused_over_a_variable_it_never_reads(tmp_path):
    """A restore at 3 a.m. must not fail because an alert port is malformed; a command that needs it does."""
    env = {"PATH": "/usr/bin:/bin", "BACKUP_ROOT": str(tmp_path / "backups"), "ALERT_SMTP_PORT": "abc"}
    listed = subprocess.run(
        [sys.executable, "-m", "auction_backup_pipelines.cli", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    bad_root = {**env, "BACKUP_COMPRESSION": "lzma"}
    refused = subprocess.run(
        [sys.executable, "-m", "auction_backup_pipelines.cli", "list"], env=bad_root, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 1 and "BACKUP_COMPRESSION" in refused.stderr and "Traceback" not in refused.stderr

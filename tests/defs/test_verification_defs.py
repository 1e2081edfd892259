"""The weekly verification job restores every backup into scratch targets, and catches damage."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, build_sensor_context

from auction_backup_pipelines.defs.alerting.resources import AlertingResource
from auction_backup_pipelines.defs.alerting.sensors import build_check_failure_alert_sensor
from auction_backup_pipelines.defs.shared.resources import (
    BackupRepositoryResource,
    KafkaResource,
    PostgresResource,
    RedisResource,
)
from auction_backup_pipelines.defs.verification.checks import build_restore_checks
from auction_backup_pipelines.kafka.records import admin_client
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.settings import AUCTION_TOPICS, KafkaSettings, RedisSettings
from tests.conftest import running_wal_receiver
from tests.dagster_defs import defs
from tests.ops.test_notify import PASSWORD, SMTP_TLS, SmtpServer, WebhookServer  # real local sinks

pytestmark = pytest.mark.integration


@pytest.fixture
def resources(pg_settings, tmp_path):
    rd, kf = RedisSettings.from_env(), KafkaSettings.from_env()
    return {
        "postgres": PostgresResource(
            host=pg_settings.host,
            port=pg_settings.port,
            dbname=pg_settings.dbname,
            user=pg_settings.user,
            password=pg_settings.password,
        ),
        "redis": RedisResource(host=rd.host, port=rd.port),
        "kafka": KafkaResource(bootstrap_servers=kf.bootstrap_servers, topics=list(AUCTION_TOPICS)),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }


@pytest.fixture
def receiver(pg_settings, resources, tmp_path):
    with running_wal_receiver(pg_settings, resources["backup_repo"].repository(), tmp_path / "spool") as rx:
        yield rx


def _checks(result) -> dict[str, object]:
    return {f"{'/'.join(e.asset_key.path)}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_weekly_job_passes_on_healthy_backups_then_catches_damage(resources, receiver, tmp_path, on_time_day):
    (tmp_path / "dagster").mkdir()
    # the SQLite storage of `dagster dev`, where the alert sensor must work
    instance = DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster"))
    for job in ("postgres_backup_job", "redis_backup_job", "kafka_backup_job"):
        run = defs.resolve_job_def(job).execute_in_process(
            partition_key=on_time_day.isoformat(), resources=resources, instance=instance
        )
        assert run.success, job

    weekly = defs.resolve_job_def("weekly_verification_job")
    healthy = _checks(weekly.execute_in_process(resources=resources, instance=instance))
    expected = {
        "postgres/logical_dump:dump_restores",
        "postgres/base_backup:pitr_restores",
        "redis/snapshot:snapshot_restores",
        *(f"kafka/topic_export/{t}:export_restores" for t in AUCTION_TOPICS),
    }
    assert set(healthy) == expected
    failed = {k: e.description for k, e in healthy.items() if not e.passed}
    assert failed == {}
    assert healthy["postgres/logical_dump:dump_restores"].metadata["rows_compared"].value > 0
    assert healthy["postgres/base_backup:pitr_restores"].metadata["tables_compared"].value >= 4
    counts = {t: healthy[f"kafka/topic_export/{t}:export_restores"].metadata["messages_compared"].value for t in AUCTION_TOPICS}
    assert all(n >= 1 for n in counts.values()), counts
    scratch_topics = {healthy[f"kafka/topic_export/{t}:export_restores"].metadata["scratch_topic"].value for t in AUCTION_TOPICS}
    remaining = admin_client(resources["kafka"].bootstrap_servers).list_topics(timeout=30).topics
    assert scratch_topics and not scratch_topics & set(remaining)  # scratch topics are deleted afterwards

    # The daily job's freshness check now sees a verification younger than 8 days.
    again = defs.resolve_job_def("redis_backup_job").execute_in_process(
        partition_key=on_time_day.isoformat(), resources=resources, instance=instance
    )
    assert _checks(again)["redis/snapshot:verified_recently"].passed

    # Damage: one flipped byte in the dump, a truncated Redis snapshot.
    repo = resources["backup_repo"].repository()
    dump = repo.latest("postgres", "logical_dump")
    path = repo.backend.root / dump.prefix / dump.file(pg.DUMP_FILE).key
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    snap = repo.latest("redis", "snapshot")
    entry = snap.files[0]
    spath = repo.backend.root / snap.prefix / entry.key
    spath.write_bytes(spath.read_bytes()[: entry.stored_size // 2])

    damaged = _checks(weekly.execute_in_process(resources=resources, instance=instance, raise_on_error=False))
    for key in ("postgres/logical_dump:dump_restores", "redis/snapshot:snapshot_restores"):
        assert not damaged[key].passed
        assert damaged[key].severity.value == "ERROR"
        assert "corrupt or truncated" in damaged[key].description
    assert damaged["postgres/base_backup:pitr_restores"].passed  # untouched backups still verify
    with pg_client.connect(resources["postgres"].settings(), dbname="postgres") as admin:
        leftovers = admin.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'verify\\_%'").fetchone()[0]
    assert leftovers == 0  # scratch databases are always dropped

    # The failed checks reach the operator: one webhook post and one email per failed check.
    with WebhookServer() as hook, SmtpServer() as mail:
        alerting = AlertingResource(
            webhook_url=hook.url(),
            smtp_host="127.0.0.1",
            smtp_port=mail.port,
            smtp_from="backup@auctionflow.test",
            smtp_to=["sre@auctionflow.test"],
            smtp_user="alerts",
            smtp_password=PASSWORD,
            **SMTP_TLS,
            webhook_allow_http=True,  # the loopback test receiver
        )
        context = build_sensor_context(instance=instance, cursor=None, resources={"alerting": alerting}, definitions=defs)
        build_check_failure_alert_sensor(60)(context)
        posts = [hook.next_post() for _ in range(2)]
        mails = [mail.next_mail() for _ in range(2)]
    texts = " ".join(json.dumps(p.json()) for p in posts)
    mail_texts = " ".join(m.message["Subject"] + m.message.get_content() for m in mails)
    for name in ("dump_restores", "snapshot_restores"):
        assert name in texts and name in mail_texts
    assert "corrupt or truncated" in texts and on_time_day.isoformat() in texts


def test_each_restore_check_needs_only_its_own_systems_resource():
    """An unset PostgreSQL password must not stop the Redis or Kafka restore checks from starting."""
    needs = {
        key.to_user_string(): set(check.required_resource_keys) - {"io_manager"}
        for check in build_restore_checks(("bid-events",))
        for key in check.check_keys
    }
    assert needs == {
        "postgres/logical_dump:dump_restores": {"backup_repo", "postgres"},
        "postgres/base_backup:pitr_restores": {"backup_repo", "postgres"},
        "redis/snapshot:snapshot_restores": {"backup_repo"},
        "kafka/topic_export/bid-events:export_restores": {"backup_repo", "kafka"},
    }

"""The Redis and Kafka restore jobs refuse a target that is not allowlisted, in one line and before
connecting; nothing in a run's config widens the list (not even the `redis` resource's fields)."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import DagsterInstance

from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, RedisResource
from tests.dagster_defs import defs
from tests.ops.loopback_listener import Listener
from tests.ops.synthetic_backups import kafka_topic_day, redis_snapshot

DAY = dt.date(2026, 11, 30)
PRODUCTION = "production-password-for-redis-only"
RESTORE = "restore-password-for-targets"


@pytest.fixture
def environment(monkeypatch):
    """set(**variables): the environment the code location reads (settings are cached per process)."""

    def set_environment(**variables: str) -> None:
        base = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "7001", "REDIS_PASSWORD": PRODUCTION}
        base |= {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092", "RESTORE_ALLOWED_REDIS": "", "RESTORE_ALLOWED_KAFKA": ""}
        base |= {"RESTORE_REDIS_USERNAME": "restorer", "RESTORE_REDIS_PASSWORD": RESTORE}
        for name, value in (base | variables).items():
            monkeypatch.setenv(name, value)
        current_settings.cache_clear()

    yield set_environment
    current_settings.cache_clear()  # the next user reads the environment as it is restored


def run(job_name: str, op: str, config: dict, resources: dict):
    result = defs.resolve_job_def(job_name).execute_in_process(
        run_config={"ops": {op: {"config": config}}},
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "\n" not in description
    return description


def test_redis_restore_job_refuses_a_target_that_is_not_allowlisted(environment, tmp_path):
    environment(RESTORE_ALLOWED_REDIS="10.0.0.7:7001")
    repo = BackupRepositoryResource(root=str(tmp_path / "backups"))
    redis_snapshot(repo.repository(), DAY)
    with Listener() as target:
        # A run may override a resource's fields: pointing `redis` at the target must not make it "the source".
        posing = RedisResource(host="127.0.0.1", port=target.port, password=PRODUCTION)
        config = {"date": DAY.isoformat(), "target": target.address}
        description = run("redis_restore_job", "restore_redis_snapshot", config, {"backup_repo": repo, "redis": posing})
        assert target.pending() == 0, "the refused restore connected to its target"
    assert description.startswith(f"restore target {target.address} is neither REDIS_HOST:REDIS_PORT (127.0.0.1:7001)")
    assert "RESTORE_ALLOWED_REDIS" in description and description.endswith("Nothing was sent")


def test_redis_restore_job_sends_an_allowlisted_target_the_restore_credentials(environment, tmp_path):
    repo = BackupRepositoryResource(root=str(tmp_path / "backups"))
    redis_snapshot(repo.repository(), DAY)
    with Listener() as target:
        environment(RESTORE_ALLOWED_REDIS=target.address)
        target.serve_one()
        description = run(
            "redis_restore_job",
            "restore_redis_snapshot",
            {"date": DAY.isoformat(), "target": target.address},
            {"backup_repo": repo},
        )
        assert target.served() == [b"AUTH", b"restorer", RESTORE.encode()]
    assert f"Redis at {target.address}" in description and PRODUCTION not in description


def test_kafka_restore_job_refuses_a_bootstrap_that_is_not_allowlisted(environment, tmp_path):
    environment(RESTORE_ALLOWED_KAFKA="10.0.0.7:9092")
    repo = BackupRepositoryResource(root=str(tmp_path / "backups"))
    kafka_topic_day(repo.repository(), "bids", DAY)
    with Listener() as target:
        config = {"from_day": DAY.isoformat(), "to_day": DAY.isoformat(), "target_bootstrap": target.address}
        description = run("kafka_restore_job", "restore_kafka_topics", config, {"backup_repo": repo})
        assert target.pending() == 0, "the refused restore connected to its target"
    assert description.startswith(f"restore target bootstrap {target.address} is neither in KAFKA_BOOTSTRAP_SERVERS")
    assert "RESTORE_ALLOWED_KAFKA" in description and description.endswith("Nothing was sent")

"""docker-compose.yml and the instance configs agree with the settings the code reads.

No container engine runs here, so the compose file is checked for consistency instead of
being started: every service the architecture names exists, volumes are declared, and the
environment handed to the code location matches settings.py's defaults and the services."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance

from auction_backup_pipelines.settings import AUCTION_TOPICS, KafkaSettings, PostgresSettings, RedisSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_of_the_architecture_exist(compose):
    assert {"postgres", "redis", "kafka", "dagster_storage", "code_location", "webserver", "daemon"} <= set(compose["services"])


def test_every_mounted_named_volume_is_declared(compose):
    declared = set(compose["volumes"])
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith(("/", ".")):
                assert source in declared, f"{name} mounts undeclared volume {source}"


def test_postgres_archives_wal_into_its_own_volume(compose):
    pg = compose["services"]["postgres"]
    assert "wal_level=replica" in pg["command"] and "archive_mode=on" in pg["command"]
    assert "/wal_archive/%f" in pg["command"]
    assert "wal_archive:/wal_archive" in pg["volumes"]


def test_code_location_environment_matches_settings_and_services(compose):
    services = compose["services"]
    env = services["code_location"]["environment"]
    defaults_pg, defaults_redis = PostgresSettings(), RedisSettings()
    assert env["POSTGRES_DB"] == defaults_pg.dbname == services["postgres"]["environment"]["POSTGRES_DB"]
    assert env["POSTGRES_USER"] == defaults_pg.user == services["postgres"]["environment"]["POSTGRES_USER"]
    assert env["POSTGRES_HOST"] in services and int(env["POSTGRES_PORT"]) == defaults_pg.port
    assert int(env["REDIS_PORT"]) == defaults_redis.port
    assert services["redis"]["command"][services["redis"]["command"].index("--port") + 1] == env["REDIS_PORT"]
    kafka_host, kafka_port = env["KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert kafka_host in services
    assert services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{kafka_host}:{kafka_port}"
    assert kafka_port == KafkaSettings().bootstrap_servers.split(":")[1]
    assert (
        env["DAGSTER_PG_HOST"] in services and env["DAGSTER_PG_DB"] == services["dagster_storage"]["environment"]["POSTGRES_DB"]
    )
    assert "auction_backups:" + env["BACKUP_ROOT"] in services["code_location"]["volumes"]
    # Secrets are never written in the file, only required from the environment.
    assert env["POSTGRES_PASSWORD"].startswith("${") and env["DAGSTER_PG_PASSWORD"].startswith("${")
    assert len(AUCTION_TOPICS) == 4


def test_run_launcher_passes_every_backup_setting_to_run_containers(compose):
    deploy = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    passed = set(deploy["run_launcher"]["config"]["env_vars"])
    needed = set(compose["services"]["code_location"]["environment"])
    assert needed <= passed, needed - passed
    assert deploy["run_launcher"]["class"] == "DockerRunLauncher"


def test_local_instance_queues_runs_with_one_run_per_system(tmp_path):
    shutil.copy(ROOT / "instance" / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        config = instance.get_concurrency_config()
        [limit] = config.run_queue_config.tag_concurrency_limits
        assert (limit["key"], limit["limit"], limit["value"]) == ("auction_backup/system", 1, {"applyLimitPerUniqueValue": True})
        assert config.pool_config.default_pool_limit == 1
    finally:
        instance.dispose()

"""A run's config cannot point the bound resources elsewhere: the Launchpad may override any field
of a resource, and a backup that followed would send the production password to the host named.

The resources `build_resources` binds refuse any setting that differs from the environment's, in
one line and before connecting; the base classes that tests build for scratch targets are not pinned.
"""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance, Failure

from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.resources import (
    VARIABLES,
    BackupRepositoryResource,
    KafkaResource,
    OffsiteRepositoryResource,
    PostgresResource,
    RedisResource,
    build_resources,
)
from auction_backup_pipelines.errors import RefusedError
from tests.dagster_defs import defs
from tests.ops.loopback_listener import Listener

DEFS_DIR = Path(__file__).resolve().parents[2] / "auction_backup_pipelines" / "defs"
BASES = {
    "postgres": PostgresResource,
    "redis": RedisResource,
    "kafka": KafkaResource,
    "backup_repo": BackupRepositoryResource,
    "offsite_repo": OffsiteRepositoryResource,
}
SECRET = "attacker-chosen-value"
OVERRIDES = [
    *(("postgres", f, v) for f, v in [("host", "127.0.0.2"), ("port", 1), ("dbname", "other"), ("user", "other")]),
    *(("postgres", f, v) for f, v in [("password", SECRET), ("bin_dir", "/srv/attacker/bin")]),
    *(("postgres", f, v) for f, v in [("sslmode", "disable"), ("sslrootcert", "/srv/attacker/ca.crt")]),
    ("postgres", "base_backup_max_rate", "1048576"),
    *(("redis", f, v) for f, v in [("host", "127.0.0.2"), ("port", 1), ("username", "other"), ("password", SECRET)]),
    ("redis", "data_dir", "/srv/attacker/dir"),
    *(("redis", f, v) for f, v in [("tls", True), ("tls_ca_file", "/srv/attacker/ca.crt")]),
    *(("redis", f, v) for f, v in [("tls_cert_file", "/srv/attacker/c.crt"), ("tls_key_file", "/srv/attacker/c.key")]),
    *(("kafka", f, v) for f, v in [("bootstrap_servers", "127.0.0.2:9092"), ("topics", ["other-topic"])]),
    *(("kafka", f, v) for f, v in [("security_protocol", "SASL_PLAINTEXT"), ("ssl_ca_file", "/srv/attacker/ca.crt")]),
    *(("kafka", f, v) for f, v in [("sasl_mechanism", "PLAIN"), ("sasl_username", "other"), ("sasl_password", SECRET)]),
    ("kafka", "export_max_bytes_per_s", 1 << 40),
    *(("backup_repo", f, v) for f, v in [("root", "/srv/attacker/dir"), ("compression", "none")]),
    *(("backup_repo", f, v) for f, v in [("encryption_key_file", "/srv/attacker/key"), ("encryption_keys", SECRET)]),
    *(("offsite_repo", f, v) for f, v in [("bucket", "other"), ("prefix", "other/"), ("region", "other-1")]),
    *(("offsite_repo", f, v) for f, v in [("endpoint_url", "http://127.0.0.2:9000"), ("compression", "none")]),
    *(("offsite_repo", f, v) for f, v in [("access_key_id", SECRET), ("secret_access_key", SECRET)]),
    *(("offsite_repo", f, v) for f, v in [("encryption_key_file", "/srv/attacker/key"), ("encryption_keys", SECRET)]),
    ("offsite_repo", "max_bytes_per_s", 1 << 40),
]


@pytest.fixture
def bound():
    """The resources as the code location binds them, from the settings the tests loaded."""
    return build_resources(current_settings())


def use(resource):
    """What every asset, check and op calls to get the resource's settings."""
    return resource.repository() if hasattr(resource, "repository") else resource.settings()


@pytest.mark.parametrize(("key", "field", "value"), OVERRIDES, ids=[f"{k}.{f}" for k, f, _ in OVERRIDES])
def test_a_bound_resource_refuses_any_changed_field(bound, key, field, value):
    if key not in bound:
        pytest.skip("OFFSITE_S3_BUCKET is not set: no offsite resource is bound")
    # As a run's config would: the field replaced, the EnvVar fields resolved from the environment.
    changed = bound[key].model_copy(update={field: value}).process_config_and_initialize()
    with pytest.raises(RefusedError) as refused:
        use(changed)
    message = str(refused.value)
    assert message.startswith(f"this run's config changes the {key} resource's {field} ({VARIABLES[key][field]}): ")
    assert "come from the environment the code location was loaded with, not from run config" in message
    assert message.endswith("Nothing was read or written" if key.endswith("_repo") else "Nothing was sent")
    assert "\n" not in message and SECRET not in message
    # Raised outside an op's `except BackupError`, it still fails the step with this line, never retried.
    assert isinstance(refused.value, Failure) and refused.value.description == message
    assert refused.value.allow_retries is False


def test_every_field_of_every_bound_resource_is_pinned_and_tried_here():
    for key, base in BASES.items():
        assert VARIABLES[key].keys() == base.model_fields.keys(), key
    assert {(k, f) for k, f, _ in OVERRIDES} == {(k, f) for k, names in VARIABLES.items() for f in names}


def test_bound_resources_hand_out_the_loaded_settings(bound):
    s = current_settings()
    assert bound["postgres"].process_config_and_initialize().settings() == s.postgres
    assert bound["redis"].process_config_and_initialize().settings() == s.redis
    assert bound["kafka"].process_config_and_initialize().settings() == s.kafka


def test_nothing_in_run_config_switches_the_pinning_off(bound):
    # The guard is the class build_resources picks, not a field: the config schema a run may fill is the base class's.
    for key, resource in bound.items():
        assert type(resource) is not BASES[key] and isinstance(resource, BASES[key])
        assert type(resource).model_fields.keys() == BASES[key].model_fields.keys()


def test_resources_built_for_scratch_targets_are_not_pinned(tmp_path):
    assert RedisResource(host="127.0.0.1", port=1).settings().port == 1
    assert KafkaResource(bootstrap_servers="127.0.0.1:1").settings().bootstrap_servers == "127.0.0.1:1"
    assert BackupRepositoryResource(root=str(tmp_path / "backups")).repository().list("redis", "snapshot") == []


def test_no_definition_reads_a_resource_field_around_the_guard():
    """The guard sits in settings() and repository(): reading `redis.port` (or `context.resources.redis.port`)
    directly would hand a run's override to an engine unchecked."""
    fields = {key: set(base.model_fields) for key, base in BASES.items()}
    found = []
    for path in sorted(DEFS_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value
            if isinstance(owner, ast.Name):
                key = owner.id
            elif isinstance(owner, ast.Attribute) and isinstance(owner.value, (ast.Name, ast.Attribute)):
                parent = owner.value
                key = owner.attr if (parent.id if isinstance(parent, ast.Name) else parent.attr) == "resources" else ""
            else:
                continue
            if node.attr in fields.get(key, ()):
                found.append(f"{path.relative_to(DEFS_DIR)}:{node.lineno} {key}.{node.attr}")
    assert found == []


def run_redis_backup(run_config: dict, tmp_path, day: dt.date):
    """The loaded code location's redis_backup_job, into a scratch repository."""
    return defs.resolve_job_def("redis_backup_job").execute_in_process(
        run_config=run_config,
        partition_key=day.isoformat(),
        resources={"backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups"))},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def step_failure(result) -> str:
    assert not result.success
    [failure] = result.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert "\n" not in description
    return description


def test_a_backup_run_pointing_redis_at_another_host_fails_before_connecting(tmp_path, on_time_day):
    with Listener() as listener:
        config = {"resources": {"redis": {"config": {"host": "127.0.0.1", "port": listener.port}}}}
        description = step_failure(run_redis_backup(config, tmp_path, on_time_day))
        assert listener.pending() == 0, "the refused backup connected to the host the run config named"
    # (and data_dir, where REDIS_DATA_DIR is set: fields a run's config leaves out get the class defaults)
    assert description.startswith("this run's config changes the redis resource's port (REDIS_PORT)")
    assert description.endswith("Nothing was sent")
    assert BackupRepositoryResource(root=str(tmp_path / "backups")).repository().latest("redis", "snapshot") is None


def test_a_backup_run_pointing_postgres_at_another_host_fails_before_connecting(tmp_path, on_time_day):
    with Listener() as listener:
        result = defs.resolve_job_def("postgres_backup_job").execute_in_process(
            run_config={"resources": {"postgres": {"config": {"port": listener.port}}}},
            partition_key=on_time_day.isoformat(),
            resources={"backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups"))},
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert listener.pending() == 0, "the refused backup connected to the host the run config named"
    assert not result.success
    descriptions = [e.step_failure_data.user_failure_data.description for e in result.get_step_failure_events()]
    assert len(descriptions) == 2  # the dump and the base backup
    # Dagster fills the fields a run's config leaves out with the class defaults (host: localhost), not the bound values.
    assert all(d.startswith("this run's config changes the postgres resource's host (POSTGRES_HOST), port") for d in descriptions)


def test_a_backup_run_moving_the_repository_root_fails_before_writing(tmp_path, on_time_day):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = defs.resolve_job_def("redis_backup_job").execute_in_process(
        run_config={"resources": {"backup_repo": {"config": {"root": str(elsewhere)}}}},
        partition_key=on_time_day.isoformat(),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    description = step_failure(result)  # repository() is called outside the asset's `except BackupError`
    assert description.startswith("this run's config changes the backup_repo resource's root (BACKUP_ROOT): ")
    assert description.endswith("Nothing was read or written")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.integration
@pytest.mark.parametrize("restated", [False, True], ids=["no-run-config", "every-field-restated"])
def test_a_backup_run_with_the_loaded_settings_still_backs_up(restated, tmp_path, on_time_day):
    rd = current_settings().redis
    # A run's config replaces the whole resource (a field it leaves out gets the class default), so a
    # restatement names every field the environment sets.
    fields = {"host": rd.host, "port": rd.port, "username": rd.username, "data_dir": rd.data_dir}
    result = run_redis_backup({"resources": {"redis": {"config": fields}}} if restated else {}, tmp_path, on_time_day)
    assert result.success
    assert BackupRepositoryResource(root=str(tmp_path / "backups")).repository().get("redis", "snapshot", on_time_day.isoformat())

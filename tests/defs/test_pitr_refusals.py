"""The PITR job refuses a hostile `target_dir` from its run config in one line, having created nothing."""

from __future__ import annotations

import secrets
import shutil

import pytest
from dagster import DagsterInstance

from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, PostgresResource
from auction_backup_pipelines.postgres.logical_day import scratch_dir
from tests.dagster_defs import defs


@pytest.fixture
def parent():
    """The parent of the target, writable by the postgres user a shell would run as."""
    folder = scratch_dir("pitr-job-")
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_pitr_job_refuses_a_target_dir_a_shell_would_run(pg_settings, tmp_path, parent):
    marker = f"PWNED_{secrets.token_hex(3)}"
    resources = {
        "postgres": PostgresResource(
            host=pg_settings.host,
            port=pg_settings.port,
            dbname=pg_settings.dbname,
            user=pg_settings.user,
            password=pg_settings.password,
        ),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "backups")),
    }
    config = {"target_time": "2026-01-01 00:00:00", "target_dir": f"{parent}/x$(touch {parent}/{marker})x"}
    run = defs.resolve_job_def("postgres_pitr_job").execute_in_process(
        run_config={"ops": {"pitr_restore": {"config": config}}},
        resources=resources,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not run.success
    [failure] = run.get_step_failure_events()
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("target folder ") and "contains '$', which a shell expands" in description
    assert description.endswith("Nothing was created.") and "\n" not in description
    assert list(parent.iterdir()) == []

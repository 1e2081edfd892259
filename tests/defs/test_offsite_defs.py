"""The offsite copy asset against the stack's real S3-compatible server (S3Proxy)."""

from __future__ import annotations

import os
import secrets

import pytest
from dagster import AssetKey, DagsterInstance, materialize

from auction_backup_pipelines.defs.offsite.assets import offsite_copy_asset
from auction_backup_pipelines.defs.shared.keys import REDIS_SNAPSHOT_KEY as SNAPSHOT_KEY
from auction_backup_pipelines.defs.shared.resources import BackupRepositoryResource, OffsiteRepositoryResource, RedisResource
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.settings import RedisSettings
from tests.dagster_defs import PARTITIONS, redis_snapshot

pytestmark = pytest.mark.integration


def test_offsite_copy_is_verified_there_idempotent_and_missing_days_show(tmp_path):
    env = os.environ
    offsite = OffsiteRepositoryResource(
        bucket=env["OFFSITE_S3_BUCKET"],
        prefix=f"test-{secrets.token_hex(4)}",
        endpoint_url=env["OFFSITE_S3_ENDPOINT_URL"],
        region=env.get("OFFSITE_S3_REGION", ""),
        access_key_id=env["OFFSITE_S3_ACCESS_KEY_ID"],
        secret_access_key=env["OFFSITE_S3_SECRET_ACCESS_KEY"],
    )
    rd = RedisSettings.from_env()
    resources = {
        "redis": RedisResource(host=rd.host, port=rd.port),
        "backup_repo": BackupRepositoryResource(root=str(tmp_path / "b")),
        "offsite_repo": offsite,
    }
    copy = offsite_copy_asset(SNAPSHOT_KEY, PARTITIONS)
    day = capture.default_partition().isoformat()
    instance = DagsterInstance.ephemeral()

    first = materialize([redis_snapshot, copy], partition_key=day, resources=resources, instance=instance)
    [mat] = first.asset_materializations_for_node("offsite__redis__snapshot")
    assert mat.metadata["status"].value == "copied"
    assert mat.metadata["bytes_verified"].value > 0
    local = resources["backup_repo"].repository().get("redis", "snapshot", day)
    remote = offsite.repository().get("redis", "snapshot", day)
    assert remote.backup_id == local.backup_id and remote.files == local.files

    again = materialize([copy], partition_key=day, resources=resources, instance=instance)
    [mat2] = again.asset_materializations_for_node("offsite__redis__snapshot")
    assert mat2.metadata["status"].value == "already present"

    # A day never copied offsite is a missing partition of the offsite asset.
    status = instance.get_materialized_partitions(AssetKey(["offsite", "redis", "snapshot"]))
    assert status == {day}

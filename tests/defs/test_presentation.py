"""What an operator reads in the catalog: owners and tags on every asset, descriptions without
source-file citations, every schedule and sensor described, readable sizes, times and locations."""

from __future__ import annotations

import datetime as dt
import re

from auction_backup_pipelines.defs.shared.labels import ARTIFACT, COPY, OWNER, SYSTEM, TOPIC
from auction_backup_pipelines.defs.shared.presentation import human_bytes, iso_utc, object_url
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.s3 import S3Backend
from tests.dagster_defs import defs

SOURCE_CITATION = re.compile(r"\b[\w/]+\.(py|md)\b")

DAGSTER_MADE = {"default_automation_condition_sensor"}
"""Made by Dagster itself for assets and checks with an automation condition; it takes no description."""


def test_every_asset_has_the_owner_its_system_and_artifact_tags_and_a_description():
    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) >= 10
    for spec in specs:
        name = spec.key.to_user_string()
        assert OWNER in spec.owners, name
        assert spec.tags[SYSTEM] and spec.tags[ARTIFACT], name
        assert spec.description and not SOURCE_CITATION.search(spec.description), (name, spec.description)
    by_key = {s.key.to_user_string(): s.tags for s in specs}
    assert (by_key["postgres/base_backup"][SYSTEM], by_key["postgres/base_backup"][ARTIFACT]) == ("postgres", "base_backup")
    export = next(k for k in by_key if k.startswith("kafka/topic_export/"))
    assert by_key[export][TOPIC] == export.rsplit("/", 1)[1] and COPY not in by_key[export]
    offsite = [tags for key, tags in by_key.items() if key.startswith("offsite/")]
    assert all(t[COPY] == "offsite" and t[SYSTEM] in ("postgres", "redis", "kafka") for t in offsite)


def test_every_check_schedule_and_sensor_is_described_for_operators():
    repo = defs.get_repository_def()
    for checks in repo.asset_checks_defs_by_key.values():
        for spec in checks.check_specs:
            assert spec.description and not SOURCE_CITATION.search(spec.description), spec.key.to_user_string()
    for schedule in repo.schedule_defs:
        assert schedule.description, schedule.name
    for sensor in repo.sensor_defs:
        if sensor.name not in DAGSTER_MADE:
            assert sensor.description, sensor.name


def test_sizes_times_and_locations_read_well():
    assert human_bytes(512) == "512 bytes"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(12_897_485) == "12.3 MiB"
    assert human_bytes(3 * 1024**4) == "3.0 TiB"
    assert iso_utc("2026-12-02T05:00:00.123456+01:00") == "2026-12-02T04:00:00Z"
    assert iso_utc(dt.datetime(2026, 12, 2, 4, tzinfo=dt.UTC)) == "2026-12-02T04:00:00Z"
    assert iso_utc("2026-12-02T04:00:00Z") == "2026-12-02T04:00:00Z"
    assert iso_utc("not a time") == "not a time"


def test_manifest_locations_are_urls_of_the_backend(tmp_path):
    local = Repository.local(str(tmp_path / "repo"))
    url = object_url(local, "postgres/logical_dump/2026-12-01/x/manifest.json")
    assert url == (tmp_path / "repo" / "postgres/logical_dump/2026-12-01/x/manifest.json").as_uri()
    assert url.startswith("file:///")
    s3 = Repository(S3Backend("auction-backups", "site-a", endpoint_url="http://user:secret@127.0.0.1:9"))
    assert object_url(s3, "redis/snapshot/2026-12-01/x/manifest.json") == (
        "s3://auction-backups/site-a/redis/snapshot/2026-12-01/x/manifest.json"
    )

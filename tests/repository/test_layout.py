"""repository.layout: the one format and the one parser of every repository key."""

from __future__ import annotations

import datetime as dt

import pytest

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.layout import BackupRef, PartitionRef
from auction_backup_pipelines.repository.repository import Repository

DAY = dt.date(2026, 11, 20)
BID = "20261121T020000Z-a1b2c3"


@pytest.mark.parametrize(
    "system, artifact, path",
    [
        ("postgres", "logical_dump", ("postgres", "logical_dump")),
        ("postgres", "base_backup", ("postgres", "base_backup")),
        ("redis", "snapshot", ("redis", "snapshot")),
        ("kafka", "topic_export/bid-events", ("kafka", "topic_export", "bid-events")),
        ("kafka", "topic_export/2026-11-20", ("kafka", "topic_export", "2026-11-20")),  # a topic named like a day
    ],
)
def test_round_trip_and_asset_path(system, artifact, path):
    ref = BackupRef(system, artifact, DAY, BID)
    assert ref.key == str(ref) == f"{system}/{artifact}/2026-11-20/{BID}"
    assert BackupRef.parse(ref.key) == ref
    assert ref.asset_path == layout.asset_path(system, artifact) == path
    assert layout.artifact_from_asset_path(list(path)) == (system, artifact)
    assert layout.artifact_key(system, artifact) == f"{system}/{artifact}"
    assert ref.manifest_key == f"{ref.key}/manifest.json"
    assert ref.file_key("bid-events.records.zst") == f"{ref.key}/bid-events.records.zst"
    assert layout.parse_file_key(ref.manifest_key) == (ref, "manifest.json")
    assert ref.owns(ref.manifest_key) and not ref.owns(ref.key + "x/manifest.json")
    part = ref.partition_ref
    assert part == PartitionRef(system, artifact, DAY) and part.backup(BID) == ref
    assert part.key == part.lock_name == f"{system}/{artifact}/2026-11-20"
    assert part.pin_key == f"{part.key}/PINNED" and layout.parse_pin_key(part.pin_key) == part


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "not a backup key"),
        ("redis/snapshot/2026-11-20", "not a backup key"),  # no backup_id
        (f"redis/snapshot/{BID}", "not a backup key"),  # no day
        (f"redis/snapshot/2026-13-01/{BID}", "not a day"),
        (f"redis/snapshot/20261120/{BID}", "not a day"),
        ("redis/snapshot/2026-11-20/PINNED", "invalid backup_id"),
        ("redis/snapshot/2026-11-20/20261121T020000Z-XYZ", "invalid backup_id"),
        (f"redis/snapshot/2026-11-20/{BID}/manifest.json", "not a day"),  # a file key is not a backup key
        (f"/snapshot/2026-11-20/{BID}", "invalid system"),
        (f"redis//2026-11-20/{BID}", "invalid artifact"),
        (f"kafka/topic_export//2026-11-20/{BID}", "invalid artifact"),
        (f"kafka/../x/2026-11-20/{BID}", "invalid artifact"),
        (f".locks/snapshot/2026-11-20/{BID}", "invalid system"),
    ],
)
def test_malformed_keys_are_refused_in_one_line(text, match):
    with pytest.raises(ConfigurationError, match=match) as err:
        BackupRef.parse(text)
    assert "\n" not in str(err.value) and repr(text) in str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI reports it as one line


@pytest.mark.parametrize(
    "args, match",
    [
        (("redis", "snapshot", "2026-11-20", BID), "invalid day"),  # a day is a date, not text
        (("redis", "snapshot", dt.datetime(2026, 11, 20), BID), "invalid day"),
        (("red/is", "snapshot", DAY, BID), "invalid system"),
        (("redis", "", DAY, BID), "invalid artifact"),
        (("redis", "snapshot/", DAY, BID), "invalid artifact"),
        (("redis", ".hidden", DAY, BID), "invalid artifact"),
        (("redis", "snapshot", DAY, "latest"), "invalid backup_id"),
    ],
)
def test_a_ref_cannot_be_built_from_bad_parts(args, match):
    with pytest.raises(ConfigurationError, match=match):
        BackupRef(*args)


def test_new_backup_ids_have_the_format_the_parser_expects():
    started = dt.datetime(2026, 11, 21, 2, 0, 5, tzinfo=dt.UTC)
    a, b = (BackupRef.new("kafka", "topic_export/bid-events", DAY, started) for _ in range(2))
    assert a.backup_id.startswith("20261121T020005Z-") and a.backup_id != b.backup_id
    assert BackupRef.parse(a.key) == a


def test_keys_that_are_not_pins_or_backup_files():
    assert layout.parse_pin_key("redis/snapshot/PINNED") is None
    assert layout.parse_pin_key("redis/snapshot/2026-11-20/PINNED.tmp") is None
    assert layout.parse_pin_key(f"redis/snapshot/2026-11-20/{BID}/PINNED") is None  # a file named PINNED
    assert layout.parse_pin_key("kafka/topic_export/2026-11-19/2026-11-20/PINNED") == PartitionRef(
        "kafka", "topic_export/2026-11-19", DAY
    )
    for key in (
        "postgres/wal/00000001/000000010000000000000003.zst",
        "postgres/wal_heartbeat.json",
        "redis/snapshot/2026-11-20/PINNED",
        "manifest.json",
    ):
        assert layout.parse_file_key(key) is None
        assert layout.parse_pin_key(key) is None or key.endswith("PINNED")


def test_listing_prefixes():
    assert layout.backups_prefix() == ""
    assert layout.backups_prefix("kafka") == "kafka/"
    assert layout.backups_prefix("kafka", "topic_export/bid-events") == "kafka/topic_export/bid-events/"
    assert layout.backups_prefix("kafka", "topic_export/bid-events", DAY) == "kafka/topic_export/bid-events/2026-11-20/"
    with pytest.raises(ConfigurationError, match="needs an artifact"):
        layout.backups_prefix("kafka", None, DAY)
    with pytest.raises(ConfigurationError, match="invalid artifact"):
        layout.backups_prefix("kafka", "../x")


def test_asset_paths_need_an_artifact():
    with pytest.raises(ConfigurationError, match="names no artifact"):
        layout.artifact_from_asset_path(["kafka"])


def test_wal_area_keys_are_unchanged():
    seg = "000000010000000000000003"
    assert layout.wal_data_key(seg) == f"postgres/wal/00000001/{seg}.zst"
    assert layout.wal_record_key(seg + ".partial") == f"postgres/wal/00000001/{seg}.partial.json"
    assert layout.wal_record_key("00000002.history") == "postgres/wal/history/00000002.history.json"
    assert layout.is_wal_record_key(layout.wal_record_key(seg))
    assert layout.WAL_HEARTBEAT == "postgres/wal_heartbeat.json"
    with pytest.raises(ConfigurationError, match="not a WAL file name"):
        layout.wal_data_key("../../etc/passwd")


def test_store_names_are_unchanged():
    lock = layout.lock_key("kafka/topic_export/bid-events/2026-11-20")
    assert lock == ".locks/kafka__topic_export__bid-events__2026-11-20.lock"
    tmp = layout.temp_name("manifest.json")
    assert tmp.startswith(".manifest.json.tmp-") and layout.is_hidden(f"a/b/{tmp}")
    assert layout.is_hidden(".locks/x.lock") and not layout.is_hidden("redis/snapshot/2026-11-20/PINNED")


def test_a_repository_writes_exactly_the_keys_the_layout_names(tmp_path):
    repo = Repository.local(tmp_path / "r")
    with repo.begin("kafka", "topic_export/bid-events", DAY) as w:
        with w.open_file("bid-events.records") as f:
            f.write(b"x" * 100)
    backup = w.committed
    ref = backup.ref
    assert backup.prefix == ref.key and ref == BackupRef.parse(ref.key)
    assert sorted(o.key for o in repo.backend.list("")) == sorted(
        [ref.catalog_key, ref.manifest_key, ref.file_key("bid-events.records.zst")]
    )
    assert ref.catalog_key == f"catalog/kafka/topic_export/bid-events/2026-11-20/{ref.backup_id}.json"
    assert layout.parse_catalog_key(ref.catalog_key) == ref and layout.parse_file_key(ref.catalog_key) is None
    folder = tmp_path / "r" / "kafka" / "topic_export" / "bid-events" / "2026-11-20" / ref.backup_id
    assert (folder / "manifest.json").is_file() and (folder / "bid-events.records.zst").is_file()
    assert (tmp_path / "r" / ".locks" / "kafka__topic_export__bid-events__2026-11-20.lock").is_file()
    assert repo.list("kafka", "topic_export/bid-events") == [backup]
    assert repo.list("kafka", "topic_export") == []  # a prefix of an artifact is not that artifact


def test_gc_removes_orphans_but_never_the_wal_archive_or_pins(tmp_path):
    from auction_backup_pipelines.policy import pruning
    from auction_backup_pipelines.postgres.wal_archive import WalArchive

    repo = Repository.local(tmp_path / "r")
    with repo.begin("kafka", "topic_export/bid-events", DAY) as w:
        with w.open_file("bid-events.records") as f:
            f.write(b"x")
    kept = w.committed
    pin = pruning.pin(repo, "kafka", "topic_export/bid-events", DAY)
    seg = tmp_path / "000000010000000000000003"
    seg.write_bytes(b"w" * 1000)
    WalArchive(repo.backend).push(seg)
    orphan = BackupRef("kafka", "topic_export/bid-events", DAY, "20261121T020000Z-000000").file_key("x.zst")
    with repo.backend.writer(orphan) as f:
        f.write(b"left by a crash")
    before = {o.key for o in repo.backend.list("")}
    assert repo.gc_incomplete() == [orphan]
    assert {o.key for o in repo.backend.list("")} == before - {orphan}
    assert pin in before and repo.list() == [kept]


def test_a_trailing_newline_is_not_part_of_a_valid_key():
    with pytest.raises(ConfigurationError, match="invalid backup_id"):
        BackupRef.parse(f"redis/snapshot/2026-11-20/{BID}\n")
    assert layout.parse_pin_key("redis/snapshot/2026-11-20\n/PINNED") is None


def test_wal_keys_parse_back_to_the_file_names_they_hold():
    for name in ("000000010000000000000003", "000000010000000000000003.partial", "00000002.history"):
        assert layout.parse_wal_key(layout.wal_data_key(name)) == name
        assert layout.parse_wal_key(layout.wal_record_key(name)) == name
    for key in (layout.WAL_HEARTBEAT, "postgres/wal/00000002/000000010000000000000003.zst", "postgres/base_backup/x.zst"):
        assert layout.parse_wal_key(key) is None

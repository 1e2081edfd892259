"""A stream whose entries were all deleted is still a key (Redis keeps it for its consumer
groups): the digest counts it, a restore keeps it, a restore that lost it fails its check, and
the digest path names the real reason whenever it falls back to a scratch server."""

from __future__ import annotations

import contextlib
import os
import time

import pytest

from auction_backup_pipelines.redis import restore as redis_restore
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import VerificationError
from auction_backup_pipelines.redis.facts import not_only_streams
from auction_backup_pipelines.redis.restore import restore_snapshot
from auction_backup_pipelines.redis.scratch import scratch_server
from auction_backup_pipelines.redis.verification import verify_snapshot
from auction_backup_pipelines.settings import RedisSettings
from tests.redis.test_backup_restore import FAST_SYNC, client, fill, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def servers(tmp_path):
    """start(name) -> settings of a new redis-server of the test's own; all stopped at the end."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> RedisSettings:
            folder = tmp_path / name
            folder.mkdir()
            port = free_port()
            stack.enter_context(scratch_server(folder, port=port, extra_args=FAST_SYNC))
            return RedisSettings(host="127.0.0.1", port=port)

        yield start


def empty_streams(c, prefix: str) -> list[bytes]:
    """Two empty streams with a consumer group: one emptied by XDEL, one created by MKSTREAM."""
    emptied, created = f"{prefix}x:emptied".encode(), f"{prefix}x:created".encode()
    entry = c.xadd(emptied, {"auction": "1"})
    assert c.xdel(emptied, entry) == 1
    c.xgroup_create(emptied, "settlement", id="$", mkstream=True)
    c.xgroup_create(created, "audit", id="0", mkstream=True)
    return [emptied, created]


def groups(c, key: bytes) -> list[bytes]:
    return sorted(g["name"] for g in c.xinfo_groups(key))


def test_an_empty_stream_with_a_group_is_counted_restored_and_missed_when_lost(servers, repo, monkeypatch, on_time_day):
    ss = servers("src")
    prefix = f"es{os.getpid()}-{time.monotonic_ns()}:"
    src = client(ss)
    keys = fill(src, prefix)
    empty = empty_streams(src, prefix)
    assert all(src.exists(k) and src.xlen(k) == 0 for k in empty)
    on_server = src.dbsize()  # the test's own server: every key is the test's
    assert on_server == len(keys) + len(empty)

    backup = backup_snapshot(ss, repo, on_time_day)
    m = backup.metadata
    assert m["keys_total"] == on_server
    assert m["content"]["dbs"]["0"]["types"]["stream"] == 3
    assert m["digest_method"] == "rdb-facts, and a scratch server for 3 stream keys"

    verified = verify_snapshot(repo, backup)
    assert verified.keys == on_server

    ts = servers("target")
    result = restore_snapshot(ts, repo, backup)
    assert result.keys_verified == on_server
    target = client(ts)
    assert groups(target, empty[0]) == [b"settlement"] and groups(target, empty[1]) == [b"audit"]
    assert all(target.xlen(k) == 0 for k in empty)

    # A restore that drops the emptied stream (a fault no real server produces on its own) must fail
    # its own check: with the stream uncounted, both sides agreed and the loss went unseen.
    copy = redis_restore.copy_keys

    def losing(src_run, dst_run, batches, replace):
        return copy(src_run, dst_run, ([k for k in b if k != empty[0]] for b in batches), replace)

    monkeypatch.setattr(redis_restore, "copy_keys", losing)
    lost = servers("lossy")
    with pytest.raises(VerificationError, match="db0 stream: 2 keys without TTL, backup recorded 3"):
        restore_snapshot(lost, repo, backup)
    assert not client(lost).exists(empty[0])


def test_the_fallback_reason_names_the_kinds_the_helper_could_not_decode():
    assert not_only_streams({"undecoded": {"0": 2}, "undecoded_kinds": {"stream": 2}}) == ""
    assert (
        not_only_streams({"undecoded": {"0": 4}, "undecoded_kinds": {"stream": 1, "module": 2, "hash_field_ttl": 1}})
        == "rdb-facts cannot decode 1 hashes with field TTLs, 2 module values"
    )
    assert "does not say which kinds" in not_only_streams({"undecoded": {"0": 1}})

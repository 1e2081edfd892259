"""The native copy of a Redis restore (redis-load, restore_native.py) against the Python path.

Both restore the same snapshot into fresh servers; Redis's own DEBUG DIGEST and each key's
encoding must come out equal, so the payloads redis-load serializes from the RDB are exactly
what DUMP/RESTORE would have written. Then the ways the helper must stop: a key that appears
in the target meanwhile, a foreign key its read-back finds, and the cases it leaves to Python.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.redis import restore_native
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.redis.client import RestoreRefused, VerificationError
from auction_backup_pipelines.redis.restore import restore_snapshot
from tests.redis.test_backup_restore import BIN, client, debug_digest, read_back
from tests.redis.test_backup_restore import servers as servers  # the fixture: every server stopped at the end

pytestmark = pytest.mark.integration
DEBUG = ("--enable-debug-command", "yes")


@pytest.fixture(autouse=True)
def needs_helper():
    if restore_native.helper_path() is None:
        pytest.fail("redis-load is not installed: run `bash stack/install.sh`")


def fill_decodable(c, prefix: str, db: int) -> list[bytes]:
    """Every type the RDB reader decodes (no streams), in each of Redis's encodings for it."""
    p = f"{prefix}{db}:".encode()
    c.set(p + b"str", "plain")
    c.set(p + b"int", 1234567)
    c.set(p + b"empty", "")
    c.set(p + b"big", BIN * 400)  # 100 KiB, stored LZF-compressed or raw
    c.set(p + b"\x00\xff" + BIN[:8], BIN)
    # LZF back-references of every shape the decompressor copies differently: runs of one byte
    # (distance 1, as DEBUG POPULATE's zero padding), short overlapping periods, long copies
    c.set(p + b"lzf-runs", b"value:7" + bytes(300) + b"=" * 300)
    c.set(p + b"lzf-period", b"0123456789abcdefghi" * 200)
    c.set(p + b"lzf-copies", random.Random(db).randbytes(2000) * 4)
    c.hset(p + b"hsmall", mapping={"f1": "v1", b"\x00bin": BIN})
    c.hset(p + b"hbig", mapping={f"f{i}": f"v{i}" * 3 for i in range(300)})  # hashtable
    c.rpush(p + b"lsmall", "a", "b", BIN, "3")
    c.rpush(p + b"lbig", *[f"item{i}" * 20 for i in range(3000)])  # quicklist of many nodes
    c.sadd(p + b"sint", *range(-5, 50))  # intset
    c.sadd(p + b"sbig", *[f"m{i}" for i in range(700)], BIN)  # hashtable
    c.zadd(p + b"zsmall", {"a": 1.5, "b": -0.1, "c": float("inf"), "d": float("-inf"), "e": 0.0})
    c.zadd(p + b"zbig", {f"u{i}": i / 7 for i in range(300)})  # skiplist
    c.set(p + b"session", "expires", px=3_600_000)
    c.hset(p + b"hvolatile", mapping={"a": "1"})
    c.pexpire(p + b"hvolatile", 7_200_000)
    return [k for k in c.scan_iter(match=p.decode("latin-1") + "*", count=1000)]


def encodings(c, keys: list[bytes]) -> dict[bytes, bytes]:
    return {k: c.object("encoding", k) for k in keys}


def test_native_restore_writes_what_dump_restore_writes(servers, repo, monkeypatch, on_time_day):
    _, ss = servers(*DEBUG, name="src")
    written = {db: fill_decodable(client(ss, db), "n:", db) for db in (0, 3, 9)}
    backup = backup_snapshot(ss, repo, on_time_day)
    m = backup.metadata
    assert m["digest_method"] == "rdb-facts"

    _, native_target = servers(*DEBUG, name="native")
    native = restore_snapshot(native_target, repo, backup)
    assert native.copied_by == "redis-load"
    assert native.keys_restored == native.keys_verified == m["keys_total"] == sum(map(len, written.values()))
    assert native.digest == m["digest"] and native.volatile_checked == 2 * 3
    assert restore_records.for_redis(native, by="test")[0].details["copied_by"] == "redis-load"  # in `restores`

    monkeypatch.setattr(restore_native, "helper_path", lambda: None)  # as on a machine without the helper
    _, python_target = servers(*DEBUG, name="python")
    python = restore_snapshot(python_target, repo, backup)
    assert python.copied_by == "python" and python.digest == native.digest

    # Independent of our digest: Redis's own, and every key's value, TTL and encoding.
    assert debug_digest(native_target) == debug_digest(python_target) == debug_digest(ss)
    for db, keys in written.items():
        assert read_back(client(native_target, db), keys) == read_back(client(ss, db), keys)
        assert encodings(client(native_target, db), keys) == encodings(client(python_target, db), keys)


def test_force_replaces_same_named_keys_and_keeps_the_others(servers, repo, on_time_day):
    _, ss = servers(*DEBUG, name="src")
    written = fill_decodable(client(ss), "f:", 0)
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers(*DEBUG, name="target")
    t = client(ts)
    t.set("kept", "not in the backup")
    t.rpush(b"f:0:str", "a list where the backup has a string")  # another type: replaced whole
    t.set(b"f:0:hsmall", "a string with a TTL where the backup has a hash", px=60_000)
    t.sadd(b"f:0:session", "x")  # the backup's key has a TTL: RESTORE ... ABSTTL REPLACE sets it
    with pytest.raises(RestoreRefused, match="not empty"):
        restore_snapshot(ts, repo, backup)

    forced = restore_snapshot(ts, repo, backup, force=True)
    assert forced.copied_by == "redis-load" and forced.digest == backup.metadata["digest"]
    assert forced.keys_verified == len(written) and forced.keys_kept_from_before == 1
    assert t.get("kept") == b"not in the backup"
    assert read_back(t, written) == read_back(client(ss), written)  # values, types and TTLs
    t.delete("kept")
    assert debug_digest(ts) == debug_digest(ss)


def test_streams_take_the_python_path(servers, repo, on_time_day):
    _, ss = servers(name="src")
    fill_decodable(client(ss), "s:", 0)
    client(ss).xadd("s:stream", {"a": "1"})  # redis-load cannot write streams
    with_stream = backup_snapshot(ss, repo, on_time_day)
    _, empty = servers(name="empty")
    result = restore_snapshot(empty, repo, with_stream)
    assert result.copied_by == "python" and result.digest == with_stream.metadata["digest"]


@pytest.mark.parametrize("kind", ["string", "hash"])  # MSETNX batches, and RESTORE without REPLACE
def test_a_key_that_appears_meanwhile_stops_the_restore_and_is_kept(servers, repo, monkeypatch, on_time_day, kind):
    _, ss = servers(name="src")
    fill_decodable(client(ss), "b:", 0)
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers(name="target")
    key = {"string": b"b:0:str", "hash": b"b:0:hbig"}[kind]
    real_load = restore_native.load

    def someone_writes_first(*args, **kwargs):  # after the emptiness check, before the first write
        client(ts).set(key, "written by someone else")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(restore_native, "load", someone_writes_first)
    with pytest.raises(RestoreRefused, match="appeared in the target during the restore.*--force.*part of the backup"):
        restore_snapshot(ts, repo, backup)
    assert client(ts).get(key) == b"written by someone else"


def test_a_key_the_backup_does_not_have_fails_the_restore(servers, repo, monkeypatch, on_time_day):
    _, ss = servers(name="src")
    fill_decodable(client(ss), "w:", 0)
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers(name="target")
    real_load = restore_native.load

    def intruder(*args, **kwargs):
        client(ts, 5).set("not-from-the-backup", "x")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(restore_native, "load", intruder)
    with pytest.raises(VerificationError, match="db5 holds 1 keys the backup does not have"):
        restore_snapshot(ts, repo, backup)


def test_the_password_reaches_the_helper_on_stdin_only(servers, repo, monkeypatch, on_time_day):
    secret = "s3cret-" + os.urandom(4).hex()
    _, ss = servers(name="src")
    fill_decodable(client(ss), "p:", 0)
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers("--requirepass", secret, name="auth", password=secret)
    launched = []
    real_popen = subprocess.Popen

    def spy(argv, *a, **kw):
        launched.append((list(argv), kw.get("env")))
        return real_popen(argv, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", spy)
    result = restore_snapshot(ts, repo, backup)
    assert result.copied_by == "redis-load" and result.digest == backup.metadata["digest"]
    helpers = [(argv, env) for argv, env in launched if argv[0].endswith(restore_native.HELPER)]
    assert len(helpers) == 1
    argv, env = helpers[0]
    assert argv[1:] == [] and env is not None and secret not in " ".join(f"{k}={v}" for k, v in env.items())


def test_a_snapshot_that_fills_its_last_batch_exactly(servers, repo, on_time_day):
    _, ss = servers(*DEBUG, name="src")
    client(ss).execute_command("DEBUG", "POPULATE", 2000, "e", 10)  # two full batches of 1000 keys, nothing after
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers(name="target")
    result = restore_snapshot(ts, repo, backup)
    assert result.copied_by == "redis-load" and result.keys_verified == 2000 and result.digest == backup.metadata["digest"]


def test_keyspace_counts_are_judged_per_db():
    doc = {"keyspace": {"0": [10, 0, 10], "3": [5, 2, 3], "4": [5, 2, 2], "9": [0, 0, 1]}}
    deleted = "db4: 1 restored keys were deleted after they were read back"  # 2 may have expired, 3 gone
    assert restore_native.keyspace_problems(doc, replaced=False) == [
        deleted,
        "db9 holds 1 keys the backup does not have (written by someone else meanwhile)",
    ]
    assert restore_native.keyspace_problems(doc, replaced=True) == [deleted]  # --force keeps other keys


def test_large_values_make_small_batches(servers, repo, on_time_day):
    _, ss = servers(name="src")
    for i in range(30):
        client(ss).set(f"big:{i}", os.urandom(100_000))
    backup = backup_snapshot(ss, repo, on_time_day)
    _, ts = servers(name="target")
    result = restore_snapshot(ts, repo, backup)
    assert result.copied_by == "redis-load" and result.digest == backup.metadata["digest"]
    # 3 MB of values in batches of about 1 MiB: the server's query buffer and our memory stay bounded
    assert client(ts).info("commandstats")["cmdstat_msetnx"]["calls"] >= 3

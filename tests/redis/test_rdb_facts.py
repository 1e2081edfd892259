"""The rdb-facts helper against a real Redis: its facts of an RDB must equal the facts read from
the server through Redis commands (`server_facts`), for every type and every encoding, since a
restore is checked by comparing the two."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from auction_backup_pipelines.redis import rdb_facts
from auction_backup_pipelines.redis.capture import Captured
from auction_backup_pipelines.redis.client import RDB_FILE
from auction_backup_pipelines.redis.facts import BUCKET_MS, Facts, server_facts, snapshot_facts
from auction_backup_pipelines.redis.scratch import scratch_server
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

BIN = bytes(range(256))
HOUR_MS = 3_600_000


def fill_every_encoding(c) -> int:
    """Small (listpack, intset, embstr, int) and large (hashtable, skiplist, quicklist, raw,
    LZF-compressed) forms of each type the helper decodes, binary keys and values, TTLs."""
    now_ms = int(time.time() * 1000)
    c.set("s:int", 12345)
    c.set("s:neg", -7)
    c.set("s:bigint", "123456789012345678901234567890")
    c.set("s:empty", "")
    c.set("s:embstr", "short text")
    c.set("s:raw", "x" * 100)
    c.set("s:lzf", b"abc" * 40_000)  # compressible: stored LZF-compressed in the RDB
    c.set(b"s:\x00\xff" + BIN[:16], BIN * 3)
    c.hset("h:small", mapping={"a": "1", "b": "-2", "c": "text", b"\x00": BIN[:20]})
    c.hset("h:big", mapping={f"f{i}": f"v{i}" * (i % 7) for i in range(600)})
    c.hset("h:longvalue", mapping={"k": "y" * 200})  # over hash-max-listpack-value
    c.rpush("l:small", "a", "1", "-3", "", BIN[:10])
    c.rpush("l:big", *[f"item-{i}" for i in range(20_000)], *range(500))
    c.sadd("set:ints", *range(300))  # intset
    c.sadd("set:neg", -5, 10, 2**40)
    c.sadd("set:strings", *[f"m{i}" for i in range(50)], BIN[:30])
    c.sadd("set:big", *[f"member-{i}" for i in range(2000)])
    c.zadd("z:small", {"a": 1, "b": 1, "c": 1.5, "d": -2.25, "e": 0, b"\xff": 10**20})
    c.zadd("z:inf", {"lo": float("-inf"), "hi": float("inf"), "mid": 1e-300})
    c.zadd("z:zeros", {"a": 0.0, "b": -0.0})  # equal scores to Redis: ranked by member, a before b
    c.zadd("z:big", {f"u{i}": (i % 100) / 7 for i in range(1000)})
    for i in range(30):  # volatile keys across several expiry buckets, some in another db
        c.set(f"ttl:{i}", f"session-{i}", pxat=now_ms + HOUR_MS + i * 97_000)
    c.hset("ttl:hash", mapping={"a": "1"})
    c.pexpireat("ttl:hash", now_ms + 2 * HOUR_MS)
    c.execute_command("SELECT", 5)
    c.set("db5:s", "other db")
    c.zadd("db5:z", {"x": 3})
    c.set("db5:ttl", "v", pxat=now_ms + 3 * HOUR_MS)
    c.execute_command("SELECT", 0)
    return 30 + 1 + 1  # volatile keys


def helper_facts(rdb: Path, captured_ms: int) -> tuple[dict | None, str]:
    with rdb_facts.streaming(BUCKET_MS, captured_ms) as sink, open(rdb, "rb") as f:
        while chunk := f.read(1 << 16):
            sink.write(chunk)
        return sink.result(), sink.problem


@pytest.fixture
def server(tmp_path):
    with scratch_server(tmp_path) as srv:
        yield srv


def saved(srv) -> Path:
    srv.client().save()
    return srv.dir / RDB_FILE


def comparable(facts: Facts) -> dict:
    doc = facts.to_json()
    doc.pop("observed_at")
    return doc


def test_helper_is_installed():
    assert rdb_facts.helper_path(), "stack/install.sh builds rdb-facts into the virtualenv"


def test_the_vendored_lzf_decompress_matches_the_published_one():
    """Both helpers read LZF strings through native/rdb-facts/vendor/lzf, lzf 1.0.0 with a faster
    decompress: its Rust tests compare it with the published byte-by-byte one on runs, periods,
    long copies, short buffers and damaged input (the Redis tests here cover real snapshots)."""
    cargo = shutil.which("cargo") or str(Path.home() / ".cargo" / "bin" / "cargo")
    manifest = ROOT / "native" / "rdb-facts" / "vendor" / "lzf" / "Cargo.toml"
    argv = [
        cargo,
        "test",
        "-q",
        "--locked",
        "--manifest-path",
        str(manifest),
        "--target-dir",
        str(ROOT / ".stack" / "cargo-target"),
    ]
    done = subprocess.run([*argv, "decompress::tests"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "test result: ok. 2 passed" in done.stdout


def test_helper_facts_equal_live_facts_for_every_encoding(server):
    c = server.client()
    volatile = fill_every_encoding(c)
    assert {
        c.object("encoding", k) for k in (b"h:small", b"h:big", b"set:ints", b"set:big", b"z:small", b"z:big", b"s:int", b"s:raw")
    } >= {b"listpack", b"hashtable", b"intset", b"skiplist", b"int", b"raw"}
    now_ms = int(time.time() * 1000)
    doc, problem = helper_facts(saved(server), now_ms)
    assert doc is not None, problem
    assert doc["undecoded"] == {} and doc["expired"] == 0
    ours, live = Facts.from_rdb_facts(doc, now_ms), server_facts(server)
    assert comparable(ours) == comparable(live)
    assert ours.keys == sum(c.dbsize() for c in (server.client(0), server.client(5)))
    assert sum(n for (_, _, v), n in ours.counts.items() if v) == volatile

    # The facts describe content: one changed member changes the digest, and nothing else.
    c.zadd("z:big", {"u3": 99})
    doc2, _ = helper_facts(saved(server), now_ms)
    assert doc2["persistent_digest"] != doc["persistent_digest"] and doc2["counts"] == doc["counts"]


def test_keys_expired_when_captured_are_left_out(server):
    volatile = fill_every_encoding(server.client())
    later = int(time.time() * 1000) + 10 * HOUR_MS  # as if captured after every TTL had passed
    doc, _ = helper_facts(saved(server), later)
    assert doc["expired"] == volatile and doc["buckets"] == []


def test_streams_are_read_from_a_scratch_server_and_merged(server):
    c = server.client()
    fill_every_encoding(c)
    for i in range(10):
        c.xadd("x:orders", {"auction": str(i)})
    c.xgroup_create("x:orders", "settle", id="0")
    c.xreadgroup("settle", "w1", {"x:orders": ">"}, count=3)
    now_ms = int(time.time() * 1000)
    doc, _ = helper_facts(saved(server), now_ms)
    assert doc["undecoded"] == {"0": 1}

    facts, method = snapshot_facts(Captured(server.dir, None, now_ms, doc), 16)
    assert method == "rdb-facts, and a scratch server for 1 stream keys"
    assert comparable(facts) == comparable(server_facts(server))


def test_without_the_helper_the_scratch_server_gives_the_same_facts(server, monkeypatch):
    fill_every_encoding(server.client())
    now_ms = int(time.time() * 1000)
    doc, _ = helper_facts(saved(server), now_ms)
    monkeypatch.setattr(rdb_facts, "helper_path", lambda: None)
    missing, problem = helper_facts(server.dir / RDB_FILE, now_ms)
    assert missing is None and "not installed" in problem

    facts, method = snapshot_facts(Captured(server.dir, None, now_ms, None, problem), 16)
    assert method.startswith("scratch server (rdb-facts is not installed")
    assert comparable(facts) == comparable(Facts.from_rdb_facts(doc, now_ms))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_stream_the_helper_cannot_read_gives_no_facts_and_says_why(server, tmp_path, damage):
    c = server.client()
    c.config_set("rdbcompression", "no")  # the value's bytes lie in the file as they are
    c.set("k", "v" * 1000)
    data = bytearray(saved(server).read_bytes())
    if damage == "garbage":
        data = bytearray(b"not an rdb at all" * 100)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    else:  # one bit inside the value: still parses, only the CRC64 shows it
        data[data.index(b"v" * 1000) + 500] ^= 0x01
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(bytes(data))
    doc, problem = helper_facts(bad, 0)
    assert doc is None
    assert {"garbage": "not an RDB file", "truncated": "malformed RDB", "flipped": "checksum does not match"}[damage] in problem


def test_a_helper_that_cannot_start_gives_no_facts_and_says_why(server, tmp_path, monkeypatch):
    not_executable = tmp_path / "rdb-facts"
    not_executable.write_text("")
    monkeypatch.setattr(rdb_facts, "helper_path", lambda: str(not_executable))
    server.client().set("k", "v")
    doc, problem = helper_facts(saved(server), 0)
    assert doc is None and problem.startswith("rdb-facts could not start: [Errno 13] Permission denied")

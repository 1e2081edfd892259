"""Content facts of a keyspace: canonical values, the additive digest, and comparisons over time."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from auction_backup_pipelines.redis import facts

H = 3_600_000  # an hour in ms
NOW = 1_800_000_000_000


def h(kind: bytes, *replies) -> int:
    return facts.key_hash(0, b"k", kind, facts.canonical_value(kind, list(replies)))


def test_canonical_values_ignore_storage_order_but_not_content():
    assert h(b"hash", [b"a", b"1", b"b", b"2"]) == h(b"hash", [b"b", b"2", b"a", b"1"])
    assert h(b"hash", [b"a", b"1", b"b", b"2"]) != h(b"hash", [b"a", b"2", b"b", b"1"])
    assert h(b"set", [b"x", b"y"]) == h(b"set", [b"y", b"x"])
    assert h(b"list", [b"x", b"y"]) != h(b"list", [b"y", b"x"])
    assert h(b"zset", [b"m", b"1"]) == h(b"zset", [b"m", b"1.0"])  # scores compared as doubles
    assert h(b"zset", [b"m", b"1"]) != h(b"zset", [b"m", b"1.0000001"])
    # no ambiguity from concatenation: ["ab", "c"] is not ["a", "bc"]
    assert h(b"list", [b"ab", b"c"]) != h(b"list", [b"a", b"bc"])
    # a stream: duplicate fields count, and so do consumer groups
    entry = [[b"1-0", [b"f", b"1", b"f", b"2"]]]
    group = [[b"name", b"g", b"consumers", 1, b"pending", 2, b"last-delivered-id", b"1-0", b"lag", 0]]
    assert h(b"stream", entry, []) != h(b"stream", [[b"1-0", [b"f", b"2"]]], [])
    assert h(b"stream", entry, group) != h(b"stream", entry, [])
    # the type and the db are part of a key's identity
    assert facts.key_hash(0, b"k", b"list", b"\x00") != facts.key_hash(0, b"k", b"set", b"\x00")
    assert facts.key_hash(0, b"k", b"list", b"\x00") != facts.key_hash(1, b"k", b"list", b"\x00")
    assert facts.canonical_value(b"string", [None]) is None and facts.canonical_value(b"hash", [[]]) is None


def facts_of(keys, bucket_ms=facts.BUCKET_MS) -> facts.Facts:
    f = facts.Facts(bucket_ms)
    for db, kind, digest, exp in keys:
        f.add(db, kind, digest, exp)
    return f


key_strategy = st.tuples(
    st.integers(0, 3),
    st.sampled_from(["string", "hash", "zset"]),
    st.integers(0, 2**64 - 1),
    st.one_of(st.none(), st.integers(NOW, NOW + 48 * H)),
)


@given(st.lists(key_strategy, max_size=60), st.randoms())
def test_digest_is_order_independent_and_additive(keys, rnd):
    whole = facts_of(keys)
    shuffled = list(keys)
    rnd.shuffle(shuffled)
    cut = len(shuffled) // 2
    merged = facts_of(shuffled[:cut])
    merged.merge(facts_of(shuffled[cut:]))  # e.g. two cluster nodes
    assert merged.to_json() == whole.to_json()
    assert facts.Facts.from_json(whole.to_json()).to_json() == whole.to_json()
    problems, _ = facts.compare_facts(facts.Facts.from_json(whole.to_json()), merged, (NOW - H, NOW - H))
    assert problems == []


def test_too_many_buckets_are_coarsened_losslessly(monkeypatch):
    monkeypatch.setattr(facts, "MAX_BUCKETS", 10)
    f = facts_of([(0, "string", i, NOW + i * facts.BUCKET_MS) for i in range(100)])
    doc = f.to_json()
    assert len(doc["volatile"]) <= 10 and doc["bucket_ms"] > facts.BUCKET_MS
    assert doc["digest"] == f"{f.digest:016x}" and doc["keys"] == 100
    # a keyspace read later at the base width is regrouped to the manifest's width before comparing
    assert facts.compare_facts(facts.Facts.from_json(doc), f, (NOW - H, NOW - H)) == (
        [],
        {"volatile_checked": 100, "volatile_expired": 0, "volatile_partly_expired": 0},
    )


def snapshot():
    rng = random.Random(1)
    persistent = [(0, "hash", rng.getrandbits(64), None) for _ in range(5)] + [(2, "string", rng.getrandbits(64), None)]
    soon = [(0, "string", rng.getrandbits(64), NOW + 10_000 + i) for i in range(3)]  # expire 10 s after NOW
    later = [(0, "string", rng.getrandbits(64), NOW + 10 * H + i) for i in range(4)]
    return persistent, soon, later


def test_exact_match_and_value_change():
    persistent, soon, later = snapshot()
    expected = facts_of(persistent + soon + later)
    window = (NOW, NOW + 1000)
    assert facts.compare_facts(expected, facts_of(persistent + soon + later), window)[0] == []
    changed = persistent[:-1] + [(2, "string", persistent[-1][2] ^ 1, None)]
    assert "content digest" in facts.compare_facts(expected, facts_of(changed + soon + later), window)[0][0]
    missing = facts.compare_facts(expected, facts_of(persistent[1:] + soon + later), window)[0]
    assert missing == ["db0 hash: 4 keys without TTL, backup recorded 5"]


def test_keys_that_expired_since_the_snapshot_are_expected_gone():
    persistent, soon, later = snapshot()
    expected = facts_of(persistent + soon + later)
    problems, summary = facts.compare_facts(expected, facts_of(persistent + later), (NOW + H, NOW + H + 1000))
    assert problems == [] and summary["volatile_expired"] == 3 and summary["volatile_checked"] == 4
    # ...but keys that should still live must be there, with the same content and expiry
    assert facts.compare_facts(expected, facts_of(persistent + later[1:]), (NOW + H, NOW + H + 1000))[0]
    drifted = [(db, k, d, e + 5000) for db, k, d, e in later]
    assert "expiry times differ" in facts.compare_facts(expected, facts_of(persistent + drifted), (NOW + H, NOW + H))[0][0]
    # a key with a TTL the backup never had
    extra = facts.compare_facts(expected, facts_of(persistent + later + [(0, "string", 7, NOW + 20 * H)]), (NOW + H, NOW + H))[0]
    assert "1 present, backup recorded 0" in extra[0]


def test_bucket_overlapping_the_window_may_lose_keys_but_not_gain():
    persistent, soon, later = snapshot()
    expected = facts_of(persistent + soon + later)
    window = (NOW + 5_000, NOW + 15_000)  # the "soon" keys expire during the comparison
    problems, summary = facts.compare_facts(expected, facts_of(persistent + soon[:1] + later), window)
    assert problems == [] and summary["volatile_partly_expired"] == 2

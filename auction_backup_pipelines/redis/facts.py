"""What a snapshot holds, as numbers a restore can be checked against: key counts per db and
type, and an order-independent content digest.

A digest computed on the live server while the platform writes cannot describe the snapshot,
so it is computed from the snapshot itself: per key the first 64 bits of sha256(db, key, type,
canonical value), summed modulo 2**64. Canonical values: strings as is, hash fields and set
members sorted, lists in order, sorted-set members with scores as IEEE doubles, stream entries
in order plus consumer groups (a stream emptied by XDEL, or made by XGROUP CREATE ... MKSTREAM,
is still a key: Redis keeps it for its groups), other (module) types through DUMP.

Who computes it (`snapshot_facts`, the manifest's `digest_method`): the native `rdb-facts`
helper (rdb_facts.py) while the snapshot streams; stream keys, which it cannot decode, are
read (`collect_facts`) from a scratch server loaded with the snapshot, and all keys are when
it also met module values or hashes with field TTLs, when it is missing or failed, or for an
AOF copy; the method then names that reason. Both ways give the same facts
(tests/redis/test_rdb_facts.py holds them equal), except for keys that expire around the
capture: the helper drops those expired at the moment read before the transfer, the scratch
server those expired when it loads; the expiry buckets absorb that difference.

Keys with a TTL. Restores keep absolute expiry times (RESTORE … ABSTTL): a session that would
have expired stays expired. So volatile keys are summarised per expiry bucket (count, digest,
sum of expiry times): a later comparison (`compare_facts`) checks exactly the buckets that
expire after it, bounds those it overlaps, and expects the earlier ones to be gone. Persistent
keys are always compared exactly. Without the helper, and for stream keys, the digest costs
about 10 µs of Python CPU per key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from auction_backup_pipelines.redis.client import iso_ms, server_time_ms
from auction_backup_pipelines.redis.resp import Runner, check_reply
from auction_backup_pipelines.redis.scratch import ScratchServer, scratch_server

if TYPE_CHECKING:
    from auction_backup_pipelines.redis.capture import Captured

MASK64 = (1 << 64) - 1
SCAN_COUNT = 1000
BUCKET_MS = 60_000
MAX_BUCKETS = 2000


def _lp(parts: Iterable[bytes]) -> bytes:
    """Length-prefixed concatenation, so no two different sequences encode alike."""
    return b"".join(len(p).to_bytes(8, "big") + p for p in parts)


_VALUE_COMMANDS: dict[bytes, Callable[[bytes], list[tuple[Any, ...]]]] = {
    b"hash": lambda k: [("HGETALL", k)],
    b"list": lambda k: [("LRANGE", k, 0, -1)],
    b"set": lambda k: [("SMEMBERS", k)],
    b"zset": lambda k: [("ZRANGE", k, 0, -1, "WITHSCORES")],
    b"stream": lambda k: [("XRANGE", k, "-", "+"), ("XINFO", "GROUPS", k)],
}


def _other(k: bytes) -> list[tuple[Any, ...]]:
    return [("DUMP", k)]  # module types: no portable reading, so their serialized form


def canonical_value(kind: bytes, replies: list[Any]) -> bytes | None:
    """The bytes that stand for a value, independent of encoding and DUMP format; None when gone."""
    value = replies[0]
    if kind == b"stream":
        # Redis keeps a stream whose entries were all deleted (with its consumer groups), so an
        # empty XRANGE is content; the stream is gone only when XINFO GROUPS finds no such key.
        if len(replies) < 2 or replies[1] is None:
            return None
    elif value is None or (kind != b"string" and not value):
        return None  # deleted or expired between TYPE and the read (Redis removes empty collections)
    if kind == b"string":
        return value
    if kind == b"hash":
        return _lp(p for pair in sorted(zip(value[0::2], value[1::2])) for p in pair)
    if kind == b"list":
        return _lp(value)
    if kind == b"set":
        return _lp(sorted(value))
    if kind == b"zset":  # ZRANGE order (score, member) is deterministic; scores as exact doubles
        return b"".join(len(m).to_bytes(8, "big") + m + struct.pack(">d", float(sc)) for m, sc in zip(value[0::2], value[1::2]))
    if kind == b"stream":
        entries = b"".join(_lp([eid, *fields]) for eid, fields in value)
        groups = []
        for g in replies[1] or []:
            d = dict(zip(g[0::2], g[1::2]))
            groups.append(_lp([d[b"name"], str(d[b"consumers"]).encode(), str(d[b"pending"]).encode(), d[b"last-delivered-id"]]))
        return _lp([entries, *sorted(groups)])
    return value


def key_hash(db: int, key: bytes, kind: bytes, canonical: bytes) -> int:
    """First 64 bits of sha256(db, length of key, key, type, canonical value): no two keys encode alike."""
    digest = hashlib.sha256(b"%d\n%d\n%s%s\n%s" % (db, len(key), key, kind, canonical)).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class Facts:
    """Counts and digests of a keyspace, additive, so nodes and batches merge by summing."""

    bucket_ms: int = BUCKET_MS
    counts: dict[tuple[int, str, bool], int] = field(default_factory=dict)  # (db, type, volatile) -> keys
    persistent_digest: int = 0
    buckets: dict[int, list[int]] = field(default_factory=dict)  # start ms -> [keys, digest, sum of expiry ms]
    observed_ms: tuple[int, int] | None = None

    def add(self, db: int, kind: str, digest: int, expire_at_ms: int | None) -> None:
        volatile = expire_at_ms is not None
        self.counts[(db, kind, volatile)] = self.counts.get((db, kind, volatile), 0) + 1
        if expire_at_ms is None:
            self.persistent_digest = (self.persistent_digest + digest) & MASK64
            return
        b = self.buckets.setdefault(expire_at_ms // self.bucket_ms * self.bucket_ms, [0, 0, 0])
        b[0] += 1
        b[1] = (b[1] + digest) & MASK64
        b[2] += expire_at_ms

    def merge(self, other: Facts) -> None:
        other = other.coarsened(self.bucket_ms)
        for k, n in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        self.persistent_digest = (self.persistent_digest + other.persistent_digest) & MASK64
        for start, (n, d, e) in other.buckets.items():
            b = self.buckets.setdefault(start, [0, 0, 0])
            b[0], b[1], b[2] = b[0] + n, (b[1] + d) & MASK64, b[2] + e
        if other.observed_ms:
            lo, hi = self.observed_ms or other.observed_ms
            self.observed_ms = (min(lo, other.observed_ms[0]), max(hi, other.observed_ms[1]))

    def coarsened(self, bucket_ms: int) -> Facts:
        """The same facts in wider buckets (`bucket_ms` a multiple of ours): sums regroup exactly."""
        if bucket_ms == self.bucket_ms:
            return self
        if bucket_ms % self.bucket_ms:
            raise ValueError(f"bucket width {bucket_ms} is not a multiple of {self.bucket_ms}")
        out = Facts(bucket_ms, dict(self.counts), self.persistent_digest, {}, self.observed_ms)
        for start, (n, d, e) in self.buckets.items():
            b = out.buckets.setdefault(start // bucket_ms * bucket_ms, [0, 0, 0])
            b[0], b[1], b[2] = b[0] + n, (b[1] + d) & MASK64, b[2] + e
        return out

    @property
    def keys(self) -> int:
        return sum(self.counts.values())

    @property
    def digest(self) -> int:
        return (self.persistent_digest + sum(b[1] for b in self.buckets.values())) & MASK64

    def to_json(self) -> dict[str, Any]:
        f = self
        while len(f.buckets) > MAX_BUCKETS:  # keeps manifests small whatever the spread of TTLs
            f = f.coarsened(f.bucket_ms * 2)
        dbs: dict[str, Any] = {}
        persistent: dict[str, dict[str, int]] = {}
        for (db, kind, volatile), n in sorted(f.counts.items()):
            d = dbs.setdefault(str(db), {"keys": 0, "volatile": 0, "types": {}})
            d["keys"] += n
            d["volatile"] += n if volatile else 0
            d["types"][kind] = d["types"].get(kind, 0) + n
            if not volatile:
                persistent.setdefault(str(db), {})[kind] = n
        return {
            "keys": f.keys,
            "digest": f"{f.digest:016x}",
            "dbs": dbs,
            "persistent": {"digest": f"{f.persistent_digest:016x}", "types": persistent},
            "bucket_ms": f.bucket_ms,
            "volatile": {str(s): [n, f"{d:016x}", e] for s, (n, d, e) in sorted(f.buckets.items())},
            "observed_at": [iso_ms(t) for t in f.observed_ms] if f.observed_ms else None,
        }

    @classmethod
    def from_rdb_facts(cls, doc: dict[str, Any], observed_ms: int, bucket_ms: int = BUCKET_MS) -> Facts:
        """The facts `rdb-facts` computed from a snapshot taken at `observed_ms` (its raw output)."""
        f = cls(bucket_ms=bucket_ms, persistent_digest=int(doc["persistent_digest"], 16), observed_ms=(observed_ms, observed_ms))
        f.counts = {(db, kind, volatile): n for db, kind, volatile, n in doc["counts"]}
        f.buckets = {start: [n, int(d, 16), e] for start, n, d, e in doc["buckets"]}
        return f

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Facts:
        f = cls(bucket_ms=int(doc["bucket_ms"]), persistent_digest=int(doc["persistent"]["digest"], 16))
        for db, d in doc["dbs"].items():
            for kind, n in d["types"].items():
                p = doc["persistent"]["types"].get(db, {}).get(kind, 0)
                for volatile, count in ((False, p), (True, n - p)):
                    if count:
                        f.counts[(int(db), kind, volatile)] = count
        f.buckets = {int(s): [n, int(d, 16), e] for s, (n, d, e) in doc["volatile"].items()}
        return f


def compare_facts(
    expected: Facts, actual: Facts, window_ms: tuple[int, int], ttl_tolerance_ms: int = 1000
) -> tuple[list[str], dict[str, int]]:
    """Differences between a manifest's facts and a keyspace read during `window_ms`.

    Volatile keys are judged by when they expire relative to the window: buckets ending
    before it must be gone, buckets starting after it must match exactly (count, digest,
    expiry times within the tolerance), buckets it overlaps may have lost some keys.
    """
    actual = actual.coarsened(expected.bucket_ms)
    problems: list[str] = []
    persistent_e = {(db, k): n for (db, k, v), n in expected.counts.items() if not v}
    persistent_a = {(db, k): n for (db, k, v), n in actual.counts.items() if not v}
    for db, kind in sorted(set(persistent_e) | set(persistent_a)):
        e, a = persistent_e.get((db, kind), 0), persistent_a.get((db, kind), 0)
        if e != a:
            problems.append(f"db{db} {kind}: {a} keys without TTL, backup recorded {e}")
    if not problems and expected.persistent_digest != actual.persistent_digest:
        problems.append(
            f"keys without TTL: same counts but content digest {actual.persistent_digest:016x} "
            f"!= recorded {expected.persistent_digest:016x}"
        )
    lo, hi = window_ms
    summary = {"volatile_checked": 0, "volatile_expired": 0, "volatile_partly_expired": 0}
    for start in sorted(set(expected.buckets) | set(actual.buckets)):
        end = start + expected.bucket_ms
        en, ed, ee = expected.buckets.get(start, (0, 0, 0))
        an, ad, ae = actual.buckets.get(start, (0, 0, 0))
        when = f"keys expiring {iso_ms(start)}..{iso_ms(end)}"
        if an > en:
            problems.append(f"{when}: {an} present, backup recorded {en}")
        elif end <= lo:
            summary["volatile_expired"] += en
        elif start > hi:
            summary["volatile_checked"] += an
            if an != en:
                problems.append(f"{when}: {an} present, backup recorded {en} (none had expired yet)")
            elif ad != ed:
                problems.append(f"{when}: same count ({en}) but content digest differs")
            elif abs(ae - ee) > en * ttl_tolerance_ms:
                problems.append(f"{when}: expiry times differ by {abs(ae - ee) / max(en, 1):.0f} ms per key on average")
        else:
            summary["volatile_partly_expired"] += en - an
            summary["volatile_checked"] += an
    return problems, summary


def unique_batches(run: Runner, kind: str = "") -> Iterator[list[bytes]]:
    """SCAN the connection's db (keys of type `kind` only, if given) in batches; SCAN may repeat
    a key while a table resizes, so repeats are dropped."""
    seen: set[int] = set()  # hash() of each key: 8 bytes a key; a collision would show up as a mismatch
    cursor: Any = 0
    only = ("TYPE", kind) if kind else ()
    while True:
        cursor, keys = check_reply(run([("SCAN", cursor, "COUNT", SCAN_COUNT, *only)])[0])
        fresh = []
        for k in keys:
            h = hash(k)
            if h not in seen:
                seen.add(h)
                fresh.append(k)
        if fresh:
            yield fresh
        if int(cursor) == 0:
            return


def gone_or_reply(reply: Any) -> Any:
    """A reply, None when it says the key is gone (it expired or was deleted since the scan)."""
    if isinstance(reply, Exception) and "no such key" in str(reply).lower():
        return None
    return check_reply(reply)


def collect_facts(facts: Facts, db: int, run: Runner, batches: Iterable[list[bytes]]) -> None:
    """Add the keys of `batches` (all in `db`), read through `run`, to `facts`.

    GET is sent for every key first: most keys are strings, and for those it saves a TYPE
    round; a WRONGTYPE reply sends the key to the typed reads.
    """
    for keys in batches:
        head = run([c for k in keys for c in (("PEXPIRETIME", k), ("GET", k))])
        others = []
        for k, expire_at, value in zip(keys, head[0::2], head[1::2]):
            if check_reply(expire_at) == -2:
                continue  # gone (expired) since the scan
            if isinstance(value, Exception):
                if not str(value).startswith("WRONGTYPE"):
                    check_reply(value)
                others.append((k, expire_at))
            elif value is not None:
                facts.add(db, "string", key_hash(db, k, b"string", value), expire_at if expire_at >= 0 else None)
        if not others:
            continue
        kinds = [t.encode() if isinstance(t, str) else check_reply(t) for t in run([("TYPE", k) for k, _ in others])]
        plan, commands = [], []
        for (k, expire_at), kind in zip(others, kinds):
            cs = _VALUE_COMMANDS.get(kind, _other)(k) if kind not in (b"none", b"string") else []
            commands += cs
            plan.append((k, expire_at, kind, len(cs)))
        replies = iter(run(commands) if commands else [])
        for k, expire_at, kind, n in plan:
            values = [gone_or_reply(next(replies)) for _ in range(n)]
            canonical = canonical_value(kind, values) if n else None
            if canonical is not None:
                facts.add(db, kind.decode(), key_hash(db, k, kind, canonical), expire_at if expire_at >= 0 else None)


def dbs_with_keys(r: redis.Redis) -> list[int]:
    """The dbs of the server that hold at least one key (INFO keyspace)."""
    return sorted(int(k[2:]) for k, v in r.info("keyspace").items() if isinstance(v, dict) and v.get("keys"))


def server_facts(srv: ScratchServer, bucket_ms: int = BUCKET_MS) -> Facts:
    """The facts of every key a scratch server holds, observed between two readings of its clock."""
    facts = Facts(bucket_ms)
    admin = srv.client()
    lo = server_time_ms(admin)
    for db in dbs_with_keys(admin):
        run = srv.bulk(db).run
        collect_facts(facts, db, run, unique_batches(run))
    facts.observed_ms = (lo, server_time_ms(admin))
    return facts


def snapshot_facts(captured: Captured, databases: int) -> tuple[Facts, str]:
    """The facts of one stored snapshot, and how they were computed.

    The helper's facts, read while the snapshot streamed, when it could decode every key.
    When the keys it could not decode are all streams (empty ones kept for their consumer
    groups included), they are read from a scratch server loaded with the snapshot, selected
    by `SCAN ... TYPE stream`. When it could not decode other kinds (module values, hashes with
    field TTLs), the scan finds a different number of streams, or the helper did not run, every
    key is read from the scratch server, and the method names that reason.
    """
    doc = captured.rdb_facts
    if doc is not None and not doc["undecoded"]:
        return Facts.from_rdb_facts(doc, captured.captured_ms), "rdb-facts"
    reason = captured.rdb_facts_problem if doc is None else not_only_streams(doc)
    with scratch_server(captured.folder, databases=databases, aof=captured.aof) as srv:
        if doc is not None and not reason:
            facts = Facts.from_rdb_facts(doc, captured.captured_ms)
            found = Facts()
            for db in map(int, doc["undecoded"]):
                run = srv.bulk(db).run
                collect_facts(found, db, run, unique_batches(run, "stream"))
            expected = sum(doc["undecoded"].values())
            if found.keys == expected:
                facts.merge(found)
                return facts, f"rdb-facts, and a scratch server for {expected} stream keys"
            reason = f"rdb-facts counted {expected} stream keys, the loaded snapshot holds {found.keys}"
        return server_facts(srv), f"scratch server ({reason})"


UNDECODED_KINDS = {"module": "module values", "hash_field_ttl": "hashes with field TTLs"}


def not_only_streams(doc: dict[str, Any]) -> str:
    """Why the helper's facts cannot be completed with its stream keys alone ('' when they can):
    the keys of other kinds it could not decode, named by kind."""
    kinds = doc.get("undecoded_kinds")
    if kinds is None:  # a helper built before it named kinds: only the scratch server can tell
        return "rdb-facts could not decode some keys and does not say which kinds"
    others = {k: n for k, n in kinds.items() if k != "stream" and n}
    if not others:
        return ""
    named = ", ".join(f"{n} {UNDECODED_KINDS.get(k, k)}" for k, n in sorted(others.items()))
    return f"rdb-facts cannot decode {named}"

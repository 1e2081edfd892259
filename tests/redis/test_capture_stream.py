"""How a `redis-cli --rdb -` stream is judged complete, the bulk connection's RESP2 parser, and the
small parsers and checks of the redis package."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from auction_backup_pipelines.redis import aof, backup, capture, client, cluster, resp
from auction_backup_pipelines.settings import RedisSettings

RDB = b"REDIS0010" + b"\xfa\x09redis-ver\x067.0.15" + b"\x00" * 300 + b"\xff" + b"\x12\x34\x56\x78\x9a\xbc\xde\xf0"
MARK = b"6a17a12c9ba9b669e20e5681df8dd52bc64d1e9b"


class FakeCli:
    def __init__(self, stdout: bytes, stderr: str, rc: int = 0):
        self.stdout = io.BufferedReader(io.BytesIO(stdout), buffer_size=64)
        self._stderr = stderr
        self.rc = rc

    def wait(self, timeout=None):
        return self.rc

    def poll(self):
        return self.rc

    def kill(self):
        pass


def run(stdout: bytes, stderr: str, rc: int = 0) -> bytes:
    err = io.BytesIO(stderr.encode())
    tee = io.BytesIO()
    source = capture.RedisCliRdb(FakeCli(stdout, stderr, rc), err, tee, "Redis at h:1", stall_timeout=60)  # type: ignore[arg-type]
    out = b""
    try:
        while block := source.read(100):
            out += block
    finally:
        source._stop.set()
    assert tee.getvalue() == out  # the scratch server loads exactly what the repository stored
    return out


def test_diskless_end_marker_is_dropped():
    err = f"SYNC sent to master, writing bytes of bulk transfer until EOF marker to '-'\nTransfer finished with success after {len(RDB)} bytes\n"
    assert run(RDB + MARK, err) == RDB


def test_disk_based_transfer_is_kept_whole():
    err = f"SYNC sent to master, writing {len(RDB)} bytes to '-'\nTransfer finished with success.\n"
    assert run(RDB, err) == RDB


def test_fixed_redis_cli_without_marker_on_stdout_is_accepted():
    err = f"writing bytes of bulk transfer until EOF marker to '-'\nTransfer finished with success after {len(RDB)} bytes\n"
    assert run(RDB, err) == RDB


@pytest.mark.parametrize(
    "stdout, stderr, rc, message",
    [
        (RDB[:200], "Error reading RDB payload", 1, r"failed \(exit 1\)"),
        (RDB[:200], "writing 331 bytes to '-'\nTransfer finished with success.", 0, "received 200 bytes"),
        (RDB[:-9] + b"\x00" * 9, f"writing {len(RDB)} bytes to '-'\n", 0, "truncated"),
        (b"-ERR oops" + b"\x00" * 40, "writing 49 bytes to '-'\n", 0, "not an RDB"),
        (RDB, "SYNC sent to master", 0, "did not report a finished transfer"),
        (b"", "Could not connect to Redis at h:1: Connection refused", 1, "Connection refused"),
    ],
)
def test_incomplete_or_failed_streams_raise(stdout, stderr, rc, message):
    with pytest.raises(client.SnapshotUnavailable, match=message):
        run(stdout, stderr, rc)


def test_check_rdb_returns_version():
    assert capture.check_rdb(RDB[:16], RDB[-16:], len(RDB), "x") == "0010"


def test_cluster_nodes_parsing():
    text = (
        "a1 10.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460 [5461->-b2]\n"
        "b2 10.0.0.2:7002@17002,node-b master - 0 0 2 connected 5461-10922\n"
        "c3 10.0.0.3:7003@17003 master - 0 0 3 connected 10923-16000 16001 16002-16383\n"
        "d4 10.0.0.4:7004@17004 slave c3 0 0 3 connected\n"
    )
    masters = cluster.parse_cluster_nodes(text)
    assert [(m["id"], m["host"], m["port"]) for m in masters] == [
        ("a1", "10.0.0.1", 7001),
        ("b2", "10.0.0.2", 7002),
        ("c3", "10.0.0.3", 7003),
    ]
    assert masters[2]["slots"] == [[10923, 16000], [16001, 16001], [16002, 16383]]
    with pytest.raises(client.RedisBackupError, match="degraded"):
        cluster.parse_cluster_nodes(text.replace("b2 10.0.0.2:7002@17002,node-b master", "b2 10.0.0.2:7002@17002 master,fail"))
    assert cluster.node_file("fe80::1", 7001) == "node-fe80__1-7001.rdb"


def test_aof_manifest_parsing():
    text = "file appendonly.aof.3.base.rdb seq 3 type b\nfile appendonly.aof.2.incr.aof seq 2 type h\nfile appendonly.aof.4.incr.aof seq 4 type i\n"
    assert aof.parse_aof_manifest(text) == [
        ("appendonly.aof.3.base.rdb", "b"),
        ("appendonly.aof.2.incr.aof", "h"),
        ("appendonly.aof.4.incr.aof", "i"),
    ]
    with pytest.raises(client.SnapshotUnavailable):
        aof.parse_aof_manifest("file ../../etc/passwd seq 1 type b\n")


def test_capture_window():
    now = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
    assert backup.check_capture_window(dt.date(2026, 11, 26), now=now).on_time
    with pytest.raises(client.LateCaptureRefused, match="Redis keeps no history.*allow_late_capture"):
        backup.check_capture_window(dt.date(2026, 11, 20), now=now)
    assert not backup.check_capture_window(dt.date(2026, 11, 20), allow_late_capture=True, now=now).on_time


@pytest.mark.parametrize(
    "exc, message",
    [
        (redis.ConnectionError("Error 111 connecting to h:1. Connection refused."), "nothing is listening at h:1"),
        (redis.AuthenticationError("invalid username-password pair"), "rejected the credentials for user 'default'"),
        (redis.ResponseError("NOAUTH Authentication required."), "rejected the credentials"),
        (redis.TimeoutError("Timeout reading from socket"), "did not answer in time"),
    ],
)
def test_errors_are_explained(exc, message):
    assert message in client.explain(exc, "h", 1)


# -- the bulk connection's RESP2 parser ------------------------------------------------------------

replies = st.recursive(
    st.one_of(st.none(), st.binary(max_size=40), st.integers(-(2**63), 2**63 - 1)),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


def encode(v) -> bytes:
    if v is None:
        return b"$-1\r\n"
    if isinstance(v, bytes):
        return b"$%d\r\n%s\r\n" % (len(v), v)
    if isinstance(v, int):
        return b":%d\r\n" % v
    return b"*%d\r\n" % len(v) + b"".join(encode(x) for x in v)


class ChunkedSocket:
    """Hands out the server's bytes in the given chunk sizes, as a real socket may."""

    def __init__(self, data: bytes, sizes: list[int]):
        self.data, self.sizes = data, sizes or [1]
        self.sent = b""

    def sendall(self, b):
        self.sent += b

    def recv(self, n):
        size = self.sizes[0] if len(self.sizes) == 1 else self.sizes.pop(0)
        chunk, self.data = self.data[: min(n, size)], self.data[min(n, size) :]
        return chunk


@settings(max_examples=200)
@given(st.lists(replies, min_size=1, max_size=5), st.lists(st.integers(1, 64), max_size=20))
def test_parser_reads_any_reply_split_anywhere(values, sizes):
    conn = resp.BulkConnection.__new__(resp.BulkConnection)
    conn._sock = ChunkedSocket(b"".join(encode(v) for v in values) + b"+string\r\n-WRONGTYPE no\r\n", sizes)
    conn._buf, conn._pos = b"", 0
    got = conn.run([("GET", b"k")] * (len(values) + 2))
    assert got[:-2] == values
    assert got[-2] == b"string" and isinstance(got[-1], resp.ReplyError) and str(got[-1]) == "WRONGTYPE no"
    assert conn._sock.sent == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" * (len(values) + 2)
    assert (
        resp.pack_command(("RESTORE", b"k", 0, b"\x00p", "ABSTTL"))
        == b"*5\r\n$7\r\nRESTORE\r\n$1\r\nk\r\n$1\r\n0\r\n$2\r\n\x00p\r\n$6\r\nABSTTL\r\n"
    )


def test_restore_target_parsing_keeps_credentials():
    base = RedisSettings(host="prod", port=7001, password="pw", username="backup")
    assert client.parse_target("10.0.0.5:7100", base) == RedisSettings(
        host="10.0.0.5", port=7100, password="pw", username="backup"
    )
    assert client.parse_target("[::1]:7001", base).host == "::1"
    for bad in ("localhost", ":7001", "h:0", "h:x", "h:70000"):
        with pytest.raises(client.RedisBackupError, match="host:port"):
            client.parse_target(bad, base)

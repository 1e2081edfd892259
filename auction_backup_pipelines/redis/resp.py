"""A minimal RESP2 pipeline client for the bulk work: SCAN, value reads, DUMP and RESTORE.

Why it exists: redis-py spends about 10 µs a command packing it and handling its reply, which
made the content digest of a large keyspace several times slower than the snapshot transfer.
`BulkConnection` packs and parses just what the bulk commands need; `cluster_runner` offers the
same `Runner` interface over RedisCluster, which routes each key to the node owning its slot.
Control commands (INFO, CONFIG, BGSAVE) stay with redis-py.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import redis
from redis.cluster import RedisCluster

from auction_backup_pipelines.redis.client import CHUNK, RedisBackupError, explain, raw_replies


class ReplyError(Exception):
    """An error reply inside a pipeline, returned in place so the caller decides (e.g. WRONGTYPE)."""


_HEADS: dict[str, bytes] = {}


def pack_command(command: tuple[Any, ...]) -> bytes:
    """One command as a RESP2 array of bulk strings."""
    if len(command) == 2 and type(command[1]) is bytes:  # (NAME, key): most bulk commands, packed fast
        head = _HEADS.get(command[0]) or _HEADS.setdefault(
            command[0], b"*2\r\n$%d\r\n%s\r\n" % (len(command[0]), command[0].encode())
        )
        return b"%s$%d\r\n%s\r\n" % (head, len(command[1]), command[1])
    parts = [b"*%d\r\n" % len(command)]
    for a in command:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(parts)


class BulkConnection:
    """A minimal RESP2 client for the bulk work: SCAN, reads, DUMP and RESTORE in pipelines.

    redis-py spends about 10 µs a command packing it and handling its reply, which made the
    digest of a large keyspace take several times longer than the transfer; this packs and
    parses just what the bulk commands need. Control commands (INFO, CONFIG, BGSAVE) and
    cluster routing stay with redis-py.
    """

    def __init__(
        self,
        *,
        host: str = "",
        port: int = 0,
        unix_socket: str = "",
        db: int = 0,
        username: str = "",
        password: str = "",
        timeout: float = 600.0,
        tls: ssl.SSLContext | None = None,
    ):
        """`tls`: a context from `redis.tls.context`, which verifies the certificate and that it names `host`."""
        where = (host, port) if host else ("localhost", 0)
        try:
            if unix_socket:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._sock.settimeout(timeout)
                self._sock.connect(unix_socket)
            else:
                self._sock = socket.create_connection((host, port), timeout=10)
                if tls is not None:
                    self._sock = tls.wrap_socket(self._sock, server_hostname=host)
                self._sock.settimeout(timeout)
        except OSError as exc:
            raise RedisBackupError(explain(exc, *where, username)) from None
        self._buf, self._pos = b"", 0
        hello: list[tuple[Any, ...]] = (
            [("AUTH", username, password) if username else ("AUTH", password)] if password else []
        ) + [("PING",)]
        if db:
            hello.append(("SELECT", db))
        for reply in self.run(hello):
            if isinstance(reply, ReplyError):
                self.close()
                raise RedisBackupError(explain(reply, *where, username))

    def close(self) -> None:
        self._sock.close()

    def run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send all commands, then read one reply each; error replies come back as ReplyError."""
        self._sock.sendall(b"".join(map(pack_command, commands)))
        return self._array(len(commands))

    def _fill(self, need: int = 1) -> None:
        """Receive until `need` more bytes are buffered; one join, so a huge value costs one copy."""
        parts, got = [self._buf[self._pos :]], 0
        while got < need:
            data = self._sock.recv(max(CHUNK, min(need - got, 64 * CHUNK)))
            if not data:
                raise RedisBackupError("Redis closed the connection")
            parts.append(data)
            got += len(data)
        self._buf, self._pos = b"".join(parts), 0

    def _reply(self) -> Any:
        while (end := self._buf.find(b"\r\n", self._pos)) < 0:
            self._fill()
        kind, line, self._pos = self._buf[self._pos : self._pos + 1], self._buf[self._pos + 1 : end], end + 2
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None
            if len(self._buf) - self._pos < n + 2:
                self._fill(n + 2 - (len(self._buf) - self._pos))
            value, self._pos = self._buf[self._pos : self._pos + n], self._pos + n + 2
            return value
        if kind == b":":
            return int(line)
        if kind == b"*":
            n = int(line)
            return None if n < 0 else self._array(n)
        if kind == b"+":
            return line
        if kind == b"-":
            return ReplyError(line.decode(errors="replace"))
        raise RedisBackupError(f"unexpected reply from Redis: {kind + line[:40]!r}")

    def _array(self, n: int) -> list[Any]:
        # Inline path for bulk strings and integers (GET, PEXPIRETIME, SCAN keys, HGETALL fields),
        # the bulk of all replies: no function call per element.
        out: list[Any] = []
        buf, pos = self._buf, self._pos
        for _ in range(n):
            end = buf.find(b"\r\n", pos)
            first = buf[pos] if end >= 0 else 0
            if first == 58:  # ":"
                out.append(int(buf[pos + 1 : end]))
                pos = end + 2
                continue
            if first != 36:  # not "$", or the reply runs past the buffer: the general path
                self._pos = pos
                out.append(self._reply())
                buf, pos = self._buf, self._pos
                continue
            size = int(buf[pos + 1 : end])
            if size < 0:
                out.append(None)
                pos = end + 2
            elif end + 4 + size <= len(buf):
                out.append(buf[end + 2 : end + 2 + size])
                pos = end + 4 + size
            else:
                self._pos = pos
                out.append(self._reply())
                buf, pos = self._buf, self._pos
        self._pos = pos
        return out


Runner = Callable[[list[tuple[Any, ...]]], list[Any]]


def cluster_runner(rc: RedisCluster) -> Runner:
    """The same interface over RedisCluster, which sends each command to the node owning its key."""

    def run(commands: list[tuple[Any, ...]]) -> list[Any]:
        for node in rc.get_nodes():  # replies are parsed by each node's client, not by rc's callbacks
            if node.redis_connection is not None:
                raw_replies(node.redis_connection)
        p = rc.pipeline()
        for c in commands:
            p.execute_command(*c)
        return [ReplyError(str(r)) if isinstance(r, redis.ResponseError) else r for r in p.execute(raise_on_error=False)]

    return run


def check_reply(reply: Any) -> Any:
    """The reply, or RedisBackupError if Redis answered with an error."""
    if isinstance(reply, Exception):
        raise RedisBackupError(f"Redis replied with an error: {reply}")
    return reply

"""A loopback port that listens and tells who connected, for the restore-target tests.

A refused restore must not have opened a connection: the kernel completes a TCP handshake on
a listening socket without `accept()`, so a connection attempt always leaves one in the
backlog, and `pending()` finds it afterwards. When a client is let through, `serve_one()`
reads its first Redis command (the AUTH that carries the credentials) and answers an error.
"""

from __future__ import annotations

import socket
import threading


class Listener:
    """A socket listening on 127.0.0.1 on a free port; close it with `close()` (or `with`)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.first_command: list[bytes] = []
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pending(self) -> int:
        """How many connections reached the port and were never accepted (taking them off the backlog)."""
        self.sock.setblocking(False)
        count = 0
        try:
            while True:
                conn, _ = self.sock.accept()
                conn.close()
                count += 1
        except BlockingIOError:
            return count
        finally:
            self.sock.setblocking(True)

    def serve_one(self, reply: bytes = b"-ERR this is not a Redis server\r\n", timeout: float = 120.0) -> None:
        """In a thread: accept one connection, keep its first RESP command, answer `reply`, hang up."""

        def serve() -> None:
            self.sock.settimeout(timeout)
            conn, _ = self.sock.accept()
            with conn, conn.makefile("rb") as f:
                conn.settimeout(timeout)
                head = f.readline()
                if head.startswith(b"*"):
                    for _ in range(int(head[1:])):
                        size = int(f.readline()[1:])
                        self.first_command.append(f.read(size + 2)[:-2])
                conn.sendall(reply)

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def served(self, timeout: float = 120.0) -> list[bytes]:
        """The first command of the connection `serve_one` accepted (empty: none came)."""
        assert self.thread is not None, "serve_one() was not called"
        self.thread.join(timeout)
        return self.first_command

    def close(self) -> None:
        self.sock.close()

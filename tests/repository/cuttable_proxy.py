"""A loopback TCP proxy in front of the stack's S3Proxy that a test can cut and restore.

An outage of the store is what the S3 backend's retries are for, and stopping the shared
S3Proxy would disturb every other test using it. This proxy forwards byte for byte while it
is up; `cut()` resets every open connection and from then on answers each new one with a
reset after reading its request line (kept in `refused`, so a test can wait until a given
request was attempted during the outage), until `restore()`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed server's host answers."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class CuttableProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `target`; `close()` (or `with`) ends it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.refused: list[bytes] = []  # request lines answered with a reset while cut
        self._down = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> CuttableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut(self) -> None:
        self._down.set()
        with self._lock:
            sockets, self._open = list(self._open), set()
        for s in sockets:
            _reset(s)

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            handler = self._refuse if self._down.is_set() else self._forward
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def _refuse(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        line = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in line and len(line) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                line += chunk
        with self._lock:
            self.refused.append(line.split(b"\r\n", 1)[0])
        _reset(conn)

    def _forward(self, conn: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(conn)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((conn, upstream))
        threading.Thread(target=self._pump, args=(upstream, conn), daemon=True).start()
        self._pump(conn, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.difference_update((src, dst))
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

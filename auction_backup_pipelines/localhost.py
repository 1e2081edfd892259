"""Loopback helpers for the servers this package starts itself (scratch Redis, recovered PostgreSQL)."""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick; it may be taken before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

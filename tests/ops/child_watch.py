"""Watching the programs our engines start, from /proc while they run: their argv and environment.

tests/ops/test_secrets.py proves that no password reaches an argv, test_child_environments.py
that no secret reaches a child's environment; both must see every child, grandchildren
included (runuser -> pg_ctl -> postgres). Two ways together: `subprocess.Popen` is wrapped, so
each start is recorded (argv, and the `env` it was given) and read at once (Popen returns after
the exec), and a thread walks the process tree under this process every few ms. A server that
leaves the tree (pg_ctl detaches the postmaster) is read with `sample_tree`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True)
class Started:
    """One subprocess.Popen call: what it ran and the environment it passed (None: inherit ours)."""

    argv: tuple[str, ...]
    env: dict[str, str] | None = field(repr=False)


@dataclass(frozen=True)
class Seen:
    """A process as /proc showed it: its command line and the environment it was started with."""

    pid: int
    argv: tuple[str, ...]
    environ: dict[str, str] = field(repr=False)

    @property
    def program(self) -> str:
        """The program's name: argv[0]'s last part ("postgres: checkpointer" for a backend)."""
        return os.path.basename(self.argv[0]) if self.argv else ""

    @property
    def command(self) -> str:
        return " ".join(self.argv)


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process now (from /proc/<pid>/stat)."""
    parents = {}
    for entry in PROC.glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # the name in parentheses may hold spaces and ')': the fields after the last ')' are safe
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every process under `root` (children, their children, ...), as they are now."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_pids().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def split_nul(raw: bytes) -> list[str]:
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


class ChildWatch:
    """As a context manager: records every child started and every process under ours until exit."""

    def __init__(self, monkeypatch: Any, interval: float = 0.005):
        self.started: list[Started] = []
        self.seen: list[Seen] = []
        self._keys: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._me = os.getpid()
        self._my_cmdline = (PROC / "self" / "cmdline").read_bytes()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="child-watch", daemon=True)
        original = subprocess.Popen
        watch = self

        class Recording(original):  # type: ignore[misc, valid-type]
            def __init__(self, args: Any, *a: Any, **kw: Any):
                super().__init__(args, *a, **kw)
                argv = tuple(map(str, args)) if isinstance(args, (list, tuple)) else (str(args),)
                with watch._lock:
                    watch.started.append(Started(argv, kw.get("env")))
                watch.sample(self.pid)

        monkeypatch.setattr(subprocess, "Popen", Recording)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self, pid: int) -> None:
        """Read one process's command line and environment, if it is still there and no longer us."""
        try:
            cmdline = (PROC / str(pid) / "cmdline").read_bytes()
            environ = (PROC / str(pid) / "environ").read_bytes()
        except OSError:
            return  # gone already
        if not cmdline or cmdline == self._my_cmdline:
            # empty: a zombie; ours: forked but not yet exec'd, so its environ is still ours
            return
        key = (pid, hash((cmdline, environ)))
        with self._lock:
            if key in self._keys:
                return
            self._keys.add(key)
            pairs = (item.partition("=") for item in split_nul(environ))
            self.seen.append(Seen(pid, tuple(split_nul(cmdline)), {k: v for k, _, v in pairs}))

    def sample_tree(self, root: int) -> None:
        """Read `root` and every process under it (a server that left our tree, say)."""
        for pid in [root, *descendants(root)]:
            self.sample(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for pid in descendants(self._me):
                self.sample(pid)

    @property
    def argvs(self) -> list[str]:
        """The command of every start recorded, as one string each."""
        return [" ".join(s.argv) for s in self.started]

    @property
    def commands(self) -> list[str]:
        """The command line of every process seen in /proc, as one string each."""
        return [s.command for s in self.seen]

    def programs(self) -> set[str]:
        return {s.program for s in self.seen}

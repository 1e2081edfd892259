"""A backend wrapper that fails at the Nth storage operation, to prove crash safety step by step.

Every call that changes the store is one numbered operation: opening a writer (a temp file or
an upload begins), each half of every `write()` on it (writes are split in two, so a fault can
land in the middle of any object, the manifest included), the writer's commit (fsync + rename
locally, the final PUT / complete on S3), each key of a delete (a `delete_many` is decomposed
into single deletes, in order), `remove_temporaries`, and taking and releasing a lock.

At operation `fail_at` the wrapper either

* raises `InjectedFault` (a StorageError, as a real store failure would): every `except` and
  `finally` of the code under test runs, as it would after a failed PUT or a full disk; or
* with `kill=True` calls `os._exit(KILLED)`: the process ends *there*, no exception
  propagates, no cleanup, `finally` block or context-manager exit runs, open files are left
  as the kernel leaves them. That is what SIGKILL or a power cut (minus the page cache; see
  the fsync trace test) does, and only a child process can do it honestly: `run_killed` forks
  one, lets it run the scenario and inspects the store from the parent "as after a crash".

With `fail_at=None` it only counts, so a test learns how many operations a scenario has and
then fails at each one in turn. `log` records the operations in order (for failure messages).
"""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

from auction_backup_pipelines.repository.storage import Backend, StorageError, WrappingBackend

KILLED = 86  # the exit status of a child killed by the fault (tells it from a crash of the test)


class InjectedFault(StorageError):
    """The store failed at the operation a test chose."""


class FaultyBackend(WrappingBackend):
    def __init__(self, inner: Backend, fail_at: int | None = None, kill: bool = False, count_writes: bool = True):
        super().__init__(inner)
        self.fail_at = fail_at
        self.kill = kill
        self.count_writes = count_writes
        self.count = 0
        self.log: list[str] = []

    def step(self, what: str) -> None:
        """One storage operation is about to happen; fail here when it is the chosen one."""
        self.count += 1
        self.log.append(what)
        if self.count == self.fail_at:
            if self.kill:
                os._exit(KILLED)
            raise InjectedFault(f"injected fault at operation {self.count}: {what}")

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        self.step(f"open {key}")
        with self.inner.writer(key) as target:
            yield _FaultyFile(self, key, target) if self.count_writes else target  # type: ignore[misc]
            self.step(f"commit {key}")  # before the inner exit, which publishes

    def delete(self, key: str) -> None:
        self.step(f"delete {key}")
        self.inner.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    def remove_temporaries(self, prefix: str = "") -> builtins.list[str]:
        self.step(f"remove temporaries {prefix}")
        return self.inner.remove_temporaries(prefix)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        self.step(f"lock {name}")
        with self.inner.lock(name):
            yield
            self.step(f"unlock {name}")


class _FaultyFile:
    def __init__(self, owner: FaultyBackend, key: str, target: BinaryIO):
        self._owner = owner
        self._key = key
        self._target = target

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        half = len(view) // 2
        for part in (view[:half], view[half:]):
            if len(part):
                self._owner.step(f"write {self._key} ({len(part)} bytes)")
                self._target.write(bytes(part))
        return len(view)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def count_operations(scenario: Callable[[FaultyBackend], object], make: Callable[[], Backend], count_writes: bool = True) -> int:
    """How many storage operations `scenario` performs on a fresh store from `make`, fault-free."""
    faulty = FaultyBackend(make(), count_writes=count_writes)
    scenario(faulty)
    return faulty.count


def run_killed(
    scenario: Callable[[FaultyBackend], object], make: Callable[[], Backend], fail_at: int, count_writes: bool = True
) -> bool:
    """Run `scenario` in a forked child whose store kills it at operation `fail_at`; returns True
    when the kill happened (False: the scenario finished first). The parent's store is untouched
    by the child's Python state: `make` builds the child's own backend (its own S3 connections)."""
    pid = os.fork()
    if pid == 0:  # the child: run, and never return into the test runner
        code = 0
        try:
            scenario(FaultyBackend(make(), fail_at=fail_at, kill=True, count_writes=count_writes))
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, KILLED), f"the scenario failed in the child before operation {fail_at} (exit {code})"
    return code == KILLED

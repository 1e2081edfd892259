"""Content facts of an RDB snapshot, computed while it streams, by the native `rdb-facts` helper.

Why a native helper: the content digest in Python costs about 10 µs a key, after the snapshot
has been loaded into a scratch server, which made a snapshot several times slower than
`redis-cli --rdb` alone. `rdb-facts` (Rust, in native/rdb-facts, parsing with the maintained
`rdb` crate) reads the RDB from a pipe as the bytes arrive and computes the same facts as
`facts.collect_facts` does on a live server, on the second core while the server's fork
writes the snapshot. It checks the RDB's CRC64 as Redis does when loading it. It leaves
out the keys it cannot read as Redis serves them (streams, module values, hashes with
per-field TTLs), which it counts instead (`undecoded`), and keys already expired when the
snapshot was taken.

`stack/install.sh` builds it into the project's virtualenv. When it is missing or fails, the
caller falls back to the scratch server, which is slower but gives the same facts.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from auction_backup_pipelines import native
from auction_backup_pipelines.child_env import base_env

HELPER = "rdb-facts"
QUEUE_CHUNKS = 64  # chunks of at most 1 MiB waiting for the helper: bounds memory if it lags


def helper_path() -> str | None:
    """The helper next to this interpreter (the virtualenv's bin, where install.sh puts it), else on PATH."""
    return native.helper_path(HELPER)


class RdbFactsSink:
    """A write()-able fed with the RDB's bytes in order; `result()` then gives the helper's facts.

    Writes are queued and passed to the helper by a thread, so a moment of lag in the helper
    does not hold up the transfer. A helper that fails never fails the backup: `result()`
    returns None and `problem` says why, and the caller computes the facts the slow way.
    """

    def __init__(self, path: str | None, bucket_ms: int, captured_ms: int):
        self.problem = "" if path else f"{HELPER} is not installed (stack/install.sh builds it)"
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_CHUNKS)
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        if path:
            try:
                self._proc = subprocess.Popen(
                    [path, str(bucket_ms), str(captured_ms)],
                    env=base_env(),  # it reads a pipe: none of our secrets
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            except OSError as exc:  # not executable, built for another machine, no fork possible
                self.problem = f"{HELPER} could not start: {exc}"
                return
            self._thread = threading.Thread(target=self._feed, name="rdb-facts-feed", daemon=True)
            self._thread.start()

    def _feed(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin, broken = self._proc.stdin, False
        while (data := self._queue.get()) is not None:
            if broken:
                continue  # the helper has gone: keep taking, so write() never blocks
            try:
                stdin.write(data)
            except BaseException:  # a broken pipe above all; the helper's exit code tells why
                broken = True
        with contextlib.suppress(OSError):
            stdin.close()

    def write(self, data: bytes) -> int:
        if self._thread is not None:
            self._queue.put(data)
        return len(data)

    def result(self) -> dict[str, Any] | None:
        """Wait for the helper to finish the stream; its facts, or None (see `problem`)."""
        if self._proc is None or self._thread is None:
            return None
        self._queue.put(None)
        self._thread.join()
        self._proc.stdin = None  # closed by the feeding thread; communicate() would flush it
        out, err = self._proc.communicate()
        rc, self._proc = self._proc.returncode, None
        if rc != 0 or not out:
            self.problem = err.decode(errors="replace").strip() or f"{HELPER} exited with {rc} and no output"
            return None
        try:
            return json.loads(out)
        except ValueError:
            self.problem = f"{HELPER} wrote output that is not JSON: {out[:80]!r}"
            return None

    def close(self) -> None:
        """Stop the helper if the transfer ended early (an error): nothing waits for its result."""
        if self._thread is not None and self._proc is not None:
            self._proc.kill()
            self._queue.put(None)
            self._thread.join()
            self._proc.wait()
            self._proc = None


@contextlib.contextmanager
def streaming(bucket_ms: int, captured_ms: int) -> Iterator[RdbFactsSink]:
    sink = RdbFactsSink(helper_path(), bucket_ms, captured_ms)
    try:
        yield sink
    finally:
        sink.close()


class Fanout:
    """Writes each chunk to several writers: the scratch copy of the RDB and the facts helper."""

    def __init__(self, *writers: Any):
        self.writers = writers

    def write(self, data: bytes) -> int:
        for w in self.writers:
            w.write(data)
        return len(data)

"""The Kafka export's writer thread: hashing and compressing sealed blocks beside the consumer loop.

Kept apart from export.py (which decides what day D is and reads it) because it knows nothing of
Kafka: it takes finished blocks and writes them to the repository's stream.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from auction_backup_pipelines.repository.streams import ByteSink

CHUNK_BYTES = 16 << 20  # handed to the writer thread at once (see ChunkWriter)


class ChunkWriter:
    """Hashes and compresses finished blocks in a second thread.

    sha256 and zstd release the GIL, so they run beside the consumer loop, which then only
    encodes (measured: about a third off the export's time). Chunks are large because each
    hand-back of the GIL costs up to the interpreter's 5 ms switch interval; one chunk in
    the queue, one being written and one being built bound the memory (~3 x CHUNK_BYTES).
    """

    def __init__(self, out: ByteSink):
        self._out = out
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="kafka-export-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain without writing after a failure
            sha, blocks = item
            try:
                for head, records in blocks:
                    sha.update(records)
                    self._out.write(head)
                    self._out.write(records)
            except BaseException as exc:  # re-raised in the caller's thread
                self._error = exc

    def put(self, sha: Any, blocks: list[tuple[bytes, bytes]]) -> None:
        """`blocks`: (head, records) of consecutive blocks of one partition; `sha`: its digest."""
        if self._error is not None:
            raise self._error
        self._queue.put((sha, blocks))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

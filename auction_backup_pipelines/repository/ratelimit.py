"""A byte-rate limit (token bucket) for transfers that compete with production: Kafka exports read
from the brokers the platform writes to, and offsite uploads share its network link.

Written here rather than taken from a library: none of the project's dependencies paces bytes
(s3transfer's `max_bandwidth` applies only to its managed uploads, not to the multipart writer
we stream into; Kafka's byte quotas are broker configuration, not the client's to set), and a
bucket that sleeps in the writing thread is a few lines. The clock and the sleep are injectable
so that tests check the pacing from the limiter's own accounting instead of timing a transfer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

BURST_S = 0.1
"""The bucket holds this many seconds' worth of bytes: short bursts pass, the average stays at the rate."""


class ByteRateLimiter:
    """At most `bytes_per_s` on average: `take(n)` sleeps for as long as the bytes taken so far
    are ahead of the rate. A take larger than the bucket is allowed and paid for by sleeping,
    so any write size works. Thread-safe; `bytes_per_s` <= 0 never waits."""

    def __init__(
        self,
        bytes_per_s: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.rate = max(0, int(bytes_per_s))
        self.capacity = self.rate * BURST_S
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._last = clock()
        self._lock = threading.Lock()
        self.bytes_taken = 0
        self.waited_s = 0.0
        """Totals since creation: what `metadata` reports and what tests check."""

    @property
    def limited(self) -> bool:
        return self.rate > 0

    def minimum_duration_s(self, nbytes: int) -> float:
        """The least time `nbytes` can take from a full bucket at this rate."""
        return max(0.0, (nbytes - self.capacity) / self.rate) if self.limited else 0.0

    def take(self, nbytes: int) -> float:
        """Account for `nbytes` about to be sent; sleep first if they would exceed the rate. Returns the wait."""
        if not self.limited or nbytes <= 0:
            self.bytes_taken += max(nbytes, 0)
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            self.bytes_taken += nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            if wait:
                # Sleeping under the lock queues the other writers behind this debt: the rate is shared.
                self._sleep(wait)
                self.waited_s += wait
                self._tokens = 0.0
                self._last = self._clock()
        return wait

    def metadata(self) -> dict[str, Any]:
        """For a backup's manifest: the limit and the time spent waiting for it; nothing when unlimited."""
        return {"rate_limit": {"max_bytes_per_s": self.rate, "throttled_s": round(self.waited_s, 3)}} if self.limited else {}


class PacedSink:
    """A write-only stream that takes each write's bytes from `limiter` before passing them on."""

    def __init__(self, out: Any, limiter: ByteRateLimiter) -> None:
        self._out, self.limiter = out, limiter

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.limiter.take(len(data))
        return self._out.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._out, name)


def paced(out: Any, limiter: ByteRateLimiter) -> Any:
    """`out` itself when `limiter` has no limit, else `out` paced by it.

    The Kafka export writes each block's uncompressed records here (KAFKA_EXPORT_MAX_BYTES_PER_S
    counts message bytes, about what the brokers send); its consumer, at most one chunk ahead of
    the writer thread, is held back with it."""
    return PacedSink(out, limiter) if limiter.limited else out

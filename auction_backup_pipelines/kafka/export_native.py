"""A Kafka day export's read in the native `kafka-export` helper (native/kafka-helpers).

Why a native helper: in Python every message costs interpreter time to take apart and encode,
so the export spent 1.6-1.9x the CPU of a plain Python consumer reading the same messages and
fell behind it whenever the second core was busy. The helper reads the planned offset ranges
with the same librdkafka configuration (security included) and writes exactly the bytes and
per-partition stats `export.export_partitions` would; here they go on into the repository's
file (zstd, sha256, the rate limit) as before. Without the helper, export.py reads in Python.

When the export is not rate-limited and its file is zstd-compressed, the helper also hashes and
compresses the stream itself (`zstd_level`, in a second thread) and we store its bytes as they
come (`ArtifactStream.write_compressed`): moving the raw stream through a pipe to do the same
here cost about a tenth of the export's CPU. A rate limit counts raw message bytes, which only
this side sees, so a limited export keeps the raw stream.

The job, credentials included, goes to the helper's stdin: never into its argv or environment.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Sequence
from typing import IO, Any

from auction_backup_pipelines import native
from auction_backup_pipelines.kafka.connection import Cluster, librdkafka_properties
from auction_backup_pipelines.kafka.records import KafkaBackupError, consumer_config
from auction_backup_pipelines.repository.streams import ArtifactStream, ByteSink

HELPER = "kafka-export"
READ_CHUNK = 1 << 20
QUEUE_CHUNKS = 16  # MiB read ahead of the compression, at most
STATS = ("start_offset", "end_offset", "messages", "first_offset", "last_offset", "sha256", "early_timestamps")


def helper_path() -> str | None:
    return native.helper_path(HELPER)


def _drain(stdout: IO[bytes], chunks: queue.Queue[bytes], stop: threading.Event) -> None:
    """Everything the helper writes, chunk by chunk, then b"": until `stop` (the taker failed;
    the helper is then killed, which ends the read)."""
    while True:
        chunk = stdout.read(READ_CHUNK)
        while not stop.is_set():
            try:
                chunks.put(chunk, timeout=0.1)
                break
            except queue.Full:
                continue
        if not chunk or stop.is_set():
            return


def export_partitions(
    path: str,
    cluster: Cluster,
    timeout: float,
    topic: str,
    ranges: Sequence[Any],
    out: ByteSink,
    early_before_ms: int,
    stall_timeout: float,
    zstd_level: int | None = None,
) -> dict[str, dict[str, Any]]:
    """`export.export_partitions` in the helper at `path`: the ranges' messages into `out`, and
    the manifest entry of each partition. Raises KafkaBackupError with the helper's one line.

    With `zstd_level`, `out` must be a zstd ArtifactStream: the helper compresses, and its
    bytes and the raw stream's size and sha256 go into `out` as they are."""
    artifact = out if isinstance(out, ArtifactStream) and zstd_level is not None else None
    if zstd_level is not None and (artifact is None or artifact.compression != "zstd"):
        raise ValueError("the helper compresses only into a zstd artifact")
    job = {
        "consumer": librdkafka_properties(consumer_config(cluster, timeout)),
        "topic": topic,
        "ranges": [{"partition": r.partition, "start": r.start, "end": r.end} for r in ranges],
        "early_before_ms": early_before_ms,
        "stall_timeout_s": stall_timeout,
        **({"zstd_level": zstd_level} if artifact is not None else {}),
    }
    store = artifact.write_compressed if artifact is not None else out.write

    def talk(stdin: IO[bytes], stdout: IO[bytes]) -> None:
        stdin.write(json.dumps(job).encode() + b"\n")
        stdin.close()
        # A thread drains the pipe while this one compresses and hashes (both release the GIL):
        # reading and compressing in turn left the helper blocked on a full pipe half the time.
        chunks: queue.Queue[bytes] = queue.Queue(maxsize=QUEUE_CHUNKS)
        stop = threading.Event()
        reader = threading.Thread(target=_drain, args=(stdout, chunks, stop), name="kafka-export-pipe", daemon=True)
        reader.start()
        try:
            while chunk := chunks.get():
                store(chunk)
        except BaseException:
            stop.set()
            raise

    rc, err = native.run_helper(path, talk, KafkaBackupError, "nothing was published")
    line = native.last_line(err)
    if rc != 0 or not line:
        raise KafkaBackupError(line or f"{HELPER} exited with {rc}; nothing was published")
    report = json.loads(line)
    found = report["partitions"]
    if artifact is not None:
        if "stream" not in report:  # a helper built before it could compress wrote the raw stream
            raise KafkaBackupError(f"{HELPER} is older than this package (run stack/install.sh); nothing was published")
        artifact.compressed_content(report["stream"]["size"], report["stream"]["sha256"])
    return {str(r.partition): {k: found[str(r.partition)][k] for k in STATS} for r in ranges}

"""A Kafka restore's replay and read-back in the native `kafka-replay` helper (native/kafka-helpers).

Why a native helper: in Python every message costs interpreter time three times over (decode
the backup, produce, read back and hash), so a verified restore of 1 M messages took 1.4-1.6x
the CPU of a plain Python producer writing the same messages, and fell further behind when
the second core was busy. The helper runs the same steps with the same librdkafka
configuration (security included) and the same checks, see its header comment; here we feed it
the backup's bytes (read through the repository, sha256-checked) and judge its report exactly
as restore.py judges the Python replay's. Without the helper, restore.py replays in Python.

The job, credentials included, goes to the helper's stdin: never into its argv or environment.
"""

from __future__ import annotations

import json
import threading
from typing import IO, Any

from auction_backup_pipelines import native
from auction_backup_pipelines.kafka.connection import Cluster, librdkafka_properties
from auction_backup_pipelines.kafka.records import KafkaBackupError, VerificationError, consumer_config, export_file
from auction_backup_pipelines.kafka.restore_offsets import OffsetTranslator, PartitionProgress, TopicJob, check_replay
from auction_backup_pipelines.kafka.restore_verify import mismatch, segments_of
from auction_backup_pipelines.repository.repository import Repository

HELPER = "kafka-replay"
FEED_CHUNK = 1 << 20


def helper_path() -> str | None:
    return native.helper_path(HELPER)


def job_line(
    job: TopicJob, producer: dict[str, Any], target: Cluster, translator: OffsetTranslator, timeouts: tuple[float, float, float]
) -> bytes:
    timeout, flush_timeout, stall_timeout = timeouts
    return (
        json.dumps(
            {
                "producer": librdkafka_properties(producer),
                "consumer": librdkafka_properties(consumer_config(target, timeout)),
                "topic": job.target,
                "partitions": [
                    {"partition": p, "want": job.messages(p), "segments": segments_of(job, p), "wanted": translator.wanted(p)}
                    for p in range(job.info.partitions)
                ],
                "flush_timeout_s": flush_timeout,
                "stall_timeout_s": stall_timeout,
            }
        ).encode()
        + b"\n"
    )


def replay(
    path: str,
    repo: Repository,
    job: TopicJob,
    producer: dict[str, Any],
    target: Cluster,
    base: dict[int, int],
    translator: OffsetTranslator,
    timeouts: tuple[float, float, float],
) -> tuple[dict[int, PartitionProgress], ReadBackReport]:
    """Replay and read back `job` in the helper at `path`: (progress per partition, the read-back's report).

    Raises KafkaBackupError when the replay failed (restore.py then removes a topic it created);
    the report's `finish()` raises VerificationError when what was read back differs.
    """
    out: list[bytes] = []

    def talk(stdin: IO[bytes], stdout: IO[bytes]) -> None:
        reader = threading.Thread(target=lambda: out.append(stdout.read()), daemon=True)
        reader.start()
        try:
            _feed(stdin, repo, job, job_line(job, producer, target, translator, timeouts))
        finally:
            reader.join()

    rc, err = native.run_helper(path, talk, KafkaBackupError, "nothing was written")
    if rc != 0 or not out or not out[0]:
        raise KafkaBackupError(f"writing {job.target!r} failed: {native.last_line(err) or f'{HELPER} exited with {rc}'}")
    return _judge(json.loads(out[0]), job, base, translator, timeouts[1])


def _feed(stdin: Any, repo: Repository, job: TopicJob, line: bytes) -> None:
    """The job, then each day's records file, read through the repository (sha256-checked)."""
    try:
        stdin.write(line)
        for backup in job.backups:
            with repo.open(backup, export_file(job.topic)) as f:
                while chunk := f.read(FEED_CHUNK):
                    stdin.write(chunk)
    except BrokenPipeError:
        pass  # the helper stopped early: its report or its stderr says why
    finally:
        try:
            stdin.close()
        except BrokenPipeError:
            pass


class ReadBackReport:
    """What the helper read back, judged like restore_verify.ReadBack's (same `finish()`)."""

    def __init__(self, target: str, compared: int, problems: list[str], error: str | None):
        self.target, self.compared, self.problems, self.error = target, compared, problems, error

    def finish(self) -> int:
        """The messages compared; raises VerificationError on a mismatch or a stalled read-back."""
        if self.error:
            raise VerificationError(self.error)
        if self.problems:
            raise mismatch(self.target, self.problems)
        return self.compared


def _judge(
    report: dict[str, Any], job: TopicJob, base: dict[int, int], translator: OffsetTranslator, flush_s: float
) -> tuple[dict[int, PartitionProgress], ReadBackReport]:
    """restore.py's checks of a replay (check_replay), on the helper's report; then what was written."""
    parts = {p: report["partitions"][str(p)] for p in range(job.info.partitions)}
    want = {p: job.messages(p) for p in parts}
    sent, delivered = {p: r["sent"] for p, r in parts.items()}, {p: r["delivered"] for p, r in parts.items()}
    check_replay(job.target, want, sent, delivered, list(report["failures"]), report["unacknowledged"], flush_s)
    progress = {p: PartitionProgress(base=base.get(p, 0)) for p in parts}
    for p, r in parts.items():
        if want[p]:
            first = r["first_restored"]
            st = progress[p]
            st.first_original, st.first_restored, st.last_restored, st.delivered = (
                r["first_original"],
                first,
                first + want[p] - 1,
                want[p],
            )
            for original, position in r["mapping"]:
                translator.mapping[(p, original)] = first + position
    return progress, ReadBackReport(job.target, int(report["compared"]), report["problems"], report["read_back_error"])

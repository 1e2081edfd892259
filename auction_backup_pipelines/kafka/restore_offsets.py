"""What a Kafka restore tracks per topic and partition while it replays, and the consumer-group
offsets it translates from the backup's numbering to the target's and applies (only when asked)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from auction_backup_pipelines.kafka.records import KafkaBackupError, RestoreRefused, TopicInfo, error_text
from auction_backup_pipelines.kafka.restore_report import GroupRestore, TranslatedOffset
from auction_backup_pipelines.repository.manifest import Backup


class OffsetTranslator:
    """Maps committed offsets to restored offsets while delivery reports arrive in order."""

    def __init__(self, wanted: Mapping[int, Iterable[int]]):
        self._wanted = {p: sorted(set(offs)) for p, offs in wanted.items()}
        self._next = {p: 0 for p in self._wanted}
        self.mapping: dict[tuple[int, int], int] = {}

    def wanted(self, partition: int) -> list[int]:
        """The original offsets of `partition` to translate, ascending."""
        return list(self._wanted.get(partition, ()))

    def delivered(self, partition: int, original: int, restored: int) -> None:
        wanted = self._wanted.get(partition)
        if not wanted:
            return
        i = self._next[partition]
        while i < len(wanted) and wanted[i] <= original:
            self.mapping[(partition, wanted[i])] = restored
            i += 1
        self._next[partition] = i

    def threshold(self, partition: int) -> float:
        """The smallest original offset still to map in `partition` (infinity: none), so a
        caller can skip calling `delivered` for the messages before it."""
        wanted = self._wanted.get(partition) or ()
        i = self._next.get(partition, 0)
        return wanted[i] if i < len(wanted) else float("inf")

    def shift(self, partition: int, by: int) -> None:
        """Add `by` to the mapped offsets of `partition`: a restore maps message positions first
        (0, 1, ...) and learns where the partition's copy starts only from its delivery reports."""
        for key in [k for k in self.mapping if k[0] == partition]:
            self.mapping[key] += by

    def translate(self, partition: int, committed: int, end: int) -> int:
        return self.mapping.get((partition, committed), end)


@dataclass
class PartitionProgress:
    base: int  # high watermark of the target partition before the replay
    first_original: int | None = None
    first_restored: int | None = None
    last_restored: int | None = None
    delivered: int = 0

    @property
    def end(self) -> int:
        return self.base if self.last_restored is None else self.last_restored + 1


def check_replay(
    topic: str,
    want: Mapping[int, int],
    sent: Mapping[int, int],
    delivered: Mapping[int, int],
    failures: list[str],
    left: int,
    flush_s: float,
) -> None:
    """The checks every replay ends with (the Python one and the native helper's): failures met
    while producing, messages still unacknowledged after the flush, a partition whose files held
    another count than its manifests, or whose last delivery report is missing. Raises
    KafkaBackupError naming the first five."""
    if not failures and not left:
        failures = [
            f"partition {p}: the backups hold {want[p]} messages, their files {sent[p]}" for p in sent if sent[p] != want[p]
        ]
    if not failures and not left:
        failures = [
            f"partition {p}: the delivery report of its last message is missing"
            for p in want
            if want[p] and delivered[p] != want[p]
        ]
    if failures or left:
        detail = "; ".join(failures[:5]) or f"{left} messages still unacknowledged after {flush_s:g} s"
        raise KafkaBackupError(f"writing {topic!r} failed: {detail}")


@dataclass
class TopicJob:
    topic: str
    target: str
    backups: list[Backup]
    info: TopicInfo  # from the last day: newest partition count, configs and group offsets
    exists: bool = False
    create_config: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def max_message_bytes(self) -> int:
        return int(self.info.configs.get("max.message.bytes", "0"))

    def messages(self, partition: int) -> int:
        """How many messages of `partition` the job's backups hold, by their manifests."""
        return sum(b.metadata["partitions"].get(str(partition), {"messages": 0})["messages"] for b in self.backups)


def group_target(group: str, prefix: str) -> str:
    return f"{prefix}{group}" if prefix else group


def check_groups(admin: AdminClient, jobs: list[TopicJob], prefix: str, force: bool, timeout: float) -> None:
    """Committing offsets needs idle groups, and replacing existing offsets needs --force."""
    problems = []
    for job in jobs:
        for group in job.info.consumer_groups:
            target_group = group_target(group, prefix)
            desc = admin.describe_consumer_groups([target_group], request_timeout=timeout)[target_group]
            try:
                members = desc.result().members
            except KafkaException:
                members = []
            if members:
                problems.append(f"group {target_group!r} has {len(members)} active members (stop them first)")
                continue
            req = ConsumerGroupTopicPartitions(target_group, [TopicPartition(job.target, p) for p in range(job.info.partitions)])
            try:
                current = admin.list_consumer_group_offsets([req], request_timeout=timeout)[target_group].result()
                committed = [tp for tp in current.topic_partitions or () if tp.offset >= 0]
            except KafkaException:
                committed = []
            if committed and not force:
                problems.append(
                    f"group {target_group!r} already has committed offsets on {job.target!r} (pass --force to replace them)"
                )
    if problems:
        raise RestoreRefused("cannot apply consumer-group offsets: " + "; ".join(problems) + ". Nothing was written")


def apply_group_offsets(
    admin: AdminClient,
    job: TopicJob,
    prefix: str,
    translator: OffsetTranslator,
    progress: dict[int, PartitionProgress],
    apply: bool,
    timeout: float,
) -> dict[str, GroupRestore]:
    report: dict[str, GroupRestore] = {}
    for group, offsets in sorted(job.info.consumer_groups.items()):
        target_group = group_target(group, prefix)
        parts = {}
        for p, committed in sorted(offsets.items()):
            st = progress.get(p)
            if st is None:
                continue
            restored = translator.translate(p, committed, st.end)
            if st.first_original is None:
                note = "nothing restored in this partition"
            elif committed < st.first_original:
                note = "before the restored range: set to its first message"
            elif (p, committed) not in translator.mapping:
                note = "past the last restored message: set to the end"
            else:
                note = ""
            parts[str(p)] = TranslatedOffset(committed=committed, restored=restored, note=note)
        applied = False
        if apply and parts:
            req = ConsumerGroupTopicPartitions(
                target_group, [TopicPartition(job.target, int(p), v.restored) for p, v in parts.items()]
            )
            try:
                admin.alter_consumer_group_offsets([req], request_timeout=timeout)[target_group].result()
            except KafkaException as exc:
                raise KafkaBackupError(
                    f"messages restored and verified, but committing offsets for group {target_group!r} failed: {error_text(exc)}"
                ) from None
            applied = True
        report[group] = GroupRestore(target_group=target_group, partitions=parts, applied=applied)
    return report


def by_partition(groups: dict[str, dict[int, int]]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = collections.defaultdict(dict)
    for g, offs in groups.items():
        for p, o in offs.items():
            out[p][g] = o
    return out

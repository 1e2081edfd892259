"""Kafka backup assets: one daily-partitioned export per topic.

Each topic gets its own asset (kafka/topic_export/<topic>) downstream of a source asset for
the live topic (kafka/topic/<topic>), so the UI shows every topic's lineage and a backfill can
pick topics and days independently. A past partition is not refused as for PostgreSQL: the
export reconstructs the day from the log by timestamp, or is refused (defs/shared/refusals.py)
if retention removed part of it.
"""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
)

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.kafka.export import backup_topic_day
from auction_backup_pipelines.policy.capture_window import CaptureWindowError

from ..shared.keys import topic_export_key, topic_source_key
from ..shared.metadata import backup_metadata
from ..shared.refusals import refuse
from ..shared.resources import BackupRepositoryResource, KafkaResource

GROUP = "kafka"


def partitions_markdown(partitions: dict[str, dict]) -> MetadataValue:
    lines = ["| partition | offsets | messages | early ts | sha256 |", "|---:|---|---:|---:|---|"]
    for p in sorted(partitions, key=int):
        s = partitions[p]
        span = f"{s['first_offset']}..{s['last_offset']}" if s["messages"] else f"empty ({s['start_offset']})"
        lines.append(f"| {p} | {span} | {s['messages']} | {s['early_timestamps']} | {s['sha256'][:16]}… |")
    return MetadataValue.md("\n".join(lines))


def build_topic_export_asset(topic: str, partitions: PartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=topic_export_key(topic),
        deps=[topic_source_key(topic)],
        partitions_def=partitions,
        group_name=GROUP,
        pool="kafka",
        kinds={"kafka"},
        description=(
            f"Every message of `{topic}` whose offset falls in the partition day (UTC), with its key, value, headers "
            "and timestamp, compressed with zstd; plus the topic's partition count, its own settings and the "
            "consumer groups' committed offsets, so the topic can be recreated and its readers resumed."
        ),
    )
    def _export(context: AssetExecutionContext, kafka: KafkaResource, backup_repo: BackupRepositoryResource) -> MaterializeResult:
        try:
            repo = backup_repo.repository()
            backup = backup_topic_day(kafka.settings(), repo, topic, context.partition_key)
        except CaptureWindowError as exc:  # not over yet, or retention removed part of it: no switch allows it
            raise refuse(context, exc, late_capture_switch=False) from None
        except BackupError as exc:
            raise Failure(description=str(exc)) from None
        m = backup.metadata
        context.log.info(f"published {backup.prefix}: {m['messages_total']} messages, {backup.stored_size} bytes")
        return MaterializeResult(
            metadata=backup_metadata(
                repo,
                backup,
                **{
                    "capture": m["capture"],
                    "dagster/row_count": MetadataValue.int(m["messages_total"]),
                    "messages_sha256": m["messages_sha256"],
                    "partitions": partitions_markdown(m["partitions"]),
                    "partition_offsets": MetadataValue.json(
                        {p: [s["start_offset"], s["end_offset"]] for p, s in m["partitions"].items()}
                    ),
                    "early_timestamps": MetadataValue.int(m["early_timestamps"]),
                    "consumer_groups": MetadataValue.int(len(m["consumer_groups"])),
                    "dynamic_configs": MetadataValue.json(m["dynamic_configs"]),
                    "duration_s": MetadataValue.float(m["duration_s"]),
                },
            )
        )

    return _export


def build_kafka_assets(topics: tuple[str, ...], partitions: PartitionsDefinition) -> list[AssetSpec | AssetsDefinition]:
    """For each topic (KAFKA_TOPICS), the live topic as a source asset and its daily export."""
    sources = [
        AssetSpec(topic_source_key(t), group_name=GROUP, kinds={"kafka"}, description=f"The live Kafka topic `{t}`.")
        for t in topics
    ]
    return [*sources, *(build_topic_export_asset(t, partitions) for t in topics)]

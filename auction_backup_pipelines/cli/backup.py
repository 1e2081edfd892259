"""`auction-backup backup postgres|postgres-base|redis|kafka`: take one day's backup now, without Dagster."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, day, open_repository
from auction_backup_pipelines.cli.output import add_json_flag, print_json
from auction_backup_pipelines.cli.progress import activity
from auction_backup_pipelines.kafka.export_topics import export_topics
from auction_backup_pipelines.ops.metrics import write_backup_metrics
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.postgres import base_backup, logical_day
from auction_backup_pipelines.redis import backup as redis_backup
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import parse_day
from auction_backup_pipelines.settings import Settings


def partition_day(args: argparse.Namespace) -> dt.date:
    """--date, or the day an on-time backup stands for (yesterday UTC)."""
    return parse_day(args.date) if args.date else capture.default_partition()


def published(backup: Backup, settings: Settings) -> Backup:
    """A backup just published: its figures go to METRICS_TEXTFILE_DIR (a failure there is a warning)."""
    problem = write_backup_metrics(settings.metrics.textfile_dir, backup)
    if problem:
        print(f"auction-backup: warning: {problem}", file=sys.stderr)
    return backup


def cmd_backup_postgres(args: argparse.Namespace, settings: Settings) -> int:
    """A logical dump of the database for one day."""
    day = partition_day(args)
    with activity(f"backup postgres logical dump for {day}"):
        backup = logical_day.backup_logical_day(
            settings.postgres, open_repository(args, settings), day, allow_late_capture=args.allow_late_capture
        )
    published(backup, settings)
    m = backup.metadata
    print_json(
        {
            "backup": backup.prefix,
            "source": m["source"],
            "stored_size": backup.stored_size,
            "rows_total": m["rows_total"],
            "captured_at": m["captured_at"],
        }
    )
    return 0


def cmd_backup_postgres_base(args: argparse.Namespace, settings: Settings) -> int:
    """A base backup (pg_basebackup) for point-in-time recovery."""
    day = partition_day(args)
    with activity(f"backup postgres base backup for {day}"):
        backup = base_backup.take_base_backup_for_day(
            settings.postgres, open_repository(args, settings), day, args.allow_late_capture
        )
    published(backup, settings)
    m = backup.metadata
    print_json(
        {
            "backup": backup.prefix,
            "size": backup.size,
            "stored_size": backup.stored_size,
            "start_lsn": m["start_lsn"],
            "stop_lsn": m["stop_lsn"],
            "timeline": m["timeline"],
            "stop_time": m["stop_time"],
        }
    )
    return 0


def cmd_backup_redis(args: argparse.Namespace, settings: Settings) -> int:
    """A snapshot of the Redis server, or of every master of a cluster."""
    day = partition_day(args)
    with activity(f"backup redis snapshot for {day}"):
        backup = redis_backup.backup_snapshot(
            settings.redis,
            open_repository(args, settings),
            day,
            allow_late_capture=args.allow_late_capture,
            data_dir=args.data_dir or None,
            mode=args.mode,
        )
    published(backup, settings)
    m = backup.metadata
    print_json(
        {
            "backup": backup.prefix,
            "mode": m["mode"],
            "transfer": m["transfer"],
            "stored_size": backup.stored_size,
            "keys_total": m["keys_total"],
            "digest": m["digest"],
            "captured_at": m["captured_at"],
            "late_capture": m["late_capture"],
            "fallbacks": m["fallbacks"],
        }
    )
    return 0


def cmd_backup_kafka(args: argparse.Namespace, settings: Settings) -> int:
    """One day of each topic, KAFKA_EXPORT_PARALLEL_TOPICS at once; a topic that fails is reported
    and does not stop the others (exit 1)."""
    kafka = settings.kafka
    day = partition_day(args)
    repo = open_repository(args, settings)
    done: list[dict[str, Any]] = []
    failed: list[str] = []
    topics = args.topics or kafka.topics
    with activity(f"backup kafka {day}", total=len(topics)) as step:
        outcomes = export_topics(kafka, repo, topics, day, on_done=lambda outcome: step(outcome.topic))
    for outcome in outcomes:
        if outcome.backup is None:
            failed.append(f"{outcome.topic}: {outcome.error}")
            continue
        b = published(outcome.backup, settings)
        done.append(
            {
                "backup": b.prefix,
                "messages": b.metadata["messages_total"],
                "stored_size": b.stored_size,
                "messages_sha256": b.metadata["messages_sha256"],
                "capture": b.metadata["capture"],
            }
        )
    print_json(done)
    for line in failed:
        print(f"auction-backup: error: {line}", file=sys.stderr)
    return EXIT_FAILURE if failed else 0


def register(sub: Any) -> None:
    """Add `backup` and its one subcommand per system."""
    p = sub.add_parser("backup", help="take a backup now")
    bsub = p.add_subparsers(dest="system", required=True)
    b = bsub.add_parser("postgres", help="logical dump of the Auction Flow database")
    b.add_argument("--date", type=day, help="partition day (default: yesterday UTC, the day an on-time backup stands for)")
    b.add_argument("--allow-late-capture", action="store_true", help="store today's data under a past day, saying so")
    add_json_flag(b)
    b.set_defaults(func=cmd_backup_postgres)
    b = bsub.add_parser("postgres-base", help="base backup (pg_basebackup) for point-in-time recovery")
    b.add_argument("--date", type=day, help="partition day (default: yesterday UTC)")
    b.add_argument("--allow-late-capture", action="store_true")
    add_json_flag(b)
    b.set_defaults(func=cmd_backup_postgres_base)
    b = bsub.add_parser("redis", help="snapshot of the Redis server, or of every master of a cluster")
    b.add_argument("--date", type=day, help="partition day (default: yesterday UTC, the day an on-time backup stands for)")
    b.add_argument("--allow-late-capture", action="store_true", help="store today's data under a past day, saying so")
    b.add_argument("--mode", choices=list(redis_client.MODES), default="auto", help="auto (default), bgsave, network or aof")
    b.add_argument("--data-dir", help="the server's data dir on this machine (default: $REDIS_DATA_DIR)")
    add_json_flag(b)
    b.set_defaults(func=cmd_backup_redis)
    b = bsub.add_parser("kafka", help="export one day of Kafka topics (messages, configs, consumer-group offsets)")
    b.add_argument(
        "--date", type=day, help="partition day (default: yesterday UTC); past days are rebuilt from the log by timestamp"
    )
    b.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics to export (default: $KAFKA_TOPICS)")
    add_json_flag(b)
    b.set_defaults(func=cmd_backup_kafka)

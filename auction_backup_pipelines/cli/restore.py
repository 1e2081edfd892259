"""`auction-backup restore postgres|redis|kafka`: a backup restored into a target the operator names, verified.

Each restore refuses a non-empty target unless --force, and prints its engine's report as JSON.
A Redis or Kafka target must be the configured source or allowlisted (ops/restore_targets.py),
checked before anything connects; --allow-any-target is the operator's explicit override.
"""

from __future__ import annotations

import argparse
from typing import Any

from auction_backup_pipelines.cli.common import day, open_repository
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.kafka import connection as kafka_connection
from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.ops.restore_targets import check_kafka_target, check_redis_target
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.redis import restore as redis_restore
from auction_backup_pipelines.settings import Settings


def cmd_restore_postgres(args: argparse.Namespace, settings: Settings) -> int:
    """One day's logical dump into a database, every table compared with the manifest."""
    repo = open_repository(args, settings)
    backup = repo.get(pg_client.SYSTEM, logical_dump.LOGICAL_DUMP, args.date)
    print_json(logical_dump.restore_logical(settings.postgres, repo, backup, args.target_db, force=args.force).as_dict())
    return 0


def cmd_restore_redis(args: argparse.Namespace, settings: Settings) -> int:
    """One day's snapshot into a server or cluster, with DUMP/RESTORE, verified."""
    target = check_redis_target(args.target, settings.redis, settings.restore, allow_any=args.allow_any_target)
    repo = open_repository(args, settings)
    backup = repo.get(redis_client.SYSTEM, redis_client.SNAPSHOT, args.date)
    print_json(redis_restore.restore_snapshot(target, repo, backup, force=args.force).as_dict())
    return 0


def cmd_restore_kafka(args: argparse.Namespace, settings: Settings) -> int:
    """Days D1..D2 of topics replayed into a cluster, verified, with translated group offsets."""
    bootstrap = check_kafka_target(args.target_bootstrap or "", settings.kafka, settings.restore, allow_any=args.allow_any_target)
    report = kafka_restore.restore_topics(
        open_repository(args, settings),
        (args.from_day, args.to_day),
        args.topics,
        kafka_connection.for_target(settings.kafka, bootstrap),
        topic_prefix=args.topic_prefix,
        force=args.force,
        apply_offsets=args.apply_offsets,
    )
    print_json(report.as_dict())
    return 0


def register(sub: Any) -> None:
    """Add `restore` and its one subcommand per system."""
    p = sub.add_parser("restore", help="restore a backup into a target you name")
    rsub = p.add_subparsers(dest="system", required=True)
    r = rsub.add_parser("postgres", help="restore a logical dump into a database")
    r.add_argument("--date", type=day, required=True, help="partition day of the dump (YYYY-MM-DD)")
    r.add_argument("--target-db", required=True, help="database to restore into (created if missing)")
    r.add_argument("--force", action="store_true", help="replace the target database if it is not empty")
    r.set_defaults(func=cmd_restore_postgres)
    r = rsub.add_parser("redis", help="restore a snapshot into a Redis server or cluster (DUMP/RESTORE, verified)")
    r.add_argument("--date", type=day, required=True, help="partition day of the snapshot (YYYY-MM-DD)")
    r.add_argument("--target", required=True, help="host:port of the server or of one cluster node")
    r.add_argument("--force", action="store_true", help="restore into a non-empty target (same-named keys are overwritten)")
    r.add_argument(
        "--allow-any-target",
        action="store_true",
        help="restore into a target not in RESTORE_ALLOWED_REDIS (it gets RESTORE_REDIS_USERNAME/_PASSWORD, never REDIS_PASSWORD)",
    )
    r.set_defaults(func=cmd_restore_redis)
    r = rsub.add_parser("kafka", help="replay backed-up days into topics, verified, with translated group offsets")
    r.add_argument("--from", dest="from_day", required=True, metavar="D1", help="first day to replay (YYYY-MM-DD)")
    r.add_argument("--to", dest="to_day", required=True, metavar="D2", help="last day to replay, inclusive")
    r.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: every topic backed up in D1..D2)")
    r.add_argument(
        "--target-bootstrap", help="cluster to restore into (default: $KAFKA_BOOTSTRAP_SERVERS; others: RESTORE_ALLOWED_KAFKA)"
    )
    r.add_argument("--allow-any-target", action="store_true", help="restore into brokers not in RESTORE_ALLOWED_KAFKA")
    r.add_argument("--topic-prefix", default="", help="write <prefix><topic>, e.g. restored-; groups get the same prefix")
    r.add_argument("--force", action="store_true", help="append to non-empty topics and replace the groups' offsets")
    r.add_argument(
        "--apply-offsets", action="store_true", help="commit the translated consumer-group offsets (default: report only)"
    )
    r.set_defaults(func=cmd_restore_kafka)

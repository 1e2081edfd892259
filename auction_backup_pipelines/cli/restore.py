"""`auction-backup restore postgres|redis|kafka`: a backup restored into a target the operator names, verified.

Each restores the backup of --date, or with --latest the newest one without a failed restore
verdict (ops/latest.py, named on stderr); it refuses a non-empty target unless --force, and prints its engine's report as JSON;
then it appends a restore record to the repository (repository/restore_log.py), the history the
Dagster restore jobs write too, since Dagster may be down while the CLI restores.
A Redis or Kafka target must be the configured source or allowlisted (ops/restore_targets.py),
checked before anything connects; --allow-any-target is the operator's explicit override.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import redis

from auction_backup_pipelines.cli.common import CliError, day, open_repository
from auction_backup_pipelines.cli.output import add_json_flag, print_json
from auction_backup_pipelines.cli.progress import activity
from auction_backup_pipelines.kafka import connection as kafka_connection
from auction_backup_pipelines.kafka import records
from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.ops import latest, restore_records
from auction_backup_pipelines.ops.restore_targets import check_kafka_target, check_redis_target
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.redis import place_restore, resp
from auction_backup_pipelines.redis import restore as redis_restore
from auction_backup_pipelines.redis import tls as redis_tls
from auction_backup_pipelines.repository import restore_log
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.restore_log import RestoreRecord
from auction_backup_pipelines.settings import Settings


def record_restore(repo: Repository, command: str, build: Callable[[str], list[RestoreRecord]]) -> None:
    """Append the records of a finished restore to the repository; a failure to do so is a warning
    on stderr (the restore itself succeeded, and its JSON was printed)."""
    records, problems = restore_records.append_all(repo, lambda: build(f"auction-backup {command}"))
    for line in problems:
        print(f"warning: {line}", file=sys.stderr)
    stored = len(records) - len(problems)
    if stored > 0:
        print(
            f"restore recorded in {repo.describe()}: {records[0].key}" + (f" (+{stored - 1})" if stored > 1 else ""),
            file=sys.stderr,
        )


def chosen(repo: Repository, system: str, artifact: str, args: argparse.Namespace) -> Backup:
    """The backup of --date, or with --latest the newest good one (ops/latest.py), named on stderr."""
    if not args.latest:
        return repo.get(system, artifact, args.date)
    choice = latest.newest_good(repo, system, artifact)
    print(f"auction-backup: {choice.describe()}", file=sys.stderr)
    return choice.backup


def latest_kafka_days(repo: Repository, args: argparse.Namespace) -> tuple[tuple[str, str], list[str]]:
    """--latest for Kafka: D2 is the newest day with a good backup of the topics (each day holds that
    day's messages: --from widens the replay back to D1); only topics good on D2 are replayed."""
    wanted = [records.artifact_name(t) for t in args.topics] if args.topics else latest.artifacts_of(repo, records.SYSTEM)
    newest, choices = latest.newest_good_day(repo, records.SYSTEM, wanted)
    for c in choices:
        print(f"auction-backup: {c.describe()}", file=sys.stderr)
    last = newest.isoformat()
    return (args.from_day or last, last), [records.topic_of(c.backup.artifact) for c in choices]


def cmd_restore_postgres(args: argparse.Namespace, settings: Settings) -> int:
    """One day's logical dump into a database, every table compared with the manifest."""
    repo = open_repository(args, settings)
    backup = chosen(repo, pg_client.SYSTEM, logical_dump.LOGICAL_DUMP, args)
    with activity(f"restore {backup.prefix} into database {args.target_db}"):
        result = logical_dump.restore_logical(
            settings.postgres, repo, backup, args.target_db, force=args.force, jobs=settings.restore.jobs
        )
    print_json(result.as_dict())
    record_restore(repo, "restore postgres", lambda by: restore_records.for_logical(result, by))
    return 0


def cmd_restore_redis(args: argparse.Namespace, settings: Settings) -> int:
    """One day's snapshot into a server or cluster, with DUMP/RESTORE, verified; with --into-dir,
    its RDB placed into a stopped server's data directory (redis/place_restore.py)."""
    if args.into_dir:
        return place_redis(args, settings)
    if args.check or args.deep:
        raise CliError("--check and --deep go with --into-dir")
    target = check_redis_target(args.target, settings.redis, settings.restore, allow_any=args.allow_any_target)
    repo = open_repository(args, settings)
    backup = chosen(repo, redis_client.SYSTEM, redis_client.SNAPSHOT, args)
    with activity(f"restore {backup.prefix} into {args.target}"):
        result = redis_restore.restore_snapshot(target, repo, backup, force=args.force)
    print_json(result.as_dict())
    record_restore(repo, "restore redis", lambda by: restore_records.for_redis(result, by))
    return 0


def place_redis(args: argparse.Namespace, settings: Settings) -> int:
    """The fast path: the RDB written into DIR (proved against the manifest), then, with --check,
    the server the operator started on DIR waited for and compared with the file."""
    check_target = (
        check_redis_target(args.check, settings.redis, settings.restore, allow_any=args.allow_any_target) if args.check else None
    )
    repo = open_repository(args, settings)
    backup = chosen(repo, redis_client.SYSTEM, redis_client.SNAPSHOT, args)
    with activity(f"place {backup.prefix} into {args.into_dir}"):
        placed = place_restore.place_snapshot(repo, backup, args.into_dir, force=args.force, recompute=args.deep)
    out: dict[str, Any] = placed.as_dict()
    if check_target is None:
        print(f"auction-backup: placed {placed.placed}; start redis-server on {args.into_dir} (appendonly no)", file=sys.stderr)
    else:
        print(f"auction-backup: placed {placed.placed}; waiting for the server at {args.check} to load it", file=sys.stderr)
        # Not redis_client.connect: the server may not be up yet, and check_loaded polls until it is.
        r = redis.Redis(
            host=check_target.host,
            port=check_target.port,
            username=check_target.username or None,
            password=check_target.password or None,
            socket_connect_timeout=5,
            socket_timeout=600,
            **redis_client.client_options(),
            **redis_tls.redis_py_options(check_target),
        )
        ctx = redis_tls.context(check_target)
        conns: list[resp.BulkConnection] = []

        def reader(db: int) -> resp.Runner:
            t = check_target
            conns.append(resp.BulkConnection(host=t.host, port=t.port, db=db, username=t.username, password=t.password, tls=ctx))
            return conns[-1].run

        try:
            with activity(f"wait for {args.check} to load and compare it"):
                check = place_restore.check_loaded(
                    r, placed, args.check, deep=reader if args.deep else None, timeout=args.load_timeout
                )
        finally:
            for c in conns:
                c.close()
            r.close()
        out["loaded"] = check.as_dict()
    print_json(out)
    details = {"placed": placed.placed, "content_check": placed.content_check, "server_checked": bool(check_target)}
    record_restore(
        repo,
        "restore redis --into-dir",
        lambda by: [
            restore_log.new_record(
                BackupRef.parse(placed.backup),
                kind="snapshot",
                target=args.check or placed.placed,
                rto_seconds=placed.duration_s + (out["loaded"]["load_wait_s"] if check_target else 0.0),
                verified=out["loaded"]["keys_verified"] if check_target else None,
                verified_unit="keys",
                by=by,
                details=details,
            )
        ],
    )
    return 0


def cmd_restore_kafka(args: argparse.Namespace, settings: Settings) -> int:
    """Days D1..D2 of topics replayed into a cluster, verified, with translated group offsets."""
    bootstrap = check_kafka_target(args.target_bootstrap or "", settings.kafka, settings.restore, allow_any=args.allow_any_target)
    repo = open_repository(args, settings)
    days, topics = (args.from_day or args.to_day, args.to_day), args.topics
    if args.latest:
        days, topics = latest_kafka_days(repo, args)
    with activity(f"restore kafka {days[0]}..{days[1]} into {bootstrap}"):
        report = kafka_restore.restore_topics(
            repo,
            days,
            topics,
            kafka_connection.for_target(settings.kafka, bootstrap),
            topic_prefix=args.topic_prefix,
            force=args.force,
            apply_offsets=args.apply_offsets,
        )
    print_json(report.as_dict())
    record_restore(repo, "restore kafka", lambda by: restore_records.for_kafka(repo, report, by))
    return 0


LATEST_HELP = "the newest backup without a failed restore verdict (says which on stderr); instead of --date"


def register(sub: Any) -> None:
    """Add `restore` and its one subcommand per system."""
    p = sub.add_parser("restore", help="restore a backup into a target you name")
    rsub = p.add_subparsers(dest="system", required=True)
    r = rsub.add_parser("postgres", help="restore a logical dump into a database")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--date", type=day, help="partition day of the dump (YYYY-MM-DD)")
    which.add_argument("--latest", action="store_true", help=LATEST_HELP)
    r.add_argument("--target-db", required=True, help="database to restore into (created if missing)")
    r.add_argument("--force", action="store_true", help="replace the target database if it is not empty")
    add_json_flag(r)
    r.set_defaults(func=cmd_restore_postgres)
    r = rsub.add_parser(
        "redis",
        help="restore a snapshot into a Redis server or cluster (DUMP/RESTORE, verified), or place its RDB for a stopped one",
    )
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--date", type=day, help="partition day of the snapshot (YYYY-MM-DD)")
    which.add_argument("--latest", action="store_true", help=LATEST_HELP)
    into = r.add_mutually_exclusive_group(required=True)
    into.add_argument("--target", help="host:port of the server or of one cluster node")
    into.add_argument(
        "--into-dir",
        metavar="DIR",
        help="fast path for a stopped or new server: write the RDB as DIR/dump.rdb (checked against the manifest); "
        "start redis-server on DIR afterwards",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="restore into a non-empty target (same-named keys are overwritten); with --into-dir, replace a "
        "non-empty dump.rdb (kept aside as dump.rdb.before-restore-<time>)",
    )
    r.add_argument(
        "--check",
        metavar="HOST:PORT",
        help="with --into-dir: wait for the server started on DIR to finish loading, then compare its keyspace with the file",
    )
    r.add_argument(
        "--deep",
        action="store_true",
        help="with --into-dir: recompute the file's facts (rdb-facts) before placing it and, with --check, "
        "read every key back; both compared with the manifest",
    )
    r.add_argument("--load-timeout", type=float, default=1800.0, help="seconds --check waits for the load (default 1800)")
    r.add_argument(
        "--allow-any-target",
        action="store_true",
        help="restore into a target not in RESTORE_ALLOWED_REDIS (it gets RESTORE_REDIS_USERNAME/_PASSWORD, never REDIS_PASSWORD)",
    )
    add_json_flag(r)
    r.set_defaults(func=cmd_restore_redis)
    r = rsub.add_parser("kafka", help="replay backed-up days into topics, verified, with translated group offsets")
    r.add_argument("--from", dest="from_day", type=day, metavar="D1", help="first day to replay (default with --latest: D2)")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--to", dest="to_day", type=day, metavar="D2", help="last day to replay, inclusive (YYYY-MM-DD)")
    which.add_argument(
        "--latest",
        action="store_true",
        help="D2 is the newest day with a good backup of the topics (no failed restore verdict); says which on stderr",
    )
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
    add_json_flag(r)
    r.set_defaults(func=cmd_restore_kafka)

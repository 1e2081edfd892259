"""`auction-backup`: list, take, verify and restore backups without Dagster.

Everything here calls the core modules directly, so an operator can restore at 3 a.m. even
when the Dagster webserver, daemon or its storage are down. Settings are the code location's:
`main` reads them once (settings.load_settings) and hands each command the groups it needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

import logging
import signal
import threading
from pathlib import Path

from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.kafka import export as kafka_export
from auction_backup_pipelines.kafka import restore as kafka_restore
from auction_backup_pipelines.postgres import logical_day
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.ops import preflight
from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg
from auction_backup_pipelines.ops import restore_checks
from auction_backup_pipelines.redis import backup as redis_backup
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.redis import restore as redis_restore
from auction_backup_pipelines.redis import verification as redis_verification
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.kafka.records import KafkaBackupError
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health
from auction_backup_pipelines.postgres.wal_receiver import WalReceiver
from auction_backup_pipelines.repository.repository import Repository, RepositoryError, parse_day
from auction_backup_pipelines.repository.storage import StorageError
from auction_backup_pipelines.settings import Settings, load_settings
from auction_backup_pipelines.errors import BackupError

EXIT_FAILURE = 1


class CliError(BackupError):
    """A failure to report as one clear line, without a traceback."""


def _repo(args: argparse.Namespace, settings: Settings) -> Repository:
    """The repository, encrypted when BACKUP_ENCRYPTION_KEY_FILE or BACKUP_ENCRYPTION_KEYS is set."""
    local, keys = settings.repository, settings.encryption
    return Repository.local(args.repo or local.root, compression=local.compression,
                            encryption=Encryption.from_settings(keys.key_file, keys.keys))


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args, settings)
    backups = repo.list(args.system, args.artifact)
    if args.json:
        _print([{"key": b.prefix, "partition": b.partition, "size": b.size, "stored_size": b.stored_size,
                 "captured_at": b.metadata.get("captured_at")} for b in backups])
        return 0
    if not backups:
        print(f"no backups in {repo.describe()}")
        return 0
    print(f"{'system/artifact':<28} {'day':<10}  {'stored':>12}  {'captured_at':<26} backup_id")
    for b in backups:
        print(f"{layout.artifact_key(b.system, b.artifact):<28} {b.partition:<10}  {b.stored_size:>12}  "
              f"{str(b.metadata.get('captured_at', '')):<26} {b.backup_id}")
    return 0


def cmd_backup_postgres(args: argparse.Namespace, settings: Settings) -> int:
    day = parse_day(args.date) if args.date else capture.default_partition()
    backup = logical_day.backup_logical_day(settings.postgres, _repo(args, settings), day, allow_late_capture=args.allow_late_capture)
    m = backup.metadata
    _print({"backup": backup.prefix, "source": m["source"], "stored_size": backup.stored_size, "rows_total": m["rows_total"],
            "captured_at": m["captured_at"]})
    return 0


def cmd_backup_postgres_base(args: argparse.Namespace, settings: Settings) -> int:
    day = parse_day(args.date) if args.date else capture.default_partition()
    backup = basebackup.take_base_backup_for_day(settings.postgres, _repo(args, settings), day, args.allow_late_capture)
    m = backup.metadata
    _print({"backup": backup.prefix, "size": backup.size, "stored_size": backup.stored_size, "start_lsn": m["start_lsn"],
            "stop_lsn": m["stop_lsn"], "timeline": m["timeline"], "stop_time": m["stop_time"]})
    return 0


def cmd_pitr(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args, settings)
    archive = WalArchive(repo.backend)
    if args.show_window:
        window = pitr.recovery_window(repo, archive)
        print(window.describe())
        for r in sorted(window.reaches, key=lambda r: r.start):
            gap = " (ends at a gap in the WAL archive)" if r.ends_at_gap else ""
            print(f"  base backup {r.backup.partition} {r.backup.backup_id}: {pitr.format_utc(r.start)} .. {pitr.format_utc(r.end)}{gap}")
        return 0
    if not args.target_time or not args.target_dir:
        raise CliError("give a target time and --target-dir (or --show-window), e.g. "
                       "`auction-backup pitr \"2024-01-15 14:30:00\" --target-dir /srv/pitr`")
    target = pitr.parse_target(args.target_time, args.timezone)
    result = pitr.restore_to_time(settings.postgres, repo, archive, target, Path(args.target_dir), port=args.port,
                                  stop_after=args.stop_after)
    _print(result.as_dict())
    return 0


def cmd_wal_receive(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    repo = _repo(args, settings)
    spool = Path(args.spool or settings.wal.spool_dir)
    receiver = WalReceiver(settings.postgres, WalArchive(repo.backend), spool, slot=args.slot)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"receiving WAL with slot {args.slot!r} into {repo.describe()}/{layout.WAL_AREA} (spool {spool})", flush=True)
    receiver.run(stop)
    return 0


def cmd_wal_status(args: argparse.Namespace, settings: Settings) -> int:
    archive = WalArchive(_repo(args, settings).backend)
    h = health(list(archive.records()), archive.heartbeat())
    lag = h.lag_seconds()
    _print({"newest": h.newest.name if h.newest else None, "completed_segments": h.completed,
            "covered_until": h.covered_until, "lag_seconds": None if lag is None else round(lag, 1),
            "gaps": [f"{a} .. {b}" for a, b in h.gaps]})
    return 0 if h.newest and not h.gaps else EXIT_FAILURE


def cmd_backup_redis(args: argparse.Namespace, settings: Settings) -> int:
    day = parse_day(args.date) if args.date else capture.default_partition()
    backup = redis_backup.backup_snapshot(settings.redis, _repo(args, settings), day, allow_late_capture=args.allow_late_capture,
                                          data_dir=args.data_dir or None, mode=args.mode)
    m = backup.metadata
    _print({"backup": backup.prefix, "mode": m["mode"], "transfer": m["transfer"], "stored_size": backup.stored_size,
            "keys_total": m["keys_total"], "digest": m["digest"], "captured_at": m["captured_at"],
            "late_capture": m["late_capture"], "fallbacks": m["fallbacks"]})
    return 0


def cmd_restore_redis(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args, settings)
    backup = repo.get(redis_client.SYSTEM, redis_client.SNAPSHOT, args.date)
    target = redis_client.parse_target(args.target, settings.redis)  # the REDIS_USERNAME/REDIS_PASSWORD credentials
    _print(redis_restore.restore_snapshot(target, repo, backup, force=args.force).as_dict())
    return 0


def cmd_backup_kafka(args: argparse.Namespace, settings: Settings) -> int:
    kafka = settings.kafka
    day = parse_day(args.date) if args.date else capture.default_partition()
    repo = _repo(args, settings)
    done, failed = [], []
    for topic in args.topics or kafka.topics:
        try:
            b = kafka_export.backup_topic_day(kafka.bootstrap_servers, repo, topic, day)
        except KafkaBackupError as exc:  # one topic's failure does not stop the others
            failed.append(f"{topic}: {exc}")
            continue
        done.append({"backup": b.prefix, "messages": b.metadata["messages_total"], "stored_size": b.stored_size,
                     "messages_sha256": b.metadata["messages_sha256"], "capture": b.metadata["capture"]})
    _print(done)
    for line in failed:
        print(f"auction-backup: error: {line}", file=sys.stderr)
    return EXIT_FAILURE if failed else 0


def cmd_restore_kafka(args: argparse.Namespace, settings: Settings) -> int:
    _print(kafka_restore.restore_topics(
        _repo(args, settings), (args.from_day, args.to_day), args.topics,
        args.target_bootstrap or settings.kafka.bootstrap_servers,
        topic_prefix=args.topic_prefix, force=args.force, apply_offsets=args.apply_offsets))
    return 0


def cmd_restore_postgres(args: argparse.Namespace, settings: Settings) -> int:
    repo = _repo(args, settings)
    backup = repo.get(pg_client.SYSTEM, pg.LOGICAL_DUMP, args.date)
    _print(pg.restore_logical(settings.postgres, repo, backup, args.target_db, force=args.force).as_dict())
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    if args.restore:
        return cmd_verify_restore(args, settings)
    if args.json:
        raise CliError("--json goes with --restore")
    repo = _repo(args, settings)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs a system and an artifact, e.g. `verify postgres logical_dump --date 2026-11-26`")
    backups = [repo.get(args.system, args.artifact, args.date)] if args.date else repo.list(args.system, args.artifact)
    if not backups:
        raise CliError(f"no backups to verify in {repo.describe()}")
    failed = 0
    for b in backups:
        try:
            repo.verify(b, deep=args.deep)
            if b.system == pg_client.SYSTEM and b.artifact == pg.LOGICAL_DUMP:
                pg.dump_toc(repo, b, settings.postgres.bin_dir)
            if b.system == redis_client.SYSTEM and b.artifact == redis_client.SNAPSHOT and args.deep:
                redis_verification.verify_snapshot(repo, b)
            print(f"ok      {b.prefix}")
        except (RepositoryError, pg_client.PostgresError, redis_client.RedisBackupError) as exc:
            failed += 1
            print(f"FAILED  {b.prefix}: {exc}")
    return EXIT_FAILURE if failed else 0


def cmd_verify_restore(args: argparse.Namespace, settings: Settings) -> int:
    """The weekly restore checks, now: the newest backup of each asset restored into scratch targets."""
    if args.artifact or args.date or args.deep:
        raise CliError("--restore checks the newest backup of each asset; it takes a system but no artifact, --date or --deep")
    repo = _repo(args, settings)
    kafka = settings.kafka
    checks = restore_checks.planned_checks(repo, kafka.topics, [args.system] if args.system else None)
    postgres = settings.postgres
    outcomes = []
    for check in checks:
        outcome = restore_checks.run_check(check, repo, postgres, kafka.bootstrap_servers)
        outcomes.append(outcome)
        if not args.json:
            print(outcome.summary(), flush=True)
    if args.json:
        _print([o.as_dict() for o in outcomes])
    return EXIT_FAILURE if any(not o.passed for o in outcomes) else 0


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    results = preflight.check_all(settings.postgres, settings.redis, settings.kafka)
    for r in results:
        print(f"{'ok    ' if r.ok else 'FAILED'}  {r.system:<9} {r.detail}")
    return 0 if all(r.ok for r in results) else EXIT_FAILURE


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    return pruning.prune_command(_repo(args, settings), dry_run=args.dry_run)


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    key = pruning.pin(_repo(args, settings), args.system, args.artifact, args.date, note=args.note)
    print(f"pinned {args.system}/{args.artifact} {args.date}: retention keeps every backup of that day ({key})")
    return 0


def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    existed = pruning.unpin(_repo(args, settings), args.system, args.artifact, args.date)
    print(f"{'unpinned' if existed else 'was not pinned:'} {args.system}/{args.artifact} {args.date}")
    return 0


def cmd_offsite(args: argparse.Namespace, settings: Settings) -> int:
    src, dst = _repo(args, settings), offsite.repository_from_settings(settings.offsite)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs --system and --artifact")
    reports = ([offsite.copy_partition(src, dst, args.system, args.artifact, args.date)] if args.date
               else offsite.copy_all(src, dst, args.system))
    for r in reports:
        print(r.summary())
    if args.wal:
        w = offsite.copy_wal(WalArchive(src.backend), WalArchive(dst.backend))
        print(f"WAL: {len(w.copied)} copied ({w.bytes} bytes), {w.present} already there")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auction-backup", description="Back up, verify and restore Auction Flow's data.")
    parser.add_argument("--repo", help="backup repository folder (default: $BACKUP_ROOT or ./backups)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="check that PostgreSQL, Redis and Kafka are reachable with the current settings")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("list", help="list complete backups")
    p.add_argument("system", nargs="?", choices=["postgres", "redis", "kafka"])
    p.add_argument("artifact", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("backup", help="take a backup now")
    bsub = p.add_subparsers(dest="system", required=True)
    b = bsub.add_parser("postgres", help="logical dump of the Auction Flow database")
    b.add_argument("--date", help="partition day (default: yesterday UTC, the day an on-time backup stands for)")
    b.add_argument("--allow-late-capture", action="store_true", help="store today's data under a past day, saying so")
    b.set_defaults(func=cmd_backup_postgres)
    b = bsub.add_parser("postgres-base", help="base backup (pg_basebackup) for point-in-time recovery")
    b.add_argument("--date", help="partition day (default: yesterday UTC)")
    b.add_argument("--allow-late-capture", action="store_true")
    b.set_defaults(func=cmd_backup_postgres_base)
    b = bsub.add_parser("redis", help="snapshot of the Redis server, or of every master of a cluster")
    b.add_argument("--date", help="partition day (default: yesterday UTC, the day an on-time backup stands for)")
    b.add_argument("--allow-late-capture", action="store_true", help="store today's data under a past day, saying so")
    b.add_argument("--mode", choices=list(redis_client.MODES), default="auto", help="auto (default), bgsave, network or aof")
    b.add_argument("--data-dir", help="the server's data dir on this machine (default: $REDIS_DATA_DIR)")
    b.set_defaults(func=cmd_backup_redis)
    b = bsub.add_parser("kafka", help="export one day of Kafka topics (messages, configs, consumer-group offsets)")
    b.add_argument("--date", help="partition day (default: yesterday UTC); past days are rebuilt from the log by timestamp")
    b.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics to export (default: $KAFKA_TOPICS)")
    b.set_defaults(func=cmd_backup_kafka)

    p = sub.add_parser("restore", help="restore a backup into a target you name")
    rsub = p.add_subparsers(dest="system", required=True)
    r = rsub.add_parser("postgres", help="restore a logical dump into a database")
    r.add_argument("--date", required=True, help="partition day of the dump (YYYY-MM-DD)")
    r.add_argument("--target-db", required=True, help="database to restore into (created if missing)")
    r.add_argument("--force", action="store_true", help="replace the target database if it is not empty")
    r.set_defaults(func=cmd_restore_postgres)
    r = rsub.add_parser("redis", help="restore a snapshot into a Redis server or cluster (DUMP/RESTORE, verified)")
    r.add_argument("--date", required=True, help="partition day of the snapshot (YYYY-MM-DD)")
    r.add_argument("--target", required=True, help="host:port of the server or of one cluster node")
    r.add_argument("--force", action="store_true", help="restore into a non-empty target (same-named keys are overwritten)")
    r.set_defaults(func=cmd_restore_redis)
    r = rsub.add_parser("kafka", help="replay backed-up days into topics, verified, with translated group offsets")
    r.add_argument("--from", dest="from_day", required=True, metavar="D1", help="first day to replay (YYYY-MM-DD)")
    r.add_argument("--to", dest="to_day", required=True, metavar="D2", help="last day to replay, inclusive")
    r.add_argument("--topics", nargs="+", metavar="TOPIC", help="topics (default: every topic backed up in D1..D2)")
    r.add_argument("--target-bootstrap", help="cluster to restore into (default: $KAFKA_BOOTSTRAP_SERVERS)")
    r.add_argument("--topic-prefix", default="", help="write <prefix><topic>, e.g. restored-; groups get the same prefix")
    r.add_argument("--force", action="store_true", help="append to non-empty topics and replace the groups' offsets")
    r.add_argument("--apply-offsets", action="store_true", help="commit the translated consumer-group offsets (default: report only)")
    r.set_defaults(func=cmd_restore_kafka)

    p = sub.add_parser("pitr", help="point-in-time recovery into a new data directory (never the primary)")
    p.add_argument("target_time", nargs="?", help='e.g. "2024-01-15 14:30:00"')
    p.add_argument("--target-dir", help="new or empty folder for the recovered instance")
    p.add_argument("--port", type=int, help="port for the recovered instance (default: a free one)")
    p.add_argument("--timezone", default="UTC", help="timezone of a target time without offset (default UTC)")
    p.add_argument("--stop-after", action="store_true", help="stop the recovered instance once recovery is proven")
    p.add_argument("--show-window", action="store_true", help="print the recoverable window and exit")
    p.set_defaults(func=cmd_pitr)

    p = sub.add_parser("wal-receive", help="stream WAL from the primary into the archive (runs until stopped)")
    p.add_argument("--spool", help="local folder for pg_receivewal (default: $WAL_SPOOL_DIR or ./wal_spool)")
    p.add_argument("--slot", default="auction_backup_wal", help="replication slot name")
    p.set_defaults(func=cmd_wal_receive)

    p = sub.add_parser("wal-status", help="newest archived WAL, lag and gaps (exit 1 on a gap or an empty archive)")
    p.set_defaults(func=cmd_wal_status)

    p = sub.add_parser("verify", help="check backups against their manifests (nothing is written), "
                       "or with --restore restore the newest ones into scratch targets and compare")
    p.add_argument("system", nargs="?", choices=["postgres", "redis", "kafka"])
    p.add_argument("artifact", nargs="?")
    p.add_argument("--date")
    p.add_argument("--deep", action="store_true", help="also decompress and check the original bytes")
    p.add_argument("--restore", action="store_true",
                   help="run the weekly restore checks now on the newest backup of each asset of SYSTEM (default: all); "
                   "scratch databases, instances, servers and topics are removed afterwards; exit 1 if one fails")
    p.add_argument("--json", action="store_true", help="with --restore: print the outcomes as JSON")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("offsite", help="copy backups to the S3-compatible offsite repository (OFFSITE_S3_*) and verify there")
    p.add_argument("--system", choices=["postgres", "redis", "kafka"])
    p.add_argument("--artifact")
    p.add_argument("--date", help="one partition day (with --system and --artifact)")
    p.add_argument("--wal", action="store_true", help="also copy the WAL archive")
    p.set_defaults(func=cmd_offsite)

    p = sub.add_parser("prune", help="apply the retention policy: keep/expire table with reasons, then delete")
    p.add_argument("--dry-run", action="store_true", help="print the table and what would be deleted; delete nothing")
    p.set_defaults(func=cmd_prune)

    for name, helptext, func in (
        ("pin", "keep every backup of one day, whatever the retention policy says", cmd_pin),
        ("unpin", "remove a pin (the day's backups follow the policy again)", cmd_unpin),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("system", choices=["postgres", "redis", "kafka"])
        p.add_argument("artifact")
        p.add_argument("--date", required=True, help="partition day (YYYY-MM-DD)")
        if name == "pin":
            p.add_argument("--note", default="", help="why (stored with the pin)")
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return handler(args, load_settings())
    except (CliError, RepositoryError, StorageError, pg_client.PostgresError, capture.CaptureWindowError, pitr.PitrError,
            redis_client.RedisBackupError, KafkaBackupError, ValueError) as exc:
        print(f"auction-backup: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("auction-backup: interrupted; nothing incomplete was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`auction-backup verify`: backups checked against their manifests (nothing is written), or with
--restore the weekly restore checks run now, into scratch targets, while Dagster may be down."""

from __future__ import annotations

import argparse
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, SYSTEMS, CliError, day, open_repository
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.ops import restore_checks
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.redis import verification as redis_verification
from auction_backup_pipelines.repository.storage import RepositoryError
from auction_backup_pipelines.settings import Settings


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Check each backup (or one day's) against its manifest; one line per backup, exit 1 if one fails."""
    if args.restore:
        return cmd_verify_restore(args, settings)
    if args.json:
        raise CliError("--json goes with --restore")
    repo = open_repository(args, settings)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs a system and an artifact, e.g. `verify postgres logical_dump --date 2026-11-26`")
    backups = [repo.get(args.system, args.artifact, args.date)] if args.date else repo.list(args.system, args.artifact)
    if not backups:
        raise CliError(f"no backups to verify in {repo.describe()}")
    failed = 0
    for b in backups:
        try:
            repo.verify(b, deep=args.deep)
            if b.system == pg_client.SYSTEM and b.artifact == logical_dump.LOGICAL_DUMP:
                logical_dump.dump_toc(repo, b, settings.postgres.bin_dir)
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
    repo = open_repository(args, settings)
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
        print_json([o.as_dict() for o in outcomes])
    return EXIT_FAILURE if any(not o.passed for o in outcomes) else 0


def register(sub: Any) -> None:
    """Add `verify` (manifests, or --restore for the restore checks)."""
    p = sub.add_parser(
        "verify",
        help="check backups against their manifests (nothing is written), "
        "or with --restore restore the newest ones into scratch targets and compare",
    )
    p.add_argument("system", nargs="?", choices=SYSTEMS)
    p.add_argument("artifact", nargs="?")
    p.add_argument("--date", type=day)
    p.add_argument("--deep", action="store_true", help="also decompress and check the original bytes")
    p.add_argument(
        "--restore",
        action="store_true",
        help="run the weekly restore checks now on the newest backup of each asset of SYSTEM (default: all); "
        "scratch databases, instances, servers and topics are removed afterwards; exit 1 if one fails",
    )
    p.add_argument("--json", action="store_true", help="with --restore: print the outcomes as JSON")
    p.set_defaults(func=cmd_verify)

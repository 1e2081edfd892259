"""`auction-backup list`, `prune`, `pin`, `unpin` and `offsite`: what the repository holds and its life cycle."""

from __future__ import annotations

import argparse
from typing import Any

from auction_backup_pipelines.cli.common import SYSTEMS, CliError, day, open_repository
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.ops import offsite
from auction_backup_pipelines.policy import pruning
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.settings import Settings


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Complete backups (of a system, of an artifact) as a table or as JSON."""
    repo = open_repository(args, settings)
    backups = repo.list(args.system, args.artifact)
    if args.json:
        print_json(
            [
                {
                    "key": b.prefix,
                    "partition": b.partition,
                    "size": b.size,
                    "stored_size": b.stored_size,
                    "captured_at": b.metadata.get("captured_at"),
                }
                for b in backups
            ]
        )
        return 0
    if not backups:
        print(f"no backups in {repo.describe()}")
        return 0
    print(f"{'system/artifact':<28} {'day':<10}  {'stored':>12}  {'captured_at':<26} backup_id")
    for b in backups:
        print(
            f"{layout.artifact_key(b.system, b.artifact):<28} {b.partition:<10}  {b.stored_size:>12}  "
            f"{str(b.metadata.get('captured_at', '')):<26} {b.backup_id}"
        )
    return 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the retention policy (or, with --dry-run, only explain it)."""
    return pruning.prune_command(open_repository(args, settings), dry_run=args.dry_run)


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    """Keep every backup of one day, whatever the retention policy says."""
    key = pruning.pin(open_repository(args, settings), args.system, args.artifact, args.date, note=args.note)
    print(f"pinned {args.system}/{args.artifact} {args.date}: retention keeps every backup of that day ({key})")
    return 0


def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a day's pin; its backups follow the policy again."""
    existed = pruning.unpin(open_repository(args, settings), args.system, args.artifact, args.date)
    print(f"{'unpinned' if existed else 'was not pinned:'} {args.system}/{args.artifact} {args.date}")
    return 0


def cmd_offsite(args: argparse.Namespace, settings: Settings) -> int:
    """Copy backups (and with --wal the WAL archive) to the offsite repository, verified there."""
    src, dst = open_repository(args, settings), offsite.repository_from_settings(settings.offsite)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs --system and --artifact")
    reports = (
        [offsite.copy_partition(src, dst, args.system, args.artifact, args.date)]
        if args.date
        else offsite.copy_all(src, dst, args.system)
    )
    for r in reports:
        print(r.summary())
    if args.wal:
        w = offsite.copy_wal(WalArchive(src.backend), WalArchive(dst.backend))
        print(f"WAL: {len(w.copied)} copied ({w.bytes} bytes), {w.present} already there")
    return 0


def register_list(sub: Any) -> None:
    """Add `list` (second in the help, right after `doctor`)."""
    p = sub.add_parser("list", help="list complete backups")
    p.add_argument("system", nargs="?", choices=SYSTEMS)
    p.add_argument("artifact", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def register(sub: Any) -> None:
    """Add `offsite`, `prune`, `pin` and `unpin`."""
    p = sub.add_parser("offsite", help="copy backups to the S3-compatible offsite repository (OFFSITE_S3_*) and verify there")
    p.add_argument("--system", choices=SYSTEMS)
    p.add_argument("--artifact")
    p.add_argument("--date", type=day, help="one partition day (with --system and --artifact)")
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
        p.add_argument("system", choices=SYSTEMS)
        p.add_argument("artifact")
        p.add_argument("--date", type=day, required=True, help="partition day (YYYY-MM-DD)")
        if name == "pin":
            p.add_argument("--note", default="", help="why (stored with the pin)")
        p.set_defaults(func=func)

"""`auction-backup list`, `prune`, `pin`, `unpin` and `offsite`: what the repository holds and its life cycle."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, SYSTEMS, CliError, day, open_repository
from auction_backup_pipelines.cli.output import print_json, table
from auction_backup_pipelines.cli.progress import activity
from auction_backup_pipelines.ops import offsite, status
from auction_backup_pipelines.policy import leftovers, offsite_retention, pruning, retention
from auction_backup_pipelines.postgres.wal_archive import WalArchive
from auction_backup_pipelines.repository import catalog, layout
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import Settings


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Complete backups (of a system, of an artifact) as a table or as JSON; each unreadable
    manifest is one more line (and one more JSON item, with its "problem"), and exit 1."""
    repo = open_repository(args, settings)
    found = catalog.audit(repo, args.system, args.artifact, catalog=False)
    backups, bad = found.backups, found.errors
    if args.json:
        print_json(
            [
                {
                    "key": b.prefix,
                    "partition": b.partition,
                    "size": b.size,
                    "stored_size": b.stored_size,
                    "captured_at": b.metadata.get("captured_at"),
                    "capture": status.capture_of(b.metadata),
                }
                for b in backups
            ]
            + [{"key": f.key, "problem": f.problem, "detail": f.detail} for f in bad]
        )
        return EXIT_FAILURE if bad else 0
    if not backups and not bad:
        print(f"no backups in {repo.describe()}")
        return 0
    rows = [
        [
            layout.artifact_key(b.system, b.artifact),
            b.partition,
            str(b.stored_size),
            str(b.metadata.get("captured_at", "")),
            status.capture_of(b.metadata),
            b.backup_id,
        ]
        for b in backups
    ]
    for line in table(["system/artifact", "day", "stored", "captured_at", "capture", "backup_id"], rows, right=frozenset({2})):
        print(line)
    for f in bad:
        print(f"{f.problem.upper()}  {f.key}: {f.detail}")
    return EXIT_FAILURE if bad else 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the retention policy (or, with --dry-run, only explain it) to the local repository and,
    when one is configured, to the offsite repository too (--local / --offsite: only that one);
    in each, also remove what crashed runs left once older than LEFTOVER_SAFETY_AGE_S."""
    only = args.only
    if only == offsite_retention.OFFSITE and not settings.offsite.configured:
        raise CliError("--offsite needs an offsite repository: set OFFSITE_S3_BUCKET (and OFFSITE_S3_*)")
    both = only is None and settings.offsite.configured
    local = open_repository(args, settings)
    if args.json:
        if not args.dry_run:
            raise CliError("--json goes with --dry-run (a prune that deletes prints its outcomes as text)")
        print_json(prune_plan(local, settings, only))
        return 0
    code = 0
    if only != offsite_retention.OFFSITE:
        target = offsite_retention.local_target(local, settings.retention.pitr_window)
        code = offsite_retention.prune_target_command(target, dry_run=args.dry_run)
        print()  # then what crashed runs left there (policy/leftovers.py)
        code = max(code, leftovers.prune_command(local.storage, args.dry_run, settings.retention.leftover_safety_age))
    if only != offsite_retention.LOCAL and settings.offsite.configured:
        if both:
            print()
        dst = offsite.repository_from_settings(settings.offsite)
        target = offsite_retention.offsite_target(dst, local, settings.offsite, settings.retention.pitr_window)
        code = max(code, offsite_retention.prune_target_command(target, dry_run=args.dry_run))
        print()
        code = max(code, leftovers.prune_command(dst.storage, args.dry_run, settings.retention.leftover_safety_age))
    return code


def prune_plan(local: Repository, settings: Settings, only: str | None) -> dict[str, Any]:
    """What `prune --dry-run` would do, as data: per repository the keep/expire decisions with their
    reasons, the WAL runs that would expire, and the crash leftovers that would be removed."""
    now = pruning.utcnow()
    safety = settings.retention.leftover_safety_age
    out: dict[str, Any] = {}
    if only != offsite_retention.OFFSITE:
        decisions, wal = pruning.plan_with_wal(local, now, pitr_window=settings.retention.pitr_window)
        out["local"] = {
            "repository": local.describe(),
            "backups": [_decision(d) for d in decisions],
            "wal_expired": wal.expired_runs(),
            "wal_expired_files": len(wal.expired()),
            "leftovers": [_leftover(d) for d in leftovers.plan(local.storage, now, safety)],
        }
    if only != offsite_retention.LOCAL and settings.offsite.configured:
        dst = offsite.repository_from_settings(settings.offsite)
        target = offsite_retention.offsite_target(dst, local, settings.offsite, settings.retention.pitr_window)
        off_decisions, off_wal = offsite_retention.plan_with_wal(target, now)
        out["offsite"] = {
            "repository": dst.describe(),
            "backups": [_decision(d) for d in off_decisions],
            "wal_expired": off_wal.expired_runs(),
            "wal_expired_files": len(off_wal.expired()),
            "leftovers": [_leftover(d) for d in leftovers.plan(dst.storage, now, safety)],
        }
    return out


def _decision(d: retention.Decision) -> dict[str, Any]:
    return {"key": d.backup.key, "keep": d.keep, "reasons": list(d.reasons)}


def _leftover(d: leftovers.Decision) -> dict[str, Any]:
    return {"leftover": dataclasses.asdict(d.leftover), "remove": d.remove, "reason": d.reason}


def cmd_pin(args: argparse.Namespace, settings: Settings) -> int:
    """Keep every backup of one day, whatever the retention policy says."""
    key = pruning.pin(open_repository(args, settings), args.system, args.artifact, args.date, note=args.note)
    if args.json:
        print_json({"pinned": True, "system": args.system, "artifact": args.artifact, "day": args.date, "pin": key})
        return 0
    print(f"pinned {args.system}/{args.artifact} {args.date}: retention keeps every backup of that day ({key})")
    return 0


def cmd_unpin(args: argparse.Namespace, settings: Settings) -> int:
    """Remove a day's pin; its backups follow the policy again."""
    existed = pruning.unpin(open_repository(args, settings), args.system, args.artifact, args.date)
    if args.json:
        print_json({"pinned": False, "was_pinned": existed, "system": args.system, "artifact": args.artifact, "day": args.date})
        return 0
    print(f"{'unpinned' if existed else 'was not pinned:'} {args.system}/{args.artifact} {args.date}")
    return 0


def cmd_offsite(args: argparse.Namespace, settings: Settings) -> int:
    """Copy backups (and with --wal the WAL archive) to the offsite repository, verified there."""
    src, dst = open_repository(args, settings), offsite.repository_from_settings(settings.offsite)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs --system and --artifact")
    # One backup at a time (what copy_partition / copy_all do), so a terminal can show the progress.
    backups = [src.get(args.system, args.artifact, args.date)] if args.date else src.list(args.system)
    reports = []
    with activity(f"offsite copy to {dst.describe()}", total=len(backups)) as step:
        for b in backups:
            reports.append(offsite.copy_backup(src, dst, b, reverify=bool(args.date)))
            step(b.prefix)
    w = None
    if args.wal:
        with activity("offsite copy of the WAL archive"):
            w = offsite.copy_wal(WalArchive(src.backend), WalArchive(dst.backend))
    if args.json:
        print_json({"copies": [dataclasses.asdict(r) for r in reports], "wal": dataclasses.asdict(w) if w else None})
        return 0
    for r in reports:
        print(r.summary())
    if w is not None:
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
    p.add_argument("--json", action="store_true", help="print the copy reports as JSON")
    p.set_defaults(func=cmd_offsite)

    p = sub.add_parser(
        "prune", help="apply the retention policy (keep/expire table with reasons, then delete) and remove crash leftovers"
    )
    p.add_argument("--dry-run", action="store_true", help="print the tables and what would be deleted or removed; delete nothing")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--local", dest="only", action="store_const", const=offsite_retention.LOCAL, help="only the local repository"
    )
    where.add_argument(
        "--offsite",
        dest="only",
        action="store_const",
        const=offsite_retention.OFFSITE,
        help="only the offsite repository (default: both, when OFFSITE_S3_BUCKET is set)",
    )
    p.add_argument("--json", action="store_true", help="with --dry-run: print the plan (decisions, WAL, leftovers) as JSON")
    p.set_defaults(func=cmd_prune, only=None)

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
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        p.set_defaults(func=func)

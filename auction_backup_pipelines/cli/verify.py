"""`auction-backup verify`: backups checked against their manifests and the catalog (nothing is
written unless --adopt or --forget), or with --restore the weekly restore checks run now, into
scratch targets, while Dagster may be down.

The manifests are audited first (repository/catalog.py): each that is missing, changed,
unreadable or fails its own checksum is one line, and every other backup is still checked;
the exit code is 1 when anything failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, SYSTEMS, CliError, day, open_repository
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.cli.progress import activity
from auction_backup_pipelines.ops import restore_checks
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump
from auction_backup_pipelines.redis import client as redis_client
from auction_backup_pipelines.redis import verification as redis_verification
from auction_backup_pipelines.repository import catalog
from auction_backup_pipelines.repository.layout import BackupRef
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.repository.storage import RepositoryError
from auction_backup_pipelines.settings import Settings


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Audit the manifests, then check each backup's files; one line per backup or finding, exit 1 if one fails."""
    if args.restore:
        return cmd_verify_restore(args, settings)
    repo = open_repository(args, settings)
    if args.date and not (args.system and args.artifact):
        raise CliError("--date needs a system and an artifact, e.g. `verify postgres logical_dump --date 2026-11-26`")
    for key in args.forget or ():
        ref = _backup_ref(key)
        existed = catalog.has_entry(repo, ref)
        catalog.forget(repo, ref)
        _say(args, f"forgot   {key}: catalog entry removed" if existed else f"forgot   {key}: had no catalog entry")
    found = catalog.audit(repo, args.system, args.artifact)
    if args.date:
        found.backups = [b for b in found.backups if b.partition == args.date]
        found.findings = [f for f in found.findings if _day_of(f.key) == args.date]
        if not found.backups and not found.findings:
            repo.get(args.system, args.artifact, args.date)  # NotFoundError naming the days there are
    if not found.backups and not found.findings:
        raise CliError(f"no backups to verify in {repo.describe()}")
    adopted, skipped = catalog.adopt(repo, found) if args.adopt else ([], [])
    rows = []
    with activity("verify" + (" --deep" if args.deep else ""), total=len(found.backups)) as step:
        for b in found.backups:
            rows.append(_verify_one(repo, b, args.deep, settings))
            step(b.prefix)
    for f in found.findings:
        if f.key in adopted:
            rows.append({"key": f.key, "status": "adopted", "detail": "recorded in the catalog", "severity": "info"})
        else:
            rows.append({"key": f.key, "status": f.problem, "detail": f.detail, "severity": f.severity})
    rows.sort(key=lambda r: r["key"])
    failed = [r for r in rows if r["severity"] == catalog.ERROR]
    if args.json:
        print_json({"results": rows, "adopt_skipped": skipped, "failed": len(failed)})
    else:
        for r in rows:
            label = {"ok": "ok", "failed": "FAILED", "adopted": "adopted"}.get(r["status"]) or r["severity"].upper()
            print(f"{label:<8}{r['key']}" + (f": {r['detail']}" if r["status"] != "ok" else ""))
        for line in skipped:
            print(f"WARNING {line}")
        warnings = sum(r["severity"] == catalog.WARNING for r in rows)
        ok = sum(r["status"] == "ok" for r in rows)
        print(f"{ok} ok, {len(failed)} failed, {warnings} warning(s)" + (f", {len(adopted)} adopted" if adopted else ""))
    return EXIT_FAILURE if failed else 0


def _verify_one(repo: Repository, b: Backup, deep: bool, settings: Settings) -> dict[str, str]:
    try:
        report = repo.verify(b, deep=deep)
        if b.system == pg_client.SYSTEM and b.artifact == logical_dump.LOGICAL_DUMP:
            logical_dump.dump_toc(repo, b, settings.postgres.bin_dir)
        if b.system == redis_client.SYSTEM and b.artifact == redis_client.SNAPSHOT and deep:
            redis_verification.verify_snapshot(repo, b)
    except (RepositoryError, pg_client.PostgresError, redis_client.RedisBackupError) as exc:
        return {"key": b.prefix, "status": "failed", "detail": str(exc), "severity": catalog.ERROR}
    return {"key": b.prefix, "status": "ok", "detail": f"manifest sha256 {report.manifest_sha256}", "severity": "ok"}


def _backup_ref(key: str) -> BackupRef:
    try:
        return BackupRef.parse(key)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def _day_of(key: str) -> str | None:
    try:
        return BackupRef.parse(key).day.isoformat()
    except ValueError:
        return None


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line)


def cmd_verify_restore(args: argparse.Namespace, settings: Settings) -> int:
    """The weekly restore checks, now: the newest backup of each asset restored into scratch targets;
    each verdict is recorded on the backup it tested, where retention reads it (repository/verdicts.py)."""
    if args.artifact or args.date or args.deep:
        raise CliError("--restore checks the newest backup of each asset; it takes a system but no artifact, --date or --deep")
    repo = open_repository(args, settings)
    kafka = settings.kafka
    checks = restore_checks.planned_checks(repo, kafka.topics, [args.system] if args.system else None)
    postgres = settings.postgres
    outcomes = []
    for check in checks:
        outcome = restore_checks.run_check(check, repo, postgres, kafka)
        recorded = restore_checks.record_verdict(repo, outcome, by="auction-backup verify --restore")
        outcomes.append(outcome)
        if not args.json:
            print(outcome.summary(), flush=True)
            if "NOT recorded" in recorded:  # retention reads verdicts: say when one is missing
                print(f"      {recorded}", flush=True)
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
        "scratch databases, instances, servers and topics are removed afterwards; each verdict is recorded on the "
        "backup it tested, for retention; exit 1 if one fails",
    )
    p.add_argument(
        "--adopt",
        action="store_true",
        help="record complete backups that are not in the catalog (written before it existed) in it",
    )
    p.add_argument(
        "--forget",
        action="append",
        metavar="KEY",
        help="remove the catalog entry of backup KEY (system/artifact/day/backup_id): accept that its manifest "
        "is gone or changed; repeatable",
    )
    p.add_argument("--json", action="store_true", help="print the results (or with --restore the outcomes) as JSON")
    p.set_defaults(func=cmd_verify)

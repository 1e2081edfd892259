"""`auction-backup check [--json]`: does the backup machinery work right now? One line per check.

Like `pgbackrest check`, it acts: a test object is written, read back and deleted in every
repository (local, and offsite when OFFSITE_S3_BUCKET is set); the keys decrypt the newest
manifests; the WAL receiver's replication slot, the WAL archive's lag, every service and the
local repository's free space are judged (ops/health_check.py). Exit codes follow the
monitoring-plugin convention (Nagios, Icinga, Zabbix agents) so the command can be one as is:

    0  every check OK
    1  at least one WARN, no FAIL
    2  at least one FAIL (also argparse's code for a malformed command line)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from auction_backup_pipelines.cli.common import open_repository
from auction_backup_pipelines.cli.output import print_json, table
from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.ops import health_check as hc
from auction_backup_pipelines.ops import preflight, status
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import Settings

EXIT_CODES = {hc.OK: 0, hc.WARN: 1, hc.FAIL: 2}


def _service(system: str, probe: Callable[[], str]) -> Callable[[], hc.Check]:
    def run() -> hc.Check:
        try:
            return hc.Check(f"service {system}", hc.OK, probe())
        except preflight.PreflightError as exc:
            return hc.Check(f"service {system}", hc.FAIL, str(exc))

    return run


def _repository_checks(label: str, opener: Callable[[], Repository]) -> tuple[Repository | None, list[hc.Check]]:
    """Open one repository (its keys are read here) and probe it; a repository that cannot be
    opened is one FAIL line, and its other checks are skipped."""
    try:
        repo = opener()
    except BackupError as exc:
        return None, [hc.Check(f"repository {label}", hc.FAIL, str(exc))]
    probe = hc.guarded(f"repository {label}", lambda: hc.probe_repository(f"repository {label}", repo))
    if probe.status == hc.FAIL:  # a store that cannot be written or read: its keys cannot be judged either
        return repo, [probe, hc.Check(f"keys {label}", hc.FAIL, f"not checked: repository {label} failed")]
    return repo, [probe, hc.guarded(f"keys {label}", lambda: hc.check_keys(f"keys {label}", repo))]


def run_checks(args: argparse.Namespace, settings: Settings) -> list[hc.Check]:
    """Every check, in a fixed order. They run side by side: the offsite store's round trips, the
    service probes (each with its own timeout) and the local repository's reading overlap, so the
    command answers in about the time of its slowest check, not the sum of them."""
    window = settings.retention.pitr_window
    with ThreadPoolExecutor(max_workers=2) as pool:
        remote = (
            pool.submit(_repository_checks, "offsite", lambda: status.offsite_repository(settings.offsite))
            if settings.offsite.configured
            else None
        )
        services = pool.submit(
            hc.run_parallel,
            [
                ("service postgres", _service("postgres", lambda: preflight.check_postgres(settings.postgres))),
                ("service redis", _service("redis", lambda: preflight.check_redis(settings.redis))),
                ("service kafka", _service("kafka", lambda: preflight.check_kafka(settings.kafka))),
                ("replication slot", lambda: hc.check_replication_slot(settings.postgres, args.slot)),
            ],
        )
        local, checks = _repository_checks("local", lambda: open_repository(args, settings))
        archive: list[hc.Check] = []
        if local is not None:
            archive = [
                hc.guarded("wal archive", lambda: hc.check_wal_archive(local, settings.wal.max_lag_s, window)),
                hc.guarded("free space", lambda: hc.check_free_space(local, window)),
            ]
        checks += (remote.result()[1] if remote is not None else []) + services.result() + archive
    return checks


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per check (or JSON); the exit code is the worst status (module docstring)."""
    checks = run_checks(args, settings)
    overall = hc.worst(checks)
    if args.json:
        print_json({"status": overall, "checks": [c.as_dict() for c in checks]})
    else:
        for line in table(["status", "check", "detail"], [[c.status, c.name, c.detail] for c in checks])[1:]:
            print(line)
        print(
            f"{overall}: {sum(c.status == hc.OK for c in checks)} ok, {sum(c.status == hc.WARN for c in checks)} warning(s), "
            f"{sum(c.status == hc.FAIL for c in checks)} failure(s)"
        )
    return EXIT_CODES[overall]


def register(sub: Any) -> None:
    """Add `check`."""
    p = sub.add_parser(
        "check",
        help="end to end: write/read/delete a test object in each repository, keys, replication slot, WAL lag, "
        "services, free space; exit 0 ok, 1 warning, 2 failure",
    )
    p.add_argument("--slot", default=hc.DEFAULT_SLOT, help=f"the WAL receiver's replication slot (default {hc.DEFAULT_SLOT})")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_check)

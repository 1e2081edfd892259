"""`auction-backup drill`: the whole-platform recovery drill (ops/drill), run now, without Dagster.

It prints the moment T it recovers to and why, each system's recovery time and data-loss window,
and every invariant with its counts; exit 1 on any violation or missing piece. The scratch
targets are removed on every way out, SIGTERM included (unless --keep). `--failover` then runs
the platform's writes on the recovered systems for `--failover-seconds` and proves they work
(ops/drill/failover.py); a failed or skipped rehearsal fails the drill too.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, open_repository
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.ops.drill.engine import run_drill
from auction_backup_pipelines.ops.drill.failover import DEFAULT_SECONDS, MAX_SECONDS
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.settings import Settings


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_SECONDS:g} seconds (a bounded rehearsal)")
    return value


def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    repo = open_repository(args, settings)
    at = pitr.parse_target(args.at, args.timezone) if args.at else None
    report = run_drill(
        repo,
        settings.postgres,
        settings.kafka,
        settings.kafka.topics,
        at,
        keep=args.keep,
        failover=args.failover,
        failover_seconds=args.failover_seconds,
        # progress goes to stderr as it happens; stdout holds the report alone (text or one JSON document)
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print_json(report.as_dict())
    else:
        for line in report.lines():
            print(line)
    return 0 if report.passed else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add `drill`."""
    p = sub.add_parser(
        "drill", help="recover every system to one moment in scratch targets, measure RTO/RPO, check the invariants"
    )
    p.add_argument("--at", help='the moment T, e.g. "2026-12-01 14:30:00" (default: the newest moment every system can reach)')
    p.add_argument("--timezone", default="UTC", help="timezone of an --at without offset (default UTC)")
    p.add_argument("--keep", action="store_true", help="keep the scratch targets (the recovered PostgreSQL keeps running)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--failover",
        action="store_true",
        help="after the invariants pass, run the platform's writes on the recovered systems (scratch topics on the same "
        "broker) for a bounded period and prove writes, Redis reads and consumer resumption; then tear it all down",
    )
    p.add_argument(
        "--failover-seconds",
        type=_positive_seconds,
        default=DEFAULT_SECONDS,
        help=f"how long the failover rehearsal writes (default {DEFAULT_SECONDS:g}, at most {MAX_SECONDS:g})",
    )
    p.set_defaults(func=cmd_drill)

"""`auction-backup doctor`: can PostgreSQL, Redis and Kafka be reached with the current settings?

The services part of `auction-backup check` (cli/check.py), kept as the quick first question
with its own exit code: 0 when all three answer, 1 otherwise."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE
from auction_backup_pipelines.cli.output import print_json
from auction_backup_pipelines.ops import preflight
from auction_backup_pipelines.settings import Settings


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    """One line per system; exit 1 if one cannot be reached."""
    results = preflight.check_all(settings.postgres, settings.redis, settings.kafka)
    if args.json:
        print_json([dataclasses.asdict(r) for r in results])
    for r in results if not args.json else ():
        print(f"{'ok    ' if r.ok else 'FAILED'}  {r.system:<9} {r.detail}")
    return 0 if all(r.ok for r in results) else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add `doctor`."""
    p = sub.add_parser("doctor", help="check that PostgreSQL, Redis and Kafka are reachable with the current settings")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_doctor)

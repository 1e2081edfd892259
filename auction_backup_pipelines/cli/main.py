"""`auction-backup`: list, take, verify and restore backups without Dagster.

Everything here calls the engines directly, so an operator can restore at 3 a.m. even when
the Dagster webserver, daemon or its storage are down. Settings are the code location's:
`main` reads them once (settings.load_settings) and hands each command the groups it needs.
Each command group registers its own subcommands (cli/<group>.py); this module assembles the
parser and is the one place that turns a `BackupError` into a one-line error and exit 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from auction_backup_pipelines.cli import backup, check, doctor, drill, info, pitr, repository, restore, verify
from auction_backup_pipelines.cli.common import EXIT_FAILURE
from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.settings import Settings, load_settings

EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; commands appear in `--help` in the order registered here."""
    parser = argparse.ArgumentParser(prog="auction-backup", description="Back up, verify and restore Auction Flow's data.")
    parser.add_argument("--repo", help="backup repository folder (default: $BACKUP_ROOT or ./backups)")
    sub = parser.add_subparsers(dest="command", required=True)
    doctor.register(sub)
    info.register(sub)
    check.register(sub)
    repository.register_list(sub)
    backup.register(sub)
    restore.register(sub)
    pitr.register(sub)
    verify.register(sub)
    drill.register(sub)
    repository.register(sub)
    return parser


def one_line(message: str) -> str:
    """A message as one line: a tool's multi-line stderr quoted in an error (pg_receivewal adds a
    tab-indented hint) is joined, so a monitoring system or a log reader gets one line per error."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Run one command; an engine's `BackupError` (or a malformed value) is one line on stderr and exit 1."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        return handler(args, load_settings(tolerant=True))
    except (BackupError, ValueError) as exc:  # ValueError: a malformed value the engines parse, e.g. a target time
        print(f"auction-backup: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("auction-backup: interrupted; nothing incomplete was published", file=sys.stderr)
        return EXIT_INTERRUPTED

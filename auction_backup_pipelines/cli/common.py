"""What every command needs: the repository the settings name, the one-line error, the exit code.

Commands raise `CliError` (a `BackupError`) for a usage problem the parser cannot see; `main`
prints it as one line like any other engine error.
"""

from __future__ import annotations

import argparse
import datetime as dt

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.repository.encryption import Encryption
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import Settings

EXIT_FAILURE = 1
SYSTEMS = ["postgres", "redis", "kafka"]  # the choices of every SYSTEM argument


class CliError(BackupError):
    """A failure to report as one clear line, without a traceback."""


def day(text: str) -> str:
    """The `type` of every --date: exactly YYYY-MM-DD. An empty or malformed day is refused by the
    parser, so `--date ''` can never fall back to the default day and back up the wrong one."""
    try:
        ok = len(text) == 10 and dt.date.fromisoformat(text).isoformat() == text
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"not a day: {text!r} (expected YYYY-MM-DD)")
    return text


def open_repository(args: argparse.Namespace, settings: Settings) -> Repository:
    """The repository (--repo, or BACKUP_ROOT), encrypted when BACKUP_ENCRYPTION_KEY_FILE or BACKUP_ENCRYPTION_KEYS is set."""
    local, keys = settings.repository, settings.encryption
    return Repository.local(
        args.repo or local.root, compression=local.compression, encryption=Encryption.from_settings(keys.key_file, keys.keys)
    )

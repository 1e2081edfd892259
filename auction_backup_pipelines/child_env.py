"""The environment of every program we start: a short allowlist, never a copy of ours.

Our own environment holds every secret of the platform (POSTGRES_PASSWORD, the offsite S3 key,
BACKUP_ENCRYPTION_KEYS, the SMTP password, ...). Whatever a child inherits can be read from
/proc/<pid>/environ by its owner and by root, for its whole life: a PostgreSQL server recovered
by PITR would hand them to any superuser of that copy (`pg_read_file('/proc/self/environ')`).
So each child starts from `base_env()` and its caller adds the one credential that child needs
(PGPASSWORD for a PostgreSQL client program, REDISCLI_AUTH for redis-cli); servers get nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

# What a program needs to run as it would from a shell, none of it a secret:
# PATH    finds the programs a child runs itself (runuser -> pg_ctl -> sh -> postgres);
# LANG, LC_* keep the messages and the text encoding our callers read and match (named one by
#         one: a prefix would let through whatever someone names LC_SOMETHING);
# TZ      keeps the local times children print in the operator's zone;
# TMPDIR  keeps their temp files where the operator put ours.
# HOME is left out: the servers have no use for root's, runuser gives postgres its own, and
# redis-cli reads it only for its interactive history. PostgreSQL client programs ask for it
# (`extra`) so that ~/.pgpass resolves as it does for our own libpq connections.
LOCALE_VARIABLES = (
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_COLLATE",
    "LC_MESSAGES",
    "LC_MONETARY",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_ADDRESS",
    "LC_IDENTIFICATION",
    "LC_MEASUREMENT",
    "LC_NAME",
    "LC_PAPER",
    "LC_TELEPHONE",
)
BASE_VARIABLES = ("PATH", *LOCALE_VARIABLES, "TZ", "TMPDIR")


def base_env(extra: Iterable[str] = ()) -> dict[str, str]:
    """The allowlisted variables of our environment (plus the named `extra` ones) that are set."""
    wanted = set(BASE_VARIABLES) | set(extra)
    return {k: v for k, v in os.environ.items() if k in wanted}

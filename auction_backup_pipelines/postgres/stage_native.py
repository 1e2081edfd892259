"""A logical dump staged for `pg_restore -j` by the native `pg-stage` helper (native/pg-stage).

Why: our dumps come from `pg_dump -Fc -Z0` writing to a pipe, so their table of contents has no
data offsets and every row is a chunk of its own. From such a file each `pg_restore -j` worker
skips through the data before its table one fseek per row, and the rows go to COPY one at a
time: on a 293 MB pgbench dump, 2 cores, pg_restore -j 2 spent 1.5 s of CPU and 4.4-5.3 s of
wall time, against 0.2 s and 3.5-3.8 s once staged. `pg-stage` writes the same archive with the
offsets set and the rows gathered into 1 MiB chunks: pg_restore sends the same bytes to COPY.

A restore that gains nothing from parallel jobs (parallel_restore.stream_reason) has the helper
write the rechunked archive straight into a one-job `pg_restore`'s stdin (`stream`) instead: no
local copy, and the load starts with the first bytes. There only a helper that refuses the
archive before writing a byte (or is missing) makes the restore stage it instead; one that fails
mid-stream fails the restore, since pg_restore has by then loaded part of it.

The helper stages only the format it was written and tested against (archive 1.14: PostgreSQL
12 to 15, uncompressed); for anything else, or when it is missing or fails, the dump is copied
as it is and restores as before, only slower. The bytes it reads come through the repository's
checking reader: a dump whose sha256 differs from the manifest raises IntegrityError at its end
whichever way it is staged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, BinaryIO

from auction_backup_pipelines import native
from auction_backup_pipelines.postgres.client import PostgresError, feed_stdin

HELPER = "pg-stage"
FEED = 4 << 20
UNSUPPORTED = 3  # the helper's exit code for an archive it does not stage (it wrote nothing)
USAGE = 2  # with its usage line: a helper built before it could stream (two arguments)
# Two arguments, so that a helper older than this mode stops with its usage line instead of
# writing the decrypted dump into a file named "-".
STREAM_ARGS = ["--stdout", "-"]


def helper_path() -> str | None:
    return native.helper_path(HELPER)


def restage(path: str, source: BinaryIO, out: Path) -> str:
    """Stage the archive read from `source` into `out` through the helper at `path`. Returns ""
    when done, else why it was not (the caller then copies the archive as it is). A failure of
    `source` (IntegrityError) is raised as it is."""
    result: list[bytes] = []

    def talk(stdin: IO[bytes], stdout: IO[bytes]) -> None:
        feed_stdin(source, stdin, FEED)
        result.append(stdout.read())

    try:
        rc, err = native.run_helper(path, talk, PostgresError, "nothing was changed", args=[str(out)])
    except PostgresError as exc:  # it could not start (a broken install): the plain copy still works
        return str(exc)
    if rc != 0:
        return native.last_line(err) or f"{HELPER} exited with {rc}"
    try:
        json.loads(b"".join(result))
    except ValueError:
        return f"{HELPER} wrote a result that cannot be read"
    return ""


def stream(path: str, source: BinaryIO, into: IO[bytes]) -> str:
    """The archive read from `source`, rechunked by the helper at `path` into `into` (a one-job
    `pg_restore`'s stdin), which is closed here when the helper is done. Returns "" when done, else
    why not: the helper refused the archive before writing a byte (pg_restore then read nothing).
    A failure of `source` (IntegrityError) is raised as it is; a malformed archive raises
    PostgresError."""

    try:
        rc, err = native.run_helper(
            path,
            lambda stdin, _: feed_stdin(source, stdin, FEED),
            PostgresError,
            "nothing was changed",
            args=STREAM_ARGS,
            stdout=into,
        )
    except PostgresError as exc:  # it could not start: nothing was written
        return str(exc)
    finally:
        into.close()  # pg_restore's end of input
    if rc == UNSUPPORTED or (rc == USAGE and "usage:" in native.last_line(err)):
        return native.last_line(err)
    if rc != 0:
        raise PostgresError(f"{HELPER} could not read the dump: {native.last_line(err) or f'exit {rc}'}")
    return ""

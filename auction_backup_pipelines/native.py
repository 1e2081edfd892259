"""The project's native helpers (native/*, built by stack/install.sh): where they are, and how
one is run.

Each is optional: its caller has a slower Python path that gives the same result.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from auction_backup_pipelines.child_env import base_env

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; Python names it from 3.10 on
PIPE_BYTES = 1 << 20


def helper_path(name: str) -> str | None:
    """`name` next to this interpreter (the virtualenv's bin, where install.sh puts it), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def run_helper(
    path: str,
    talk: Callable[[IO[bytes], IO[bytes]], None],
    error: type[Exception],
    nothing_done: str,
    args: Sequence[str] = (),
    stdout: IO[bytes] | None = None,
) -> tuple[int, bytes]:
    """Run the helper at `path` (with `args`: never a secret); `talk(stdin, stdout)` feeds it and
    reads what it writes; returns (exit code, stderr). It starts from our minimal environment:
    whatever it needs, credentials included, reaches it on stdin, never in its argv or
    environment. If `talk` fails, the helper is killed and the failure raised; a helper that
    cannot start raises `error`. With `stdout` (another program's stdin), the helper writes
    there, and `talk` gets an empty stream in place of its output."""
    try:
        proc = subprocess.Popen(
            [path, *args],
            env=base_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise error(f"the {Path(path).name} helper could not start ({exc}); {nothing_done}") from None
    assert proc.stdin is not None and proc.stderr is not None
    for pipe in (proc.stdin, proc.stdout or stdout):
        # 1 MiB pipes instead of Linux's 64 KiB: the helper and we each move a megabyte at a time.
        with contextlib.suppress(OSError):
            if pipe is not None:
                fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        talk(proc.stdin, proc.stdout or io.BytesIO())
    except BaseException:
        proc.kill()
        raise
    finally:
        proc.wait()
        reader.join()
    return proc.returncode, b"".join(stderr)


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""

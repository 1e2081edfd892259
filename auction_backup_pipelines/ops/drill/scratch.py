"""The drill's scratch targets: one private folder per drill, named after the drill's pid, holding
the recovered PostgreSQL instance and the Redis snapshot its scratch server loads.

`finally` removes them, and SIGTERM is turned into an exception so `finally` runs on a polite
kill too (`sigterm_raises`). A SIGKILL cannot be caught: the folder (and a recovered server still
running in it) stays behind, and the next drill removes it (`sweep_stale`) before it creates its
own, because its owner's pid is dead. `--keep` folders carry a different prefix and are never swept.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from auction_backup_pipelines.errors import BackupError
from auction_backup_pipelines.localhost import pid_alive
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.redis.scratch import servers_in, sweep_stale_scratch

DRILL_PREFIX = "auction-backup-drill-"
KEPT_PREFIX = "auction-backup-drill-kept-"


class DrillInterrupted(BackupError):
    """The drill was stopped by SIGTERM; its scratch targets were removed."""


def scratch_root(parent: Path | None = None) -> Path:
    return parent or Path(tempfile.gettempdir())


def sweep_stale(parent: Path | None = None) -> list[str]:
    """Stop the servers of, and remove, every drill folder whose owner process is gone."""
    removed = []
    for folder in scratch_root(parent).glob(DRILL_PREFIX + "*"):
        owner = re.match(re.escape(DRILL_PREFIX) + r"(\d+)-", folder.name)
        if not owner or pid_alive(int(owner.group(1))):
            continue  # a kept folder, or a drill still running
        stop_servers(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    sweep_stale_scratch()  # the scratch Redis servers' socket folders
    return removed


def processes_in(folder: Path) -> list[int]:
    """Pids of the processes working in `folder` or below (PostgreSQL and Redis chdir() into their data)."""
    pids = []
    root = os.path.realpath(folder)
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cwd = os.path.realpath(entry / "cwd")
            if cwd == root or cwd.startswith(root + os.sep):
                pids.append(int(entry.name))
    return pids


def stop_servers(folder: Path) -> None:
    """Stop a recovered PostgreSQL and any scratch redis-server working in `folder`.

    A clean stop first; then whatever still works in the folder is killed: a server that was
    starting when a signal interrupted its pg_ctl has no postmaster.pid to stop it by yet."""
    for pid_file in folder.glob("*/data/postmaster.pid"):
        data = pid_file.parent
        pitr.RestoredInstance(data, 0, data.parent / "postgres.log").stop()
    for pid in servers_in(folder):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    for pid in processes_in(folder):
        if pid != os.getpid():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def new_folder(keep: bool, parent: Path | None = None) -> Path:
    """A new drill folder the postgres user can traverse (a recovered server runs as postgres)."""
    prefix = KEPT_PREFIX if keep else DRILL_PREFIX
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    folder.chmod(0o711)
    return folder


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises DrillInterrupted (in the main thread only: elsewhere a no-op),
    so every `finally` of the drill stops its servers and removes its folder."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupted(signum: int, frame: object) -> None:
        raise DrillInterrupted("the drill was stopped by SIGTERM; its scratch targets were removed")

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

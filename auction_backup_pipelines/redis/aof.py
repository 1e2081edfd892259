"""The last-resort capture: a copy of the Redis 7 multi-part AOF, for when both RDB paths fail
(SYNC/BGSAVE refused or renamed, a failing fork) and the server's data dir is on this machine.

It copies the AOF manifest and the base and incr files it lists, with automatic rewrites paused
meanwhile; the manifest is read again after opening every file, so what is copied is one
consistent state.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import redis

from auction_backup_pipelines.redis.capture import Tee, wait_persistence
from auction_backup_pipelines.redis.client import SnapshotUnavailable, iso_ms, server_time_ms
from auction_backup_pipelines.repository.repository import BackupWriter


def parse_aof_manifest(text: str) -> list[tuple[str, str]]:
    """(file name, type) pairs of a Redis 7 AOF manifest: b(ase), i(ncr), h(istory)."""
    files = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        d = dict(zip(fields[0::2], fields[1::2]))
        if "file" not in d or d.get("type") not in ("b", "i", "h") or "/" in d["file"] or d["file"].startswith("."):
            raise SnapshotUnavailable(f"unreadable AOF manifest line: {line!r}")
        files.append((d["file"], d["type"]))
    return files


def copy_aof(r: redis.Redis, data_dir: str, writer: BackupWriter, tee_dir: Path, timeout: float) -> dict[str, Any]:
    """Copy the AOF manifest and the base and incr files it lists into the backup and into `tee_dir`."""
    try:
        cfg = r.config_get("appendonly", "appenddirname", "appendfilename", "auto-aof-rewrite-percentage")
    except redis.ResponseError:
        cfg = {}
    if cfg.get("appendonly", "yes") != "yes":
        raise SnapshotUnavailable("AOF is off on this server (appendonly no)")
    dirname, basename = cfg.get("appenddirname", "appendonlydir"), cfg.get("appendfilename", "appendonly.aof")
    if dirname is None or basename is None:
        raise SnapshotUnavailable("CONFIG GET appenddirname/appendfilename answered without a value; cannot find the AOF")
    aof_dir = Path(data_dir, dirname)
    manifest_path = aof_dir / f"{basename}.manifest"
    original = cfg.get("auto-aof-rewrite-percentage")
    paused_from: str | None = None  # the setting to put back once the copy is done
    try:
        if original not in (None, "0"):
            with contextlib.suppress(redis.ResponseError):  # without CONFIG, the manifest re-check below still guards us
                r.config_set("auto-aof-rewrite-percentage", 0)
                paused_from = original
        deadline = time.monotonic() + timeout
        wait_persistence(
            r,
            lambda p: not p["aof_rewrite_in_progress"] and not p.get("aof_rewrite_scheduled"),
            deadline,
            "a running AOF rewrite to end",
        )
        handles: dict[str, BinaryIO] = {}
        try:
            # Open every file the manifest names, then read the manifest again: if it is unchanged,
            # the open files and their current sizes are one consistent state, whatever happens next.
            for _ in range(5):
                for h in handles.values():
                    h.close()
                handles.clear()
                text = manifest_path.read_bytes()
                # history files ("h") are what a rewrite replaced: not part of the dataset, and Redis deletes them
                files = [(n, t) for n, t in parse_aof_manifest(text.decode()) if t in ("b", "i")]
                for name, _kind in files:
                    handles[name] = open(aof_dir / name, "rb")
                sizes = {n: os.fstat(h.fileno()).st_size for n, h in handles.items()}
                captured_ms = server_time_ms(r)
                if manifest_path.read_bytes() == text:
                    break
            else:
                raise SnapshotUnavailable("the AOF manifest kept changing (rewrites in progress); retry later")
            local = tee_dir / dirname
            local.mkdir()
            (local / manifest_path.name).write_bytes(text)
            with writer.open_file(manifest_path.name) as out:
                out.write(text)
            for name, _kind in files:
                with open(local / name, "wb") as tee, writer.open_file(name) as out:
                    out.copy_from(Tee(handles[name], tee, limit=sizes[name]))
        finally:
            for h in handles.values():
                h.close()
    finally:
        if paused_from is not None:
            r.config_set("auto-aof-rewrite-percentage", paused_from)
    return {
        "appenddirname": dirname,
        "appendfilename": basename,
        "manifest": manifest_path.name,
        "files": {n: sizes[n] for n, _ in files},
        "captured_at": iso_ms(captured_ms),
    }

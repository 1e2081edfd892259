"""Taking a Redis snapshot (standalone or cluster) and publishing it as a day's backup.

`backup_snapshot` decides how: INFO saying cluster_enabled:1 means every master over the
network (cluster.py); otherwise "auto" mode tries bgsave, then network (capture.py), then the
AOF copy (aof.py), recording each failed way under `fallbacks`. Redis keeps no history, so a
past day is refused unless a late capture is explicitly allowed. Nothing is published unless
the snapshot is complete and every key was read, and its content facts (facts.py) go into the
manifest.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import redis

from auction_backup_pipelines.policy import capture_window as capture
from auction_backup_pipelines.redis.aof import copy_aof
from auction_backup_pipelines.redis.capture import Captured, bgsave_and_stream, stream_network
from auction_backup_pipelines.redis.client import (
    MODES,
    RDB_FILE,
    SNAPSHOT,
    SYSTEM,
    LateCaptureRefused,
    RedisBackupError,
    SnapshotUnavailable,
    connect,
    explain,
    iso_ms,
    server_time_ms,
    source_info,
)
from auction_backup_pipelines.redis.cluster import capture_cluster
from auction_backup_pipelines.redis.facts import Facts, snapshot_facts
from auction_backup_pipelines.redis.scratch import scratch_dir
from auction_backup_pipelines.repository.manifest import Backup
from auction_backup_pipelines.repository.repository import BackupWriter, Repository
from auction_backup_pipelines.settings import RedisSettings


def check_capture_window(day: dt.date, allow_late_capture: bool = False, now: dt.datetime | None = None) -> capture.CaptureTiming:
    """On time, or explicitly allowed late; raises for a past day otherwise (and for days not over)."""
    timing = capture.classify(day, now)
    if not timing.on_time and not allow_late_capture:
        raise LateCaptureRefused(
            f"Redis keeps no history: a snapshot taken now holds today's data, not the state at the end of {day} "
            f"(its on-time window was {timing.window_start:%Y-%m-%d %H:%M}..{timing.window_end:%Y-%m-%d %H:%M} UTC). "
            "Nothing was written. Allow a late capture (allow_late_capture / --allow-late-capture) to store "
            "today's snapshot under that day, marked late_capture with its real capture time."
        )
    return timing


def _standalone(
    s: RedisSettings,
    r: redis.Redis,
    writer: BackupWriter,
    tmp: Path,
    data_dir: str | None,
    mode: str,
    stall_timeout: float,
    wait_timeout: float,
) -> tuple[dict[str, Any], list[Captured]]:
    """One server's snapshot, by the first way `mode` allows that works; each failed way is kept in `fallbacks`."""
    order = {
        "auto": ["bgsave", "network", "aof"] if data_dir else ["network"],
        "bgsave": ["bgsave"],
        "network": ["network"],
        "aof": ["aof"],
    }[mode]
    failures: list[str] = []
    for method in order:
        try:
            if method in ("bgsave", "aof") and not data_dir:
                raise SnapshotUnavailable(f"{method} needs the server's data dir on this machine (REDIS_DATA_DIR)")
            if method == "bgsave":
                meta, captured = bgsave_and_stream(r, data_dir, writer, tmp / RDB_FILE, wait_timeout)  # type: ignore[arg-type]
            elif method == "network":
                at = server_time_ms(r)
                meta, captured = stream_network(s, s.host, s.port, writer, RDB_FILE, tmp / RDB_FILE, stall_timeout, at)
                meta["captured_at"] = iso_ms(at)
            else:
                meta = copy_aof(r, data_dir, writer, tmp, wait_timeout)  # type: ignore[arg-type]
                aof = (meta["appenddirname"], meta["appendfilename"])
                return {
                    "mode": "aof",
                    "transfer": "aof copy",
                    "aof": meta,
                    "captured_at": meta["captured_at"],
                    "fallbacks": failures,
                }, [Captured(tmp, aof, rdb_facts_problem="an AOF copy")]
            return {
                "mode": "rdb",
                "transfer": "bgsave+copy" if method == "bgsave" else "redis-cli --rdb",
                "captured_at": meta.pop("captured_at"),
                "rdb": meta,
                "fallbacks": failures,
            }, [captured]
        except SnapshotUnavailable as exc:
            failures.append(f"{method}: {exc}")
            (tmp / RDB_FILE).unlink(missing_ok=True)  # a partial local copy must not be loaded later
    hint = "" if data_dir else " (set the server's data dir, REDIS_DATA_DIR, to allow BGSAVE-and-copy and the AOF fallback)"
    raise RedisBackupError(f"no snapshot could be taken of Redis at {s.host}:{s.port}: {'; '.join(failures)}{hint}")


def backup_snapshot(
    s: RedisSettings,
    repo: Repository,
    partition: dt.date,
    *,
    allow_late_capture: bool = False,
    data_dir: str | None = None,
    mode: str = "auto",
    now: dt.datetime | None = None,
    stall_timeout: float = 600.0,
    wait_timeout: float = 3600.0,
) -> Backup:
    """Snapshot the server (or cluster) `s` names and publish it as the `partition` day's backup.

    `data_dir` (default: `s.data_dir`) is the server's data directory when it is on this
    machine; `mode` is auto, bgsave, network or aof (a cluster is always read over the
    network). Nothing is published unless the snapshot is complete and readable: its end
    marker and CRC64 checked and every key read, by the rdb-facts helper or a scratch server,
    whose content facts then go into the manifest.
    """
    if mode not in MODES:
        raise RedisBackupError(f"unknown snapshot mode {mode!r}; choose one of {MODES}")
    if data_dir is None:
        data_dir = getattr(s, "data_dir", "") or None  # RedisSettings.data_dir (REDIS_DATA_DIR), once settings have it
    timing = check_capture_window(partition, allow_late_capture, now)
    started = time.monotonic()
    r = connect(s)  # fail fast, before a lock or a file exists, with a clear message
    try:
        info = source_info(r)
        with repo.begin(SYSTEM, SNAPSHOT, partition) as writer, scratch_dir() as tmp:
            if info["cluster_enabled"]:
                meta, layouts = capture_cluster(s, r, writer, tmp, stall_timeout)
            else:
                meta, layouts = _standalone(s, r, writer, tmp, data_dir, mode, stall_timeout, wait_timeout)
            transferred = time.monotonic()
            facts = Facts()
            methods = []
            for captured in layouts:
                node_facts, method = snapshot_facts(captured, info.get("databases", 16))
                facts.merge(node_facts)
                methods.append(method)
                for node in meta.get("cluster", {}).get("nodes", []):
                    if captured.folder.name + ".rdb" == node["file"]:
                        node["keys"] = node_facts.keys
            meta["digest_method"] = methods[0] if len(set(methods)) == 1 else methods
            content = facts.to_json()
            writer.metadata.update(meta)
            writer.metadata.update(
                {
                    "server": f"{s.host}:{s.port}",
                    "source": info,
                    "late_capture": not timing.on_time,
                    "content": content,
                    "digest": content["digest"],
                    "keys_total": content["keys"],
                    "transfer_duration_s": round(transferred - started, 3),
                    "digest_duration_s": round(time.monotonic() - transferred, 3),
                    "duration_s": round(time.monotonic() - started, 3),
                }
            )
    except redis.RedisError as exc:
        raise RedisBackupError(explain(exc, s.host, s.port, s.username)) from None
    finally:
        r.close()
    assert writer.committed is not None
    return writer.committed

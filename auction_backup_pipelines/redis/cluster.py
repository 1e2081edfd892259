"""Snapshots of a Redis Cluster: every master over the network into one backup,
`node-<host>-<port>.rdb` each, with the slot map in the manifest.

The slot map is read before and again after the transfers: a resharding or failover in between
fails the backup, and a degraded cluster or one whose masters do not serve all 16384 slots is
refused. Limit: the masters are captured one after another, not at one instant.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import redis

from auction_backup_pipelines.redis.capture import Captured, stream_network
from auction_backup_pipelines.redis.client import RDB_FILE, RedisBackupError, connect, iso_ms, server_time_ms, source_info
from auction_backup_pipelines.repository.repository import BackupWriter
from auction_backup_pipelines.settings import RedisSettings


def parse_cluster_nodes(text: str) -> list[dict[str, Any]]:
    """Masters from CLUSTER NODES: id, host, port, slot ranges (migrating/importing marks skipped)."""
    masters = []
    for line in text.strip().splitlines():
        parts = line.split()
        if len(parts) < 8 or "master" not in parts[2].split(","):
            continue
        if {"fail", "fail?", "noaddr", "handshake"} & set(parts[2].split(",")):
            raise RedisBackupError(f"cluster node {parts[1]} is marked {parts[2]}; refusing to back up a degraded cluster")
        addr = parts[1].split("@")[0].split(",")[0]
        host, _, port = addr.rpartition(":")
        slots = []
        for token in parts[8:]:
            if token.startswith("["):
                continue
            lo, _, hi = token.partition("-")
            slots.append([int(lo), int(hi or lo)])
        if slots:
            masters.append({"id": parts[0], "host": host, "port": int(port), "slots": sorted(slots)})
    return sorted(masters, key=lambda m: m["slots"][0][0])


def node_file(host: str, port: int) -> str:
    """The backup file name of the master at host:port."""
    return f"node-{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{port}.rdb"


def topology(r: redis.Redis) -> list[dict[str, Any]]:
    """The cluster's masters and their slots; refuses a cluster whose masters do not serve all 16384 slots."""
    raw = r.execute_command("CLUSTER", "NODES")
    masters = parse_cluster_nodes(raw.decode() if isinstance(raw, bytes) else raw)
    covered = sum(hi - lo + 1 for m in masters for lo, hi in m["slots"])
    if covered != 16384:
        raise RedisBackupError(f"the cluster's masters serve {covered} of 16384 slots; refusing an incomplete backup")
    return masters


def capture_cluster(
    s: RedisSettings, r: redis.Redis, writer: BackupWriter, tmp: Path, stall_timeout: float
) -> tuple[dict[str, Any], list[Captured]]:
    """Every master over the network, one file each; fails if the slot map changed meanwhile."""
    before = topology(r)
    layouts = []
    nodes = []
    for m in before:
        node = connect(s, host=m["host"], port=m["port"])
        try:
            info = source_info(node)
            at = server_time_ms(node)
        finally:
            node.close()
        folder = tmp / node_file(m["host"], m["port"])[:-4]
        folder.mkdir()
        meta, captured = stream_network(
            s, m["host"], m["port"], writer, node_file(m["host"], m["port"]), folder / RDB_FILE, stall_timeout, at
        )
        nodes.append({**m, **meta, "captured_at": iso_ms(at), "source": info})
        layouts.append(captured)
    after = topology(r)
    if [(m["id"], m["slots"]) for m in after] != [(m["id"], m["slots"]) for m in before]:
        raise RedisBackupError(
            "the cluster's slot map changed during the backup (resharding or failover); nothing was published, retry"
        )
    return {
        "mode": "cluster",
        "transfer": "redis-cli --rdb per master",
        "captured_at": nodes[0]["captured_at"],
        "cluster": {"nodes": nodes},
        "fallbacks": [],
    }, layouts

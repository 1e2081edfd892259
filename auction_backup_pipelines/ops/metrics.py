"""Prometheus metrics: the WAL receiver's live endpoint and each backup's node-exporter textfile.

Why: Dagster shows a backup's history to whoever opens its UI, but an on-call rotation alerts
from Prometheus. Two shapes, because the processes differ:

- `wal-receive` runs for months, so it serves /metrics itself (WAL_METRICS_PORT, loopback
  only): how far behind the archive is, WAL received, pg_receivewal restarts, the last
  completed segment. Values are read from the receiver when Prometheus scrapes, never cached.
- A backup is a short run (CLI or Dagster), gone before any scrape, so it leaves a file for
  node-exporter's textfile collector (METRICS_TEXTFILE_DIR): one file per artifact, replaced
  atomically (prometheus_client writes a temporary file and renames it), so parallel runs of
  different artifacts never write the same file and a scrape never sees half of one.

`METRIC_NAMES` is every name exported here (deploy/grafana/auction-backup.json uses only these).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.repository.manifest import Backup

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from auction_backup_pipelines.postgres.wal_receiver import WalReceiver

__all__ = ["BACKUP_METRICS", "METRIC_NAMES", "WAL_METRICS", "WalReceiverCollector", "serve_wal_metrics", "write_backup_metrics"]

WAL_METRICS = {
    "auction_backup_wal_lag_seconds": "Seconds since the newest moment whose WAL the archive provably holds (this receiver's heartbeat).",
    "auction_backup_wal_received_bytes_total": "WAL bytes pg_receivewal flushed since this receiver started.",
    "auction_backup_wal_receiver_restarts_total": "Times pg_receivewal exited and was restarted.",
    "auction_backup_wal_last_segment_timestamp_seconds": "When this receiver last archived a completed WAL segment (Unix time).",
    "auction_backup_wal_receiver_running": "1 while pg_receivewal runs, 0 between an exit and its restart.",
}
BACKUP_METRICS = {
    "auction_backup_last_success_timestamp_seconds": "When the newest backup of the artifact was published (Unix time).",
    "auction_backup_last_duration_seconds": "How long the newest backup of the artifact took, from its start to its manifest.",
    "auction_backup_last_size_bytes": "Bytes the newest backup of the artifact takes in the repository (compressed).",
    "auction_backup_last_source_bytes": "Bytes of the newest backup of the artifact before compression.",
    "auction_backup_last_partition_timestamp_seconds": "Start of the partition day the newest backup holds (Unix time).",
}
METRIC_NAMES = frozenset(WAL_METRICS) | frozenset(BACKUP_METRICS)


class WalReceiverCollector(Collector):
    """The receiver's figures at scrape time; a figure not known yet (no heartbeat, no completed
    segment since the start) is left out rather than reported as 0."""

    def __init__(self, receiver: WalReceiver):
        self.receiver = receiver

    def collect(self) -> Iterator[Metric]:
        r = self.receiver
        labels = ["slot"]

        def gauge(name: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, WAL_METRICS[name], labels=labels)
            family.add_metric([r.slot], value)
            return family

        def counter(name: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name.removesuffix("_total"), WAL_METRICS[name], labels=labels)
            family.add_metric([r.slot], value)
            return family

        covered, last_segment = r.covered_until, r.last_segment_at
        if covered is not None:
            lag = max(0.0, (dt.datetime.now(dt.UTC) - covered).total_seconds())
            yield gauge("auction_backup_wal_lag_seconds", lag)
        yield counter("auction_backup_wal_received_bytes_total", r.received_bytes)
        yield counter("auction_backup_wal_receiver_restarts_total", r.restarts)
        if last_segment is not None:
            yield gauge("auction_backup_wal_last_segment_timestamp_seconds", last_segment.timestamp())
        yield gauge("auction_backup_wal_receiver_running", 1.0 if r.running() else 0.0)


def serve_wal_metrics(receiver: WalReceiver, port: int) -> WSGIServer:
    """Serve the receiver's metrics on http://127.0.0.1:`port`/metrics (0: a free port; read
    `server_port` of the result) from a daemon thread; `shutdown()` the result to stop."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(WalReceiverCollector(receiver))
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigurationError(f"WAL_METRICS_PORT {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    return server


def textfile_path(folder: str | os.PathLike[str], system: str, artifact: str) -> Path:
    """`<folder>/auction_backup_<system>_<artifact>.prom`, the artifact's '/' and other odd characters as '_'."""
    return Path(folder) / ("auction_backup_" + re.sub(r"[^A-Za-z0-9_.-]", "_", f"{system}_{artifact}") + ".prom")


def write_backup_metrics(folder: str, backup: Backup) -> str | None:
    """Replace the artifact's textfile with `backup`'s figures (nothing when `folder` is empty).

    Called once a backup is published, by the CLI and the Dagster assets alike. Returns None, or
    one line saying why the file could not be written: a metrics file never fails a backup that
    is already safe in the repository."""
    if not folder:
        return None
    registry = CollectorRegistry()
    labels = ("system", "artifact")
    values = {
        "auction_backup_last_success_timestamp_seconds": _timestamp(backup.finished_at),
        "auction_backup_last_duration_seconds": max(0.0, _timestamp(backup.finished_at) - _timestamp(backup.started_at)),
        "auction_backup_last_size_bytes": float(backup.stored_size),
        "auction_backup_last_source_bytes": float(backup.size),
        "auction_backup_last_partition_timestamp_seconds": dt.datetime.combine(backup.day, dt.time(), dt.UTC).timestamp(),
    }
    for name, value in values.items():
        Gauge(name, BACKUP_METRICS[name], labels, registry=registry).labels(backup.system, backup.artifact).set(value)
    path = textfile_path(folder, backup.system, backup.artifact)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        return f"metrics file {path} not written: {exc.strerror or exc}"
    return None


def _timestamp(iso: str) -> float:
    moment = dt.datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()

"""`auction-backup pitr`, `wal-receive` and `wal-status`: point-in-time recovery and the WAL archive it replays.

`wal-receive` also serves Prometheus metrics on 127.0.0.1:$WAL_METRICS_PORT when that is set (ops/metrics.py)."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import threading
from pathlib import Path
from typing import Any

from auction_backup_pipelines.cli.common import EXIT_FAILURE, CliError, open_repository
from auction_backup_pipelines.cli.output import add_json_flag, print_json
from auction_backup_pipelines.cli.restore import record_restore
from auction_backup_pipelines.ops import restore_records
from auction_backup_pipelines.ops.metrics import serve_wal_metrics
from auction_backup_pipelines.policy import wal_pruning
from auction_backup_pipelines.postgres import pitr
from auction_backup_pipelines.postgres.wal_archive import WalArchive, health, segment_name
from auction_backup_pipelines.postgres.wal_receiver import WalReceiver
from auction_backup_pipelines.repository import layout
from auction_backup_pipelines.settings import Settings


def cmd_pitr(args: argparse.Namespace, settings: Settings) -> int:
    """Recover a new instance to a moment, or print the recoverable window."""
    repo = open_repository(args, settings)
    archive = WalArchive(repo.backend)
    if args.show_window:
        records = list(archive.records())
        window = pitr.recovery_window(repo, archive, records)
        now = dt.datetime.now(dt.UTC)
        _, pruned = wal_pruning.archive_gaps(repo, records, health(records).gaps, settings.retention.pitr_window, now)
        pruned_after = {a for a, _ in pruned}
        reaches = []
        for r in sorted(window.reaches, key=lambda r: r.start):
            gap = " (ends at a gap in the WAL archive)" if r.ends_at_gap else ""
            if r.ends_at_gap and segment_name(r.timeline, r.last_segment) in pruned_after:
                gap = " (its own WAL only: the WAL after it expired by retention)"
            reaches.append((r, gap))
        if args.json:
            print_json(
                {
                    "window": window.describe(),
                    "earliest": pitr.format_utc(window.earliest) if window.earliest else None,
                    "latest": pitr.format_utc(window.latest) if window.latest else None,
                    "base_backups": [
                        {
                            "backup": r.backup.prefix,
                            "from": pitr.format_utc(r.start),
                            "to": pitr.format_utc(r.end),
                            "ends_at_gap": r.ends_at_gap,
                            "note": gap.strip(" ()"),
                        }
                        for r, gap in reaches
                    ],
                }
            )
            return 0
        print(window.describe())
        for r, gap in reaches:
            print(
                f"  base backup {r.backup.partition} {r.backup.backup_id}: {pitr.format_utc(r.start)} .. {pitr.format_utc(r.end)}{gap}"
            )
        return 0
    if not args.target_time or not args.target_dir:
        raise CliError(
            "give a target time and --target-dir (or --show-window), e.g. "
            '`auction-backup pitr "2024-01-15 14:30:00" --target-dir /srv/pitr`'
        )
    target = pitr.parse_target(args.target_time, args.timezone)
    result = pitr.restore_to_time(
        settings.postgres, repo, archive, target, Path(args.target_dir), port=args.port, stop_after=args.stop_after
    )
    print_json(result.as_dict())
    record_restore(repo, "pitr", lambda by: restore_records.for_pitr(result, by))
    return 0


def cmd_wal_receive(args: argparse.Namespace, settings: Settings) -> int:
    """Stream WAL from the primary into the archive until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    repo = open_repository(args, settings)
    spool = Path(args.spool or settings.wal.spool_dir)
    receiver = WalReceiver(settings.postgres, WalArchive(repo.backend), spool, slot=args.slot)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = settings.metrics.wal_port
    server = serve_wal_metrics(receiver, port) if port else None
    print(f"receiving WAL with slot {args.slot!r} into {repo.describe()}/{layout.WAL_AREA} (spool {spool})", flush=True)
    if server is not None:
        print(f"serving metrics on http://127.0.0.1:{server.server_port}/metrics", flush=True)
    try:
        receiver.run(stop)
    finally:
        if server is not None:
            server.shutdown()
    return 0


def cmd_wal_status(args: argparse.Namespace, settings: Settings) -> int:
    """The newest archived WAL, lag and gaps; exit 1 on a gap or an empty archive. Holes that WAL
    retention made on purpose (PITR_WINDOW_DAYS) are listed apart and are not gaps."""
    repo = open_repository(args, settings)
    archive = WalArchive(repo.backend)
    records = list(archive.records())
    h = health(records, archive.heartbeat())
    gaps, pruned = wal_pruning.archive_gaps(repo, records, h.gaps, settings.retention.pitr_window, dt.datetime.now(dt.UTC))
    lag = h.lag_seconds()
    print_json(
        {
            "newest": h.newest.name if h.newest else None,
            "completed_segments": h.completed,
            "covered_until": h.covered_until,
            "lag_seconds": None if lag is None else round(lag, 1),
            "gaps": [f"{a} .. {b}" for a, b in gaps],
            "pruned_by_retention": [f"{a} .. {b}" for a, b in pruned],
        }
    )
    return 0 if h.newest and not gaps else EXIT_FAILURE


def register(sub: Any) -> None:
    """Add `pitr`, `wal-receive` and `wal-status`."""
    p = sub.add_parser("pitr", help="point-in-time recovery into a new data directory (never the primary)")
    p.add_argument("target_time", nargs="?", help='e.g. "2024-01-15 14:30:00"')
    p.add_argument(
        "--target-dir", help="absolute path of a new or empty folder (its parent must exist) for the recovered instance"
    )
    p.add_argument("--port", type=int, help="port for the recovered instance (default: a free one)")
    p.add_argument("--timezone", default="UTC", help="timezone of a target time without offset (default UTC)")
    p.add_argument("--stop-after", action="store_true", help="stop the recovered instance once recovery is proven")
    p.add_argument("--show-window", action="store_true", help="print the recoverable window and exit")
    p.add_argument(
        "--json", action="store_true", help="with --show-window: print the window as JSON (recovery reports are JSON anyway)"
    )
    p.set_defaults(func=cmd_pitr)

    p = sub.add_parser("wal-receive", help="stream WAL from the primary into the archive (runs until stopped)")
    p.add_argument("--spool", help="local folder for pg_receivewal (default: $WAL_SPOOL_DIR or ./wal_spool)")
    p.add_argument("--slot", default="auction_backup_wal", help="replication slot name")
    p.set_defaults(func=cmd_wal_receive)

    p = sub.add_parser("wal-status", help="newest archived WAL, lag and gaps (exit 1 on a gap or an empty archive)")
    add_json_flag(p)
    p.set_defaults(func=cmd_wal_status)

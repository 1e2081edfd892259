"""`auction-backup info [--json]`: is the data protected? One screen, like `pgbackrest info`.

Per system and artifact the newest backup (age, size, how it was captured), its latest restore
verdict and whether the offsite repository has it; then the PITR window and WAL lag, and the
encryption key ids in use (never a key). The engine is ops/status.py; this module only prints.
It reads and never writes; exit 0 also when something shown is bad (`check` is the command that
judges), 1 only when the repository itself cannot be read.
"""

from __future__ import annotations

import argparse
from typing import Any

from auction_backup_pipelines.cli.common import open_repository
from auction_backup_pipelines.cli.output import human_age, human_size, print_json, table
from auction_backup_pipelines.ops import status as engine
from auction_backup_pipelines.settings import Settings


def cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    """Print the status of every artifact, the PITR window and the keys (or all of it as JSON)."""
    repo = open_repository(args, settings)
    st = engine.collect(repo, settings.encryption, settings.offsite, settings.retention.pitr_window)
    if args.json:
        print_json(st.as_dict())
        return 0
    for line in render(st):
        print(line)
    return 0


def render(st: engine.Status) -> list[str]:
    """The human form: a header, the artifact table, then PITR and keys."""
    out = [f"repository: {st.repository}", ""]
    if st.artifacts:
        rows = [
            [
                a.system,
                a.artifact,
                a.day,
                human_age(a.age_s),
                human_size(a.size),
                human_size(a.stored_size),
                a.capture,
                a.verification + (f" {a.verified_at[:10]}" if a.verified_at else ""),
                a.offsite,
            ]
            for a in st.artifacts
        ]
        headers = ["system", "artifact", "newest", "age", "size", "stored", "capture", "verified", "offsite"]
        out += table(headers, rows, right=frozenset({3, 4, 5}))
    else:
        out.append("no backups yet")
    out.append("")
    if st.pitr is not None:
        p = st.pitr
        if p.problem:
            out.append(f"PITR: {p.problem}")
        else:
            lag = f", lag {human_age(p.lag_seconds)}" if p.lag_seconds is not None else ""
            newest = f"newest WAL {p.newest_segment}{lag}" if p.newest_segment else "WAL archive empty"
            out.append(f"PITR: {p.window}; {newest}")
            out += [f"  gap in the WAL archive: {g}" for g in p.gaps]
    for k in st.keys:
        out.append(f"keys ({k.repository}): {_keys_line(k)}")
    out += [f"unreadable: {p}" for p in st.problems]
    return out


def _keys_line(k: engine.KeyStatus) -> str:
    if k.problem:
        return f"cannot be read: {k.problem}"
    if k.encrypts_with is None:
        return "not encrypted"
    older = [i for i in k.decrypts_with if i != k.encrypts_with]
    return f"encrypts with {k.encrypts_with}" + (f", also decrypts {', '.join(older)}" if older else "")


def register(sub: Any) -> None:
    """Add `info`."""
    p = sub.add_parser("info", help="newest backup of each artifact (age, size, capture, verdict, offsite), PITR window, key ids")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_info)

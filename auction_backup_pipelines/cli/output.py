"""How commands print machine-readable results: indented JSON, anything not JSON-native as a string."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    """Print `obj` as indented JSON on stdout (dates, paths and the like as strings)."""
    print(json.dumps(obj, indent=2, default=str))


def table(headers: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """`rows` under `headers` as aligned lines: each column as wide as its widest cell, the columns
    whose index is in `right` (sizes, counts) right-aligned; no trailing blanks."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(headers)] + [line(r) for r in rows]


def human_size(n: int | None) -> str:
    """Bytes as an operator reads them: 512 B, 3.4 KiB, 1.2 GiB."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # not reached


def human_age(seconds: float | None) -> str:
    """An age as the two largest units: 45s, 3m 12s, 5h 2m, 2d 4h."""
    if seconds is None:
        return "-"
    s = int(max(0, seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s}s" if m else f"{s}s"


def add_json_flag(parser: Any) -> None:
    """`--json` on a command whose report is always JSON: accepted, so that every command that
    prints results takes the flag and a script can pass it everywhere."""
    parser.add_argument("--json", action="store_true", help="the report is JSON (always, for this command)")

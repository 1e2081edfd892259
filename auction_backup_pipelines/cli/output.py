"""How commands print machine-readable results: indented JSON, anything not JSON-native as a string."""

from __future__ import annotations

import json
from typing import Any


def print_json(obj: Any) -> None:
    """Print `obj` as indented JSON on stdout (dates, paths and the like as strings)."""
    print(json.dumps(obj, indent=2, default=str))

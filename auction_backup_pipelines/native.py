"""Where the project's native helpers are (native/*, built by stack/install.sh).

Each is optional: its caller has a slower Python path that gives the same result.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def helper_path(name: str) -> str | None:
    """`name` next to this interpreter (the virtualenv's bin, where install.sh puts it), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)

"""Progress on stderr for operations that take more than a few seconds, only for a person watching.

Why: a base backup, a restore, an offsite copy or `verify --deep` can run for minutes; silence
makes an operator wonder whether anything happens. A live display (rich, which Dagster installs)
goes to stderr and only when stderr is a terminal: stdout stays the command's result (JSON or
text) and a script, a cron job, a monitoring system or a test sees no progress noise at all.
The display is transient: it disappears when the operation ends, leaving the result.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


def shown() -> bool:
    """Whether a progress display is wanted: stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _quiet(text: str = "") -> None:
    """`step` when nothing is shown."""


@contextlib.contextmanager
def activity(description: str, total: int | None = None) -> Iterator[Callable[[str], None]]:
    """Show `description` with a spinner and the elapsed time (and a bar of `total` steps) while
    the block runs; yields `step(text)`, to call after each item: it advances the bar by one and names
    the item just done.
    Without a terminal on stderr, nothing is shown and `step` does nothing."""
    if not shown():
        yield _quiet
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def step(text: str = "") -> None:
            bar.update(task, advance=1, description=f"{description} {text}".rstrip())

        yield step

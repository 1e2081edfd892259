"""`auction-backup`, the operator's command line: one module per command group, `main` the entry point.

The console script (`auction-backup = "auction_backup_pipelines.cli:main"`) and
`python -m auction_backup_pipelines.cli` both land in `main.main`.
"""

from auction_backup_pipelines.cli.main import main

__all__ = ["main"]

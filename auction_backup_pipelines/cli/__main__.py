"""`python -m auction_backup_pipelines.cli`: the same command line as the `auction-backup` script."""

import sys

from auction_backup_pipelines.cli.main import main

sys.exit(main())

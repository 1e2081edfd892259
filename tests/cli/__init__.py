"""Tests of the operator CLI (auction_backup_pipelines/cli/), run as a subprocess."""

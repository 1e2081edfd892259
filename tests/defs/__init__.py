"""Tests of the Dagster layer (auction_backup_pipelines/defs/): loaders, assets, checks, jobs, sensors."""

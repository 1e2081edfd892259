"""Dagster Redis domain: the daily snapshot asset, its integrity check, the backup and restore jobs."""

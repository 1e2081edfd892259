"""Dagster PostgreSQL domain: the daily dump and base backup, their checks, the WAL archive, restore jobs."""

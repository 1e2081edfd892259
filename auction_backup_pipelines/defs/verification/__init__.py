"""Dagster verification domain: weekly restore checks, their job, and the verified-recently checks."""

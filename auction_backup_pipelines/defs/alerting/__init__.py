"""Dagster alerting domain: failed runs and failed checks reach people through the configured sinks."""

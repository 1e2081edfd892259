"""Dagster freshness domain: each daily backup's recovery point objective, checked and alerted."""

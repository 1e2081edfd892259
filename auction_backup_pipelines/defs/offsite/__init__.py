"""Dagster offsite domain: a downstream copy asset per backup asset, when an offsite store is configured."""

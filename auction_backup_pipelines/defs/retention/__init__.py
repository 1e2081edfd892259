"""Dagster retention domain: a sensor that plans from one listing, and the job that deletes."""

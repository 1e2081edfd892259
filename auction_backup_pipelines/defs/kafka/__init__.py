"""Dagster Kafka domain: one daily export asset per topic, the backup job and the restore job."""

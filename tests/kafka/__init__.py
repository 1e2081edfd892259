"""Tests of auction_backup_pipelines/kafka/."""

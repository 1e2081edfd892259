"""auction-backup-pipelines: backs up, verifies and restores Auction Flow's PostgreSQL, Redis and Kafka.

The engines (repository, policy, postgres, redis, kafka, ops) are plain Python that the CLI runs
while Dagster is down; `defs/` and `definitions.py` are the Dagster code location on top of them.
"""

"""What every domain of the Dagster layer shares: resources, partitions, asset keys, metadata."""

"""The code location's definitions as the tests use them, built once from the test environment.

`defs` is what Dagster loads (the autoloaded `defs/` folder); the single assets and sensors are
built by the same builders the loaders call, for tests that materialize or tick one of them.
"""

from auction_backup_pipelines.definitions import defs as load_definitions
from auction_backup_pipelines.defs.postgres.assets import build_postgres_assets
from auction_backup_pipelines.defs.redis.assets import build_redis_assets
from auction_backup_pipelines.defs.shared.loading import current_settings
from auction_backup_pipelines.defs.shared.partitions import daily_partitions

defs = load_definitions()
SETTINGS = current_settings()
PARTITIONS = daily_partitions(SETTINGS.partitions_start)
postgres_logical_dump, postgres_base_backup = build_postgres_assets(PARTITIONS)
(redis_snapshot,) = build_redis_assets(PARTITIONS)

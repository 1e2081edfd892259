"""Redis engine: snapshots (network RDB, BGSAVE, AOF, cluster), their content facts, restore and checks."""

"""PostgreSQL engine: logical dumps, base backups, the WAL archive, point-in-time recovery, restore checks."""

#!/usr/bin/env bash
# Start the whole local Auction Flow stack (installing what is missing) and seed it once.
# Idempotent: a running stack is left running; a seeded database is not seeded again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

bash "$ROOT/stack/install.sh"
bash "$ROOT/stack/tls.sh"
bash "$ROOT/stack/postgres.sh" up
bash "$ROOT/stack/redis.sh" up
bash "$ROOT/stack/kafka.sh" up
bash "$ROOT/stack/s3.sh" up
env_set KAFKA_BOOTSTRAP_SERVERS "127.0.0.1:${KAFKA_PORT:-9092}"
env_set BACKUP_ROOT "${BACKUP_ROOT:-$ROOT/backups}"
env_set DAGSTER_HOME "${DAGSTER_HOME:-$ROOT/.dagster_home}"
env_set WAL_SPOOL_DIR "$STATE/wal_spool"
# The first partition day is chosen once, when the stack first comes up: three days back, so the
# catalog shows a few days to back up instead of a month of missing ones. Never changed afterwards:
# a start that moves hides history.
[ -n "$(env_get BACKUP_PARTITIONS_START)" ] || env_set BACKUP_PARTITIONS_START "$(date -u -d '3 days ago' +%F)"

# Continuous WAL archiving into the repository (needs the env file for its settings).
bash "$ROOT/stack/wal_receiver.sh" up

# The seed reads its connection settings from the env file the services just wrote.
set -a; source "$ENV_FILE"; set +a
(cd "$ROOT" && "$VENV_PY" -m stack.workload seed --if-empty --scale "${SEED_SCALE:-1}")
log "stack ready; settings in .stack/stack.env"

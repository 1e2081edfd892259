#!/usr/bin/env bash
# Stop every service of the local stack (data stays under .stack/). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bash "$ROOT/stack/wal_receiver.sh" down || true
bash "$ROOT/stack/kafka.sh" down || true
bash "$ROOT/stack/s3.sh" down || true
bash "$ROOT/stack/redis_cluster.sh" down || true
bash "$ROOT/stack/redis.sh" down || true
bash "$ROOT/stack/postgres.sh" down || true

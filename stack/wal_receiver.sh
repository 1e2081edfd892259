#!/usr/bin/env bash
# The continuous WAL archive of the local stack: `auction-backup wal-receive` (pg_receivewal
# with a replication slot, shipping segments into $BACKUP_ROOT/postgres/wal) in the background.
# Usage: stack/wal_receiver.sh up|down|status
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PIDFILE="$STATE/wal_receiver.pid"
running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

up() {
  [ -f "$ENV_FILE" ] || die "start PostgreSQL first (stack/postgres.sh up)"
  if running; then log "WAL receiver already running (pid $(cat "$PIDFILE"))"; return 0; fi
  mkdir -p "$LOGS" "$STATE/wal_spool"
  (
    set -a; source "$ENV_FILE"; set +a
    cd "$ROOT"
    setsid nohup "$ROOT/.venv/bin/auction-backup" wal-receive --spool "$STATE/wal_spool" \
      >> "$LOGS/wal_receiver.log" 2>&1 < /dev/null 9>&- &
    echo $! > "$PIDFILE"
  )
  check() { set -a; source "$ENV_FILE"; set +a; "$ROOT/.venv/bin/auction-backup" wal-status >/dev/null; }
  wait_for "WAL receiver" 60 check || { tail -n 20 "$LOGS/wal_receiver.log" >&2; die "the WAL receiver archived nothing within 60 s"; }
}

down() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    kill -TERM "$pid" 2>/dev/null || true
    local end=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  log "WAL receiver stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) running && echo running || { echo stopped; exit 3; } ;;
  *) die "usage: $0 up|down|status" ;;
esac

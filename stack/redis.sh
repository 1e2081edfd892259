#!/usr/bin/env bash
# The Auction Flow Redis 7 server (standalone) on 127.0.0.1:$REDIS_PORT (default 7001), from
# Debian's redis-server, AOF on, data under .stack/redis/<port>/. It also serves TLS on
# 127.0.0.1:$REDIS_TLS_PORT (default 7401) with the stack's certificate (stack/tls.sh), clients
# not asked for one; the plain port stays for everything else.
# Usage: stack/redis.sh up|down|status
# For a 3-master Redis Cluster instead, see stack/redis_cluster.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PORT="${REDIS_PORT:-$(env_get REDIS_PORT)}"; PORT="${PORT:-7001}"
DIR="$STATE/redis/$PORT"
TLS_PORT="${REDIS_TLS_PORT:-$(env_get REDIS_TLS_PORT_STACK)}"; TLS_PORT="${TLS_PORT:-7401}"
TLS="$STATE/tls"

ping() { redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; }

up() {
  command -v redis-server >/dev/null || die "redis-server not found: run stack/install.sh"
  mkdir -p "$DIR" "$LOGS"
  chmod 700 "$DIR"
  if ping; then
    log "Redis already up on 127.0.0.1:$PORT"
  else
    port_open "$PORT" && die "port $PORT is taken by a program that is not Redis; set REDIS_PORT to a free port"
    # DEBUG is enabled for local connections only so tests can use DEBUG DIGEST-VALUE etc.;
    # production servers usually keep it off, and the backup code never relies on it.
    cat > "$DIR/redis.conf" <<CONF
port $PORT
bind 127.0.0.1
protected-mode yes
daemonize yes
pidfile $DIR/redis.pid
logfile $LOGS/redis-$PORT.log
dir $DIR
appendonly yes
appendfsync everysec
save 3600 1 300 100 60 10000
enable-debug-command local
tls-port $TLS_PORT
tls-cert-file $TLS/server.crt
tls-key-file $TLS/server.key
tls-ca-cert-file $TLS/ca.crt
tls-auth-clients no
CONF
    redis-server "$DIR/redis.conf"
    wait_for "Redis on 127.0.0.1:$PORT" 30 ping || { tail -n 20 "$LOGS/redis-$PORT.log" >&2; die "Redis did not start"; }
  fi
  tls_listener
  env_set REDIS_HOST 127.0.0.1
  env_set REDIS_PORT "$PORT"
  env_set REDIS_DATA_DIR "$DIR"
  env_set REDIS_TLS_PORT_STACK "$TLS_PORT"
}

# A server started before TLS was configured gets its TLS port at runtime (CONFIG SET; no restart).
tls_listener() {
  [ -s "$TLS/server.crt" ] || die "no TLS certificate in $TLS: run stack/tls.sh first"
  local current
  current="$(redis-cli -h 127.0.0.1 -p "$PORT" config get tls-port 2>/dev/null | sed -n 2p)"
  if [ "$current" != "$TLS_PORT" ]; then
    port_open "$TLS_PORT" && die "port $TLS_PORT is taken; set REDIS_TLS_PORT to a free port"
    redis-cli -h 127.0.0.1 -p "$PORT" config set tls-cert-file "$TLS/server.crt" tls-key-file "$TLS/server.key" \
      tls-ca-cert-file "$TLS/ca.crt" tls-auth-clients no >/dev/null
    redis-cli -h 127.0.0.1 -p "$PORT" config set tls-port "$TLS_PORT" | grep -q OK || die "Redis refused tls-port $TLS_PORT"
    log "Redis TLS listener added on 127.0.0.1:$TLS_PORT"
  fi
  tls_ping() { redis-cli -h 127.0.0.1 -p "$TLS_PORT" --tls --cacert "$TLS/ca.crt" ping 2>/dev/null | grep -q PONG; }
  wait_for "Redis TLS on 127.0.0.1:$TLS_PORT" 30 tls_ping || die "Redis does not answer TLS on $TLS_PORT"
}

down() {
  if ping; then
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || true
    local end=$((SECONDS + 30))
    while ping && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    ping && [ -f "$DIR/redis.pid" ] && kill -9 "$(cat "$DIR/redis.pid")" 2>/dev/null || true
  fi
  log "Redis on $PORT stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) ping && echo running || { echo stopped; exit 3; } ;;
  *) die "usage: $0 up|down|status" ;;
esac

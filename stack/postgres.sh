#!/usr/bin/env bash
# The Auction Flow PostgreSQL 15 primary on 127.0.0.1, run as the `postgres` user (initdb
# refuses root) from Debian's binaries, with its data, socket and WAL archive under .stack/.
# It serves TLS with the stack's certificate (stack/tls.sh) and still accepts plain connections,
# so clients choose with POSTGRES_SSLMODE; STACK_TLS_CA in .stack/stack.env names the CA to trust.
# Usage: stack/postgres.sh up|down|status|psql [args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PGSTATE="$STATE/postgres"
PGDATA="$PGSTATE/data"
SOCKDIR="$PGSTATE/run"
ARCHIVE="$PGSTATE/wal_archive"
# The server's own copy of the certificate and key, owned by postgres (it refuses a key others
# can read, and cannot enter the root-only .stack/tls). Outside the data directory on purpose:
# a base backup copies the whole data directory, and the private key has no place in backups.
PGTLS="$PGSTATE/tls"
TLS="$STATE/tls"

as_pg() { runuser -u postgres -- "$@"; }
pg_running() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; }

choose_port() {
  local port="${POSTGRES_PORT:-$(env_get POSTGRES_PORT)}"
  port="${port:-5432}"
  if ! pg_running && port_open "$port"; then
    local wanted="$port"
    while port_open "$port"; do port=$((port + 1)); done
    log "port $wanted is taken by another program; PostgreSQL will listen on $port (written to .stack/stack.env)"
  fi
  echo "$port"
}

init_cluster() {
  [ -f "$PGDATA/PG_VERSION" ] && return 0
  log "initialising a PostgreSQL cluster in .stack/postgres/data"
  mkdir -p "$PGSTATE" "$SOCKDIR" "$ARCHIVE" "$LOGS"
  chown postgres:postgres "$PGSTATE" "$SOCKDIR" "$ARCHIVE"
  chmod 700 "$PGSTATE" "$ARCHIVE"
  local pwfile; pwfile="$(mktemp)"; chown postgres "$pwfile"; chmod 600 "$pwfile"
  head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$pwfile"   # superuser password, never used over TCP
  as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  cat > "$PGDATA/pg_hba.conf" <<HBA
# Local socket: the postgres superuser by peer (the stack's own scripts).
local   all          postgres                  peer
local   all          all                       scram-sha-256
# Loopback only, passwords always.
host    all          all        127.0.0.1/32   scram-sha-256
host    replication  all        127.0.0.1/32   scram-sha-256
HBA
  chown postgres:postgres "$PGDATA/pg_hba.conf"
}

install_tls() {
  [ -s "$TLS/server.crt" ] && [ -s "$TLS/server.key" ] || die "no TLS certificate in $TLS: run stack/tls.sh first"
  mkdir -p "$PGTLS" && chown postgres:postgres "$PGTLS" && chmod 700 "$PGTLS"
  install -o postgres -g postgres -m 600 "$TLS/server.crt" "$PGTLS/server.crt"
  install -o postgres -g postgres -m 600 "$TLS/server.key" "$PGTLS/server.key"
}

write_config() {
  local port="$1"
  # Archive each completed segment durably into .stack/postgres/wal_archive (see
  # pg_archive_wal.sh): the WAL a point-in-time recovery needs beside the base backups.
  cat > "$PGDATA/auctionflow.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCKDIR'
max_connections = 100
shared_buffers = 128MB
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
archive_mode = on
archive_command = '$ROOT/stack/pg_archive_wal.sh %p $ARCHIVE/%f'
archive_timeout = 60
log_line_prefix = '%m [%p] %q%u@%d '
log_min_duration_statement = -1
ssl = on
ssl_cert_file = '$PGTLS/server.crt'
ssl_key_file = '$PGTLS/server.key'
ssl_min_protocol_version = 'TLSv1.2'
CONF
  chown postgres:postgres "$PGDATA/auctionflow.conf"
  grep -q "include_if_exists = 'auctionflow.conf'" "$PGDATA/postgresql.conf" ||
    echo "include_if_exists = 'auctionflow.conf'" >> "$PGDATA/postgresql.conf"
}

ensure_role_and_db() {
  local password; password="$(password)"
  # The password travels on psql's stdin, never in argv.
  as_pg "$PGBIN/psql" -h "$SOCKDIR" -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -q \
    -v pw="$password" -v user="${POSTGRES_USER:-auctionuser}" -v db="${POSTGRES_DB:-auctionflow}" >/dev/null <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN CREATEDB REPLICATION PASSWORD %L', :'user', :'pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
}

password() {
  local pw="${POSTGRES_PASSWORD:-$(env_get POSTGRES_PASSWORD)}"
  [ -n "$pw" ] || pw="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
  echo "$pw"
}

up() {
  command -v "$PGBIN/initdb" >/dev/null || die "PostgreSQL 15 binaries not found in $PGBIN: run stack/install.sh"
  init_cluster
  PORT="$(choose_port)"
  install_tls
  write_config "$PORT"
  if ! pg_running; then
    mkdir -p "$LOGS" && touch "$LOGS/postgres.log" && chown postgres "$LOGS/postgres.log"
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$LOGS/postgres.log" -w -t 60 start >/dev/null ||
      { tail -n 20 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start (log above)"; }
  else
    # ssl and its files are reloadable settings: a running server picks up TLS without a restart.
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" reload >/dev/null
  fi
  env_set POSTGRES_PASSWORD "$(password)"
  ensure_role_and_db
  env_set POSTGRES_HOST 127.0.0.1
  env_set POSTGRES_PORT "$PORT"
  env_set POSTGRES_DB "${POSTGRES_DB:-auctionflow}"
  env_set POSTGRES_USER "${POSTGRES_USER:-auctionuser}"
  env_set PGBIN "$PGBIN"
  env_set POSTGRES_SOCKET_DIR "$SOCKDIR"
  env_set POSTGRES_WAL_ARCHIVE "$ARCHIVE"
  # For tests and demos only (no setting reads it): the CA to name in POSTGRES_SSLROOTCERT.
  env_set STACK_TLS_CA "$TLS/ca.crt"
  log "PostgreSQL up on 127.0.0.1:$PORT (database ${POSTGRES_DB:-auctionflow})"
}

down() {
  [ -f "$PGDATA/PG_VERSION" ] || return 0
  pg_running && as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
  log "PostgreSQL stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) pg_running && echo "running" || { echo "stopped"; exit 3; } ;;
  psql) shift; PORT="$(env_get POSTGRES_PORT)"; as_pg "$PGBIN/psql" -h "$SOCKDIR" -p "${PORT:-5432}" "$@" ;;
  *) die "usage: $0 up|down|status|psql [args]" ;;
esac

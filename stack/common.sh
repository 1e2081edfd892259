# Shared by the stack scripts: paths, the stack's env file and small helpers.
# Everything the stack creates lives under $STATE (the repository's .stack/, gitignored).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${STACK_STATE_DIR:-$ROOT/.stack}"
LOGS="$STATE/logs"
ENV_FILE="$STATE/stack.env"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
VENV_PY="$ROOT/.venv/bin/python"

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Read KEY from the env file (empty when absent).
env_get() { [ -f "$ENV_FILE" ] && sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1 || true; }

# Set KEY=VALUE in the env file, which stays readable by root only (it holds a password).
env_set() {
  mkdir -p "$STATE"
  touch "$ENV_FILE" && chmod 600 "$ENV_FILE"
  local tmp; tmp="$(mktemp "$STATE/.env.XXXXXX")"
  grep -v "^$1=" "$ENV_FILE" > "$tmp" || true
  printf '%s=%s\n' "$1" "$2" >> "$tmp"
  chmod 600 "$tmp" && mv "$tmp" "$ENV_FILE"
}

# Wait until "$@" succeeds or $DEADLINE seconds pass (readiness polling in scripts only).
wait_for() {
  local what="$1" deadline="$2"; shift 2
  local end=$((SECONDS + deadline))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.2
  done
  log "$what ready"
}

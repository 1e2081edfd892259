#!/usr/bin/env bash
# Installs what the stack and the tests need, idempotently and quickly when already present:
# Debian packages (PostgreSQL 15, Redis 7, zstd, Chromium for the browser test), Kafka's jars
# from Maven Central, the project's Python environment in .venv, and the native helpers
# rdb-facts, redis-load, pg-stage, kafka-export and kafka-replay (Rust, crates from crates.io)
# built into .venv/bin.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# chromium: the browser test drives Debian's build through Playwright (no browser download).
# libssl-dev, pkg-config: the native helpers' TLS (librdkafka's, and redis-load's native-tls).
APT_PACKAGES=(postgresql-15 postgresql-client-15 redis-server redis-tools zstd chromium libssl-dev pkg-config)

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  # Debian's postinst would create and start a 'main' cluster on 5432; the stack runs its
  # own cluster under .stack/, so ask postgresql-common not to create one.
  mkdir -p /etc/postgresql-common
  if ! grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_venv() {
  local stamp="$ROOT/.venv/.installed" want
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
  if [ -x "$VENV_PY" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  log "creating the Python environment in .venv"
  [ -x "$VENV_PY" ] || python3 -m venv "$ROOT/.venv"
  "$VENV_PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV_PY" -m pip install -q --disable-pip-version-check -e "$ROOT[dev,bench]"
  echo "$want" > "$stamp"
}

# The native helpers, built with the machine's cargo (crates from crates.io) into .venv/bin:
#   rdb-facts     a Redis snapshot's content digest while it streams
#                 (auction_backup_pipelines/redis/rdb_facts.py), and redis-load a restore's
#                 copy into an empty server and its read-back (redis/restore_native.py)
#   pg-stage      a logical dump staged for pg_restore -j (auction_backup_pipelines/postgres/
#                 stage_native.py): data offsets set, rows in large chunks
#   kafka-export  a Kafka day export's read, and kafka-replay a restore's replay and read-back
#                 (auction_backup_pipelines/kafka/export_native.py, restore_native.py); their
#                 crate builds librdkafka from its sources, about a minute on 2 cores
# Without a Rust toolchain everything still works, through slower Python paths, but the tests
# expect the helpers.
install_native() {
  local crate="$1" src="$ROOT/native/$1" stamp="$ROOT/.venv/.$1-installed" want cargo bin
  shift
  # every source of the crate, vendored ones (native/rdb-facts/vendor) included
  want="$(cat "$src/Cargo.lock" $(find "$src" \( -name '*.rs' -o -name Cargo.toml \) | sort) | sha256sum | cut -d' ' -f1)"
  local present=1
  for bin in "$@"; do [ -x "$ROOT/.venv/bin/$bin" ] || present=0; done
  if [ "$present" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  cargo="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
  if [ ! -x "$cargo" ]; then
    log "WARNING: no cargo found; $* not built, the slower Python paths are used instead"
    return 0
  fi
  log "building the native helpers $*"
  "$cargo" build -q --release --locked --manifest-path "$src/Cargo.toml" --target-dir "$ROOT/.stack/cargo-target"
  for bin in "$@"; do install -m 0755 "$ROOT/.stack/cargo-target/release/$bin" "$ROOT/.venv/bin/$bin"; done
  echo "$want" > "$stamp"
}

install_apt
install_venv
install_native rdb-facts rdb-facts redis-load
install_native pg-stage pg-stage
install_native kafka-helpers kafka-export kafka-replay
bash "$ROOT/stack/kafka.sh" install
bash "$ROOT/stack/s3.sh" install

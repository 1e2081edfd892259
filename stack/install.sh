#!/usr/bin/env bash
# Installs what the stack and the tests need, idempotently and quickly when already present:
# Debian packages (PostgreSQL 15, Redis 7, zstd, Chromium for the browser test), Kafka's jars
# from Maven Central, the project's Python environment in .venv, and the native rdb-facts
# helper (Rust, crates from crates.io) built into .venv/bin.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# chromium: the browser test drives Debian's build through Playwright (no browser download).
APT_PACKAGES=(postgresql-15 postgresql-client-15 redis-server redis-tools zstd chromium)

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

# rdb-facts computes a Redis snapshot's content digest while it streams (see
# auction_backup_pipelines/redis/rdb_facts.py). Without a Rust toolchain the backups still
# work, through the slower scratch-server digest, but the tests expect the helper.
install_rdb_facts() {
  local src="$ROOT/native/rdb-facts" stamp="$ROOT/.venv/.rdb-facts-installed" want cargo
  want="$(cat "$src/Cargo.toml" "$src/Cargo.lock" "$src"/src/*.rs | sha256sum | cut -d' ' -f1)"
  if [ -x "$ROOT/.venv/bin/rdb-facts" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  cargo="$(command -v cargo || echo "$HOME/.cargo/bin/cargo")"
  if [ ! -x "$cargo" ]; then
    log "WARNING: no cargo found; Redis snapshots will use the slower scratch-server digest"
    return 0
  fi
  log "building the rdb-facts helper"
  "$cargo" build -q --release --locked --manifest-path "$src/Cargo.toml" --target-dir "$ROOT/.stack/cargo-target"
  install -m 0755 "$ROOT/.stack/cargo-target/release/rdb-facts" "$ROOT/.venv/bin/rdb-facts"
  echo "$want" > "$stamp"
}

install_apt
install_venv
install_rdb_facts
bash "$ROOT/stack/kafka.sh" install
bash "$ROOT/stack/s3.sh" install

#!/usr/bin/env bash
# The stack's own certificate authority and one server certificate for 127.0.0.1/localhost, so
# PostgreSQL, Redis and Kafka can serve TLS on loopback and clients can verify them fully.
# Idempotent: existing files are kept. Output, under $STATE/tls (a root-only folder; a service
# that runs as another user, like PostgreSQL, gets its own copy of the key):
#   ca.crt ca.key            the authority clients are told to trust
#   server.crt server.key    the certificate every service presents (SAN: localhost, 127.0.0.1)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TLS="$STATE/tls"
mkdir -p "$TLS" && chmod 700 "$TLS"
if [ ! -s "$TLS/ca.crt" ] || [ ! -s "$TLS/ca.key" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=Auction Flow stack CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
  rm -f "$TLS/server.crt"
fi
if [ ! -s "$TLS/server.crt" ] || [ ! -s "$TLS/server.key" ]; then
  openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=localhost" \
    -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > "$TLS/server.ext"
  openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$TLS/server.ext" -out "$TLS/server.crt" 2>/dev/null
  rm -f "$TLS/server.csr" "$TLS/server.ext"
fi
chmod 600 "$TLS"/*.key
chmod 644 "$TLS/ca.crt" "$TLS/server.crt"
log "TLS: CA and server certificate in $TLS"

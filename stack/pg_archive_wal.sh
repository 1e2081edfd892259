#!/bin/sh
# PostgreSQL archive_command: copy one completed WAL segment into the archive folder durably.
# Usage (set by stack/postgres.sh): pg_archive_wal.sh %p <archive-dir>/%f
# Exit 0 only once the copy is fsynced under its final name, so PostgreSQL never recycles a
# segment the archive does not hold; any failure exits non-zero and PostgreSQL retries later.
# An identical file already archived (a retry after a crash) counts as success; a different
# one is an error, never overwritten.
set -eu
src="$1"; dst="$2"
if [ -f "$dst" ]; then
  cmp -s "$src" "$dst" && exit 0
  echo "archive: $dst exists with different content; refusing to overwrite" >&2
  exit 1
fi
tmp="$dst.tmp.$$"
cp "$src" "$tmp"
sync "$tmp"
mv "$tmp" "$dst"
sync "$(dirname "$dst")"

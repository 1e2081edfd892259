"""Content checksum formats of logical dumps: the typed hash, its text fallback, and old manifests."""

from __future__ import annotations

import dataclasses

import pytest

from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres import logical_dump as pg

pytestmark = pytest.mark.integration
DAY = "2026-11-21"

SCHEMA = """
CREATE TABLE exact (id int PRIMARY KEY, name text, code char(4), at timestamptz, u uuid, ok bool, n bigint);
CREATE TABLE inexact (id int PRIMARY KEY, price numeric(10, 2), ratio float8, doc jsonb, b bytea, d date);
INSERT INTO exact SELECT g, 'n' || g, 'c' || (g % 10), '2026-01-01'::timestamptz + g * interval '1 min',
    md5(g::text)::uuid, g % 2 = 0, CASE WHEN g % 5 > 0 THEN g * 1000 END FROM generate_series(1, 500) g;
INSERT INTO inexact SELECT g, g / 7.0, g / 3.0, jsonb_build_object('g', g), decode(md5(g::text), 'hex'),
    DATE '2026-01-01' + g FROM generate_series(1, 500) g;
"""


@pytest.fixture
def source(pg_settings, scratch_db):
    """A database of this test's own with one table of exactly hashed types and one of others."""
    settings = dataclasses.replace(pg_settings, dbname=f"{scratch_db}_src")
    with pg_client.connect(pg_settings, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{settings.dbname}"')
    with pg_client.connect(settings) as conn:
        conn.execute(SCHEMA)
    return settings


def test_typed_checksums_only_where_the_hash_is_exact(source):
    with pg_client.connect(source) as conn:
        assert set(pg_client.row_hashes(conn)) == {("public", "exact")}
        typed = pg_client.table_fingerprints(conn)
        text = pg_client.table_fingerprints(conn, pg_client.CHECKSUM_TEXT)
        assert typed["public.inexact"] == text["public.inexact"]  # numeric, float, jsonb: the text form
        assert typed["public.exact"]["rows"] == 500
        assert typed["public.exact"]["checksum"] != text["public.exact"]["checksum"]
        # any change of one value changes the typed checksum, also values swapped between two rows
        conn.execute("UPDATE exact SET name = 'n1 ' WHERE id = 1")
        changed = pg_client.table_fingerprints(conn)["public.exact"]
        assert changed != typed["public.exact"]
        conn.execute("UPDATE exact SET n = CASE id WHEN 2 THEN 3000 ELSE 2000 END WHERE id IN (2, 3)")
        assert pg_client.table_fingerprints(conn)["public.exact"] != changed
        conn.execute("UPDATE exact SET n = NULL WHERE id = 4")
        assert pg_client.table_fingerprints(conn)["public.exact"]["checksum"] != changed["checksum"]
        # numeric 0.14 -> 0.140 is equal for numeric's hash, not for the text form we keep there
        conn.execute("ALTER TABLE inexact ALTER price TYPE numeric(10, 3)")
        assert pg_client.table_fingerprints(conn)["public.inexact"] != typed["public.inexact"]


def test_new_backup_records_typed_checksums_and_restore_verifies_them(pg_settings, repo, scratch_db, source):
    backup = pg.backup_logical(source, repo, DAY)
    assert backup.metadata["checksum_function"] == pg_client.CHECKSUM_TYPED
    result = pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert result.rows_total == 1000
    with pg_client.connect(pg_settings, dbname=scratch_db) as conn:
        assert pg_client.table_fingerprints(conn) == backup.metadata["tables"]


def _backup_with_function(source, repo, function: str | None):
    """A backup whose manifest names `function` (None: no name, as the oldest manifests)."""
    with repo.begin("postgres", pg.LOGICAL_DUMP, DAY) as writer:
        writer.metadata.update(pg.logical_dump(source, writer, checksum_function=pg_client.CHECKSUM_TEXT))
        if function is None:
            del writer.metadata["checksum_function"]
        else:
            writer.metadata["checksum_function"] = function
        writer.metadata["captured_at"] = writer.metadata["snapshot_time"]
    assert writer.committed is not None
    return writer.committed


@pytest.mark.parametrize("named", [True, False])
def test_manifest_with_text_checksums_still_verifies(pg_settings, repo, scratch_db, source, named):
    backup = _backup_with_function(source, repo, pg_client.CHECKSUM_TEXT if named else None)
    with pg_client.connect(source) as conn:
        assert backup.metadata["tables"] == pg_client.table_fingerprints(conn, pg_client.CHECKSUM_TEXT)
        assert backup.metadata["tables"] != pg_client.table_fingerprints(conn)
    result = pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert result.tables == 2 and result.rows_total == 1000


def test_unknown_checksum_function_is_refused_before_any_write(pg_settings, repo, scratch_db, source):
    backup = _backup_with_function(source, repo, "sum(md5(row::text))")
    with pytest.raises(pg_client.VerificationError, match="unknown function") as info:
        pg.restore_logical(pg_settings, repo, backup, scratch_db)
    assert "\n" not in str(info.value)
    assert pg_client.database_objects(pg_settings, scratch_db) is None

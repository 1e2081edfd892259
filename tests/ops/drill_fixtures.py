"""The whole-platform drill's shared test platform: fresh backups of all three systems into a
test-owned repository (a base backup with its own WAL receiver, day exports of a topic of its own
with a consumer group's committed offsets, a Redis snapshot) and what each system held before and
after a moment T. The drill tests and the failover rehearsal's tests use it (each test module
builds its own, module-scoped)."""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess
from types import SimpleNamespace

import psycopg
import pytest
import redis

from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.ops.platform_names import PlatformNames
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings, RedisSettings
from tests.conftest import ROOT, running_wal_receiver
from tests.kafka.test_export_restore import BOOTSTRAP, Kafka, Msg

UTC = dt.UTC
GROUP_OFFSETS = {0: 2, 1: 1}  # partition -> the consumer group's committed offset (each partition holds 0..3 up to T)


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _noon(day: dt.date, minute: int) -> int:
    return _ms(dt.datetime.combine(day, dt.time(12, minute), tzinfo=UTC))


def _switch_wal() -> None:
    # pg_switch_wal needs a superuser: the stack's own psql runs as postgres
    subprocess.run(
        ["bash", str(ROOT / "stack" / "postgres.sh"), "psql", "-c", "SELECT pg_switch_wal()"], check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def platform(tmp_path_factory):
    """Backups of all three systems and what each held before and after a moment T."""
    tmp = tmp_path_factory.mktemp("drill")
    pg = PostgresSettings.from_env()
    rs = RedisSettings.from_env()
    repo = Repository.local(str(tmp / "backups"))
    kafka = Kafka()
    table, key = f"drill_probe_{secrets.token_hex(3)}", f"drill-test:{secrets.token_hex(4)}"
    r = redis.Redis(host=rs.host, port=rs.port, password=rs.password or None)
    with pg_client.connect(pg) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    try:
        with running_wal_receiver(pg, repo, tmp / "spool") as receiver:
            # the test's own bid-events (under its own prefix, `names`), so a failover rehearsal can write bid events to it
            topic = kafka.topic("bid-events", 2)
            # the days are read here, not at import: a run that crossed midnight UTC would otherwise
            # capture Redis for a day two days old, which is rightly refused
            now = dt.datetime.now(UTC)
            d3, d2, d1 = (now.date() - dt.timedelta(days=n) for n in (3, 2, 1))
            today_begins = _ms(dt.datetime.combine(now.date(), dt.time(), tzinfo=UTC))
            old = [Msg(i % 2, _noon(d, i), f"k{d}-{i}".encode(), f"{d} {i}".encode()) for d in (d3, d2, d1) for i in range(2)]
            live_ms = max(_ms(now) - 5000, today_begins)  # today, even in the first seconds after midnight
            live = [Msg(i, live_ms + i, f"today-{i}".encode(), b"before T") for i in range(2)]
            kafka.produce(topic, old + live)
            group = f"{kafka.stem}-consumers"  # its committed offsets are recorded by the exports
            kafka.commit(group, topic, GROUP_OFFSETS)
            for day in (d3, d2, d1):
                kx.backup_topic_day(BOOTSTRAP, repo, topic, day)
            with pg_client.connect(pg) as conn:
                conn.execute(f"INSERT INTO {table} VALUES (1, 'before the base backup')")
            base = basebackup.take_base_backup(pg, repo, d1)
            with pg_client.connect(pg) as conn:  # segments of their own, so a test can cut a gap
                conn.execute(f"INSERT INTO {table} VALUES (2, 'in the next segment')")
            _switch_wal()
            with pg_client.connect(pg) as conn:
                conn.execute(f"INSERT INTO {table} VALUES (3, 'in the segment after')")
            _switch_wal()
            r.set(key, b"in the snapshot")
            snapshot = backup_snapshot(rs, repo, d1)
            r.set(key, b"after the snapshot")
            with pg_client.connect(pg) as conn:
                conn.execute(f"INSERT INTO {table} VALUES (4, 'just before T')")
            _switch_wal()  # a third completed segment after the backup, whether or not its stop switched
            with pg_client.connect(pg) as conn:
                at: dt.datetime = conn.execute("SELECT clock_timestamp()").fetchone()[0]
                conn.execute(f"INSERT INTO {table} VALUES (5, 'after T')")
            kafka.produce(
                topic, [Msg(0, _ms(at) + 1000, b"late", b"after T"), Msg(1, _ms(at) + 3_600_000, b"future", b"after T")]
            )
            assert wait_for_archived_time(receiver.archive, dt.datetime.now(UTC), timeout=60), "the receiver never caught up"
            yield SimpleNamespace(
                repo=repo,
                root=tmp / "backups",
                pg=pg,
                topic=topic,
                names=PlatformNames(topic_prefix=f"{kafka.stem}-"),
                group=group,
                table=table,
                key=key,
                at=at,
                base=base,
                snapshot=snapshot,
                kafka_before_t=sorted((m.ts, m.key, m.value) for m in old + live),
                archive=receiver.archive,
                tmp=tmp,
                days=(d3, d2, d1),
            )
    finally:
        kafka.cleanup()
        r.delete(key)
        r.close()
        with pg_client.connect(pg) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def probe_check(platform, seen: dict):
    """An invariant list of the test's own data: what each recovered system holds of it."""

    def check(pg_conninfo, kafka_messages, redis_client_factory, at, redis_captured_at):
        with psycopg.connect(**pg_conninfo) as conn:
            seen["rows"] = [row[0] for row in conn.execute(f"SELECT id FROM {platform.table} ORDER BY id")]
        seen["redis"] = redis_client_factory().get(platform.key)
        seen["kafka"] = sorted((m.timestamp_ms, m.key, m.value) for m in kafka_messages[platform.topic])
        seen["at"], seen["captured"] = at, redis_captured_at
        ok = seen["rows"] == [1, 2, 3, 4]
        return [SimpleNamespace(name="probe_rows", passed=ok, counts={"rows": len(seen["rows"])}, violations=[], note="")]

    return check

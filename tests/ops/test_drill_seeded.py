"""The whole-platform drill with the platform's real invariants, on a platform this test seeds.

The shared stack's own data is written by many tests, so this module seeds an Auction Flow of its
own beside it: a database `drill_seeded_<hex>` in the shared PostgreSQL cluster (a PITR recovers
the whole cluster, so it is recovered too), the four event topics under a prefix of its own, and
Redis keys under a key prefix (`PlatformNames`, which the workload generator writes and the
invariants read). It backs them up like the platform's schedules would (a base backup with a WAL
receiver, day exports of every topic, a Redis snapshot), runs a burst of traffic after the
snapshot, and drills twice: to a moment where the three systems agree, which must pass every
invariant, and to a moment after a bid row without its `bid-events` event was committed, which
must fail naming that invariant and that bid. Neither drill may leave a scratch folder or server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import glob
import os
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.ops import invariants as inv
from auction_backup_pipelines.ops.drill import scratch
from auction_backup_pipelines.ops.drill.engine import DrillReport, run_drill
from auction_backup_pipelines.ops.drill.window import snapshot_time
from auction_backup_pipelines.ops.platform_names import TOPICS, PlatformNames
from auction_backup_pipelines.postgres import base_backup as basebackup
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.postgres.wal_receiver import wait_for_archived_time
from auction_backup_pipelines.redis.backup import backup_snapshot
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings, RedisSettings
from stack.workload import CONSUMER_GROUP, Workload, redis_client
from tests.conftest import running_wal_receiver
from tests.kafka.test_export_restore import BOOTSTRAP, Kafka

pytestmark = pytest.mark.integration
UTC = dt.UTC
TODAY = dt.datetime.now(UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (3, 2, 1)]  # the seed spreads its events over them
INVARIANTS = [inv.BIDS, inv.CLOSED, inv.PAYMENTS, inv.REDIS]


def _now(conn) -> dt.datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def wait_until_past(s: PostgresSettings, moment: dt.datetime, timeout: float = 30.0) -> None:
    """Until PostgreSQL's clock (the one the rows are stamped with) is past `moment`."""
    deadline = time.monotonic() + timeout
    with pg_client.connect(s) as conn:
        while _now(conn) <= moment:
            assert time.monotonic() < deadline, f"PostgreSQL's clock never passed {moment}"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A seeded platform of this module's own, its backups, a burst after them, and a fault."""
    tmp = tmp_path_factory.mktemp("drill-seeded")
    pg, rs = PostgresSettings.from_env(), RedisSettings.from_env()
    repo = Repository.local(str(tmp / "backups"))
    kafka = Kafka()
    tag = secrets.token_hex(4)
    names = PlatformNames(topic_prefix=f"{kafka.stem}-", key_prefix=f"drill-seeded-{tag}:")
    own = dataclasses.replace(pg, dbname=f"drill_seeded_{tag}")
    with pg_client.connect(pg, dbname="postgres") as admin:
        admin.execute(f'CREATE DATABASE "{own.dbname}"')
    try:
        for topic in TOPICS:
            kafka.topic(topic, 3)
        workload = Workload(seed=int(tag, 16), names=names)
        workload.pg = own
        with running_wal_receiver(pg, repo, tmp / "spool") as receiver:
            seeded_counts = workload.seed(1)
            for topic in names.topics():
                for day in DAYS:
                    kx.backup_topic_day(BOOTSTRAP, repo, topic, day)
            basebackup.take_base_backup(pg, repo, DAYS[-1])
            snapshot = backup_snapshot(rs, repo, DAYS[-1], allow_late_capture=True)
            captured = snapshot_time(snapshot)
            wait_until_past(own, captured + inv.DEFAULT_TOLERANCE)  # the burst is clearly after the capture
            burst = workload.burst(auctions=3, bids=40, rate=50)  # after the snapshot: Redis's data-loss window
            healthy_at = burst.ended
            with pg_client.connect(own) as conn:
                # The fault: a bid row committed without its bid-events event, placed a minute
                # back (well outside the in-flight tolerance), below every price so Redis agrees.
                auction, bidder = conn.execute("SELECT auction_id, bidder_id FROM bids ORDER BY id LIMIT 1").fetchone()
                fault_bid = conn.execute(
                    "INSERT INTO bids (auction_id, bidder_id, amount, placed_at) "
                    "VALUES (%s, %s, 0.01, clock_timestamp() - interval '1 minute') RETURNING id",
                    (auction, bidder),
                ).fetchone()[0]
            with pg_client.connect(own) as conn:
                fault_at = _now(conn)
                conn.execute("UPDATE users SET balance = balance WHERE id = %s", (bidder,))  # WAL past T
                after = _now(conn)
                expected = conn.execute(
                    "SELECT (SELECT count(*) FROM bids WHERE id <> %(f)s), "
                    "(SELECT count(*) FROM auctions WHERE status = 'closed'), (SELECT count(*) FROM payments), "
                    "(SELECT count(*) FROM auctions WHERE created_at <= %(c)s)",
                    {"f": fault_bid, "c": captured},
                ).fetchone()
            assert wait_for_archived_time(receiver.archive, after, timeout=60), "the receiver never caught up"
            yield SimpleNamespace(
                repo=repo,
                pg=own,
                names=names,
                seeded=seeded_counts,
                burst=burst,
                healthy_at=healthy_at,
                fault_at=fault_at,
                fault_bid=fault_bid,
                expected=dict(zip(("bids", "closed", "payments", "auctions_at_capture"), expected)),
            )
    finally:
        kafka.cleanup()
        r = redis_client(rs)
        stale = list(r.scan_iter(match=f"{names.key_prefix}*", count=1000))
        if stale:
            r.delete(*stale)
        r.close()
        with pg_client.connect(pg, dbname="postgres") as admin:
            pg_client.drop_database(admin, own.dbname)


def drill(seeded, at: dt.datetime) -> DrillReport:
    """A drill with the platform's real invariants, reading this module's topics and keys."""
    check = functools.partial(inv.check_platform, names=seeded.names)
    return run_drill(seeded.repo, seeded.pg, BOOTSTRAP, seeded.names.topics(), at, invariants=check)


def leftovers() -> list[str]:
    """This process's drill folders, and any process still working in one (a recovered server)."""
    prefix = str(scratch.scratch_root() / f"{scratch.DRILL_PREFIX}{os.getpid()}-")
    found = glob.glob(prefix + "*")
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if os.readlink(entry / "cwd").startswith(prefix):
                found.append(f"process {entry.name}")
    return found


def test_the_seeded_notification_group_is_recorded_by_every_export(seeded):
    """The seed leaves the platform's consumer group committed on every topic, so the exports have
    a real group to record and a failover rehearsal one to resume."""
    exports = seeded.repo.list("kafka")
    assert len(exports) == len(TOPICS) * len(DAYS)
    assert all(b.metadata["consumer_groups"] == [seeded.names.topic(CONSUMER_GROUP)] for b in exports), [
        b.metadata["consumer_groups"] for b in exports
    ]


def test_a_healthy_seeded_platform_passes_every_real_invariant(seeded):
    report = drill(seeded, seeded.healthy_at)
    assert report.passed, "\n".join(report.lines())
    results = {i.name: i for i in report.invariants}
    assert list(results) == INVARIANTS
    assert all(i.passed and i.counts["violations"] == 0 and not i.violations for i in results.values())
    bids, closed = results[inv.BIDS].counts, results[inv.CLOSED].counts
    payments, redis = results[inv.PAYMENTS].counts, results[inv.REDIS].counts
    # every row and event of the seed and the burst was recovered and matched
    assert bids["matched"] == bids["rows"] == seeded.expected["bids"] == seeded.seeded["bids"] + len(seeded.burst.bid_ids)
    assert closed["matched"] == closed["closed_auctions"] == seeded.expected["closed"] > len(seeded.burst.closed_ids)
    assert payments["matched"] == payments["payments"] == seeded.expected["payments"] > len(seeded.burst.payment_ids)
    assert redis["checked"] == seeded.expected["auctions_at_capture"] == seeded.seeded["auctions"]
    # the burst came after the snapshot: Redis's data-loss window, reported, not a violation
    assert redis["auctions_created_after_capture"] == len(seeded.burst.auction_ids)
    assert redis["bids_after_capture"] == len(seeded.burst.bid_ids)
    assert "Redis data-loss window" in results[inv.REDIS].note
    for system in report.systems:
        assert system.recovered and system.rto_s > 0 and system.rpo_s is not None and system.rpo_s >= 0, system
    captured = dt.datetime.fromisoformat(report.system("redis").figures["captured_at"])
    assert report.system("redis").rpo_s == pytest.approx((seeded.healthy_at - captured).total_seconds(), abs=0.01)
    assert report.lines()[-1].startswith("drill PASSED")
    assert not leftovers()


def test_a_postgres_state_whose_rows_disagree_with_the_events_fails_naming_the_invariant(seeded):
    report = drill(seeded, seeded.fault_at)
    assert not report.passed
    results = {i.name: i for i in report.invariants}
    assert list(results) == INVARIANTS  # the other invariants are still checked and reported
    assert [i.name for i in report.invariants if not i.passed] == [inv.BIDS]
    bids = results[inv.BIDS]
    assert bids.counts["rows_without_event"] == bids.counts["violations"] == 1
    assert bids.counts["matched"] == seeded.expected["bids"]
    assert bids.violations[0].startswith(f"bid {seeded.fault_bid}: placed at ") and "no bid-events event" in bids.violations[0]
    assert results[inv.CLOSED].counts["matched"] == seeded.expected["closed"]
    assert results[inv.PAYMENTS].counts["matched"] == seeded.expected["payments"]
    assert results[inv.REDIS].counts["checked"] == seeded.expected["auctions_at_capture"]
    assert report.problems() == [f"invariant {inv.BIDS} failed"]
    assert all(s.recovered for s in report.systems)  # every system recovered: the invariant is what fails
    text = "\n".join(report.lines())
    assert f"FAIL  {inv.BIDS}" in text and f"bid {seeded.fault_bid}:" in text
    assert report.lines()[-1].startswith(f"drill FAILED: invariant {inv.BIDS} failed")
    assert not leftovers()

"""The drill's failover rehearsal on the real stack: after the invariants pass, the platform's writes
run on the recovered PostgreSQL, the scratch Redis and scratch copies of the recovered topics for a
bounded period; the report proves writes were accepted, Redis served them, bid events reached the
scratch topic, and a consumer group resumed at its translated offsets; then nothing is left (no
folder, server, scratch topic or group), and the live systems saw none of it. Also: no rehearsal
when an invariant fails, SIGTERM during the rehearsal, and the sweep of a killed drill's topics."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from auction_backup_pipelines.cli.main import main
from auction_backup_pipelines.localhost import pid_alive, port_in_use
from auction_backup_pipelines.ops.drill import scratch, scratch_topics
from auction_backup_pipelines.ops.drill.engine import run_drill
from auction_backup_pipelines.postgres import client as pg_client
from auction_backup_pipelines.redis.scratch import SCRATCH_PREFIX
from tests.conftest import ROOT
from tests.kafka.test_export_restore import BOOTSTRAP, Kafka
from tests.ops.drill_fixtures import GROUP_OFFSETS, probe_check  # `platform`, the fixture, comes from conftest.py

pytestmark = pytest.mark.integration
SECONDS = 3.0


def _admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": BOOTSTRAP})


def _scratch_names(pid: int) -> tuple[list[str], list[str]]:
    """The scratch topics and groups of the drill run by `pid` still on the broker."""
    admin, stem = _admin(), scratch_topics.prefix(pid)
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(stem)]
    groups = [g.group_id for g in admin.list_consumer_groups().result().valid if g.group_id.startswith(stem)]
    return topics, groups


def _high_watermarks(topic: str) -> list[int]:
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "drill-failover-test-watermarks"})
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in range(2)]
    finally:
        c.close()


def _leftovers(pid: int) -> list[str]:
    return glob.glob(str(scratch.scratch_root() / f"{scratch.DRILL_PREFIX}{pid}-*")) + glob.glob(
        str(scratch.scratch_root() / f"{SCRATCH_PREFIX}*{pid}-*")
    )


def test_failover_writes_reads_resumes_consumers_and_leaves_nothing(platform):
    live_before = _high_watermarks(platform.topic)
    seen: dict = {}
    report = run_drill(
        platform.repo,
        platform.pg,
        BOOTSTRAP,
        [platform.topic],
        platform.at,
        invariants=probe_check(platform, seen),
        failover=True,
        failover_seconds=SECONDS,
        failover_names=platform.names,
    )
    assert report.passed, report.problems()
    fo = report.failover
    assert fo is not None and fo.attempted and fo.passed, fo
    f = fo.figures
    # writes accepted by the recovered PostgreSQL, served by the scratch Redis, produced to the scratch bid-events
    n = f["bids_accepted"]
    assert n >= 5, f  # 20 per second for 3 s, on a busy machine still well above 5
    assert f["bids_in_postgres"] == f["bids_in_redis"] == f["bid_events_produced"] == f["bid_events_in_topic"] == n
    assert f["leaderboard_entries"] >= 1 and not f["delivery_errors"]
    scratch_topic = scratch_topics.prefix(os.getpid()) + platform.topic
    assert f["bid_events_topic"] == scratch_topic
    assert f["scratch_topics"][platform.topic] == {"scratch": scratch_topic, "messages": 8}  # every message up to T
    # the group resumes where the exports recorded it: neither at 0 nor at the end of the copy
    group = f["consumer_groups"][f"{platform.group}@{platform.topic}"]
    assert group["scratch_group"] == scratch_topics.prefix(os.getpid()) + platform.group
    for p, committed in GROUP_OFFSETS.items():
        v = group["partitions"][str(p)]
        assert v["committed"] == committed and v["stored"] == v["translated"] == v["first_consumed"], v
        assert 0 < v["first_consumed"] < v["end"], v
    assert f["resumed_partitions"] == len(GROUP_OFFSETS)
    assert fo.duration_s >= SECONDS and report.platform_rto_s < sum(s.rto_s for s in report.systems) + fo.duration_s
    # the report says so, in text and in JSON
    text = "\n".join(report.lines())
    assert f"PASS  failover  {fo.duration_s:g} s: {n} bids accepted by PostgreSQL, {n} read back from Redis" in text
    doc = json.loads(json.dumps(report.as_dict(), default=str))
    assert doc["failover"]["passed"] and doc["failover"]["figures"]["bids_accepted"] == n
    # everything torn down: scratch topics and groups, folders, servers
    assert f["scratch_topics_deleted"] == [scratch_topic]
    assert _scratch_names(os.getpid()) == ([], [])
    assert not _leftovers(os.getpid())
    assert not port_in_use(report.system("postgres").figures["port"])
    # and the live systems saw none of it
    assert _high_watermarks(platform.topic) == live_before
    with pg_client.connect(platform.pg) as conn:
        assert conn.execute("SELECT count(*) FROM auctions WHERE title = %s", (f["auction_title"],)).fetchone()[0] == 0


def test_no_failover_when_an_invariant_fails(platform):
    def failing(*args):
        return [SimpleNamespace(name="probe_failed", passed=False, counts={}, violations=["made to fail"], note="")]

    report = run_drill(platform.repo, platform.pg, BOOTSTRAP, [platform.topic], platform.at, invariants=failing, failover=True)
    assert not report.passed
    assert report.failover is not None and not report.failover.attempted
    assert "invariants failed (probe_failed)" in report.failover.reason
    assert "skip  failover  not attempted: invariants failed (probe_failed)" in "\n".join(report.lines())
    assert _scratch_names(os.getpid()) == ([], [])


DRILL_SCRIPT = """
import sys, datetime as dt
from types import SimpleNamespace
from auction_backup_pipelines.ops.drill.engine import run_drill
from auction_backup_pipelines.ops.platform_names import PlatformNames
from auction_backup_pipelines.repository.repository import Repository
from auction_backup_pipelines.settings import PostgresSettings
root, bootstrap, topic, at, prefix = sys.argv[1:6]
ok = lambda *a: [SimpleNamespace(name="ok", passed=True, counts={}, violations=[], note="")]
report = run_drill(Repository.local(root), PostgresSettings.from_env(), bootstrap, [topic], dt.datetime.fromisoformat(at),
                   invariants=ok, failover=True, failover_seconds=120, failover_names=PlatformNames(topic_prefix=prefix),
                   progress=lambda line: print(line, flush=True))
"""


def test_sigterm_during_the_failover_deletes_its_scratch_topics(platform):
    prefix = platform.names.topic_prefix
    argv = [sys.executable, "-c", DRILL_SCRIPT, str(platform.root), BOOTSTRAP, platform.topic, platform.at.isoformat(), prefix]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _scratch_names(proc.pid)[1] == []:  # the scratch copy is made and its group committed
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the rehearsal never made its scratch copy"
            time.sleep(0.2)
        assert _scratch_names(proc.pid)[0] == [scratch_topics.prefix(proc.pid) + platform.topic]
        proc.terminate()
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert "stopped by SIGTERM" in err, err
    assert _scratch_names(proc.pid) == ([], [])
    assert not _leftovers(proc.pid)


def test_the_next_drill_sweeps_the_scratch_topics_of_a_killed_one():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not pid_alive(dead.pid)
    kafka = Kafka()
    try:
        # named like a drill's scratch copies and groups: of a dead drill, and of a running one (this process)
        names = {}
        for owner in (dead.pid, os.getpid()):
            topic = scratch_topics.prefix(owner) + kafka.stem
            kafka.admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
            kafka.wait_leaders(topic, 1)
            kafka.commit(topic + "-group", topic, {0: 0})
            names[owner] = topic
        swept = scratch_topics.sweep_stale_topics(BOOTSTRAP)
        assert f"kafka:{names[dead.pid]}" in swept
        assert _scratch_names(dead.pid) == ([], [])
        assert _scratch_names(os.getpid()) == ([names[os.getpid()]], [names[os.getpid()] + "-group"])
    finally:
        kafka.cleanup()  # the stem is in every name created here


def test_the_cli_flags_reach_the_rehearsal(platform, monkeypatch, capsys):
    # the CLI drills with the platform's real invariants and names: on the shared stack's data either
    # an invariant fails (no rehearsal) or the rehearsal finds no `bid-events` among the recovered topics
    monkeypatch.setenv("KAFKA_TOPICS", platform.topic)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", BOOTSTRAP)
    argv = ["--repo", str(platform.root), "drill", "--at", platform.at.isoformat(), "--json"]
    assert main([*argv, "--failover", "--failover-seconds", "1"]) == 1
    doc = json.loads(capsys.readouterr().out)
    fo = doc["failover"]
    assert not fo["passed"] and any(p.startswith("failover ") for p in doc["problems"]), fo
    assert ("invariants failed" in fo["reason"] and not fo["attempted"]) or (
        "did not recover bid-events" in fo["reason"] and fo["attempted"]
    ), fo
    assert _scratch_names(os.getpid()) == ([], [])

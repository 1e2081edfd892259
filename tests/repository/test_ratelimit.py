"""Rate limits take effect on each path that competes with production: the Kafka export, uploads to
the offsite bucket, and pg_basebackup (--max-rate).

No assertion times a transfer (that flakes on a loaded machine): the limiters get a clock that
advances only when they sleep, so the time a limited transfer must take is read from the
limiter's own accounting, and pg_basebackup's limit is checked on its command line and on
what the real program accepts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import threading
import uuid

import pytest

from auction_backup_pipelines.errors import ConfigurationError
from auction_backup_pipelines.kafka import export as kx
from auction_backup_pipelines.postgres.base_backup import base_backup_argv
from auction_backup_pipelines.postgres.client import child_env
from auction_backup_pipelines.repository.ratelimit import BURST_S, ByteRateLimiter, PacedSink, paced
from auction_backup_pipelines.repository.s3 import S3Backend
from auction_backup_pipelines.settings import KafkaSettings, OffsiteSettings, PostgresSettings, load_settings

MiB = 1 << 20
DAY = dt.date(2026, 11, 20)


class FakeClock:
    """Time that passes only when the limiter sleeps: what it computes is all that is measured."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def limiter(self, rate: int) -> ByteRateLimiter:
        return ByteRateLimiter(rate, clock=self.clock, sleep=self.sleep)


# -- the limiter -------------------------------------------------------------------------------------


def test_bytes_beyond_the_burst_cost_their_time_at_the_rate():
    fake = FakeClock()
    limiter = fake.limiter(MiB)
    for _ in range(32):
        limiter.take(64 * 1024)  # 2 MiB in small writes
    elapsed = fake.now - 1000.0
    assert limiter.bytes_taken == 2 * MiB
    assert elapsed == pytest.approx((2 * MiB - BURST_S * MiB) / MiB)  # 1.9 s: 2 MiB at 1 MiB/s, less the burst
    assert elapsed == pytest.approx(limiter.minimum_duration_s(2 * MiB)) == pytest.approx(limiter.waited_s)
    assert limiter.metadata() == {"rate_limit": {"max_bytes_per_s": MiB, "throttled_s": round(elapsed, 3)}}


def test_a_write_larger_than_the_bucket_is_paid_for_and_idle_time_refills_only_the_burst():
    fake = FakeClock()
    limiter = fake.limiter(MiB)
    assert limiter.take(3 * MiB) == pytest.approx(3 - BURST_S)
    fake.now += 60  # a minute idle: no more than one burst is saved up
    assert limiter.take(MiB) == pytest.approx(1 - BURST_S)


def test_no_limit_never_waits_and_leaves_the_stream_as_it_is():
    fake = FakeClock()
    limiter = fake.limiter(0)
    limiter.take(1 << 40)
    assert fake.sleeps == [] and not limiter.limited and limiter.metadata() == {}
    out = object()
    assert paced(out, limiter) is out
    assert isinstance(paced(out, fake.limiter(1)), PacedSink)


# -- the settings --------------------------------------------------------------------------------------


def test_rates_parse_with_binary_suffixes_and_default_to_unlimited():
    s = load_settings(
        {"KAFKA_EXPORT_MAX_BYTES_PER_S": "8M", "OFFSITE_S3_MAX_BYTES_PER_S": " 512k ", "BASE_BACKUP_MAX_RATE": "32M"}
    )
    assert (s.kafka.export_max_bytes_per_s, s.offsite.max_bytes_per_s, s.postgres.base_backup_max_rate) == (
        8 * MiB,
        512 << 10,
        "32M",
    )
    unset = load_settings({})
    assert (unset.kafka.export_max_bytes_per_s, unset.offsite.max_bytes_per_s, unset.postgres.base_backup_max_rate) == (0, 0, "")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("KAFKA_EXPORT_MAX_BYTES_PER_S", "8 MB"),
        ("KAFKA_EXPORT_MAX_BYTES_PER_S", "-1"),
        ("OFFSITE_S3_MAX_BYTES_PER_S", "1.5M"),
        ("BASE_BACKUP_MAX_RATE", "31"),  # pg_basebackup's minimum is 32 kB/s
        ("BASE_BACKUP_MAX_RATE", "1025M"),
        ("BASE_BACKUP_MAX_RATE", "8G"),
    ],
)
def test_a_malformed_rate_is_refused_naming_the_variable(name, value):
    with pytest.raises(ConfigurationError) as err:
        load_settings({name: value})
    assert str(err.value).startswith(name) and repr(value) in str(err.value) and "\n" not in str(err.value)


# -- pg_basebackup --------------------------------------------------------------------------------------


def test_base_backup_passes_the_max_rate_only_when_set():
    assert not any(a.startswith("--max-rate") for a in base_backup_argv(PostgresSettings(), DAY))
    assert base_backup_argv(PostgresSettings(base_backup_max_rate="1024k"), DAY)[-1] == "--max-rate=1024k"


@pytest.mark.parametrize("rate", ["32", "1024k", "32M", "1024M"])
def test_pg_basebackup_accepts_every_rate_the_settings_accept(rate, tmp_path):
    # pg_basebackup parses --max-rate before it connects: against a port where nothing listens,
    # an accepted rate ends in a connection error, a rejected one in "invalid transfer rate".
    s = load_settings({"BASE_BACKUP_MAX_RATE": rate, "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": "1"}).postgres
    run = subprocess.run(base_backup_argv(s, DAY), env=child_env(s), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode != 0
    assert "transfer rate" not in run.stderr and "connection" in run.stderr.lower(), run.stderr


# -- the offsite bucket ---------------------------------------------------------------------------------


@pytest.fixture
def s3(s3_env):
    b = S3Backend.from_settings(dataclasses.replace(OffsiteSettings.from_env(), max_bytes_per_s=MiB), part_size=5 * MiB)
    b.prefix = f"test-ratelimit-{uuid.uuid4().hex[:10]}/"
    yield b
    b.remove_temporaries()
    b.delete_many(o.key for o in b.list())


@pytest.mark.integration
def test_uploads_to_the_bucket_are_paced_by_its_setting(s3):
    assert s3.limiter.rate == MiB  # OFFSITE_S3_MAX_BYTES_PER_S reaches the backend
    fake = FakeClock()
    s3.limiter = fake.limiter(MiB)
    data = os.urandom(6 * MiB)  # two parts
    with s3.writer("paced/blob") as f:
        for i in range(0, len(data), 256 * 1024):
            f.write(data[i : i + 256 * 1024])
    with s3.reader("paced/blob") as r:
        assert r.read() == data
    assert s3.limiter.bytes_taken == len(data)
    assert fake.now - 1000.0 == pytest.approx(6 - BURST_S)  # 6 MiB at 1 MiB/s could not go up faster


# -- the Kafka export ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_kafka_export_is_paced_and_its_setting_reaches_it(repo):
    from tests.kafka.test_export_restore import Kafka, Msg, at

    kafka = Kafka()
    try:
        topic = kafka.topic("paced", 2)
        yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
        value = os.urandom(1000)
        kafka.produce(topic, [Msg(i % 2, at(yesterday, 1 + i % 20), f"k{i}".encode(), value) for i in range(2000)])

        fake = FakeClock()
        paced_backup = kx.backup_topic_day(kafka_settings(0), repo, topic, yesterday, limiter=fake.limiter(MiB))
        assert paced_backup.metadata["messages_total"] == 2000
        waited = fake.now - 1000.0
        assert waited >= (2000 * 1000 - BURST_S * MiB) / MiB  # ~2 MB of messages at 1 MiB/s: at least 1.8 s
        assert paced_backup.metadata["rate_limit"] == {"max_bytes_per_s": MiB, "throttled_s": round(waited, 3)}

        # Without a limiter of its own, the export takes KAFKA_EXPORT_MAX_BYTES_PER_S (here too high to wait).
        fast = kx.backup_topic_day(kafka_settings(1 << 30), repo, topic, yesterday)
        assert fast.metadata["rate_limit"]["max_bytes_per_s"] == 1 << 30
        assert fast.metadata["messages_sha256"] == paced_backup.metadata["messages_sha256"]  # pacing changes no byte
        assert "rate_limit" not in kx.backup_topic_day(kafka_settings(0), repo, topic, yesterday).metadata
    finally:
        kafka.cleanup()


def kafka_settings(rate: int) -> KafkaSettings:
    return dataclasses.replace(KafkaSettings.from_env(), export_max_bytes_per_s=rate)

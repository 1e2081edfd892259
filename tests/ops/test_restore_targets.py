"""ops/restore_targets.py: a restore target is the configured source or allowlisted, else refused
in one line naming it and the setting; production Redis credentials go to the source only."""

from __future__ import annotations

import pytest

from auction_backup_pipelines.errors import ConfigurationError, RefusedError
from auction_backup_pipelines.ops.restore_targets import RestoreTargetRefused, check_kafka_target, check_redis_target
from auction_backup_pipelines.settings import KafkaSettings, RedisSettings, RestoreSettings, load_settings

PRODUCTION = "production-password-never-elsewhere"
SOURCE = RedisSettings(
    host="Redis-Primary.internal", port=7001, password=PRODUCTION, username="backup", data_dir="/var/lib/redis"
)
RESTORE = RestoreSettings(
    redis_targets=("10.0.0.7:7001", "[fd00::7]:7002"),
    redis_username="restorer",
    redis_password="restore-password",
    kafka_targets=("kafka-dr-1:9092", "KAFKA-DR-2:9092"),
)
KAFKA = KafkaSettings(bootstrap_servers="kafka-1:9092,kafka-2:9092")


def test_the_source_itself_gets_the_production_credentials():
    for written in ("Redis-Primary.internal:7001", " redis-primary.INTERNAL:7001 "):
        target = check_redis_target(written, SOURCE, RestoreSettings())
        assert (target.host, target.port, target.username, target.password) == (
            "redis-primary.internal",
            7001,
            "backup",
            PRODUCTION,
        )
        assert target.data_dir == "/var/lib/redis"


@pytest.mark.parametrize(("written", "host", "port"), [("10.0.0.7:7001", "10.0.0.7", 7001), ("[FD00::7]:7002", "fd00::7", 7002)])
def test_an_allowlisted_target_gets_the_restore_credentials_only(written, host, port):
    target = check_redis_target(written, SOURCE, RESTORE)
    assert target == RedisSettings(host=host, port=port, username="restorer", password="restore-password")


def test_an_allowlisted_target_without_restore_credentials_gets_none():
    target = check_redis_target("10.0.0.7:7001", SOURCE, RestoreSettings(redis_targets=("10.0.0.7:7001",)))
    assert (target.username, target.password) == ("", "")


@pytest.mark.parametrize(
    "written",
    [
        "attacker.example:6379",
        "10.0.0.7:7002",  # a listed host on another port
        "Redis-Primary.internal:7002",  # the source host on another port
        "127.0.0.1:7001",  # loopback is not special
    ],
)
def test_any_other_target_is_refused_in_one_line_naming_it_and_the_setting(written):
    with pytest.raises(RestoreTargetRefused) as caught:
        check_redis_target(written, SOURCE, RESTORE)
    message = str(caught.value)
    assert isinstance(caught.value, RefusedError)
    assert "\n" not in message and written in message and "RESTORE_ALLOWED_REDIS" in message
    assert message.endswith("Nothing was sent") and PRODUCTION not in message and "restore-password" not in message


def test_names_are_compared_as_written_not_resolved():
    with pytest.raises(RestoreTargetRefused):
        check_redis_target("localhost:7001", RedisSettings(host="127.0.0.1", port=7001), RestoreSettings())


def test_allow_any_lifts_the_list_but_never_sends_the_production_password():
    target = check_redis_target("attacker.example:6379", SOURCE, RESTORE, allow_any=True)
    assert (target.host, target.username, target.password) == ("attacker.example", "restorer", "restore-password")
    assert check_redis_target("attacker.example:6379", SOURCE, RestoreSettings(), allow_any=True).password == ""


@pytest.mark.parametrize("written", ["redis.internal", "host:0", "host:65536", "host:７００１", "a b:1", ":7001", "[::1:7001"])
def test_a_malformed_target_is_one_line(written):
    with pytest.raises(ConfigurationError, match="must be host:port") as caught:
        check_redis_target(written, SOURCE, RESTORE, allow_any=True)
    assert "\n" not in str(caught.value)


def test_kafka_defaults_to_the_source_and_allows_its_brokers_in_any_order():
    assert check_kafka_target("", KAFKA, RestoreSettings()) == "kafka-1:9092,kafka-2:9092"
    assert check_kafka_target("  ", KAFKA, RestoreSettings()) == "kafka-1:9092,kafka-2:9092"
    assert check_kafka_target("KAFKA-2:9092", KAFKA, RestoreSettings()) == "KAFKA-2:9092"
    assert check_kafka_target("kafka-2:9092, kafka-1:9092", KAFKA, RestoreSettings()) == "kafka-2:9092, kafka-1:9092"


def test_kafka_allowlisted_brokers_are_allowed():
    assert check_kafka_target("kafka-dr-1:9092,kafka-dr-2:9092", KAFKA, RESTORE) == "kafka-dr-1:9092,kafka-dr-2:9092"


@pytest.mark.parametrize(
    ("bootstrap", "refused"),
    [
        ("evil:9092", "evil:9092"),
        ("kafka-dr-1:9092,evil:9092", "evil:9092"),  # one unknown broker is enough
        ("kafka-1:9093", "kafka-1:9093"),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
    ],
)
def test_kafka_any_other_broker_is_refused_naming_it(bootstrap, refused):
    with pytest.raises(RestoreTargetRefused) as caught:
        check_kafka_target(bootstrap, KAFKA, RESTORE)
    message = str(caught.value)
    assert "\n" not in message and "RESTORE_ALLOWED_KAFKA" in message and message.endswith("Nothing was sent")
    assert f"bootstrap {refused} is" in message
    assert check_kafka_target(bootstrap, KAFKA, RESTORE, allow_any=True) == bootstrap


@pytest.mark.parametrize("bootstrap", [",", "kafka-1", "PLAINTEXT://kafka-1:9092", "kafka-1:9092,,x:y"])
def test_kafka_a_malformed_bootstrap_is_one_line(bootstrap):
    with pytest.raises(ConfigurationError) as caught:
        check_kafka_target(bootstrap, KAFKA, RESTORE, allow_any=True)
    assert "\n" not in str(caught.value) and "nothing was sent" in str(caught.value)


def test_the_settings_feed_the_checks():
    s = load_settings(
        {
            "REDIS_HOST": "r1",
            "REDIS_PASSWORD": PRODUCTION,
            "RESTORE_ALLOWED_REDIS": "r2:7001 r3:7001",
            "RESTORE_REDIS_PASSWORD": "restore-password",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092",
            "RESTORE_ALLOWED_KAFKA": "k2:9092",
        }
    )
    assert check_redis_target("r1:7001", s.redis, s.restore).password == PRODUCTION
    assert check_redis_target("r3:7001", s.redis, s.restore).password == "restore-password"
    assert check_kafka_target("k2:9092,k1:9092", s.kafka, s.restore) == "k2:9092,k1:9092"
    with pytest.raises(RestoreTargetRefused):
        check_redis_target("r4:7001", s.redis, s.restore)

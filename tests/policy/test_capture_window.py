import datetime as dt

import pytest

from auction_backup_pipelines.policy.capture_window import CaptureWindowError, classify, default_partition

UTC = dt.UTC


def test_on_time_during_the_next_day():
    day = dt.date(2026, 11, 26)
    assert classify(day, dt.datetime(2026, 11, 27, 2, 0, tzinfo=UTC)).on_time
    assert classify(day, dt.datetime(2026, 11, 27, 23, 59, tzinfo=UTC)).on_time


def test_later_is_a_backfill():
    assert not classify(dt.date(2026, 11, 26), dt.datetime(2026, 11, 28, 0, 0, tzinfo=UTC)).on_time


def test_day_not_over_is_refused_and_names_the_right_partition():
    with pytest.raises(CaptureWindowError, match="belongs to partition 2026-11-26"):
        classify(dt.date(2026, 11, 27), dt.datetime(2026, 11, 27, 10, 0, tzinfo=UTC))


def test_default_partition_is_yesterday_utc():
    tz = dt.timezone(dt.timedelta(hours=-5))
    # 22:00 on the 26th at UTC-5 is 03:00 on the 27th in UTC.
    assert default_partition(dt.datetime(2026, 11, 26, 22, 0, tzinfo=tz)) == dt.date(2026, 11, 26)

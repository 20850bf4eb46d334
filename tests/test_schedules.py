"""Tests for dispatcher.schedules (SPEC §1, deployment schedules): validation, upcoming times, DST, run ids."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import DAILY, rrule, rrulestr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.schedules import (
    CronSchedule,
    IntervalSchedule,
    RRuleSchedule,
    _fast_forward,
    describe,
    parse_schedule,
    scheduled_run_id,
    upcoming,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def hhmm(times: list[datetime]) -> list[str]:
    return [t.strftime("%m-%d %H:%M") for t in times]


# ------------------------------------------------------------------------------------------------ cron


def test_cron_in_utc() -> None:
    got = upcoming(CronSchedule(cron="*/20 * * * *"), utc(2024, 5, 1, 10, 5), utc(2024, 5, 1, 11, 0), 10)
    assert got == [utc(2024, 5, 1, 10, 20), utc(2024, 5, 1, 10, 40), utc(2024, 5, 1, 11, 0)]
    assert all(t.tzinfo is UTC for t in got)


def test_cron_weekday_and_nickname() -> None:
    mondays = upcoming(CronSchedule(cron="0 6 * * MON"), utc(2024, 5, 1), utc(2024, 5, 31), 10)
    assert [t.day for t in mondays] == [6, 13, 20, 27]
    assert upcoming(CronSchedule(cron="@daily"), utc(2024, 5, 1, 12), utc(2024, 5, 3), 10) == [
        utc(2024, 5, 2),
        utc(2024, 5, 3),
    ]


def test_cron_berlin_winter_and_summer() -> None:
    s = CronSchedule(cron="0 9 * * *", timezone="Europe/Berlin")
    got = upcoming(s, utc(2024, 3, 29), utc(2024, 4, 2), 10)
    assert hhmm(got) == ["03-29 08:00", "03-30 08:00", "03-31 07:00", "04-01 07:00"]
    autumn = upcoming(s, utc(2024, 10, 26), utc(2024, 10, 29), 10)
    assert hhmm(autumn) == ["10-26 07:00", "10-27 08:00", "10-28 08:00"]


def test_cron_spring_forward_nonexistent_time_fires_once_after_the_gap() -> None:
    # 2024-03-10: 02:00 EST jumps to 03:00 EDT, so 02:00 and 02:30 do not exist.
    for expr in ("0 2 * * *", "30 2 * * *"):
        got = upcoming(CronSchedule(cron=expr, timezone="America/New_York"), utc(2024, 3, 9), utc(2024, 3, 12), 10)
        minute = expr.split()[0].zfill(2)
        assert hhmm(got) == [f"03-09 07:{minute}", "03-10 07:00", f"03-11 06:{minute}"]
        assert got[1].astimezone(NY).strftime("%H:%M %Z") == "03:00 EDT"


def test_cron_spring_forward_hourly_has_no_duplicate() -> None:
    got = upcoming(
        CronSchedule(cron="0 * * * *", timezone="America/New_York"), utc(2024, 3, 10, 4), utc(2024, 3, 10, 9), 10
    )
    assert hhmm(got) == ["03-10 05:00", "03-10 06:00", "03-10 07:00", "03-10 08:00", "03-10 09:00"]
    assert [t.astimezone(NY).hour for t in got] == [0, 1, 3, 4, 5]


def test_cron_fall_back_fixed_time_fires_once() -> None:
    # 2024-11-03: 02:00 EDT falls back to 01:00 EST, so 01:30 happens twice; a daily job runs once.
    s = CronSchedule(cron="30 1 * * *", timezone="America/New_York")
    got = upcoming(s, utc(2024, 11, 2), utc(2024, 11, 5), 10)
    assert hhmm(got) == ["11-02 05:30", "11-03 05:30", "11-04 06:30"]
    assert got[1].astimezone(NY).strftime("%H:%M %Z") == "01:30 EDT"
    # Asked from between the two 01:30s, the second one still does not fire.
    assert upcoming(s, utc(2024, 11, 3, 6), utc(2024, 11, 4), 10) == []


def test_cron_fall_back_hourly_fires_in_both_passes() -> None:
    s = CronSchedule(cron="30 * * * *", timezone="America/New_York")
    got = upcoming(s, utc(2024, 11, 3, 4), utc(2024, 11, 3, 9), 10)
    assert hhmm(got) == ["11-03 04:30", "11-03 05:30", "11-03 06:30", "11-03 07:30", "11-03 08:30"]
    assert [t.astimezone(NY).strftime("%H:%M %Z") for t in got[1:3]] == ["01:30 EDT", "01:30 EST"]


def test_cron_berlin_fall_back_fixed_and_wildcard() -> None:
    # 2024-10-27: 03:00 CEST falls back to 02:00 CET.
    fixed = upcoming(
        CronSchedule(cron="30 2 * * *", timezone="Europe/Berlin"), utc(2024, 10, 26, 12), utc(2024, 10, 28), 10
    )
    assert hhmm(fixed) == ["10-27 00:30"]
    every_15 = upcoming(
        CronSchedule(cron="*/15 * * * *", timezone="Europe/Berlin"), utc(2024, 10, 27, 0, 0), utc(2024, 10, 27, 2), 100
    )
    assert len(every_15) == 8
    assert all(b - a == timedelta(minutes=15) for a, b in zip(every_15, every_15[1:], strict=False))


def test_cron_berlin_spring_forward() -> None:
    # 2024-03-31: 02:00 CET jumps to 03:00 CEST.
    got = upcoming(CronSchedule(cron="30 2 * * *", timezone="Europe/Berlin"), utc(2024, 3, 30), utc(2024, 4, 2), 10)
    assert hhmm(got) == ["03-30 01:30", "03-31 01:00", "04-01 00:30"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=st.sampled_from(["30 1 * * *", "0 2 * * *", "*/20 * * * *", "15,45 0-3 * * *", "0 * * * *"]),
    zone=st.sampled_from(["America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
    offset=st.integers(min_value=0, max_value=4 * 24 * 3600),
    window_start=st.sampled_from(
        [utc(2024, 3, 8), utc(2024, 3, 29), utc(2024, 10, 25), utc(2024, 11, 1), utc(2024, 4, 5)]
    ),
)
def test_cron_result_does_not_depend_on_where_the_window_starts(
    expr: str, zone: str, offset: int, window_start: datetime
) -> None:
    s = CronSchedule(cron=expr, timezone=zone)
    until = window_start + timedelta(days=5)
    full = upcoming(s, window_start, until, 10_000)
    after = window_start + timedelta(seconds=offset)
    assert upcoming(s, after, until, 10_000) == [t for t in full if t > after]
    assert all(a < b for a, b in zip(full, full[1:], strict=False))


# -------------------------------------------------------------------------------------------- interval


def test_interval_anchor_in_the_past() -> None:
    s = IntervalSchedule(interval=300, anchor_date=datetime(2024, 1, 1, 0, 1, tzinfo=UTC))
    got = upcoming(s, utc(2024, 6, 1, 12, 0), utc(2024, 6, 1, 12, 20), 10)
    assert got == [utc(2024, 6, 1, 12, 1), utc(2024, 6, 1, 12, 6), utc(2024, 6, 1, 12, 11), utc(2024, 6, 1, 12, 16)]


def test_interval_anchor_in_the_future_extends_backwards() -> None:
    s = IntervalSchedule(interval=3600, anchor_date=datetime(2030, 1, 1, 0, 30, tzinfo=UTC))
    assert upcoming(s, utc(2024, 1, 1), utc(2024, 1, 1, 3), 10) == [
        utc(2024, 1, 1, 0, 30),
        utc(2024, 1, 1, 1, 30),
        utc(2024, 1, 1, 2, 30),
    ]


def test_interval_default_anchor_and_naive_anchor_use_the_timezone() -> None:
    # Default anchor: 2020-01-01T00:00 in Europe/Berlin = 2019-12-31T23:00 UTC.
    berlin = IntervalSchedule(interval=7200, timezone="Europe/Berlin")
    assert upcoming(berlin, utc(2024, 1, 1), utc(2024, 1, 1, 4), 10) == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 3)]
    naive = IntervalSchedule(interval=86400, anchor_date=datetime(2024, 1, 1, 9), timezone="America/New_York")
    assert upcoming(naive, utc(2024, 1, 5), utc(2024, 1, 6), 10) == [utc(2024, 1, 5, 14)]


def test_interval_is_elapsed_time_across_dst() -> None:
    s = IntervalSchedule(interval=86400, anchor_date=datetime(2024, 3, 9, 9), timezone="America/New_York")
    got = upcoming(s, utc(2024, 3, 9), utc(2024, 3, 12), 10)
    assert got == [utc(2024, 3, 9, 14), utc(2024, 3, 10, 14), utc(2024, 3, 11, 14)]
    assert [t.astimezone(NY).hour for t in got] == [9, 10, 10]


def test_interval_fractional_seconds() -> None:
    s = IntervalSchedule(interval=0.25, anchor_date=datetime(2024, 1, 1, tzinfo=UTC))
    got = upcoming(s, utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 1), 10)
    assert [t.microsecond for t in got] == [250_000, 500_000, 750_000, 0]


def test_bounds_after_exclusive_until_inclusive() -> None:
    s = IntervalSchedule(interval=60, anchor_date=datetime(2024, 1, 1, tzinfo=UTC))
    assert upcoming(s, utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 3), 10) == [
        utc(2024, 1, 1, 0, 2),
        utc(2024, 1, 1, 0, 3),
    ]
    cron = CronSchedule(cron="* * * * *")
    assert upcoming(cron, utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 3), 10) == [
        utc(2024, 1, 1, 0, 2),
        utc(2024, 1, 1, 0, 3),
    ]
    rule = RRuleSchedule(rrule="FREQ=MINUTELY")
    assert upcoming(rule, utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 3), 10) == [
        utc(2024, 1, 1, 0, 2),
        utc(2024, 1, 1, 0, 3),
    ]


def test_bounds_accept_any_aware_zone() -> None:
    plus2 = timezone(timedelta(hours=2))
    got = upcoming(CronSchedule(cron="0 * * * *"), datetime(2024, 1, 1, 2, 30, tzinfo=plus2), utc(2024, 1, 1, 2), 10)
    assert got == [utc(2024, 1, 1, 1), utc(2024, 1, 1, 2)]


@pytest.mark.parametrize(
    "schedule",
    [CronSchedule(cron="* * * * *"), IntervalSchedule(interval=60), RRuleSchedule(rrule="FREQ=MINUTELY")],
    ids=["cron", "interval", "rrule"],
)
def test_limit_caps_the_result(schedule: CronSchedule | IntervalSchedule | RRuleSchedule) -> None:
    got = upcoming(schedule, utc(2024, 1, 1), utc(2024, 1, 2), 5)
    assert got == [utc(2024, 1, 1, 0, m) for m in range(1, 6)]
    assert upcoming(schedule, utc(2024, 1, 1), utc(2024, 1, 2), 0) == []
    assert upcoming(schedule, utc(2024, 1, 2), utc(2024, 1, 1), 5) == []


def test_naive_bounds_and_bad_limit_are_refused() -> None:
    s = IntervalSchedule(interval=60)
    with pytest.raises(ValueError, match="after must be a timezone-aware datetime"):
        upcoming(s, datetime(2024, 1, 1), utc(2024, 1, 2), 5)
    with pytest.raises(ValueError, match="until must be a timezone-aware datetime"):
        upcoming(s, utc(2024, 1, 1), datetime(2024, 1, 2), 5)
    with pytest.raises(ValueError, match="limit"):
        upcoming(s, utc(2024, 1, 1), utc(2024, 1, 2), -1)


@settings(max_examples=200, deadline=None)
@given(
    interval_us=st.integers(min_value=1, max_value=10 * 86400 * 1_000_000),
    anchor_offset_s=st.integers(min_value=-(10**9), max_value=10**9),
    after_offset_s=st.integers(min_value=0, max_value=10**9),
    window_s=st.integers(min_value=0, max_value=30 * 86400),
    limit=st.integers(min_value=1, max_value=50),
)
def test_interval_property(
    interval_us: int, anchor_offset_s: int, after_offset_s: int, window_s: int, limit: int
) -> None:
    base = utc(2000, 1, 1)
    interval = interval_us / 1_000_000
    anchor = base + timedelta(seconds=anchor_offset_s)
    s = IntervalSchedule(interval=interval, anchor_date=anchor)
    after = base + timedelta(seconds=after_offset_s, microseconds=interval_us // 3)
    until = after + timedelta(seconds=window_s)
    got = upcoming(s, after, until, limit)
    assert len(got) <= limit
    assert all(after < t <= until for t in got)
    assert all(b - a == timedelta(microseconds=interval_us) for a, b in zip(got, got[1:], strict=False))
    assert all((t - anchor) % timedelta(microseconds=interval_us) == timedelta(0) for t in got)
    if got:
        assert got[0] - timedelta(microseconds=interval_us) <= after  # nothing skipped at the start
    if len(got) < limit:
        assert (got[-1] if got else after) + timedelta(microseconds=interval_us) > until  # nothing left out


# ----------------------------------------------------------------------------------------------- rrule


def test_rrule_without_dtstart_starts_2020_in_the_timezone() -> None:
    s = RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9;BYMINUTE=0", timezone="Europe/Berlin")
    got = upcoming(s, utc(2024, 3, 29), utc(2024, 4, 2), 10)
    assert hhmm(got) == ["03-29 08:00", "03-30 08:00", "03-31 07:00", "04-01 07:00"]
    count = RRuleSchedule(rrule="FREQ=DAILY;COUNT=2", timezone="America/New_York")
    assert upcoming(count, utc(2019, 1, 1), utc(2030, 1, 1), 10) == [utc(2020, 1, 1, 5), utc(2020, 1, 2, 5)]


def test_rrule_with_dtstart_floating_utc_and_tzid() -> None:
    floating = RRuleSchedule(rrule="DTSTART:20240101T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO", timezone="America/New_York")
    assert upcoming(floating, utc(2024, 1, 1), utc(2024, 1, 9), 10) == [utc(2024, 1, 1, 14), utc(2024, 1, 8, 14)]
    zulu = RRuleSchedule(rrule="DTSTART:20240101T080000Z\nRRULE:FREQ=DAILY", timezone="Europe/Berlin")
    assert hhmm(upcoming(zulu, utc(2024, 3, 30), utc(2024, 4, 1), 10)) == ["03-30 08:00", "03-31 07:00"]
    tzid = RRuleSchedule(rrule="DTSTART;TZID=America/New_York:20240101T090000\nRRULE:FREQ=WEEKLY;BYDAY=MO,WE")
    assert tzid.timezone == "America/New_York"
    assert hhmm(upcoming(tzid, utc(2026, 3, 1), utc(2026, 3, 12), 10)) == [
        "03-02 14:00",
        "03-04 14:00",
        "03-09 13:00",
        "03-11 13:00",
    ]


def test_rrule_count_and_until_are_respected() -> None:
    count = RRuleSchedule(rrule="DTSTART:20240101T000000\nRRULE:FREQ=HOURLY;COUNT=3")
    assert upcoming(count, utc(2023, 1, 1), utc(2025, 1, 1), 10) == [utc(2024, 1, 1, h) for h in range(3)]
    assert upcoming(count, utc(2024, 1, 1, 1), utc(2025, 1, 1), 10) == [utc(2024, 1, 1, 2)]
    until = RRuleSchedule(rrule="DTSTART:20240101T000000\nRRULE:FREQ=DAILY;UNTIL=20240103T000000")
    assert upcoming(until, utc(2023, 1, 1), utc(2025, 1, 1), 10) == [utc(2024, 1, d) for d in (1, 2, 3)]
    until_z = RRuleSchedule(rrule="FREQ=DAILY;UNTIL=20200103T120000Z", timezone="America/New_York")
    assert upcoming(until_z, utc(2019, 1, 1), utc(2025, 1, 1), 10) == [utc(2020, 1, d, 5) for d in (1, 2, 3)]
    # Far-future windows of a rule with UNTIL are fast-forwarded too, and empty.
    assert (
        upcoming(RRuleSchedule(rrule="FREQ=MINUTELY;UNTIL=20200102T000000"), utc(2026, 1, 1), utc(2027, 1, 1), 5) == []
    )


def test_rrule_exdate_is_respected() -> None:
    text = "DTSTART:20240101T090000\nRRULE:FREQ=DAILY;COUNT=3\nEXDATE:20240102T090000"
    got = upcoming(RRuleSchedule(rrule=text, timezone="Europe/Berlin"), utc(2023, 1, 1), utc(2025, 1, 1), 10)
    assert got == [utc(2024, 1, 1, 8), utc(2024, 1, 3, 8)]


def test_rrule_dst_nonexistent_and_ambiguous_times() -> None:
    spring = RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=2;BYMINUTE=30", timezone="America/New_York")
    got = upcoming(spring, utc(2024, 3, 9), utc(2024, 3, 12), 10)
    assert hhmm(got) == ["03-09 07:30", "03-10 07:30", "03-11 06:30"]  # 02:30 -> 03:30 EDT (RFC 5545)
    fall = RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=1;BYMINUTE=30", timezone="America/New_York")
    assert hhmm(upcoming(fall, utc(2024, 11, 2), utc(2024, 11, 5), 10)) == ["11-02 05:30", "11-03 05:30", "11-04 06:30"]
    hourly = RRuleSchedule(rrule="FREQ=HOURLY", timezone="America/New_York")
    got = upcoming(hourly, utc(2024, 3, 10, 4), utc(2024, 3, 10, 9), 10)
    assert got == [utc(2024, 3, 10, h) for h in range(5, 10)]  # strictly increasing, no duplicate


def test_rrule_performance_guard_minutely_from_2020_asked_for_2026() -> None:
    s = RRuleSchedule(rrule="FREQ=MINUTELY")
    got = upcoming(s, utc(2026, 6, 1, 12, 0, 30), utc(2026, 6, 3), 1000)
    assert len(got) == 1000
    assert got[0] == utc(2026, 6, 1, 12, 1)
    assert got[-1] == utc(2026, 6, 1, 12, 1) + timedelta(minutes=999)
    every_7s = RRuleSchedule(rrule="DTSTART:20200101T000003\nRRULE:FREQ=SECONDLY;INTERVAL=7")
    got = upcoming(every_7s, utc(2026, 1, 1), utc(2026, 1, 2), 3)
    assert len(got) == 3
    assert all((t - utc(2020, 1, 1, 0, 0, 3)).total_seconds() % 7 == 0 for t in got)


RULES = st.builds(
    lambda freq, interval, extra: f"FREQ={freq};INTERVAL={interval}{extra}",
    freq=st.sampled_from(["WEEKLY", "DAILY", "HOURLY", "MINUTELY"]),
    interval=st.integers(min_value=1, max_value=5),
    extra=st.sampled_from(
        ["", ";BYDAY=MO,FR", ";BYHOUR=3,15", ";BYMINUTE=0,7,30", ";BYSETPOS=-1;BYHOUR=1,2,3", ";BYMONTH=2"]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=RULES,
    dtstart=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 3, 1)).map(
        lambda d: d.replace(microsecond=0)
    ),
    days=st.integers(min_value=0, max_value=30),
    seconds=st.integers(min_value=0, max_value=86400),
)
def test_rrule_fast_forward_matches_plain_dateutil_iteration(
    rule: str, dtstart: datetime, days: int, seconds: int
) -> None:
    text = f"DTSTART:{dtstart:%Y%m%dT%H%M%S}\nRRULE:{rule}"
    after = dtstart.replace(tzinfo=UTC) + timedelta(days=days, seconds=seconds)
    until = after + timedelta(days=20)
    try:
        plain = rrulestr(text).replace(dtstart=dtstart.replace(tzinfo=UTC))  # type: ignore[union-attr]
    except ValueError:  # e.g. FREQ=HOURLY;INTERVAL=2;BYHOUR=3 from an even hour never fires
        with pytest.raises(ValueError, match="is not a valid RFC 5545 recurrence rule"):
            RRuleSchedule(rrule=text)
        return
    expected = [t for t in itertools.takewhile(lambda t: t <= until, plain) if t > after][:25]
    assert upcoming(RRuleSchedule(rrule=text), after, until, 25) == expected


# --------------------------------------------------------------------------------------------- run ids


def test_scheduled_run_id_is_deterministic() -> None:
    when = utc(2024, 5, 1, 9)
    first = scheduled_run_id("dep-1", when)
    assert first == scheduled_run_id("dep-1", utc(2024, 5, 1, 9))
    assert first == scheduled_run_id("dep-1", when.astimezone(BERLIN))  # same instant, other zone
    assert uuid.UUID(first).version == 5
    assert first != scheduled_run_id("dep-2", when)
    assert first != scheduled_run_id("dep-1", when + timedelta(microseconds=1))
    assert first != scheduled_run_id("dep-1", when + timedelta(minutes=1))
    with pytest.raises(ValueError, match="timezone-aware"):
        scheduled_run_id("dep-1", datetime(2024, 5, 1, 9))


def test_scheduled_run_id_is_stable_across_releases() -> None:
    # Pinned: a changed namespace or format would duplicate runs created by older dispatchers.
    namespace = uuid.UUID("e706712e-7e06-4cba-85f6-9b406e12e8b7")
    expected = str(uuid.uuid5(namespace, "dep-1|2024-05-01T09:00:00.000000+00:00"))
    assert scheduled_run_id("dep-1", utc(2024, 5, 1, 9)) == expected


# -------------------------------------------------------------------------------------- describe, parse


def test_describe() -> None:
    assert describe(CronSchedule(cron="0 9 * * *", timezone="Europe/Berlin")) == "cron 0 9 * * * (Europe/Berlin)"
    assert describe(IntervalSchedule(interval=300)) == "every 300s"
    assert describe(IntervalSchedule(interval=1.5)) == "every 1.5s"
    anchored = IntervalSchedule(interval=60, anchor_date=datetime(2024, 1, 1, tzinfo=UTC))
    assert describe(anchored) == "every 60s from 2024-01-01T00:00:00+00:00"
    assert describe(RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9")) == "rrule FREQ=DAILY;BYHOUR=9 (UTC)"


def test_parse_schedule_picks_the_model_by_key() -> None:
    assert parse_schedule({"cron": "0 9 * * *", "timezone": "Europe/Berlin"}) == CronSchedule(
        cron="0 9 * * *", timezone="Europe/Berlin"
    )
    assert isinstance(parse_schedule({"interval": 60, "anchor_date": "2024-01-01T00:00:00Z"}), IntervalSchedule)
    assert isinstance(parse_schedule({"rrule": "FREQ=DAILY"}), RRuleSchedule)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "exactly one of 'cron', 'interval', 'rrule'; got none"),
        ({"timezone": "UTC"}, "got none"),
        ({"cron": "* * * * *", "interval": 60}, "got several ('cron', 'interval')"),
        ({"cron": "* * * * *", "interval": 60, "rrule": "FREQ=DAILY"}, "several"),
        ({"cron": "* * * * *", "anchor_date": "2024-01-01"}, "anchor_date"),
    ],
)
def test_parse_schedule_refuses_none_several_or_foreign_keys(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_schedule(data)


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"cron": "61 * * * *"},
            r"cron '61 \* \* \* \*' is not a valid cron expression: .*; use 5 fields: minute hour",
        ),
        ({"cron": "* * * *"}, "cron '\\* \\* \\* \\*' is not a valid cron expression: it has 4 fields; use 5 fields"),
        ({"cron": "0 * * * * *"}, "it has 6 fields; use 5 fields"),
        ({"cron": "not a cron"}, "is not a valid cron expression"),
        ({"cron": ""}, "it has 0 fields"),
        ({"cron": "R * * * *"}, "random 'R' items are not allowed"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        (
            {"cron": "0 9 * * *", "timezone": "Mars/Base"},
            "timezone 'Mars/Base' is not a known IANA time zone, e.g. 'UTC'",
        ),
        ({"cron": "0 9 * * *", "timezone": "localtime"}, "timezone 'localtime' is not a known IANA time zone"),
        ({"interval": 60, "timezone": "../etc/passwd"}, "is not a known IANA time zone"),
        ({"rrule": "FREQ=DAILY", "timezone": "Europe"}, "timezone 'Europe' is not a known IANA time zone"),
        ({"rrule": "FREQ=SOMETIMES"}, "rrule 'FREQ=SOMETIMES' is not a valid RFC 5545 recurrence rule: invalid 'FREQ'"),
        ({"rrule": ""}, "rrule '' is not a valid RFC 5545 recurrence rule"),
        ({"rrule": "FREQ=DAILY;BYHOUR=25"}, "hour must be in 0..23"),
        ({"rrule": "DTSTART;TZID=Mars/Base:20240101T090000\nRRULE:FREQ=DAILY"}, "TZID 'Mars/Base' is not a known"),
        (
            {"rrule": "DTSTART;TZID=America/New_York:20240101T090000\nRRULE:FREQ=DAILY", "timezone": "UTC"},
            "TZID=America/New_York but timezone is 'UTC'",
        ),
        ({"interval": 0}, "interval\n.*greater than 0"),
        ({"interval": -5}, "interval\n.*greater than 0"),
        ({"interval": float("inf")}, "interval\n.*finite"),
        ({"interval": 1e-9}, "interval must be at least 0.000001 seconds"),
    ],
)
def test_validation_messages_name_the_field_and_what_is_allowed(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(data)


@pytest.mark.filterwarnings("ignore:Using both 'count' and 'until':DeprecationWarning")
def test_rrule_count_with_until_is_refused() -> None:
    with pytest.raises(ValueError, match="rrule\n.*COUNT and UNTIL are given together, RFC 5545 allows one"):
        RRuleSchedule(rrule="FREQ=DAILY;COUNT=2;UNTIL=20240101T000000")


@pytest.mark.parametrize(
    "schedule",
    [
        CronSchedule(cron="0 9 * * *", timezone="Europe/Berlin"),
        IntervalSchedule(interval=90.5, anchor_date=datetime(2024, 1, 1, 9), timezone="America/New_York"),
        RRuleSchedule(rrule="DTSTART;TZID=Europe/Berlin:20240101T090000\nRRULE:FREQ=DAILY"),
    ],
    ids=["cron", "interval", "rrule"],
)
def test_json_round_trip(schedule: CronSchedule | IntervalSchedule | RRuleSchedule) -> None:
    again = parse_schedule(schedule.model_dump(mode="json"))
    assert again == schedule
    window = (utc(2024, 3, 1), utc(2024, 4, 30))
    assert upcoming(again, *window, 100) == upcoming(schedule, *window, 100)
    assert len(upcoming(schedule, *window, 100)) > 0


def test_cron_whitespace_is_normalised() -> None:
    assert CronSchedule(cron="  0   9 * * *  ").cron == "0 9 * * *"


# ----------------------------------------------------------------------- rules that cannot or never fire


@pytest.mark.parametrize(
    ("rrule", "got"),
    [
        ("FREQ=DAILY;INTERVAL=0", "0"),
        ("FREQ=DAILY;INTERVAL=-1", "-1"),
        ("FREQ=HOURLY;INTERVAL=0;BYHOUR=3", "0"),  # dateutil's own words would be "byxxx generates an empty set"
        ("DTSTART:20240101T090000\nRRULE:FREQ=WEEKLY;INTERVAL=2\nEXRULE:FREQ=DAILY;INTERVAL=0", "0"),
    ],
)
def test_rrule_interval_below_one_is_refused(rrule: str, got: str) -> None:
    with pytest.raises(ValueError, match=rf"rrule\n.*INTERVAL must be a whole number of 1 or more, got {got};"):
        RRuleSchedule(rrule=rrule)
    with pytest.raises(ValueError, match="is not a valid RFC 5545 recurrence rule: INTERVAL must be"):
        parse_schedule({"rrule": rrule, "timezone": "Europe/Berlin"})


@pytest.mark.parametrize(
    ("rrule", "why"),
    [
        ("FREQ=SECONDLY;COUNT=0", "COUNT is 0"),
        ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "no date matches it"),
        ("FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30", "no date matches it"),
        ("FREQ=MINUTELY;BYMONTH=4;BYMONTHDAY=31;BYHOUR=9", "no date matches it"),
        ("DTSTART:20240131T090000\nRRULE:FREQ=MONTHLY;BYMONTH=2", "no date matches it"),  # Feb 31, from DTSTART
        ("FREQ=SECONDLY;BYSETPOS=2", "BYSETPOS=2 picks nothing, a period of this rule has at most 1 candidate time"),
        ("FREQ=DAILY;BYHOUR=9,17;BYSETPOS=3,-3", "BYSETPOS=3,-3 picks nothing"),
        ("DTSTART:20240101T000000\nRRULE:FREQ=DAILY;INTERVAL=7;BYDAY=TU", "no date in the 400 years"),  # Mondays only
        ("DTSTART:20240101T090000\nRRULE:FREQ=DAILY;UNTIL=20231231T000000", "its UNTIL is before its first occurrence"),
    ],
)
def test_rrule_that_never_fires_is_refused_quickly(rrule: str, why: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"rrule\n.*never fires \(" + re.escape(why)):
        RRuleSchedule(rrule=rrule)
    # dateutil alone looks to the year 9999: 10 s for SECONDLY on Feb 30, forever for SECONDLY;BYSETPOS=2.
    assert time.perf_counter() - started < 1.0


def test_rrule_set_names_the_rule_that_never_fires() -> None:
    text = "RRULE:FREQ=DAILY\nRRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"
    with pytest.raises(ValueError, match="its RRULE number 2 never fires \\(no date matches it\\); remove it or fix"):
        RRuleSchedule(rrule=text)
    exrule = "RRULE:FREQ=DAILY\nEXRULE:FREQ=DAILY;COUNT=0"
    with pytest.raises(ValueError, match="its EXRULE never matches, so it excludes nothing \\(COUNT is 0\\)"):
        RRuleSchedule(rrule=exrule)


def test_rrule_that_fired_and_finished_is_accepted() -> None:
    # A schedule whose UNTIL (or COUNT) is behind us did have occurrences: valid, it just creates no more runs.
    finished = RRuleSchedule(rrule="DTSTART:20240101T090000\nRRULE:FREQ=DAILY;UNTIL=20240103T090000")
    assert upcoming(finished, utc(2025, 1, 1), utc(2026, 1, 1), 10) == []
    assert upcoming(finished, utc(2023, 1, 1), utc(2025, 1, 1), 10) == [utc(2024, 1, d, 9) for d in (1, 2, 3)]
    counted = RRuleSchedule(rrule="DTSTART:20240101T090000\nRRULE:FREQ=HOURLY;COUNT=1")
    assert upcoming(counted, utc(2023, 1, 1), utc(2030, 1, 1), 10) == [utc(2024, 1, 1, 9)]
    # Rare but real dates are found: Feb 29 every 4 years, and Feb 29 on a Monday (2044 from 2020).
    assert upcoming(
        RRuleSchedule(rrule="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29"), utc(2025, 1, 1), utc(2030, 1, 1), 5
    ) == [utc(2028, 2, 29)]
    leap_monday = RRuleSchedule(rrule="FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO")
    assert upcoming(leap_monday, utc(2020, 1, 1), utc(2080, 1, 1), 5) == [utc(2044, 2, 29), utc(2072, 2, 29)]


def test_a_huge_interval_is_evaluated_without_overflow() -> None:
    # The fast-forward step (10^9 days) is past timedelta's range: no fast-forward, and no OverflowError.
    s = RRuleSchedule(rrule="FREQ=DAILY;INTERVAL=1000000000")
    assert upcoming(s, utc(2019, 1, 1), utc(2030, 1, 1), 5) == [utc(2020, 1, 1)]


def test_stored_rules_are_read_back_and_evaluated_safely() -> None:
    # JSON-mode validation is how the stores read: a rule an older version accepted stays readable ...
    zero = RRuleSchedule.model_validate_json('{"rrule": "FREQ=DAILY;INTERVAL=0", "timezone": "UTC"}')
    assert zero.rrule == "FREQ=DAILY;INTERVAL=0"
    # ... while new input (Python objects, as the CLI, API and apply give) is refused.
    with pytest.raises(ValueError, match="INTERVAL must be"):
        RRuleSchedule.model_validate({"rrule": "FREQ=DAILY;INTERVAL=0", "timezone": "UTC"})
    # At run time, INTERVAL < 1 is a ValueError in words (it used to be a ZeroDivisionError) ...
    with pytest.raises(ValueError, match="INTERVAL must be a whole number of 1 or more, got 0"):
        upcoming(zero, utc(2026, 1, 1), utc(2026, 1, 2), 5)
    # ... and a rule that never fires gives nothing, at once rather than after a search to the year 9999.
    never = RRuleSchedule.model_validate_json('{"rrule": "FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=30"}')
    started = time.perf_counter()
    assert upcoming(never, utc(2026, 1, 1), utc(2027, 1, 1), 5) == []
    assert time.perf_counter() - started < 1.0
    # A set keeps its rules that fire; one that never fires (or an EXRULE that never matches) is left out.
    text = "RRULE:FREQ=DAILY;BYHOUR=9\nRRULE:FREQ=SECONDLY;COUNT=0\nEXRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"
    mixed = RRuleSchedule.model_validate_json(json.dumps({"rrule": text}))
    assert upcoming(mixed, utc(2026, 1, 1), utc(2026, 1, 3), 5) == [utc(2026, 1, 1, 9), utc(2026, 1, 2, 9)]


def test_fast_forward_leaves_a_rule_without_a_lattice_alone() -> None:
    # Defence in depth: _rrule_times raises for INTERVAL < 1 first, but the fast-forward must not divide by it.
    rule = rrule(DAILY, dtstart=datetime(2020, 1, 1, tzinfo=UTC), interval=0)
    assert _fast_forward(rule, utc(2026, 1, 1)) is rule


def test_an_exrule_that_removes_every_occurrence_ends_at_the_window() -> None:
    # Without the cut at `until`, dateutil would search to the year 9999 for an occurrence not excluded.
    import threading

    schedule = RRuleSchedule(rrule="RRULE:FREQ=MINUTELY\nEXRULE:FREQ=MINUTELY")
    half = RRuleSchedule(rrule="RRULE:FREQ=MINUTELY\nEXRULE:FREQ=MINUTELY;INTERVAL=2")
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    found: dict[str, list[datetime]] = {}

    def work() -> None:
        found["all"] = upcoming(schedule, start, start + timedelta(hours=1), 10)
        found["half"] = upcoming(half, start, start + timedelta(hours=1), 100)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "upcoming() kept searching past its window"
    assert found["all"] == []
    assert len(found["half"]) == 30 and all(t.minute % 2 == 1 for t in found["half"])

"""The working-time clock, calendar, working hours and time limits (cityops.worktime).

Expected values are computed by hand from the real 2026 calendar of ``chinesecalendar``
1.11 and the default working hours 08:00–12:00 and 14:00–18:00 (480 minutes a day).
2026 September–October, as the package has it (and as ``test_2026_sep_oct_calendar``
checks):

* 2026-09-20 (Sunday): make-up working day (调休上班) for National Day;
* 2026-09-25 (Friday) – 2026-09-27 (Sunday): Mid-Autumn Festival (中秋), days off;
* 2026-10-01 (Thursday) – 2026-10-07 (Wednesday): National Day (国庆节), days off;
* 2026-10-10 (Saturday): make-up working day (调休上班) for National Day.

Every other Monday–Friday of those two months is a working day, every other weekend day off.
2027 has no data in the package: Monday–Friday fallback, results flagged unconfirmed.
"""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import chinese_calendar as cc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cityops.core.audit import Actor, AuditLog, current_actor
from cityops.core.db import Database
from cityops.core.errors import Invalid, NotFound
from cityops.geo.models import Category, CategoryTimeLimit
from cityops.worktime import service as wt
from cityops.worktime.models import (
    DEFAULT_TIME_LIMITS,
    STAGE_LABELS,
    STAGES,
    CalendarDay,
    package_calendar,
)
from cityops.worktime.schemas import PeriodIO, TimeLimitIn, WorkingHoursIn
from cityops.worktime.service import TimeLimit, WorkClock

TZ = ZoneInfo("Asia/Shanghai")


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=TZ)


@functools.cache
def package_clock() -> WorkClock:
    """A clock straight from the package data (no database), as the migration seeds it."""
    cal = package_calendar()
    exceptions = {d: w for days in cal.values() for d, (w, _name) in days.items()}
    return WorkClock(exceptions, confirmed_years=cal.keys())


@pytest.fixture
def clock(db: Database) -> WorkClock:
    with db.session() as s:
        return wt.get_clock(s)


# --------------------------------------------------------------------------- calendar data


def test_2026_sep_oct_calendar(db: Database) -> None:
    expected = {
        date(2026, 9, 20): ("makeup", "国庆节"),
        date(2026, 9, 25): ("holiday", "中秋"),
        date(2026, 9, 26): ("holiday", "中秋"),
        date(2026, 9, 27): ("holiday", "中秋"),
        **{date(2026, 10, d): ("holiday", "国庆节") for d in range(1, 8)},
        date(2026, 10, 10): ("makeup", "国庆节"),
    }
    # the package itself
    for d, (kind, _) in expected.items():
        assert cc.is_workday(d) == (kind == "makeup")
    with db.session() as s:
        view = wt.year_view(s, 2026)
    assert view.confirmed and view.source == "chinese_calendar"
    assert len(view.days) == 365
    special = {
        x.date: (x.kind, x.name)
        for x in view.days
        if x.date.month in (9, 10) and x.kind in ("holiday", "makeup")
    }
    assert special == expected
    for x in view.days:
        if x.date.month in (9, 10) and x.date not in expected:
            assert x.is_workday == (x.date.weekday() < 5)
            assert x.kind in ("workday", "weekend") and x.source == "default"
    # the year view agrees with the package for every day of 2026
    assert all(x.is_workday == cc.is_workday(x.date) for x in view.days)
    assert view.working_days == sum(1 for x in view.days if cc.is_workday(x.date)) == 248


def test_seeded_years_and_2027_unconfirmed(db: Database) -> None:
    with db.session() as s:
        clock = wt.get_clock(s)
        assert clock.confirmed_years == frozenset(range(2004, 2027))
        y27 = wt.year_view(s, 2027)
    assert not y27.confirmed and y27.source is None
    assert y27.holidays == 0 and y27.working_days == 261  # 2027: 261 weekdays


# --------------------------------------------------------------------------- deadlines


def test_three_working_days_over_national_day(clock: WorkClock) -> None:
    """Sep 30 16:00–18:00 = 120 min; Oct 1–7 off; Oct 8 (Thu) 480; Oct 9 (Fri) 480;
    Oct 10 (Sat, make-up) 240 + 120 → 16:00. 120 + 480 + 480 + 360 = 1440 = 3 × 480."""
    start = at(2026, 9, 30, 16)
    d = clock.deadline(start, TimeLimit(3, "working_days"))
    assert d.due_at == at(2026, 10, 10, 16)
    assert d.due_at.weekday() == 5  # a Saturday: the make-up working day counts
    assert d.calendar_confirmed is True
    assert clock.add(start, 3, "working_days") == at(2026, 10, 10, 16)
    assert clock.elapsed(start, d.due_at) == 1440
    assert clock.elapsed(start, d.due_at, unit="working_days") == 3
    # 1 working day from Friday 2026-09-18 16:00 ends on the make-up Sunday 09-20
    assert clock.add(at(2026, 9, 18, 16), 1, "working_days") == at(2026, 9, 20, 16)
    # 1 working day from Thursday 09-24 16:00 skips Mid-Autumn (Fri–Sun) → Monday 09-28
    assert clock.add(at(2026, 9, 24, 16), 1, "working_days") == at(2026, 9, 28, 16)


def test_working_hours_across_lunch(clock: WorkClock) -> None:
    """Tuesday 2026-09-29. From 11:30: 30 min until 12:00, then 210 min from 14:00 → 17:30.
    From 10:30: 90 min, then 150 from 14:00 → 16:30."""
    assert clock.add(at(2026, 9, 29, 11, 30), 4, "working_hours") == at(2026, 9, 29, 17, 30)
    assert clock.add(at(2026, 9, 29, 10, 30), 4, "working_hours") == at(2026, 9, 29, 16, 30)
    # a deadline exactly at the end of a period is that end, not the next period's start
    assert clock.add(at(2026, 9, 29, 8), 4, "working_hours") == at(2026, 9, 29, 12)
    # a start outside working hours counts from the next working period
    assert clock.add(at(2026, 9, 29, 12, 30), 1, "working_hours") == at(2026, 9, 29, 15)
    assert clock.add(at(2026, 9, 29, 6), 1, "working_hours") == at(2026, 9, 29, 9)
    assert clock.add(at(2026, 9, 30, 19), 1, "working_hours") == at(2026, 10, 8, 9)
    assert clock.next_working_instant(at(2026, 9, 30, 19)) == at(2026, 10, 8, 8)
    assert clock.next_working_instant(at(2026, 9, 29, 12)) == at(2026, 9, 29, 14)
    assert clock.next_working_instant(at(2026, 9, 29, 9)) == at(2026, 9, 29, 9)


def test_utc_inputs_and_outputs(clock: WorkClock) -> None:
    start = datetime(2026, 9, 30, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai
    due = clock.add(start, 3, "working_days")
    assert due == at(2026, 10, 10, 16)
    assert due.tzinfo is UTC and due.hour == 8
    with pytest.raises(Invalid) as e:
        clock.add(datetime(2026, 9, 30, 16), 1, "working_hours")
    assert e.value.details["field"] == "start"


def test_pause_across_weekend(clock: WorkClock) -> None:
    """挂账 from Friday 2026-11-06 16:00 to Monday 2026-11-09 10:00 (no holidays there).

    4 working hours from Friday 14:00 would end Friday 18:00. The pause covers Fri 16–18
    (120) and Mon 08–10 (120) of working time: 120 min are used before it, the other 120
    run from Monday 10:00 → Monday 12:00."""
    fri, mon = at(2026, 11, 6, 14), at(2026, 11, 9, 12)
    assert fri.weekday() == 4 and mon.weekday() == 0
    pause = [(at(2026, 11, 6, 16), at(2026, 11, 9, 10))]
    limit = TimeLimit(4, "working_hours")
    assert clock.deadline(fri, limit).due_at == at(2026, 11, 6, 18)
    d = clock.deadline(fri, limit, pause)
    assert d.due_at == mon and d.calendar_confirmed
    assert clock.elapsed(fri, mon) == 480
    assert clock.elapsed(fri, mon, pause) == 240
    assert clock.elapsed(fri, at(2026, 11, 9, 11), pause) == 180
    # 临期 at 80% = 192 min: 120 before the pause, 72 after Monday 10:00 → 11:12
    assert clock.warning_at(fri, limit, pause) == at(2026, 11, 9, 11, 12)
    # or "30 minutes left" = 210 min used: 120 before the pause, 90 after → Monday 11:30
    assert clock.warning_at(fri, limit, pause, left=0.5) == at(2026, 11, 9, 11, 30)
    p = clock.progress(fri, limit, at(2026, 11, 9, 11), pause)
    assert (p.used, p.remaining, p.state) == (3.0, 1.0, "normal")
    assert clock.progress(fri, limit, at(2026, 11, 9, 11, 30), pause).state == "warning"
    assert clock.progress(fri, limit, at(2026, 11, 7, 9), pause).state == "paused"
    over = clock.progress(fri, limit, at(2026, 11, 9, 12, 30), pause)  # lunch after the deadline
    assert over.state == "overdue" and over.used == 4.0 and over.state_label == "超期"
    # a pause after the deadline changes nothing
    late = [(at(2026, 11, 6, 18, 30), at(2026, 11, 9, 10))]
    assert clock.deadline(fri, limit, late).due_at == at(2026, 11, 6, 18)
    # an open pause (still 挂账) stops the clock: no deadline yet
    open_pause = [(at(2026, 11, 6, 16), None)]
    assert clock.deadline(fri, limit, open_pause).due_at is None
    assert clock.elapsed(fri, at(2026, 11, 20, 9), open_pause) == 120
    # overlapping and unsorted pauses are merged
    messy = [(at(2026, 11, 9, 8), at(2026, 11, 9, 10)), (at(2026, 11, 6, 16), at(2026, 11, 9, 9))]
    assert clock.deadline(fri, limit, messy).due_at == mon
    with pytest.raises(Invalid):
        clock.deadline(fri, limit, [(at(2026, 11, 9, 10), at(2026, 11, 6, 16))])


def test_year_without_data_then_admin_confirms(db: Database) -> None:
    """2027 (no package data): Monday–Friday fallback, so Friday 2027-10-01 counts.
    Thursday 09-30 16:00 + 3 working days: Thu 120, Fri 480, Mon 480, Tue 360 → Tue 10-05 16:00.
    After the admin marks 10-01 as 国庆节: Thu 120, Mon 480, Tue 480, Wed 360 → Wed 10-06 16:00."""
    start = at(2027, 9, 30, 16)
    limit = TimeLimit(3, "working_days")
    with db.session() as s:
        d = wt.get_clock(s).deadline(start, limit)
    assert d.due_at == at(2027, 10, 5, 16) and d.calendar_confirmed is False
    # a 2026 start whose deadline reaches into 2027 is unconfirmed too (2027-01-01 counts)
    with db.session() as s:
        d2 = wt.get_clock(s).deadline(at(2026, 12, 31, 16), TimeLimit(1, "working_days"))
    assert d2.due_at == at(2027, 1, 1, 16) and d2.calendar_confirmed is False

    current_actor.set(Actor(7, "city-admin"))
    try:
        with db.session() as s:
            change = wt.set_day(s, date(2027, 10, 1), False, "国庆节")
            assert change.day.kind == "holiday" and change.year_confirmed is False
            d = wt.get_clock(s).deadline(start, limit)  # same transaction sees the change
            assert d.due_at == at(2027, 10, 6, 16) and d.calendar_confirmed is False
        with db.session() as s:
            view = wt.confirm_year(s, 2027)
            assert view.confirmed and view.confirmed_by == "city-admin"
        with db.session() as s:
            d = wt.get_clock(s).deadline(start, limit)
            audit = s.execute(
                select(AuditLog).where(AuditLog.entity.in_(["calendar_days", "calendar_years"]))
            ).scalars()
            rows = [(a.action, a.entity, a.actor_name) for a in audit]
    finally:
        current_actor.set(Actor(None, "system"))
    assert d.due_at == at(2027, 10, 6, 16) and d.calendar_confirmed is True
    assert ("create", "calendar_days", "city-admin") in rows
    assert ("update", "calendar_years", "city-admin") in rows


def test_working_hours_valid_from_switch(db: Database) -> None:
    """Summer hours 08:00–12:00, 14:30–18:30 (also 480 min) from 2026-05-01.
    * Wed 2026-05-06 11:30 + 4 working hours: 30 min, then 210 from 14:30 → 18:00
      (17:30 under the default hours).
    * Thu 2026-04-30 16:00 + 1 working day (480): 120 on Apr 30 (old hours), May 1–5 off,
      May 6: 240 in the morning, 120 from 14:30 → 16:30.
    * 2026-05-06 14:15 is lunch in summer, working time before."""
    with db.session() as s:
        before = wt.get_clock(s)
        assert before.add(at(2026, 5, 6, 11, 30), 4, "working_hours") == at(2026, 5, 6, 17, 30)
        out = wt.replace_working_hours(
            s,
            [
                WorkingHoursIn(
                    valid_from=date(2000, 1, 1),
                    periods=[
                        PeriodIO(start="08:00", end="12:00"),
                        PeriodIO(start="14:00", end="18:00"),
                    ],
                ),
                WorkingHoursIn(
                    valid_from=date(2026, 5, 1),
                    periods=[
                        PeriodIO(start="08:00", end="12:00"),
                        PeriodIO(start="14:30", end="18:30"),
                    ],
                    note="夏季作息",
                ),
            ],
        )
        assert [o.minutes_per_day for o in out] == [480, 480]
    with db.session() as s:
        clock = wt.get_clock(s)
    assert clock is not before
    assert clock.add(at(2026, 5, 6, 11, 30), 4, "working_hours") == at(2026, 5, 6, 18)
    assert clock.add(at(2026, 4, 30, 16), 1, "working_days") == at(2026, 5, 6, 16, 30)
    assert clock.elapsed(at(2026, 4, 30, 16), at(2026, 5, 6, 16, 30)) == 480
    assert not clock.is_working_time(at(2026, 5, 6, 14, 15))
    assert clock.is_working_time(at(2026, 4, 29, 14, 15))
    assert clock.periods_on(date(2026, 5, 6)) == [("08:00", "12:00"), ("14:30", "18:30")]
    assert clock.periods_on(date(2026, 5, 1)) == []  # Labour Day

    with db.session() as s, pytest.raises(Invalid) as e:
        wt.set_working_hours(s, date(2026, 10, 1), [("08:00", "12:00"), ("11:00", "13:00")])
    assert e.value.details["field"] == "periods"
    with db.session() as s, pytest.raises(Invalid):
        wt.set_working_hours(s, date(2026, 10, 1), [("8:00", "12:00")])
    # a shorter day changes what a working day is
    with db.session() as s:
        wt.set_working_hours(s, date(2026, 10, 1), [("09:00", "12:00"), ("13:00", "17:00")])
        clock = wt.get_clock(s)
    assert clock.minutes_per_day(date(2026, 10, 8)) == 420
    # 420 minutes from 10:00: 120 + 180 on Oct 8, 60 + 60 on Oct 9 → 10:00
    assert clock.add(at(2026, 10, 8, 10), 1, "working_days") == at(2026, 10, 9, 10)
    # a whole day from its first minute ends at its last, not at 09:00 the next day
    assert clock.add(at(2026, 10, 8, 9), 1, "working_days") == at(2026, 10, 8, 17)


def test_natural_time_limits(clock: WorkClock) -> None:
    # natural time ignores the calendar: a National Day night
    assert clock.add(at(2026, 10, 3, 23, 50), 30, "natural_minutes") == at(2026, 10, 4, 0, 20)
    d = clock.deadline(at(2026, 10, 3, 23), TimeLimit(2, "natural_hours"))
    assert d.due_at == at(2026, 10, 4, 1) and d.calendar_confirmed is True
    # 2027 has no calendar data, but natural time does not need it
    assert clock.deadline(at(2027, 5, 1, 9), TimeLimit(10, "natural_minutes")).calendar_confirmed
    # a pause stops natural time too: 1 h from 10:00, paused 10:20–10:50 → 11:30
    pause = [(at(2026, 10, 3, 10, 20), at(2026, 10, 3, 10, 50))]
    assert clock.deadline(at(2026, 10, 3, 10), TimeLimit(1, "natural_hours"), pause).due_at == (
        at(2026, 10, 3, 11, 30)
    )
    assert (
        clock.elapsed(at(2026, 10, 3, 10), at(2026, 10, 3, 11, 30), pause, "natural_minutes") == 60
    )
    assert clock.elapsed(at(2026, 10, 3, 10), at(2026, 10, 3, 11, 30), unit="natural_hours") == 1.5


def test_elapsed_across_holidays(clock: WorkClock) -> None:
    # Wed 09-30 09:00–12:00 (180) + 14:00–18:00 (240), Oct 1–7 off, Thu 10-08 08:00–10:00 (120)
    assert clock.elapsed(at(2026, 9, 30, 9), at(2026, 10, 8, 10)) == 540
    assert clock.elapsed(at(2026, 9, 30, 9), at(2026, 10, 8, 10), unit="working_hours") == 9
    # Thu 09-24 17:00–18:00 (60), Mid-Autumn Fri–Sun off, Mon 09-28 08:00–09:00 (60)
    assert clock.elapsed(at(2026, 9, 24, 17), at(2026, 9, 28, 9)) == 120
    # entirely inside the holiday: nothing
    assert clock.elapsed(at(2026, 10, 2, 9), at(2026, 10, 6, 17)) == 0
    # the make-up Saturday counts in full
    assert clock.elapsed(at(2026, 10, 10, 0), at(2026, 10, 11, 0)) == 480
    assert clock.elapsed(at(2026, 10, 8, 10), at(2026, 10, 8, 9)) == 0  # end before start


def test_clock_errors(clock: WorkClock) -> None:
    with pytest.raises(Invalid):
        clock.add(at(2026, 1, 5, 9), -1, "working_hours")
    with pytest.raises(Invalid) as e:
        clock.add(at(2026, 1, 5, 9), 1, "working_weeks")
    assert e.value.details == {"field": "unit", "value": "working_weeks"}
    with pytest.raises(Invalid):
        clock.add(at(2100, 1, 5, 9), 1, "working_hours")
    with pytest.raises(Invalid):
        clock.add(at(2099, 12, 31, 9), 10, "working_days")
    with pytest.raises(Invalid):
        TimeLimit(float("nan"), "working_hours")


# --------------------------------------------------------------------------- properties

_starts = st.datetimes(
    min_value=datetime(2004, 1, 1), max_value=datetime(2026, 12, 31, 23, 59), timezones=st.just(TZ)
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=_starts, minutes=st.integers(min_value=0, max_value=60 * 480))
def test_property_add_then_elapsed(start: datetime, minutes: int) -> None:
    clock = package_clock()
    due = clock.add(start, minutes, "working_minutes")
    assert due >= start
    assert clock.elapsed(start, due) == minutes
    if minutes:
        # the deadline is in working time or at the end of a period, never in a gap
        assert clock.elapsed(start, due - timedelta(microseconds=1)) < minutes
    assert clock.add(start, minutes + 1, "working_minutes") > due


@settings(max_examples=200, deadline=None)
@given(
    start=_starts,
    amount=st.floats(min_value=0, max_value=20, allow_nan=False),
    unit=st.sampled_from(["working_hours", "working_days", "natural_hours", "natural_minutes"]),
)
def test_property_units_round_trip(start: datetime, amount: float, unit: str) -> None:
    clock = package_clock()
    due = clock.add(start, amount, unit)
    assert due >= start
    # the clock resolves to one microsecond
    assert clock.elapsed(start, due, unit=unit) == pytest.approx(amount, abs=1e-7)


@settings(max_examples=200, deadline=None)
@given(
    start=_starts,
    minutes=st.integers(min_value=1, max_value=10 * 480),
    gaps=st.lists(st.tuples(st.integers(0, 20 * 24 * 60), st.integers(0, 5 * 24 * 60)), max_size=4),
)
def test_property_deadline_with_pauses(
    start: datetime, minutes: int, gaps: list[tuple[int, int]]
) -> None:
    clock = package_clock()
    pauses: list[tuple[datetime, datetime | None]] = [
        (start + timedelta(minutes=a), start + timedelta(minutes=a + b)) for a, b in gaps
    ]
    d = clock.deadline(start, TimeLimit(minutes, "working_minutes"), pauses)
    assert d.due_at is not None and d.due_at >= clock.add(start, minutes, "working_minutes")
    assert clock.elapsed(start, d.due_at, pauses) == minutes


def test_package_clock_matches_package() -> None:
    clock = package_clock()
    d = date(2004, 1, 1)
    while d <= date(2026, 12, 31):
        assert clock.is_workday(d) == cc.is_workday(d), d
        assert clock.working_minutes_on(d) == (480 if cc.is_workday(d) else 0)
        d += timedelta(days=1)


def test_deadline_is_fast(db: Database) -> None:
    """A deadline costs microseconds (the intake benchmark needs ≥ 1,000 cases/s)."""
    with db.session() as s:
        clock = wt.get_clock(s)
        limit = TimeLimit(4, "working_hours")
        starts = [
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=37 * i) for i in range(20000)
        ]
        t0 = time.perf_counter()
        for x in starts:
            clock.deadline(x, limit)
        per_call = (time.perf_counter() - t0) / len(starts)
        t0 = time.perf_counter()
        for _ in range(2000):
            wt.get_clock(s)
        per_get = (time.perf_counter() - t0) / 2000
    print(f"deadline: {per_call * 1e6:.1f} µs, get_clock: {per_get * 1e6:.2f} µs")
    assert per_call < 100e-6
    assert per_get < 100e-6


# --------------------------------------------------------------------------- calendar edits


def test_set_day_and_back(db: Database) -> None:
    with db.session() as s:
        # a weekday off (no name) and back to the rule: nothing stored in the end
        assert wt.set_day(s, date(2026, 11, 11), False).day.kind == "holiday"
        assert s.get(CalendarDay, date(2026, 11, 11)) is not None
        assert wt.set_day(s, date(2026, 11, 11), True).day.kind == "workday"
        assert s.get(CalendarDay, date(2026, 11, 11)) is None
        # a Saturday worked is a make-up day; a named weekend day off is a holiday
        sat = wt.set_day(s, date(2026, 11, 14), True, "  局部调休 ")
        assert (sat.day.kind, sat.day.name, sat.day.source) == ("makeup", "局部调休", "admin")
        assert wt.get_day(s, date(2026, 11, 15)).kind == "weekend"
        assert wt.get_clock(s).is_workday(date(2026, 11, 14))
        # a confirmed year stays confirmed after a correction
        assert sat.year_confirmed is True
        with pytest.raises(Invalid):
            wt.set_day(s, date(2100, 1, 1), False)
        with pytest.raises(Invalid):
            wt.year_view(s, 1999)


def test_seed_is_idempotent_and_keeps_admin_days(db: Database) -> None:
    with db.session() as s:
        again = wt.seed(s)
        assert again["calendar"]["added"] == again["calendar"]["updated"] == 0
        assert again["working_hours"] == again["time_limit_defaults"] == 0
        wt.set_day(s, date(2026, 10, 8), False, "地方假日")
        wt.set_day(s, date(2026, 10, 10), False)  # the make-up Saturday, changed by the admin
    with db.session() as s:
        kept = wt.seed(s)["calendar"]
        assert kept["kept_admin"] == 2 and kept["updated"] == kept["removed"] == 0
        assert not wt.get_clock(s).is_workday(date(2026, 10, 10))
        forced = wt.seed(s, overwrite=True)["calendar"]
        assert forced["updated"] == 1 and forced["removed"] == 1
        clock = wt.get_clock(s)
        assert clock.is_workday(date(2026, 10, 10)) and clock.is_workday(date(2026, 10, 8))


def test_clock_cache_sees_other_process(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process (here: another engine) changes the calendar; this one notices once
    its refresh interval has passed."""
    other = Database(db.url)
    try:
        with db.session() as s:
            first = wt.get_clock(s)
            assert wt.get_clock(s) is first
        with other.session() as s:
            wt.set_day(s, date(2026, 12, 1), False, "测试")
        with db.session() as s:
            assert wt.get_clock(s).is_workday(date(2026, 12, 1))  # within the refresh interval
        from cityops.core.settings import get_settings

        monkeypatch.setattr(get_settings(), "index_refresh_seconds", 0.0)
        with db.session() as s:
            assert not wt.get_clock(s).is_workday(date(2026, 12, 1))
    finally:
        other.dispose()


# --------------------------------------------------------------------------- time limits


def test_default_limits_seeded(db: Database) -> None:
    with db.session() as s:
        limits = wt.list_default_limits(s)
    assert [(x.stage, x.urgency, x.amount, x.unit) for x in limits] == sorted(
        [(a, b, float(c), d) for a, b, c, d in DEFAULT_TIME_LIMITS],
        key=lambda r: (
            STAGES.index(r[0]),
            -1 if r[1] is None else ("特急", "紧急", "一般").index(r[1]),
        ),
    )
    assert {x.stage for x in limits} == set(STAGES)
    assert limits[0].stage_label == STAGE_LABELS["accept"] == "受理"


def test_resolve_order(db: Database) -> None:
    with db.session() as s:
        cat = Category(
            standard="local", kind="matter", code="0101", big_class_code="01",
            big_class_name="市容环境", name="暴露垃圾",
        )  # fmt: skip
        other = Category(
            standard="local", kind="matter", code="0102", big_class_code="01",
            big_class_name="市容环境", name="道路不洁",
        )  # fmt: skip
        s.add_all([cat, other])
        s.flush()
        s.add_all(
            [
                CategoryTimeLimit(category_id=cat.id, stage="handle", urgency=None, amount=4, unit="working_hours"),
                CategoryTimeLimit(category_id=cat.id, stage="handle", urgency="特急", amount=1, unit="natural_hours"),
            ]
        )  # fmt: skip
        s.flush()

        def r(stage: str, cid: int | None, urgency: str | None) -> tuple[str, float, str]:
            x = wt.resolve_limit(s, stage, cid, urgency)
            return (x.source, x.limit.amount, x.limit.unit)

        assert r("handle", cat.id, "特急") == ("category_urgency", 1, "natural_hours")
        assert r("handle", cat.id, "一般") == ("category", 4, "working_hours")
        assert r("handle", cat.id, None) == ("category", 4, "working_hours")
        assert r("handle", other.id, "特急") == ("default_urgency", 2, "natural_hours")
        assert r("dispatch", cat.id, "紧急") == ("default_urgency", 10, "natural_minutes")
        assert r("dispatch", None, "一般") == ("default", 30, "natural_minutes")
        assert r("accept", None, None) == ("default", 0.5, "working_days")
        out = wt.resolve_limit(s, "handle", other.id, "特急").out()
        assert out.stage_label == "处置" and out.unit_label == "自然小时"

        with pytest.raises(NotFound):
            wt.resolve_limit(s, "handle", 987654, None)
        with pytest.raises(Invalid) as e:
            wt.resolve_limit(s, "repair", None, None)
        assert e.value.details == {"field": "stage", "value": "repair"}
        with pytest.raises(Invalid):
            wt.resolve_limit(s, "handle", None, "急")

        resolved, deadline = wt.stage_deadline(s, "handle", at(2026, 9, 29, 11, 30), cat.id, "一般")
        assert resolved.source == "category"
        assert deadline.due_at == at(2026, 9, 29, 17, 30)


def test_replace_default_limits(db: Database) -> None:
    items = [TimeLimitIn(stage=s, urgency=None, amount=1, unit="working_hours") for s in STAGES]
    with db.session() as s:
        with pytest.raises(Invalid) as e:
            wt.replace_default_limits(s, items[1:])
        assert e.value.details["value"] == ["accept"]
        with pytest.raises(Invalid):
            wt.replace_default_limits(s, [*items, items[0]])
        with pytest.raises(Invalid) as e:
            wt.replace_default_limits(
                s, [*items, TimeLimitIn(stage="file", urgency="特急", amount=5, unit="minutes")]
            )
        assert e.value.details["field"] == "unit"
        with pytest.raises(Invalid):
            wt.replace_default_limits(
                s,
                [
                    *items,
                    TimeLimitIn(stage="file", urgency="特急", amount=0, unit="natural_minutes"),
                ],
            )
    with db.session() as s:
        new = wt.replace_default_limits(
            s, [*items, TimeLimitIn(stage="file", urgency="特急", amount=5, unit="natural_minutes")]
        )
        assert len(new) == len(STAGES) + 1
    with db.session() as s:
        assert wt.resolve_limit(s, "file", None, "特急").limit == TimeLimit(5, "natural_minutes")
        assert wt.resolve_limit(s, "file", None, "紧急").limit == TimeLimit(1, "working_hours")
        assert wt.resolve_limit(s, "accept", None, None).limit == TimeLimit(1, "working_hours")

"""The working-time clock (工作时间 / 计时): calendar, working hours, time limits, deadlines.

The clock
---------
:class:`WorkClock` is an in-memory snapshot of the calendar and the working hours for
2000–2099. It maps every instant to its **working position**: the number of working
microseconds since 2000-01-01 00:00 (Asia/Shanghai). The position is flat outside working
periods (nights, lunch, weekends, holidays). With a prefix sum per day (``cum``) and the
day's periods, ``position(t)`` costs a few additions, and the earliest instant reaching a
position is one ``bisect`` plus a walk over the day's periods — no loop over days or
minutes, so a deadline costs microseconds.

* ``elapsed(a, b) = position(b) − position(a)`` (minus the working time inside pauses);
* ``add(start, x)`` = the earliest instant ``t ≥ start`` with ``position(t) ≥ position(start) + x``.
  A start outside working time therefore counts from the next working period's start, and a
  deadline that falls exactly on the end of a period is that end (12:00, not 14:00).
* A working day is the working minutes of a day under the hours in effect on the start's
  date (480 by default), so N working days end at the same wall time N working days later.
* Natural units ignore the calendar (plain elapsed time, pauses excluded).

Every result that depends on a year without confirmed calendar data (Monday–Friday fallback)
carries ``calendar_confirmed=False``.

The snapshot is cached per database engine and keyed by a version token
(``city_settings['worktime_version']``). Every write here replaces the token in the same
transaction; this process drops its snapshot at once (and again at commit), other processes
notice within ``CITYOPS_INDEX_REFRESH_SECONDS``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import uuid
import weakref
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import cityops.models  # noqa: F401  (every mapper configured: Grid → User …)
from cityops.core.audit import current_actor
from cityops.core.errors import Invalid, NotFound
from cityops.core.settings import get_settings
from cityops.geo.models import URGENCIES, Category, CategoryTimeLimit, CitySetting
from cityops.worktime.models import (
    CLOCK_UNITS,
    DAY_KIND_LABELS,
    DEFAULT_HOURS_FROM,
    DEFAULT_PERIODS,
    DEFAULT_TIME_LIMITS,
    LIMIT_UNITS,
    MAX_YEAR,
    MIN_YEAR,
    SOURCE_ADMIN,
    SOURCE_PACKAGE,
    STAGE_LABELS,
    STAGES,
    UNIT_LABELS,
    CalendarDay,
    CalendarYear,
    TimeLimitDefault,
    WorkingHours,
    package_calendar,
)
from cityops.worktime.schemas import (
    CalendarDayChange,
    CalendarDayOut,
    CalendarYearOut,
    PeriodIO,
    ResolvedLimitOut,
    TimeLimitIn,
    TimeLimitOut,
    WorkingHoursIn,
    WorkingHoursOut,
)

#: Wall clock of working hours and calendar dates.
TZ = ZoneInfo("Asia/Shanghai")

_US = 1_000_000
_US_MIN = 60 * _US
_US_HOUR = 60 * _US_MIN
_US_DAY = 24 * _US_HOUR
_BASE = date(MIN_YEAR, 1, 1).toordinal()
_LAST = date(MAX_YEAR, 12, 31).toordinal()
_NDAYS = _LAST - _BASE + 1
_NATURAL_US = {"natural_minutes": _US_MIN, "natural_hours": _US_HOUR}
_WORKING_US = {"working_minutes": _US_MIN, "working_hours": _US_HOUR}

#: States of a running limit.
STATE_LABELS = {"normal": "正常", "warning": "临期", "overdue": "超期", "paused": "暂停"}

Pause = tuple[datetime, datetime | None]


# --------------------------------------------------------------------------- small helpers


def parse_hhmm(value: str, field: str = "time") -> int:
    """``"08:30"`` → 510 minutes after midnight (``"24:00"`` allowed as an end)."""
    try:
        hh, mm = value.split(":")
        h, m = int(hh), int(mm)
    except (AttributeError, ValueError):
        raise Invalid(f"{field} must be HH:MM, not {value!r}", field=field, value=value) from None
    if len(hh) != 2 or len(mm) != 2 or not (0 <= m < 60) or not (0 <= h < 24 or (h, m) == (24, 0)):
        raise Invalid(f"{field} must be HH:MM, not {value!r}", field=field, value=value)
    return h * 60 + m


def format_hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def check_periods(periods: Sequence[Any], field: str = "periods") -> list[tuple[int, int]]:
    """Validate working periods (``[("08:00", "12:00"), …]`` or :class:`PeriodIO`) → minutes.

    At least one period; each starts before it ends; sorted and not overlapping.
    """
    out: list[tuple[int, int]] = []
    if not periods:
        raise Invalid("at least one working period is needed", field=field, value=[])
    for i, p in enumerate(periods):
        s_txt: Any
        e_txt: Any
        if isinstance(p, PeriodIO):
            s_txt, e_txt = p.start, p.end
        elif isinstance(p, Mapping):
            s_txt, e_txt = p.get("start"), p.get("end")
        else:
            try:
                s_txt, e_txt = p
            except (TypeError, ValueError):
                raise Invalid(
                    f"{field}[{i}] must be a (start, end) pair", field=field, value=p
                ) from None
        s = parse_hhmm(str(s_txt), f"{field}[{i}].start")
        e = parse_hhmm(str(e_txt), f"{field}[{i}].end")
        if s >= e:
            raise Invalid(
                f"{field}[{i}]: {s_txt}–{e_txt} does not end after it starts",
                field=field,
                value=[s_txt, e_txt],
            )
        if out and s < out[-1][1]:
            raise Invalid(
                f"{field}[{i}]: {s_txt}–{e_txt} overlaps or precedes the previous period",
                field=field,
                value=[s_txt, e_txt],
            )
        out.append((s, e))
    return out


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise Invalid(
            f"unknown stage {stage!r}; one of {', '.join(STAGES)}", field="stage", value=stage
        )
    return stage


def check_urgency(urgency: str | None) -> str | None:
    if urgency is not None and urgency not in URGENCIES:
        raise Invalid(
            f"unknown urgency {urgency!r}; one of {', '.join(URGENCIES)}",
            field="urgency",
            value=urgency,
        )
    return urgency


def check_unit(unit: str, allowed: Sequence[str] = LIMIT_UNITS) -> str:
    if unit not in allowed:
        raise Invalid(
            f"unknown unit {unit!r}; one of {', '.join(allowed)}", field="unit", value=unit
        )
    return unit


def check_amount(amount: float, field: str = "amount", allow_zero: bool = True) -> float:
    try:
        x = float(amount)
    except (TypeError, ValueError):
        raise Invalid(f"{field} must be a number", field=field, value=amount) from None
    if not math.isfinite(x) or x < 0 or (x == 0 and not allow_zero):
        raise Invalid(
            f"{field} must be a {'non-negative' if allow_zero else 'positive'} finite number",
            field=field,
            value=amount,
        )
    return x


def check_year(year: int) -> int:
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise Invalid(
            f"year {year} is outside the supported range {MIN_YEAR}–{MAX_YEAR}",
            field="year",
            value=year,
        )
    return year


def _aware(t: datetime, field: str) -> datetime:
    if not isinstance(t, datetime):
        raise Invalid(f"{field} must be a datetime", field=field, value=str(t))
    if t.tzinfo is None or t.utcoffset() is None:
        raise Invalid(
            f"{field} must be timezone-aware (got the naive {t.isoformat()})",
            field=field,
            value=t.isoformat(),
        )
    return t


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """A time limit: ``amount`` of ``unit`` (natural_minutes … working_days)."""

    amount: float
    unit: str

    def __post_init__(self) -> None:
        check_unit(self.unit, CLOCK_UNITS)
        check_amount(self.amount)

    @property
    def natural(self) -> bool:
        return self.unit.startswith("natural")

    def label(self) -> str:
        amount = int(self.amount) if float(self.amount).is_integer() else self.amount
        return f"{amount} {UNIT_LABELS[self.unit]}"


@dataclass(frozen=True, slots=True)
class Deadline:
    """A deadline; ``due_at`` is None while an open pause stops the clock."""

    due_at: datetime | None
    calendar_confirmed: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """How much of a limit is used at ``now`` (amounts in the limit's unit)."""

    used: float
    limit: float
    fraction: float
    remaining: float
    #: normal | warning (临期) | overdue (超期) | paused
    state: str
    due_at: datetime | None
    warn_at: datetime | None
    calendar_confirmed: bool

    @property
    def state_label(self) -> str:
        return STATE_LABELS[self.state]


# --------------------------------------------------------------------------- the clock


class WorkClock:
    """In-memory calendar + working hours for 2000–2099 (see the module docstring).

    ``exceptions`` maps dates to working/not working where they differ from Monday–Friday
    (extra entries equal to the rule are harmless); ``hours`` is ``[(valid_from, [(start_min,
    end_min), …]), …]`` — the earliest entry also applies before its date; ``confirmed_years``
    are the years with official calendar data.
    """

    def __init__(
        self,
        exceptions: Mapping[date, bool] | None = None,
        confirmed_years: Iterable[int] = (),
        hours: Sequence[tuple[date, Sequence[tuple[int, int]]]] | None = None,
        default_limits: Mapping[tuple[str, str | None], TimeLimit] | None = None,
        version: str = "",
    ) -> None:
        self.version = version
        #: (category id, stage, urgency or None) → limit (from category_time_limits)
        self.category_limits: dict[tuple[int, str, str | None], TimeLimit] = {}
        #: category ids seen to exist (saves a lookup per deadline)
        self.known_categories: set[int] = set()
        self.confirmed_years = frozenset(confirmed_years)
        self.default_limits = dict(default_limits or {})
        if not hours:
            hours = [
                (DEFAULT_HOURS_FROM, [(parse_hhmm(a), parse_hhmm(b)) for a, b in DEFAULT_PERIODS])
            ]
        sched = sorted(hours, key=lambda h: h[0])
        self._switch = [d.toordinal() for d, _ in sched]
        self._sched_periods = [
            tuple((s * _US_MIN, e * _US_MIN) for s, e in periods) for _, periods in sched
        ]
        self._sched_len = [sum(e - s for s, e in p) for p in self._sched_periods]
        self.hours = [(d, [tuple(p) for p in periods]) for d, periods in sched]
        exc = {d.toordinal(): bool(w) for d, w in (exceptions or {}).items()}

        cum = [0] * (_NDAYS + 1)
        day_periods: list[tuple[tuple[int, int], ...]] = [()] * _NDAYS
        k = 0  # index of the schedule in effect
        nxt = self._switch[1] if len(self._switch) > 1 else _LAST + 1
        periods, length = self._sched_periods[0], self._sched_len[0]
        total = 0
        get = exc.get
        for i in range(_NDAYS):
            o = _BASE + i
            while o >= nxt:
                k += 1
                periods, length = self._sched_periods[k], self._sched_len[k]
                nxt = self._switch[k + 1] if k + 1 < len(self._switch) else _LAST + 1
            w = get(o)
            if w is None:
                w = (o - 1) % 7 < 5  # ordinal 1 (0001-01-01) is a Monday
            if w:
                day_periods[i] = periods
                total += length
            cum[i + 1] = total
        self._cum = cum
        self._periods = day_periods

    # ---- calendar queries

    def is_workday(self, d: date) -> bool:
        return bool(self._periods[self._index(d.toordinal(), d)])

    def working_minutes_on(self, d: date) -> float:
        i = self._index(d.toordinal(), d)
        return (self._cum[i + 1] - self._cum[i]) / _US_MIN

    def periods_on(self, d: date) -> list[tuple[str, str]]:
        i = self._index(d.toordinal(), d)
        return [(format_hhmm(s // _US_MIN), format_hhmm(e // _US_MIN)) for s, e in self._periods[i]]

    def minutes_per_day(self, d: date) -> float:
        """Working minutes of a working day under the hours in effect on ``d``."""
        k = max(bisect_right(self._switch, d.toordinal()) - 1, 0)
        return self._sched_len[k] / _US_MIN

    def year_confirmed(self, year: int) -> bool:
        return year in self.confirmed_years

    def confirmed(self, start: datetime, end: datetime) -> bool:
        """Whether every year from ``start`` to ``end`` (local dates) has confirmed data."""
        y0 = start.astimezone(TZ).year
        y1 = end.astimezone(TZ).year
        if y1 < y0:
            y0, y1 = y1, y0
        cy = self.confirmed_years
        return all(y in cy for y in range(y0, y1 + 1))

    def is_working_time(self, t: datetime) -> bool:
        loc = _aware(t, "t").astimezone(TZ)
        i = self._index(loc.toordinal(), loc)
        us = ((loc.hour * 60 + loc.minute) * 60 + loc.second) * _US + loc.microsecond
        return any(s <= us < e for s, e in self._periods[i])

    def next_working_instant(self, t: datetime) -> datetime:
        """``t`` itself in working time, else the start of the next working period."""
        if self.is_working_time(t):
            return t
        p = self._pos(t.astimezone(TZ))
        # The first microsecond of working time after t ends at position p + 1.
        return (self._local_at(p + 1) - timedelta(microseconds=1)).astimezone(t.tzinfo)

    # ---- core arithmetic (microseconds)

    @staticmethod
    def _index(o: int, what: object) -> int:
        i = o - _BASE
        if not 0 <= i < _NDAYS:
            raise Invalid(
                f"{what} is outside the working-time calendar ({MIN_YEAR}–{MAX_YEAR})",
                field="date",
                value=str(what),
            )
        return i

    def _pos(self, loc: datetime) -> int:
        """Working position of a local (Asia/Shanghai) datetime."""
        i = self._index(loc.toordinal(), loc)
        us = ((loc.hour * 60 + loc.minute) * 60 + loc.second) * _US + loc.microsecond
        acc = self._cum[i]
        for s, e in self._periods[i]:
            if us <= s:
                break
            acc += (e if us > e else us) - s
        return acc

    def _local_at(self, target: int) -> datetime:
        """Earliest local instant whose working position is ``target`` (> 0)."""
        cum = self._cum
        if target > cum[-1]:
            raise Invalid(
                f"the result falls after {MAX_YEAR}: outside the working-time calendar",
                field="amount",
                value=target / _US_MIN,
            )
        i = bisect_left(cum, target) - 1
        if i < 0:
            i = 0
        rem = target - cum[i]
        us = 0
        for s, e in self._periods[i]:
            n = e - s
            if rem <= n:
                us = s + rem
                break
            rem -= n
        if us >= _US_DAY:  # a period ending at 24:00
            i, us = i + 1, us - _US_DAY
        d = date.fromordinal(_BASE + i)
        sec, micro = divmod(us, _US)
        mins, sec = divmod(sec, 60)
        hh, mins = divmod(mins, 60)
        return datetime(d.year, d.month, d.day, hh, mins, sec, micro, tzinfo=TZ)

    def _scale(self, unit: str, loc: datetime) -> int:
        """Microseconds of one ``unit`` (working days: the day length on ``loc``'s date)."""
        us = _WORKING_US.get(unit) or _NATURAL_US.get(unit)
        if us is not None:
            return us
        if unit == "working_days":
            k = bisect_right(self._switch, loc.toordinal()) - 1
            return self._sched_len[k if k > 0 else 0]
        check_unit(unit, CLOCK_UNITS)
        raise AssertionError(unit)  # pragma: no cover

    @staticmethod
    def _merge(
        start: datetime, pauses: Iterable[Pause], end: datetime | None = None
    ) -> list[tuple[datetime, datetime | None]]:
        """Pauses clipped to ``[start, end]``, sorted and merged (None = open)."""
        items: list[tuple[datetime, datetime | None]] = []
        for n, (ps, pe) in enumerate(pauses):
            _aware(ps, f"pauses[{n}].start")
            if pe is not None:
                _aware(pe, f"pauses[{n}].end")
                if pe < ps:
                    raise Invalid(
                        f"pauses[{n}] ends before it starts",
                        field="pauses",
                        value=[ps.isoformat(), pe.isoformat()],
                    )
                if pe <= start:
                    continue
            if ps < start:
                ps = start
            if end is not None:
                if ps >= end:
                    continue
                if pe is None or pe > end:
                    pe = end
            items.append((ps, pe))
        items.sort(key=lambda x: x[0])
        merged: list[tuple[datetime, datetime | None]] = []
        for ps, pe in items:
            if merged:
                ms, me = merged[-1]
                if me is None:
                    break
                if ps <= me:
                    merged[-1] = (ms, None if pe is None else max(me, pe))
                    continue
            merged.append((ps, pe))
        return merged

    # ---- public arithmetic

    def add(self, start: datetime, amount: float, unit: str = "working_minutes") -> datetime:
        """The instant ``amount`` ``unit`` after ``start`` (no pauses)."""
        _aware(start, "start")
        if unit in _NATURAL_US:
            return start + timedelta(microseconds=round(check_amount(amount) * _NATURAL_US[unit]))
        loc = start.astimezone(TZ)
        x = round(check_amount(amount) * self._scale(unit, loc))
        if x == 0:
            return start
        return self._local_at(self._pos(loc) + x).astimezone(start.tzinfo)

    def elapsed(
        self,
        start: datetime,
        end: datetime,
        pauses: Iterable[Pause] = (),
        unit: str = "working_minutes",
    ) -> float:
        """Time from ``start`` to ``end`` in ``unit``, without the pauses (0 if end ≤ start).

        Working units count only working time (no nights, lunch, weekends, holidays);
        natural units count all time. Open pauses (end None) last until ``end``.
        """
        _aware(start, "start")
        _aware(end, "end")
        check_unit(unit, CLOCK_UNITS)
        if end <= start:
            return 0.0
        merged = self._merge(start, pauses, end)
        if unit in _NATURAL_US:
            us = (end - start) // timedelta(microseconds=1)
            for ps, pe in merged:
                assert pe is not None
                us -= (pe - ps) // timedelta(microseconds=1)
            return us / _NATURAL_US[unit]
        loc = start.astimezone(TZ)
        us = self._pos(end.astimezone(TZ)) - self._pos(loc)
        for ps, pe in merged:
            assert pe is not None
            us -= self._pos(pe.astimezone(TZ)) - self._pos(ps.astimezone(TZ))
        return us / self._scale(unit, loc)

    def deadline(
        self, start: datetime, limit: TimeLimit | tuple[float, str], pauses: Iterable[Pause] = ()
    ) -> Deadline:
        """Deadline of ``limit`` from ``start``, moved later by the time lost in ``pauses``.

        A pause that starts before the (moved) deadline moves it by the working (or, for
        natural units, natural) time it covers; pauses after it change nothing. An open pause
        (end None) that starts before the deadline stops the clock: ``due_at`` is None.
        """
        lim = limit if isinstance(limit, TimeLimit) else TimeLimit(*limit)
        if lim.natural:
            return Deadline(self._due(start, lim.amount, lim.unit, pauses), True)
        due, y0 = self._due_working(start, lim.amount, lim.unit, pauses)
        if due is None:
            return Deadline(None, y0 in self.confirmed_years)
        y1 = due.year
        cy = self.confirmed_years
        confirmed = y0 in cy if y1 == y0 else all(y in cy for y in range(y0, y1 + 1))
        tz = start.tzinfo
        return Deadline(due if tz is TZ else due.astimezone(tz), confirmed)

    def _due(
        self, start: datetime, amount: float, unit: str, pauses: Iterable[Pause]
    ) -> datetime | None:
        """Deadline in ``start``'s timezone (see :meth:`deadline`)."""
        if unit not in _NATURAL_US:
            due, _ = self._due_working(start, amount, unit, pauses)
            return None if due is None else due.astimezone(start.tzinfo)
        _aware(start, "start")
        target = round(check_amount(amount) * _NATURAL_US[unit])
        one = timedelta(microseconds=1)
        for ps, pe in self._merge(start, pauses) if pauses else ():
            p0 = (ps - start) // one
            if p0 >= target:
                break
            if pe is None:
                return None
            target += (pe - ps) // one
        return start + timedelta(microseconds=target)

    def _due_working(
        self, start: datetime, amount: float, unit: str, pauses: Iterable[Pause]
    ) -> tuple[datetime | None, int]:
        """Working-unit deadline as a local (Asia/Shanghai) datetime, and the start's year."""
        _aware(start, "start")
        check_unit(unit, CLOCK_UNITS)
        amount = check_amount(amount)
        loc = start.astimezone(TZ)
        s = self._pos(loc)
        target = s + round(amount * self._scale(unit, loc))
        for ps, pe in self._merge(start, pauses) if pauses else ():
            p0 = self._pos(ps.astimezone(TZ))
            if p0 >= target:
                break
            if pe is None:
                return None, loc.year
            target += self._pos(pe.astimezone(TZ)) - p0
        if target == s:
            return loc, loc.year
        return self._local_at(target), loc.year

    def warning_at(
        self,
        start: datetime,
        limit: TimeLimit | tuple[float, str],
        pauses: Iterable[Pause] = (),
        fraction: float = 0.8,
        left: float | None = None,
    ) -> datetime | None:
        """The 临期 instant, pauses included: when ``fraction`` of the limit is used, or —
        with ``left`` — when only ``left`` (in the limit's unit) remains."""
        lim = limit if isinstance(limit, TimeLimit) else TimeLimit(*limit)
        if left is not None:
            amount = max(lim.amount - check_amount(left, "left"), 0.0)
        elif 0 < fraction <= 1:
            amount = lim.amount * fraction
        else:
            raise Invalid("fraction must be in (0, 1]", field="fraction", value=fraction)
        return self._due(start, amount, lim.unit, pauses)

    def progress(
        self,
        start: datetime,
        limit: TimeLimit | tuple[float, str],
        now: datetime,
        pauses: Iterable[Pause] = (),
        warn_fraction: float = 0.8,
    ) -> Progress:
        """Used share of a limit at ``now``: normal, warning (临期), overdue (超期) or paused."""
        lim = limit if isinstance(limit, TimeLimit) else TimeLimit(*limit)
        pauses = list(pauses)
        used = self.elapsed(start, now, pauses, lim.unit)
        due = self._due(start, lim.amount, lim.unit, pauses)
        warn = self.warning_at(start, lim, pauses, warn_fraction)
        fraction = used / lim.amount if lim.amount else (1.0 if used > 0 else 0.0)
        paused = any(ps <= now and (pe is None or now < pe) for ps, pe in pauses)
        if used > lim.amount or (due is not None and now > due):
            state = "overdue"
        elif paused:
            state = "paused"
        elif fraction >= warn_fraction:
            state = "warning"
        else:
            state = "normal"
        confirmed = True if lim.natural else self.confirmed(start, max(now, due or now))
        return Progress(
            used=used,
            limit=lim.amount,
            fraction=fraction,
            remaining=lim.amount - used,
            state=state,
            due_at=due,
            warn_at=warn,
            calendar_confirmed=confirmed,
        )


# --------------------------------------------------------------------------- cache


VERSION_KEY = "worktime_version"
_DIRTY = "cityops_worktime_dirty"


class _Holder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clock: WorkClock | None = None
        self.checked_at = -math.inf


_holders: weakref.WeakKeyDictionary[Engine, _Holder] = weakref.WeakKeyDictionary()
_holders_lock = threading.Lock()


def _engine(session: Session) -> Engine:
    return session.get_bind().engine


def _holder(engine: Engine) -> _Holder:
    h = _holders.get(engine)
    if h is None:
        with _holders_lock:
            h = _holders.get(engine)
            if h is None:
                h = _holders[engine] = _Holder()
    return h


def read_version(session: Session) -> str:
    value = session.execute(
        select(CitySetting.value).where(CitySetting.key == VERSION_KEY)
    ).scalar_one_or_none()
    return str(value) if value is not None else ""


def bump_version(session: Session) -> str:
    """Give the calendar/hours/limits a new version token (same transaction as the write)."""
    token = uuid.uuid4().hex
    stmt = update(CitySetting).where(CitySetting.key == VERSION_KEY).values(value=token)
    if session.execute(stmt).rowcount == 0:  # type: ignore[attr-defined]
        try:
            with session.begin_nested():
                session.execute(insert(CitySetting).values(key=VERSION_KEY, value=token))
        except IntegrityError:  # created concurrently
            session.execute(stmt)
    session.info[_DIRTY] = True
    invalidate(session)
    return token


def invalidate(session: Session) -> None:
    """Make the next :func:`get_clock` of this process re-check the version."""
    _holder(_engine(session)).checked_at = -math.inf


def load_clock(session: Session, version: str | None = None) -> WorkClock:
    """Build a :class:`WorkClock` from the database (tens of milliseconds)."""
    if version is None:
        version = read_version(session)
    exceptions = {
        d: w for d, w in session.execute(select(CalendarDay.day, CalendarDay.is_workday)).all()
    }
    years = session.execute(
        select(CalendarYear.year).where(CalendarYear.confirmed.is_(True))
    ).scalars()
    hours = [
        (row.valid_from, check_periods(row.periods))
        for row in session.execute(select(WorkingHours).order_by(WorkingHours.valid_from)).scalars()
    ]
    limits = {
        (r.stage, r.urgency): TimeLimit(r.amount, r.unit)
        for r in session.execute(select(TimeLimitDefault)).scalars()
    }
    clock = WorkClock(exceptions, years, hours, limits, version=version)
    for cid, stage, urgency, amount, unit in session.execute(
        select(
            CategoryTimeLimit.category_id,
            CategoryTimeLimit.stage,
            CategoryTimeLimit.urgency,
            CategoryTimeLimit.amount,
            CategoryTimeLimit.unit,
        )
    ):
        clock.category_limits[(cid, stage, urgency)] = TimeLimit(amount, unit)
    return clock


def get_clock(session: Session) -> WorkClock:
    """The cached clock of this session's database, rebuilt when the version changed.

    Without a write in this process, the version is re-read at most every
    ``CITYOPS_INDEX_REFRESH_SECONDS``; between checks this costs no query.
    """
    h = _holder(_engine(session))
    clock = h.clock
    now = time.monotonic()
    if clock is not None and now - h.checked_at < get_settings().index_refresh_seconds:
        return clock
    version = read_version(session)
    if clock is None or clock.version != version:
        with h.lock:
            clock = h.clock
            if clock is None or clock.version != version:
                clock = load_clock(session, version)
                h.clock = clock
    h.checked_at = now
    return clock


def _after_end(session: Session) -> None:
    if session.info.pop(_DIRTY, False):
        with contextlib.suppress(Exception):  # no bind any more
            invalidate(session)


def _install_listeners() -> None:
    from sqlalchemy import event

    event.listen(Session, "after_commit", _after_end)
    event.listen(Session, "after_rollback", _after_end)


_install_listeners()


# --------------------------------------------------------------------------- calendar


def _kind(d: date, is_workday: bool, has_name: bool) -> str:
    weekend = d.weekday() >= 5
    if is_workday:
        return "makeup" if weekend else "workday"
    return "weekend" if weekend and not has_name else "holiday"


def _day_out(d: date, row: CalendarDay | None) -> CalendarDayOut:
    if row is None:
        working, name, source = d.weekday() < 5, None, "default"
    else:
        working, name, source = row.is_workday, row.name, row.source
    kind = _kind(d, working, name is not None)
    return CalendarDayOut(
        date=d,
        weekday=d.isoweekday(),
        is_workday=working,
        kind=kind,
        kind_label=DAY_KIND_LABELS[kind],
        name=name,
        source=source,
    )


def _year_rows(session: Session, year: int) -> dict[date, CalendarDay]:
    rows = session.execute(
        select(CalendarDay).where(
            CalendarDay.day >= date(year, 1, 1), CalendarDay.day <= date(year, 12, 31)
        )
    ).scalars()
    return {r.day: r for r in rows}


def year_view(session: Session, year: int, with_days: bool = True) -> CalendarYearOut:
    """Every day of ``year`` (ordinary days filled in) and whether the year is confirmed."""
    check_year(year)
    rows = _year_rows(session, year)
    yr = session.get(CalendarYear, year)
    days: list[CalendarDayOut] = []
    d = date(year, 1, 1)
    one = timedelta(days=1)
    while d.year == year:
        days.append(_day_out(d, rows.get(d)))
        d += one
    return CalendarYearOut(
        year=year,
        confirmed=bool(yr and yr.confirmed),
        source=yr.source if yr else None,
        confirmed_at=yr.confirmed_at if yr else None,
        confirmed_by=yr.confirmed_by if yr else None,
        note=yr.note if yr else None,
        working_days=sum(1 for x in days if x.is_workday),
        non_working_days=sum(1 for x in days if not x.is_workday),
        holidays=sum(1 for x in days if x.kind == "holiday"),
        makeup_days=sum(1 for x in days if x.kind == "makeup"),
        days=days if with_days else [],
    )


def get_day(session: Session, d: date) -> CalendarDayOut:
    check_year(d.year)
    return _day_out(d, session.get(CalendarDay, d))


def set_day(
    session: Session, d: date, is_workday: bool, name: str | None = None
) -> CalendarDayChange:
    """Mark one date as working or not (admin). A date that matches the Monday–Friday rule
    and has no name needs no exception row (unless it overrides a package row).

    The year gets a calendar row (unconfirmed) if it had none; a confirmed year stays
    confirmed (the admin is correcting official data).
    """
    check_year(d.year)
    if name is not None:
        name = name.strip() or None
        if name is not None and len(name) > 60:
            raise Invalid("name is longer than 60 characters", field="name", value=name)
    row = session.get(CalendarDay, d)
    is_default = bool(is_workday) == (d.weekday() < 5) and name is None
    if is_default and (row is None or row.source == SOURCE_ADMIN):
        # back to the Monday–Friday rule: no exception needed
        if row is not None:
            session.delete(row)
            row = None
    elif row is None:
        row = CalendarDay(day=d, is_workday=bool(is_workday), name=name, source=SOURCE_ADMIN)
        session.add(row)
    elif (row.is_workday, row.name, row.source) != (bool(is_workday), name, SOURCE_ADMIN):
        # also when it now equals the rule: the row records that the admin overrode the
        # package, so that ``cityops calendar seed`` keeps the change
        row.is_workday = bool(is_workday)
        row.name = name
        row.source = SOURCE_ADMIN
    yr = session.get(CalendarYear, d.year)
    if yr is None:
        yr = CalendarYear(year=d.year, confirmed=False, source=SOURCE_ADMIN)
        session.add(yr)
    session.flush()
    bump_version(session)
    return CalendarDayChange(day=_day_out(d, row), year=d.year, year_confirmed=yr.confirmed)


def confirm_year(
    session: Session, year: int, confirmed: bool = True, note: str | None = None
) -> CalendarYearOut:
    """Mark a year's calendar as official (or take that back)."""
    check_year(year)
    yr = session.get(CalendarYear, year)
    if yr is None:
        yr = CalendarYear(year=year, confirmed=False, source=SOURCE_ADMIN)
        session.add(yr)
    if bool(yr.confirmed) != confirmed:
        yr.confirmed = confirmed
        yr.confirmed_at = datetime.now(UTC) if confirmed else None
        yr.confirmed_by = current_actor.get().name if confirmed else None
    if note is not None:
        yr.note = note
    session.flush()
    bump_version(session)
    return year_view(session, year)


def seed_calendar(session: Session, overwrite: bool = False) -> dict[str, Any]:
    """Load the years of the installed ``chinesecalendar`` package (through the ORM: audited).

    Days an admin changed are kept unless ``overwrite``. Package years get a confirmed
    calendar row. Re-running is a no-op.
    """
    pkg = package_calendar()
    years = sorted(pkg)
    stats = {"added": 0, "updated": 0, "removed": 0, "kept_admin": 0, "years_confirmed": 0}
    existing = {
        r.day: r
        for r in session.execute(
            select(CalendarDay).where(
                CalendarDay.day >= date(years[0], 1, 1), CalendarDay.day <= date(years[-1], 12, 31)
            )
        ).scalars()
    }
    now = datetime.now(UTC)
    for year in years:
        want = pkg[year]
        for d, old in existing.items():
            if d.year == year and d not in want:
                if old.source == SOURCE_ADMIN and not overwrite:
                    stats["kept_admin"] += 1
                else:
                    session.delete(old)
                    stats["removed"] += 1
        for d, (working, name) in want.items():
            row = existing.get(d)
            if row is None:
                session.add(
                    CalendarDay(day=d, is_workday=working, name=name, source=SOURCE_PACKAGE)
                )
                stats["added"] += 1
            elif (row.is_workday, row.name) != (working, name):
                if row.source == SOURCE_ADMIN and not overwrite:
                    stats["kept_admin"] += 1
                    continue
                row.is_workday, row.name, row.source = working, name, SOURCE_PACKAGE
                stats["updated"] += 1
        yr = session.get(CalendarYear, year)
        if yr is None:
            session.add(
                CalendarYear(
                    year=year,
                    confirmed=True,
                    source=SOURCE_PACKAGE,
                    confirmed_at=now,
                    confirmed_by=current_actor.get().name,
                    note=_package_note(),
                )
            )
            stats["years_confirmed"] += 1
        elif not yr.confirmed:
            yr.confirmed, yr.confirmed_at = True, now
            yr.confirmed_by = current_actor.get().name
            yr.note = _package_note()
            stats["years_confirmed"] += 1
    session.flush()
    bump_version(session)
    return {"years": f"{years[0]}–{years[-1]}", **stats}


def _package_note() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"from chinesecalendar {version('chinesecalendar')}"
    except PackageNotFoundError:  # pragma: no cover
        return "from chinesecalendar"


# --------------------------------------------------------------------------- working hours


def _hours_out(row: WorkingHours) -> WorkingHoursOut:
    periods = check_periods(row.periods)
    return WorkingHoursOut(
        valid_from=row.valid_from,
        periods=[PeriodIO(start=format_hhmm(s), end=format_hhmm(e)) for s, e in periods],
        note=row.note,
        minutes_per_day=sum(e - s for s, e in periods),
    )


def list_working_hours(session: Session) -> list[WorkingHoursOut]:
    rows = session.execute(select(WorkingHours).order_by(WorkingHours.valid_from)).scalars()
    return [_hours_out(r) for r in rows]


def _periods_json(periods: list[tuple[int, int]]) -> list[list[str]]:
    return [[format_hhmm(s), format_hhmm(e)] for s, e in periods]


def replace_working_hours(
    session: Session, entries: Sequence[WorkingHoursIn]
) -> list[WorkingHoursOut]:
    """Replace the whole working-hours table (only real changes are written and audited)."""
    if not entries:
        raise Invalid("at least one working-hours entry is needed", field="entries", value=[])
    wanted: dict[date, tuple[list[list[str]], str | None]] = {}
    for n, e in enumerate(entries):
        if e.valid_from in wanted:
            raise Invalid(
                f"two entries are valid from {e.valid_from}",
                field=f"entries[{n}].valid_from",
                value=e.valid_from.isoformat(),
            )
        check_year(e.valid_from.year)
        wanted[e.valid_from] = (
            _periods_json(check_periods(e.periods, f"entries[{n}].periods")),
            e.note,
        )
    rows = {r.valid_from: r for r in session.execute(select(WorkingHours)).scalars()}
    for d, old in rows.items():
        if d not in wanted:
            session.delete(old)
    for d, (periods, note) in wanted.items():
        row = rows.get(d)
        if row is None:
            session.add(WorkingHours(valid_from=d, periods=periods, note=note))
        else:
            if row.periods != periods:
                row.periods = periods
            if row.note != note:
                row.note = note
    session.flush()
    bump_version(session)
    return list_working_hours(session)


def set_working_hours(
    session: Session, valid_from: date, periods: Sequence[Any], note: str | None = None
) -> WorkingHoursOut:
    """Add or change the working hours valid from one date."""
    check_year(valid_from.year)
    p = _periods_json(check_periods(periods))
    row = session.execute(
        select(WorkingHours).where(WorkingHours.valid_from == valid_from)
    ).scalar_one_or_none()
    if row is None:
        row = WorkingHours(valid_from=valid_from, periods=p, note=note)
        session.add(row)
    else:
        row.periods = p
        if note is not None:
            row.note = note
    session.flush()
    bump_version(session)
    return _hours_out(row)


def delete_working_hours(session: Session, valid_from: date) -> None:
    row = session.execute(
        select(WorkingHours).where(WorkingHours.valid_from == valid_from)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(
            f"no working hours valid from {valid_from}", valid_from=valid_from.isoformat()
        )
    session.delete(row)
    session.flush()
    bump_version(session)


# --------------------------------------------------------------------------- time limits


def _limit_out(stage: str, urgency: str | None, amount: float, unit: str) -> TimeLimitOut:
    return TimeLimitOut(
        stage=stage,
        urgency=urgency,
        amount=amount,
        unit=unit,
        stage_label=STAGE_LABELS[stage],
        unit_label=UNIT_LABELS[unit],
    )


def _stage_order(stage: str, urgency: str | None) -> tuple[int, int]:
    return (STAGES.index(stage), -1 if urgency is None else URGENCIES.index(urgency))


def list_default_limits(session: Session) -> list[TimeLimitOut]:
    rows = list(session.execute(select(TimeLimitDefault)).scalars())
    rows.sort(key=lambda r: _stage_order(r.stage, r.urgency) if r.stage in STAGES else (99, 0))
    return [_limit_out(r.stage, r.urgency, r.amount, r.unit) for r in rows]


def replace_default_limits(session: Session, items: Sequence[TimeLimitIn]) -> list[TimeLimitOut]:
    """Replace the city-wide defaults. Every stage must keep an any-urgency row."""
    wanted: dict[tuple[str, str | None], tuple[float, str]] = {}
    for n, it in enumerate(items):
        try:
            check_stage(it.stage)
            check_urgency(it.urgency)
            check_unit(it.unit)
            amount = check_amount(it.amount, allow_zero=False)
        except Invalid as exc:
            exc.details["index"] = n
            raise
        key = (it.stage, it.urgency)
        if key in wanted:
            raise Invalid(
                f"items[{n}]: {it.stage}/{it.urgency or 'any urgency'} is given twice",
                field=f"items[{n}]",
                value=[it.stage, it.urgency],
            )
        wanted[key] = (amount, it.unit)
    missing = [s for s in STAGES if (s, None) not in wanted]
    if missing:
        raise Invalid(
            f"every stage needs a default for any urgency; missing: {', '.join(missing)}",
            field="items",
            value=missing,
        )
    rows = {(r.stage, r.urgency): r for r in session.execute(select(TimeLimitDefault)).scalars()}
    for key, old in rows.items():
        if key not in wanted:
            session.delete(old)
    session.flush()  # free unique keys before inserting
    for key, (amount, unit) in wanted.items():
        row = rows.get(key)
        if row is None:
            session.add(TimeLimitDefault(stage=key[0], urgency=key[1], amount=amount, unit=unit))
        else:
            if row.amount != amount:
                row.amount = amount
            if row.unit != unit:
                row.unit = unit
    session.flush()
    bump_version(session)
    return list_default_limits(session)


def seed_defaults(session: Session) -> dict[str, int]:
    """Seed working hours and default time limits into empty tables."""
    out = {"working_hours": 0, "time_limit_defaults": 0}
    if session.execute(select(WorkingHours.id).limit(1)).first() is None:
        session.add(
            WorkingHours(valid_from=DEFAULT_HOURS_FROM, periods=[list(p) for p in DEFAULT_PERIODS])
        )
        out["working_hours"] = 1
    if session.execute(select(TimeLimitDefault.id).limit(1)).first() is None:
        for stage, urgency, amount, unit in DEFAULT_TIME_LIMITS:
            session.add(TimeLimitDefault(stage=stage, urgency=urgency, amount=amount, unit=unit))
        out["time_limit_defaults"] = len(DEFAULT_TIME_LIMITS)
    if any(out.values()):
        session.flush()
        bump_version(session)
    return out


def seed(session: Session, overwrite: bool = False) -> dict[str, Any]:
    """``cityops calendar seed``: package calendar plus default hours and limits if missing."""
    return {"calendar": seed_calendar(session, overwrite=overwrite), **seed_defaults(session)}


@dataclass(frozen=True, slots=True)
class ResolvedLimit:
    stage: str
    category_id: int | None
    urgency: str | None
    limit: TimeLimit
    #: category_urgency | category | default_urgency | default
    source: str

    def out(self) -> ResolvedLimitOut:
        return ResolvedLimitOut(
            stage=self.stage,
            stage_label=STAGE_LABELS[self.stage],
            category_id=self.category_id,
            urgency=self.urgency,
            amount=self.limit.amount,
            unit=self.limit.unit,
            unit_label=UNIT_LABELS[self.limit.unit],
            source=self.source,
        )


def resolve_limit(
    session: Session, stage: str, category_id: int | None = None, urgency: str | None = None
) -> ResolvedLimit:
    """The effective limit: category+urgency → category → default stage+urgency → default stage.

    Costs at most one indexed query (category limits); the defaults come from the cached clock.
    """
    check_stage(stage)
    check_urgency(urgency)
    clock = get_clock(session)
    if category_id is not None:
        cat_limits = clock.category_limits
        if urgency is not None and (category_id, stage, urgency) in cat_limits:
            lim = cat_limits[(category_id, stage, urgency)]
            return ResolvedLimit(stage, category_id, urgency, lim, "category_urgency")
        if (category_id, stage, None) in cat_limits:
            lim = cat_limits[(category_id, stage, None)]
            return ResolvedLimit(stage, category_id, urgency, lim, "category")
        if category_id not in clock.known_categories and session.get(Category, category_id) is None:
            raise NotFound(f"no category {category_id}", category_id=category_id)
        clock.known_categories.add(category_id)
    defaults = clock.default_limits
    if urgency is not None and (stage, urgency) in defaults:
        return ResolvedLimit(
            stage, category_id, urgency, defaults[(stage, urgency)], "default_urgency"
        )
    if (stage, None) in defaults:
        return ResolvedLimit(stage, category_id, urgency, defaults[(stage, None)], "default")
    raise NotFound(f"no time limit for stage {stage}", stage=stage)


def stage_deadline(
    session: Session,
    stage: str,
    start: datetime,
    category_id: int | None = None,
    urgency: str | None = None,
    pauses: Iterable[Pause] = (),
) -> tuple[ResolvedLimit, Deadline]:
    """Resolve the stage's limit and compute its deadline (what the case workflow calls)."""
    r = resolve_limit(session, stage, category_id, urgency)
    return r, get_clock(session).deadline(start, r.limit, pauses)

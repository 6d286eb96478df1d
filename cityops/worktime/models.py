"""Tables of the working-time clock (工作时间 / 计时) and their seed data.

* ``calendar_years`` — one row per year that has calendar data, with its **confirmed** flag.
  Years 2004–2026 come from the PyPI package ``chinesecalendar`` and are confirmed; a year
  without a row (2027 onward until the city enters it) falls back to Monday–Friday and every
  result computed with it says ``calendar_confirmed: False``.
* ``calendar_days`` — only the **exceptions** to the Monday–Friday rule: public holidays
  (法定节假日, named; also the weekend days inside a holiday so that they carry the name),
  make-up working days (调休上班: a Saturday or Sunday that is worked) and any day an admin
  marked. A year view fills in the ordinary days.
* ``working_hours`` — working periods of a day with a valid-from date (summer hours …).
* ``time_limit_defaults`` — city-wide time limits per stage × urgency (category-specific
  ones live in :class:`cityops.geo.models.CategoryTimeLimit`).

The seed values (:data:`DEFAULT_PERIODS`, :data:`DEFAULT_TIME_LIMITS`,
:func:`package_calendar`) are defined here, once; the migration and ``cityops calendar seed``
both use them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Boolean, Date, Float, Index, Integer, String, Text, func, literal_column
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base
from cityops.core.types import JSONType, UTCDateTime

# --------------------------------------------------------------------------- vocabulary

#: Stages of the closed loop that carry a time limit, in workflow order.
STAGES = ("accept", "verify", "file", "dispatch", "sign", "handle", "check", "close")
STAGE_LABELS = {
    "accept": "受理",
    "verify": "核实",
    "file": "立案",
    "dispatch": "派遣",
    "sign": "签收",
    "handle": "处置",
    "check": "核查",
    "close": "结案",
}
#: Units of a time limit (stored in ``time_limit_defaults`` and ``category_time_limits``).
LIMIT_UNITS = ("natural_minutes", "natural_hours", "working_hours", "working_days")
#: Units the clock understands (the limit units plus plain working minutes).
CLOCK_UNITS = (
    "natural_minutes",
    "natural_hours",
    "working_minutes",
    "working_hours",
    "working_days",
)
UNIT_LABELS = {
    "natural_minutes": "自然分钟",
    "natural_hours": "自然小时",
    "working_minutes": "工作分钟",
    "working_hours": "工作时",
    "working_days": "工作日",
}
#: Kinds of a calendar day in the year view.
DAY_KINDS = ("workday", "weekend", "holiday", "makeup")
DAY_KIND_LABELS = {
    "workday": "工作日",
    "weekend": "休息日",
    "holiday": "法定节假日",
    "makeup": "调休上班",
}
#: Where a calendar row came from.
SOURCE_PACKAGE = "chinese_calendar"
SOURCE_ADMIN = "admin"

#: Years the calendar (and the clock) covers.
MIN_YEAR = 2000
MAX_YEAR = 2099

# --------------------------------------------------------------------------- seed data

#: Default working periods (local wall time, Asia/Shanghai): 480 working minutes a day.
DEFAULT_PERIODS: list[tuple[str, str]] = [("08:00", "12:00"), ("14:00", "18:00")]
#: valid_from of the seeded working-hours row (it also applies to any earlier date).
DEFAULT_HOURS_FROM = date(MIN_YEAR, 1, 1)

#: City-wide default time limits (GUIDE §4): (stage, urgency or None = any, amount, unit).
#: Every stage has an any-urgency row; urgency rows override it.
DEFAULT_TIME_LIMITS: list[tuple[str, str | None, float, str]] = [
    ("accept", None, 0.5, "working_days"),  # 受理: 0.5 working day (12319)
    ("verify", None, 30, "natural_minutes"),  # 核实: 30 min
    ("file", None, 30, "natural_minutes"),  # 立案: normal ≤ 30 min
    ("file", "紧急", 10, "natural_minutes"),  # urgent ≤ 10 min
    ("file", "特急", 10, "natural_minutes"),
    ("dispatch", None, 30, "natural_minutes"),  # 派遣: normal ≤ 30 min
    ("dispatch", "紧急", 10, "natural_minutes"),
    ("dispatch", "特急", 10, "natural_minutes"),
    ("sign", None, 1, "natural_hours"),  # 签收 ≤ 1 h
    ("handle", None, 4, "working_hours"),  # 处置 (一般): 4 working hours
    ("handle", "特急", 2, "natural_hours"),  # 处置 (特急): 2 natural hours
    ("check", None, 30, "natural_minutes"),  # 核查: 30 min
    ("close", None, 1, "working_hours"),  # 结案: 1 working hour
]


def package_calendar() -> dict[int, dict[date, tuple[bool, str | None]]]:
    """The calendar of the installed ``chinesecalendar`` package, as exceptions.

    ``{year: {date: (is_workday, name)}}`` for every year the package covers (2004–2026 in
    version 1.11): public holidays (weekdays off, and weekend days inside a holiday, with the
    holiday's Chinese name) and make-up working days (weekend days worked, named after the
    holiday they make up for). Ordinary weekdays and weekends are not listed.
    """
    import chinese_calendar as cc
    from chinese_calendar.constants import Holiday

    zh = {h.value: h.chinese for h in Holiday}
    first = min(cc.holidays).year
    last = max(cc.holidays).year
    out: dict[int, dict[date, tuple[bool, str | None]]] = {y: {} for y in range(first, last + 1)}
    # Only dates listed by the package can differ from the Monday–Friday rule or carry a name.
    for d in sorted(set(cc.holidays) | set(cc.workdays)):
        if not first <= d.year <= last:
            continue
        working = bool(cc.is_workday(d))
        _on_holiday, name_en = cc.get_holiday_detail(d)
        name = zh.get(name_en, name_en) if name_en else None
        if working != (d.weekday() < 5) or name is not None:
            out[d.year][d] = (working, name)
    return out


# --------------------------------------------------------------------------- tables


class CalendarYear(Base):
    """A year with calendar data; ``confirmed`` once it is official (package or admin)."""

    __tablename__ = "calendar_years"
    __audited__ = True

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    #: chinese_calendar | admin
    source: Mapped[str] = mapped_column(String(20), nullable=False)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    confirmed_by: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)


class CalendarDay(Base):
    """An exception to the Monday–Friday rule (holiday, make-up working day, admin mark)."""

    __tablename__ = "calendar_days"
    __audited__ = True

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    is_workday: Mapped[bool] = mapped_column(Boolean, nullable=False)
    #: Holiday name (国庆节 …); for a make-up day the holiday it makes up for.
    name: Mapped[str | None] = mapped_column(String(60))
    #: chinese_calendar | admin
    source: Mapped[str] = mapped_column(String(20), nullable=False)


class WorkingHours(Base):
    """Working periods of a working day, from ``valid_from`` until the next row's date."""

    __tablename__ = "working_hours"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    valid_from: Mapped[date] = mapped_column(Date, unique=True, nullable=False)
    #: ``[["08:00", "12:00"], ["14:00", "18:00"]]`` — local wall time, sorted, disjoint.
    periods: Mapped[Any] = mapped_column(JSONType, nullable=False)
    note: Mapped[str | None] = mapped_column(String(200))


class TimeLimitDefault(Base):
    """City-wide time limit of a stage (and optionally one urgency)."""

    __tablename__ = "time_limit_defaults"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    stage: Mapped[str] = mapped_column(String(20), nullable=False)
    #: None = every urgency.
    urgency: Mapped[str | None] = mapped_column(String(4))
    amount: Mapped[float] = mapped_column(Float, nullable=False)
    #: natural_minutes | natural_hours | working_hours | working_days
    unit: Mapped[str] = mapped_column(String(20), nullable=False)


# NULL urgency (= any) must be unique per stage too, so the unique index is on
# ``(stage, coalesce(urgency, ''))`` (works on SQLite and PostgreSQL).
Index(
    "uq_time_limit_defaults_stage_urgency",
    TimeLimitDefault.stage,
    func.coalesce(TimeLimitDefault.urgency, literal_column("''")),
    unique=True,
)

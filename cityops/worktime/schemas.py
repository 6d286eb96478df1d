"""Request and response bodies of the working-time API (and the CLI's JSON output)."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import AwareDatetime, BaseModel, Field

from cityops.geo.models import URGENCIES
from cityops.worktime.models import DAY_KINDS, LIMIT_UNITS, STAGES

_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"


class CalendarDayOut(BaseModel):
    date: date
    #: ISO weekday: 1 = Monday … 7 = Sunday.
    weekday: int
    is_workday: bool
    kind: str = Field(json_schema_extra={"enum": list(DAY_KINDS)})
    #: 工作日 | 休息日 | 法定节假日 | 调休上班
    kind_label: str
    name: str | None = None
    #: default (Monday–Friday rule) | chinese_calendar | admin
    source: str


class CalendarYearOut(BaseModel):
    year: int
    #: False: Monday–Friday fallback or days still being entered; results say so.
    confirmed: bool
    #: chinese_calendar | admin | None (no data: Monday–Friday fallback)
    source: str | None = None
    confirmed_at: datetime | None = None
    confirmed_by: str | None = None
    note: str | None = None
    working_days: int
    non_working_days: int
    holidays: int
    makeup_days: int
    days: list[CalendarDayOut] = Field(default_factory=list)


class CalendarDayIn(BaseModel):
    is_workday: bool
    #: Holiday name (e.g. 国庆节), or for a make-up working day the holiday it belongs to.
    name: str | None = Field(default=None, max_length=60)


class CalendarDayChange(BaseModel):
    day: CalendarDayOut
    year: int
    year_confirmed: bool


class ConfirmIn(BaseModel):
    confirmed: bool = True
    note: str | None = Field(default=None, max_length=2000)


class PeriodIO(BaseModel):
    start: str = Field(pattern=_HHMM, examples=["08:00"])
    end: str = Field(pattern=_HHMM, examples=["12:00"])


class WorkingHoursIn(BaseModel):
    valid_from: date
    periods: list[PeriodIO] = Field(min_length=1, max_length=12)
    note: str | None = Field(default=None, max_length=200)


class WorkingHoursOut(WorkingHoursIn):
    minutes_per_day: int


class TimeLimitIn(BaseModel):
    stage: str = Field(json_schema_extra={"enum": list(STAGES)})
    #: None = every urgency.
    urgency: str | None = Field(default=None, json_schema_extra={"enum": [*URGENCIES, None]})
    amount: float
    unit: str = Field(json_schema_extra={"enum": list(LIMIT_UNITS)})


class TimeLimitOut(TimeLimitIn):
    stage_label: str
    unit_label: str


class ResolvedLimitOut(BaseModel):
    stage: str
    stage_label: str
    category_id: int | None
    urgency: str | None
    amount: float
    unit: str
    unit_label: str
    #: category_urgency | category | default_urgency | default
    source: str


class PauseIn(BaseModel):
    start: AwareDatetime
    #: None: still paused (挂账 or waiting for a decision) — the deadline is then unknown.
    end: AwareDatetime | None = None


class DeadlineIn(BaseModel):
    start: AwareDatetime
    amount: float
    unit: str = Field(json_schema_extra={"enum": list(LIMIT_UNITS)})
    pauses: list[PauseIn] = Field(default_factory=list, max_length=1000)
    #: Share of the limit after which the case is 临期.
    warn_fraction: float = Field(default=0.8, gt=0, le=1)


class DeadlineOut(BaseModel):
    start: datetime
    amount: float
    unit: str
    #: None while an open pause stops the clock.
    due_at: datetime | None
    warn_at: datetime | None
    calendar_confirmed: bool

"""Working-time endpoints: calendar, working hours, time limits, deadline calculator.

Reads need a logged-in user; writes need the ``admin`` role and a city-wide account
(no region scope). Writes go through the ORM, so the audit log records them.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query

from cityops.core.security import (
    Principal,
    SessionDep,
    UnlockedSessionDep,
    current_principal,
    ensure_city_wide,
    require_roles,
)
from cityops.worktime import service
from cityops.worktime.schemas import (
    CalendarDayChange,
    CalendarDayIn,
    CalendarDayOut,
    CalendarYearOut,
    ConfirmIn,
    DeadlineIn,
    DeadlineOut,
    ResolvedLimitOut,
    TimeLimitIn,
    TimeLimitOut,
    WorkingHoursIn,
    WorkingHoursOut,
)

router = APIRouter(prefix="/api/v1", tags=["worktime"])

UserDep = Annotated[Principal, Depends(current_principal)]
AdminDep = Annotated[Principal, Depends(require_roles("admin"))]


# --------------------------------------------------------------------------- calendar


@router.get("/calendar/days/{day}", response_model=CalendarDayOut)
def get_calendar_day(day: date, session: SessionDep, _user: UserDep) -> CalendarDayOut:
    """One date: working or not, and why (工作日 / 休息日 / 法定节假日 / 调休上班)."""
    return service.get_day(session, day)


@router.put("/calendar/days/{day}", response_model=CalendarDayChange)
def put_calendar_day(
    day: date, body: CalendarDayIn, session: SessionDep, admin: AdminDep
) -> CalendarDayChange:
    """Mark a date as a working day or not (admin). The year stays unconfirmed until
    ``POST /calendar/{year}/confirm``."""
    ensure_city_wide(admin, "the calendar")
    return service.set_day(session, day, body.is_workday, body.name)


@router.get("/calendar/{year}", response_model=CalendarYearOut)
def get_calendar_year(
    year: int,
    session: SessionDep,
    _user: UserDep,
    days: Annotated[bool, Query(description="include every day of the year")] = True,
) -> CalendarYearOut:
    """The year view: every day, and whether the year's calendar is confirmed."""
    return service.year_view(session, year, with_days=days)


@router.post("/calendar/{year}/confirm", response_model=CalendarYearOut)
def confirm_calendar_year(
    year: int,
    session: SessionDep,
    admin: AdminDep,
    body: Annotated[ConfirmIn | None, Body()] = None,
) -> CalendarYearOut:
    """Confirm a year's calendar as official (admin); ``{"confirmed": false}`` takes it back."""
    ensure_city_wide(admin, "the calendar")
    b = body or ConfirmIn()
    return service.confirm_year(session, year, b.confirmed, b.note)


# --------------------------------------------------------------------------- working hours


@router.get("/working-hours", response_model=list[WorkingHoursOut])
def get_working_hours(session: SessionDep, _user: UserDep) -> list[WorkingHoursOut]:
    """Working periods with their valid-from dates."""
    return service.list_working_hours(session)


@router.put("/working-hours", response_model=list[WorkingHoursOut])
def put_working_hours(
    body: list[WorkingHoursIn], session: SessionDep, admin: AdminDep
) -> list[WorkingHoursOut]:
    """Replace the working-hours table (admin)."""
    ensure_city_wide(admin, "working hours")
    return service.replace_working_hours(session, body)


# --------------------------------------------------------------------------- time limits


@router.get("/time-limits/defaults", response_model=list[TimeLimitOut])
def get_default_limits(session: SessionDep, _user: UserDep) -> list[TimeLimitOut]:
    """City-wide default time limits per stage × urgency."""
    return service.list_default_limits(session)


@router.put("/time-limits/defaults", response_model=list[TimeLimitOut])
def put_default_limits(
    body: list[TimeLimitIn], session: SessionDep, admin: AdminDep
) -> list[TimeLimitOut]:
    """Replace the city-wide defaults (admin). Every stage needs an any-urgency row."""
    ensure_city_wide(admin, "time limits")
    return service.replace_default_limits(session, body)


@router.get("/time-limits/resolve", response_model=ResolvedLimitOut)
def resolve_limit(
    session: SessionDep,
    _user: UserDep,
    stage: Annotated[str, Query(description="accept | verify | file | dispatch | sign | …")],
    category_id: int | None = None,
    urgency: Annotated[str | None, Query(description="特急 | 紧急 | 一般")] = None,
) -> ResolvedLimitOut:
    """The effective limit: category+urgency → category → default stage+urgency → default."""
    return service.resolve_limit(session, stage, category_id, urgency).out()


@router.post("/worktime/deadline", response_model=DeadlineOut)
def compute_deadline(body: DeadlineIn, session: UnlockedSessionDep, _user: UserDep) -> DeadlineOut:
    """Deadline and 临期 instant of a limit from a start, with pauses (挂账 …). Read-only
    (a POST only because of the body), so it takes no write lock."""
    service.check_unit(body.unit)
    clock = service.get_clock(session)
    limit = service.TimeLimit(service.check_amount(body.amount), body.unit)
    pauses = [(p.start, p.end) for p in body.pauses]
    d = clock.deadline(body.start, limit, pauses)
    warn = clock.warning_at(body.start, limit, pauses, body.warn_fraction)
    return DeadlineOut(
        start=body.start,
        amount=limit.amount,
        unit=limit.unit,
        due_at=d.due_at,
        warn_at=warn,
        calendar_confirmed=d.calendar_confirmed,
    )

"""``cityops calendar …``: see and edit the working-day calendar.

Register in ``cityops/cli/main.py`` with::

    from cityops.worktime.cli import calendar_app
    app.add_typer(calendar_app, name="calendar")
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, NoReturn

import typer

from cityops.core.audit import Actor, current_actor
from cityops.core.db import Database
from cityops.core.errors import DomainError

calendar_app = typer.Typer(
    help="Working-day calendar (法定节假日, 调休) and working time.", no_args_is_help=True
)


def _db() -> Database:
    current_actor.set(Actor(None, "cli"))
    return Database()


def _fail(exc: DomainError) -> NoReturn:
    typer.echo(json.dumps(exc.to_dict(), ensure_ascii=False, indent=2), err=True)
    raise typer.Exit(1)


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


_WEEKDAYS = "一二三四五六日"


@calendar_app.command()
def show(
    year: int,
    as_json: Annotated[bool, typer.Option("--json", help="every day as JSON")] = False,
) -> None:
    """Show a year: confirmed or not, holidays and make-up working days."""
    from cityops.worktime.service import get_clock, year_view

    db = _db()
    with db.session() as s:
        try:
            view = year_view(s, year)
            clock = get_clock(s)
        except DomainError as exc:
            _fail(exc)
        hours = clock.hours
    if as_json:
        typer.echo(view.model_dump_json(indent=2))
        return
    if view.confirmed:
        status = f"confirmed ({view.source}"
        status += f", {view.confirmed_by}" if view.confirmed_by else ""
        status += ")"
    elif view.source is None:
        status = "UNCONFIRMED: no calendar data, Monday–Friday fallback"
    else:
        status = "UNCONFIRMED: days entered, not confirmed yet"
    typer.echo(f"{year}: {status}")
    typer.echo(
        f"  {view.working_days} working days, {view.non_working_days} days off "
        f"({view.holidays} holidays, {view.makeup_days} make-up working days)"
    )
    for d in view.days:
        if d.kind in ("holiday", "makeup") or d.source == "admin":
            name = f"  {d.name}" if d.name else ""
            src = "  [admin]" if d.source == "admin" else ""
            typer.echo(f"  {d.date}  周{_WEEKDAYS[d.weekday - 1]}  {d.kind_label}{name}{src}")
    start = date(year, 1, 1).toordinal()
    end = date(year, 12, 31).toordinal()
    for i, (valid_from, periods) in enumerate(hours):
        nxt = hours[i + 1][0].toordinal() if i + 1 < len(hours) else None
        if valid_from.toordinal() <= end and (nxt is None or nxt > start):
            text = ", ".join(
                f"{a // 60:02d}:{a % 60:02d}–{b // 60:02d}:{b % 60:02d}" for a, b in periods
            )
            typer.echo(f"  working hours from {valid_from}: {text}")
    if not view.confirmed:
        typer.echo(
            f"  mark days with `cityops calendar set DATE --holiday --name …` / `--workday`, "
            f"then `cityops calendar confirm {year}`"
        )


@calendar_app.command("set")
def set_(
    day: Annotated[str, typer.Argument(help="YYYY-MM-DD")],
    workday: Annotated[
        bool,
        typer.Option(
            "--workday/--holiday",
            help="--workday: worked (调休上班 on a weekend); --holiday: a day off",
        ),
    ],
    name: Annotated[str | None, typer.Option(help="holiday name, e.g. 国庆节")] = None,
) -> None:
    """Mark one date as a working day or a day off."""
    from cityops.worktime.service import set_day

    d = _parse_date(day)
    db = _db()
    try:
        with db.session() as s:
            change = set_day(s, d, workday, name)
    except DomainError as exc:
        _fail(exc)
    out = change.day
    typer.echo(
        f"{out.date}: {out.kind_label}{(' ' + out.name) if out.name else ''}"
        f" — year {change.year} {'confirmed' if change.year_confirmed else 'NOT confirmed yet'}"
    )


@calendar_app.command()
def confirm(
    year: int,
    undo: Annotated[bool, typer.Option("--undo", help="mark the year unconfirmed again")] = False,
    note: Annotated[str | None, typer.Option(help="e.g. the State Council notice")] = None,
) -> None:
    """Confirm a year's calendar as official (after entering its holidays)."""
    from cityops.worktime.service import confirm_year

    db = _db()
    try:
        with db.session() as s:
            view = confirm_year(s, year, not undo, note)
    except DomainError as exc:
        _fail(exc)
    typer.echo(
        f"{year}: {'confirmed' if view.confirmed else 'unconfirmed'} — "
        f"{view.working_days} working days, {view.holidays} holidays, "
        f"{view.makeup_days} make-up working days"
    )


@calendar_app.command()
def seed(
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="also replace days an admin changed")
    ] = False,
) -> None:
    """Load the calendar of the installed chinesecalendar package (and default hours/limits)."""
    from cityops.worktime.service import seed as do_seed

    db = _db()
    with db.session() as s:
        summary = do_seed(s, overwrite=overwrite)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))

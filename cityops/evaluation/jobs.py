"""Periodic jobs of the evaluation context (registered with cityops.core.jobs).

``evaluation.reports`` — scheduled reports (定时报表), checked every minute by the scheduler's
leader:

* 晨报 (morning): every day, from the configured time (default 07:30 Asia/Shanghai), the
  report of yesterday;
* 周报 (weekly): from Monday at the configured time, the report of last week (ISO week);
* 月报 (monthly): from the 1st of the month at the configured time, the report of last month.

At any instant the job makes sure the report of the latest *completed* period of each kind
is archived once its time of day has come (so a scheduler that was down at 07:30 catches up
later that day, that week, that month). Idempotent: a report already archived for that
period (by this job or generated on demand) is not generated again; the archive is the set
of files under ``<var_dir>/reports`` (:mod:`cityops.evaluation.reports`), so this holds
across restarts and leader changes.

Times are configuration (city setting ``evaluation_report_schedule``): ``{"morning":
"07:30", "weekly": "07:30", "monthly": "07:30"}``; ``null`` turns a kind off.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cityops.core import jobs
from cityops.core.errors import Invalid
from cityops.evaluation import reports, review
from cityops.evaluation.rollup import TZ

SCHEDULE_KEY = "evaluation_report_schedule"
DEFAULT_SCHEDULE: dict[str, str | None] = {
    "morning": "07:30",
    "weekly": "07:30",
    "monthly": "07:30",
}
JOB_NAME = "evaluation.reports"
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def get_schedule(session: Session) -> dict[str, str | None]:
    from cityops.geo.models import CitySetting

    out = dict(DEFAULT_SCHEDULE)
    row = session.get(CitySetting, SCHEDULE_KEY)
    if row is not None and isinstance(row.value, dict):
        out.update({k: v for k, v in row.value.items() if k in out})
    return out


def set_schedule(session: Session, value: dict[str, Any]) -> dict[str, str | None]:
    """Change the report times (``HH:MM`` local, or ``None`` for off); any subset of kinds."""
    from cityops.geo.models import CitySetting

    for k, v in value.items():
        if k not in DEFAULT_SCHEDULE:
            raise Invalid(
                f"unknown report kind {k!r}: one of {', '.join(DEFAULT_SCHEDULE)}", field=k
            )
        if v is not None and not (isinstance(v, str) and _HHMM.fullmatch(v)):
            raise Invalid(f"{k}: a local time HH:MM (00:00–23:59) or null", field=k, value=v)
    merged = {**get_schedule(session), **value}
    row = session.get(CitySetting, SCHEDULE_KEY)
    if row is None:
        session.add(CitySetting(key=SCHEDULE_KEY, value=merged))
    else:
        row.value = merged
    session.flush()
    return get_schedule(session)


def _at(d: date, hhmm: str) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(d, time(h, m), TZ)


def due_reports(session: Session, now: datetime) -> list[tuple[str, date]]:
    """(kind, first day of the period) of every report whose time has come at ``now``."""
    local = now.astimezone(TZ)
    today = local.date()
    sched = get_schedule(session)
    out: list[tuple[str, date]] = []
    for kind, first_run_day in (
        ("morning", today),
        ("weekly", today - timedelta(days=today.weekday())),  # this week's Monday
        ("monthly", today.replace(day=1)),
    ):
        hhmm = sched.get(kind)
        if not hhmm:
            continue
        instant = _at(first_run_day, hhmm)
        if local >= instant:
            out.append((kind, reports.default_start(kind, instant)))
    return out


def archived(kind: str, period_start: date) -> bool:
    _, label = reports.report_period(kind, period_start)
    return (reports.reports_dir() / kind / f"{label}.json").is_file()


def run_scheduled_reports(session: Session, now: datetime) -> list[str]:
    """Generate the due reports not archived yet; answers ``kind/period`` of those made."""
    made: list[str] = []
    for kind, start in due_reports(session, now):
        if archived(kind, start):
            continue
        meta = reports.generate(session, kind, start, now, "scheduler")
        made.append(f"{kind}/{meta['period']}")
    return made


jobs.register(JOB_NAME, timedelta(minutes=1), run_scheduled_reports)
# 第三方考评: last month's review round, once (off unless review_settings.auto_round.enabled)
jobs.register("evaluation.review_monthly_round", timedelta(hours=1), review.monthly_round)

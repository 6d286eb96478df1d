"""Reports API (晨报 / 周报 / 月报): generate on demand, list the archive, download.

For leaders, shift leaders and admins. Reports cover the whole city, so a user limited to a
region (``scope_region_code``) may not generate or read them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel

from cityops.core.errors import Forbidden
from cityops.core.security import AdminDep, Principal, SessionDep, require_roles
from cityops.evaluation import reports

router = APIRouter(prefix="/api/v1/evaluation/reports", tags=["evaluation"])

_Roles = Annotated[Principal, Depends(require_roles("leader", "shift_leader", "admin"))]


def _citywide(principal: _Roles) -> Principal:
    if principal.scope_region_code:
        raise Forbidden("reports cover the whole city; a region-scoped user may not use them")
    return principal


ReporterDep = Annotated[Principal, Depends(_citywide)]

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class GenerateIn(BaseModel):
    kind: Literal["morning", "weekly", "monthly"]
    #: Any day of the period; default: yesterday / last week / last month (local time).
    period_start: date | None = None


@router.post("/generate")
def generate(body: GenerateIn, principal: ReporterDep, session: SessionDep) -> dict[str, Any]:
    """Build the report now and archive it (.xlsx, .html); replaces an earlier version."""
    now = datetime.now(UTC)
    start = body.period_start or reports.default_start(body.kind, now)
    return reports.generate(session, body.kind, start, now, principal.username)


@router.get("")
@router.get("/", include_in_schema=False)
def list_reports(
    principal: ReporterDep,
    kind: Annotated[str | None, Query(pattern="^(morning|weekly|monthly)$")] = None,
) -> dict[str, Any]:
    """Archived reports, newest period first (metadata and download links)."""
    return {"reports": reports.list_reports(kind)}


@router.get("/{kind}/{period}.xlsx")
def download_xlsx(kind: str, period: str, principal: ReporterDep) -> FileResponse:
    path = reports.report_path(kind, period, "xlsx")
    return FileResponse(path, media_type=XLSX_TYPE, filename=f"{kind}-{period}.xlsx")


@router.get("/{kind}/{period}.html")
def download_html(kind: str, period: str, principal: ReporterDep) -> FileResponse:
    path = reports.report_path(kind, period, "html")
    return FileResponse(path, media_type="text/html; charset=utf-8")


class ScheduleIn(BaseModel):
    """Local times (HH:MM, Asia/Shanghai) of the scheduled reports; null turns a kind off."""

    morning: str | None = None
    weekly: str | None = None
    monthly: str | None = None


@router.get("/schedule")
def get_schedule(principal: ReporterDep, session: SessionDep) -> dict[str, Any]:
    """When the scheduled 晨报 (daily, for yesterday), 周报 (Mondays, last week) and 月报
    (the 1st, last month) are generated."""
    from cityops.evaluation import jobs

    return {"schedule": jobs.get_schedule(session), "defaults": jobs.DEFAULT_SCHEDULE}


@router.put("/schedule")
def put_schedule(body: ScheduleIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Change the report times (admin); only the kinds given are changed."""
    from cityops.evaluation import jobs

    schedule = jobs.set_schedule(session, body.model_dump(exclude_unset=True))
    return {"schedule": schedule, "defaults": jobs.DEFAULT_SCHEDULE}

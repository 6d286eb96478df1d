"""Evaluation API (以评促管): indicators, rankings, drill-down, weights.

Readable by leaders, shift leaders and admins; a user limited to a region sees only the
counters of cases in that region (and only regions inside it). Weights: admin.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from cityops.core.security import AdminDep, Principal, SessionDep, ensure_region, require_roles
from cityops.evaluation import service
from cityops.evaluation.schemas import WeightsIn

router = APIRouter(prefix="/api/v1/evaluation", tags=["evaluation"])

ViewerDep = Annotated[Principal, Depends(require_roles("leader", "shift_leader", "admin"))]


def _key(principal: Principal, entity: str, id_or_code: str) -> str:
    if entity == "region":
        ensure_region(principal, id_or_code)
    elif not id_or_code.isdigit():
        from cityops.core.errors import Invalid

        raise Invalid(f"{entity}: id_or_code must be an id", field="id_or_code")
    return id_or_code


@router.get("/indicators")
def indicators(
    principal: ViewerDep,
    session: SessionDep,
    entity: Annotated[
        str, Query(pattern="^(unit|region|inspector|operator|shift_leader|dispatcher)$")
    ],
    id_or_code: str,
    start: date | None = None,
    end: date | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    """Counts, rates (%), composite value and grade for ``[start, end)`` (local days) or a
    ``period`` (2026-11-17, 2026-W47, 2026-11, 2026-Q4, 2026)."""
    p = service.period_from(start, end, period)
    key = _key(principal, entity, id_or_code)
    return service.indicators(session, entity, key, p, scope=principal.scope_region_code)


@router.get("/rankings")
def rankings(
    principal: ViewerDep,
    session: SessionDep,
    entity: Annotated[
        str,
        Query(pattern="^(unit|street|community|inspector|operator|shift_leader|dispatcher)$"),
    ] = "unit",
    period: str | None = None,
    top: Annotated[int, Query(ge=1, le=100)] = 5,
) -> dict[str, Any]:
    """All units (or streets / communities, or the people of a position: inspector 监督员,
    operator 受理员, shift_leader 值班长, dispatcher 派遣员) by composite value, with the change
    against the previous period and the 红黑榜 (``red`` best ``top``, ``black`` worst ``top``)."""
    p = service.parse_period(period or date.today().strftime("%Y-%m"))
    return service.ranking(session, entity, p, top=top, scope_prefix=principal.scope_region_code)


@router.get("/drilldown")
def drilldown(
    principal: ViewerDep,
    session: SessionDep,
    metric: str,
    entity: Annotated[
        str, Query(pattern="^(unit|region|inspector|operator|shift_leader|dispatcher)$")
    ],
    id_or_code: str,
    start: date | None = None,
    end: date | None = None,
    period: str | None = None,
) -> dict[str, Any]:
    """The case ids behind one figure (e.g. ``metric=结案数``)."""
    p = service.period_from(start, end, period)
    key = _key(principal, entity, id_or_code)
    return service.drilldown(session, entity, key, metric, p, scope=principal.scope_region_code)


@router.get("/config")
def get_config(principal: ViewerDep, session: SessionDep) -> dict[str, Any]:
    return {"weights": service.get_weights(session), "defaults": service.DEFAULT_WEIGHTS}


@router.put("/config")
def put_config(body: WeightsIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    weights = service.set_weights(session, body.model_dump(exclude_none=True))
    return {"weights": weights, "defaults": service.DEFAULT_WEIGHTS}

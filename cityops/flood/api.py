"""REST API of the flood context (防汛云调度), under /api/v1/flood. Thin: every rule (role,
scope, state) is in :mod:`cityops.flood.service`.

The console's live board polls ``GET /board`` every few seconds: one answer with every point
(depth, trend, status, assignees, arrivals), the active level and pending proposals.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from cityops.core.db import utcnow
from cityops.core.security import PrincipalDep, SessionDep
from cityops.flood import service
from cityops.flood.schemas import (
    EquipmentIn,
    LevelAction,
    OrderAction,
    OrderIn,
    PersonIn,
    PointIn,
    PointPatch,
    PositionIn,
    ProposalDecision,
    RuleIn,
    TeamIn,
)

router = APIRouter(prefix="/api/v1/flood", tags=["flood"])

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# --------------------------------------------------------------------------- board, level


@router.get("/board")
def board(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """积水监测一张图: every point in scope with depth, trend, status, who is assigned and
    who has arrived; the active response level; pending proposals."""
    return service.board(session, principal, utcnow())


@router.get("/level")
def current_level(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    events = service.list_events(session, principal, limit=1)
    active = events[0] if events and events[0].ended_at is None else None
    return {"event": service.event_out(active) if active else None}


@router.post("/level")
def change_level(body: LevelAction, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """启动/提级/降级/结束 the response (commander)."""
    event = service.change_level(
        session, principal, body.action, body.level, body.reason, utcnow(), body.version
    )
    return service.event_out(event)


@router.get("/events")
def list_events(
    principal: PrincipalDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    return [service.event_out(e) for e in service.list_events(session, principal, limit)]


@router.get("/events/{event_id}")
def get_event(event_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.event_out(service.get_event(session, principal, event_id))


@router.get("/events/{event_id}/report")
def event_report(event_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """After-event report: timeline, peak depth per point, response times and averages."""
    return service.event_report(session, principal, event_id, utcnow())


@router.get("/events/{event_id}/report.xlsx")
def event_report_xlsx(event_id: int, principal: PrincipalDep, session: SessionDep) -> Response:
    report = service.event_report(session, principal, event_id, utcnow())
    return Response(
        service.report_xlsx(report),
        media_type=XLSX_TYPE,
        headers={"Content-Disposition": f'attachment; filename="flood-event-{event_id}.xlsx"'},
    )


# --------------------------------------------------------------------------- proposals


@router.get("/proposals")
def list_proposals(
    principal: PrincipalDep,
    session: SessionDep,
    status: Literal["pending", "accepted", "dismissed", "superseded"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    visible = service.visible_point_codes(session, principal)
    return [
        service.proposal_out(p, visible)
        for p in service.list_proposals(session, principal, status, limit)
    ]


@router.post("/proposals/evaluate")
def evaluate_now(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Run the proposal rules on the gauges now (commander); records a proposal if needed."""
    return service.evaluate_now(session, principal, utcnow())


@router.post("/proposals/{proposal_id}")
def decide_proposal(
    proposal_id: int, body: ProposalDecision, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """Accept (start/raise the response) or dismiss a rule proposal (commander)."""
    p = service.decide_proposal(session, principal, proposal_id, body.action, body.note, utcnow())
    return service.proposal_out(p)


# --------------------------------------------------------------------------- orders


@router.get("/orders")
def list_orders(
    principal: PrincipalDep,
    session: SessionDep,
    status: Annotated[list[str] | None, Query()] = None,
    event_id: int | None = None,
    point_id: int | None = None,
    overdue: bool | None = None,
    mine: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Orders in scope (board roles) or the caller's own (``mine``, and every receiver)."""
    now = utcnow()
    orders = service.list_orders(
        session, principal, now, status, event_id, point_id, mine, overdue, limit
    )
    return [service.order_out(o, now) for o in orders]


@router.post("/orders", status_code=201)
def issue_order(body: OrderIn, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """调度指令 to a person or a team (commander)."""
    now = utcnow()
    return service.order_out(service.issue_order(session, principal, body.model_dump(), now), now)


@router.get("/orders/{order_id}")
def get_order(order_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.order_out(service.get_order(session, principal, order_id), utcnow())


@router.post("/orders/{order_id}/actions")
def order_action(
    order_id: int, body: OrderAction, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """签收 (acknowledge) / 出发 (en_route) / 到达 (arrive, with lon/lat) / 完成 (done) by the
    receiver, or by a commander on their behalf; 撤销 (cancel) by a commander."""
    now = utcnow()
    o = service.order_action(
        session, principal, order_id, body.action, now, body.version, body.lon, body.lat, body.note
    )
    return service.order_out(o, now)


# --------------------------------------------------------------------------- master data


@router.get("/points")
def list_points(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return [service.point_out(p) for p in service.list_points(session, principal)]


@router.post("/points", status_code=201)
def create_point(body: PointIn, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.point_out(service.create_point(session, principal, body.model_dump()))


@router.get("/points/{point_id}")
def get_point(point_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.point_out(service.get_point(session, principal, point_id))


@router.patch("/points/{point_id}")
def update_point(
    point_id: int, body: PointPatch, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    data = body.model_dump(exclude_unset=True)
    data["version"] = body.version
    return service.point_out(service.update_point(session, principal, point_id, data))


@router.get("/persons")
def list_persons(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return [service.person_out(p) for p in service.list_persons(session, principal)]


@router.post("/persons", status_code=201)
def create_person(body: PersonIn, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.person_out(service.save_person(session, principal, body.model_dump()))


@router.put("/persons/{person_id}")
def update_person(
    person_id: int, body: PersonIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return service.person_out(service.save_person(session, principal, body.model_dump(), person_id))


@router.get("/teams")
def list_teams(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return [service.team_out(t) for t in service.list_teams(session, principal)]


@router.post("/teams", status_code=201)
def create_team(body: TeamIn, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.team_out(service.save_team(session, principal, body.model_dump()))


@router.put("/teams/{team_id}")
def update_team(
    team_id: int, body: TeamIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return service.team_out(service.save_team(session, principal, body.model_dump(), team_id))


@router.get("/equipment")
def list_equipment(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return [service.equipment_out(e) for e in service.list_equipment(session, principal)]


@router.post("/equipment", status_code=201)
def create_equipment(
    body: EquipmentIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return service.equipment_out(service.save_equipment(session, principal, body.model_dump()))


@router.put("/equipment/{equipment_id}")
def update_equipment(
    equipment_id: int, body: EquipmentIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return service.equipment_out(
        service.save_equipment(session, principal, body.model_dump(), equipment_id)
    )


@router.post("/positions/{what}/{item_id}")
def report_position(
    what: Literal["teams", "persons", "equipment"],
    item_id: int,
    body: PositionIn,
    principal: PrincipalDep,
    session: SessionDep,
) -> dict[str, Any]:
    """Current position of a team, person or piece of equipment (own, or commander/admin)."""
    obj = service.set_position(session, principal, what, item_id, body.lon, body.lat, utcnow())
    return {"id": obj.id, "lon": obj.lon, "lat": obj.lat, "position_at": obj.position_at}


@router.get("/rules")
def list_rules(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return [service.rule_out(r) for r in service.list_rules(session, principal)]


@router.post("/rules", status_code=201)
def create_rule(body: RuleIn, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.rule_out(service.save_rule(session, principal, body.model_dump()))


@router.put("/rules/{rule_id}")
def update_rule(
    rule_id: int, body: RuleIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    return service.rule_out(service.save_rule(session, principal, body.model_dump(), rule_id))


@router.delete("/rules/{rule_id}", status_code=204)
def delete_rule(rule_id: int, principal: PrincipalDep, session: SessionDep) -> Response:
    service.delete_rule(session, principal, rule_id)
    return Response(status_code=204)

"""Flood command (防汛云调度) services: points and responders, response levels, rule
proposals, dispatch orders, the live board and the after-event report.

Every function takes a ``Session``; functions acting for a user take the ``Principal`` and
check role (403) and data scope (404: a district user does not learn that another
district's point exists). Times are passed in (``now``) so that tests can fix them.

Roles: ``commander`` (防汛指挥) changes levels, decides proposals, issues and cancels orders
and may act on an order for its receiver (recorded as ``on_behalf``); ``leader``,
``commander`` and ``admin`` see the board and reports (a district leader only its
district's points); the receiver of an order (a person's or team leader's login)
acknowledges it and reports progress; ``admin`` edits points, people, teams, equipment and
rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.core.security import Principal, ensure_region, region_visible, scope_filter
from cityops.flood import gauges
from cityops.flood.models import (
    EQUIPMENT_KINDS,
    LEVEL_ACTIONS,
    LEVELS,
    OPEN_ORDER_STATUSES,
    ORDER_STATUSES,
    POINT_KINDS,
    Equipment,
    LevelChange,
    Order,
    Proposal,
    ResponseEvent,
    ResponsiblePerson,
    Rule,
    Team,
    WaterloggingPoint,
    order_equipment,
)
from cityops.flood.rules import (
    LevelProposal,
    PointDepth,
    RuleSpec,
    ack_overdue,
    average,
    point_status,
    propose_level,
    seconds_between,
    trend,
)
from cityops.geo.models import Unit

BOARD_ROLES = ("leader", "commander", "admin")
COMMAND_ROLES = ("commander",)
ADMIN_ROLES = ("admin",)

#: How far back the board looks for the depth trend.
TREND_WINDOW = timedelta(minutes=30)
#: Depth readings older than this are not "current" (board shows them, rules ignore them).
DEPTH_MAX_AGE = timedelta(hours=1)
#: The proposal job looks at rain windows ending in the last hour.
PROPOSAL_LOOKBACK = timedelta(hours=1)


# --------------------------------------------------------------------------- helpers


def level_info(level: int | None) -> dict[str, Any] | None:
    if level is None:
        return None
    roman, zh, colour = LEVELS[level]
    return {"level": level, "name": f"{roman}级", "color_zh": zh, "color": colour}


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _require(principal: Principal, roles: Sequence[str], what: str) -> None:
    if not principal.has_role(*roles):
        raise Forbidden(f"{what} needs the role {' or '.join(roles)}", required_roles=list(roles))


def _check_version(obj: Any, version: int | None, what: str) -> None:
    if version is not None and version != obj.version:
        raise Conflict(
            f"{what} was changed by someone else (you saw version {version}, "
            f"it is now {obj.version}); reload it",
            current_version=obj.version,
        )


def _locate(session: Session, lon: float, lat: float, crs: str) -> tuple[int, str, float, float]:
    from cityops.geo.service import locate

    try:
        where = locate(session, lon, lat, crs)
    except NotFound as exc:
        raise Invalid(exc.message, field="lon", value=[lon, lat]) from exc
    return (
        int(where["grid"]["id"]),
        str(where["grid"]["code"]),
        float(where["wgs84"]["lon"]),
        float(where["wgs84"]["lat"]),
    )


def _get(session: Session, model: Any, id_: int, what: str) -> Any:
    obj = session.get(model, id_)
    if obj is None:
        raise NotFound(f"no {what} {id_}", field=f"{what}_id", value=id_)
    return obj


# --------------------------------------------------------------------------- serialisers


def person_out(p: ResponsiblePerson) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "phone": p.phone,
        "unit_id": p.unit_id,
        "role": p.role,
        "user_id": p.user_id,
        "lon": p.lon,
        "lat": p.lat,
        "position_at": _iso(p.position_at),
        "active": p.active,
    }


def point_out(p: WaterloggingPoint) -> dict[str, Any]:
    return {
        "id": p.id,
        "code": p.code,
        "name": p.name,
        "kind": p.kind,
        "kind_label": POINT_KINDS.get(p.kind, p.kind),
        "address": p.address,
        "lon": p.lon,
        "lat": p.lat,
        "grid_code": p.grid_code,
        "district_code": p.grid_code[:6],
        "street_code": p.grid_code[:9],
        "depth_device_code": p.depth_device_code,
        "rain_device_code": p.rain_device_code,
        "warn_depth_cm": p.warn_depth_cm,
        "close_depth_cm": p.close_depth_cm,
        "active": p.active,
        "note": p.note,
        "version": p.version,
        "persons": [person_out(x) for x in p.persons],
    }


def team_out(t: Team) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "unit_id": t.unit_id,
        "leader_name": t.leader_name,
        "leader_user_id": t.leader_user_id,
        "members": t.members,
        "phone": t.phone,
        "base": {"lon": t.base_lon, "lat": t.base_lat},
        "lon": t.lon if t.lon is not None else t.base_lon,
        "lat": t.lat if t.lat is not None else t.base_lat,
        "position_at": _iso(t.position_at),
        "status": t.status,
    }


def equipment_out(e: Equipment) -> dict[str, Any]:
    return {
        "id": e.id,
        "code": e.code,
        "name": e.name,
        "kind": e.kind,
        "kind_label": EQUIPMENT_KINDS.get(e.kind, e.kind),
        "capacity_m3h": e.capacity_m3h,
        "quantity": e.quantity,
        "team_id": e.team_id,
        "point_id": e.point_id,
        "status": e.status,
        "lon": e.lon,
        "lat": e.lat,
        "position_at": _iso(e.position_at),
    }


def rule_out(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "signal": r.signal,
        "window_minutes": r.window_minutes,
        "threshold": r.threshold,
        "relative_to": r.relative_to,
        "min_points": r.min_points,
        "level": r.level,
        "level_info": level_info(r.level),
        "enabled": r.enabled,
        "note": r.note,
    }


def receiver_name(o: Order) -> str:
    if o.person is not None:
        return o.person.name
    if o.team is not None:
        return o.team.name
    return "?"


def order_out(o: Order, now: datetime) -> dict[str, Any]:
    return {
        "id": o.id,
        "event_id": o.event_id,
        "point": {"id": o.point.id, "code": o.point.code, "name": o.point.name},
        "receiver": {
            "kind": "person" if o.person_id else "team",
            "id": o.person_id or o.team_id,
            "name": receiver_name(o),
            "phone": o.person.phone if o.person else (o.team.phone if o.team else None),
        },
        "task": o.task,
        "equipment": [
            {"id": e.id, "code": e.code, "name": e.name, "kind": e.kind} for e in o.equipment
        ],
        "status": o.status,
        "status_label": ORDER_STATUSES[o.status],
        "issued_at": _iso(o.issued_at),
        "issued_by": o.issued_by_name,
        "ack_due_at": _iso(o.ack_due_at),
        "ack_overdue": o.status != "cancelled"
        and ack_overdue(o.ack_due_at, o.acknowledged_at, now),
        "acknowledged_at": _iso(o.acknowledged_at),
        "en_route_at": _iso(o.en_route_at),
        "arrived_at": _iso(o.arrived_at),
        "arrival": (
            {"lon": o.arrival_lon, "lat": o.arrival_lat} if o.arrival_lon is not None else None
        ),
        "done_at": _iso(o.done_at),
        "cancelled_at": _iso(o.cancelled_at),
        "note": o.note,
        "history": o.history,
        "version": o.version,
    }


def event_out(e: ResponseEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "level": level_info(e.level),
        "peak_level": level_info(e.peak_level),
        "started_at": _iso(e.started_at),
        "ended_at": _iso(e.ended_at),
        "active": e.ended_at is None,
        "version": e.version,
        "changes": [change_out(c) for c in e.changes],
    }


def change_out(c: LevelChange) -> dict[str, Any]:
    return {
        "id": c.id,
        "action": c.action,
        "action_label": LEVEL_ACTIONS[c.action],
        "from_level": level_info(c.from_level),
        "to_level": level_info(c.to_level),
        "reason": c.reason,
        "at": _iso(c.at),
        "by": c.by_name,
        "proposal_id": c.proposal_id,
    }


def _scoped_reasons(
    reasons: list[dict[str, Any]], visible: set[str] | None
) -> list[dict[str, Any]]:
    """Reasons with the points outside a scoped user's district left out (counted only)."""
    if visible is None:
        return reasons
    out = []
    for r in reasons:
        if r.get("signal") == "ponding":
            shown = [x for x in r.get("points", []) if x.get("point") in visible]
            r = {**r, "points": shown, "points_elsewhere": len(r.get("points", [])) - len(shown)}
        out.append(r)
    return out


def visible_point_codes(session: Session, principal: Principal) -> set[str] | None:
    """Codes of the points a region-scoped user may see (None: the whole city)."""
    if principal.scope_region_code is None:
        return None
    return set(
        session.scalars(
            select(WaterloggingPoint.code).where(
                scope_filter(principal, WaterloggingPoint.grid_code)
            )
        )
    )


def proposal_out(p: Proposal, visible: set[str] | None = None) -> dict[str, Any]:
    """A proposal; ``visible``: point codes the reader may see (None: all)."""
    return {
        "id": p.id,
        "created_at": _iso(p.created_at),
        "level": level_info(p.level),
        "current_level": level_info(p.current_level),
        "event_id": p.event_id,
        "reasons": _scoped_reasons(p.reasons, visible),
        "status": p.status,
        "decided_at": _iso(p.decided_at),
        "decided_by": p.decided_by_name,
        "decision_note": p.decision_note,
    }


# --------------------------------------------------------------------------- points, people


def _points_query(principal: Principal) -> Any:
    return (
        select(WaterloggingPoint)
        .where(scope_filter(principal, WaterloggingPoint.grid_code))
        .options(selectinload(WaterloggingPoint.persons))
        .order_by(WaterloggingPoint.code)
    )


def list_points(session: Session, principal: Principal) -> list[WaterloggingPoint]:
    _require(principal, BOARD_ROLES, "the waterlogging point list")
    return list(session.scalars(_points_query(principal)))


def get_point(session: Session, principal: Principal, point_id: int) -> WaterloggingPoint:
    """A point the principal may see (404 outside the scope, 403 without a board role)."""
    _require(principal, BOARD_ROLES, "waterlogging points")
    point = session.get(WaterloggingPoint, point_id)
    if point is None or not region_visible(principal, point.grid_code):
        raise NotFound(f"no waterlogging point {point_id}", field="point_id", value=point_id)
    return point


def _persons(session: Session, ids: Iterable[int]) -> list[ResponsiblePerson]:
    wanted = sorted(set(ids))
    found = {
        p.id: p
        for p in session.scalars(select(ResponsiblePerson).where(ResponsiblePerson.id.in_(wanted)))
    }
    for pid in wanted:
        if pid not in found:
            raise Invalid(f"no responsible person {pid}", field="person_ids", value=pid)
    return [found[i] for i in wanted]


def _check_kind(kind: str, kinds: dict[str, str], field: str) -> None:
    if kind not in kinds:
        raise Invalid(
            f"unknown {field} {kind!r}: expected one of {', '.join(kinds)}", field=field, value=kind
        )


def _check_depths(warn: float, close: float) -> None:
    if warn >= close:
        raise Invalid(
            f"the warn depth ({warn} cm) must be below the close depth ({close} cm)",
            field="warn_depth_cm",
            value=warn,
        )


def create_point(session: Session, principal: Principal, data: dict[str, Any]) -> WaterloggingPoint:
    _require(principal, ADMIN_ROLES, "editing waterlogging points")
    _check_kind(data.get("kind", "underpass"), POINT_KINDS, "kind")
    _check_depths(data.get("warn_depth_cm", 15.0), data.get("close_depth_cm", 30.0))
    if session.scalar(select(WaterloggingPoint.id).where(WaterloggingPoint.code == data["code"])):
        raise Conflict(
            f"a waterlogging point {data['code']} exists already", field="code", value=data["code"]
        )
    grid_id, grid_code, lon, lat = _locate(
        session, data["lon"], data["lat"], data.get("crs", "wgs84")
    )
    ensure_region(principal, grid_code, write=True, what="point")
    point = WaterloggingPoint(
        code=data["code"],
        name=data["name"],
        kind=data.get("kind", "underpass"),
        address=data.get("address"),
        lon=lon,
        lat=lat,
        grid_id=grid_id,
        grid_code=grid_code,
        depth_device_code=data.get("depth_device_code"),
        rain_device_code=data.get("rain_device_code"),
        warn_depth_cm=data.get("warn_depth_cm", 15.0),
        close_depth_cm=data.get("close_depth_cm", 30.0),
        active=data.get("active", True),
        note=data.get("note"),
    )
    point.persons = _persons(session, data.get("person_ids") or [])
    session.add(point)
    session.flush()
    return point


def update_point(
    session: Session, principal: Principal, point_id: int, data: dict[str, Any]
) -> WaterloggingPoint:
    _require(principal, ADMIN_ROLES, "editing waterlogging points")
    point = get_point(session, principal, point_id)
    _check_version(point, data.get("version"), f"point {point.code}")
    if data.get("kind") is not None:
        _check_kind(data["kind"], POINT_KINDS, "kind")
    warn = data.get("warn_depth_cm") or point.warn_depth_cm
    close = data.get("close_depth_cm") or point.close_depth_cm
    _check_depths(warn, close)
    if (data.get("lon") is None) != (data.get("lat") is None):
        raise Invalid("give both lon and lat to move a point", field="lon", value=data.get("lon"))
    if data.get("lon") is not None:
        grid_id, grid_code, lon, lat = _locate(
            session, data["lon"], data["lat"], data.get("crs", "wgs84")
        )
        ensure_region(principal, grid_code, write=True, what="point")
        point.lon, point.lat, point.grid_id, point.grid_code = lon, lat, grid_id, grid_code
    for key in (
        "name",
        "kind",
        "address",
        "depth_device_code",
        "rain_device_code",
        "active",
        "note",
    ):
        if key in data and data[key] is not None:
            setattr(point, key, data[key])
    point.warn_depth_cm, point.close_depth_cm = warn, close
    if data.get("person_ids") is not None:
        point.persons = _persons(session, data["person_ids"])
    session.flush()
    return point


def _check_unit(session: Session, unit_id: int | None) -> None:
    if unit_id is not None and session.get(Unit, unit_id) is None:
        raise Invalid(f"no unit {unit_id}", field="unit_id", value=unit_id)


def _check_user(session: Session, user_id: int | None, field: str) -> None:
    from cityops.access.models import User

    if user_id is not None and session.get(User, user_id) is None:
        raise Invalid(f"no user {user_id}", field=field, value=user_id)


def list_persons(session: Session, principal: Principal) -> list[ResponsiblePerson]:
    _require(principal, BOARD_ROLES, "the responsible persons")
    return list(session.scalars(select(ResponsiblePerson).order_by(ResponsiblePerson.id)))


def save_person(
    session: Session, principal: Principal, data: dict[str, Any], person_id: int | None = None
) -> ResponsiblePerson:
    _require(principal, ADMIN_ROLES, "editing responsible persons")
    _check_unit(session, data.get("unit_id"))
    _check_user(session, data.get("user_id"), "user_id")
    person = (
        ResponsiblePerson()
        if person_id is None
        else _get(session, ResponsiblePerson, person_id, "person")
    )
    for key in ("name", "phone", "unit_id", "role", "user_id", "active"):
        setattr(person, key, data.get(key, getattr(person, key)))
    if data.get("lon") is not None and data.get("lat") is not None:
        person.lon, person.lat = data["lon"], data["lat"]
    if person_id is None:
        session.add(person)
    session.flush()
    return person


def list_teams(session: Session, principal: Principal) -> list[Team]:
    _require(principal, BOARD_ROLES, "the teams")
    return list(session.scalars(select(Team).order_by(Team.id)))


def save_team(
    session: Session, principal: Principal, data: dict[str, Any], team_id: int | None = None
) -> Team:
    _require(principal, ADMIN_ROLES, "editing teams")
    _check_unit(session, data.get("unit_id"))
    _check_user(session, data.get("leader_user_id"), "leader_user_id")
    clash = session.scalar(select(Team.id).where(Team.name == data["name"]))
    if clash is not None and clash != team_id:
        raise Conflict(
            f"a team named {data['name']} exists already", field="name", value=data["name"]
        )
    team = Team() if team_id is None else _get(session, Team, team_id, "team")
    for key in (
        "name",
        "unit_id",
        "leader_name",
        "leader_user_id",
        "members",
        "phone",
        "base_lon",
        "base_lat",
        "status",
    ):
        if key in data:
            setattr(team, key, data[key])
    if team_id is None:
        session.add(team)
    session.flush()
    return team


def list_equipment(session: Session, principal: Principal) -> list[Equipment]:
    _require(principal, BOARD_ROLES, "the equipment")
    return list(session.scalars(select(Equipment).order_by(Equipment.id)))


def save_equipment(
    session: Session, principal: Principal, data: dict[str, Any], equipment_id: int | None = None
) -> Equipment:
    _require(principal, ADMIN_ROLES, "editing equipment")
    _check_kind(data.get("kind", "pump"), EQUIPMENT_KINDS, "kind")
    if data.get("team_id") is not None:
        _get(session, Team, data["team_id"], "team")
    if data.get("point_id") is not None:
        _get(session, WaterloggingPoint, data["point_id"], "point")
    clash = session.scalar(select(Equipment.id).where(Equipment.code == data["code"]))
    if clash is not None and clash != equipment_id:
        raise Conflict(f"equipment {data['code']} exists already", field="code", value=data["code"])
    eq = (
        Equipment() if equipment_id is None else _get(session, Equipment, equipment_id, "equipment")
    )
    for key in (
        "code",
        "name",
        "kind",
        "capacity_m3h",
        "quantity",
        "team_id",
        "point_id",
        "status",
        "lon",
        "lat",
    ):
        if key in data:
            setattr(eq, key, data[key])
    if equipment_id is None:
        session.add(eq)
    session.flush()
    return eq


def set_position(
    session: Session,
    principal: Principal,
    what: str,
    id_: int,
    lon: float,
    lat: float,
    now: datetime,
) -> Any:
    """Update the current position of a team, person or piece of equipment (GPS report)."""
    model = {"teams": Team, "persons": ResponsiblePerson, "equipment": Equipment}[what]
    obj = _get(session, model, id_, what.rstrip("s"))
    own = (what == "persons" and obj.user_id == principal.user_id) or (
        what == "teams" and obj.leader_user_id == principal.user_id
    )
    if not own:
        _require(principal, ("commander", "admin"), "reporting another's position")
    obj.lon, obj.lat, obj.position_at = lon, lat, now
    session.flush()
    return obj


# --------------------------------------------------------------------------- rules


def list_rules(session: Session, principal: Principal) -> list[Rule]:
    _require(principal, BOARD_ROLES, "the proposal rules")
    return list(session.scalars(select(Rule).order_by(Rule.level.desc(), Rule.id)))


def save_rule(
    session: Session, principal: Principal, data: dict[str, Any], rule_id: int | None = None
) -> Rule:
    _require(principal, ADMIN_ROLES, "editing proposal rules")
    if data.get("signal") not in ("rainfall", "ponding"):
        raise Invalid(
            "signal must be rainfall or ponding", field="signal", value=data.get("signal")
        )
    if data.get("level") not in LEVELS:
        raise Invalid("level must be 1 (Ⅰ 红) … 4 (Ⅳ 蓝)", field="level", value=data.get("level"))
    if data["signal"] == "rainfall" and not (data.get("window_minutes") and data.get("threshold")):
        raise Invalid(
            "a rainfall rule needs window_minutes and threshold (mm)",
            field="window_minutes",
            value=data.get("window_minutes"),
        )
    if data["signal"] == "ponding" and data.get("relative_to") not in ("close", "warn"):
        if not data.get("threshold"):
            raise Invalid(
                "a ponding rule needs relative_to (close/warn) or threshold (cm)",
                field="relative_to",
                value=data.get("relative_to"),
            )
        data = {**data, "relative_to": None}
    data = {"min_points": 1, "enabled": True, **{k: v for k, v in data.items() if v is not None}}
    rule = Rule() if rule_id is None else _get(session, Rule, rule_id, "rule")
    for key in (
        "signal",
        "window_minutes",
        "threshold",
        "relative_to",
        "min_points",
        "level",
        "enabled",
        "note",
    ):
        setattr(rule, key, data.get(key))
    if rule_id is None:
        session.add(rule)
    session.flush()
    return rule


def delete_rule(session: Session, principal: Principal, rule_id: int) -> None:
    _require(principal, ADMIN_ROLES, "editing proposal rules")
    session.delete(_get(session, Rule, rule_id, "rule"))
    session.flush()


def rule_specs(session: Session) -> list[RuleSpec]:
    return [
        RuleSpec(
            id=r.id,
            signal=r.signal,
            level=r.level,
            window_minutes=r.window_minutes,
            threshold=r.threshold,
            relative_to=r.relative_to,
            min_points=r.min_points,
            enabled=r.enabled,
            note=r.note,
        )
        for r in session.scalars(select(Rule).where(Rule.enabled.is_(True)).order_by(Rule.id))
    ]


# --------------------------------------------------------------------------- levels


def active_event(session: Session) -> ResponseEvent | None:
    return session.scalar(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None)))


def change_level(
    session: Session,
    principal: Principal,
    action: str,
    level: int | None,
    reason: str,
    now: datetime,
    version: int | None = None,
    proposal_id: int | None = None,
) -> ResponseEvent:
    """启动 / 提级 / 降级 / 结束 the city's flood response (commander only)."""
    _require(principal, COMMAND_ROLES, "changing the flood response level")
    if action not in LEVEL_ACTIONS:
        raise Invalid(f"unknown action {action!r}", field="action", value=action)
    if not reason or not reason.strip():
        raise Invalid("give a reason", field="reason", value=reason)
    if action != "end" and level not in LEVELS:
        raise Invalid("level must be 1 (Ⅰ 红) … 4 (Ⅳ 蓝)", field="level", value=level)
    event = active_event(session)
    if action == "start":
        if event is not None:
            raise Conflict(
                f"a response is active already (event {event.id}, level {event.level}): raise or lower it",
                event_id=event.id,
            )
        assert level is not None
        event = ResponseEvent(level=level, peak_level=level, started_at=now, active_key=1)
        try:
            with session.begin_nested():  # a concurrent start loses on the unique active_key
                session.add(event)
                session.flush()
        except IntegrityError as exc:
            raise Conflict("another commander started a response just now: reload") from exc
        from_level = None
    else:
        if event is None:
            raise Conflict("no flood response is active: start one first")
        _check_version(event, version, f"response event {event.id}")
        from_level = event.level
        if action == "raise" and not (level is not None and level < event.level):
            raise Conflict(
                f"raising needs a higher level than the current {LEVELS[event.level][0]}级",
                field="level",
                value=level,
            )
        if action == "lower" and not (level is not None and level > event.level):
            raise Conflict(
                f"lowering needs a lower level than the current {LEVELS[event.level][0]}级",
                field="level",
                value=level,
            )
        if action == "end":
            level = None
            event.ended_at = now
            event.active_key = None
        else:
            assert level is not None
            event.level = level
            event.peak_level = min(event.peak_level, level)
    event.changes.append(
        LevelChange(
            action=action,
            from_level=from_level,
            to_level=level,
            reason=reason.strip(),
            at=now,
            by_user_id=principal.user_id,
            by_name=principal.display_name or principal.username,
            proposal_id=proposal_id,
        )
    )
    session.flush()
    _supersede(session, event if event.ended_at is None else None, now)
    return event


def _supersede(session: Session, event: ResponseEvent | None, now: datetime) -> None:
    """Pending proposals that no longer propose more than the active level are moot."""
    if event is None:
        return
    for p in session.scalars(
        select(Proposal).where(Proposal.status == "pending", Proposal.level >= event.level)
    ):
        p.status = "superseded"
        p.decided_at = now
        p.decision_note = f"the response is at {LEVELS[event.level][0]}级 already"
    session.flush()


def decide_proposal(
    session: Session,
    principal: Principal,
    proposal_id: int,
    action: str,
    note: str | None,
    now: datetime,
) -> Proposal:
    """Accept (start or raise the response to the proposed level) or dismiss a proposal."""
    _require(principal, COMMAND_ROLES, "deciding a level proposal")
    p = _get(session, Proposal, proposal_id, "proposal")
    if p.status != "pending":
        raise Conflict(f"proposal {p.id} is {p.status} already", status=p.status)
    who = principal.display_name or principal.username
    if action == "accept":
        event = active_event(session)
        roman = LEVELS[p.level][0]
        reason = note or f"采纳规则建议 #{p.id}: {roman}级"
        if event is None:
            event = change_level(
                session, principal, "start", p.level, reason, now, proposal_id=p.id
            )
        elif p.level < event.level:
            event = change_level(
                session, principal, "raise", p.level, reason, now, proposal_id=p.id
            )
        else:
            raise Conflict(
                f"the response is at {LEVELS[event.level][0]}级 already, not below {roman}级"
            )
        p.event_id = event.id
        p.status = "accepted"
    elif action == "dismiss":
        p.status = "dismissed"
    else:
        raise Invalid(f"unknown action {action!r}", field="action", value=action)
    p.decided_at = now
    p.decided_by_user_id = principal.user_id
    p.decided_by_name = who
    p.decision_note = note
    session.flush()
    return p


def list_proposals(
    session: Session, principal: Principal, status: str | None = None, limit: int = 50
) -> list[Proposal]:
    _require(principal, BOARD_ROLES, "level proposals")
    q = select(Proposal).order_by(Proposal.id.desc()).limit(limit)
    if status:
        q = q.where(Proposal.status == status)
    return list(session.scalars(q))


def current_depths(
    session: Session, points: Sequence[WaterloggingPoint], now: datetime
) -> dict[int, tuple[datetime, float]]:
    """Latest ponding depth of each point with a gauge: point id → (ts, cm)."""
    codes = [p.depth_device_code for p in points if p.depth_device_code]
    values = gauges.latest(session, [c for c in codes if c], gauges.PONDING)
    out: dict[int, tuple[datetime, float]] = {}
    for p in points:
        if p.depth_device_code and p.depth_device_code in values:
            out[p.id] = values[p.depth_device_code]
    return out


def evaluate_rules(session: Session, now: datetime) -> LevelProposal:
    """Read the gauges (rain: the longest rule window before the lookback; depths: fresh
    latest readings) and evaluate the rule table."""
    specs = rule_specs(session)
    points = list(
        session.scalars(select(WaterloggingPoint).where(WaterloggingPoint.active.is_(True)))
    )
    windows = [s.window_minutes for s in specs if s.signal == "rainfall" and s.window_minutes]
    rain: dict[str, list[tuple[datetime, float]]] = {}
    since = now - PROPOSAL_LOOKBACK
    if windows:
        start = since - timedelta(minutes=max(windows))
        codes = sorted({p.rain_device_code for p in points if p.rain_device_code})
        rain = {
            c: [r for r in rows if r[0] <= now]
            for c, rows in gauges.series_many(session, codes, gauges.RAINFALL, start, now).items()
        }
    latest = current_depths(session, points, now)
    depths = [
        PointDepth(p.code, latest[p.id][1], latest[p.id][0], p.warn_depth_cm, p.close_depth_cm)
        for p in points
        if p.id in latest and now - latest[p.id][0] <= DEPTH_MAX_AGE
    ]
    return propose_level(specs, rain, depths, since)


def record_proposal(session: Session, result: LevelProposal, now: datetime) -> Proposal | None:
    """Keep a proposal for the commander when it asks for more than the active level and no
    pending proposal asks for as much already (older, lower ones are superseded)."""
    if result.level is None:
        return None
    event = active_event(session)
    if event is not None and result.level >= event.level:
        return None
    pending = list(session.scalars(select(Proposal).where(Proposal.status == "pending")))
    if any(p.level <= result.level for p in pending):
        return None
    for p in pending:
        p.status = "superseded"
        p.decided_at = now
        p.decision_note = f"superseded by a proposal for {LEVELS[result.level][0]}级"
    proposal = Proposal(
        created_at=now,
        level=result.level,
        current_level=event.level if event else None,
        event_id=event.id if event else None,
        reasons=result.reasons,
        status="pending",
    )
    session.add(proposal)
    session.flush()
    return proposal


def evaluate_now(session: Session, principal: Principal, now: datetime) -> dict[str, Any]:
    """Run the rules now for a commander; answer the evaluation and any recorded proposal."""
    _require(principal, COMMAND_ROLES, "evaluating the proposal rules")
    result = evaluate_rules(session, now)
    p = record_proposal(session, result, now)
    return {
        "level": level_info(result.level),
        "reasons": result.reasons,
        "proposal": proposal_out(p) if p else None,
    }


def run_proposals(session: Session, now: datetime) -> dict[str, Any]:
    """The periodic job: evaluate the rules on the gauges and record a proposal if needed."""
    result = evaluate_rules(session, now)
    p = record_proposal(session, result, now)
    return {"level": result.level, "proposal_id": p.id if p else None}


# --------------------------------------------------------------------------- orders


def _receiver_user(o: Order) -> int | None:
    if o.person is not None:
        return o.person.user_id
    if o.team is not None:
        return o.team.leader_user_id
    return None


def _orders_query() -> Any:
    return select(Order).options(
        selectinload(Order.point),
        selectinload(Order.person),
        selectinload(Order.team),
        selectinload(Order.equipment),
    )


def _history(
    o: Order, status: str, now: datetime, principal: Principal, on_behalf: bool, **kw: Any
) -> None:
    entry = {
        "status": status,
        "at": now.isoformat(),
        "by": principal.display_name or principal.username,
        "by_user_id": principal.user_id,
        "on_behalf": on_behalf,
        **{k: v for k, v in kw.items() if v is not None},
    }
    o.history = [*o.history, entry]


def _notify(
    session: Session,
    user_ids: Iterable[int | None],
    kind: str,
    title: str,
    body: str | None,
    dedupe_key: str,
    now: datetime,
) -> int:
    """In-app notifications (the cases inbox), at most once per user and ``dedupe_key``."""
    from cityops.cases.models import Notification

    wanted = sorted({u for u in user_ids if u is not None})
    if not wanted:
        return 0
    have = set(
        session.scalars(
            select(Notification.user_id).where(
                Notification.dedupe_key == dedupe_key, Notification.user_id.in_(wanted)
            )
        )
    )
    new = [u for u in wanted if u not in have]
    for uid in new:
        session.add(
            Notification(
                user_id=uid,
                kind=kind,
                title=title[:200],
                body=body,
                dedupe_key=dedupe_key,
                created_at=now,
            )
        )
    session.flush()
    return len(new)


def flag_overdue(session: Session, now: datetime) -> list[int]:
    """The periodic job: orders not acknowledged by their due time notify their issuer and
    receiver once (签收超时). Returns the orders newly notified."""
    late = session.scalars(
        _orders_query().where(Order.status == "issued", Order.ack_due_at < now).order_by(Order.id)
    ).all()
    out = []
    for o in late:
        minutes = int((now - o.ack_due_at).total_seconds() // 60)
        n = _notify(
            session,
            [o.issued_by_user_id, _receiver_user(o)],
            "flood_overdue",
            f"防汛指令签收超时: {receiver_name(o)} → {o.point.name}",
            f"指令 #{o.id} 应于 {o.ack_due_at.isoformat()} 前签收, 已超时 {minutes} 分钟",
            f"flood_order:{o.id}:overdue",
            now,
        )
        if n:
            out.append(o.id)
    return out


def issue_order(
    session: Session,
    principal: Principal,
    data: dict[str, Any],
    now: datetime,
    notify: bool = True,
) -> Order:
    """调度: send a person or a team to a point with a task and equipment (commander); the
    receiver's login gets it in the inbox (``notify``; off for the demo's past orders)."""
    _require(principal, COMMAND_ROLES, "issuing dispatch orders")
    point = get_point(session, principal, data["point_id"])
    if not point.active:
        raise Conflict(f"point {point.code} is not active", field="point_id", value=point.id)
    person = team = None
    if (data.get("person_id") is None) == (data.get("team_id") is None):
        raise Invalid(
            "give exactly one receiver: person_id or team_id", field="person_id", value=None
        )
    if data.get("person_id") is not None:
        person = _get(session, ResponsiblePerson, data["person_id"], "person")
        if not person.active:
            raise Conflict(f"person {person.id} is not active", field="person_id", value=person.id)
    else:
        team = _get(session, Team, data["team_id"], "team")
        if team.status == "off":
            raise Conflict(f"team {team.name} is off duty", field="team_id", value=team.id)
    eq_ids = sorted(set(data.get("equipment_ids") or []))
    equipment = list(session.scalars(select(Equipment).where(Equipment.id.in_(eq_ids))))
    missing = set(eq_ids) - {e.id for e in equipment}
    if missing:
        raise Invalid(f"no equipment {min(missing)}", field="equipment_ids", value=min(missing))
    busy = session.execute(
        select(order_equipment.c.equipment_id, Order.id)
        .join(Order, Order.id == order_equipment.c.order_id)
        .where(order_equipment.c.equipment_id.in_(eq_ids), Order.status.in_(OPEN_ORDER_STATUSES))
    ).first()
    if busy is not None:
        raise Conflict(
            f"equipment {busy[0]} is assigned to open order {busy[1]}",
            field="equipment_ids",
            value=busy[0],
        )
    for e in equipment:
        if e.status == "repair":
            raise Conflict(f"equipment {e.code} is under repair", field="equipment_ids", value=e.id)
    event = active_event(session)
    order = Order(
        event_id=event.id if event else None,
        point=point,
        person=person,
        team=team,
        task=data["task"],
        status="issued",
        issued_at=now,
        issued_by_user_id=principal.user_id,
        issued_by_name=principal.display_name or principal.username,
        ack_due_at=now + timedelta(minutes=int(data.get("ack_minutes") or 10)),
        history=[],
    )
    order.equipment = equipment
    _history(order, "issued", now, principal, False)
    session.add(order)
    session.flush()
    _notify(
        session,
        [person.user_id if person else (team.leader_user_id if team else None)] if notify else [],
        "flood_order",
        f"防汛调度指令: 赶赴{point.name}",
        f"{data['task']} (请于 {order.ack_due_at.isoformat()} 前签收)",
        f"flood_order:{order.id}:issued",
        now,
    )
    for e in equipment:
        e.status = "in_use"
    if team is not None:
        team.status = "dispatched"
    session.flush()
    return order


def _visible_order(session: Session, principal: Principal, order_id: int) -> Order:
    o = session.scalar(_orders_query().where(Order.id == order_id))
    if o is None:
        raise NotFound(f"no order {order_id}", field="order_id", value=order_id)
    mine = principal.user_id == _receiver_user(o)
    if mine:
        return o
    if principal.has_role(*BOARD_ROLES) and region_visible(principal, o.point.grid_code):
        return o
    raise NotFound(f"no order {order_id}", field="order_id", value=order_id)


def get_order(session: Session, principal: Principal, order_id: int) -> Order:
    return _visible_order(session, principal, order_id)


#: action → (states it may start from, new state)
ORDER_FLOW: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("issued",), "acknowledged"),
    "en_route": (("acknowledged",), "en_route"),
    "arrive": (("acknowledged", "en_route"), "arrived"),
    "done": (("arrived",), "done"),
    "cancel": (OPEN_ORDER_STATUSES, "cancelled"),
}


def order_action(
    session: Session,
    principal: Principal,
    order_id: int,
    action: str,
    now: datetime,
    version: int | None = None,
    lon: float | None = None,
    lat: float | None = None,
    note: str | None = None,
) -> Order:
    """签收 / 出发 / 到达 / 完成 by the receiver (or a commander on their behalf, recorded);
    撤销 by a commander."""
    o = _visible_order(session, principal, order_id)
    if action not in ORDER_FLOW:
        raise Invalid(f"unknown action {action!r}", field="action", value=action)
    mine = principal.user_id == _receiver_user(o)
    if action == "cancel" or not mine:
        _require(principal, COMMAND_ROLES, f"{action} for another's order")
    on_behalf = action != "cancel" and not mine
    _check_version(o, version, f"order {o.id}")
    starts, new = ORDER_FLOW[action]
    if o.status not in starts:
        raise Conflict(
            f"order {o.id} is {ORDER_STATUSES[o.status]}: cannot {action}",
            status=o.status,
            action=action,
        )
    if action == "arrive" and (lon is None or lat is None):
        raise Invalid("arrival needs the position (lon, lat)", field="lon", value=lon)
    o.status = new
    if action == "acknowledge":
        o.acknowledged_at = now
    elif action == "en_route":
        o.en_route_at = now
    elif action == "arrive":
        o.arrived_at, o.arrival_lon, o.arrival_lat = now, lon, lat
        holder: ResponsiblePerson | Team | None = o.person or o.team
        if holder is not None:
            holder.lon, holder.lat, holder.position_at = lon, lat, now
        if o.team is not None:
            o.team.status = "on_site"
        for e in o.equipment:
            e.lon, e.lat, e.position_at = lon, lat, now
    elif action in ("done", "cancel"):
        if action == "done":
            o.done_at = now
        else:
            o.cancelled_at = now
        for e in o.equipment:
            e.status = "available"
        if o.team is not None:
            others = session.scalar(
                select(Order.id).where(
                    Order.team_id == o.team.id,
                    Order.id != o.id,
                    Order.status.in_(OPEN_ORDER_STATUSES),
                )
            )
            if others is None:
                o.team.status = "standby"
    if note:
        o.note = note
    _history(o, new, now, principal, on_behalf, lon=lon, lat=lat, note=note)
    session.flush()
    return o


def list_orders(
    session: Session,
    principal: Principal,
    now: datetime,
    status: Sequence[str] | None = None,
    event_id: int | None = None,
    point_id: int | None = None,
    mine: bool = False,
    overdue: bool | None = None,
    limit: int = 200,
) -> list[Order]:
    """Orders the principal may see: their own (receivers), or those of points in scope."""
    q = _orders_query().order_by(Order.id.desc()).limit(limit)
    own = or_(
        Order.person_id.in_(
            select(ResponsiblePerson.id).where(ResponsiblePerson.user_id == principal.user_id)
        ),
        Order.team_id.in_(select(Team.id).where(Team.leader_user_id == principal.user_id)),
    )
    if mine or not principal.has_role(*BOARD_ROLES):
        q = q.where(own)
    else:
        q = q.join(WaterloggingPoint, WaterloggingPoint.id == Order.point_id).where(
            scope_filter(principal, WaterloggingPoint.grid_code)
        )
    if status:
        q = q.where(Order.status.in_(list(status)))
    if event_id is not None:
        q = q.where(Order.event_id == event_id)
    if point_id is not None:
        q = q.where(Order.point_id == point_id)
    if overdue is not None:
        late = or_(
            Order.acknowledged_at > Order.ack_due_at,
            (Order.acknowledged_at.is_(None))
            & (Order.ack_due_at < now)
            & (Order.status != "cancelled"),
        )
        q = q.where(late if overdue else ~late)
    return list(session.scalars(q))


# --------------------------------------------------------------------------- board


def board(session: Session, principal: Principal, now: datetime) -> dict[str, Any]:
    """The live board: every point in scope with depth, trend, status, assignees, arrivals;
    the active level and pending proposals. A fixed number of queries whatever the size."""
    _require(principal, BOARD_ROLES, "the flood board")
    points = list(
        session.scalars(_points_query(principal).where(WaterloggingPoint.active.is_(True)))
    )
    ids = [p.id for p in points]
    orders = (
        list(
            session.scalars(
                select(Order)
                .where(Order.point_id.in_(ids), Order.status.in_(OPEN_ORDER_STATUSES))
                .options(selectinload(Order.person), selectinload(Order.team))
                .order_by(Order.id)
            )
        )
        if ids
        else []
    )
    by_point: dict[int, list[Order]] = {}
    for o in orders:
        by_point.setdefault(o.point_id, []).append(o)
    latest = current_depths(session, points, now)
    codes = [p.depth_device_code for p in points if p.depth_device_code]
    recent = gauges.series_many(
        session, [c for c in codes if c], gauges.PONDING, now - TREND_WINDOW, now
    )
    event = active_event(session)
    pending = list(
        session.scalars(select(Proposal).where(Proposal.status == "pending").order_by(Proposal.id))
    )
    counts = {"normal": 0, "warning": 0, "closed": 0, "unknown": 0}
    out_points = []
    overdue_total = 0
    for p in points:
        reading = latest.get(p.id)
        depth = reading[1] if reading else None
        stale = reading is not None and now - reading[0] > DEPTH_MAX_AGE
        status = point_status(None if stale else depth, p.warn_depth_cm, p.close_depth_cm)
        counts[status] += 1
        assigned = []
        for o in by_point.get(p.id, []):
            late = ack_overdue(o.ack_due_at, o.acknowledged_at, now)
            overdue_total += late
            assigned.append(
                {
                    "order_id": o.id,
                    "kind": "person" if o.person_id else "team",
                    "name": receiver_name(o),
                    "status": o.status,
                    "status_label": ORDER_STATUSES[o.status],
                    "ack_overdue": late,
                    "issued_at": _iso(o.issued_at),
                    "arrived_at": _iso(o.arrived_at),
                }
            )
        out_points.append(
            {
                "id": p.id,
                "code": p.code,
                "name": p.name,
                "kind": p.kind,
                "lon": p.lon,
                "lat": p.lat,
                "district_code": p.grid_code[:6],
                "depth_cm": depth,
                "depth_at": _iso(reading[0]) if reading else None,
                "stale": stale,
                "trend": trend(recent.get(p.depth_device_code or "", [])),
                "status": status,
                "warn_depth_cm": p.warn_depth_cm,
                "close_depth_cm": p.close_depth_cm,
                "persons": [
                    {"id": x.id, "name": x.name, "phone": x.phone, "role": x.role}
                    for x in p.persons
                ],
                "assigned": assigned,
                "arrived": [a["name"] for a in assigned if a["status"] == "arrived"],
            }
        )
    return {
        "generated_at": now.isoformat(),
        "gauges_available": gauges.available(),
        "event": (
            {
                "id": event.id,
                "started_at": _iso(event.started_at),
                "version": event.version,
                **(level_info(event.level) or {}),
            }
            if event
            else None
        ),
        "pending_proposals": [
            proposal_out(x, None if principal.city_wide else {p.code for p in points})
            for x in pending
        ],
        "teams": [
            {
                "id": t.id,
                "name": t.name,
                "status": t.status,
                "members": t.members,
                "lon": t.lon if t.lon is not None else t.base_lon,
                "lat": t.lat if t.lat is not None else t.base_lat,
                "position_at": _iso(t.position_at),
            }
            for t in session.scalars(select(Team).order_by(Team.id))
        ],
        "summary": {
            **counts,
            "points": len(points),
            "open_orders": len(orders),
            "overdue_orders": overdue_total,
        },
        "points": out_points,
    }


# --------------------------------------------------------------------------- report


def get_event(session: Session, principal: Principal, event_id: int) -> ResponseEvent:
    _require(principal, BOARD_ROLES, "flood responses")
    return _get(session, ResponseEvent, event_id, "event")


def list_events(session: Session, principal: Principal, limit: int = 50) -> list[ResponseEvent]:
    _require(principal, BOARD_ROLES, "flood responses")
    return list(
        session.scalars(
            select(ResponseEvent)
            .options(selectinload(ResponseEvent.changes))
            .order_by(ResponseEvent.id.desc())
            .limit(limit)
        )
    )


def event_report(
    session: Session, principal: Principal, event_id: int, now: datetime
) -> dict[str, Any]:
    """After-event report (复盘): timeline, peak depth per point, response times."""
    event = get_event(session, principal, event_id)
    end = event.ended_at or now
    orders = [
        o
        for o in session.scalars(
            _orders_query().where(Order.event_id == event.id).order_by(Order.id)
        )
        if region_visible(principal, o.point.grid_code)
    ]
    linked = {c.proposal_id for c in event.changes if c.proposal_id}
    proposals = list(
        session.scalars(
            select(Proposal)
            .where(
                or_(
                    Proposal.event_id == event.id,
                    Proposal.id.in_(linked),
                    (Proposal.created_at >= event.started_at) & (Proposal.created_at <= end),
                )
            )
            .order_by(Proposal.id)
        )
    )
    timeline: list[dict[str, Any]] = []
    for c in event.changes:
        timeline.append(
            {
                "at": c.at,
                "kind": "level",
                "action": c.action,
                "text": f"{LEVEL_ACTIONS[c.action]}"
                + (f" {LEVELS[c.to_level][0]}级({LEVELS[c.to_level][1]})" if c.to_level else "")
                + f": {c.reason}",
                "by": c.by_name,
                "level": c.to_level,
            }
        )
    for p in proposals:
        timeline.append(
            {
                "at": p.created_at,
                "kind": "proposal",
                "action": "proposed",
                "text": f"规则建议 #{p.id}: {LEVELS[p.level][0]}级",
                "by": "system",
                "level": p.level,
            }
        )
        if p.decided_at and p.status in ("accepted", "dismissed"):
            timeline.append(
                {
                    "at": p.decided_at,
                    "kind": "proposal",
                    "action": p.status,
                    "text": f"建议 #{p.id} {'采纳' if p.status == 'accepted' else '驳回'}",
                    "by": p.decided_by_name,
                    "level": p.level,
                }
            )
    for o in orders:
        for h in o.history:
            label = ORDER_STATUSES.get(h["status"], h["status"])
            behalf = " (代签)" if h.get("on_behalf") else ""
            timeline.append(
                {
                    "at": datetime.fromisoformat(h["at"]),
                    "kind": "order",
                    "action": h["status"],
                    "text": f"指令 #{o.id} {label}{behalf}: {receiver_name(o)} → {o.point.name}",
                    "by": h.get("by"),
                    "order_id": o.id,
                    "on_behalf": bool(h.get("on_behalf")),
                }
            )
    rank = {"level": 0, "proposal": 1, "order": 2}
    timeline.sort(key=lambda r: (r["at"], rank[r["kind"]]))
    for row in timeline:
        row["at"] = row["at"].isoformat()

    # peak depth per point over the event
    points = list(
        session.scalars(
            select(WaterloggingPoint)
            .where(scope_filter(principal, WaterloggingPoint.grid_code))
            .order_by(WaterloggingPoint.code)
        )
    )
    codes = [p.depth_device_code for p in points if p.depth_device_code]
    series = gauges.series_many(
        session, [c for c in codes if c], gauges.PONDING, event.started_at, end
    )
    peaks: list[dict[str, Any]] = []
    for pt in points:
        rows = series.get(pt.depth_device_code or "", [])
        if not rows:
            continue
        ts, val = max(rows, key=lambda r: (r[1], -r[0].timestamp()))
        peaks.append(
            {
                "point_id": pt.id,
                "code": pt.code,
                "name": pt.name,
                "peak_cm": val,
                "peak_at": ts.isoformat(),
                "status_at_peak": point_status(val, pt.warn_depth_cm, pt.close_depth_cm),
            }
        )
    peaks.sort(key=lambda r: (-r["peak_cm"], r["code"]))

    responses = []
    for o in orders:
        responses.append(
            {
                "order_id": o.id,
                "point": o.point.name,
                "receiver": receiver_name(o),
                "status": o.status,
                "issued_at": _iso(o.issued_at),
                "acknowledged_at": _iso(o.acknowledged_at),
                "arrived_at": _iso(o.arrived_at),
                "issue_to_ack_s": seconds_between(o.issued_at, o.acknowledged_at),
                "ack_to_arrival_s": seconds_between(o.acknowledged_at, o.arrived_at),
                "issue_to_arrival_s": seconds_between(o.issued_at, o.arrived_at),
                "ack_overdue": o.status != "cancelled"
                and ack_overdue(o.ack_due_at, o.acknowledged_at, end),
                "acknowledged_on_behalf": any(
                    h["status"] == "acknowledged" and h.get("on_behalf") for h in o.history
                ),
            }
        )
    return {
        "event": {
            "id": event.id,
            "started_at": _iso(event.started_at),
            "ended_at": _iso(event.ended_at),
            "active": event.ended_at is None,
            "duration_s": (end - event.started_at).total_seconds(),
            "peak_level": level_info(event.peak_level),
            "level": level_info(event.level),
        },
        "timeline": timeline,
        "peaks": peaks,
        "responses": responses,
        "averages": {
            "orders": len(responses),
            "acknowledged": sum(1 for r in responses if r["acknowledged_at"]),
            "arrived": sum(1 for r in responses if r["arrived_at"]),
            "ack_overdue": sum(1 for r in responses if r["ack_overdue"]),
            "issue_to_ack_s": average(r["issue_to_ack_s"] for r in responses),
            "ack_to_arrival_s": average(r["ack_to_arrival_s"] for r in responses),
            "issue_to_arrival_s": average(r["issue_to_arrival_s"] for r in responses),
        },
        "generated_at": now.isoformat(),
    }


def report_xlsx(report: dict[str, Any]) -> bytes:
    """The report as an Excel workbook: 概要, 时间线, 积水峰值, 响应时间."""
    import io

    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    bold = Font(bold=True)
    ev = report["event"]
    ws = wb.active
    assert ws is not None
    ws.title = "概要"
    av = report["averages"]
    rows: list[tuple[str, Any]] = [
        ("响应事件", ev["id"]),
        ("开始", ev["started_at"]),
        ("结束", ev["ended_at"] or "进行中"),
        ("持续(分钟)", round(ev["duration_s"] / 60, 1)),
        ("最高响应级别", ev["peak_level"]["name"] + ev["peak_level"]["color_zh"]),
        ("指令数", av["orders"]),
        ("已签收", av["acknowledged"]),
        ("已到达", av["arrived"]),
        ("签收超时", av["ack_overdue"]),
        ("平均签收用时(秒)", av["issue_to_ack_s"]),
        ("平均签收至到达(秒)", av["ack_to_arrival_s"]),
        ("平均下达至到达(秒)", av["issue_to_arrival_s"]),
    ]
    for k, v in rows:
        ws.append([k, v])
        ws.cell(ws.max_row, 1).font = bold

    def sheet(title: str, header: list[str], data: Iterable[list[Any]]) -> None:
        s = wb.create_sheet(title)
        s.append(header)
        for c in s[1]:
            c.font = bold
        for r in data:
            s.append(r)
        s.freeze_panes = "A2"

    sheet(
        "时间线",
        ["时间", "类型", "动作", "内容", "操作人"],
        ([t["at"], t["kind"], t["action"], t["text"], t["by"]] for t in report["timeline"]),
    )
    sheet(
        "积水峰值",
        ["点位编码", "点位", "峰值(cm)", "峰值时间", "状态"],
        (
            [p["code"], p["name"], p["peak_cm"], p["peak_at"], p["status_at_peak"]]
            for p in report["peaks"]
        ),
    )
    sheet(
        "响应时间",
        [
            "指令",
            "点位",
            "接收人",
            "状态",
            "下达",
            "签收",
            "到达",
            "签收用时(秒)",
            "签收至到达(秒)",
            "下达至到达(秒)",
            "签收超时",
            "代签",
        ],
        (
            [
                r["order_id"],
                r["point"],
                r["receiver"],
                ORDER_STATUSES[r["status"]],
                r["issued_at"],
                r["acknowledged_at"],
                r["arrived_at"],
                r["issue_to_ack_s"],
                r["ack_to_arrival_s"],
                r["issue_to_arrival_s"],
                "是" if r["ack_overdue"] else "否",
                "是" if r["acknowledged_on_behalf"] else "否",
            ]
            for r in report["responses"]
        ),
    )
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()

"""The closed loop (数字城管 闭环), enforced here and nowhere else.

``create_case`` files a report (上报); ``perform`` runs one action on a case. Every action
checks, in this order: the case exists and is in the caller's scope (404 otherwise), the
caller has a role for the action (403), the version the caller saw is current and the case
is in a stage the action starts from (409 with the reason). Only then does it change the
case — so a refused action leaves the case untouched. Each change writes a history event
(case_events) and, through the ORM hooks, an audit row.

Stages (the step a case waits for): accept 待受理 → verify 待核实 (public, hotline, video) →
file 待立案 → dispatch 待派遣 (or straight to sign when a dispatch rule or the category's
default handler decides) → sign 待签收 → handle 待处置 → check 待核查 → close 待结案 →
closed 已结案. Side flows: reject 不予受理, void 作废, return_review 回退待审批 → dispatch
(改派), extension requests (延期, tiered approval), parked 挂账 (clock stopped) → handle,
rework 返工 (check fails → handle), supervise 督办, merge 合并. An inspector's self-handled
report (自行处置) is filed and closed in one step.

Deadlines come from :mod:`cityops.worktime` (stage × category × urgency limits on the
working-time clock). The clock pauses while a 回退/延期/挂账 request waits for its decision
and while a case is parked; when it resumes the deadline moves by the time lost.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import h3
from sqlalchemy import and_, create_engine, exists, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cityops.access.models import User
from cityops.cases import webhooks
from cityops.cases.models import (
    ACTOR_ACTIONS,
    CLOSE_TYPES,
    MACHINE_SOURCES,
    NEEDS_VERIFY,
    OPEN_STAGES,
    SOURCES,
    STAGES,
    ApprovalRequest,
    Case,
    CaseAttachment,
    CaseEvent,
    CaseSequence,
    CaseUnit,
    DispatchRule,
    Notification,
    track_actors,
)
from cityops.core.db import utcnow
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.core.security import Principal, region_visible, scope_filter
from cityops.geo.crs import distance_m
from cityops.geo.index import indexes_for
from cityops.geo.models import (
    H3_RES,
    URGENCIES,
    Category,
    CitySetting,
    Component,
    Region,
    Unit,
    grid_inspectors,
    unit_regions,
)
from cityops.geo.service import chosen_standard, locate
from cityops.worktime import service as wt
from cityops.worktime.service import TZ

#: Roles of the supervision and command centre: they see reporters' personal data.
CENTRE_ROLES = frozenset({"operator", "shift_leader", "dispatcher", "admin"})
#: Which roles may report from which channel.
SOURCE_ROLES: dict[str, frozenset[str]] = {
    "inspector": frozenset({"inspector"}),
    "self": frozenset({"inspector"}),
    "public": frozenset({"operator", "admin", "system"}),
    "hotline": frozenset({"operator", "admin"}),
    "video": frozenset({"operator", "admin", "system"}),
    "iot": frozenset({"operator", "admin", "system"}),
    "leader": frozenset({"leader", "operator", "shift_leader"}),
    "upper": frozenset({"operator", "shift_leader"}),
    "media": frozenset({"operator", "shift_leader"}),
}
#: The time-limited stage whose clock runs while a case waits in a workflow stage.
CLOCK_STAGE = {
    "accept": "accept",
    "verify": "verify",
    "file": "file",
    "dispatch": "dispatch",
    "sign": "sign",
    "handle": "handle",
    "return_review": "handle",
    "parked": "handle",
    "check": "check",
    "close": "close",
}
DUPLICATE_RADIUS_M = 50.0
DUPLICATE_WINDOW = timedelta(days=3)
WARN_FRACTION = 0.8


# --------------------------------------------------------------------------- helpers


def _now(now: datetime | None) -> datetime:
    return now or utcnow()


def _require(principal: Principal, roles: frozenset[str] | set[str], action: str) -> None:
    if not principal.roles.intersection(roles):
        names = ", ".join(sorted(roles))
        raise Forbidden(
            f"{action}: needs one of the roles {names}", action=action, roles=sorted(roles)
        )


def _text(payload: dict[str, Any], key: str, action: str, required: bool = True) -> str | None:
    v = payload.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise Invalid(f"{action}: field '{key}' is required", field=key, action=action)
        return None
    if not isinstance(v, str):
        raise Invalid(f"{action}: field '{key}' must be text", field=key, value=v)
    return v.strip()


#: Roles that take part in no case work: they see cases only through their own assignments
#: (third-party review, comprehensive evaluation), never through the case lists.
NO_CASE_ROLES = frozenset({"reviewer", "evaluator"})


def _no_case_access(principal: Principal) -> bool:
    return bool(principal.roles) and principal.roles <= NO_CASE_ROLES


def case_visible(session: Session, principal: Principal, case: Case) -> bool:
    """Scope: unit-scoped users see their unit's cases; others their region (code prefix)."""
    if _no_case_access(principal):
        return False
    if principal.scope_unit_only:
        if principal.unit_id is None:
            return False
        return any(u.unit_id == principal.unit_id for u in case.units)
    if "inspector" in principal.roles and case.assignee_user_id == principal.user_id:
        return True
    return region_visible(principal, case.grid_code)


def load_case(
    session: Session, principal: Principal, case_id: int, *, for_update: bool = False
) -> Case:
    q = select(Case).where(Case.id == case_id)
    if for_update and session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    case = session.scalars(q).first()
    if case is None or not case_visible(session, principal, case):
        raise NotFound(f"no case {case_id}", case_id=case_id)
    return case


def _event(
    session: Session,
    case: Case,
    principal: Principal | None,
    action: str,
    now: datetime,
    from_stage: str | None,
    note: str | None = None,
    unit_id: int | None = None,
    data: dict[str, Any] | None = None,
) -> CaseEvent:
    actor_id = principal.user_id if principal and principal.user_id > 0 else None
    if action in ACTOR_ACTIONS:
        track_actors(case, action, now, actor_id, data)
    ev = CaseEvent(
        case_id=case.id,
        at=now,
        actor_id=actor_id,
        actor_name=principal.username if principal else "system",
        action=action,
        from_stage=from_stage,
        to_stage=case.stage,
        unit_id=unit_id,
        note=note,
        data=data,
    )
    session.add(ev)
    return ev


def _attach(
    session: Session,
    case: Case,
    ids: Any,
    purpose: str,
    principal: Principal,
    event: CaseEvent | None,
) -> list[CaseAttachment]:
    """Bind previously uploaded attachments (``attachment_ids``) to the case."""
    if not ids:
        return []
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise Invalid(
            "attachment_ids must be a list of attachment ids", field="attachment_ids", value=ids
        )
    rows = session.scalars(select(CaseAttachment).where(CaseAttachment.id.in_(ids))).all()
    found = {a.id: a for a in rows}
    for i in ids:
        a = found.get(i)
        if a is None:
            raise Invalid(f"no attachment {i}", field="attachment_ids", value=i)
        if a.case_id not in (None, case.id):
            raise Invalid(
                f"attachment {i} belongs to another case", field="attachment_ids", value=i
            )
        if a.uploaded_by not in (None, principal.user_id):
            raise Invalid(
                f"attachment {i} was uploaded by someone else", field="attachment_ids", value=i
            )
    session.flush()
    for a in rows:
        a.case_id = case.id
        a.purpose = purpose
        a.event_id = event.id if event is not None and event.id is not None else None
    return list(rows)


def next_number(session: Session, now: datetime) -> str:
    """Readable case number: local date + 5-digit daily sequence, e.g. 2026112200042.

    On PostgreSQL the counter is taken in its own short transaction, so concurrent intakes
    do not queue on the day's counter row until each commits (a failed intake leaves a gap
    in the numbers, which is harmless). SQLite serialises writers anyway.
    """
    day = now.astimezone(TZ).date()
    return f"{day:%Y%m%d}{reserve_numbers(session, day, 1):05d}"


def reserve_numbers(session: Session, day: date, n: int) -> int:
    """Take ``n`` numbers of the day's sequence at once; returns the last one taken (the
    numbers are ``last - n + 1 … last``). PostgreSQL: in a short transaction of its own (see
    :func:`next_number`); SQLite: in the session's transaction."""
    dialect = session.get_bind().dialect.name
    ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(CaseSequence)
    stmt = (
        ins.values(day=day, last=n)
        .on_conflict_do_update(index_elements=["day"], set_={"last": CaseSequence.last + n})
        .returning(CaseSequence.last)
    )
    if dialect == "postgresql":
        with _counter_engine(session).begin() as conn:
            return int(conn.execute(stmt).scalar_one())
    return int(session.execute(stmt).scalar_one())


_counter_engines: dict[str, Engine] = {}
_counter_lock = threading.Lock()


def _counter_engine(session: Session) -> Engine:
    """A small pool of its own for the counter: a request holding its main connection
    never waits for a second one from the same pool (which could deadlock under load)."""
    engine = session.get_bind().engine
    key = engine.url.render_as_string(hide_password=False)
    with _counter_lock:
        e = _counter_engines.get(key)
        if e is None:
            e = _counter_engines[key] = create_engine(
                engine.url, pool_size=2, max_overflow=6, pool_pre_ping=True
            )
        return e


_TRACK_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_tracking_code() -> str:
    """10 characters of the alphabet, uniformly at random (one call to the OS's random
    source, not ten)."""
    n = secrets.randbelow(len(_TRACK_ALPHABET) ** 10)
    out = []
    for _ in range(10):
        n, i = divmod(n, len(_TRACK_ALPHABET))
        out.append(_TRACK_ALPHABET[i])
    return "".join(out)


# --------------------------------------------------------------------------- clock


def _limit(session: Session, case: Case, stage: str) -> wt.TimeLimit:
    return wt.resolve_limit(session, stage, case.category_id, case.urgency).limit


def _start_stage(session: Session, case: Case, stage: str, now: datetime) -> None:
    """Enter ``stage``: set its start, deadline and 临期 instant; clear per-stage flags."""
    case.stage = stage
    case.stage_started_at = now
    case.near_due = False
    case.overdue = False
    case.paused_since = None
    clock_stage = CLOCK_STAGE.get(stage)
    if clock_stage is None:
        case.stage_deadline = None
        case.stage_warn_at = None
        return
    if clock_stage == "handle" and case.handle_deadline is not None:
        # the handling clock started at dispatch (or rework); signing does not restart it
        case.stage_deadline = case.handle_deadline
        case.stage_warn_at = _warn_before(session, case, case.handle_deadline, now)
        return
    lim = _limit(session, case, clock_stage)
    clock = wt.get_clock(session)
    case.stage_deadline = clock.deadline(now, lim).due_at
    case.stage_warn_at = clock.warning_at(now, lim, fraction=WARN_FRACTION)


def _warn_before(session: Session, case: Case, due: datetime, now: datetime) -> datetime:
    """临期 instant of the handling stage: when only 20 % of its limit is left before ``due``."""
    lim = _limit(session, case, "handle")
    clock = wt.get_clock(session)
    remaining = lim.amount * (1 - WARN_FRACTION)
    left = clock.elapsed(now, due, unit=lim.unit)
    if left <= remaining:
        return now
    return clock.add(now, left - remaining, lim.unit)


def _shift_for_pause(session: Session, case: Case, now: datetime) -> None:
    """Move the current deadlines by the time the clock stood still (paused_since → now)."""
    if case.paused_since is None:
        return
    clock = wt.get_clock(session)
    lim = _limit(session, case, CLOCK_STAGE.get(case.stage, "handle"))
    lost = clock.elapsed(case.paused_since, now, unit=lim.unit)
    if case.handle_deadline is not None and case.stage in (
        "handle",
        "return_review",
        "parked",
        "sign",
    ):
        case.handle_deadline = clock.add(case.handle_deadline, lost, lim.unit)
    if case.stage_deadline is not None:
        case.stage_deadline = clock.add(case.stage_deadline, lost, lim.unit)
    if case.stage_warn_at is not None:
        case.stage_warn_at = clock.add(case.stage_warn_at, lost, lim.unit)
    case.paused_since = None


# --------------------------------------------------------------------------- intake

AUTO_FILE_KEY = "auto_file_sources"
DEFAULT_AUTO_FILE_SOURCES = ("iot",)
_SYSTEM = Principal(
    user_id=0,
    username="system",
    display_name="系统",
    roles=frozenset({"system"}),
    unit_id=None,
    scope_region_code=None,
    scope_unit_only=False,
)


def auto_file_sources(session: Session) -> frozenset[str]:
    """Channels whose reports are accepted and filed at intake (city setting, a list)."""
    row = session.get(CitySetting, AUTO_FILE_KEY)
    value = row.value if row is not None else DEFAULT_AUTO_FILE_SOURCES
    return (
        frozenset(v for v in value if v in SOURCES)
        if isinstance(value, list | tuple)
        else frozenset()
    )


def set_auto_file_sources(session: Session, sources: list[str]) -> None:
    bad = [x for x in sources if x not in SOURCES]
    if bad:
        raise Invalid(f"unknown source {bad[0]!r}", field="sources", value=bad[0])
    row = session.get(CitySetting, AUTO_FILE_KEY)
    if row is None:
        session.add(CitySetting(key=AUTO_FILE_KEY, value=list(sources)))
    else:
        row.value = list(sources)
    session.flush()


@dataclass
class Intake:
    """Result of :func:`create_case`."""

    case: Case
    #: Open cases of the same category nearby, offered to the operator as duplicates.
    duplicates: list[Case] = field(default_factory=list)
    #: True when a machine report was merged into an open case instead of opening one.
    merged: bool = False


def _category(session: Session, data: dict[str, Any]) -> Category:
    cid = data.get("category_id")
    code = data.get("category_code")
    cat: Category | None = None
    if cid is not None:
        cat = session.get(Category, cid)
    elif code:
        std = chosen_standard(session)
        cat = session.scalars(
            select(Category)
            .where(Category.code == code, Category.standard.in_([std, "local"]))
            .order_by(Category.is_local)
        ).first()
    else:
        raise Invalid("category_code (or category_id) is required", field="category_code")
    if cat is None or not cat.enabled:
        raise Invalid(
            f"unknown or disabled category {code or cid!r}",
            field="category_code",
            value=code or cid,
        )
    return cat


def find_duplicates(
    session: Session,
    category_id: int,
    lon: float,
    lat: float,
    now: datetime,
    radius_m: float = DUPLICATE_RADIUS_M,
    window: timedelta = DUPLICATE_WINDOW,
    exclude_id: int | None = None,
) -> list[Case]:
    """Open cases of the category within ``radius_m`` reported within ``window``, nearest first."""
    cell = h3.latlng_to_cell(lat, lon, H3_RES)
    k = max(1, int(radius_m // 150) + 1)
    cells = [h3.str_to_int(c) for c in h3.grid_disk(cell, k)]
    q = select(Case).where(
        Case.category_id == category_id,
        Case.h3.in_(cells),
        Case.stage.in_(OPEN_STAGES),
        Case.reported_at >= now - window,
    )
    if exclude_id is not None:
        q = q.where(Case.id != exclude_id)
    found = []
    for c in session.scalars(q):
        d = distance_m(lon, lat, c.lon, c.lat)
        if d <= radius_m:
            found.append((d, c.id, c))
    return [c for _, _, c in sorted(found, key=lambda t: (t[0], t[1]))]


def create_case(
    session: Session, principal: Principal, data: dict[str, Any], now: datetime | None = None
) -> Intake:
    """上报: a new report from any channel. See the module docstring for the stages."""
    # no autoflush: one flush at the end (and where an id is needed) instead of one per query
    with session.no_autoflush:
        return _create_case(session, principal, data, _now(now))


def _create_case(
    session: Session, principal: Principal, data: dict[str, Any], t: datetime
) -> Intake:
    source = data.get("source") or ("inspector" if "inspector" in principal.roles else "hotline")
    if source not in SOURCES:
        raise Invalid(
            f"unknown source {source!r}: one of {', '.join(SOURCES)}", field="source", value=source
        )
    _require(principal, SOURCE_ROLES[source], f"report from channel {SOURCES[source]}")
    cat = _category(session, data)
    case_type = "component" if cat.kind == "component" else "matter"
    urgency = data.get("urgency") or cat.default_urgency
    if urgency not in URGENCIES:
        raise Invalid(
            f"urgency must be one of {', '.join(URGENCIES)}", field="urgency", value=urgency
        )
    description = _text(data, "description", "report")
    try:
        lon, lat = float(data["lon"]), float(data["lat"])
    except (KeyError, TypeError, ValueError):
        raise Invalid("lon and lat are required numbers", field="lon/lat") from None
    where = locate(session, lon, lat, data.get("crs") or "wgs84")
    wlon, wlat = where["wgs84"]["lon"], where["wgs84"]["lat"]
    grid_code = where["grid"]["code"]

    component: Component | None = None
    if data.get("component_code"):
        component = session.scalars(
            select(Component).where(Component.code == data["component_code"])
        ).first()
        if component is None:
            raise Invalid(
                f"unknown component {data['component_code']}",
                field="component_code",
                value=data["component_code"],
            )
    elif case_type == "component":
        # the nearest component of the category within 30 m is the one meant
        hits = indexes_for(session).components(session).nearest(wlon, wlat, cat.id, 30.0, 1)
        if hits:
            component = session.get(Component, hits[0][0])

    dups = find_duplicates(session, cat.id, wlon, wlat, t)
    if source in MACHINE_SOURCES and dups:
        target = dups[0]
        target.report_count += 1
        target.last_seen_at = t
        target.updated_at = t
        _event(
            session,
            target,
            principal,
            "repeat",
            t,
            target.stage,
            note=description,
            data={"source": source, "lon": wlon, "lat": wlat},
        )
        session.flush()
        return Intake(target, [], merged=True)

    case = Case(
        number=next_number(session, t),
        tracking_code=new_tracking_code(),
        source=source,
        case_type=case_type,
        category_id=cat.id,
        urgency=urgency,
        description=description,
        address=data.get("address"),
        lon=wlon,
        lat=wlat,
        h3=h3.str_to_int(h3.latlng_to_cell(wlat, wlon, H3_RES)),
        grid_id=where["grid"]["id"],
        grid_code=grid_code,
        component_id=component.id if component else None,
        reporter_user_id=principal.user_id if principal.user_id > 0 else None,
        reporter_name=data.get("reporter_name")
        or (principal.display_name if source in ("inspector", "self") else None),
        reporter_phone=data.get("reporter_phone"),
        stage="accept",
        stage_started_at=t,
        reported_at=t,
        updated_at=t,
        last_seen_at=t,
    )
    session.add(case)
    session.flush()
    ev = _event(
        session, case, principal, "report", t, None, note=description, data={"source": source}
    )
    session.flush()
    _attach(session, case, data.get("attachment_ids"), "before", principal, ev)
    if source == "self":
        if not data.get("attachment_ids"):
            raise Invalid("自行处置 needs a photo of the fixed problem", field="attachment_ids")
        for stamp in ("accepted_at", "filed_at", "handled_at", "checked_at", "closed_at"):
            setattr(case, stamp, t)
        case.close_type = "正常"
        _start_stage(session, case, "closed", t)
        _event(session, case, principal, "self_handle", t, "accept", note=description)
        session.flush()
        return Intake(case, [])
    _start_stage(session, case, "accept", t)
    if source in auto_file_sources(session):
        # configured channels (e.g. 监督员上报 in many cities, 物联感知 alarms) are accepted
        # and filed at once, then dispatched by the rules
        case.accepted_at = t
        _start_stage(session, case, "file", t)
        _event(session, case, None, "accept", t, "accept", note="自动受理")
        _file(session, _SYSTEM, case, {}, t)
    session.flush()
    return Intake(case, dups)


# --------------------------------------------------------------------------- dispatch rules


def _in_window(rule: DispatchRule, local: datetime) -> bool:
    if rule.weekdays and str(local.isoweekday()) not in rule.weekdays:
        return False
    if rule.time_from and rule.time_to:
        hm = local.strftime("%H:%M")
        if rule.time_from <= rule.time_to:
            return rule.time_from <= hm < rule.time_to
        return hm >= rule.time_from or hm < rule.time_to
    return True


def best_rule(
    rules: Iterable[Any],
    category_id: int,
    grid_code: str | None,
    component: Any | None,
    local: datetime,
) -> tuple[int, list[int], str] | None:
    """(lead unit, co-units, why) of the most specific matching dispatch rule (then the lowest
    priority number, then the oldest), or None. ``rules`` are the active rules (ORM rows or
    snapshots with the same fields); ``component`` has ``owner_unit_id`` and
    ``maintainer_unit_id``; ``local`` is the Asia/Shanghai time of the report."""
    owner = component.owner_unit_id if component is not None else None
    best: tuple[tuple[int, int, int], Any] | None = None
    for r in rules:
        if r.category_id is not None and r.category_id != category_id:
            continue
        if r.region_prefix and not (grid_code or "").startswith(r.region_prefix):
            continue
        if r.component_owner_unit_id is not None and r.component_owner_unit_id != owner:
            continue
        if not _in_window(r, local):
            continue
        if r.to_component and component is None:
            continue
        specificity = sum(
            x is not None and x != ""
            for x in (
                r.category_id,
                r.region_prefix,
                r.component_owner_unit_id,
                r.time_from,
                r.weekdays,
            )
        )
        key = (-specificity, r.priority, r.id)
        if best is None or key < best[0]:
            best = (key, r)
    if best is None:
        return None
    r = best[1]
    unit: int | None = r.unit_id
    if r.to_component == "owner" and component is not None:
        unit = component.owner_unit_id
    elif r.to_component == "maintainer" and component is not None:
        unit = component.maintainer_unit_id or component.owner_unit_id
    if unit is None:
        return None
    return unit, [u for u in (r.co_unit_ids or []) if u != unit], f"rule {r.id} {r.name}"


def match_rule(session: Session, case: Case, now: datetime) -> tuple[int, list[int], str] | None:
    """(lead unit, co-units, why) from the dispatch rules and the category's default handler."""
    component = session.get(Component, case.component_id) if case.component_id else None
    rules = session.scalars(select(DispatchRule).where(DispatchRule.active.is_(True)))
    hit = best_rule(rules, case.category_id, case.grid_code, component, now.astimezone(TZ))
    if hit is not None:
        return hit
    cat = session.get(Category, case.category_id)
    if cat is None or not cat.handler_mode:
        return None
    if cat.handler_mode == "fixed_unit" and cat.handler_unit_id:
        return cat.handler_unit_id, [], f"category {cat.code} fixed unit"
    if cat.handler_mode == "component_owner" and component is not None:
        unit = component.maintainer_unit_id or component.owner_unit_id
        if unit:
            return unit, [], f"category {cat.code}: component maintainer/owner"
    if cat.handler_mode == "unit_type" and cat.handler_unit_type and case.grid_code:
        district = session.scalars(
            select(Region.id).where(Region.code == case.grid_code[:6])
        ).first()
        unit_id = session.scalars(
            select(Unit.id)
            .join(unit_regions, unit_regions.c.unit_id == Unit.id)
            .where(
                Unit.unit_type == cat.handler_unit_type,
                Unit.active.is_(True),
                unit_regions.c.region_id == district,
            )
            .order_by(Unit.id)
        ).first()
        if unit_id:
            return unit_id, [], f"category {cat.code}: {cat.handler_unit_type} of the district"
    return None


def _set_units(session: Session, case: Case, lead: int, co: list[int]) -> None:
    ids = [lead, *co]
    found = set(session.scalars(select(Unit.id).where(Unit.id.in_(ids), Unit.active.is_(True))))
    missing = [u for u in ids if u not in found]
    if missing:
        raise Invalid(f"unknown or inactive unit(s) {missing}", field="unit_id", value=missing)
    case.units.clear()
    session.flush()
    case.units.append(CaseUnit(unit_id=lead, role="lead"))
    for u in dict.fromkeys(co):
        if u != lead:
            case.units.append(CaseUnit(unit_id=u, role="co"))
    case.lead_unit_id = lead


def _dispatch(
    session: Session,
    case: Case,
    principal: Principal | None,
    lead: int,
    co: list[int],
    now: datetime,
    why: str,
) -> None:
    before = case.stage
    _set_units(session, case, lead, co)
    case.dispatched_at = now
    lim = _limit(session, case, "handle")
    case.handle_deadline = wt.get_clock(session).deadline(now, lim).due_at
    _start_stage(session, case, "sign", now)
    _event(
        session,
        case,
        principal,
        "dispatch",
        now,
        before,
        note=why,
        unit_id=lead,
        data={"lead_unit_id": lead, "co_unit_ids": co},
    )
    _notify_unit(
        session, case, lead, "dispatch", f"新派遣案卷 {case.number}", case.description, now
    )


def _notify_unit(
    session: Session,
    case: Case,
    unit_id: int,
    kind: str,
    title: str,
    body: str | None,
    now: datetime,
) -> None:
    users = session.scalars(
        select(User.id).where(User.unit_id == unit_id, User.active.is_(True))
    ).all()
    for uid in users:
        session.add(
            Notification(
                user_id=uid, case_id=case.id, kind=kind, title=title, body=body, created_at=now
            )
        )


def _inspector_for(session: Session, case: Case) -> int | None:
    """An inspector of the case's grid (the one with the fewest open tasks)."""
    ids = (
        list(
            session.scalars(
                select(grid_inspectors.c.user_id)
                .join(User, User.id == grid_inspectors.c.user_id)
                .where(grid_inspectors.c.grid_id == case.grid_id, User.active.is_(True))
            )
        )
        if case.grid_id
        else []
    )
    if not ids:
        return None
    load = dict(
        session.execute(
            select(Case.assignee_user_id, func.count())
            .where(Case.assignee_user_id.in_(ids), Case.stage.in_(("verify", "check")))
            .group_by(Case.assignee_user_id)
        ).all()
    )
    return min(ids, key=lambda u: (load.get(u, 0), u))


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class Action:
    name: str
    label: str
    roles: frozenset[str]
    stages: frozenset[str]
    run: Callable[[Session, Principal, Case, dict[str, Any], datetime], None]


def _accept(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    c.accepted_at = t
    if c.source in NEEDS_VERIFY:
        c.assignee_user_id = d.get("inspector_id") or _inspector_for(s, c)
        if c.assignee_user_id is None:
            raise Conflict(f"受理: grid {c.grid_code} has no inspector to verify the report")
        _start_stage(s, c, "verify", t)
        _notify(s, c, c.assignee_user_id, "verify", f"核实任务 {c.number}", t)
    else:
        _start_stage(s, c, "file", t)
    _event(s, c, p, "accept", t, "accept", note=d.get("note"))


def _notify(s: Session, c: Case, user_id: int, kind: str, title: str, t: datetime) -> None:
    s.add(
        Notification(
            user_id=user_id, case_id=c.id, kind=kind, title=title, body=c.description, created_at=t
        )
    )


def _reject(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    c.end_reason = _text(d, "reason", "不予受理")
    _start_stage(s, c, "rejected", t)
    _event(s, c, p, "reject", t, "accept", note=c.end_reason)


def _own_task(p: Principal, c: Case, what: str) -> None:
    if (
        c.assignee_user_id is not None
        and c.assignee_user_id != p.user_id
        and "shift_leader" not in p.roles
    ):
        raise Forbidden(f"{what}: the task belongs to another inspector")


def _verify(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    _own_task(p, c, "核实")
    confirmed = d.get("confirmed")
    if not isinstance(confirmed, bool):
        raise Invalid("核实: field 'confirmed' (true/false) is required", field="confirmed")
    c.verified_at = t
    c.assignee_user_id = None
    if confirmed:
        _start_stage(s, c, "file", t)
    else:
        c.end_reason = _text(d, "note", "核实不属实") or "核实不属实"
        _start_stage(s, c, "void", t)
    ev = _event(s, c, p, "verify", t, "verify", note=d.get("note"), data={"confirmed": confirmed})
    s.flush()
    _attach(s, c, d.get("attachment_ids"), "check", p, ev)


def _file(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    c.filed_at = t
    _start_stage(s, c, "dispatch", t)
    _event(s, c, p, "file", t, "file", note=d.get("note"))
    if d.get("auto_dispatch", True):
        m = match_rule(s, c, t)
        if m is not None:
            _dispatch(s, c, None, m[0], m[1], t, f"自动派遣: {m[2]}")


def _void(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    before = c.stage
    c.end_reason = _text(d, "reason", "作废")
    c.assignee_user_id = None
    _start_stage(s, c, "void", t)
    _event(s, c, p, "void", t, before, note=c.end_reason)


def _int_list(d: dict[str, Any], key: str) -> list[int]:
    v = d.get(key) or []
    if not isinstance(v, list) or not all(isinstance(i, int) for i in v):
        raise Invalid(f"{key} must be a list of unit ids", field=key, value=v)
    return list(v)


def _dispatch_action(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    lead = d.get("unit_id")
    if not isinstance(lead, int):
        raise Invalid(
            "派遣: field 'unit_id' (the lead unit) is required", field="unit_id", value=lead
        )
    _dispatch(s, c, p, lead, _int_list(d, "co_unit_ids"), t, d.get("note") or "派遣")


def _lead_handler(p: Principal, c: Case, what: str) -> None:
    if "admin" in p.roles:
        return
    if p.unit_id is None or p.unit_id != c.lead_unit_id:
        raise Forbidden(f"{what}: only the lead unit's handlers may do this")


def _sign(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    _lead_handler(p, c, "签收")
    c.signed_at = t
    _start_stage(s, c, "handle", t)
    _event(s, c, p, "sign", t, "sign", unit_id=c.lead_unit_id)


def _handle(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    _lead_handler(p, c, "处置反馈")
    if c.pending_request:
        raise Conflict(f"处置反馈: a {c.pending_request} request is waiting for a decision")
    note = _text(d, "note", "处置反馈")
    if not d.get("attachment_ids"):
        raise Invalid("处置反馈 needs at least one photo after handling", field="attachment_ids")
    c.handled_at = t
    if c.handle_deadline is not None and t > c.handle_deadline:
        c.handled_late = True
    c.assignee_user_id = d.get("inspector_id") or _inspector_for(s, c)
    _start_stage(s, c, "check", t)
    ev = _event(s, c, p, "handle", t, "handle", note=note, unit_id=c.lead_unit_id)
    s.flush()
    _attach(s, c, d.get("attachment_ids"), "after", p, ev)
    if c.assignee_user_id:
        _notify(s, c, c.assignee_user_id, "check", f"核查任务 {c.number}", t)


def _request(kind: str) -> Callable[[Session, Principal, Case, dict[str, Any], datetime], None]:
    labels = {"return": "回退", "extend": "延期", "park": "挂账"}

    def run(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
        label = labels[kind]
        _lead_handler(p, c, label)
        if c.pending_request:
            raise Conflict(
                f"{label}: a {c.pending_request} request is already waiting for a decision"
            )
        reason = _text(d, "reason", label)
        req = ApprovalRequest(
            case_id=c.id,
            kind=kind,
            unit_id=c.lead_unit_id,
            requested_by=p.user_id,
            requested_at=t,
            reason=reason or "",
            required_role="shift_leader",
        )
        if kind == "extend":
            if c.stage != "handle":
                raise Conflict("延期 can only be requested while handling (待处置)")
            amount, unit = d.get("amount"), d.get("unit", "working_days")
            if not isinstance(amount, int | float) or amount <= 0:
                raise Invalid(
                    "延期: field 'amount' must be a positive number", field="amount", value=amount
                )
            if unit not in wt.LIMIT_UNITS:
                raise Invalid(
                    f"延期: unit must be one of {', '.join(wt.LIMIT_UNITS)}",
                    field="unit",
                    value=unit,
                )
            req.amount, req.amount_unit = float(amount), unit
            # a second extension, or a long one (> 5 working days), needs a leader
            long = (unit == "working_days" and amount > 5) or (
                unit == "natural_hours" and amount > 120
            )
            req.required_role = "leader" if c.extension_count >= 1 or long else "shift_leader"
        if kind == "park" and c.stage != "handle":
            raise Conflict("挂账 can only be requested while handling (待处置)")
        s.add(req)
        before = c.stage
        c.pending_request = kind
        c.paused_since = t
        if kind == "return":
            c.stage = "return_review"
        _event(
            s,
            c,
            p,
            f"request_{kind}",
            t,
            before,
            note=reason,
            unit_id=c.lead_unit_id,
            data={
                "amount": req.amount,
                "unit": req.amount_unit,
                "approver_role": req.required_role,
            },
        )

    return run


def _pending(s: Session, c: Case, kind: str) -> ApprovalRequest:
    req = s.scalars(
        select(ApprovalRequest).where(
            ApprovalRequest.case_id == c.id,
            ApprovalRequest.kind == kind,
            ApprovalRequest.decision.is_(None),
        )
    ).first()
    if req is None or c.pending_request != kind:
        raise Conflict(f"no {kind} request is waiting for a decision on case {c.number}")
    return req


def _decide(kind: str) -> Callable[[Session, Principal, Case, dict[str, Any], datetime], None]:
    def run(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
        req = _pending(s, c, kind)
        if req.required_role not in p.roles:
            raise Forbidden(f"this {kind} request needs approval by role {req.required_role}")
        approve = d.get("approve")
        if not isinstance(approve, bool):
            raise Invalid("field 'approve' (true/false) is required", field="approve")
        req.decided_by, req.decided_at = p.user_id, t
        req.decision = "approved" if approve else "rejected"
        req.decision_note = d.get("note")
        before = c.stage
        c.pending_request = None
        if kind == "return":
            if approve:
                c.return_count += 1
                c.units.clear()
                c.lead_unit_id = None
                c.handle_deadline = None
                c.paused_since = None
                _start_stage(s, c, "dispatch", t)  # 改派
            else:
                c.stage = "handle" if c.signed_at else "sign"
                _shift_for_pause(s, c, t)
        elif kind == "extend":
            _shift_for_pause(s, c, t)
            if approve:
                clock = wt.get_clock(s)
                assert (
                    req.amount is not None
                    and req.amount_unit is not None
                    and c.handle_deadline is not None
                )
                c.handle_deadline = clock.deadline(
                    c.handle_deadline, (req.amount, req.amount_unit)
                ).due_at
                c.stage_deadline = c.handle_deadline
                c.stage_warn_at = (
                    _warn_before(s, c, c.handle_deadline, t) if c.handle_deadline else None
                )
                c.extended = True
                c.extension_count += 1
                c.overdue = False
                c.near_due = False
        elif kind == "park":
            if approve:
                c.parked = True
                c.stage = "parked"  # clock stays stopped (paused_since kept)
            else:
                _shift_for_pause(s, c, t)
        _event(
            s,
            c,
            p,
            f"decide_{kind}",
            t,
            before,
            note=d.get("note"),
            data={"approve": approve, "request_id": req.id},
        )

    return run


def _resume(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    c.stage = "handle"
    c.parked = False
    _shift_for_pause(s, c, t)
    _event(s, c, p, "resume", t, "parked", note=d.get("note"))


def _check(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    _own_task(p, c, "核查")
    passed = d.get("passed")
    if not isinstance(passed, bool):
        raise Invalid("核查: field 'passed' (true/false) is required", field="passed")
    if not d.get("attachment_ids"):
        raise Invalid("核查 needs a photo taken on site", field="attachment_ids")
    c.assignee_user_id = None
    if passed:
        c.checked_at = t
        _start_stage(s, c, "close", t)
    else:
        c.rework_count += 1  # 返工
        lim = _limit(s, c, "handle")
        c.handle_deadline = wt.get_clock(s).deadline(t, lim).due_at
        _start_stage(s, c, "handle", t)
    ev = _event(
        s,
        c,
        p,
        "check" if passed else "rework",
        t,
        "check",
        note=d.get("note"),
        data={"passed": passed},
    )
    s.flush()
    _attach(s, c, d.get("attachment_ids"), "check", p, ev)
    if not passed and c.lead_unit_id:
        _notify_unit(s, c, c.lead_unit_id, "rework", f"返工 {c.number}", d.get("note"), t)


def _close(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    close_type = d.get("close_type") or ("超时" if c.handled_late else "正常")
    if close_type not in CLOSE_TYPES:
        raise Invalid(
            f"close_type must be one of {', '.join(CLOSE_TYPES)}",
            field="close_type",
            value=close_type,
        )
    c.close_type = close_type
    c.closed_at = t
    _start_stage(s, c, "closed", t)
    _event(s, c, p, "close", t, "close", note=d.get("note"), data={"close_type": close_type})
    webhooks.enqueue(
        s,
        "case.closed",
        {"case": webhooks.case_summary(c)},
        webhooks.dedupe_key("closed", c.id, t),
        now=t,
    )


def _reopen(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    """重新核查: a closed case goes back to 核查 (e.g. a third-party reviewer disagreed)."""
    note = _text(d, "note", "重新核查")
    c.assignee_user_id = d.get("inspector_id") or _inspector_for(s, c)
    if c.assignee_user_id is None:
        raise Conflict(f"重新核查: grid {c.grid_code} has no inspector to check the case")
    c.closed_at = None
    c.close_type = None
    c.checked_at = None
    _start_stage(s, c, "check", t)
    _event(s, c, p, "reopen", t, "closed", note=note, data=d.get("data") or None)
    _notify(s, c, c.assignee_user_id, "check", f"核查任务 {c.number}", t)


def _supervise(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    note = _text(d, "note", "督办")
    c.supervised = True
    _event(s, c, p, "supervise", t, c.stage, note=note)
    if c.lead_unit_id:
        _notify_unit(s, c, c.lead_unit_id, "supervise", f"督办 {c.number}", note, t)


def _merge(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    target_id = d.get("into_case_id")
    if target_id is None and d.get("into_case"):  # the case number, as people say it
        target_id = s.scalar(select(Case.id).where(Case.number == str(d["into_case"]).strip()))
    target = s.get(Case, target_id) if isinstance(target_id, int) else None
    if (
        target is None
        or target.id == c.id
        or target.stage not in OPEN_STAGES
        or not case_visible(s, p, target)
    ):
        raise Invalid(
            "合并: 'into_case_id' (or the case number 'into_case') must name another open case",
            field="into_case_id",
            value=target_id,
        )
    if target.category_id != c.category_id:
        raise Conflict("合并: only cases of the same category can be merged")
    before = c.stage
    c.duplicate_of_id = target.id
    target.report_count += c.report_count
    target.last_seen_at = t
    c.assignee_user_id = None
    _start_stage(s, c, "merged", t)
    _event(s, c, p, "merge", t, before, note=d.get("note"), data={"into": target.number})
    _event(s, target, p, "merged_in", t, target.stage, data={"from": c.number})


def _split(s: Session, p: Principal, c: Case, d: dict[str, Any], t: datetime) -> None:
    target = s.get(Case, c.duplicate_of_id) if c.duplicate_of_id else None
    if target is not None:
        target.report_count = max(1, target.report_count - c.report_count)
    c.duplicate_of_id = None
    _start_stage(s, c, "accept", t)
    _event(s, c, p, "split", t, "merged", note=d.get("note"))


CENTRE = frozenset({"operator", "shift_leader"})
ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("accept", "受理", CENTRE, frozenset({"accept"}), _accept),
        Action("reject", "不予受理", CENTRE, frozenset({"accept"}), _reject),
        Action(
            "verify",
            "核实",
            frozenset({"inspector", "shift_leader"}),
            frozenset({"verify"}),
            _verify,
        ),
        Action("file", "立案", frozenset({"shift_leader"}), frozenset({"file"}), _file),
        Action(
            "void",
            "作废",
            frozenset({"shift_leader"}),
            frozenset({"file", "verify", "dispatch"}),
            _void,
        ),
        Action(
            "dispatch",
            "派遣",
            frozenset({"dispatcher", "shift_leader"}),
            frozenset({"dispatch"}),
            _dispatch_action,
        ),
        Action("sign", "签收", frozenset({"handler"}), frozenset({"sign"}), _sign),
        Action("handle", "处置反馈", frozenset({"handler"}), frozenset({"handle"}), _handle),
        Action(
            "request_return",
            "申请回退",
            frozenset({"handler"}),
            frozenset({"sign", "handle"}),
            _request("return"),
        ),
        Action(
            "decide_return",
            "回退审批",
            frozenset({"shift_leader"}),
            frozenset({"return_review"}),
            _decide("return"),
        ),
        Action(
            "request_extension",
            "申请延期",
            frozenset({"handler"}),
            frozenset({"handle"}),
            _request("extend"),
        ),
        Action(
            "decide_extension",
            "延期审批",
            frozenset({"shift_leader", "leader"}),
            frozenset({"handle"}),
            _decide("extend"),
        ),
        Action(
            "request_park",
            "申请挂账",
            frozenset({"handler"}),
            frozenset({"handle"}),
            _request("park"),
        ),
        Action(
            "decide_park",
            "挂账审批",
            frozenset({"shift_leader", "leader"}),
            frozenset({"handle"}),
            _decide("park"),
        ),
        Action(
            "resume",
            "恢复处置",
            frozenset({"shift_leader", "dispatcher"}),
            frozenset({"parked"}),
            _resume,
        ),
        Action(
            "check", "核查", frozenset({"inspector", "shift_leader"}), frozenset({"check"}), _check
        ),
        Action("close", "结案", frozenset({"shift_leader"}), frozenset({"close"}), _close),
        Action("supervise", "督办", frozenset({"leader", "shift_leader"}), OPEN_STAGES, _supervise),
        Action(
            "merge", "合并", CENTRE, frozenset({"accept", "verify", "file", "dispatch"}), _merge
        ),
        Action("split", "拆分", CENTRE, frozenset({"merged"}), _split),
        Action("reopen", "重新核查", frozenset({"shift_leader"}), frozenset({"closed"}), _reopen),
    )
}


UNIT_ACTIONS = frozenset({"sign", "handle", "request_return", "request_extension", "request_park"})
DECISION_OF = {"decide_return": "return", "decide_extension": "extend", "decide_park": "park"}


def available_actions(principal: Principal, case: Case) -> list[str]:
    """Actions this user could take on the case now (role, stage, unit, pending request).

    What a form then submits is still checked in full by :func:`perform`."""
    out = []
    for a in ACTIONS.values():
        if case.stage not in a.stages or not principal.roles.intersection(a.roles):
            continue
        unit_blocked = principal.unit_id != case.lead_unit_id or case.pending_request is not None
        if a.name in UNIT_ACTIONS and unit_blocked:
            continue
        if a.name in DECISION_OF and case.pending_request != DECISION_OF[a.name]:
            continue
        out.append(a.name)
    return out


def perform(
    session: Session,
    principal: Principal,
    case_id: int,
    action: str,
    payload: dict[str, Any] | None = None,
    expected_version: int | None = None,
    now: datetime | None = None,
) -> Case:
    """Run one action on a case (see :data:`ACTIONS`); raises without changing anything if refused."""
    t = _now(now)
    spec = ACTIONS.get(action)
    if spec is None:
        raise Invalid(
            f"unknown action {action!r}: one of {', '.join(ACTIONS)}", field="action", value=action
        )
    case = load_case(session, principal, case_id, for_update=True)
    _require(principal, spec.roles, spec.label)
    if expected_version is not None and expected_version != case.version:
        raise Conflict(
            f"{spec.label}: case {case.number} was changed by someone else "
            f"(you saw version {expected_version}, it is now {case.version}); reload it",
            current_version=case.version,
        )
    if case.stage not in spec.stages:
        raise Conflict(
            f"{spec.label} is not possible: case {case.number} is {STAGES.get(case.stage, case.stage)}",
            stage=case.stage,
        )
    savepoint = session.begin_nested()
    try:
        with session.no_autoflush:
            spec.run(session, principal, case, payload or {}, t)
        case.updated_at = t
        session.flush()
    except StaleDataError:
        savepoint.rollback()
        raise Conflict(
            f"{spec.label}: case {case.number} was changed by someone else; reload it"
        ) from None
    except BaseException:
        savepoint.rollback()
        session.expire(case)
        raise
    savepoint.commit()
    return case


# --------------------------------------------------------------------------- reading


def mask_name(name: str | None) -> str | None:
    if not name:
        return name
    return name[0] + "*" * max(1, len(name) - 1)


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return phone
    digits = phone.strip()
    if len(digits) >= 7:
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]
    return "*" * len(digits)


def can_see_personal_data(principal: Principal) -> bool:
    return bool(principal.roles.intersection(CENTRE_ROLES))


def visible_cases_filter(principal: Principal) -> Any:
    """SQL condition selecting the cases in the principal's scope."""
    conds: list[Any] = []
    if _no_case_access(principal):
        return Case.id < 0
    if principal.scope_unit_only:
        if principal.unit_id is None:
            return Case.id < 0
        # EXISTS, not IN: the unit's case list is never materialised (millions of cases)
        conds.append(
            exists().where(CaseUnit.case_id == Case.id, CaseUnit.unit_id == principal.unit_id)
        )
    else:
        conds.append(scope_filter(principal, Case.grid_code))
    if "inspector" in principal.roles:
        return or_(and_(*conds), Case.assignee_user_id == principal.user_id)
    return and_(*conds)


#: What each role's worklist holds: stage → extra condition builder.
WORKLIST_STAGES: dict[str, tuple[str, ...]] = {
    "operator": ("accept",),
    "shift_leader": ("file", "close", "return_review"),
    "dispatcher": ("dispatch",),
    "inspector": ("verify", "check"),
    "handler": ("sign", "handle"),
    "leader": ("handle", "parked"),
}

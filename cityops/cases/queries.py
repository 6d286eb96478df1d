"""Reading cases: detail with timeline, filtered lists with cursor paging, worklists, uploads."""

from __future__ import annotations

import base64
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cityops.cases.models import (
    CASE_TYPES,
    OPEN_STAGES,
    SOURCES,
    STAGES,
    Case,
    CaseAttachment,
    CaseEvent,
    CaseUnit,
)
from cityops.cases.service import (
    WORKLIST_STAGES,
    available_actions,
    can_see_personal_data,
    load_case,
    mask_name,
    mask_phone,
    visible_cases_filter,
)
from cityops.cases.storage import Storage, prepare
from cityops.core.errors import Invalid, NotFound
from cityops.core.security import Principal, prefix_filter
from cityops.geo.models import Category, Component, Unit


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _names(session: Session, model: Any, ids: set[int | None]) -> dict[int, str]:
    ids_ = {i for i in ids if i is not None}
    if not ids_:
        return {}
    return dict(session.execute(select(model.id, model.name).where(model.id.in_(ids_))).all())


def case_summary(
    c: Case, cats: dict[int, str], units: dict[int, str], now: datetime
) -> dict[str, Any]:
    remaining = (c.stage_deadline - now).total_seconds() / 60 if c.stage_deadline else None
    return {
        "id": c.id,
        "number": c.number,
        "source": c.source,
        "source_label": SOURCES.get(c.source),
        "case_type": c.case_type,
        "category_id": c.category_id,
        "category": cats.get(c.category_id),
        "urgency": c.urgency,
        "description": c.description,
        "address": c.address,
        "lon": c.lon,
        "lat": c.lat,
        "grid_code": c.grid_code,
        "stage": c.stage,
        "stage_label": STAGES.get(c.stage),
        "stage_deadline": _iso(c.stage_deadline),
        "stage_warn_at": _iso(c.stage_warn_at),
        "minutes_left": round(remaining, 1) if remaining is not None else None,
        "lead_unit_id": c.lead_unit_id,
        "lead_unit": units.get(c.lead_unit_id) if c.lead_unit_id else None,
        "flags": {
            "near_due": c.near_due,
            "overdue": c.overdue,
            "supervised": c.supervised,
            "extended": c.extended,
            "parked": c.parked,
            "pending_request": c.pending_request,
        },
        "rework_count": c.rework_count,
        "report_count": c.report_count,
        "reported_at": _iso(c.reported_at),
        "version": c.version,
    }


#: The stage timestamps a case detail shows.
TIMESTAMPS = (
    "reported_at",
    "accepted_at",
    "verified_at",
    "filed_at",
    "dispatched_at",
    "signed_at",
    "handled_at",
    "checked_at",
    "closed_at",
    "stage_started_at",
    "stage_warn_at",
    "paused_since",
    "last_seen_at",
)


def detail_of(
    principal: Principal,
    case: Case,
    now: datetime,
    *,
    cats: dict[int, str],
    units: dict[int, str],
    component: dict[str, Any] | None,
    history: list[dict[str, Any]],
    attachments: list[dict[str, Any]],
) -> dict[str, Any]:
    """The case detail from what the caller already holds (names, component, history and
    attachments as dicts): :func:`case_detail` reads them from the database, the intake
    writer builds them from the rows it has just written."""
    out = case_summary(case, cats, units, now)
    personal = can_see_personal_data(principal)
    out.update(
        {
            "tracking_code": case.tracking_code if personal else None,
            "case_type_label": CASE_TYPES.get(case.case_type),
            "reporter": {
                "name": case.reporter_name if personal else mask_name(case.reporter_name),
                "phone": case.reporter_phone if personal else mask_phone(case.reporter_phone),
            },
            "component": component,
            "units": [
                {"unit_id": u.unit_id, "name": units.get(u.unit_id), "role": u.role}
                for u in case.units
            ],
            "assignee_user_id": case.assignee_user_id,
            "counts": {
                "extensions": case.extension_count,
                "returns": case.return_count,
                "reworks": case.rework_count,
                "reports": case.report_count,
            },
            "duplicate_of_id": case.duplicate_of_id,
            "close_type": case.close_type,
            "end_reason": case.end_reason,
            "handle_deadline": _iso(case.handle_deadline),
            "timestamps": {k: _iso(getattr(case, k)) for k in TIMESTAMPS},
            "history": history,
            "attachments": attachments,
            "actions": available_actions(principal, case),
        }
    )
    return out


def history_item(
    at: datetime,
    actor: str | None,
    action: str,
    from_stage: str | None,
    to_stage: str | None,
    unit: str | None,
    note: str | None,
    data: Any,
    attachment_ids: list[int],
) -> dict[str, Any]:
    """One entry of a case's timeline."""
    return {
        "at": _iso(at),
        "actor": actor,
        "action": action,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "unit": unit,
        "note": note,
        "data": data,
        "attachment_ids": attachment_ids,
    }


def case_detail(
    session: Session, principal: Principal, case: Case, now: datetime
) -> dict[str, Any]:
    cats = _names(session, Category, {case.category_id})
    unit_ids = {u.unit_id for u in case.units} | {case.lead_unit_id}
    units = _names(session, Unit, unit_ids)
    component = session.get(Component, case.component_id) if case.component_id else None
    events = session.scalars(
        select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.at, CaseEvent.id)
    ).all()
    attachments = session.scalars(
        select(CaseAttachment).where(CaseAttachment.case_id == case.id).order_by(CaseAttachment.id)
    ).all()
    ev_units = _names(session, Unit, {e.unit_id for e in events})
    return detail_of(
        principal,
        case,
        now,
        cats=cats,
        units=units,
        component=(
            {
                "id": component.id,
                "code": component.code,
                "status": component.status,
                "owner_unit_id": component.owner_unit_id,
                "maintainer_unit_id": component.maintainer_unit_id,
                "competent_unit_id": component.competent_unit_id,
                "owner_unit": _names(session, Unit, {component.owner_unit_id}).get(
                    component.owner_unit_id or 0
                ),
            }
            if component
            else None
        ),
        history=[
            history_item(
                e.at,
                e.actor_name,
                e.action,
                e.from_stage,
                e.to_stage,
                ev_units.get(e.unit_id) if e.unit_id else None,
                e.note,
                e.data,
                [a.id for a in attachments if a.event_id == e.id],
            )
            for e in events
        ],
        attachments=[
            {
                "id": a.id,
                "purpose": a.purpose,
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "uploaded_at": _iso(a.uploaded_at),
            }
            for a in attachments
        ],
    )


# --------------------------------------------------------------------------- lists


@dataclass
class CaseFilter:
    stage: list[str] | None = None
    status: str | None = None  # open | closed | ended | all
    unit_id: int | None = None
    region: str | None = None
    grid: str | None = None
    category: str | None = None
    source: str | None = None
    urgency: str | None = None
    overdue: bool | None = None
    near_due: bool | None = None
    supervised: bool | None = None
    reported_from: datetime | None = None
    reported_to: datetime | None = None
    text: str | None = None


SORTS = {
    "-reported_at": (Case.reported_at, True),
    "reported_at": (Case.reported_at, False),
    "deadline": (Case.stage_deadline, False),
    "-updated_at": (Case.updated_at, True),
}


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode()


def _decode(cursor: str) -> list[Any]:
    try:
        v = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError
        return v
    except (ValueError, json.JSONDecodeError):
        raise Invalid(
            "bad cursor: pass back the next_cursor of the previous page", field="cursor"
        ) from None


def filter_conditions(session: Session, principal: Principal, f: CaseFilter) -> list[Any]:
    conds: list[Any] = [visible_cases_filter(principal)]
    if f.stage:
        bad = [s for s in f.stage if s not in STAGES]
        if bad:
            raise Invalid(f"unknown stage {bad[0]!r}", field="stage", value=bad[0])
        conds.append(Case.stage.in_(f.stage))
    if f.status == "open":
        conds.append(Case.stage.in_(OPEN_STAGES))
    elif f.status == "closed":
        conds.append(Case.stage == "closed")
    elif f.status == "ended":
        conds.append(Case.stage.not_in(OPEN_STAGES))
    elif f.status not in (None, "all"):
        raise Invalid("status must be open, closed, ended or all", field="status", value=f.status)
    if f.unit_id is not None:
        conds.append(Case.id.in_(select(CaseUnit.case_id).where(CaseUnit.unit_id == f.unit_id)))
    if f.region:
        conds.append(prefix_filter(Case.grid_code, f.region))
    if f.grid:
        conds.append(Case.grid_code == f.grid)
    if f.category:
        ids = select(Category.id).where(Category.code == f.category)
        conds.append(Case.category_id.in_(ids))
    if f.source:
        conds.append(Case.source == f.source)
    if f.urgency:
        conds.append(Case.urgency == f.urgency)
    if f.overdue is not None:
        conds.append(Case.overdue.is_(f.overdue))
    if f.near_due is not None:
        conds.append(Case.near_due.is_(f.near_due))
    if f.supervised is not None:
        conds.append(Case.supervised.is_(f.supervised))
    if f.reported_from:
        conds.append(Case.reported_at >= f.reported_from)
    if f.reported_to:
        conds.append(Case.reported_at < f.reported_to)
    if f.text:
        q = f.text.strip()
        if CASE_NUMBER.fullmatch(q):  # a case number: the unique index, not a text scan
            conds.append(Case.number == q)
        else:
            like = f"%{q}%"
            conds.append(or_(Case.description.like(like), Case.address.like(like)))
    return conds


#: A case number: date (8 digits) + daily sequence (5 digits).
CASE_NUMBER = re.compile(r"\d{13}")


def list_cases(
    session: Session,
    principal: Principal,
    f: CaseFilter,
    now: datetime,
    cursor: str | None = None,
    limit: int = 50,
    sort: str = "-reported_at",
) -> dict[str, Any]:
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}", field="sort", value=sort)
    if not 1 <= limit <= 500:
        raise Invalid("limit must be between 1 and 500", field="limit", value=limit)
    col, desc = SORTS[sort]
    conds = filter_conditions(session, principal, f)
    if sort == "deadline":
        conds.append(Case.stage_deadline.is_not(None))
    if cursor:
        v, cid = _decode(cursor)
        value = datetime.fromisoformat(v) if v else None
        if desc:
            conds.append(or_(col < value, and_(col == value, Case.id < cid)))
        else:
            conds.append(or_(col > value, and_(col == value, Case.id > cid)))
    order = (col.desc(), Case.id.desc()) if desc else (col.asc(), Case.id.asc())
    rows = session.scalars(select(Case).where(*conds).order_by(*order).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    cats = _names(session, Category, {c.category_id for c in rows})
    units = _names(session, Unit, {c.lead_unit_id for c in rows})
    items = [case_summary(c, cats, units, now) for c in rows]
    nxt = None
    if more and rows:
        last = rows[-1]
        lv = getattr(last, col.key)
        nxt = _encode([lv.isoformat() if lv else None, last.id])
    return {"items": items, "next_cursor": nxt}


def worklist(
    session: Session, principal: Principal, now: datetime, limit: int = 50
) -> dict[str, Any]:
    """The caller's work: per stage their roles act on, most urgent (deadline) first."""
    stages: list[str] = []
    for role in sorted(principal.roles):
        for s in WORKLIST_STAGES.get(role, ()):
            if s not in stages:
                stages.append(s)
    out: dict[str, Any] = {}
    for stage in stages:
        conds = [visible_cases_filter(principal), Case.stage == stage]
        if (
            stage in ("verify", "check")
            and "inspector" in principal.roles
            and "shift_leader" not in principal.roles
        ):
            conds.append(Case.assignee_user_id == principal.user_id)
        if stage in ("sign", "handle") and "handler" in principal.roles:
            conds.append(Case.lead_unit_id == (principal.unit_id or -1))
        total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
        rows = session.scalars(
            select(Case).where(*conds).order_by(Case.stage_deadline.asc(), Case.id).limit(limit)
        ).all()
        cats = _names(session, Category, {c.category_id for c in rows})
        units = _names(session, Unit, {c.lead_unit_id for c in rows})
        out[stage] = {
            "label": STAGES[stage],
            "total": total,
            "items": [case_summary(c, cats, units, now) for c in rows],
        }
    if "shift_leader" in principal.roles or "leader" in principal.roles:
        approvals = session.scalars(
            select(Case)
            .where(visible_cases_filter(principal), Case.pending_request.is_not(None))
            .order_by(Case.paused_since)
            .limit(limit)
        ).all()
        cats = _names(session, Category, {c.category_id for c in approvals})
        units = _names(session, Unit, {c.lead_unit_id for c in approvals})
        out["approvals"] = {
            "label": "待审批",
            "total": len(approvals),
            "items": [case_summary(c, cats, units, now) for c in approvals],
        }
    return out


# --------------------------------------------------------------------------- uploads


def upload(
    session: Session,
    principal: Principal,
    storage: Storage,
    filename: str,
    content_type: str | None,
    data: bytes,
) -> dict[str, Any]:
    """Store an upload (not yet bound to a case); returns its id and EXIF position."""
    prep = prepare(filename, content_type, data)
    key = f"{prep.sha256[:2]}/{prep.sha256}-{secrets.token_hex(4)}.{prep.ext}"
    storage.put(key, prep.data)
    public_key = None
    if prep.public_data is not None:
        public_key = key.replace(f".{prep.ext}", f".public.{prep.ext}")
        storage.put(public_key, prep.public_data)
    att = CaseAttachment(
        case_id=None,
        purpose="before",
        filename=filename[:200],
        content_type=prep.content_type,
        size=prep.size,
        sha256=prep.sha256,
        storage_key=key,
        public_key=public_key,
        exif_lon=prep.exif_lon,
        exif_lat=prep.exif_lat,
        uploaded_by=principal.user_id if principal.user_id > 0 else None,
    )
    session.add(att)
    session.flush()
    return {
        "id": att.id,
        "content_type": att.content_type,
        "size": att.size,
        "exif_location": {"lon": att.exif_lon, "lat": att.exif_lat}
        if att.exif_lon is not None
        else None,
    }


def read_attachment(
    session: Session,
    principal: Principal,
    storage: Storage,
    attachment_id: int,
    public: bool = False,
) -> tuple[CaseAttachment, bytes]:
    att = session.get(CaseAttachment, attachment_id)
    if att is None:
        raise NotFound(f"no attachment {attachment_id}")
    if att.case_id is None:
        if att.uploaded_by != principal.user_id:
            raise NotFound(f"no attachment {attachment_id}")
    else:
        load_case(session, principal, att.case_id)
    key = att.public_key if (public and att.public_key) else att.storage_key
    return att, storage.get(key)


# --------------------------------------------------------------------------- console


@dataclass(frozen=True)
class WorkTab:
    """One tab of the console's worklist: the stages it holds and the roles that act on it."""

    key: str
    label: str
    stages: tuple[str, ...]
    roles: frozenset[str]


#: The console's worklist tabs, in display order (待审批 = a 回退/延期/挂账 request waits).
WORK_TABS: tuple[WorkTab, ...] = (
    WorkTab("accept", "待受理", ("accept",), frozenset({"operator", "shift_leader"})),
    WorkTab("verify", "待核实", ("verify",), frozenset({"inspector", "shift_leader"})),
    WorkTab("file", "待立案", ("file",), frozenset({"shift_leader"})),
    WorkTab("dispatch", "待派遣", ("dispatch",), frozenset({"dispatcher", "shift_leader"})),
    WorkTab("handle", "待签收/待处置", ("sign", "handle"), frozenset({"handler"})),
    WorkTab("approvals", "待审批", (), frozenset({"shift_leader", "leader"})),
    WorkTab("check", "待核查", ("check",), frozenset({"inspector", "shift_leader"})),
    WorkTab("close", "待结案", ("close",), frozenset({"shift_leader"})),
)


def work_tabs(principal: Principal) -> list[WorkTab]:
    """The worklist tabs this user acts on (an admin sees them all, read-only)."""
    if principal.is_admin:
        return list(WORK_TABS)
    return [tab for tab in WORK_TABS if principal.roles.intersection(tab.roles)]


def _tab_conditions(principal: Principal, tab: WorkTab) -> list[Any]:
    """The same narrowing as :func:`worklist`: inspectors see their own tasks, handlers the
    cases their unit leads."""
    if tab.key == "approvals":
        return [Case.pending_request.is_not(None), Case.stage.in_(OPEN_STAGES)]
    conds: list[Any] = [Case.stage.in_(tab.stages)]
    if (
        tab.key in ("verify", "check")
        and "inspector" in principal.roles
        and "shift_leader" not in principal.roles
    ):
        conds.append(Case.assignee_user_id == principal.user_id)
    if tab.key == "handle" and "handler" in principal.roles and not principal.is_admin:
        conds.append(Case.lead_unit_id == (principal.unit_id or -1))
    return conds


def work_page(
    session: Session,
    principal: Principal,
    tab_key: str,
    f: CaseFilter,
    now: datetime,
    cursor: str | None = None,
    limit: int = 20,
    sort: str = "deadline",
) -> dict[str, Any]:
    """One page of a worklist tab with the list filters, sort and cursor paging of
    :func:`list_cases`; also the tab's total (with the filters). Sorting by deadline keeps
    cases without a deadline at the end (NULLS LAST, so the (stage, stage_deadline) index
    can serve the order)."""
    tab = next((x for x in work_tabs(principal) if x.key == tab_key), None)
    if tab is None:
        raise Invalid(f"no worklist tab {tab_key!r} for you", field="tab", value=tab_key)
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}", field="sort", value=sort)
    if not 1 <= limit <= 500:
        raise Invalid("limit must be between 1 and 500", field="limit", value=limit)
    conds = filter_conditions(session, principal, f) + _tab_conditions(principal, tab)
    total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
    col, desc = SORTS[sort]
    if cursor:
        # NULL deadlines (no clock running) come last in either direction
        v, cid = _decode(cursor)
        if v is None:
            conds.append(and_(col.is_(None), Case.id < cid if desc else Case.id > cid))
        else:
            value = datetime.fromisoformat(v)
            after = col < value if desc else col > value
            same = and_(col == value, Case.id < cid if desc else Case.id > cid)
            conds.append(or_(after, same, col.is_(None)))
    order = (
        (col.desc().nulls_last(), Case.id.desc())
        if desc
        else (col.asc().nulls_last(), Case.id.asc())
    )
    rows = session.scalars(select(Case).where(*conds).order_by(*order).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    cats = _names(session, Category, {c.category_id for c in rows})
    units = _names(session, Unit, {c.lead_unit_id for c in rows})
    items = [case_summary(c, cats, units, now) for c in rows]
    nxt = None
    if more and rows:
        last = rows[-1]
        lv = getattr(last, col.key)
        nxt = _encode([lv.isoformat() if lv else None, last.id])
    return {"tab": tab.key, "label": tab.label, "total": total, "items": items, "next_cursor": nxt}


def search_places(session: Session, text: str, limit: int = 10) -> list[dict[str, Any]]:
    """Places whose name (or code) contains ``text``, for locating a new case by address:
    the city's POIs (便民服务点, with their address), regions (district/street/community,
    at a representative point inside) and unit grids by code prefix. Nothing else in the
    city model carries place names (there is no geocoder)."""
    import shapely

    from cityops.geo.models import Grid, Poi, Region

    q = text.strip()
    if not q:
        return []
    like = f"%{q}%"
    out: list[dict[str, Any]] = []
    for poi in session.scalars(
        select(Poi)
        .where(or_(Poi.name.like(like), Poi.address.like(like)))
        .order_by(Poi.id)
        .limit(limit)
    ):
        out.append(
            {"kind": "poi", "name": poi.name, "detail": poi.address, "lon": poi.lon, "lat": poi.lat}
        )
    for region in session.scalars(
        select(Region)
        .where(Region.name.like(like), Region.geom.is_not(None))
        .order_by(Region.code)
        .limit(limit)
    ):
        pt = shapely.point_on_surface(shapely.from_wkb(region.geom))
        out.append(
            {"kind": "region", "name": region.name, "detail": region.code, "lon": pt.x, "lat": pt.y}
        )
    if q.isdigit() and len(q) >= 12:
        for grid in session.scalars(
            select(Grid).where(Grid.code.like(f"{q}%")).order_by(Grid.code).limit(limit)
        ):
            pt = shapely.point_on_surface(shapely.from_wkb(grid.geom))
            out.append(
                {"kind": "grid", "name": grid.code, "detail": None, "lon": pt.x, "lat": pt.y}
            )
    return out[:limit]

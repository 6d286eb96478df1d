"""Dispatch rules (派遣规则) are data an admin edits; plus the “which unit?” tester."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import h3
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.cases.models import Case, DispatchRule
from cityops.cases.service import match_rule
from cityops.core.db import utcnow
from cityops.core.errors import Invalid, NotFound
from cityops.geo.models import H3_RES, Category, Component, Unit
from cityops.geo.service import category_by_code, locate


def rule_out(r: DispatchRule) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "active": r.active,
        "priority": r.priority,
        "category_id": r.category_id,
        "region_prefix": r.region_prefix,
        "component_owner_unit_id": r.component_owner_unit_id,
        "to_component": r.to_component,
        "time_from": r.time_from,
        "time_to": r.time_to,
        "weekdays": r.weekdays,
        "unit_id": r.unit_id,
        "co_unit_ids": r.co_unit_ids or [],
    }


def list_rules(session: Session) -> list[dict[str, Any]]:
    return [
        rule_out(r)
        for r in session.scalars(
            select(DispatchRule).order_by(DispatchRule.priority, DispatchRule.id)
        )
    ]


def save_rule(session: Session, rule_id: int | None, data: dict[str, Any]) -> dict[str, Any]:
    if data.get("unit_id") is None and not data.get("to_component"):
        raise Invalid(
            "a rule needs a target: unit_id, or to_component owner/maintainer", field="unit_id"
        )
    if (data.get("time_from") is None) != (data.get("time_to") is None):
        raise Invalid("time_from and time_to go together", field="time_to")
    for key in ("unit_id", "component_owner_unit_id"):
        if data.get(key) is not None and session.get(Unit, data[key]) is None:
            raise Invalid(f"no unit {data[key]}", field=key, value=data[key])
    for u in data.get("co_unit_ids") or []:
        if session.get(Unit, u) is None:
            raise Invalid(f"no unit {u}", field="co_unit_ids", value=u)
    if data.get("category_id") is not None and session.get(Category, data["category_id"]) is None:
        raise Invalid(
            f"no category {data['category_id']}", field="category_id", value=data["category_id"]
        )
    if rule_id is None:
        rule = DispatchRule(**data)
        session.add(rule)
    else:
        found = session.get(DispatchRule, rule_id)
        if found is None:
            raise NotFound(f"no dispatch rule {rule_id}")
        rule = found
        for k, v in data.items():
            setattr(rule, k, v)
    session.flush()
    return rule_out(rule)


def delete_rule(session: Session, rule_id: int) -> None:
    rule = session.get(DispatchRule, rule_id)
    if rule is None:
        raise NotFound(f"no dispatch rule {rule_id}")
    session.delete(rule)
    session.flush()


def which_unit(session: Session, data: dict[str, Any]) -> dict[str, Any]:
    """Dry run of auto-dispatch for a hypothetical case (nothing is written)."""
    cat = category_by_code(session, data["category_code"])
    where = locate(session, data["lon"], data["lat"], data.get("crs") or "wgs84")
    comp = None
    if data.get("component_code"):
        comp = session.scalars(
            select(Component).where(Component.code == data["component_code"])
        ).first()
        if comp is None:
            raise Invalid(f"unknown component {data['component_code']}", field="component_code")
    at = datetime.fromisoformat(data["at"]) if data.get("at") else utcnow()
    probe = Case(
        category_id=cat.id,
        grid_code=where["grid"]["code"],
        component_id=comp.id if comp else None,
        lon=where["wgs84"]["lon"],
        lat=where["wgs84"]["lat"],
        h3=h3.str_to_int(h3.latlng_to_cell(where["wgs84"]["lat"], where["wgs84"]["lon"], H3_RES)),
    )
    m = match_rule(session, probe, at)
    if m is None:
        return {
            "unit": None,
            "co_units": [],
            "why": "no rule matches: the case goes to the dispatcher's queue",
            "grid": where["grid"]["code"],
        }
    lead, co, why = m
    names = dict(session.execute(select(Unit.id, Unit.name).where(Unit.id.in_([lead, *co]))).all())
    return {
        "unit": {"id": lead, "name": names.get(lead)},
        "co_units": [{"id": u, "name": names.get(u)} for u in co],
        "why": why,
        "grid": where["grid"]["code"],
    }

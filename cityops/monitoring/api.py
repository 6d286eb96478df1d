"""REST API of the monitoring context (城市生命线监测).

* admin: CRUD of facilities, devices and rules; device telemetry keys.
* staff (scoped by region, or by unit for unit-only users): lists, map layer, series,
  alarms; ``monitor`` judges alarms (研判).
* ``POST /api/v1/monitoring/telemetry``: a batch of readings as JSON (a list, or
  ``{"readings": [...]}``) or CSV (``Content-Type: text/csv``; columns device_code,
  measurand, ts, value, unit) from a device (header ``X-Device-Key``) or a staff user
  (monitor/admin). Invalid readings are refused one by one with the reason; the rest is kept.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from cityops.core.audit import Actor, current_actor
from cityops.core.db import utcnow
from cityops.core.errors import Forbidden, Invalid, Unauthorized
from cityops.core.security import AdminDep, PrincipalDep, SessionDep, load_principal
from cityops.monitoring import service
from cityops.monitoring.catalog import (
    COMPARATORS,
    DEVICE_TYPES,
    FACILITY_KINDS,
    MEASURANDS,
)
from cityops.monitoring.ingest import ingest_readings
from cityops.monitoring.models import Rule
from cityops.monitoring.schemas import DeviceIn, FacilityIn, JudgeIn, RuleIn

router = APIRouter(prefix="/api/v1/monitoring", tags=["monitoring"])

MAX_BATCH = 100_000
TELEMETRY_ROLES = ("monitor", "admin")


async def _body(request: Request) -> bytes:
    return await request.body()


BodyDep = Annotated[bytes, Depends(_body)]


def _parse_rows(raw: bytes, content_type: str) -> list[dict[str, Any]]:
    if "csv" in content_type:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise Invalid("CSV must be UTF-8 text", field="body") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames or not {"device_code", "measurand", "ts", "value"} <= {
            (h or "").strip().lower() for h in reader.fieldnames
        }:
            raise Invalid(
                "CSV header must name device_code, measurand, ts, value (unit optional)",
                field="header",
            )
        rows = []
        for rec in reader:
            r = {
                (k or "").strip().lower(): (v.strip() if isinstance(v, str) else v)
                for k, v in rec.items()
            }
            if r.get("unit") == "":
                r["unit"] = None
            rows.append(r)
        return rows
    try:
        doc = json.loads(raw or b"null")
    except json.JSONDecodeError as exc:
        raise Invalid(f"not valid JSON: {exc}", field="body") from None
    if isinstance(doc, dict):
        doc = doc.get("readings")
    if not isinstance(doc, list):
        raise Invalid('send a list of readings or {"readings": [...]}', field="readings")
    return doc


@router.post("/telemetry")
def post_telemetry(request: Request, session: SessionDep, raw: BodyDep) -> dict[str, Any]:
    """A batch of readings; answers what was stored and every refused reading with its reason."""
    only: str | None = None
    key = request.headers.get("x-device-key")
    if key:
        dev = service.device_for_key(session, key)
        if dev is None:
            raise Unauthorized("unknown device key")
        only = dev.code
        current_actor.set(
            Actor(None, f"device:{dev.code}", request.client.host if request.client else None)
        )
    else:
        principal = load_principal(request, session)
        current_actor.set(principal.actor)
        if not principal.has_role(*TELEMETRY_ROLES):
            raise Forbidden("sending telemetry needs a device key or the role monitor")
    rows = _parse_rows(raw, request.headers.get("content-type", ""))
    if len(rows) > MAX_BATCH:
        raise Invalid(
            f"at most {MAX_BATCH} readings per request", field="readings", value=len(rows)
        )
    return ingest_readings(session, rows, utcnow(), only_device=only).to_dict()


@router.get("/catalog")
def catalog(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Facility kinds, device types, measurands (units, ranges), comparators and levels."""
    return {
        "facility_kinds": {k: v[0] for k, v in FACILITY_KINDS.items()},
        "device_types": {
            k: {"name": v[0], "measurands": list(v[1])} for k, v in DEVICE_TYPES.items()
        },
        "measurands": {
            k: {"name": m.name, "unit": m.unit, "low": m.low, "high": m.high}
            for k, m in MEASURANDS.items()
        },
        "comparators": COMPARATORS,
        "levels": service.settings(session)["levels"],
    }


# --------------------------------------------------------------------------- facilities


@router.get("/facilities")
def list_facilities(
    principal: PrincipalDep, session: SessionDep, kind: str | None = None
) -> list[dict[str, Any]]:
    return [service.facility_out(f) for f in service.list_facilities(session, principal, kind)]


@router.get("/facilities/{facility_id}")
def get_facility(facility_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    f = service.load_facility(session, principal, facility_id)
    out = service.facility_out(f)
    out["devices"] = [
        service.device_out(d) for d in service.list_devices(session, principal, facility_id=f.id)
    ]
    return out


@router.post("/facilities", status_code=201)
def create_facility(body: FacilityIn, admin: AdminDep, session: SessionDep) -> dict[str, Any]:
    return service.facility_out(service.save_facility(session, None, body.model_dump()))


@router.patch("/facilities/{facility_id}")
def update_facility(
    facility_id: int, body: FacilityIn, admin: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return service.facility_out(
        service.save_facility(session, facility_id, body.model_dump(exclude_unset=True))
    )


@router.delete("/facilities/{facility_id}", status_code=204)
def delete_facility(facility_id: int, admin: AdminDep, session: SessionDep) -> None:
    service.delete_facility(session, facility_id)


# --------------------------------------------------------------------------- devices


@router.get("/devices")
def list_devices(
    principal: PrincipalDep,
    session: SessionDep,
    facility_id: int | None = None,
    status: str | None = None,
) -> list[dict[str, Any]]:
    return [
        service.device_out(d)
        for d in service.list_devices(session, principal, facility_id=facility_id, status=status)
    ]


@router.get("/devices/stats")
def device_stats(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.device_stats(session, principal)


@router.get("/devices/{device_id}")
def get_device(device_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    return service.device_out(service.load_device(session, principal, device_id))


@router.post("/devices", status_code=201)
def create_device(body: DeviceIn, admin: AdminDep, session: SessionDep) -> dict[str, Any]:
    return service.device_out(service.save_device(session, None, body.model_dump()))


@router.patch("/devices/{device_id}")
def update_device(
    device_id: int, body: DeviceIn, admin: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return service.device_out(
        service.save_device(session, device_id, body.model_dump(exclude_unset=True))
    )


@router.delete("/devices/{device_id}", status_code=204)
def delete_device(device_id: int, admin: AdminDep, session: SessionDep) -> None:
    service.delete_device(session, device_id)


@router.post("/devices/{device_id}/key")
def new_device_key(device_id: int, admin: AdminDep, session: SessionDep) -> dict[str, str]:
    """A new telemetry key (shown once; the old one stops working)."""
    return {"key": service.new_device_key(session, device_id)}


@router.get("/devices/{device_id}/series")
def device_series(
    device_id: int,
    principal: PrincipalDep,
    session: SessionDep,
    measurand: str,
    start: datetime | None = None,
    end: datetime | None = None,
    resolution: Annotated[str, Query(pattern="^(raw|1m|1h)$")] = "raw",
) -> dict[str, Any]:
    """Readings of one measurand (raw, or 1-minute / 1-hour min/max/avg/count)."""
    d = service.load_device(session, principal, device_id)
    e = end or utcnow()
    s = start or e - timedelta(hours=6)
    if s.tzinfo is None or e.tzinfo is None:
        raise Invalid("start and end need a time zone", field="start")
    if resolution == "raw":
        pts = service.series(session, d.code, measurand, s, e)
        return {"measurand": measurand, "points": [[t.isoformat(), v] for t, v in pts]}
    return {
        "measurand": measurand,
        "buckets": service.rollup_series(session, d.id, measurand, s, e, resolution),
    }


@router.get("/map")
def map_layer(principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """GeoJSON of the facilities in scope with devices, latest values and open alarm level."""
    return service.map_layer(session, principal)


# --------------------------------------------------------------------------- rules


@router.get("/rules")
def list_rules(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    if not principal.has_role(*service.STAFF_ROLES):
        raise Forbidden("monitoring rules need a staff role")
    from sqlalchemy import select

    return [service.rule_out(r) for r in session.scalars(select(Rule).order_by(Rule.id))]


@router.post("/rules", status_code=201)
def create_rule(body: RuleIn, admin: AdminDep, session: SessionDep) -> dict[str, Any]:
    return service.rule_out(service.save_rule(session, None, body.model_dump()))


@router.patch("/rules/{rule_id}")
def update_rule(rule_id: int, body: RuleIn, admin: AdminDep, session: SessionDep) -> dict[str, Any]:
    return service.rule_out(
        service.save_rule(session, rule_id, body.model_dump(exclude_unset=True))
    )


# --------------------------------------------------------------------------- alarms


@router.get("/alarms")
def list_alarms(
    principal: PrincipalDep,
    session: SessionDep,
    status: str | None = None,
    open: bool = False,
    device_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    names = service.level_names(session)
    return [
        service.alarm_out(session, a, names)
        for a in service.list_alarms(
            session, principal, status, open, device_id, limit=limit, offset=offset
        )
    ]


@router.get("/alarms/{alarm_id}")
def get_alarm(alarm_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Alarm detail: history, thresholds and the readings around it (for a chart)."""
    return service.alarm_detail(session, principal, alarm_id)


@router.post("/alarms/{alarm_id}/judge")
def judge_alarm(
    alarm_id: int, body: JudgeIn, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """研判: confirm (→ 预警 + urgent case to the owner unit) or reject as false (误报)."""
    a = service.judge(session, principal, alarm_id, body.confirm, body.reason, body.version)
    return service.alarm_out(session, a)

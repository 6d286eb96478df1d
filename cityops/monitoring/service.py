"""Lifeline monitoring (城市生命线) logic: facilities and devices, the alarm lifecycle, queries.

Alarm lifecycle (GUIDE §7)::

    报警 raised (pending 待研判) ──研判: confirm (auto for rules so marked, or a monitor)──►
        预警 issued (notifications to the owner unit and the monitors)
        + urgent case (特急, source ``iot``) filed through ``cases.service.create_case`` and
          dispatched (派遣) through the workflow to the facility's owner unit (权属单位)
        ──► 解除 cleared when the readings are back to normal (hysteresis) AND the case is
            closed (``monitoring.clear`` job, and at once when readings recover after closing)
    研判: reject as false (误报, with a reason) closes the alarm.

One open alarm per device and rule: repeats while open raise ``repeat_count`` (and the
level when worse); a recurrence after clearing opens a new alarm linked to the old one
(``previous_alarm_id``). An alarm not judged within the city's judging time (default 10 min)
is escalated (``monitoring.escalate`` job).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import h3
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.access.models import User, UserRole
from cityops.cases.models import END_STAGES, Case, CaseEvent, Notification
from cityops.core.db import utcnow
from cityops.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from cityops.core.security import Principal, scope_filter
from cityops.geo.models import H3_RES, Category, CitySetting, Component, Unit
from cityops.monitoring.catalog import (
    COMPARATORS,
    DEFAULT_LEVELS,
    DEVICE_STATUSES,
    DEVICE_TYPES,
    FACILITY_KINDS,
    MEASURANDS,
)
from cityops.monitoring.models import (
    OPEN_ALARM_STATUSES,
    Alarm,
    AlarmEvent,
    Device,
    Facility,
    Latest,
    Reading,
    Rollup1m,
    Rule,
)

if TYPE_CHECKING:
    from cityops.monitoring.ingest import DeviceInfo, IngestResult

SETTINGS_KEY = "monitoring"
DEFAULT_SETTINGS: dict[str, Any] = {
    "levels": DEFAULT_LEVELS,
    #: Minutes a raised alarm may wait for 研判 before it is escalated.
    "judge_minutes": 10,
}
#: The monitoring centre acting in the case workflow (files and dispatches urgent cases).
MONITORING_ACTOR = Principal(
    user_id=0,
    username="monitoring",
    display_name="城市生命线监测",
    roles=frozenset({"system", "operator", "shift_leader", "dispatcher"}),
    unit_id=None,
    scope_region_code=None,
    scope_unit_only=False,
)
#: Roles that see monitoring data (scoped by region or unit like cases).
STAFF_ROLES = (
    "monitor",
    "commander",
    "leader",
    "shift_leader",
    "dispatcher",
    "operator",
    "handler",
    "admin",
)


def settings(session: Session) -> dict[str, Any]:
    row = session.get(CitySetting, SETTINGS_KEY)
    out = dict(DEFAULT_SETTINGS)
    if row is not None and isinstance(row.value, dict):
        out.update(row.value)
    return out


def level_names(session: Session) -> dict[int, str]:
    return {
        int(lv["level"]): f"{lv.get('name', lv['level'])}({lv.get('color', '')})"
        for lv in settings(session)["levels"]
    }


# --------------------------------------------------------------------------- scope


def facility_visible(principal: Principal, f: Facility) -> bool:
    if principal.scope_unit_only:
        return principal.unit_id is not None and f.owner_unit_id == principal.unit_id
    scope = principal.scope_region_code
    return scope is None or (f.grid_code or "").startswith(scope)


def _facility_filter(principal: Principal) -> Any:
    if principal.scope_unit_only:
        return Facility.owner_unit_id == (principal.unit_id or -1)
    return scope_filter(principal, Facility.grid_code)


def _need_staff(principal: Principal) -> None:
    if not principal.has_role(*STAFF_ROLES):
        raise Forbidden("monitoring data needs a staff role", required_roles=list(STAFF_ROLES))


# --------------------------------------------------------------------------- facilities


def facility_out(f: Facility) -> dict[str, Any]:
    return {
        "id": f.id,
        "code": f.code,
        "name": f.name,
        "kind": f.kind,
        "kind_name": FACILITY_KINDS.get(f.kind, (f.kind, ""))[0],
        "owner_unit_id": f.owner_unit_id,
        "component_id": f.component_id,
        "lon": f.lon,
        "lat": f.lat,
        "grid_code": f.grid_code,
        "address": f.address,
        "case_category_id": f.case_category_id,
        "attrs": f.attrs or {},
        "active": f.active,
        "version": f.version,
    }


def _place(session: Session, lon: Any, lat: Any) -> tuple[float, float, int, str | None]:
    from cityops.geo.service import locate

    try:
        x, y = float(lon), float(lat)
    except (TypeError, ValueError):
        raise Invalid("lon and lat are required numbers", field="lon/lat") from None
    where = locate(session, x, y)
    return x, y, h3.str_to_int(h3.latlng_to_cell(y, x, H3_RES)), where["grid"]["code"]


def save_facility(session: Session, facility_id: int | None, data: dict[str, Any]) -> Facility:
    f = session.get(Facility, facility_id) if facility_id is not None else None
    if facility_id is not None and f is None:
        raise NotFound(f"no facility {facility_id}")
    if f is not None and data.get("version") not in (None, f.version):
        raise Conflict(f"facility {f.code} was changed by someone else; reload it")
    merged = {**(facility_out(f) if f else {}), **{k: v for k, v in data.items() if v is not None}}
    for key in ("code", "name", "kind", "owner_unit_id", "lon", "lat"):
        if merged.get(key) in (None, ""):
            raise Invalid(f"field '{key}' is required", field=key)
    if merged["kind"] not in FACILITY_KINDS:
        raise Invalid(
            f"unknown facility kind {merged['kind']!r}: one of {', '.join(FACILITY_KINDS)}",
            field="kind",
            value=merged["kind"],
        )
    if session.get(Unit, merged["owner_unit_id"]) is None:
        raise Invalid(
            f"no unit {merged['owner_unit_id']}",
            field="owner_unit_id",
            value=merged["owner_unit_id"],
        )
    dup = session.scalars(select(Facility.id).where(Facility.code == merged["code"])).first()
    if dup is not None and dup != facility_id:
        raise Conflict(f"facility code {merged['code']} exists already", field="code")
    comp_id = merged.get("component_id")
    if data.get("component_code"):
        comp_id = session.scalars(
            select(Component.id).where(Component.code == data["component_code"])
        ).first()
        if comp_id is None:
            raise Invalid(
                f"unknown component {data['component_code']}",
                field="component_code",
                value=data["component_code"],
            )
    cat = merged.get("case_category_id")
    if cat is not None and session.get(Category, cat) is None:
        raise Invalid(f"no category {cat}", field="case_category_id", value=cat)
    lon, lat, cell, grid_code = _place(session, merged["lon"], merged["lat"])
    if f is None:
        f = Facility(code=merged["code"])
        session.add(f)
    f.code = merged["code"]
    f.name = merged["name"]
    f.kind = merged["kind"]
    f.owner_unit_id = merged["owner_unit_id"]
    f.component_id = comp_id
    f.lon, f.lat, f.h3, f.grid_code = lon, lat, cell, grid_code
    f.address = merged.get("address")
    f.case_category_id = cat
    f.attrs = merged.get("attrs") or None
    f.active = bool(merged.get("active", True))
    session.flush()
    return f


def delete_facility(session: Session, facility_id: int) -> None:
    f = session.get(Facility, facility_id)
    if f is None:
        raise NotFound(f"no facility {facility_id}")
    if session.scalars(select(Device.id).where(Device.facility_id == f.id)).first() is not None:
        raise Conflict(f"facility {f.code} still has devices: remove or move them first")
    session.delete(f)
    session.flush()


# --------------------------------------------------------------------------- devices


def device_out(d: Device) -> dict[str, Any]:
    return {
        "id": d.id,
        "code": d.code,
        "name": d.name,
        "device_type": d.device_type,
        "device_type_name": DEVICE_TYPES.get(d.device_type, (d.device_type, ()))[0],
        "facility_id": d.facility_id,
        "measurands": [
            {"code": m, "name": MEASURANDS[m].name, "unit": MEASURANDS[m].unit}
            for m in d.measurands
            if m in MEASURANDS
        ],
        "lon": d.lon,
        "lat": d.lat,
        "grid_code": d.grid_code,
        "interval_s": d.interval_s,
        "status": d.status,
        "status_name": DEVICE_STATUSES.get(d.status, d.status),
        "last_seen_at": d.last_seen_at.isoformat() if d.last_seen_at else None,
        "accepted_count": d.accepted_count,
        "rejected_count": d.rejected_count,
        "last_reject_at": d.last_reject_at.isoformat() if d.last_reject_at else None,
        "last_reject_reason": d.last_reject_reason,
        "has_key": d.secret_hash is not None,
        "version": d.version,
    }


def save_device(session: Session, device_id: int | None, data: dict[str, Any]) -> Device:
    d = session.get(Device, device_id) if device_id is not None else None
    if device_id is not None and d is None:
        raise NotFound(f"no device {device_id}")
    if d is not None and data.get("version") not in (None, d.version):
        raise Conflict(f"device {d.code} was changed by someone else; reload it")
    cur: dict[str, Any] = {}
    if d is not None:
        cur = {
            "code": d.code,
            "name": d.name,
            "device_type": d.device_type,
            "facility_id": d.facility_id,
            "measurands": d.measurands,
            "lon": d.lon,
            "lat": d.lat,
            "interval_s": d.interval_s,
            "status": d.status,
        }
    merged = {**cur, **{k: v for k, v in data.items() if v is not None}}
    for key in ("code", "device_type", "facility_id"):
        if merged.get(key) in (None, ""):
            raise Invalid(f"field '{key}' is required", field=key)
    if merged["device_type"] not in DEVICE_TYPES:
        raise Invalid(
            f"unknown device type {merged['device_type']!r}: one of {', '.join(DEVICE_TYPES)}",
            field="device_type",
            value=merged["device_type"],
        )
    fac = session.get(Facility, merged["facility_id"])
    if fac is None:
        raise Invalid(
            f"no facility {merged['facility_id']}",
            field="facility_id",
            value=merged["facility_id"],
        )
    ms = merged.get("measurands") or list(DEVICE_TYPES[merged["device_type"]][1])
    bad = [m for m in ms if m not in MEASURANDS]
    if bad or not isinstance(ms, list):
        raise Invalid(f"unknown measurand {bad[:1]}", field="measurands", value=bad[:1])
    interval = int(merged.get("interval_s") or 60)
    if interval <= 0:
        raise Invalid("interval_s must be positive", field="interval_s", value=interval)
    status = merged.get("status") or "online"
    if status not in DEVICE_STATUSES:
        raise Invalid(f"status must be one of {', '.join(DEVICE_STATUSES)}", field="status")
    dup = session.scalars(select(Device.id).where(Device.code == merged["code"])).first()
    if dup is not None and dup != device_id:
        raise Conflict(f"device code {merged['code']} exists already", field="code")
    if merged.get("lon") is None or merged.get("lat") is None:
        lon, lat, grid_code = fac.lon, fac.lat, fac.grid_code
    else:
        lon, lat, _, grid_code = _place(session, merged["lon"], merged["lat"])
    if d is None:
        d = Device(code=merged["code"], accepted_count=0, rejected_count=0)
        session.add(d)
    d.code = merged["code"]
    d.name = merged.get("name")
    d.device_type = merged["device_type"]
    d.facility_id = fac.id
    d.measurands = list(dict.fromkeys(ms))
    d.lon, d.lat, d.grid_code = lon, lat, grid_code
    d.interval_s = interval
    d.status = status
    session.flush()
    return d


def delete_device(session: Session, device_id: int) -> None:
    d = session.get(Device, device_id)
    if d is None:
        raise NotFound(f"no device {device_id}")
    if session.scalars(select(Alarm.id).where(Alarm.device_id == d.id)).first() is not None:
        raise Conflict(f"device {d.code} has alarms: set it to maintenance instead")
    session.delete(d)
    session.flush()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_device_key(session: Session, device_id: int) -> str:
    """A fresh telemetry key for a device (shown once; only its hash is stored)."""
    d = session.get(Device, device_id)
    if d is None:
        raise NotFound(f"no device {device_id}")
    key = f"{d.code}.{secrets.token_urlsafe(24)}"
    d.secret_hash = hash_key(key)
    session.flush()
    return key


def device_for_key(session: Session, key: str) -> Device | None:
    return session.scalars(select(Device).where(Device.secret_hash == hash_key(key))).first()


# --------------------------------------------------------------------------- rules


def rule_out(r: Rule) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "device_type": r.device_type,
        "device_id": r.device_id,
        "measurand": r.measurand,
        "comparator": r.comparator,
        "comparator_name": COMPARATORS.get(r.comparator, r.comparator),
        "levels": r.levels,
        "duration_s": r.duration_s,
        "hysteresis": r.hysteresis,
        "auto_confirm": r.auto_confirm,
        "active": r.active,
        "description": r.description,
        "version": r.version,
    }


def save_rule(session: Session, rule_id: int | None, data: dict[str, Any]) -> Rule:
    r = session.get(Rule, rule_id) if rule_id is not None else None
    if rule_id is not None and r is None:
        raise NotFound(f"no rule {rule_id}")
    merged = {**(rule_out(r) if r else {}), **{k: v for k, v in data.items() if v is not None}}
    comp = merged.get("comparator")
    if comp not in COMPARATORS:
        raise Invalid(f"comparator must be one of {', '.join(COMPARATORS)}", field="comparator")
    if not merged.get("name"):
        raise Invalid("field 'name' is required", field="name")
    if (merged.get("device_type") is None) == (
        merged.get("device_id") is None
    ) and comp != "offline":
        raise Invalid("a rule is for a device_type or for one device_id", field="device_type")
    if merged.get("device_type") is not None and merged["device_type"] not in DEVICE_TYPES:
        raise Invalid("unknown device type", field="device_type", value=merged["device_type"])
    if merged.get("device_id") is not None and session.get(Device, merged["device_id"]) is None:
        raise Invalid(f"no device {merged['device_id']}", field="device_id")
    if comp != "offline" and merged.get("measurand") not in MEASURANDS:
        raise Invalid("unknown measurand", field="measurand", value=merged.get("measurand"))
    lv_allowed = {int(x["level"]) for x in settings(session)["levels"]}
    levels = merged.get("levels")
    if not isinstance(levels, list) or not levels:
        raise Invalid("levels: a list of {level, value} (or {level, low, high})", field="levels")
    for lv in levels:
        if not isinstance(lv, dict) or lv.get("level") not in lv_allowed:
            raise Invalid(
                f"each level needs 'level' in {sorted(lv_allowed)}", field="levels", value=lv
            )
        need = ("low", "high") if comp == "outside" else ("value",)
        for k in need:
            if not isinstance(lv.get(k), int | float) or isinstance(lv.get(k), bool):
                raise Invalid(f"level {lv['level']}: '{k}' must be a number", field="levels")
    if r is None:
        r = Rule()
        session.add(r)
    r.name = merged["name"]
    r.device_type = merged.get("device_type")
    r.device_id = merged.get("device_id")
    r.measurand = merged.get("measurand") if comp != "offline" else None
    r.comparator = comp
    r.levels = levels
    r.duration_s = int(merged.get("duration_s") or 0)
    r.hysteresis = float(merged.get("hysteresis") or 0.0)
    r.auto_confirm = bool(merged.get("auto_confirm", False))
    r.active = bool(merged.get("active", True))
    r.description = merged.get("description")
    session.flush()
    return r


# --------------------------------------------------------------------------- alarm lifecycle


def _aevent(
    session: Session,
    alarm: Alarm,
    action: str,
    now: datetime,
    actor: str = "system",
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        AlarmEvent(alarm_id=alarm.id, at=now, action=action, actor_name=actor, note=note, data=data)
    )


def _recent(
    session: Session, device_id: int, measurand: str | None, until: datetime, n: int = 20
) -> list[list[Any]]:
    if measurand is None:
        return []
    rows = session.execute(
        select(Reading.ts, Reading.value)
        .where(
            Reading.device_id == device_id,
            Reading.measurand == measurand,
            Reading.ts <= until,
        )
        .order_by(Reading.ts.desc())
        .limit(n)
    ).all()
    return [[r.ts.isoformat(), r.value] for r in reversed(rows)]


def raise_alarm(
    session: Session,
    dev: DeviceInfo,
    rule: Rule,
    level: int,
    ts: datetime,
    value: float | None,
    now: datetime,
) -> Alarm:
    """报警: open an alarm for (device, rule); auto-confirmed rules go straight on to 预警 + case."""
    device = session.get(Device, dev.id)
    assert device is not None
    fac = session.get(Facility, device.facility_id)
    assert fac is not None
    prev = session.scalars(
        select(Alarm.id)
        .where(Alarm.device_id == dev.id, Alarm.rule_id == rule.id)
        .order_by(Alarm.id.desc())
        .limit(1)
    ).first()
    unit = session.get(Unit, fac.owner_unit_id)
    m = MEASURANDS.get(rule.measurand or "")
    alarm = Alarm(
        device_id=dev.id,
        rule_id=rule.id,
        facility_id=fac.id,
        grid_code=fac.grid_code,
        measurand=rule.measurand,
        level=level,
        status="pending",
        is_open=1,
        raised_at=now,
        trigger_ts=ts,
        trigger_value=value,
        last_ts=ts,
        last_value=value,
        repeat_count=0,
        normal=False,
        previous_alarm_id=prev,
        snapshot={
            "device": {"code": device.code, "type": device.device_type, "name": device.name},
            "facility": {
                "code": fac.code,
                "name": fac.name,
                "kind": fac.kind,
                "owner_unit": unit.name if unit else None,
                "address": fac.address,
            },
            "rule": rule_out(rule),
            "measurand": {"code": m.code, "name": m.name, "unit": m.unit} if m else None,
            "readings": _recent(session, dev.id, rule.measurand, ts),
        },
    )
    session.add(alarm)
    session.flush()
    _aevent(
        session,
        alarm,
        "raised",
        now,
        note=f"{rule.name}: {value} ({level_names(session).get(level, level)})",
        data={"ts": ts.isoformat(), "value": value, "level": level},
    )
    if prev is not None:
        _aevent(session, alarm, "recurrence", now, data={"previous_alarm_id": prev})
    if rule.auto_confirm:
        _confirm(session, alarm, "system", "自动研判", now)
    else:
        _notify_roles(session, ("monitor",), f"待研判报警: {fac.name} {rule.name}", alarm, now)
    return alarm


def alarm_repeat(
    session: Session, alarm: Alarm, level: int, ts: datetime, value: float, now: datetime
) -> bool:
    """The condition tripped again while the alarm is open: count a new episode after
    normal readings, raise the level when worse. Returns whether anything changed."""
    changed = False
    if alarm.normal:
        alarm.normal = False
        alarm.normal_at = None
        alarm.repeat_count += 1
        _aevent(session, alarm, "repeat", now, data={"ts": ts.isoformat(), "value": value})
        changed = True
    if level < alarm.level:
        _aevent(
            session,
            alarm,
            "level_up",
            now,
            note=f"{alarm.level} → {level}",
            data={"from": alarm.level, "to": level, "value": value},
        )
        alarm.level = level
        changed = True
    if changed:
        # only on events: a live reading must not bump the version a monitor is judging
        alarm.last_ts, alarm.last_value = ts, value
    return changed


def alarm_normal(
    session: Session, alarm: Alarm, ts: datetime, value: float | None, now: datetime
) -> None:
    """Readings are back to normal (past the hysteresis): clear if the case is closed too."""
    alarm.normal = True
    alarm.normal_at = ts
    alarm.last_ts, alarm.last_value = ts, value
    _aevent(session, alarm, "normal", now, data={"ts": ts.isoformat(), "value": value})
    try_clear(session, alarm, now)


def _case_done(session: Session, case_id: int | None) -> bool:
    seen = set()
    while case_id is not None and case_id not in seen:
        seen.add(case_id)
        c = session.get(Case, case_id)
        if c is None:
            return True
        if c.stage == "merged":
            case_id = c.duplicate_of_id
            continue
        return c.stage in END_STAGES
    return True


def try_clear(session: Session, alarm: Alarm, now: datetime) -> bool:
    """解除: readings normal and the case closed."""
    if alarm.status != "active" or not alarm.normal or not _case_done(session, alarm.case_id):
        return False
    alarm.status = "cleared"
    alarm.is_open = None
    alarm.cleared_at = now
    _aevent(session, alarm, "cleared", now, note="读数恢复正常且案卷已结案")
    return True


def _notify_roles(
    session: Session,
    roles: tuple[str, ...],
    title: str,
    alarm: Alarm,
    now: datetime,
    kind: str = "iot_alarm",
) -> int:
    users = session.scalars(
        select(User.id)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role.in_(roles), User.active.is_(True))
        .distinct()
    ).all()
    return _notify_users(session, list(users), title, alarm, now, kind)


def _notify_users(
    session: Session,
    users: list[int],
    title: str,
    alarm: Alarm,
    now: datetime,
    kind: str,
    case_id: int | None = None,
) -> int:
    body = None
    snap = alarm.snapshot or {}
    if snap:
        body = (
            f"{snap['facility']['name']} / {snap['device']['code']}: "
            f"{alarm.last_value} {(snap.get('measurand') or {}).get('unit', '')}"
        )
    for uid in dict.fromkeys(users):
        session.add(
            Notification(
                user_id=uid,
                case_id=case_id,
                kind=kind,
                title=title[:200],
                body=body,
                dedupe_key=f"alarm:{alarm.id}:{kind}",
                created_at=now,
            )
        )
    return len(users)


def _confirm(session: Session, alarm: Alarm, actor: str, note: str | None, now: datetime) -> None:
    alarm.status = "active"
    alarm.judged_by = actor
    alarm.judged_at = now
    alarm.judgement_note = note
    _aevent(session, alarm, "confirmed", now, actor=actor, note=note)
    _issue(session, alarm, now)


def _case_category(session: Session, fac: Facility) -> int:
    if fac.case_category_id is not None:
        return fac.case_category_id
    from cityops.geo.service import chosen_standard

    code = FACILITY_KINDS.get(fac.kind, ("", ""))[1]
    std = chosen_standard(session)
    cid = session.scalars(
        select(Category.id).where(
            Category.code == code,
            Category.kind == "matter",
            Category.standard.in_([std, "local"]),
            Category.enabled.is_(True),
        )
    ).first()
    if cid is not None:
        return cid
    cat = session.scalars(
        select(Category).where(Category.standard == "local", Category.code == "SMX001")
    ).first()
    if cat is None:
        cat = Category(
            standard="local",
            kind="matter",
            code="SMX001",
            big_class_code="SMX",
            big_class_name="城市生命线",
            name="城市生命线监测报警",
            is_local=True,
            enabled=True,
            default_urgency="特急",
        )
        session.add(cat)
        session.flush()
    return cat.id


def _file_case(session: Session, data: dict[str, Any], owner_unit_id: int, now: datetime) -> Any:
    """create_case, then 受理/立案 without rule dispatch, then 派遣 to the owner unit."""
    from cityops.cases.service import create_case, perform

    intake = create_case(session, MONITORING_ACTOR, data, now)
    case = intake.case
    if not intake.merged:
        if case.stage == "accept":
            perform(session, MONITORING_ACTOR, case.id, "accept", {"note": "物联感知报警"}, now=now)
        if case.stage == "file":
            perform(
                session,
                MONITORING_ACTOR,
                case.id,
                "file",
                {"note": "物联感知报警", "auto_dispatch": False},
                now=now,
            )
        if case.stage == "dispatch":
            perform(
                session,
                MONITORING_ACTOR,
                case.id,
                "dispatch",
                {"unit_id": owner_unit_id, "note": "城市生命线报警: 派遣至权属单位"},
                now=now,
            )
    return intake


def _issue(session: Session, alarm: Alarm, now: datetime) -> None:
    """预警 + urgent case to the owner unit."""
    fac = session.get(Facility, alarm.facility_id)
    device = session.get(Device, alarm.device_id)
    rule = session.get(Rule, alarm.rule_id)
    assert fac is not None and device is not None and rule is not None
    names = level_names(session)
    m = MEASURANDS.get(alarm.measurand or "")
    reading = (
        f"{m.name} {alarm.last_value:g} {m.unit}"
        if m is not None and alarm.last_value is not None
        else rule.name
    )
    kind_name = FACILITY_KINDS.get(fac.kind, (fac.kind, ""))[0]
    desc = (
        f"【城市生命线{names.get(alarm.level, alarm.level)}报警】{kind_name} {fac.name}"
        f"（{fac.code}）设备 {device.code}：{rule.name}，{reading}，"
        f"时间 {alarm.last_ts.isoformat() if alarm.last_ts else ''}。请立即处置。"
    )
    data = {
        "source": "iot",
        "category_id": _case_category(session, fac),
        "urgency": "特急",
        "description": desc,
        "address": fac.address or fac.name,
        "lon": device.lon,
        "lat": device.lat,
    }
    savepoint = session.begin_nested()
    try:
        intake = _file_case(session, data, fac.owner_unit_id, now)
    except DomainError as exc:
        # the alarm stands (预警 below still goes out); the case needs a person
        savepoint.rollback()
        _aevent(session, alarm, "case_failed", now, note=exc.message, data=exc.details or None)
        intake = None
    else:
        savepoint.commit()
    alarm.warning_at = now
    if intake is None:
        _warn(session, alarm, fac, rule, names, now, None)
        session.flush()
        return
    case = intake.case
    session.add(
        CaseEvent(
            case_id=case.id,
            at=now,
            actor_name=MONITORING_ACTOR.username,
            action="iot_alarm",
            from_stage=case.stage,
            to_stage=case.stage,
            unit_id=fac.owner_unit_id,
            note=desc,
            data={"alarm_id": alarm.id, **(alarm.snapshot or {})},
        )
    )
    alarm.case_id = case.id
    _warn(session, alarm, fac, rule, names, now, case.id)
    _aevent(
        session,
        alarm,
        "case",
        now,
        note=f"案卷 {case.number} ({case.stage})",
        data={
            "case_id": case.id,
            "number": case.number,
            "merged": intake.merged,
            "lead_unit_id": case.lead_unit_id,
        },
    )
    session.flush()


def _warn(
    session: Session,
    alarm: Alarm,
    fac: Facility,
    rule: Rule,
    names: dict[int, str],
    now: datetime,
    case_id: int | None,
) -> None:
    """预警: notify the owner unit's people and the monitors/commanders."""
    owner_users = list(
        session.scalars(
            select(User.id).where(User.unit_id == fac.owner_unit_id, User.active.is_(True))
        )
    )
    monitors = list(
        session.scalars(
            select(User.id)
            .join(UserRole, UserRole.user_id == User.id)
            .where(UserRole.role.in_(("monitor", "commander")), User.active.is_(True))
        )
    )
    n = _notify_users(
        session,
        owner_users + monitors,
        f"预警: {fac.name} {rule.name} ({names.get(alarm.level, alarm.level)})",
        alarm,
        now,
        "iot_warning",
        case_id,
    )
    _aevent(session, alarm, "warning", now, data={"notified": n})


def judge(
    session: Session,
    principal: Principal,
    alarm_id: int,
    confirm: bool,
    note: str | None,
    version: int | None = None,
    now: datetime | None = None,
) -> Alarm:
    """研判 by a monitor: confirm (→ 预警 + case) or reject as false (误报, reason required)."""
    t = now or utcnow()
    if not principal.has_role("monitor", "admin"):
        raise Forbidden("研判 needs the role monitor", required_roles=["monitor"])
    alarm = load_alarm(session, principal, alarm_id)
    if version is not None and version != alarm.version:
        raise Conflict(
            f"alarm {alarm.id} was changed (you saw version {version}, it is {alarm.version})",
            current_version=alarm.version,
        )
    if alarm.status != "pending":
        raise Conflict(f"alarm {alarm.id} is not waiting for 研判 (it is {alarm.status})")
    if confirm:
        _confirm(session, alarm, principal.username, note, t)
    else:
        if not note or not note.strip():
            raise Invalid("误报: a reason is required", field="reason")
        alarm.status = "rejected"
        alarm.is_open = None
        alarm.judged_by = principal.username
        alarm.judged_at = t
        alarm.judgement_note = note.strip()
        alarm.cleared_at = t
        _aevent(session, alarm, "rejected", t, actor=principal.username, note=note.strip())
    session.flush()
    return alarm


def offline_recovered(
    session: Session, device_ids: list[int], now: datetime, result: IngestResult | None = None
) -> None:
    for a in session.scalars(
        select(Alarm)
        .join(Rule, Rule.id == Alarm.rule_id)
        .where(Alarm.device_id.in_(device_ids), Alarm.is_open == 1, Rule.comparator == "offline")
    ):
        if not a.normal:
            alarm_normal(session, a, now, None, now)
            if result is not None:
                result.alarms_updated.append(a.id)


# --------------------------------------------------------------------------- jobs


def detect_offline(session: Session, now: datetime) -> list[int]:
    """Devices with no data for N× their interval (the offline rule's value, default 3) go
    offline and get an offline alarm. Returns the alarm ids raised."""
    from cityops.monitoring.ingest import DeviceInfo

    rules = session.scalars(
        select(Rule).where(Rule.comparator == "offline", Rule.active.is_(True))
    ).all()
    if not rules:
        return []
    generic = next((r for r in rules if r.device_type is None and r.device_id is None), None)
    by_type = {r.device_type: r for r in rules if r.device_type and r.device_id is None}
    by_dev = {r.device_id: r for r in rules if r.device_id is not None}
    raised: list[int] = []
    rows = session.execute(
        select(
            Device.id,
            Device.code,
            Device.device_type,
            Device.facility_id,
            Device.measurands,
            Device.status,
            Device.interval_s,
            Device.last_seen_at,
            Device.created_at,
        ).where(Device.status == "online")
    ).all()
    for row in rows:
        rule = by_dev.get(row.id) or by_type.get(row.device_type) or generic
        if rule is None:
            continue
        factor = float(rule.levels[0].get("value", 3.0))
        since = row.last_seen_at or row.created_at
        if since is None or now - since < timedelta(seconds=row.interval_s * factor):
            continue
        dev = session.get(Device, row.id)
        assert dev is not None
        dev.status = "offline"
        info = DeviceInfo(
            row.id,
            row.code,
            row.device_type,
            row.facility_id,
            frozenset(row.measurands or ()),
            "offline",
            row.interval_s,
        )
        existing = session.scalars(
            select(Alarm).where(
                Alarm.device_id == row.id, Alarm.rule_id == rule.id, Alarm.is_open == 1
            )
        ).first()
        level = min(int(lv["level"]) for lv in rule.levels)
        if existing is not None:
            alarm_repeat(session, existing, level, now, 0.0, now)
            continue
        a = raise_alarm(session, info, rule, level, now, None, now)
        raised.append(a.id)
    session.flush()
    return raised


def escalate_unjudged(session: Session, now: datetime) -> list[int]:
    """Alarms waiting for 研判 longer than the judging time are escalated (once)."""
    minutes = float(settings(session)["judge_minutes"])
    due = now - timedelta(minutes=minutes)
    out = []
    for a in session.scalars(
        select(Alarm).where(
            Alarm.status == "pending", Alarm.escalated_at.is_(None), Alarm.raised_at <= due
        )
    ):
        a.escalated_at = now
        _aevent(session, a, "escalated", now, note=f"超过 {minutes:g} 分钟未研判, 已提级")
        fac = session.get(Facility, a.facility_id)
        _notify_roles(
            session,
            ("shift_leader", "leader", "monitor"),
            f"报警超时未研判(提级): {fac.name if fac else a.facility_id}",
            a,
            now,
            "iot_escalate",
        )
        out.append(a.id)
    session.flush()
    return out


def check_clearances(session: Session, now: datetime) -> list[int]:
    """Clear active alarms whose readings are normal and whose case is closed."""
    out = []
    for a in session.scalars(select(Alarm).where(Alarm.status == "active", Alarm.normal.is_(True))):
        if try_clear(session, a, now):
            out.append(a.id)
    session.flush()
    return out


# --------------------------------------------------------------------------- queries


def latest_values(
    session: Session, device_codes: list[str], measurand: str
) -> dict[str, tuple[datetime, float]]:
    """Latest (ts, value) of ``measurand`` per device code (codes without data are absent)."""
    out: dict[str, tuple[datetime, float]] = {}
    codes = list(dict.fromkeys(device_codes))
    for i in range(0, len(codes), 500):
        for code, ts, value in session.execute(
            select(Device.code, Latest.ts, Latest.value)
            .join(Latest, Latest.device_id == Device.id)
            .where(Device.code.in_(codes[i : i + 500]), Latest.measurand == measurand)
        ):
            out[code] = (ts, value)
    return out


def series(
    session: Session, device_code: str, measurand: str, start: datetime, end: datetime
) -> list[tuple[datetime, float]]:
    """Raw readings in [start, end] by time; where raw readings were removed by retention
    the 1-minute averages fill in."""
    dev_id = session.scalars(select(Device.id).where(Device.code == device_code)).first()
    if dev_id is None:
        return []
    raw = [
        (r.ts, r.value)
        for r in session.execute(
            select(Reading.ts, Reading.value)
            .where(
                Reading.device_id == dev_id,
                Reading.measurand == measurand,
                Reading.ts >= start,
                Reading.ts <= end,
            )
            .order_by(Reading.ts)
        )
    ]
    first = raw[0][0] if raw else end + timedelta(microseconds=1)
    older = [
        (r.bucket, r.vsum / r.n)
        for r in session.execute(
            select(Rollup1m.bucket, Rollup1m.vsum, Rollup1m.n)
            .where(
                Rollup1m.device_id == dev_id,
                Rollup1m.measurand == measurand,
                Rollup1m.bucket >= start,
                Rollup1m.bucket < first.replace(second=0, microsecond=0),
            )
            .order_by(Rollup1m.bucket)
        )
        if r.n
    ]
    if older and raw:
        # only where raw data is gone: before retention's cut-off
        from cityops.monitoring.ingest import retention_days

        cut = utcnow() - timedelta(days=retention_days())
        older = [p for p in older if p[0] < cut]
    return older + raw


def rollup_series(
    session: Session, device_id: int, measurand: str, start: datetime, end: datetime, res: str
) -> list[dict[str, Any]]:
    from cityops.monitoring.models import Rollup1h

    t: Any = Rollup1m if res == "1m" else Rollup1h
    return [
        {
            "bucket": r.bucket.isoformat(),
            "min": r.vmin,
            "max": r.vmax,
            "avg": r.vsum / r.n if r.n else None,
            "count": r.n,
        }
        for r in session.scalars(
            select(t)
            .where(
                t.device_id == device_id,
                t.measurand == measurand,
                t.bucket >= start,
                t.bucket <= end,
            )
            .order_by(t.bucket)
        )
    ]


def list_facilities(
    session: Session, principal: Principal, kind: str | None = None, limit: int = 1000
) -> list[Facility]:
    _need_staff(principal)
    q = select(Facility).where(_facility_filter(principal)).order_by(Facility.code).limit(limit)
    if kind:
        q = q.where(Facility.kind == kind)
    return list(session.scalars(q))


def load_facility(session: Session, principal: Principal, facility_id: int) -> Facility:
    _need_staff(principal)
    f = session.get(Facility, facility_id)
    if f is None or not facility_visible(principal, f):
        raise NotFound(f"no facility {facility_id}")
    return f


def list_devices(
    session: Session,
    principal: Principal,
    facility_id: int | None = None,
    status: str | None = None,
    limit: int = 2000,
) -> list[Device]:
    _need_staff(principal)
    q = (
        select(Device)
        .join(Facility, Facility.id == Device.facility_id)
        .where(_facility_filter(principal))
        .order_by(Device.code)
        .limit(limit)
    )
    if facility_id is not None:
        q = q.where(Device.facility_id == facility_id)
    if status:
        q = q.where(Device.status == status)
    return list(session.scalars(q))


def load_device(session: Session, principal: Principal, device_id: int) -> Device:
    _need_staff(principal)
    d = session.get(Device, device_id)
    if d is None:
        raise NotFound(f"no device {device_id}")
    f = session.get(Facility, d.facility_id)
    if f is None or not facility_visible(principal, f):
        raise NotFound(f"no device {device_id}")
    return d


def map_layer(session: Session, principal: Principal) -> dict[str, Any]:
    """Facilities with their devices, latest values and the worst open alarm level (GeoJSON)."""
    facs = list_facilities(session, principal, limit=100_000)
    ids = [f.id for f in facs]
    devs: dict[int, list[Device]] = {}
    latest: dict[int, dict[str, Any]] = {}
    alarm_level: dict[int, int] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        for d in session.scalars(select(Device).where(Device.facility_id.in_(chunk))):
            devs.setdefault(d.facility_id, []).append(d)
        for fid, lvl in session.execute(
            select(Alarm.facility_id, func.min(Alarm.level))
            .where(Alarm.facility_id.in_(chunk), Alarm.is_open == 1)
            .group_by(Alarm.facility_id)
        ):
            alarm_level[fid] = lvl
    dev_ids = [d.id for ds in devs.values() for d in ds]
    for i in range(0, len(dev_ids), 500):
        for row in session.scalars(
            select(Latest).where(Latest.device_id.in_(dev_ids[i : i + 500]))
        ):
            latest.setdefault(row.device_id, {})[row.measurand] = {
                "ts": row.ts.isoformat(),
                "value": row.value,
            }
    feats = []
    for f in facs:
        feats.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [f.lon, f.lat]},
                "properties": {
                    **facility_out(f),
                    "alarm_level": alarm_level.get(f.id),
                    "devices": [
                        {
                            "id": d.id,
                            "code": d.code,
                            "device_type": d.device_type,
                            "status": d.status,
                            "latest": latest.get(d.id, {}),
                        }
                        for d in devs.get(f.id, [])
                    ],
                },
            }
        )
    return {"type": "FeatureCollection", "features": feats}


def _alarm_scope(principal: Principal) -> Any:
    if principal.scope_unit_only:
        return Alarm.facility_id.in_(
            select(Facility.id).where(Facility.owner_unit_id == (principal.unit_id or -1))
        )
    return scope_filter(principal, Alarm.grid_code)


def load_alarm(session: Session, principal: Principal, alarm_id: int) -> Alarm:
    _need_staff(principal)
    a = session.get(Alarm, alarm_id)
    if a is None:
        raise NotFound(f"no alarm {alarm_id}")
    f = session.get(Facility, a.facility_id)
    if f is None or not facility_visible(principal, f):
        raise NotFound(f"no alarm {alarm_id}")
    return a


def list_alarms(
    session: Session,
    principal: Principal,
    status: str | None = None,
    open_only: bool = False,
    device_id: int | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[Alarm]:
    _need_staff(principal)
    q = select(Alarm).where(_alarm_scope(principal))
    if status:
        q = q.where(Alarm.status == status)
    if open_only:
        q = q.where(Alarm.status.in_(OPEN_ALARM_STATUSES))
    if device_id is not None:
        q = q.where(Alarm.device_id == device_id)
    return list(session.scalars(q.order_by(Alarm.id.desc()).limit(limit).offset(offset)))


def alarm_out(session: Session, a: Alarm, names: dict[int, str] | None = None) -> dict[str, Any]:
    names = names if names is not None else level_names(session)
    from cityops.monitoring.models import ALARM_STATUSES

    snap = a.snapshot or {}
    return {
        "id": a.id,
        "device_id": a.device_id,
        "device_code": (snap.get("device") or {}).get("code"),
        "facility_id": a.facility_id,
        "facility_name": (snap.get("facility") or {}).get("name"),
        "rule_id": a.rule_id,
        "rule_name": (snap.get("rule") or {}).get("name"),
        "measurand": a.measurand,
        "level": a.level,
        "level_name": names.get(a.level),
        "status": a.status,
        "status_name": ALARM_STATUSES.get(a.status, a.status),
        "raised_at": a.raised_at.isoformat(),
        "trigger_ts": a.trigger_ts.isoformat(),
        "trigger_value": a.trigger_value,
        "last_ts": a.last_ts.isoformat() if a.last_ts else None,
        "last_value": a.last_value,
        "repeat_count": a.repeat_count,
        "normal": a.normal,
        "judged_by": a.judged_by,
        "judgement_note": a.judgement_note,
        "warning_at": a.warning_at.isoformat() if a.warning_at else None,
        "case_id": a.case_id,
        "escalated": a.escalated_at is not None,
        "cleared_at": a.cleared_at.isoformat() if a.cleared_at else None,
        "previous_alarm_id": a.previous_alarm_id,
        "version": a.version,
    }


def alarm_detail(session: Session, principal: Principal, alarm_id: int) -> dict[str, Any]:
    """An alarm with its history, the rule's thresholds and the readings around it (chart)."""
    a = load_alarm(session, principal, alarm_id)
    out = alarm_out(session, a)
    rule = session.get(Rule, a.rule_id)
    out["rule"] = rule_out(rule) if rule else None
    out["snapshot"] = a.snapshot
    out["events"] = [
        {
            "at": e.at.isoformat(),
            "action": e.action,
            "actor": e.actor_name,
            "note": e.note,
            "data": e.data,
        }
        for e in session.scalars(
            select(AlarmEvent).where(AlarmEvent.alarm_id == a.id).order_by(AlarmEvent.id)
        )
    ]
    readings: list[list[Any]] = []
    if a.measurand:
        start = a.trigger_ts - timedelta(hours=1)
        end = max(a.last_ts or a.trigger_ts, a.trigger_ts) + timedelta(minutes=30)
        readings = [
            [ts.isoformat(), v]
            for ts, v in session.execute(
                select(Reading.ts, Reading.value)
                .where(
                    Reading.device_id == a.device_id,
                    Reading.measurand == a.measurand,
                    Reading.ts >= start,
                    Reading.ts <= end,
                )
                .order_by(Reading.ts)
                .limit(5000)
            )
        ]
    out["readings"] = readings
    if a.case_id:
        c = session.get(Case, a.case_id)
        if c is not None:
            out["case"] = {
                "id": c.id,
                "number": c.number,
                "stage": c.stage,
                "urgency": c.urgency,
                "lead_unit_id": c.lead_unit_id,
            }
    return out


def device_stats(session: Session, principal: Principal) -> dict[str, Any]:
    """Device counts by status and the devices with refused readings (intake quality)."""
    _need_staff(principal)
    q = (
        select(Device.status, func.count())
        .join(Facility, Facility.id == Device.facility_id)
        .where(_facility_filter(principal))
        .group_by(Device.status)
    )
    by_status = {s: n for s, n in session.execute(q)}
    rej = session.scalars(
        select(Device)
        .join(Facility, Facility.id == Device.facility_id)
        .where(_facility_filter(principal), Device.rejected_count > 0)
        .order_by(Device.rejected_count.desc())
        .limit(50)
    ).all()
    return {
        "by_status": by_status,
        "rejecting": [
            {
                "code": d.code,
                "rejected_count": d.rejected_count,
                "last_reject_reason": d.last_reject_reason,
            }
            for d in rej
        ],
    }

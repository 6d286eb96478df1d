"""Demo data of the monitoring context, seeded into the demo city by ``cityops demo``.

Facilities sit on real components of the demo city where one of the right class exists
(gas covers for valve wells, pump stations, bridges, …), are owned by the utility that owns
that kind of network (燃气/供水/排水 companies, 市政设施管理处), and carry the sensors a
lifeline system would put there. Device codes are stable (``GAS-VW-001-CH4``) so the
simulator and the flood-command demo can refer to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from cityops.core import audit
from cityops.geo.models import Category, Component, Unit
from cityops.monitoring.catalog import DEVICE_TYPES, FACILITY_KINDS
from cityops.monitoring.models import Device, Facility

#: kind → (code prefix, owner unit key, component class codes to sit on, devices, count)
PLAN: list[tuple[str, str, str, tuple[str, ...], tuple[tuple[str, str, int], ...], int]] = [
    (
        "valve_well",
        "GAS-VW",
        "GAS",
        ("01011", "01021"),
        (("methane_detector", "CH4", 60), ("cover_sensor", "COVER", 300)),
        6,
    ),
    ("underground_space", "GAS-US", "GAS", ("01011",), (("methane_detector", "CH4", 60),), 2),
    ("regulator_station", "GAS-RS", "GAS", ("01049",), (("pressure_gauge", "P", 60),), 2),
    (
        "gas_pipe",
        "GAS-PS",
        "GAS",
        ("01057", "01011"),
        (("pressure_gauge", "P", 60), ("flow_meter", "Q", 60)),
        2,
    ),
    (
        "water_main",
        "WAT-WM",
        "WATER",
        ("01001",),
        (("pressure_gauge", "P", 60), ("flow_meter", "Q", 60)),
        3,
    ),
    ("drainage_pipe", "DRN-DP", "DRAIN", ("01003", "01002"), (("level_gauge", "L", 300),), 2),
    ("pump_station", "DRN-PS", "DRAIN", ("01072",), (("level_gauge", "L", 60),), 1),
    ("outfall", "DRN-OF", "DRAIN", ("01073", "01003"), (("level_gauge", "L", 300),), 1),
    (
        "bridge",
        "BRG",
        "SZC",
        ("02009", "02008", "02006"),
        (
            ("strain_gauge", "S1", 60),
            ("strain_gauge", "S2", 60),
            ("deflection_sensor", "D", 60),
            ("accelerometer", "A", 60),
            ("tilt_sensor", "T", 300),
            ("crack_meter", "C", 600),
        ),
        2,
    ),
    (
        "utility_tunnel",
        "UTL-TN",
        "SZC",
        ("01074", "01005"),
        (("methane_detector", "CH4", 60), ("level_gauge", "L", 300)),
        1,
    ),
    ("septic_tank", "SAN-ST", "DRAIN", ("03003", "01018"), (("methane_detector", "CH4", 300),), 1),
]
# Underpasses / waterlogging points and their ponding and rain gauges come with the flood
# command demo (cityops.flood.demo), which seeds them here under its point codes.
SCALE_FACTOR = {"small": 1, "city": 4, "large": 12}


def seed_demo(session: Session, scale: str, rng: np.random.Generator) -> dict[str, int]:
    """Seed this context's demo rows into the (committed) demo city; return row counts."""
    factor = SCALE_FACTOR.get(scale, 1)
    units = {
        u.code.rsplit("-", 1)[-1]: u.id
        for u in session.scalars(select(Unit).where(Unit.code.like("%-%")))
        if u.code.count("-") == 1
    }
    cats = {
        c.code: c.id
        for c in session.scalars(
            select(Category).where(Category.standard == "gbt47678", Category.kind == "component")
        )
    }
    fallback = list(
        session.execute(
            select(Component.id, Component.lon, Component.lat, Component.h3, Component.grid_code)
            .where(Component.grid_code.is_not(None))
            .order_by(Component.id)
            .limit(5000)
        )
    )
    if not fallback or not units:
        return {}
    used: set[int] = set()
    facilities: list[dict[str, Any]] = []
    device_plan: list[tuple[str, str, str, int]] = []
    for kind, prefix, owner_key, classes, devices, count in PLAN:
        owner = units.get(owner_key) or next(iter(units.values()))
        cat_ids = [cats[c] for c in classes if c in cats]
        pool = (
            list(
                session.execute(
                    select(
                        Component.id,
                        Component.lon,
                        Component.lat,
                        Component.h3,
                        Component.grid_code,
                    )
                    .where(Component.category_id.in_(cat_ids), Component.grid_code.is_not(None))
                    .order_by(Component.id)
                    .limit(2000)
                )
            )
            if cat_ids
            else []
        )
        pool = [p for p in pool if p.id not in used] or [p for p in fallback if p.id not in used]
        n = min(count * factor, len(pool))
        pick: list[int] = (
            sorted(int(x) for x in rng.choice(len(pool), size=n, replace=False)) if n else []
        )
        for k, i in enumerate(pick, start=1):
            comp = pool[i]
            used.add(comp.id)
            code = f"{prefix}-{k:03d}"
            facilities.append(
                {
                    "code": code,
                    "name": f"{FACILITY_KINDS[kind][0]}{k:03d}",
                    "kind": kind,
                    "owner_unit_id": owner,
                    "component_id": comp.id,
                    "lon": comp.lon,
                    "lat": comp.lat,
                    "h3": comp.h3,
                    "grid_code": comp.grid_code,
                    "address": None,
                    "active": True,
                    "version": 1,
                }
            )
            for dtype, suffix, interval in devices:
                device_plan.append((code, dtype, suffix, interval))
    if not facilities:
        return {}
    from cityops.core.db import utcnow

    now = utcnow()
    for f in facilities:
        f["created_at"] = now
    session.execute(insert(Facility), facilities)
    ids = {c: i for c, i in session.execute(select(Facility.code, Facility.id))}
    pos = {f["code"]: f for f in facilities}
    rows = []
    for fcode, dtype, suffix, interval in device_plan:
        f = pos[fcode]
        rows.append(
            {
                "code": f"{fcode}-{suffix}",
                "name": f"{f['name']} {DEVICE_TYPES[dtype][0]}",
                "device_type": dtype,
                "facility_id": ids[fcode],
                "measurands": list(DEVICE_TYPES[dtype][1]),
                "lon": f["lon"],
                "lat": f["lat"],
                "grid_code": f["grid_code"],
                "interval_s": interval,
                "status": "online",
                "last_seen_at": None,
                "accepted_count": 0,
                "rejected_count": 0,
                "created_at": now,
                "version": 1,
            }
        )
    session.execute(insert(Device), rows)
    audit.record(session, "demo", "monitoring_facilities", after={"count": len(facilities)})
    audit.record(session, "demo", "monitoring_devices", after={"count": len(rows)})
    return {"monitoring_facilities": len(facilities), "monitoring_devices": len(rows)}

"""Demo data of the flood context, seeded into the demo city by ``cityops demo``.

* Waterlogging points (易涝点): 12 (``small``) or 22 (like 亳州's 22 易涝点位) at the low
  spots of the demo city. The demo city has no terrain, so "low" is a synthetic elevation:
  the distance from a west–east river line through the city centre, plus noise; points are
  picked lowest first, kept apart from each other.
* Device codes (the monitoring context seeds the devices themselves):
  ponding-depth gauge ``WL-<point code>`` at the point (``WL-YLD-001`` …), and rain gauges
  ``RG-1`` … ``RG-<ceil(n/3)>``: points sorted west to east, three per gauge, the gauge at
  the mean position of its points.
* Two 包保责任人 per point: a 包保领导 of the district's 城市管理局 (no login) and a
  现场责任人 who is a handler (处置人员) login of one of the district's units, so that
  ``handler<k>`` can acknowledge their orders.
* Four 机动应急处置队伍 (leaders are handler logins of 排水公司, 市政设施管理处 and the
  districts' 市政养护 companies) and their equipment: pumps (m³/h), 排水抢险车, vehicles,
  generators, sandbags.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.access.models import User, UserRole
from cityops.core.security import Principal
from cityops.data import demo_names as names
from cityops.flood.models import Equipment, ResponsiblePerson, Team, WaterloggingPoint
from cityops.geo.models import Grid, Region, Unit

POINT_PREFIX = "YLD"
KIND_SUFFIX = {
    "underpass": "下穿通道",
    "bridge": "铁路桥下",
    "road": "低洼路段",
    "community": "老旧小区",
}


def depth_device_code(point_code: str) -> str:
    return f"WL-{point_code}"


def rain_device_code(n: int) -> str:
    return f"RG-{n}"


def _pick_low_spots(centres: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """Indices of ``n`` grid centres, lowest synthetic elevation first, spread apart."""
    lat_mid = float(np.median(centres[:, 1]))
    span = float(np.ptp(centres[:, 1])) or 1e-3
    elevation = np.abs(centres[:, 1] - lat_mid) / span + 0.35 * rng.random(len(centres))
    order = np.argsort(elevation, kind="stable")
    width = max(float(np.ptp(centres[:, 0])), span)
    min_gap = 0.5 * width / math.sqrt(n)
    chosen: list[int] = []
    for gap in (min_gap, min_gap / 2, 0.0):
        for i in order.tolist():
            if len(chosen) >= n:
                break
            if i in chosen:
                continue
            if all(np.hypot(*(centres[i] - centres[j])) >= gap for j in chosen):
                chosen.append(i)
        if len(chosen) >= n:
            break
    return chosen


def _handlers(session: Session) -> dict[int, list[User]]:
    """Handler logins by unit id."""
    out: dict[int, list[User]] = {}
    users = session.scalars(
        select(User)
        .join(UserRole, UserRole.user_id == User.id)
        .where(UserRole.role == "handler", User.unit_id.is_not(None))
        .order_by(User.id)
    )
    for u in users:
        assert u.unit_id is not None
        out.setdefault(u.unit_id, []).append(u)
    return out


def _plain_name(display_name: str) -> str:
    return display_name.split("（", 1)[0]


def _phone(rng: np.random.Generator) -> str:
    return f"1{int(rng.choice([38, 39, 58, 59, 86, 87]))}{int(rng.integers(10**8)):08d}"


def seed_demo(session: Session, scale: str, rng: np.random.Generator) -> dict[str, int]:
    """Seed this context's demo rows into the (committed) demo city; return row counts."""
    from cityops.geo.service import locate_many

    n = 12 if scale == "small" else 22
    grids = session.execute(
        select(Grid.code, Grid.min_lon, Grid.min_lat, Grid.max_lon, Grid.max_lat).order_by(
            Grid.code
        )
    ).all()
    if not grids:
        return {}
    bbox = np.array([g[1:] for g in grids], dtype=np.float64)  # min lon, min lat, max lon, max lat
    centres = (bbox[:, :2] + bbox[:, 2:]) / 2
    chosen = _pick_low_spots(centres, min(n, len(grids)), rng)
    lons, lats = centres[chosen, 0], centres[chosen, 1]
    grid_ids, grid_codes = locate_many(session, lons, lats)
    spots = [
        (float(lons[k]), float(lats[k]), int(grid_ids[k]), grid_codes[k])
        for k in range(len(chosen))
        if grid_codes[k] is not None
    ]
    spots.sort(key=lambda s: (s[0], s[1]))  # west to east: rain gauge groups

    units = {u.code: u for u in session.scalars(select(Unit))}
    handlers = _handlers(session)

    def unit(code: str) -> Unit | None:
        return units.get(f"{names.CITY_CODE}-{code}") or units.get(code)

    def handler_in(*unit_codes: str) -> User | None:
        for code in unit_codes:
            u = units.get(code)
            if u is not None and handlers.get(u.id):
                return handlers[u.id][0]
        return None

    kinds = list(KIND_SUFFIX)
    points: list[WaterloggingPoint] = []
    persons: list[ResponsiblePerson] = []
    used_handlers: dict[str, int] = {}
    for i, (lon, lat, gid, gcode) in enumerate(spots, 1):
        assert gcode is not None
        dcode = gcode[:6]
        kind = kinds[0] if i % 3 else kinds[1 + (i // 3) % 3]
        road = names.ROADS[int(rng.integers(len(names.ROADS)))]
        code = f"{POINT_PREFIX}-{i:03d}"
        point = WaterloggingPoint(
            code=code,
            name=f"{road}{KIND_SUFFIX[kind]}",
            kind=kind,
            address=f"{names.CITY_NAME}{road}",
            lon=round(lon, 7),
            lat=round(lat, 7),
            grid_id=gid,
            grid_code=gcode,
            depth_device_code=depth_device_code(code),
            rain_device_code=rain_device_code((i - 1) // 3 + 1),
            warn_depth_cm=15.0,
            close_depth_cm=30.0 if kind != "community" else 40.0,
        )
        district_unit = units.get(f"{dcode}-CGJ")
        lead = ResponsiblePerson(
            name=f"{names.SURNAMES[int(rng.integers(len(names.SURNAMES)))]}"
            f"{names.GIVEN_NAMES[int(rng.integers(len(names.GIVEN_NAMES)))]}",
            phone=_phone(rng),
            unit_id=district_unit.id if district_unit else None,
            role="包保领导",
        )
        # rotate through the district's handler logins
        pool = [
            u
            for c in (f"{dcode}-CGJ", f"{dcode}-HWS", f"{dcode}-ZFDD", f"{dcode}-SZYH")
            if (un := units.get(c)) is not None
            for u in handlers.get(un.id, [])
        ]
        field = pool[used_handlers.get(dcode, 0) % len(pool)] if pool else None
        used_handlers[dcode] = used_handlers.get(dcode, 0) + 1
        on_site = ResponsiblePerson(
            name=_plain_name(field.display_name) if field else f"现场责任人{i}",
            phone=(field.phone if field and field.phone else _phone(rng)),
            unit_id=field.unit_id if field else (district_unit.id if district_unit else None),
            role="现场责任人",
            user_id=field.id if field else None,
        )
        persons += [lead, on_site]
        point.persons = [lead, on_site]
        points.append(point)
    session.add_all(points)
    session.flush()
    n_gauges = _seed_gauges(session, points, unit("SZC") or next(iter(units.values())))

    # teams: the drainage company, the municipal facilities office, the districts' companies
    city_lon, city_lat = float(np.mean(centres[:, 0])), float(np.mean(centres[:, 1]))
    district_codes = sorted({p.grid_code[:6] for p in points})
    team_specs: list[tuple[str, Unit | None, User | None]] = [
        ("排水公司防汛抢险一队", unit("DRAIN"), handler_in(f"{names.CITY_CODE}-DRAIN")),
        ("市政设施防汛突击队", unit("SZC"), handler_in(f"{names.CITY_CODE}-SZC")),
    ]
    region_names = dict(
        session.execute(
            select(Region.code, Region.name).where(Region.code.in_(district_codes))
        ).all()
    )
    for dcode in district_codes[:2]:
        team_specs.append(
            (
                f"{region_names.get(dcode, dcode)}排涝应急队",
                units.get(f"{dcode}-SZYH"),
                handler_in(f"{dcode}-SZYH"),
            )
        )
    teams: list[Team] = []
    for k, (tname, tunit, leader) in enumerate(team_specs):
        angle = 2 * math.pi * k / len(team_specs)
        base_lon = city_lon + 0.004 * math.cos(angle)
        base_lat = city_lat + 0.003 * math.sin(angle)
        teams.append(
            Team(
                name=tname,
                unit_id=tunit.id if tunit else None,
                leader_name=(
                    _plain_name(leader.display_name)
                    if leader
                    else f"{names.SURNAMES[k]}{names.GIVEN_NAMES[k]}"
                ),
                leader_user_id=leader.id if leader else None,
                members=int(rng.integers(12, 26)),
                phone=(leader.phone if leader and leader.phone else _phone(rng)),
                base_lon=round(base_lon, 7),
                base_lat=round(base_lat, 7),
                lon=round(base_lon, 7),
                lat=round(base_lat, 7),
                status="standby",
            )
        )
    session.add_all(teams)
    session.flush()

    equipment: list[Equipment] = []
    capacities = (300.0, 500.0, 1000.0)
    for k, team in enumerate(teams, 1):
        cap = capacities[k % len(capacities)]
        items: list[dict[str, Any]] = [
            {"kind": "pump_vehicle", "name": f"{int(cap * 2)}m³/h排水抢险车", "cap": cap * 2},
            {"kind": "pump", "name": f"{int(cap)}m³/h移动泵", "cap": cap},
            {"kind": "vehicle", "name": "防汛巡查车", "cap": None},
            {"kind": "generator", "name": "50kW发电机", "cap": None},
            {"kind": "sandbag", "name": "防汛沙袋", "cap": None, "qty": 500},
        ]
        for j, it in enumerate(items, 1):
            equipment.append(
                Equipment(
                    code=f"FX-{k:02d}-{j:02d}",
                    name=it["name"],
                    kind=it["kind"],
                    capacity_m3h=it["cap"],
                    quantity=it.get("qty", 1),
                    team_id=team.id,
                    status="available",
                    lon=team.base_lon,
                    lat=team.base_lat,
                )
            )
    # a pre-positioned pump at every underpass (预置泵)
    for p in points:
        if p.kind == "underpass":
            equipment.append(
                Equipment(
                    code=f"FX-P-{p.code}",
                    name="200m³/h潜水泵(预置)",
                    kind="pump",
                    capacity_m3h=200.0,
                    quantity=1,
                    point_id=p.id,
                    status="available",
                    lon=p.lon,
                    lat=p.lat,
                )
            )
    session.add_all(equipment)
    session.flush()
    n_orders = _past_response(session, points, teams, rng)
    return {
        "flood_points": len(points),
        "flood_persons": len(persons),
        "flood_teams": len(teams),
        "flood_equipment": len(equipment),
        "flood_events": 1 if n_orders else 0,
        "flood_orders": n_orders,
        "flood_gauges": n_gauges,
    }


def _seed_gauges(session: Session, points: list[WaterloggingPoint], owner: Unit) -> int:
    """The points' gauges in the monitoring context: each point is a monitored facility
    (下穿通道/积水点, owned by ``owner``) with its ponding gauge ``WL-<code>``; each rain gauge
    ``RG-n`` sits at the mean position of its points, on the first point's facility."""
    import h3

    from cityops.monitoring.models import Device, Facility

    facilities: dict[str, Facility] = {}
    for p in points:
        f = Facility(
            code=p.code,
            name=p.name,
            kind="underpass",
            owner_unit_id=owner.id,
            lon=p.lon,
            lat=p.lat,
            h3=h3.str_to_int(h3.latlng_to_cell(p.lat, p.lon, 9)),
            grid_code=p.grid_code,
            address=p.address,
        )
        facilities[p.code] = f
    session.add_all(facilities.values())
    session.flush()
    devices: list[Device] = []
    groups: dict[str, list[WaterloggingPoint]] = {}
    for p in points:
        assert p.depth_device_code is not None
        devices.append(
            Device(
                code=p.depth_device_code,
                name=f"{p.name} 积水监测仪",
                device_type="ponding_gauge",
                facility_id=facilities[p.code].id,
                measurands=["ponding"],
                lon=p.lon,
                lat=p.lat,
                grid_code=p.grid_code,
                interval_s=60,
            )
        )
        if p.rain_device_code:
            groups.setdefault(p.rain_device_code, []).append(p)
    for code, group in groups.items():
        devices.append(
            Device(
                code=code,
                name=f"雨量计 {code}",
                device_type="rain_gauge",
                facility_id=facilities[group[0].code].id,
                measurands=["rainfall"],
                lon=round(sum(p.lon for p in group) / len(group), 7),
                lat=round(sum(p.lat for p in group) / len(group), 7),
                grid_code=group[0].grid_code,
                interval_s=300,
            )
        )
    session.add_all(devices)
    session.flush()
    return len(devices)


#: The past response of the demo (after 亳州's 7·5 rainstorm, 一级响应): local time (UTC+8).
PAST_EVENT_START = datetime(2026, 7, 5, 6, 0, tzinfo=timezone(timedelta(hours=8)))


def _principal(user: User) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=frozenset(user.roles),
        unit_id=user.unit_id,
        scope_region_code=user.scope_region_code,
        scope_unit_only=user.scope_unit_only,
    )


def _past_response(
    session: Session, points: list[WaterloggingPoint], teams: list[Team], rng: np.random.Generator
) -> int:
    """One finished response (Ⅳ → Ⅰ → Ⅲ → end) with orders to persons and teams, their
    acknowledgements (some late, some by the commander on the receiver's behalf) and
    arrivals, so that the after-event report has something to show. Returns the orders."""
    from cityops.flood import service

    commander = session.scalars(
        select(User).join(UserRole).where(UserRole.role == "commander").order_by(User.id)
    ).first()
    if commander is None or not points:
        return 0
    cmd = _principal(commander)
    t0 = PAST_EVENT_START.astimezone(UTC)

    def at(minutes: float) -> datetime:
        return t0 + timedelta(minutes=minutes)

    service.change_level(session, cmd, "start", 4, "暴雨蓝色预警信号, 启动Ⅳ级响应", at(0))
    service.change_level(
        session, cmd, "raise", 1, "3小时降雨量超100毫米, 多处积水超30厘米, 启动一级响应", at(120)
    )
    users = {u.id: u for u in session.scalars(select(User))}
    n = 0
    for k, p in enumerate(points[: min(6, len(points))]):
        issued = 125 + 3 * k
        receiver: dict[str, int] = {}
        if k % 3 == 2 and teams:
            team = teams[k % len(teams)]
            receiver = {"team_id": team.id}
            user_id = team.leader_user_id
        else:
            person = next((x for x in p.persons if x.user_id is not None), p.persons[0])
            receiver = {"person_id": person.id}
            user_id = person.user_id
        order = service.issue_order(
            session,
            cmd,
            {
                "point_id": p.id,
                "task": f"赶赴{p.name}: 封闭通道, 设置警戒, 开泵排水",
                "ack_minutes": 10,
                **receiver,
            },
            at(issued),
            notify=False,  # a past event: nothing in today's inboxes
        )
        ack_after = float(rng.integers(2, 16))  # some later than the 10-minute limit
        actor = _principal(users[user_id]) if user_id in users and k % 2 == 0 else cmd
        service.order_action(session, actor, order.id, "acknowledge", at(issued + ack_after))
        service.order_action(session, actor, order.id, "en_route", at(issued + ack_after + 1))
        arrive = issued + ack_after + float(rng.integers(8, 30))
        service.order_action(session, actor, order.id, "arrive", at(arrive), lon=p.lon, lat=p.lat)
        service.order_action(session, actor, order.id, "done", at(arrive + 180), note="积水已排除")
        n += 1
    service.change_level(session, cmd, "lower", 3, "雨势减弱, 积水逐步消退", at(480))
    service.change_level(session, cmd, "end", None, "降雨结束, 积水全部排除, 解除响应", at(840))
    return n

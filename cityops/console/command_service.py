"""Data of the command-centre map 一张图 (the page is :mod:`cityops.console.command`).

Layers, H3 case hexagons, click details and the KPI panel's figures, each scoped to the
user's data scope; see the page module's docstring for what they show.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import h3
import numpy as np
import shapely
from sqlalchemy import case as sql_case
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cityops.cases.models import OPEN_STAGES, SOURCES, STAGES, Case
from cityops.cases.service import visible_cases_filter
from cityops.core.db import utcnow
from cityops.core.security import Principal, prefix_filter
from cityops.evaluation.models import EvalDailyCount
from cityops.geo.crs import distance_m
from cityops.geo.index import GridIndex, indexes_for, read_geo_version
from cityops.geo.models import H3_RES, Category, Component, Region
from cityops.worktime.service import TZ

ROLES = ("leader", "shift_leader", "dispatcher", "commander", "admin")
GRID_MIN_ZOOM = 14
COMPONENT_MIN_ZOOM = 17
MAX_FEATURES = 3000
KPI_TTL = 30.0
DAYS = 14
VIEW_PX = (1400, 900)  # assumed viewport (px) when turning centre + zoom into a bounding box

STAGE_COLOURS = {"overdue": "#d32f2f", "near_due": "#f57c00", "normal": "#1976d2"}
REGION_STYLE = {
    "district": {"color": "#37474f", "weight": 3, "fill": False},
    "street": {"color": "#546e7a", "weight": 2, "fill": False, "dashArray": "6 4"},
    "community": {"color": "#90a4ae", "weight": 1, "fill": False},
}
GRID_STYLE = {"color": "#2e7d32", "weight": 1, "fillOpacity": 0.03}
COMPONENT_PALETTE = ("#6a1b9a", "#00838f", "#ef6c00", "#5d4037", "#283593", "#c2185b")


# --------------------------------------------------------------------------- view helpers


def view_bbox(
    lat: float, lon: float, zoom: float, px: tuple[int, int] = VIEW_PX
) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) seen at ``zoom`` around the centre (Web Mercator)."""
    deg_per_px = 360.0 / (256.0 * 2.0**zoom)
    half_w = deg_per_px * px[0] / 2
    half_h = deg_per_px * px[1] / 2 * math.cos(math.radians(lat))
    return lon - half_w, lat - half_h, lon + half_w, lat + half_h


def hex_resolution(zoom: float) -> int:
    """H3 resolution of the case hexagons at a map zoom (coarser when zoomed out)."""
    if zoom <= 11:
        return 7
    if zoom <= 14:
        return 8
    return H3_RES


def _in_scope(code: str, prefix: str | None) -> bool:
    return prefix is None or code.startswith(prefix)


def _feature(geom: Any, props: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON feature with coordinates rounded to 1e-5° (about 1 m): a third of the bytes."""
    rounded = shapely.transform(geom, lambda xy: np.round(xy, 5))
    return {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(rounded),
        "properties": props,
    }


# --------------------------------------------------------------------------- layers

_region_cache: dict[tuple[str | None, int], dict[str, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def region_layers(session: Session, prefix: str | None) -> dict[str, dict[str, Any]]:
    """GeoJSON of districts, streets and communities in scope (simplified; cached)."""
    ver = read_geo_version(session).get("grids", 0)
    key = (prefix, ver)
    with _cache_lock:
        hit = _region_cache.get(key)
    if hit is not None:
        return hit
    out: dict[str, dict[str, Any]] = {}
    tolerance = {"district": 0.0005, "street": 0.0003, "community": 0.0001}
    for level in ("district", "street", "community"):
        q = select(Region.code, Region.name, Region.geom).where(
            Region.level == level, Region.geom.is_not(None)
        )
        if prefix:
            q = q.where(prefix_filter(Region.code, prefix))
        feats = []
        for code, name, wkb in session.execute(q.order_by(Region.code)):
            g = shapely.simplify(shapely.from_wkb(wkb), tolerance[level], preserve_topology=True)
            feats.append(_feature(g, {"code": code, "name": name, "level": level}))
        out[level] = {"type": "FeatureCollection", "features": feats}
    with _cache_lock:
        if len(_region_cache) > 64:
            _region_cache.clear()
        _region_cache[key] = out
    return out


def grid_layer(
    session: Session, prefix: str | None, bbox: tuple[float, float, float, float], zoom: float
) -> dict[str, Any] | None:
    """Unit grids in view (None below :data:`GRID_MIN_ZOOM`), from the in-memory index."""
    if zoom < GRID_MIN_ZOOM:
        return None
    gi = indexes_for(session).grids(session)
    hits = np.sort(gi.tree.query(shapely.box(*bbox)))[:MAX_FEATURES]
    cache = _grid_features(gi)
    feats = []
    for i in map(int, hits):
        code = gi.codes[i]
        if not _in_scope(code, prefix):
            continue
        f = cache[i]
        if f is None:
            g = shapely.simplify(gi.geoms[i], 0.00002, preserve_topology=True)
            f = cache[i] = _feature(g, {"code": code})
        feats.append(f)
    return {"type": "FeatureCollection", "features": feats}


# simplified grid features of a grid index, filled as they are first shown (a district's view
# at zoom 14 holds over a thousand grids: simplifying them again on every page cost ~50 ms);
# the index is referenced weakly, so a replaced index (new geo version) is not kept alive
_grid_feature_cache: dict[int, tuple[weakref.ref[GridIndex], list[dict[str, Any] | None]]] = {}


def _grid_features(gi: GridIndex) -> list[dict[str, Any] | None]:
    with _cache_lock:
        hit = _grid_feature_cache.get(id(gi))
        if hit is not None and hit[0]() is gi:
            return hit[1]
        if len(_grid_feature_cache) >= 4:  # one index per database (tests use several)
            _grid_feature_cache.clear()
        feats: list[dict[str, Any] | None] = [None] * len(gi.codes)
        _grid_feature_cache[id(gi)] = (weakref.ref(gi), feats)
        return feats


def component_points(
    session: Session, prefix: str | None, bbox: tuple[float, float, float, float], zoom: float
) -> list[dict[str, Any]]:
    """Components in view (empty below :data:`COMPONENT_MIN_ZOOM`), from the spatial index."""
    if zoom < COMPONENT_MIN_ZOOM:
        return []
    ci = indexes_for(session).components(session)
    x0, y0, x1, y1 = bbox
    sel = np.flatnonzero((ci.lons >= x0) & (ci.lons <= x1) & (ci.lats >= y0) & (ci.lats <= y1))[
        :MAX_FEATURES
    ]
    if sel.size == 0:
        return []
    gi = indexes_for(session).grids(session)
    out = []
    for i in sel:
        lon, lat = float(ci.lons[i]), float(ci.lats[i])
        if prefix is not None:
            g = gi.locate_idx(lon, lat)
            if g < 0 or not gi.codes[g].startswith(prefix):
                continue
        out.append(
            {"id": int(ci.ids[i]), "category_id": int(ci.category_ids[i]), "lon": lon, "lat": lat}
        )
    return out


def component_layers(comps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Components as small squares (about 3 m), one collection per colour of the palette;
    the colour follows the category (GeoJSON points would need a JavaScript marker factory)."""
    groups: list[list[dict[str, Any]]] = [[] for _ in COMPONENT_PALETTE]
    d = 0.000015
    for c in comps:
        x, y = c["lon"], c["lat"]
        ring = [[x - d, y - d], [x + d, y - d], [x + d, y + d], [x - d, y + d], [x - d, y - d]]
        groups[c["category_id"] % len(COMPONENT_PALETTE)].append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"id": c["id"], "category_id": c["category_id"]},
            }
        )
    return [{"type": "FeatureCollection", "features": g} for g in groups]


def case_hexagons(session: Session, principal: Principal, res: int) -> list[dict[str, Any]]:
    """Open cases in scope per H3 cell at ``res``: count, overdue, near-due, colour."""
    rows = session.execute(
        select(
            Case.h3,
            func.count(),
            func.sum(sql_case((Case.overdue.is_(True), 1), else_=0)),
            func.sum(sql_case((Case.near_due.is_(True), 1), else_=0)),
        )
        .where(Case.stage.in_(OPEN_STAGES), visible_cases_filter(principal))
        .group_by(Case.h3)
    ).all()
    cells: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cell, n, over, near in rows:
        key = (
            int(cell)
            if res >= H3_RES
            else h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(cell)), res))
        )
        acc = cells[key]
        acc[0] += int(n)
        acc[1] += int(over or 0)
        acc[2] += int(near or 0)
    out = []
    for cell, (n, over, near) in cells.items():
        state = "overdue" if over else "near_due" if near else "normal"
        out.append(
            {
                "h3": h3.int_to_str(cell),
                "count": n,
                "overdue": over,
                "near_due": near,
                "state": state,
            }
        )
    out.sort(key=lambda c: (-c["count"], c["h3"]))
    return out


def hexagon_layers(cells: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One GeoJSON collection per colour (overdue / near due / normal); coordinates rounded
    to 1e-5° (about 1 m) as for the other layers: half the bytes of full-precision floats."""
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in STAGE_COLOURS}
    for c in cells[:MAX_FEATURES]:
        ring = [[round(lng, 5), round(lat, 5)] for lat, lng in h3.cell_to_boundary(c["h3"])]
        ring.append(ring[0])
        groups[c["state"]].append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"h3": c["h3"], "count": c["count"]},
            }
        )
    return {k: {"type": "FeatureCollection", "features": v} for k, v in groups.items()}


# --------------------------------------------------------------------------- lifelines

#: Colours of a waterlogging point by its state on the flood board.
PONDING_COLOURS = {
    "normal": "#2e7d32",
    "warning": "#f57c00",
    "closed": "#d32f2f",
    "unknown": "#757575",
}


def lifeline(session: Session, principal: Principal, now: datetime) -> dict[str, Any]:
    """The lifeline layers (城市生命线 and 防汛) of the user's scope: monitored facilities
    coloured by their worst open alarm (一级 red … 四级 blue) or else by their devices'
    status, the facilities with an open alarm, and the waterlogging points with their depth
    and state. A role that may not see one of them gets it empty."""
    from cityops.core.errors import DomainError
    from cityops.flood import service as flood
    from cityops.monitoring import service as monitoring
    from cityops.monitoring.ui import facility_colour

    out: dict[str, Any] = {"sensors": [], "alarms": [], "ponding": []}
    try:
        fc = monitoring.map_layer(session, principal)
    except DomainError:
        fc = {"features": []}
    for f in fc["features"]:
        props = f["properties"]
        lon, lat = f["geometry"]["coordinates"]
        item = {
            "kind": "facility",
            "code": props["code"],
            "name": props["name"],
            "lon": lon,
            "lat": lat,
            "colour": facility_colour(props),
            "alarm_level": props.get("alarm_level"),
            "devices": [
                {"code": d["code"], "type": d["device_type"], "status": d["status"]}
                for d in props.get("devices", [])
            ],
        }
        out["sensors"].append(item)
        if item["alarm_level"] is not None:
            out["alarms"].append(item)
    try:
        board = flood.board(session, principal, now)
    except DomainError:
        board = {"points": []}
    for pt in board["points"]:
        out["ponding"].append(
            {
                "kind": "ponding",
                "code": pt["code"],
                "name": pt["name"],
                "lon": pt["lon"],
                "lat": pt["lat"],
                "colour": PONDING_COLOURS.get(pt["status"], PONDING_COLOURS["unknown"]),
                "status": pt["status"],
                "depth_cm": pt["depth_cm"],
                "arrived": pt["arrived"],
            }
        )
    return out


def marker_layers(
    items: list[dict[str, Any]], size_m: float, diamond: bool = False
) -> dict[str, Any]:
    """Points as small squares (or diamonds) of about ``size_m`` metres, one GeoJSON
    collection per colour (GeoJSON points would need a JavaScript marker factory)."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for it in items:
        x, y = it["lon"], it["lat"]
        dy = size_m / 2 / 111_000
        dx = dy / math.cos(math.radians(y))
        ring = (
            [[x, y - dy], [x + dx, y], [x, y + dy], [x - dx, y], [x, y - dy]]
            if diamond
            else [
                [x - dx, y - dy],
                [x + dx, y - dy],
                [x + dx, y + dy],
                [x - dx, y + dy],
                [x - dx, y - dy],
            ]
        )
        groups[it["colour"]].append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"code": it["code"]},
            }
        )
    return {c: {"type": "FeatureCollection", "features": g} for c, g in sorted(groups.items())}


def lifeline_near(
    items: dict[str, Any], lon: float, lat: float, radius_m: float
) -> list[dict[str, Any]]:
    """The facilities and waterlogging points within ``radius_m`` of a click, nearest first."""
    found = []
    for it in [*items["sensors"], *items["ponding"]]:
        d = distance_m(lon, lat, it["lon"], it["lat"])
        if d <= radius_m:
            found.append({**it, "distance_m": round(d, 1)})
    return sorted(found, key=lambda x: x["distance_m"])


def details_at(
    session: Session, principal: Principal, lon: float, lat: float, zoom: float
) -> dict[str, Any]:
    """What is at a clicked point: grid and regions, the hexagon's open cases, a component."""
    out: dict[str, Any] = {"lon": lon, "lat": lat}
    gi = indexes_for(session).grids(session)
    idx = gi.locate_idx(lon, lat)
    prefix = principal.scope_region_code
    if idx >= 0 and _in_scope(gi.codes[idx], prefix):
        out["place"] = gi.describe(idx)
    res = hex_resolution(zoom)
    cell = h3.latlng_to_cell(lat, lon, res)
    children = (
        [h3.str_to_int(cell)]
        if res == H3_RES
        else [h3.str_to_int(c) for c in h3.cell_to_children(cell, H3_RES)]
    )
    q = (
        select(Case)
        .where(Case.h3.in_(children), Case.stage.in_(OPEN_STAGES), visible_cases_filter(principal))
        .order_by(Case.overdue.desc(), Case.stage_deadline.asc(), Case.id)
        .limit(20)
    )
    cats = dict(session.execute(select(Category.id, Category.name)).all())
    out["cases"] = [
        {
            "id": c.id,
            "number": c.number,
            "category": cats.get(c.category_id),
            "stage": STAGES.get(c.stage, c.stage),
            "overdue": c.overdue,
            "near_due": c.near_due,
        }
        for c in session.scalars(q)
    ]
    if zoom >= COMPONENT_MIN_ZOOM and "place" in out:
        hits = indexes_for(session).components(session).nearest(lon, lat, None, 30.0, 1)
        if hits:
            comp = session.get(Component, hits[0][0])
            if comp is not None:
                out["component"] = {
                    "code": comp.code,
                    "name": comp.name or cats.get(comp.category_id),
                    "category": cats.get(comp.category_id),
                    "status": comp.status,
                    "distance_m": round(distance_m(lon, lat, comp.lon, comp.lat), 1),
                }
    return out


# --------------------------------------------------------------------------- KPIs

_kpi_cache: dict[tuple[str | None, str], tuple[float, dict[str, Any]]] = {}


def local_midnight(now: datetime) -> datetime:
    d = now.astimezone(TZ).date()
    return datetime(d.year, d.month, d.day, tzinfo=TZ).astimezone(UTC)


def kpis(
    session: Session, principal: Principal, now: datetime | None = None, *, cached: bool = True
) -> dict[str, Any]:
    """The KPI panel's figures for the principal's data scope (see the module docstring)."""
    now = now or utcnow()
    prefix = principal.scope_region_code
    key = (prefix, now.astimezone(TZ).strftime("%Y-%m-%d"))
    if cached:
        with _cache_lock:
            hit = _kpi_cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < KPI_TTL:
            return hit[1]
    out = _kpis(session, principal, prefix, now)
    with _cache_lock:
        if len(_kpi_cache) > 256:
            _kpi_cache.clear()
        _kpi_cache[key] = (time.monotonic(), out)
    return out


def clear_kpi_cache() -> None:
    with _cache_lock:
        _kpi_cache.clear()
        _region_cache.clear()
        _grid_feature_cache.clear()


def _kpis(
    session: Session, principal: Principal, prefix: str | None, now: datetime
) -> dict[str, Any]:
    from cityops.evaluation.service import Period, ranking

    scope = [prefix_filter(Case.grid_code, prefix)] if prefix else []
    # with a time range, filter the scope on an expression so that the time index is used
    # (SQLite without statistics would otherwise walk the district's whole grid-code range)
    scope_in_range = [func.substr(Case.grid_code, 1, len(prefix)) == prefix] if prefix else []
    midnight = local_midnight(now)
    today_in = session.scalar(
        select(func.count()).select_from(Case).where(Case.reported_at >= midnight, *scope_in_range)
    )
    today_closed = session.scalar(
        select(func.count()).select_from(Case).where(Case.closed_at >= midnight, *scope_in_range)
    )
    overdue = session.scalar(
        select(func.count())
        .select_from(Case)
        .where(Case.stage.in_(OPEN_STAGES), Case.overdue.is_(True), *scope)
    )
    open_n = session.scalar(
        select(func.count()).select_from(Case).where(Case.stage.in_(OPEN_STAGES), *scope)
    )
    # 结案率 of the month: 结案数 / 应结案数 (立案 − 挂账 − 作废/合并) from the rollups
    today = now.astimezone(TZ).date()
    month_start = today.replace(day=1)
    e = EvalDailyCount
    rq = (
        select(e.metric, func.sum(e.count))
        .where(
            e.day >= month_start,
            e.day <= today,
            e.metric.in_(("r_filed", "r_parked", "r_dropped", "r_closed")),
        )
        .group_by(e.metric)
    )
    if prefix:
        rq = rq.where(prefix_filter(e.grid_code, prefix))
    m = {k: int(v or 0) for k, v in session.execute(rq).all()}
    due = m.get("r_filed", 0) - m.get("r_parked", 0) - m.get("r_dropped", 0)
    rate = round(100.0 * m.get("r_closed", 0) / due, 1) if due > 0 else None

    # intake per local day by source and by category (DAYS days, one indexed range each)
    days = [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    by_source: dict[str, list[int]] = {s: [0] * DAYS for s in SOURCES}
    by_cat: Counter[int] = Counter()
    per_day_cat: dict[int, list[int]] = defaultdict(lambda: [0] * DAYS)
    for i, d in enumerate(days):
        a = datetime(d.year, d.month, d.day, tzinfo=TZ).astimezone(UTC)
        b = a + timedelta(days=1)
        for src, cat, n in session.execute(
            select(Case.source, Case.category_id, func.count())
            .where(Case.reported_at >= a, Case.reported_at < b, *scope_in_range)
            .group_by(Case.source, Case.category_id)
        ):
            by_source.setdefault(src, [0] * DAYS)[i] += int(n)
            by_cat[int(cat)] += int(n)
            per_day_cat[int(cat)][i] += int(n)
    top_cats = [c for c, _ in by_cat.most_common(6)]
    names = dict(
        session.execute(select(Category.id, Category.name).where(Category.id.in_(top_cats))).all()
    )
    rank = ranking(
        session, "unit", Period(month_start, today + timedelta(days=1)), 5, scope_prefix=prefix
    )

    def brief(r: dict[str, Any]) -> dict[str, Any]:
        return {"name": r.get("name"), "composite": r.get("composite"), "rank": r.get("rank")}

    return {
        "today_intake": int(today_in or 0),
        "today_closed": int(today_closed or 0),
        "open": int(open_n or 0),
        "overdue": int(overdue or 0),
        "close_rate": rate,
        "month": {"closed": m.get("r_closed", 0), "due": due},
        "days": [d.isoformat() for d in days],
        "intake_by_source": {s: v for s, v in by_source.items() if any(v)},
        "intake_by_category": {names.get(c, str(c)): per_day_cat[c] for c in top_cats},
        "top_units": [brief(r) for r in rank["red"]],
        "bottom_units": [brief(r) for r in rank["black"]],
    }


# --------------------------------------------------------------------------- page


def scope_centre(session: Session, prefix: str | None) -> tuple[float, float, int]:
    q = select(
        func.min(Region.min_lon),
        func.min(Region.min_lat),
        func.max(Region.max_lon),
        func.max(Region.max_lat),
    ).where(Region.level == "district")
    if prefix:
        q = select(Region.min_lon, Region.min_lat, Region.max_lon, Region.max_lat).where(
            Region.code == prefix
        )
    row = session.execute(q).first()
    if row is None or row[0] is None:
        return 33.9, 116.8, 12
    x0, y0, x1, y1 = (float(v) for v in row)
    span = max(x1 - x0, (y1 - y0) / math.cos(math.radians((y0 + y1) / 2)), 1e-4)
    zoom = int(max(8, min(16, math.floor(math.log2(360.0 * 900 / 256 / span)))))
    return (y0 + y1) / 2, (x0 + x1) / 2, zoom

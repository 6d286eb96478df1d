"""City-model reads and edits behind the REST API, with data scope applied.

Every function takes the caller's :class:`~cityops.core.security.Principal`. Objects outside
the caller's region scope are "not found"; writes that would place something outside it
are "forbidden". Writes go through the ORM, so the audit hook records them; changes of
plain association tables (grid inspectors, unit regions) are recorded with
:func:`cityops.core.audit.record`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import h3
import shapely
from sqlalchemy import Select, event, func, or_, select
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.access.service import unit_by_code
from cityops.core.audit import record
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.core.security import (
    Principal,
    ensure_city_wide,
    ensure_region,
    prefix_filter,
    region_visible,
    scope_filter,
)
from cityops.geo import crs as crsmod
from cityops.geo.index import bump_geo_version, indexes_for
from cityops.geo.models import (
    CATEGORY_KINDS,
    COMPONENT_STATUSES,
    H3_RES,
    HANDLER_MODES,
    UNIT_TYPES,
    URGENCIES,
    Category,
    CategoryTimeLimit,
    Component,
    ComponentStatusHistory,
    Grid,
    Region,
    ResponsibilityGrid,
    Unit,
)
from cityops.geo.service import (
    CATEGORY_FILES,
    chosen_standard,
    load_categories,
    nearest_components,
)
from cityops.worktime.models import LIMIT_UNITS, STAGES

#: China Standard Time (no daylight saving): component change dates are local dates.
CST = timezone(timedelta(hours=8), "CST")
#: Category-code length of each national standard (2-digit big class + small class).
CATEGORY_CODE_LENGTH = {"gbt47678": 5, "gbt30428": 4}
#: Component-code length → standard of its category part.
COMPONENT_CODE_STANDARD = {17: "gbt47678", 16: "gbt30428"}
_DIGITS = re.compile(r"\A[0-9]+\Z")


def today_cst() -> date:
    return datetime.now(CST).date()


# --------------------------------------------------------------------------- helpers


def paginate(
    session: Session, stmt: Select[Any], page: int, page_size: int
) -> tuple[list[Any], int]:
    total = int(
        session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    )
    rows = session.scalars(stmt.offset((page - 1) * page_size).limit(page_size)).all()
    return list(rows), total


def geojson(wkb: bytes | None) -> dict[str, Any] | None:
    if wkb is None:
        return None
    out: dict[str, Any] = json.loads(shapely.to_geojson(shapely.from_wkb(wkb)))
    return out


def _bbox(obj: Any) -> dict[str, float] | None:
    if obj.min_lon is None:
        return None
    return {
        "min_lon": obj.min_lon,
        "min_lat": obj.min_lat,
        "max_lon": obj.max_lon,
        "max_lat": obj.max_lat,
    }


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    """``"min_lon,min_lat,max_lon,max_lat"`` (WGS84) → a tuple, or :class:`Invalid`."""
    if not text:
        return None
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 4:
        raise Invalid("bbox must be 'min_lon,min_lat,max_lon,max_lat'", field="bbox", value=text)
    a, b, c, d = parts
    if not (-180 <= a <= c <= 180 and -90 <= b <= d <= 90):
        raise Invalid(
            "bbox corners are out of range or in the wrong order", field="bbox", value=text
        )
    return a, b, c, d


def _check_prefix(code: str | None, field: str) -> str | None:
    if code is None or code == "":
        return None
    if not _DIGITS.match(code) or len(code) > 15:
        raise Invalid(f"{field} must be a region or grid code (digits)", field=field, value=code)
    return code


def _unit_ref(unit: Unit | None) -> dict[str, Any] | None:
    return {"id": unit.id, "code": unit.code, "name": unit.name} if unit else None


def _units(session: Session, ids: set[int | None]) -> dict[int, Unit]:
    real = {i for i in ids if i is not None}
    if not real:
        return {}
    return {u.id: u for u in session.scalars(select(Unit).where(Unit.id.in_(real)))}


def _region_names(session: Session, codes: set[str]) -> dict[str, str]:
    if not codes:
        return {}
    rows = session.execute(select(Region.code, Region.name).where(Region.code.in_(codes)))
    return {c: n for c, n in rows}


def _geo_changed(session: Session, *, grids: bool = False, components: bool = False) -> None:
    """Bump the geo version and make this process re-read it now and after the commit."""
    bump_geo_version(session, grids=grids, components=components)
    holder = indexes_for(session)
    holder.invalidate()
    event.listen(session, "after_commit", lambda _s: holder.invalidate(), once=True)


# --------------------------------------------------------------------------- locate


def nearest_visible(
    session: Session,
    p: Principal,
    lon: float,
    lat: float,
    crs: str = "wgs84",
    category: str | None = None,
    radius_m: float | None = 200.0,
    limit: int = 5,
) -> list[dict[str, Any]]:
    """:func:`nearest_components` limited to the caller's scope (fetches more when needed)."""
    if p.scope_region_code is None or limit < 1 or limit > 1000:
        return nearest_components(session, lon, lat, crs, category, radius_m, limit)
    fetch = min(1000, max(limit * 4, 20))
    while True:
        rows = nearest_components(session, lon, lat, crs, category, radius_m, fetch)
        seen = [r for r in rows if region_visible(p, r["grid_code"])]
        if len(seen) >= limit or len(rows) < fetch or fetch >= 1000:
            return seen[:limit]
        fetch = min(1000, fetch * 4)


# --------------------------------------------------------------------------- regions


def region_out(region: Region, parent_code: str | None) -> dict[str, Any]:
    return {
        "id": region.id,
        "code": region.code,
        "name": region.name,
        "level": region.level,
        "parent_code": parent_code,
        "area_m2": region.area_m2,
        "bbox": _bbox(region),
    }


def list_regions(
    session: Session,
    p: Principal,
    *,
    level: str | None = None,
    parent: str | None = None,
    q: str | None = None,
    page: int = 1,
    page_size: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    from sqlalchemy.orm import aliased

    par = aliased(Region)
    stmt = (
        select(Region, par.code)
        .outerjoin(par, par.id == Region.parent_id)
        .where(scope_filter(p, Region.code))
    )
    if level:
        stmt = stmt.where(Region.level == level)
    if parent:
        stmt = stmt.where(par.code == parent)
    if q:
        stmt = stmt.where(or_(Region.name.like(f"%{q}%"), Region.code.like(f"{q}%")))
    stmt = stmt.order_by(Region.code)
    total = int(
        session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    )
    rows = session.execute(stmt.offset((page - 1) * page_size).limit(page_size)).all()
    return [region_out(r, pc) for r, pc in rows], total


def get_region(session: Session, p: Principal, code: str) -> Region:
    region = session.scalars(select(Region).where(Region.code == code)).first()
    if region is None:
        raise NotFound(f"no region {code}")
    ensure_region(p, region.code)
    return region


def region_detail(session: Session, p: Principal, code: str) -> dict[str, Any]:
    region = get_region(session, p, code)
    parent_code = region.parent.code if region.parent else None
    children = int(session.scalar(select(func.count()).where(Region.parent_id == region.id)) or 0)
    below_region = (
        Region.id != region.id
        if region.level == "city"
        else (prefix_filter(Region.code, region.code) & (Region.id != region.id))
    )
    by_level: dict[str, int] = {
        lvl: int(n)
        for lvl, n in session.execute(
            select(Region.level, func.count()).where(below_region).group_by(Region.level)
        )
    }
    grid_q = select(func.count()).select_from(Grid)
    if region.level != "city":
        grid_q = grid_q.where(prefix_filter(Grid.code, region.code))
    by_level["grid"] = int(session.scalar(grid_q) or 0)
    return {
        **region_out(region, parent_code),
        "geometry": geojson(region.geom),
        "children": children,
        "descendants": by_level,
    }


def _region_must_exist(session: Session, code: str, field: str) -> Region:
    region = session.scalars(select(Region).where(Region.code == code)).first()
    if region is None:
        raise Invalid(f"unknown region code {code!r}", field=field, value=code)
    return region


# --------------------------------------------------------------------------- units


def unit_out(session: Session, unit: Unit) -> dict[str, Any]:
    parent = session.get(Unit, unit.parent_id) if unit.parent_id else None
    return {
        "id": unit.id,
        "code": unit.code,
        "name": unit.name,
        "unit_type": unit.unit_type,
        "parent_code": parent.code if parent else None,
        "credit_code": unit.credit_code,
        "phone": unit.phone,
        "active": unit.active,
        "region_codes": sorted(r.code for r in unit.regions),
    }


def list_units(
    session: Session,
    *,
    unit_type: str | None = None,
    q: str | None = None,
    active: bool | None = None,
    region: str | None = None,
    page: int = 1,
    page_size: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    stmt = select(Unit)
    if unit_type:
        stmt = stmt.where(Unit.unit_type == unit_type)
    if q:
        stmt = stmt.where(or_(Unit.name.like(f"%{q}%"), Unit.code.like(f"%{q}%")))
    if active is not None:
        stmt = stmt.where(Unit.active.is_(active))
    if region:
        stmt = stmt.where(Unit.regions.any(Region.code == region))
    rows, total = paginate(session, stmt.order_by(Unit.code), page, page_size)
    return [unit_out(session, u) for u in rows], total


def get_unit(session: Session, code: str) -> Unit:
    unit = session.scalars(select(Unit).where(Unit.code == code)).first()
    if unit is None:
        raise NotFound(f"no unit {code}")
    return unit


def _check_unit_fields(session: Session, unit: Unit, data: dict[str, Any]) -> None:
    if "unit_type" in data and data["unit_type"] is not None:
        if data["unit_type"] not in UNIT_TYPES:
            raise Invalid(
                f"unit_type must be one of {', '.join(UNIT_TYPES)}",
                field="unit_type",
                value=data["unit_type"],
            )
        unit.unit_type = data["unit_type"]
    if "name" in data and data["name"] is not None:
        unit.name = data["name"].strip()
    if "parent_code" in data:
        code = data["parent_code"]
        if code:
            parent = unit_by_code(session, code, "parent_code")
            # No cycles: walk up from the new parent.
            seen: set[int] = set()
            cur: Unit | None = parent
            while cur is not None and unit.id is not None:
                if cur.id == unit.id or cur.id in seen:
                    raise Invalid("a unit cannot be its own ancestor", field="parent_code")
                seen.add(cur.id)
                cur = session.get(Unit, cur.parent_id) if cur.parent_id else None
            unit.parent_id = parent.id
        else:
            unit.parent_id = None
    if "credit_code" in data:
        cc = (data["credit_code"] or "").strip().upper() or None
        if cc is not None:
            from cityops.geo.importer import check_credit_code

            problem = check_credit_code(cc)
            if problem:
                raise Invalid(problem, field="credit_code", value=cc)
        unit.credit_code = cc
    if "phone" in data:
        unit.phone = data["phone"]
    if "active" in data and data["active"] is not None:
        unit.active = bool(data["active"])
    if "region_codes" in data and data["region_codes"] is not None:
        before = sorted(r.code for r in unit.regions)
        regions = [
            _region_must_exist(session, c, "region_codes")
            for c in sorted(set(data["region_codes"]))
        ]
        unit.regions = regions
        after = sorted(r.code for r in regions)
        if unit.id is not None and before != after:
            record(
                session, "update", "units", str(unit.id), {"regions": before}, {"regions": after}
            )


def create_unit(session: Session, p: Principal, data: dict[str, Any]) -> Unit:
    ensure_city_wide(p, "units")
    code = data["code"].strip()
    if session.scalars(select(Unit.id).where(Unit.code == code)).first() is not None:
        raise Conflict(f"unit code {code!r} is taken", field="code")
    unit = Unit(code=code, name="", unit_type="", active=True)
    _check_unit_fields(session, unit, {k: v for k, v in data.items() if k != "code"})
    if not unit.name or not unit.unit_type:
        raise Invalid("name and unit_type are required", field="name")
    session.add(unit)
    session.flush()
    if unit.regions:
        record(
            session,
            "update",
            "units",
            str(unit.id),
            {"regions": []},
            {"regions": sorted(r.code for r in unit.regions)},
        )
    return unit


def update_unit(session: Session, p: Principal, code: str, changes: dict[str, Any]) -> Unit:
    ensure_city_wide(p, "units")
    unit = get_unit(session, code)
    _check_unit_fields(session, unit, changes)
    session.flush()
    return unit


# --------------------------------------------------------------------------- grids


def _grid_rows(session: Session, grids: list[Grid]) -> dict[str, Any]:
    """Lookups shared by the grid answers of one request."""
    rg_ids = {g.responsibility_grid_id for g in grids if g.responsibility_grid_id}
    rgs = (
        {
            r.id: r
            for r in session.scalars(
                select(ResponsibilityGrid).where(ResponsibilityGrid.id.in_(rg_ids))
            )
        }
        if rg_ids
        else {}
    )
    return {
        "units": _units(session, {g.owner_unit_id for g in grids}),
        "rgrids": rgs,
        "names": _region_names(session, {g.code[:n] for g in grids for n in (6, 9, 12)}),
    }


def grid_out(grid: Grid, look: dict[str, Any], with_geometry: bool = False) -> dict[str, Any]:
    rg = look["rgrids"].get(grid.responsibility_grid_id)
    return {
        "id": grid.id,
        "code": grid.code,
        "community": {"code": grid.code[:12], "name": look["names"].get(grid.code[:12])},
        "area_m2": grid.area_m2,
        "management_level": grid.management_level,
        "responsibility_grid": {"code": rg.code, "name": rg.name} if rg else None,
        "owner_unit": _unit_ref(look["units"].get(grid.owner_unit_id)),
        "bbox": _bbox(grid),
        "geometry": geojson(grid.geom) if with_geometry else None,
    }


def list_grids(
    session: Session,
    p: Principal,
    *,
    region: str | None = None,
    bbox: str | None = None,
    management_level: str | None = None,
    responsibility_grid: str | None = None,
    with_geometry: bool = False,
    page: int = 1,
    page_size: int = 100,
) -> tuple[list[dict[str, Any]], int]:
    stmt = select(Grid).where(scope_filter(p, Grid.code))
    prefix = _check_prefix(region, "community")
    if prefix:
        stmt = stmt.where(prefix_filter(Grid.code, prefix))
    box = parse_bbox(bbox)
    if box:
        a, b, c, d = box
        stmt = stmt.where(
            Grid.max_lon >= a, Grid.min_lon <= c, Grid.max_lat >= b, Grid.min_lat <= d
        )
    if management_level:
        stmt = stmt.where(Grid.management_level == management_level)
    if responsibility_grid:
        stmt = stmt.where(
            Grid.responsibility_grid_id.in_(
                select(ResponsibilityGrid.id).where(ResponsibilityGrid.code == responsibility_grid)
            )
        )
    rows, total = paginate(session, stmt.order_by(Grid.code), page, page_size)
    look = _grid_rows(session, rows)
    return [grid_out(g, look, with_geometry) for g in rows], total


def get_grid(session: Session, p: Principal, code: str) -> Grid:
    grid = session.scalars(select(Grid).where(Grid.code == code)).first()
    if grid is None or not region_visible(p, grid.code):
        raise NotFound(f"no unit grid {code}")
    return grid


def grid_detail(session: Session, p: Principal, code: str) -> dict[str, Any]:
    grid = get_grid(session, p, code)
    look = _grid_rows(session, [grid])
    n = session.scalar(
        select(func.count()).select_from(Component).where(Component.grid_id == grid.id)
    )
    return {
        **grid_out(grid, look, True),
        "street": {"code": grid.code[:9], "name": look["names"].get(grid.code[:9])},
        "district": {"code": grid.code[:6], "name": look["names"].get(grid.code[:6])},
        "inspectors": [
            {"id": u.id, "username": u.username, "display_name": u.display_name}
            for u in sorted(grid.inspectors, key=lambda u: u.username)
        ],
        "components": int(n or 0),
        "note": grid.note,
    }


def update_grid(session: Session, p: Principal, code: str, changes: dict[str, Any]) -> Grid:
    grid = get_grid(session, p, code)
    if "management_level" in changes:
        grid.management_level = changes["management_level"]
    if "note" in changes:
        grid.note = changes["note"]
    if "owner_unit_code" in changes:
        oc = changes["owner_unit_code"]
        grid.owner_unit_id = unit_by_code(session, oc, "owner_unit_code").id if oc else None
    if "responsibility_grid_code" in changes:
        rc = changes["responsibility_grid_code"]
        new_id: int | None = None
        if rc:
            rg = session.scalars(
                select(ResponsibilityGrid).where(ResponsibilityGrid.code == rc)
            ).first()
            if rg is None or not region_visible(p, rg.region_code):
                raise Invalid(
                    f"unknown responsibility grid {rc!r}", field="responsibility_grid_code"
                )
            if not grid.code.startswith(rg.region_code):
                raise Invalid(
                    f"responsibility grid {rc} lies in {rg.region_code}, not around grid {grid.code}",
                    field="responsibility_grid_code",
                )
            new_id = rg.id
        if new_id != grid.responsibility_grid_id:
            grid.responsibility_grid_id = new_id
            _geo_changed(session, grids=True)
    if "inspectors" in changes and changes["inspectors"] is not None:
        names = sorted(set(changes["inspectors"]))
        users = list(session.scalars(select(User).where(User.username.in_(names)))) if names else []
        found = {u.username: u for u in users}
        missing = [n for n in names if n not in found]
        if missing:
            raise Invalid(
                f"unknown user(s) {', '.join(missing)}", field="inspectors", value=missing
            )
        for u in users:
            if "inspector" not in u.roles:
                raise Invalid(
                    f"{u.username} is not an inspector", field="inspectors", value=u.username
                )
            if not u.active:
                raise Invalid(f"{u.username} is disabled", field="inspectors", value=u.username)
            if u.scope_region_code is not None and not grid.code.startswith(u.scope_region_code):
                raise Invalid(
                    f"{u.username}'s scope {u.scope_region_code} does not cover grid {grid.code}",
                    field="inspectors",
                    value=u.username,
                )
        before = sorted(u.username for u in grid.inspectors)
        if before != names:
            grid.inspectors = [found[n] for n in names]
            record(
                session,
                "update",
                "grids",
                str(grid.id),
                {"inspectors": before},
                {"inspectors": names},
            )
    session.flush()
    return grid


# --------------------------------------------------------------------------- components


def _component_rows(session: Session, comps: list[Component]) -> dict[str, Any]:
    cat_ids = {c.category_id for c in comps}
    cats = (
        {c.id: c for c in session.scalars(select(Category).where(Category.id.in_(cat_ids)))}
        if cat_ids
        else {}
    )
    units = _units(
        session,
        {u for c in comps for u in (c.competent_unit_id, c.owner_unit_id, c.maintainer_unit_id)},
    )
    return {"cats": cats, "units": units}


def component_out(comp: Component, look: dict[str, Any]) -> dict[str, Any]:
    cat: Category = look["cats"][comp.category_id]
    units = look["units"]
    return {
        "id": comp.id,
        "code": comp.code,
        "name": comp.name,
        "category": {
            "id": cat.id,
            "code": cat.code,
            "name": cat.name,
            "standard": cat.standard,
            "big_class_name": cat.big_class_name,
        },
        "status": comp.status,
        "lon": comp.lon,
        "lat": comp.lat,
        "grid_code": comp.grid_code,
        "competent_unit": _unit_ref(units.get(comp.competent_unit_id)),
        "owner_unit": _unit_ref(units.get(comp.owner_unit_id)),
        "maintainer_unit": _unit_ref(units.get(comp.maintainer_unit_id)),
        "initial_date": comp.initial_date,
        "change_date": comp.change_date,
        "data_source": comp.data_source,
        "note": comp.note,
    }


def list_components(
    session: Session,
    p: Principal,
    *,
    grid: str | None = None,
    category: str | None = None,
    status: str | None = None,
    bbox: str | None = None,
    cursor: int | None = None,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """Components by id, ``limit`` at a time; the second value is the next cursor."""
    stmt = select(Component)
    if p.scope_region_code is not None:
        stmt = stmt.where(scope_filter(p, Component.grid_code))
    prefix = _check_prefix(grid, "grid")
    if prefix:
        stmt = stmt.where(prefix_filter(Component.grid_code, prefix))
    if category:
        from cityops.geo.service import category_by_code

        try:
            cat = category_by_code(session, category, "component")
        except NotFound as exc:
            raise Invalid(exc.message, field="category", value=category) from None
        stmt = stmt.where(Component.category_id == cat.id)
    if status:
        if status not in COMPONENT_STATUSES:
            raise Invalid(f"status must be one of {', '.join(COMPONENT_STATUSES)}", field="status")
        stmt = stmt.where(Component.status == status)
    box = parse_bbox(bbox)
    if box:
        a, b, c, d = box
        stmt = stmt.where(Component.lon.between(a, c), Component.lat.between(b, d))
    if cursor is not None:
        stmt = stmt.where(Component.id > cursor)
    rows = list(session.scalars(stmt.order_by(Component.id).limit(limit)))
    look = _component_rows(session, rows)
    nxt = rows[-1].id if len(rows) == limit else None
    return [component_out(c, look) for c in rows], nxt


def get_component(session: Session, p: Principal, code: str) -> Component:
    comp = session.scalars(select(Component).where(Component.code == code)).first()
    if comp is None or (p.scope_region_code is not None and not region_visible(p, comp.grid_code)):
        raise NotFound(f"no component {code}")
    return comp


def component_detail(session: Session, p: Principal, code: str) -> dict[str, Any]:
    comp = get_component(session, p, code)
    hist = session.scalars(
        select(ComponentStatusHistory)
        .where(ComponentStatusHistory.component_id == comp.id)
        .order_by(ComponentStatusHistory.changed_at, ComponentStatusHistory.id)
    ).all()
    return {
        **component_out(comp, _component_rows(session, [comp])),
        "history": [
            {
                "old_status": h.old_status,
                "new_status": h.new_status,
                "changed_at": h.changed_at,
                "changed_by": h.changed_by,
                "note": h.note,
            }
            for h in hist
        ],
    }


def check_component_code(session: Session, code: str) -> Category:
    """Validate a 16-digit legacy or 17-digit GB/T 47678.5 component code.

    The first 6 digits must be a region (district) code of the city; the category part
    must be a component class of the matching standard (or a local class of that length),
    and enabled. Returns the category."""
    if not _DIGITS.match(code) or len(code) not in COMPONENT_CODE_STANDARD:
        raise Invalid(
            "a component code has 16 digits (legacy: 6 region + 2 + 2 class + 6 serial) or "
            "17 digits (GB/T 47678.5: 6 region + 2 + 3 class + 6 serial)",
            field="code",
            value=code,
        )
    region = session.scalars(select(Region).where(Region.code == code[:6])).first()
    if region is None or region.level not in ("district", "city"):
        raise Invalid(
            f"code {code}: {code[:6]} is not a district of this city", field="code", value=code
        )
    std = COMPONENT_CODE_STANDARD[len(code)]
    cat_code = code[6 : 6 + CATEGORY_CODE_LENGTH[std]]
    cat = session.scalars(
        select(Category)
        .where(
            Category.kind == "component",
            Category.code == cat_code,
            Category.standard.in_([std, "local"]),
        )
        .order_by(Category.is_local)
    ).first()
    if cat is None:
        raise Invalid(
            f"code {code}: {cat_code} is not a component class of {std} (or a local class)",
            field="code",
            value=code,
        )
    if not cat.enabled:
        raise Invalid(
            f"code {code}: component class {cat_code} {cat.name} is disabled", field="code"
        )
    return cat


def _locate_grid(
    session: Session, lon: float, lat: float, crs: str
) -> tuple[float, float, int, str]:
    if crs.lower() not in crsmod.CRS_NAMES:
        raise Invalid(f"unknown crs {crs!r}", field="crs", value=crs)
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Invalid("lon/lat out of range", field="lon", value=[lon, lat])
    wlon, wlat = crsmod.to_wgs84(lon, lat, crs.lower())
    grids = indexes_for(session).grids(session)
    idx = grids.locate_idx(wlon, wlat)
    if idx < 0:
        raise Invalid(f"point ({lon}, {lat}) [{crs}] is outside every unit grid", field="lon")
    return float(wlon), float(wlat), int(grids.ids[idx]), grids.codes[idx]


def _set_units(session: Session, comp: Component, data: dict[str, Any]) -> None:
    for key, attr in (
        ("competent_unit_code", "competent_unit_id"),
        ("owner_unit_code", "owner_unit_id"),
        ("maintainer_unit_code", "maintainer_unit_id"),
    ):
        if key in data:
            code = data[key]
            setattr(comp, attr, unit_by_code(session, code, key).id if code else None)


def create_component(session: Session, p: Principal, data: dict[str, Any]) -> Component:
    code = data["code"]
    cat = check_component_code(session, code)
    if session.scalars(select(Component.id).where(Component.code == code)).first() is not None:
        raise Conflict(f"component {code} exists", field="code")
    wlon, wlat, grid_id, grid_code = _locate_grid(
        session, data["lon"], data["lat"], data.get("crs") or "wgs84"
    )
    ensure_region(p, grid_code, write=True, what="the location's grid")
    if grid_code[:6] != code[:6]:
        raise Invalid(
            f"code {code} is for region {code[:6]} but the location is in {grid_code[:6]}",
            field="code",
        )
    status = data.get("status") or "完好"
    if status not in COMPONENT_STATUSES:
        raise Invalid(f"status must be one of {', '.join(COMPONENT_STATUSES)}", field="status")
    comp = Component(
        code=code,
        category_id=cat.id,
        name=data.get("name"),
        lon=wlon,
        lat=wlat,
        h3=h3.str_to_int(h3.latlng_to_cell(wlat, wlon, H3_RES)),
        grid_id=grid_id,
        grid_code=grid_code,
        status=status,
        initial_date=data.get("initial_date") or today_cst(),
        change_date=None,
        data_source=data.get("data_source"),
        note=data.get("note"),
    )
    _set_units(session, comp, data)
    session.add(comp)
    session.flush()
    session.add(
        ComponentStatusHistory(
            component_id=comp.id,
            old_status=None,
            new_status=status,
            changed_at=datetime.now(UTC),
            changed_by=p.username,
            note="created",
        )
    )
    _geo_changed(session, components=True)
    return comp


HANDLER_FIELDS = {"status", "status_note"}


def update_component(
    session: Session, p: Principal, code: str, changes: dict[str, Any]
) -> Component:
    comp = get_component(session, p, code)
    is_admin = p.is_admin
    is_unit_handler = (
        p.has_role("handler")
        and p.unit_id is not None
        and p.unit_id
        in (
            comp.owner_unit_id,
            comp.maintainer_unit_id,
        )
    )
    if not (is_admin or is_unit_handler):
        raise Forbidden(
            "only an admin, or a handler of the unit that owns or maintains the component, "
            "can change it"
        )
    sent = set(changes) - {"crs"}
    if not is_admin and sent - HANDLER_FIELDS:
        raise Forbidden(
            f"handlers can only change the status (not {', '.join(sorted(sent - HANDLER_FIELDS))})"
        )
    status = changes.get("status")
    if status is not None and status != comp.status:
        if status not in COMPONENT_STATUSES:
            raise Invalid(f"status must be one of {', '.join(COMPONENT_STATUSES)}", field="status")
        session.add(
            ComponentStatusHistory(
                component_id=comp.id,
                old_status=comp.status,
                new_status=status,
                changed_at=datetime.now(UTC),
                changed_by=p.username,
                note=changes.get("status_note"),
            )
        )
        comp.status = status
        comp.change_date = today_cst()
    if is_admin:
        if "name" in changes:
            comp.name = changes["name"]
        if "note" in changes:
            comp.note = changes["note"]
        if changes.get("data_source") is not None:
            comp.data_source = changes["data_source"]
        _set_units(session, comp, {k: v for k, v in changes.items() if k.endswith("_unit_code")})
        lon, lat = changes.get("lon"), changes.get("lat")
        if (lon is None) != (lat is None):
            raise Invalid("send both lon and lat to move a component", field="lon")
        if lon is not None and lat is not None:
            wlon, wlat, grid_id, grid_code = _locate_grid(
                session, lon, lat, changes.get("crs") or "wgs84"
            )
            ensure_region(p, grid_code, write=True, what="the new location's grid")
            if grid_code[:6] != comp.code[:6]:
                raise Invalid(
                    f"component {comp.code} belongs to region {comp.code[:6]}; "
                    f"the new location is in {grid_code[:6]}",
                    field="lon",
                )
            comp.lon, comp.lat = wlon, wlat
            comp.h3 = h3.str_to_int(h3.latlng_to_cell(wlat, wlon, H3_RES))
            comp.grid_id, comp.grid_code = grid_id, grid_code
            comp.change_date = today_cst()
            _geo_changed(session, components=True)
    session.flush()
    return comp


# --------------------------------------------------------------------------- categories


def _limits_of(session: Session, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    for t in session.scalars(
        select(CategoryTimeLimit)
        .where(CategoryTimeLimit.category_id.in_(ids))
        .order_by(CategoryTimeLimit.category_id, CategoryTimeLimit.stage, CategoryTimeLimit.urgency)
    ):
        out[t.category_id].append(
            {"stage": t.stage, "urgency": t.urgency, "amount": t.amount, "unit": t.unit}
        )
    return out


def category_out(
    cat: Category, units: dict[int, Unit], limits: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": cat.id,
        "standard": cat.standard,
        "kind": cat.kind,
        "code": cat.code,
        "big_class_code": cat.big_class_code,
        "big_class_name": cat.big_class_name,
        "name": cat.name,
        "is_local": cat.is_local,
        "enabled": cat.enabled,
        "handler_mode": cat.handler_mode,
        "handler_unit_type": cat.handler_unit_type,
        "handler_unit": _unit_ref(units.get(cat.handler_unit_id) if cat.handler_unit_id else None),
        "default_urgency": cat.default_urgency,
        "filing_standard": cat.filing_standard,
        "closing_standard": cat.closing_standard,
        "time_limits": limits,
    }


def categories_out(session: Session, cats: list[Category]) -> list[dict[str, Any]]:
    units = _units(session, {c.handler_unit_id for c in cats})
    limits = _limits_of(session, [c.id for c in cats])
    return [category_out(c, units, limits[c.id]) for c in cats]


def list_categories(
    session: Session,
    *,
    kind: str | None = None,
    q: str | None = None,
    big_class: str | None = None,
    enabled: bool | None = None,
) -> list[dict[str, Any]]:
    """Categories of the city's chosen standard plus its local classes."""
    std = chosen_standard(session)
    stmt = select(Category).where(Category.standard.in_([std, "local"]))
    if kind:
        if kind not in CATEGORY_KINDS:
            raise Invalid(f"kind must be one of {', '.join(CATEGORY_KINDS)}", field="kind")
        stmt = stmt.where(Category.kind == kind)
    if q:
        stmt = stmt.where(or_(Category.name.like(f"%{q}%"), Category.code.like(f"{q}%")))
    if big_class:
        stmt = stmt.where(Category.big_class_code == big_class)
    if enabled is not None:
        stmt = stmt.where(Category.enabled.is_(enabled))
    cats = list(session.scalars(stmt.order_by(Category.kind, Category.code, Category.is_local)))
    return categories_out(session, cats)


def get_category(session: Session, cat_id: int) -> Category:
    cat = session.get(Category, cat_id)
    if cat is None:
        raise NotFound(f"no category {cat_id}")
    return cat


def update_category(
    session: Session, p: Principal, cat_id: int, changes: dict[str, Any]
) -> Category:
    ensure_city_wide(p, "category settings")
    cat = get_category(session, cat_id)
    if changes.get("name") is not None:
        if not cat.is_local:
            raise Invalid("only local classes can be renamed", field="name")
        cat.name = changes["name"].strip()
    if "handler_mode" in changes:
        mode = changes["handler_mode"]
        if mode is not None and mode not in HANDLER_MODES:
            raise Invalid(
                f"handler_mode must be one of {', '.join(HANDLER_MODES)}", field="handler_mode"
            )
        cat.handler_mode = mode
    if "handler_unit_type" in changes:
        ut = changes["handler_unit_type"]
        if ut is not None and ut not in UNIT_TYPES:
            raise Invalid(
                f"handler_unit_type must be one of {', '.join(UNIT_TYPES)}",
                field="handler_unit_type",
            )
        cat.handler_unit_type = ut
    if "handler_unit_code" in changes:
        uc = changes["handler_unit_code"]
        cat.handler_unit_id = unit_by_code(session, uc, "handler_unit_code").id if uc else None
    if changes.get("default_urgency") is not None:
        if changes["default_urgency"] not in URGENCIES:
            raise Invalid(
                f"default_urgency must be one of {', '.join(URGENCIES)}", field="default_urgency"
            )
        cat.default_urgency = changes["default_urgency"]
    for key in ("filing_standard", "closing_standard"):
        if key in changes:
            setattr(cat, key, changes[key])
    if changes.get("enabled") is not None:
        cat.enabled = bool(changes["enabled"])
    if cat.handler_mode == "fixed_unit" and cat.handler_unit_id is None:
        raise Invalid("handler_mode fixed_unit needs handler_unit_code", field="handler_unit_code")
    if cat.handler_mode == "unit_type" and cat.handler_unit_type is None:
        raise Invalid("handler_mode unit_type needs handler_unit_type", field="handler_unit_type")
    session.flush()
    return cat


def set_time_limits(
    session: Session, p: Principal, cat_id: int, limits: list[dict[str, Any]]
) -> Category:
    """Replace the category's time limits by ``limits`` (rows are updated in place)."""
    ensure_city_wide(p, "category settings")
    cat = get_category(session, cat_id)
    wanted: dict[tuple[str, str | None], dict[str, Any]] = {}
    for lim in limits:
        if lim.get("urgency") is not None and lim["urgency"] not in URGENCIES:
            raise Invalid(f"urgency must be one of {', '.join(URGENCIES)} or null", field="urgency")
        if lim["stage"] not in STAGES:
            raise Invalid(f"stage must be one of {', '.join(STAGES)}", field="stage")
        if lim["unit"] not in LIMIT_UNITS:
            raise Invalid(f"unit must be one of {', '.join(LIMIT_UNITS)}", field="unit")
        key = (lim["stage"], lim.get("urgency"))
        if key in wanted:
            raise Invalid(f"stage {key[0]} / urgency {key[1]} is given twice", field="stage")
        wanted[key] = lim
    existing = {
        (t.stage, t.urgency): t
        for t in session.scalars(
            select(CategoryTimeLimit).where(CategoryTimeLimit.category_id == cat.id)
        )
    }
    for key, old in existing.items():
        if key not in wanted:
            session.delete(old)
    session.flush()
    for key, lim in wanted.items():
        row = existing.get(key)
        if row is None:
            session.add(
                CategoryTimeLimit(
                    category_id=cat.id,
                    stage=key[0],
                    urgency=key[1],
                    amount=float(lim["amount"]),
                    unit=lim["unit"],
                )
            )
        else:
            row.amount = float(lim["amount"])
            row.unit = lim["unit"]
    session.flush()
    # the working-time clock caches category limits: give it a new version
    from cityops.worktime.service import bump_version

    bump_version(session)
    return cat


def create_local_category(session: Session, p: Principal, data: dict[str, Any]) -> Category:
    """Add a local class (地方扩展) in the code form of the city's chosen standard."""
    ensure_city_wide(p, "category settings")
    std = chosen_standard(session)
    n = CATEGORY_CODE_LENGTH.get(std, 5)
    code, kind = data["code"], data["kind"]
    if kind not in CATEGORY_KINDS:
        raise Invalid(f"kind must be one of {', '.join(CATEGORY_KINDS)}", field="kind")
    if not _DIGITS.match(code) or len(code) != n:
        raise Invalid(f"a {std} category code has {n} digits", field="code", value=code)
    big = data.get("big_class_code") or code[:2]
    if big != code[:2]:
        raise Invalid("the code must start with its big class code", field="big_class_code")
    clash = session.scalars(
        select(Category).where(
            Category.kind == kind, Category.code == code, Category.standard.in_([std, "local"])
        )
    ).first()
    if clash is not None:
        raise Conflict(f"{kind} class {code} exists ({clash.standard}: {clash.name})", field="code")
    big_name = data.get("big_class_name")
    if not big_name:
        big_name = session.scalar(
            select(Category.big_class_name).where(
                Category.kind == kind,
                Category.big_class_code == big,
                Category.standard.in_([std, "local"]),
            )
        )
        if not big_name:
            raise Invalid(f"big class {big} is new: give big_class_name", field="big_class_name")
    cat = Category(
        standard="local",
        kind=kind,
        code=code,
        big_class_code=big,
        big_class_name=big_name,
        name=data["name"].strip(),
        is_local=True,
        enabled=True,
        default_urgency="一般",
    )
    session.add(cat)
    session.flush()
    return cat


def set_category_standard(session: Session, p: Principal, standard: str) -> dict[str, Any]:
    """Choose the city's category standard, loading its classes the first time."""
    ensure_city_wide(p, "the category standard")
    if standard not in CATEGORY_FILES:
        raise Invalid(f"standard must be one of {', '.join(CATEGORY_FILES)}", field="standard")
    added = load_categories(session, standard, choose=True)
    session.flush()
    return {"standard": chosen_standard(session), "added": added}

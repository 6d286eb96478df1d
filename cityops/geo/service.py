"""City-model services: locate points, find nearby components, manage categories."""

from __future__ import annotations

import csv
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core.errors import Invalid, NotFound
from cityops.geo import crs as crsmod
from cityops.geo.index import indexes_for
from cityops.geo.models import Category, CitySetting, Component, Unit

CATEGORY_FILES = {"gbt47678": "gbt47678_5_2026.csv", "gbt30428": "gbt30428_2_legacy.csv"}
CATEGORY_STANDARD_KEY = "category_standard"


def _check_crs(crs: str) -> str:
    c = crs.lower()
    if c not in crsmod.CRS_NAMES:
        raise Invalid(
            f"unknown crs {crs!r}: expected one of {', '.join(crsmod.CRS_NAMES)}",
            field="crs",
            value=crs,
        )
    return c


def _check_lonlat(lon: float, lat: float) -> None:
    if not (-180.0 <= lon <= 180.0) or not np.isfinite(lon):
        raise Invalid(f"longitude {lon} is out of range [-180, 180]", field="lon", value=lon)
    if not (-90.0 <= lat <= 90.0) or not np.isfinite(lat):
        raise Invalid(f"latitude {lat} is out of range [-90, 90]", field="lat", value=lat)


def locate(session: Session, lon: float, lat: float, crs: str = "wgs84") -> dict[str, Any]:
    """Unit grid, responsibility grid, community, street and district of a point.

    Raises :class:`NotFound` when the point lies outside every unit grid.
    """
    c = _check_crs(crs)
    _check_lonlat(lon, lat)
    wlon, wlat = crsmod.to_wgs84(lon, lat, c)
    grids = indexes_for(session).grids(session)
    idx = grids.locate_idx(wlon, wlat)
    if idx < 0:
        raise NotFound(
            f"point ({lon}, {lat}) [{c}] is outside every unit grid of the city",
            lon=lon,
            lat=lat,
            crs=c,
        )
    return {
        "input": {"lon": lon, "lat": lat, "crs": c},
        "wgs84": {"lon": round(wlon, 8), "lat": round(wlat, 8)},
        **grids.describe(idx),
    }


def locate_many(
    session: Session, lons: NDArray[np.float64], lats: NDArray[np.float64], crs: str = "wgs84"
) -> tuple[NDArray[np.int64], list[str | None]]:
    """Bulk locate: grid ids (-1 outside) and grid codes (None outside) per point."""
    c = _check_crs(crs)
    wl, wa = crsmod.to_wgs84(
        np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64), c
    )
    g = indexes_for(session).grids(session)
    idx = g.locate_many(wl, wa)
    ids = np.where(idx >= 0, g.ids[np.maximum(idx, 0)] if len(g) else -1, -1)
    codes = [g.codes[i] if i >= 0 else None for i in idx.tolist()]
    return ids, codes


def category_by_code(session: Session, code: str, kind: str | None = None) -> Category:
    """A category of the city's chosen standard (or a local one) by its code."""
    std = chosen_standard(session)
    q = select(Category).where(Category.code == code, Category.standard.in_([std, "local"]))
    if kind:
        q = q.where(Category.kind == kind)
    cat = session.scalars(q).first()
    if cat is None:
        raise NotFound(
            f"unknown category code {code!r} in standard {std}", field="category", value=code
        )
    return cat


def nearest_components(
    session: Session,
    lon: float,
    lat: float,
    crs: str = "wgs84",
    category: str | None = None,
    radius_m: float | None = 200.0,
    limit: int = 5,
) -> list[dict[str, Any]]:
    """Components nearest to a point (optionally of one category, within a radius)."""
    c = _check_crs(crs)
    _check_lonlat(lon, lat)
    if limit < 1 or limit > 1000:
        raise Invalid("limit must be between 1 and 1000", field="limit", value=limit)
    if radius_m is not None and radius_m <= 0:
        raise Invalid("radius_m must be positive", field="radius_m", value=radius_m)
    wlon, wlat = crsmod.to_wgs84(lon, lat, c)
    cat_id = category_by_code(session, category, "component").id if category else None
    hits = indexes_for(session).components(session).nearest(wlon, wlat, cat_id, radius_m, limit)
    if not hits:
        return []
    ids = [h[0] for h in hits]
    rows = {
        comp.id: (comp, cat)
        for comp, cat in session.execute(
            select(Component, Category)
            .join(Category, Component.category_id == Category.id)
            .where(Component.id.in_(ids))
        )
    }
    unit_ids = {
        u
        for comp, _ in rows.values()
        for u in (comp.owner_unit_id, comp.maintainer_unit_id, comp.competent_unit_id)
        if u
    }
    units = (
        dict(session.execute(select(Unit.id, Unit.name).where(Unit.id.in_(unit_ids))).all())
        if unit_ids
        else {}
    )
    out = []
    for cid, dist in hits:
        comp, cat = rows[cid]
        out.append(
            {
                "id": comp.id,
                "code": comp.code,
                "category": {"code": cat.code, "name": cat.name},
                "status": comp.status,
                "lon": comp.lon,
                "lat": comp.lat,
                "distance_m": round(dist, 2),
                "grid_code": comp.grid_code,
                "competent_unit": units.get(comp.competent_unit_id)
                if comp.competent_unit_id
                else None,
                "owner_unit": units.get(comp.owner_unit_id) if comp.owner_unit_id else None,
                "maintainer_unit": units.get(comp.maintainer_unit_id)
                if comp.maintainer_unit_id
                else None,
            }
        )
    return out


def chosen_standard(session: Session) -> str:
    row = session.get(CitySetting, CATEGORY_STANDARD_KEY)
    return str(row.value) if row is not None else "gbt47678"


def load_categories(session: Session, standard: str, choose: bool = True) -> int:
    """Load a national category list shipped with the package (idempotent).

    Returns the number of categories added. With ``choose`` the city switches to it.
    """
    if standard not in CATEGORY_FILES:
        raise Invalid(
            f"unknown category standard {standard!r}: expected one of {', '.join(CATEGORY_FILES)}",
            field="standard",
            value=standard,
        )
    existing = {
        (kind, code)
        for kind, code in session.execute(
            select(Category.kind, Category.code).where(Category.standard == standard)
        )
    }
    added = 0
    text = resources.files("cityops.data").joinpath(CATEGORY_FILES[standard]).read_text("utf-8")
    for row in csv.DictReader(text.splitlines()):
        kind = "matter" if row["kind"] in ("matter", "event") else "component"
        if (kind, row["code"]) in existing:
            continue
        session.add(
            Category(
                standard=standard,
                kind=kind,
                code=row["code"],
                big_class_code=row["big_class_code"],
                big_class_name=row["big_class_name"],
                name=row["name"],
            )
        )
        added += 1
    if choose:
        set_standard(session, standard)
    session.flush()
    return added


def set_standard(session: Session, standard: str) -> None:
    row = session.get(CitySetting, CATEGORY_STANDARD_KEY)
    if row is None:
        session.add(CitySetting(key=CATEGORY_STANDARD_KEY, value=standard))
    elif row.value != standard:
        row.value = standard

"""Export city data as GeoJSON or CSV, in exactly the format :mod:`cityops.geo.importer` reads.

* **GeoJSON**: a ``FeatureCollection`` in WGS84 lon/lat (RFC 7946, full float precision);
  ``properties`` are the importer's fields. Units and categories have ``"geometry": null``;
  components are Points.
* **CSV** (UTF-8 with a BOM so that Excel shows Chinese text): a header of the importer's
  fields. Regions and grids carry a WKT ``geometry`` column (full precision); components
  carry ``lon``/``lat`` columns (WGS84).

Informational columns (``area_m2``, ``community_code`` and a component's ``grid_code``) are
recomputed or checked on import. Exporting a city and importing the files into an empty
database, in the order regions → units → categories → grids → components, reproduces it.
Rows are written in code order and streamed, so millions of components are fine.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import shapely
from shapely.geometry import mapping
from sqlalchemy import case, select
from sqlalchemy.orm import Session

from cityops.core.errors import Invalid
from cityops.geo.importer import FIELDS, KINDS, detect_format
from cityops.geo.models import (
    Category,
    Component,
    Grid,
    Region,
    ResponsibilityGrid,
    Unit,
    unit_regions,
)

_STREAM = 20_000


def export_file(session: Session, kind: str, path: Path, fmt: str | None = None) -> int:
    """Write all rows of ``kind`` to ``path`` (GeoJSON or CSV); returns how many."""
    if kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}", field="kind")
    path = Path(path)
    f = detect_format(path, fmt)
    rows = _ROWS[kind](session)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        if f == "geojson":
            with tmp.open("w", encoding="utf-8", newline="\n") as out:
                n = _write_geojson(out, kind, rows)
        else:
            with tmp.open("w", encoding="utf-8-sig", newline="") as out:
                n = _write_csv(out, kind, rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


#: Columns per kind in the CSV (GeoJSON properties are the same minus geometry/lon/lat).
def _csv_columns(kind: str) -> list[str]:
    cols = [c for c in FIELDS[kind] if c != "crs"]
    if kind in ("regions", "grids"):
        cols = [c for c in cols if c != "geometry"] + ["geometry"]
    return cols


def _write_csv(out: IO[str], kind: str, rows: Iterator[tuple[dict[str, Any], Any]]) -> int:
    cols = _csv_columns(kind)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(cols)
    n = 0
    for props, geom in rows:
        rec = dict(props)
        if kind in ("regions", "grids"):
            rec["geometry"] = (
                shapely.to_wkt(geom, rounding_precision=-1) if geom is not None else None
            )
        elif kind == "components":
            rec["lon"], rec["lat"] = geom
        w.writerow([_cell(rec.get(c)) for c in cols])
        n += 1
    return n


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return ";".join(v)
    return str(v)


def _write_geojson(out: IO[str], kind: str, rows: Iterator[tuple[dict[str, Any], Any]]) -> int:
    out.write('{"type": "FeatureCollection", "name": ' + json.dumps(kind) + ', "features": [\n')
    n = 0
    for props, geom in rows:
        if geom is None:
            g = None
        elif kind == "components":
            g = {"type": "Point", "coordinates": [geom[0], geom[1]]}
        else:
            g = mapping(geom)
        feat = {"type": "Feature", "properties": props, "geometry": g}
        if n:
            out.write(",\n")
        out.write(json.dumps(feat, ensure_ascii=False, default=str))
        n += 1
    out.write("\n]}\n")
    return n


def _unit_codes(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Unit.id, Unit.code)).all())


def _regions(session: Session) -> Iterator[tuple[dict[str, Any], Any]]:
    codes = dict(session.execute(select(Region.id, Region.code)).all())
    order = case(
        {"city": 0, "district": 1, "street": 2, "community": 3}, value=Region.level, else_=4
    )
    for r in session.execute(
        select(
            Region.code, Region.name, Region.level, Region.parent_id, Region.geom, Region.area_m2
        ).order_by(order, Region.code)
    ):
        yield (
            {
                "code": r.code,
                "name": r.name,
                "level": r.level,
                "parent_code": codes.get(r.parent_id) if r.parent_id else None,
                "area_m2": round(r.area_m2, 2) if r.area_m2 is not None else None,
            },
            shapely.from_wkb(r.geom) if r.geom is not None else None,
        )


def _units(session: Session) -> Iterator[tuple[dict[str, Any], Any]]:
    codes = _unit_codes(session)
    regions = dict(session.execute(select(Region.id, Region.code)).all())
    links: dict[int, list[str]] = {}
    for uid, rid in session.execute(select(unit_regions.c.unit_id, unit_regions.c.region_id)):
        links.setdefault(uid, []).append(regions[rid])
    for u in session.execute(
        select(
            Unit.id,
            Unit.code,
            Unit.name,
            Unit.unit_type,
            Unit.parent_id,
            Unit.credit_code,
            Unit.phone,
            Unit.active,
        ).order_by(Unit.code)
    ):
        yield (
            {
                "code": u.code,
                "name": u.name,
                "unit_type": u.unit_type,
                "parent_code": codes.get(u.parent_id) if u.parent_id else None,
                "credit_code": u.credit_code,
                "phone": u.phone,
                "region_codes": sorted(links.get(u.id, [])),
                "active": bool(u.active),
            },
            None,
        )


def _categories(session: Session) -> Iterator[tuple[dict[str, Any], Any]]:
    units = _unit_codes(session)
    for c in session.scalars(
        select(Category).order_by(Category.standard, Category.kind, Category.code)
    ):
        yield (
            {
                "standard": c.standard,
                "kind": c.kind,
                "code": c.code,
                "big_class_code": c.big_class_code,
                "big_class_name": c.big_class_name,
                "name": c.name,
                "enabled": bool(c.enabled),
                "handler_mode": c.handler_mode,
                "handler_unit_type": c.handler_unit_type,
                "handler_unit_code": units.get(c.handler_unit_id) if c.handler_unit_id else None,
                "default_urgency": c.default_urgency,
                "filing_standard": c.filing_standard,
                "closing_standard": c.closing_standard,
            },
            None,
        )


def _grids(session: Session) -> Iterator[tuple[dict[str, Any], Any]]:
    units = _unit_codes(session)
    rgrids = {
        i: (c, n)
        for i, c, n in session.execute(
            select(ResponsibilityGrid.id, ResponsibilityGrid.code, ResponsibilityGrid.name)
        )
    }
    q = select(
        Grid.code,
        Grid.management_level,
        Grid.responsibility_grid_id,
        Grid.owner_unit_id,
        Grid.note,
        Grid.area_m2,
        Grid.geom,
    ).order_by(Grid.code)
    for g in session.execute(q.execution_options(yield_per=_STREAM)):
        rg = rgrids.get(g.responsibility_grid_id) if g.responsibility_grid_id else None
        yield (
            {
                "code": g.code,
                "community_code": g.code[:12],
                "management_level": g.management_level,
                "responsibility_grid_code": rg[0] if rg else None,
                "responsibility_grid_name": rg[1] if rg else None,
                "owner_unit_code": units.get(g.owner_unit_id) if g.owner_unit_id else None,
                "note": g.note,
                "area_m2": round(g.area_m2, 2),
            },
            shapely.from_wkb(g.geom),
        )


def _components(session: Session) -> Iterator[tuple[dict[str, Any], Any]]:
    units = _unit_codes(session)
    cats = dict(session.execute(select(Category.id, Category.code)).all())
    q = select(
        Component.code,
        Component.category_id,
        Component.name,
        Component.status,
        Component.lon,
        Component.lat,
        Component.grid_code,
        Component.competent_unit_id,
        Component.owner_unit_id,
        Component.maintainer_unit_id,
        Component.initial_date,
        Component.change_date,
        Component.data_source,
        Component.note,
    ).order_by(Component.code)
    for c in session.execute(q.execution_options(yield_per=_STREAM)):
        yield (
            {
                "code": c.code,
                "category_code": cats.get(c.category_id),
                "name": c.name,
                "status": c.status,
                "grid_code": c.grid_code,
                "competent_unit_code": units.get(c.competent_unit_id)
                if c.competent_unit_id
                else None,
                "owner_unit_code": units.get(c.owner_unit_id) if c.owner_unit_id else None,
                "maintainer_unit_code": (
                    units.get(c.maintainer_unit_id) if c.maintainer_unit_id else None
                ),
                "initial_date": c.initial_date.isoformat() if c.initial_date else None,
                "change_date": c.change_date.isoformat() if c.change_date else None,
                "data_source": c.data_source,
                "note": c.note,
            },
            (c.lon, c.lat),
        )


_ROWS = {
    "regions": _regions,
    "units": _units,
    "categories": _categories,
    "grids": _grids,
    "components": _components,
}

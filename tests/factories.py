"""Helpers shared by the case tests: principals of demo users, photos, places."""

from __future__ import annotations

import io
from typing import Any

import shapely
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.core.security import Principal
from cityops.geo.models import Category, Grid, grid_inspectors


def principal(session: Session, username: str) -> Principal:
    u = session.scalars(select(User).where(User.username == username)).one()
    return Principal(
        user_id=u.id,
        username=u.username,
        display_name=u.display_name,
        roles=frozenset(u.roles),
        unit_id=u.unit_id,
        scope_region_code=u.scope_region_code,
        scope_unit_only=u.scope_unit_only,
    )


def handler_of(session: Session, unit_id: int) -> Principal:
    from cityops.access.models import UserRole

    u = session.scalars(
        select(User).join(UserRole).where(User.unit_id == unit_id, UserRole.role == "handler")
    ).first()
    assert u is not None, f"no handler in unit {unit_id}"
    return principal(session, u.username)


def photo(lon: float | None = None, lat: float | None = None, color: str = "red") -> bytes:
    """A small JPEG, with an EXIF GPS position when lon/lat are given."""
    img = Image.new("RGB", (32, 24), color)
    exif = Image.Exif()
    if lon is not None and lat is not None:
        from PIL.ExifTags import GPS, IFD

        def dms(v: float) -> tuple[float, float, float]:
            d = int(v)
            m = int((v - d) * 60)
            s = (v - d - m / 60) * 3600
            return (float(d), float(m), round(s, 4))

        exif[IFD.GPSInfo] = {
            GPS.GPSLatitudeRef: "N",
            GPS.GPSLatitude: dms(lat),
            GPS.GPSLongitudeRef: "E",
            GPS.GPSLongitude: dms(lon),
        }
    exif[0x010F] = "TestCam"  # Make
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def grid_of_inspector(session: Session, username: str) -> Grid:
    u = session.scalars(select(User).where(User.username == username)).one()
    gid = session.scalars(
        select(grid_inspectors.c.grid_id)
        .where(grid_inspectors.c.user_id == u.id)
        .order_by(grid_inspectors.c.grid_id)
    ).first()
    grid = session.get(Grid, gid)
    assert grid is not None
    return grid


def point_in(grid: Grid) -> tuple[float, float]:
    p = shapely.point_on_surface(shapely.from_wkb(grid.geom))
    return p.x, p.y


def matter_category(session: Session, name_part: str = "暴露垃圾") -> Category:
    cat = session.scalars(
        select(Category).where(
            Category.kind == "matter",
            Category.standard == "gbt47678",
            Category.name.like(f"%{name_part}%"),
        )
    ).first()
    assert cat is not None
    return cat


def report_data(cat: Category, lon: float, lat: float, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "category_id": cat.id,
        "description": "路边暴露垃圾一堆",
        "lon": lon,
        "lat": lat,
    }
    d.update(kw)
    return d

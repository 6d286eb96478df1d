"""City-model endpoints: locate, nearest components, regions, units, grids, components,
categories. Thin: the work is in :mod:`cityops.geo.service` and :mod:`cityops.geo.admin`.

Every endpoint needs a logged-in user; reads are limited to the user's region scope
(objects outside it answer 404), writes need the admin role (component status: also a
handler of the owning or maintaining unit).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cityops.access.schemas import Page
from cityops.core.security import AdminDep, PrincipalDep, SessionDep
from cityops.geo import admin
from cityops.geo import service as geo_service
from cityops.geo.schemas import (
    CategoryCreate,
    CategoryOut,
    CategoryPatch,
    CategoryStandardIn,
    CategoryStandardOut,
    ComponentCreate,
    ComponentDetail,
    ComponentPage,
    ComponentPatch,
    GridDetail,
    GridOut,
    GridPatch,
    LocateOut,
    NearestComponentOut,
    RegionDetail,
    RegionOut,
    TimeLimit,
    UnitCreate,
    UnitOut,
    UnitPatch,
)

router = APIRouter(prefix="/api/v1")

Lon = Annotated[float, Query(description="Longitude in `crs`")]
Lat = Annotated[float, Query(description="Latitude in `crs`")]
# A plain string (not an enum) so that a bad value answers the service's clear message.
Crs = Annotated[str, Query(description="wgs84 | cgcs2000 | gcj02 (高德/腾讯) | bd09 (百度)")]
PageNo = Annotated[int, Query(ge=1, description="Page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=1000, description="Rows per page")]
BboxQ = Annotated[str | None, Query(description="WGS84 box 'min_lon,min_lat,max_lon,max_lat'")]


# --------------------------------------------------------------------------- locate


@router.get("/geo/locate", response_model=LocateOut, tags=["geo"])
def locate(
    lon: Lon, lat: Lat, _p: PrincipalDep, session: SessionDep, crs: Crs = "wgs84"
) -> dict[str, Any]:
    """Unit grid, responsibility grid, community, street and district of a point.

    The same JSON as ``cityops locate``. 404 when the point is outside every unit grid,
    422 for an unknown crs or a longitude/latitude out of range."""
    return geo_service.locate(session, lon, lat, crs)


@router.get("/geo/nearest-components", response_model=list[NearestComponentOut], tags=["geo"])
def nearest(
    lon: Lon,
    lat: Lat,
    p: PrincipalDep,
    session: SessionDep,
    crs: Crs = "wgs84",
    category: Annotated[str | None, Query(description="Component class code")] = None,
    radius_m: Annotated[float | None, Query(gt=0, description="Search radius, metres")] = 200.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 5,
) -> list[dict[str, Any]]:
    """Components nearest to a point, nearest first (within your data scope)."""
    return admin.nearest_visible(session, p, lon, lat, crs, category, radius_m, limit)


# --------------------------------------------------------------------------- regions


@router.get("/regions", response_model=Page[RegionOut], tags=["regions"])
def list_regions(
    p: PrincipalDep,
    session: SessionDep,
    level: Annotated[str | None, Query(description="city | district | street | community")] = None,
    parent: Annotated[str | None, Query(description="Code of the parent region")] = None,
    q: Annotated[str | None, Query(description="Part of the name, or a code prefix")] = None,
    page: PageNo = 1,
    page_size: PageSize = 100,
) -> Page[RegionOut]:
    """Administrative regions within your data scope."""
    items, total = admin.list_regions(
        session, p, level=level, parent=parent, q=q, page=page, page_size=page_size
    )
    return Page[RegionOut](
        items=[RegionOut.model_validate(i) for i in items],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/regions/{code}", response_model=RegionDetail, tags=["regions"])
def get_region(code: str, p: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """A region with its GeoJSON boundary and how many regions and grids lie below it."""
    return admin.region_detail(session, p, code)


# --------------------------------------------------------------------------- units


@router.get("/units", response_model=Page[UnitOut], tags=["units"])
def list_units(
    _p: PrincipalDep,
    session: SessionDep,
    unit_type: Annotated[str | None, Query(description="主管部门, 权属单位, 养护单位, …")] = None,
    q: Annotated[str | None, Query(description="Part of the name or code")] = None,
    active: bool | None = None,
    region: Annotated[str | None, Query(description="Units serving this region code")] = None,
    page: PageNo = 1,
    page_size: PageSize = 100,
) -> Page[UnitOut]:
    """Departments and companies (部门/单位)."""
    items, total = admin.list_units(
        session,
        unit_type=unit_type,
        q=q,
        active=active,
        region=region,
        page=page,
        page_size=page_size,
    )
    return Page[UnitOut](
        items=[UnitOut.model_validate(i) for i in items],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/units/{code}", response_model=UnitOut, tags=["units"])
def get_unit(code: str, _p: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """One unit."""
    return admin.unit_out(session, admin.get_unit(session, code))


@router.post("/units", response_model=UnitOut, status_code=201, tags=["units"])
def create_unit(body: UnitCreate, p: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Create a unit (admin without a region scope)."""
    return admin.unit_out(session, admin.create_unit(session, p, body.model_dump()))


@router.patch("/units/{code}", response_model=UnitOut, tags=["units"])
def update_unit(code: str, body: UnitPatch, p: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Change a unit (admin without a region scope). Only the fields sent change."""
    unit = admin.update_unit(session, p, code, body.model_dump(exclude_unset=True))
    return admin.unit_out(session, unit)


# --------------------------------------------------------------------------- grids


@router.get("/grids", response_model=Page[GridOut], tags=["grids"])
def list_grids(
    p: PrincipalDep,
    session: SessionDep,
    community: Annotated[
        str | None, Query(description="A community (or street, district) code: its grids")
    ] = None,
    bbox: BboxQ = None,
    management_level: str | None = None,
    responsibility_grid: Annotated[str | None, Query(description="责任网格 code")] = None,
    geometry: Annotated[bool, Query(description="Include GeoJSON geometry")] = False,
    page: PageNo = 1,
    page_size: PageSize = 100,
) -> Page[GridOut]:
    """Unit grids within your data scope, by code."""
    items, total = admin.list_grids(
        session,
        p,
        region=community,
        bbox=bbox,
        management_level=management_level,
        responsibility_grid=responsibility_grid,
        with_geometry=geometry,
        page=page,
        page_size=page_size,
    )
    return Page[GridOut](
        items=[GridOut.model_validate(i) for i in items],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.get("/grids/{code}", response_model=GridDetail, tags=["grids"])
def get_grid(code: str, p: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """A unit grid with its GeoJSON geometry, inspectors and responsibility grid."""
    return admin.grid_detail(session, p, code)


@router.patch("/grids/{code}", response_model=GridDetail, tags=["grids"])
def update_grid(code: str, body: GridPatch, p: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Set management level, responsibility grid, owner unit, inspectors (admin)."""
    grid = admin.update_grid(session, p, code, body.model_dump(exclude_unset=True))
    return admin.grid_detail(session, p, grid.code)


# --------------------------------------------------------------------------- components


@router.get("/components", response_model=ComponentPage, tags=["components"])
def list_components(
    p: PrincipalDep,
    session: SessionDep,
    grid: Annotated[
        str | None, Query(description="A grid code, or a region code prefix of grid codes")
    ] = None,
    category: Annotated[str | None, Query(description="Component class code")] = None,
    status: Annotated[str | None, Query(description="完好, 破损, 丢失, 废弃, 移除")] = None,
    bbox: BboxQ = None,
    cursor: Annotated[int | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ComponentPage:
    """Components within your data scope, by id, a page at a time (cursor pagination)."""
    items, nxt = admin.list_components(
        session,
        p,
        grid=grid,
        category=category,
        status=status,
        bbox=bbox,
        cursor=cursor,
        limit=limit,
    )
    return ComponentPage.model_validate({"items": items, "next_cursor": nxt})


@router.get("/components/{code}", response_model=ComponentDetail, tags=["components"])
def get_component(code: str, p: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """A component with its status history."""
    return admin.component_detail(session, p, code)


@router.post("/components", response_model=ComponentDetail, status_code=201, tags=["components"])
def create_component(body: ComponentCreate, p: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Add a component (admin). The code is checked against the region and the class; the
    location is placed in its unit grid."""
    comp = admin.create_component(session, p, body.model_dump())
    return admin.component_detail(session, p, comp.code)


@router.patch("/components/{code}", response_model=ComponentDetail, tags=["components"])
def update_component(
    code: str, body: ComponentPatch, p: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """Change a component. A status change is kept in its history.

    Admins may change everything; handlers only the status of components their unit owns
    or maintains."""
    admin.update_component(session, p, code, body.model_dump(exclude_unset=True))
    return admin.component_detail(session, p, code)


# --------------------------------------------------------------------------- categories


@router.get("/categories", response_model=list[CategoryOut], tags=["categories"])
def list_categories(
    _p: PrincipalDep,
    session: SessionDep,
    kind: Annotated[str | None, Query(description="component | matter")] = None,
    q: Annotated[str | None, Query(description="Part of the name, or a code prefix")] = None,
    big_class: Annotated[str | None, Query(description="2-digit big class code")] = None,
    enabled: bool | None = None,
) -> list[dict[str, Any]]:
    """Classes of the city's chosen standard and its local classes, with their settings."""
    return admin.list_categories(session, kind=kind, q=q, big_class=big_class, enabled=enabled)


@router.get("/categories/{cat_id}", response_model=CategoryOut, tags=["categories"])
def get_category(
    cat_id: Annotated[int, Path()], _p: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """One class with its settings and time limits."""
    return admin.categories_out(session, [admin.get_category(session, cat_id)])[0]


@router.post("/categories", response_model=CategoryOut, status_code=201, tags=["categories"])
def create_category(body: CategoryCreate, p: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Add a local class (地方扩展) in the chosen standard's code form (admin)."""
    cat = admin.create_local_category(session, p, body.model_dump())
    return admin.categories_out(session, [cat])[0]


@router.patch("/categories/{cat_id}", response_model=CategoryOut, tags=["categories"])
def update_category(
    cat_id: int, body: CategoryPatch, p: AdminDep, session: SessionDep
) -> dict[str, Any]:
    """Handling mode and unit, default urgency, filing/closing standard, enabled (admin)."""
    cat = admin.update_category(session, p, cat_id, body.model_dump(exclude_unset=True))
    return admin.categories_out(session, [cat])[0]


@router.put("/categories/{cat_id}/time-limits", response_model=CategoryOut, tags=["categories"])
def set_time_limits(
    cat_id: int, body: list[TimeLimit], p: AdminDep, session: SessionDep
) -> dict[str, Any]:
    """Replace the class's time limits: one per stage and urgency (null urgency = all)."""
    cat = admin.set_time_limits(session, p, cat_id, [t.model_dump() for t in body])
    return admin.categories_out(session, [cat])[0]


@router.get("/settings/category-standard", response_model=CategoryStandardOut, tags=["settings"])
def get_category_standard(_p: PrincipalDep, session: SessionDep) -> CategoryStandardOut:
    """The city's category standard."""
    return CategoryStandardOut(standard=geo_service.chosen_standard(session))


@router.put("/settings/category-standard", response_model=CategoryStandardOut, tags=["settings"])
def put_category_standard(
    body: CategoryStandardIn, p: AdminDep, session: SessionDep
) -> CategoryStandardOut:
    """Choose gbt47678 or gbt30428 (admin without a region scope); loads it the first time."""
    return CategoryStandardOut.model_validate(
        admin.set_category_standard(session, p, body.standard)
    )

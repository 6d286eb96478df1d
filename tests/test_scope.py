"""Data scope over the API: a district user sees and changes only their district.

This module also holds the small test city used by the access and city-model API tests
(``mini`` / ``mini_client``): two districts side by side, each with one street, one
community and two unit grids (simple squares), units, a few components and users. It is
built once per test session into a template database and cloned for each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import h3
import pytest
import shapely
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from cityops.access import passwords
from cityops.access.service import create_user
from cityops.core import db as dbmod
from cityops.geo.crs import GEOD
from cityops.geo.index import bump_geo_version
from cityops.geo.models import (
    H3_RES,
    Category,
    Component,
    Grid,
    Region,
    ResponsibilityGrid,
    Unit,
)
from cityops.geo.service import load_categories
from tests.conftest import Templates, _checkpoint, _use

PW = "test-pass-2026"
_PW_HASH: str | None = None

CITY = "990100"
DA, DB = "990101", "990102"  # 东区 (west half), 西区 (east half)
LAT0, LAT1 = 39.90, 39.92
DISTRICT_LON = {DA: (116.00, 116.02), DB: (116.02, 116.04)}

#: component code → (lon, lat, owner unit, maintainer unit, category code)
COMPONENTS: dict[str, tuple[float, float, str | None, str | None, str]] = {
    "99010101001000001": (116.005, 39.905, "U-A", None, "01001"),
    "99010101002000001": (116.015, 39.915, None, "U-A", "01002"),
    "99010101002000002": (116.016, 39.916, "U-C", None, "01002"),
    "99010201001000001": (116.025, 39.905, "U-B", None, "01001"),
    "99010201001000002": (116.035, 39.915, "U-B", "U-B", "01001"),
}
A1, A2, A3, B1, B2 = COMPONENTS

#: username → (roles, scope, unit, unit_only)
USERS: dict[str, tuple[list[str], str | None, str | None, bool]] = {
    "admin": (["admin"], None, "U-CENTER", False),
    "dadmin": (["admin"], DA, None, False),
    "district1": (["dispatcher", "operator"], DA, None, False),
    "district2": (["dispatcher"], DB, None, False),
    "handler_a": (["handler"], DA, "U-A", True),
    "handler_b": (["handler"], DB, "U-B", True),
    "inspector1": (["inspector"], DA, None, False),
}


#: Cheap argon2id parameters for tests (the production defaults cost ~50–400 ms a hash).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(autouse=True)
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash and verify with :data:`FAST_HASHER` (still argon2id) while a test runs."""
    monkeypatch.setattr(passwords, "_hasher", FAST_HASHER)


def pw_hash() -> str:
    global _PW_HASH
    if _PW_HASH is None:
        _PW_HASH = FAST_HASHER.hash(PW)
    return _PW_HASH


def _box(lon0: float, lat0: float, lon1: float, lat1: float) -> shapely.Polygon:
    return shapely.box(lon0, lat0, lon1, lat1)


def _area(poly: shapely.Polygon) -> float:
    return abs(GEOD.geometry_area_perimeter(poly)[0])


def _bbox_cols(poly: shapely.Polygon) -> dict[str, float]:
    a, b, c, d = poly.bounds
    return {"min_lon": a, "min_lat": b, "max_lon": c, "max_lat": d}


def grid_centre(code: str) -> tuple[float, float]:
    """WGS84 centre of a unit grid of the mini city (``<community>001`` west, ``002`` east)."""
    lon0, lon1 = DISTRICT_LON[code[:6]]
    mid = (lon0 + lon1) / 2
    a, b = (lon0, mid) if code.endswith("001") else (mid, lon1)
    return (a + b) / 2, (LAT0 + LAT1) / 2


def build_mini_city(d: dbmod.Database) -> None:
    with d.session() as s:
        load_categories(s, "gbt47678")
        city_poly = _box(116.00, LAT0, 116.04, LAT1)
        city = Region(
            code=CITY,
            name="示范市",
            level="city",
            geom=shapely.to_wkb(city_poly),
            area_m2=_area(city_poly),
            **_bbox_cols(city_poly),
        )
        s.add(city)
        s.flush()
        units = {
            "U-CENTER": Unit(code="U-CENTER", name="监督指挥中心", unit_type="监督中心"),
            "U-A": Unit(code="U-A", name="东区市政养护公司", unit_type="养护单位"),
            "U-B": Unit(code="U-B", name="西区市政养护公司", unit_type="养护单位"),
            "U-C": Unit(code="U-C", name="东区供水公司", unit_type="权属单位"),
        }
        s.add_all(units.values())
        for dcode, name in ((DA, "东区"), (DB, "西区")):
            lon0, lon1 = DISTRICT_LON[dcode]
            poly = _box(lon0, LAT0, lon1, LAT1)
            geom = shapely.to_wkb(poly)
            dist = Region(
                code=dcode,
                name=name,
                level="district",
                parent_id=city.id,
                geom=geom,
                area_m2=_area(poly),
                **_bbox_cols(poly),
            )
            s.add(dist)
            s.flush()
            street = Region(
                code=dcode + "001",
                name=f"{name}一街道",
                level="street",
                parent_id=dist.id,
                geom=geom,
                area_m2=_area(poly),
                **_bbox_cols(poly),
            )
            s.add(street)
            s.flush()
            comm = Region(
                code=dcode + "001001",
                name=f"{name}一社区",
                level="community",
                parent_id=street.id,
                geom=geom,
                area_m2=_area(poly),
                **_bbox_cols(poly),
            )
            s.add(comm)
            s.flush()
            rg = ResponsibilityGrid(
                code=f"RG-{dcode}-01", name=f"{name}责任网格1", region_code=street.code
            )
            s.add(rg)
            s.flush()
            mid = (lon0 + lon1) / 2
            for seq, (a, b) in (("001", (lon0, mid)), ("002", (mid, lon1))):
                gpoly = _box(a, LAT0, b, LAT1)
                s.add(
                    Grid(
                        code=comm.code + seq,
                        community_id=comm.id,
                        responsibility_grid_id=rg.id,
                        geom=shapely.to_wkb(gpoly),
                        area_m2=_area(gpoly),
                        **_bbox_cols(gpoly),
                    )
                )
            units["U-A" if dcode == DA else "U-B"].regions = [dist]
        s.flush()
        grids = {g.code: g for g in s.query(Grid)}
        cats = {
            c.code: c
            for c in s.query(Category).filter(
                Category.kind == "component", Category.standard == "gbt47678"
            )
        }
        for code, (lon, lat, owner, maint, cat) in COMPONENTS.items():
            gcode = (
                code[:6] + "001001" + ("001" if lon < sum(DISTRICT_LON[code[:6]]) / 2 else "002")
            )
            s.add(
                Component(
                    code=code,
                    category_id=cats[cat].id,
                    name=cats[cat].name,
                    lon=lon,
                    lat=lat,
                    h3=h3.str_to_int(h3.latlng_to_cell(lat, lon, H3_RES)),
                    grid_id=grids[gcode].id,
                    grid_code=gcode,
                    status="完好",
                    owner_unit_id=units[owner].id if owner else None,
                    maintainer_unit_id=units[maint].id if maint else None,
                    data_source="实测",
                )
            )
        bump_geo_version(s, grids=True, components=True)
        for username, (roles, scope, unit, unit_only) in USERS.items():
            create_user(
                s,
                None,
                username=username,
                display_name=username,
                password=PW,
                roles=roles,
                unit_code=unit,
                scope_region_code=scope,
                scope_unit_only=unit_only,
                password_hash=pw_hash(),
            )


@pytest.fixture(scope="session")
def mini_template(templates: Templates, empty_template: str) -> str:
    url = templates.clone(empty_template, "mini")
    d = dbmod.Database(url)
    build_mini_city(d)
    d.dispose()
    _checkpoint(url)
    return url


@pytest.fixture
def mini(templates: Templates, mini_template: str) -> Iterator[dbmod.Database]:
    yield from _use(templates, mini_template, "m")


@pytest.fixture
def mini_client(mini: dbmod.Database) -> Iterator[TestClient]:
    from cityops.app import create_app

    with TestClient(create_app(mini), raise_server_exceptions=True) as c:
        yield c


def login(client: TestClient, username: str, password: str = PW) -> dict[str, str]:
    """Log in and answer bearer headers (the cookie jar is cleared: bearer only)."""
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    client.cookies.clear()
    return {"Authorization": f"Bearer {r.json()['token']}"}


# =========================================================================== tests


def test_district_user_sees_only_its_regions(mini_client: TestClient) -> None:
    h = login(mini_client, "district1")
    r = mini_client.get("/api/v1/regions", headers=h, params={"page_size": 1000})
    assert r.status_code == 200
    codes = {i["code"] for i in r.json()["items"]}
    assert codes == {DA, DA + "001", DA + "001001"}
    assert mini_client.get(f"/api/v1/regions/{DA}", headers=h).status_code == 200
    for code in (DB, DB + "001", DB + "001001", CITY):
        r = mini_client.get(f"/api/v1/regions/{code}", headers=h)
        assert r.status_code == 404, code
        assert r.json()["error"] == "not_found"
    # Same answer as for a code that does not exist: existence is not revealed.
    assert mini_client.get("/api/v1/regions/990109", headers=h).json()["message"].startswith("no ")
    # parent= of an unseen region lists nothing.
    r = mini_client.get("/api/v1/regions", headers=h, params={"parent": DB})
    assert r.json()["total"] == 0
    # A city-wide user sees everything.
    ha = login(mini_client, "admin")
    assert mini_client.get("/api/v1/regions", headers=ha).json()["total"] == 7


def test_district_user_grids(mini_client: TestClient) -> None:
    h = login(mini_client, "district1")
    r = mini_client.get("/api/v1/grids", headers=h)
    assert [g["code"] for g in r.json()["items"]] == [DA + "001001001", DA + "001001002"]
    # Filtering by another district's community gives nothing, not an error.
    r = mini_client.get("/api/v1/grids", headers=h, params={"community": DB + "001001"})
    assert r.json()["total"] == 0
    assert mini_client.get(f"/api/v1/grids/{DA}001001001", headers=h).status_code == 200
    assert mini_client.get(f"/api/v1/grids/{DB}001001001", headers=h).status_code == 404
    # bbox over both districts still returns only the own district.
    r = mini_client.get("/api/v1/grids", headers=h, params={"bbox": "116.0,39.9,116.04,39.92"})
    assert r.json()["total"] == 2


def test_district_admin_cannot_change_other_district(mini_client: TestClient) -> None:
    h = login(mini_client, "dadmin")
    body = {"management_level": "一级"}
    r = mini_client.patch(f"/api/v1/grids/{DB}001001001", headers=h, json=body)
    assert r.status_code == 404
    r = mini_client.patch(f"/api/v1/grids/{DA}001001001", headers=h, json=body)
    assert r.status_code == 200 and r.json()["management_level"] == "一级"
    r = mini_client.patch(f"/api/v1/components/{B1}", headers=h, json={"status": "破损"})
    assert r.status_code == 404
    r = mini_client.patch(f"/api/v1/components/{A1}", headers=h, json={"status": "破损"})
    assert r.status_code == 200
    # Creating a component in another district: 403 (the caller chose the place).
    lon, lat = grid_centre(DB + "001001001")
    r = mini_client.post(
        "/api/v1/components",
        headers=h,
        json={"code": "99010201001000077", "lon": lon, "lat": lat},
    )
    assert r.status_code == 403, r.text
    assert "scope" in r.json()["message"]
    # City-wide settings need a city-wide admin.
    r = mini_client.get("/api/v1/categories", headers=h, params={"q": "01001", "kind": "component"})
    cat_id = r.json()[0]["id"]
    r = mini_client.patch(f"/api/v1/categories/{cat_id}", headers=h, json={"enabled": False})
    assert r.status_code == 403
    r = mini_client.post(
        "/api/v1/units", headers=h, json={"code": "U-X", "name": "X", "unit_type": "处置单位"}
    )
    assert r.status_code == 403
    assert mini_client.get("/api/v1/audit", headers=h).status_code == 403


def test_district_user_components(mini_client: TestClient) -> None:
    h = login(mini_client, "district1")
    r = mini_client.get("/api/v1/components", headers=h)
    assert {c["code"] for c in r.json()["items"]} == {A1, A2, A3}
    r = mini_client.get("/api/v1/components", headers=h, params={"grid": DB})
    assert r.json()["items"] == []
    assert mini_client.get(f"/api/v1/components/{A1}", headers=h).status_code == 200
    assert mini_client.get(f"/api/v1/components/{B1}", headers=h).status_code == 404
    # Nearest components near the district border: only the own district's.
    lon, lat = COMPONENTS[B1][:2]
    params: dict[str, Any] = {"lon": lon, "lat": lat, "radius_m": 5000, "limit": 10}
    r = mini_client.get("/api/v1/geo/nearest-components", headers=h, params=params)
    assert r.status_code == 200
    assert {c["code"] for c in r.json()} == {A1, A2, A3}
    hb = login(mini_client, "district2")
    r = mini_client.get("/api/v1/geo/nearest-components", headers=hb, params={**params, "limit": 1})
    assert [c["code"] for c in r.json()] == [B1]
    ha = login(mini_client, "admin")
    r = mini_client.get("/api/v1/geo/nearest-components", headers=ha, params=params)
    assert {c["code"] for c in r.json()} == set(COMPONENTS)


def test_district_user_cannot_write(mini_client: TestClient) -> None:
    h = login(mini_client, "district1")
    r = mini_client.patch(f"/api/v1/components/{A1}", headers=h, json={"status": "破损"})
    assert r.status_code == 403
    r = mini_client.patch(f"/api/v1/components/{B1}", headers=h, json={"status": "破损"})
    assert r.status_code == 404
    r = mini_client.patch(f"/api/v1/grids/{DA}001001001", headers=h, json={"note": "x"})
    assert r.status_code == 403
    assert "admin" in r.json()["message"]


def test_locate_is_not_scoped(mini_client: TestClient) -> None:
    """Locating a point is reference information every user needs, at any border."""
    h = login(mini_client, "district1")
    lon, lat = grid_centre(DB + "001001002")
    r = mini_client.get("/api/v1/geo/locate", headers=h, params={"lon": lon, "lat": lat})
    assert r.status_code == 200
    assert r.json()["grid"]["code"] == DB + "001001002"


def test_handler_changes_only_its_units_components(mini_client: TestClient) -> None:
    h = login(mini_client, "handler_a")
    # Owned by U-A.
    r = mini_client.patch(
        f"/api/v1/components/{A1}", headers=h, json={"status": "破损", "status_note": "井盖破裂"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "破损"
    assert r.json()["history"][-1]["changed_by"] == "handler_a"
    # Maintained by U-A.
    r = mini_client.patch(f"/api/v1/components/{A2}", headers=h, json={"status": "丢失"})
    assert r.status_code == 200
    # In the district, but owned by another unit.
    r = mini_client.patch(f"/api/v1/components/{A3}", headers=h, json={"status": "破损"})
    assert r.status_code == 403
    # Other fields are for admins.
    r = mini_client.patch(f"/api/v1/components/{A1}", headers=h, json={"name": "新名字"})
    assert r.status_code == 403
    assert "status" in r.json()["message"]
    # Another district's component: not visible at all.
    r = mini_client.patch(f"/api/v1/components/{B1}", headers=h, json={"status": "破损"})
    assert r.status_code == 404
    hb = login(mini_client, "handler_b")
    r = mini_client.patch(f"/api/v1/components/{B2}", headers=hb, json={"status": "废弃"})
    assert r.status_code == 200
    r = mini_client.patch(f"/api/v1/components/{A1}", headers=hb, json={"status": "完好"})
    assert r.status_code == 404


def test_scope_helpers() -> None:
    from sqlalchemy import column, true

    from cityops.core.errors import Forbidden, NotFound
    from cityops.core.security import Principal, ensure_region, region_visible, scope_filter

    city = Principal(1, "a", "A", frozenset({"admin"}), None, None, False)
    dist = Principal(2, "d", "D", frozenset({"operator"}), None, DA, False)
    assert region_visible(city, DB) and region_visible(city, None)
    assert region_visible(dist, DA + "001001001")
    assert not region_visible(dist, DB + "001") and not region_visible(dist, None)
    assert not region_visible(dist, CITY)
    assert scope_filter(city, column("code")) is true()
    cond = scope_filter(dist, column("code"))
    assert "LIKE" in str(cond)
    assert set(cond.compile().params.values()) == {DA, "990102", DA + "%"}
    cond = scope_filter(Principal(3, "x", "X", frozenset(), None, "99019", False), column("c"))
    assert set(cond.compile().params.values()) == {"99019", "99020", "99019%"}
    cond = scope_filter(Principal(3, "x", "X", frozenset(), None, "99", False), column("c"))
    assert set(cond.compile().params.values()) == {"99", "99%"}
    ensure_region(dist, DA)
    with pytest.raises(NotFound):
        ensure_region(dist, DB)
    with pytest.raises(Forbidden):
        ensure_region(dist, DB, write=True)

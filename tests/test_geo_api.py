"""City-model REST API: locate, nearest components, regions, units, grids, components,
categories."""

# The mini-city fixtures are imported from test_scope: pytest injects them by name.
# ruff: noqa: F811

from __future__ import annotations

import contextvars
import json
from typing import Any

import h3
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cityops.core import db as dbmod
from cityops.core.settings import get_settings
from cityops.geo import crs as crsmod
from cityops.geo.models import H3_RES, Component, ComponentStatusHistory
from tests.test_scope import (  # noqa: F401
    A1,
    A2,
    B1,
    COMPONENTS,
    DA,
    DB,
    fast_argon2,
    grid_centre,
    login,
    mini,
    mini_client,
    mini_template,
)

GA1, GA2, GB1 = DA + "001001001", DA + "001001002", DB + "001001001"


@pytest.fixture
def admin_h(mini_client: TestClient) -> dict[str, str]:
    return login(mini_client, "admin")


def _cli_locate(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Any]:
    from typer.testing import CliRunner

    from cityops.cli.main import app

    monkeypatch.setenv("CITYOPS_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        # The CLI sets the audit actor: keep that out of this test's context.
        res = contextvars.copy_context().run(CliRunner().invoke, app, ["locate", *args])
    finally:
        monkeypatch.delenv("CITYOPS_DATABASE_URL")
        get_settings.cache_clear()
    return res.exit_code, json.loads(res.stdout)


# --------------------------------------------------------------------------- locate


def test_locate_equals_cli(
    mini_client: TestClient,
    mini: dbmod.Database,
    admin_h: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lon, lat = grid_centre(GA2)
    r = mini_client.get("/api/v1/geo/locate", headers=admin_h, params={"lon": lon, "lat": lat})
    assert r.status_code == 200, r.text
    body = r.json()
    code, cli = _cli_locate(mini.url, monkeypatch, str(lon), str(lat))
    assert code == 0
    assert body == cli
    assert body["grid"]["code"] == GA2
    assert body["responsibility_grid"]["code"] == f"RG-{DA}-01"
    assert body["district"] == {"code": DA, "name": "东区"}
    assert body["community"]["code"] == DA + "001001"
    # gcj02 input, same as the CLI with --crs.
    glon, glat = crsmod.from_wgs84(lon, lat, "gcj02")
    r = mini_client.get(
        "/api/v1/geo/locate", headers=admin_h, params={"lon": glon, "lat": glat, "crs": "gcj02"}
    )
    code, cli = _cli_locate(mini.url, monkeypatch, str(glon), str(glat), "--crs", "gcj02")
    assert r.json() == cli


def test_locate_errors(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    url = "/api/v1/geo/locate"
    r = mini_client.get(url, headers=admin_h, params={"lon": 117.5, "lat": 39.91})
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert "outside every unit grid" in r.json()["message"]
    r = mini_client.get(url, headers=admin_h, params={"lon": 116.01, "lat": 39.91, "crs": "utm"})
    assert r.status_code == 422 and "unknown crs" in r.json()["message"]
    r = mini_client.get(url, headers=admin_h, params={"lon": 216.0, "lat": 39.91})
    assert r.status_code == 422 and "longitude" in r.json()["message"]
    r = mini_client.get(url, headers=admin_h, params={"lon": 116.0, "lat": 99})
    assert r.status_code == 422 and "latitude" in r.json()["message"]
    assert mini_client.get(url, headers=admin_h, params={"lon": 116.0}).status_code == 422
    assert mini_client.get(url, params={"lon": 116.01, "lat": 39.91}).status_code == 401


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "cgcs2000"])
def test_locate_other_crs(mini_client: TestClient, admin_h: dict[str, str], crs: str) -> None:
    # Points a little inside each grid's edge: the ~500 m GCJ-02 offset would move a
    # naive (unconverted) lookup into the neighbouring grid or out of the city.
    for code, (dlon, dlat) in ((GA1, (-0.004, 0.0)), (GA2, (0.004, 0.008)), (GB1, (0.0, -0.008))):
        lon, lat = grid_centre(code)
        lon, lat = lon + dlon, lat + dlat
        clon, clat = crsmod.from_wgs84(lon, lat, crs)
        r = mini_client.get(
            "/api/v1/geo/locate", headers=admin_h, params={"lon": clon, "lat": clat, "crs": crs}
        )
        assert r.status_code == 200, r.text
        assert r.json()["grid"]["code"] == code
        # The usual BD-09 → GCJ-02 formula is not an exact inverse (~1e-6°, 15 cm).
        tol = 5e-6 if crs == "bd09" else 1e-7
        assert r.json()["wgs84"]["lon"] == pytest.approx(lon, abs=tol)
        assert r.json()["wgs84"]["lat"] == pytest.approx(lat, abs=tol)
        assert r.json()["input"] == {"lon": clon, "lat": clat, "crs": crs}


def test_nearest_components(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    url = "/api/v1/geo/nearest-components"
    lon, lat = COMPONENTS[A1][:2]
    r = mini_client.get(url, headers=admin_h, params={"lon": lon, "lat": lat})
    assert r.status_code == 200
    assert [c["code"] for c in r.json()] == [A1]  # 200 m default radius
    first = r.json()[0]
    assert first["distance_m"] == 0.0
    assert first["owner_unit"] == "东区市政养护公司"
    assert first["category"] == {"code": "01001", "name": "供水井盖"}
    params: dict[str, Any] = {"lon": lon, "lat": lat, "radius_m": 10_000, "limit": 3}
    r = mini_client.get(url, headers=admin_h, params=params)
    dists = [c["distance_m"] for c in r.json()]
    assert len(dists) == 3 and dists == sorted(dists)
    r = mini_client.get(url, headers=admin_h, params={**params, "category": "01002", "limit": 10})
    assert {c["code"] for c in r.json()} == {A2, "99010101002000002"}
    # gcj02 input finds the same component.
    glon, glat = crsmod.from_wgs84(lon, lat, "gcj02")
    r = mini_client.get(
        url, headers=admin_h, params={"lon": glon, "lat": glat, "crs": "gcj02", "radius_m": 5}
    )
    assert [c["code"] for c in r.json()] == [A1]
    r = mini_client.get(url, headers=admin_h, params={**params, "limit": 0})
    assert r.status_code == 422
    r = mini_client.get(url, headers=admin_h, params={**params, "category": "99999"})
    assert r.status_code == 404


# --------------------------------------------------------------------------- regions, units


def test_regions(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    r = mini_client.get("/api/v1/regions", headers=admin_h, params={"level": "district"})
    assert [x["code"] for x in r.json()["items"]] == [DA, DB]
    assert r.json()["items"][0]["parent_code"] == "990100"
    r = mini_client.get("/api/v1/regions", headers=admin_h, params={"parent": DA})
    assert [x["code"] for x in r.json()["items"]] == [DA + "001"]
    r = mini_client.get(f"/api/v1/regions/{DA}", headers=admin_h)
    body = r.json()
    assert body["geometry"]["type"] == "Polygon"
    assert body["children"] == 1
    assert body["descendants"] == {"street": 1, "community": 1, "grid": 2}
    assert body["bbox"]["min_lon"] == pytest.approx(116.0)
    r = mini_client.get("/api/v1/regions/990100", headers=admin_h)
    assert r.json()["descendants"] == {"district": 2, "street": 2, "community": 2, "grid": 4}
    assert mini_client.get("/api/v1/regions/123", headers=admin_h).status_code == 404


def _credit_code(first17: str) -> str:
    chars = "0123456789ABCDEFGHJKLMNPQRTUWXY"
    weights = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
    total = sum(chars.index(c) * w for c, w in zip(first17, weights, strict=True))
    return first17 + chars[(31 - total % 31) % 31]


def test_units(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    cc = _credit_code("91990100MA0000001")
    body = {
        "code": "U-D",
        "name": "东区环卫所",
        "unit_type": "处置单位",
        "parent_code": "U-A",
        "credit_code": cc,
        "region_codes": [DA],
    }
    r = mini_client.post("/api/v1/units", headers=admin_h, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["parent_code"] == "U-A" and r.json()["region_codes"] == [DA]
    assert mini_client.post("/api/v1/units", headers=admin_h, json=body).status_code == 409
    bad = {**body, "code": "U-E", "credit_code": cc[:-1] + ("0" if cc[-1] != "0" else "1")}
    r = mini_client.post("/api/v1/units", headers=admin_h, json=bad)
    assert r.status_code == 422 and "check character" in r.json()["message"]
    r = mini_client.post(
        "/api/v1/units", headers=admin_h, json={**body, "code": "U-E", "unit_type": "x"}
    )
    assert r.status_code == 422
    r = mini_client.patch(
        "/api/v1/units/U-D",
        headers=admin_h,
        json={"name": "东区环卫所二", "region_codes": [DA, DB]},
    )
    assert r.json()["name"] == "东区环卫所二" and r.json()["region_codes"] == [DA, DB]
    # No cycles in the unit tree.
    r = mini_client.patch("/api/v1/units/U-A", headers=admin_h, json={"parent_code": "U-D"})
    assert r.status_code == 422
    r = mini_client.get("/api/v1/units", headers=admin_h, params={"unit_type": "养护单位"})
    assert {u["code"] for u in r.json()["items"]} == {"U-A", "U-B"}
    r = mini_client.get("/api/v1/units", headers=admin_h, params={"region": DB})
    assert {u["code"] for u in r.json()["items"]} == {"U-B", "U-D"}
    assert mini_client.get("/api/v1/units/U-D", headers=admin_h).json()["credit_code"] == cc
    assert mini_client.get("/api/v1/units/NOPE", headers=admin_h).status_code == 404


# --------------------------------------------------------------------------- grids


def test_grids(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    r = mini_client.get(
        "/api/v1/grids", headers=admin_h, params={"bbox": "116.021,39.9,116.029,39.91"}
    )
    assert [g["code"] for g in r.json()["items"]] == [GB1]
    assert r.json()["items"][0]["geometry"] is None
    r = mini_client.get("/api/v1/grids", headers=admin_h, params={"geometry": True, "page_size": 1})
    assert r.json()["total"] == 4 and r.json()["items"][0]["geometry"]["type"] == "Polygon"
    assert (
        mini_client.get("/api/v1/grids", headers=admin_h, params={"bbox": "1,2,3"}).status_code
        == 422
    )
    r = mini_client.get(f"/api/v1/grids/{GA1}", headers=admin_h)
    g = r.json()
    assert g["geometry"]["type"] == "Polygon"
    assert g["responsibility_grid"] == {"code": f"RG-{DA}-01", "name": "东区责任网格1"}
    assert g["street"]["name"] == "东区一街道" and g["district"]["name"] == "东区"
    assert g["components"] == 1 and g["inspectors"] == []
    assert g["area_m2"] > 1_000_000


def test_grid_patch(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    url = f"/api/v1/grids/{GA1}"
    r = mini_client.patch(
        url,
        headers=admin_h,
        json={"management_level": "一级", "inspectors": ["inspector1"], "owner_unit_code": "U-A"},
    )
    assert r.status_code == 200, r.text
    g = r.json()
    assert g["management_level"] == "一级" and g["owner_unit"]["code"] == "U-A"
    assert [i["username"] for i in g["inspectors"]] == ["inspector1"]
    # Only inspectors, and only ones whose scope covers the grid.
    r = mini_client.patch(url, headers=admin_h, json={"inspectors": ["district1"]})
    assert r.status_code == 422 and "not an inspector" in r.json()["message"]
    r = mini_client.patch(url, headers=admin_h, json={"inspectors": ["ghost"]})
    assert r.status_code == 422
    r = mini_client.patch(
        f"/api/v1/grids/{GB1}", headers=admin_h, json={"inspectors": ["inspector1"]}
    )
    assert r.status_code == 422 and "scope" in r.json()["message"]
    # The responsibility grid must lie around the grid; locate follows the change.
    r = mini_client.patch(url, headers=admin_h, json={"responsibility_grid_code": f"RG-{DB}-01"})
    assert r.status_code == 422
    r = mini_client.patch(url, headers=admin_h, json={"responsibility_grid_code": None})
    assert r.status_code == 200 and r.json()["responsibility_grid"] is None
    lon, lat = grid_centre(GA1)
    r = mini_client.get("/api/v1/geo/locate", headers=admin_h, params={"lon": lon, "lat": lat})
    assert r.json()["responsibility_grid"] is None
    r = mini_client.patch(url, headers=admin_h, json={"inspectors": []})
    assert r.json()["inspectors"] == []


# --------------------------------------------------------------------------- components


def test_component_list_and_detail(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    r = mini_client.get("/api/v1/components", headers=admin_h, params={"limit": 2})
    page1 = r.json()
    assert len(page1["items"]) == 2 and page1["next_cursor"] is not None
    seen = [c["code"] for c in page1["items"]]
    cursor = page1["next_cursor"]
    while cursor is not None:
        r = mini_client.get(
            "/api/v1/components", headers=admin_h, params={"limit": 2, "cursor": cursor}
        )
        seen += [c["code"] for c in r.json()["items"]]
        cursor = r.json()["next_cursor"]
    assert sorted(seen) == sorted(COMPONENTS) and len(seen) == len(set(seen))
    r = mini_client.get("/api/v1/components", headers=admin_h, params={"grid": GA2})
    assert {c["code"] for c in r.json()["items"]} == {A2, "99010101002000002"}
    r = mini_client.get(
        "/api/v1/components", headers=admin_h, params={"category": "01001", "grid": DB}
    )
    assert {c["code"] for c in r.json()["items"]} == {B1, "99010201001000002"}
    r = mini_client.get(
        "/api/v1/components", headers=admin_h, params={"bbox": "116.0,39.9,116.01,39.91"}
    )
    assert [c["code"] for c in r.json()["items"]] == [A1]
    assert (
        mini_client.get("/api/v1/components", headers=admin_h, params={"status": "bad"}).status_code
        == 422
    )
    r = mini_client.get(f"/api/v1/components/{A1}", headers=admin_h)
    c = r.json()
    assert c["category"]["code"] == "01001" and c["category"]["standard"] == "gbt47678"
    assert c["owner_unit"]["code"] == "U-A" and c["grid_code"] == GA1
    assert c["history"] == []


def test_component_create(
    mini_client: TestClient, mini: dbmod.Database, admin_h: dict[str, str]
) -> None:
    lon, lat = 116.0123, 39.9111  # in GA2
    glon, glat = crsmod.from_wgs84(lon, lat, "gcj02")
    body = {
        "code": "99010101003000001",
        "name": "雨水井盖",
        "lon": glon,
        "lat": glat,
        "crs": "gcj02",
        "owner_unit_code": "U-A",
        "initial_date": "2024-05-01",
        "data_source": "实测",
    }
    r = mini_client.post("/api/v1/components", headers=admin_h, json=body)
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["grid_code"] == GA2 and c["category"]["code"] == "01003"
    assert c["lon"] == pytest.approx(lon, abs=1e-7) and c["lat"] == pytest.approx(lat, abs=1e-7)
    assert c["status"] == "完好" and c["initial_date"] == "2024-05-01"
    assert [h["new_status"] for h in c["history"]] == ["完好"]
    with mini.session() as s:
        comp = s.scalars(select(Component).where(Component.code == body["code"])).one()
        assert comp.h3 == h3.str_to_int(h3.latlng_to_cell(comp.lat, comp.lon, H3_RES))
    # The spatial index sees it at once.
    r = mini_client.get(
        "/api/v1/geo/nearest-components",
        headers=admin_h,
        params={"lon": lon, "lat": lat, "radius_m": 1},
    )
    assert [x["code"] for x in r.json()] == [body["code"]]
    # Refusals.
    assert mini_client.post("/api/v1/components", headers=admin_h, json=body).status_code == 409
    for code, lonlat, words in (
        ("9901010100300001", (lon, lat), "01003"),  # 16 digits → legacy classes (not loaded)
        ("99010201003000009", (lon, lat), "region"),  # district of the code ≠ location's
        ("99019901003000009", (lon, lat), "district"),  # no such district
        ("99010199999000009", (lon, lat), "99999"),  # no such class
        ("99010101003000009", (117.5, 39.9), "outside"),
    ):
        r = mini_client.post(
            "/api/v1/components",
            headers=admin_h,
            json={"code": code, "lon": lonlat[0], "lat": lonlat[1]},
        )
        assert r.status_code == 422, (code, r.text)
        assert words in r.json()["message"] or words in json.dumps(r.json()), r.json()
    r = mini_client.post(
        "/api/v1/components", headers=admin_h, json={"code": "123", "lon": lon, "lat": lat}
    )
    assert r.status_code == 422
    # Non-admins cannot create.
    hd = login(mini_client, "district1")
    body2 = {**body, "code": "99010101003000002"}
    assert mini_client.post("/api/v1/components", headers=hd, json=body2).status_code == 403


def test_component_legacy_code(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    r = mini_client.put(
        "/api/v1/settings/category-standard", headers=admin_h, json={"standard": "gbt30428"}
    )
    assert r.status_code == 200 and r.json()["added"] > 0
    lon, lat = grid_centre(GB1)
    r = mini_client.post(
        "/api/v1/components",
        headers=admin_h,
        json={"code": "9901020101000001", "lon": lon, "lat": lat},
    )
    assert r.status_code == 201, r.text
    assert r.json()["category"] == {
        "id": r.json()["category"]["id"],
        "code": "0101",
        "name": "上水井盖",
        "standard": "gbt30428",
        "big_class_name": "公用设施",
    }


def test_component_update_and_history(
    mini_client: TestClient, mini: dbmod.Database, admin_h: dict[str, str]
) -> None:
    url = f"/api/v1/components/{A1}"
    r = mini_client.patch(url, headers=admin_h, json={"status": "破损", "status_note": "巡查发现"})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["status"] == "破损" and c["change_date"] is not None
    assert c["history"][-1]["old_status"] == "完好"
    assert c["history"][-1]["new_status"] == "破损"
    assert c["history"][-1]["changed_by"] == "admin"
    assert c["history"][-1]["note"] == "巡查发现"
    # Same status again: no new history row.
    r = mini_client.patch(url, headers=admin_h, json={"status": "破损"})
    assert len(r.json()["history"]) == 1
    r = mini_client.patch(url, headers=admin_h, json={"status": "坏了"})
    assert r.status_code == 422
    # Admin edits: units, note, and a move to the neighbouring grid.
    lon, lat = grid_centre(GA2)
    r = mini_client.patch(
        url,
        headers=admin_h,
        json={"maintainer_unit_code": "U-C", "note": "移位", "lon": lon, "lat": lat},
    )
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["grid_code"] == GA2 and c["maintainer_unit"]["code"] == "U-C" and c["note"] == "移位"
    r = mini_client.get(
        "/api/v1/geo/nearest-components",
        headers=admin_h,
        params={"lon": lon, "lat": lat, "radius_m": 1},
    )
    assert [x["code"] for x in r.json()] == [A1]
    # Not into another district (the code's region part would be wrong).
    blon, blat = grid_centre(GB1)
    r = mini_client.patch(url, headers=admin_h, json={"lon": blon, "lat": blat})
    assert r.status_code == 422
    r = mini_client.patch(url, headers=admin_h, json={"lon": blon})
    assert r.status_code == 422
    with mini.session() as s:
        n = s.scalars(select(ComponentStatusHistory)).all()
        assert len(n) == 1
    assert (
        mini_client.patch(f"/api/v1/components/{B1}0", headers=admin_h, json={}).status_code == 404
    )


# --------------------------------------------------------------------------- categories


def _category(
    c: TestClient, h: dict[str, str], code: str, kind: str = "component"
) -> dict[str, Any]:
    r = c.get("/api/v1/categories", headers=h, params={"kind": kind, "q": code})
    return next(x for x in r.json() if x["code"] == code)


def test_category_settings(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    r = mini_client.get("/api/v1/categories", headers=admin_h, params={"kind": "component"})
    assert len(r.json()) == 153
    r = mini_client.get(
        "/api/v1/categories", headers=admin_h, params={"q": "井盖", "kind": "matter"}
    )
    assert r.json() and all("井盖" in x["name"] and x["kind"] == "matter" for x in r.json())
    cat = _category(mini_client, admin_h, "01001")
    url = f"/api/v1/categories/{cat['id']}"
    r = mini_client.patch(url, headers=admin_h, json={"handler_mode": "fixed_unit"})
    assert r.status_code == 422 and "handler_unit_code" in r.json()["message"]
    r = mini_client.patch(
        url,
        headers=admin_h,
        json={
            "handler_mode": "fixed_unit",
            "handler_unit_code": "U-A",
            "default_urgency": "紧急",
            "filing_standard": "井盖缺失、破损",
            "closing_standard": "井盖完好、平整",
        },
    )
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["handler_unit"]["code"] == "U-A" and c["default_urgency"] == "紧急"
    assert c["filing_standard"] == "井盖缺失、破损"
    assert mini_client.patch(url, headers=admin_h, json={"default_urgency": "x"}).status_code == 422
    assert mini_client.patch(url, headers=admin_h, json={"name": "改名"}).status_code == 422
    r = mini_client.patch(url, headers=admin_h, json={"enabled": False})
    assert r.json()["enabled"] is False
    r = mini_client.get(
        "/api/v1/categories", headers=admin_h, params={"kind": "component", "enabled": True}
    )
    assert len(r.json()) == 152
    # A disabled class takes no new components.
    lon, lat = grid_centre(GA1)
    r = mini_client.post(
        "/api/v1/components",
        headers=admin_h,
        json={"code": "99010101001000099", "lon": lon, "lat": lat},
    )
    assert r.status_code == 422 and "disabled" in r.json()["message"]
    # Non-admins.
    hd = login(mini_client, "district1")
    assert mini_client.patch(url, headers=hd, json={"enabled": True}).status_code == 403
    assert mini_client.get(url, headers=hd).status_code == 200


def test_time_limits(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    cat = _category(mini_client, admin_h, "01001", "matter")
    url = f"/api/v1/categories/{cat['id']}/time-limits"
    limits: list[dict[str, Any]] = [
        {"stage": "dispatch", "urgency": None, "amount": 30, "unit": "natural_minutes"},
        {"stage": "handle", "urgency": "一般", "amount": 4, "unit": "working_hours"},
        {"stage": "handle", "urgency": "特急", "amount": 2, "unit": "natural_hours"},
    ]
    r = mini_client.put(url, headers=admin_h, json=limits)
    assert r.status_code == 200, r.text
    got = r.json()["time_limits"]
    assert {(x["stage"], x["urgency"], x["amount"], x["unit"]) for x in got} == {
        (x["stage"], x["urgency"], x["amount"], x["unit"]) for x in limits
    }
    # Replace: one changed, one dropped, one kept.
    new = [limits[0], {**limits[1], "amount": 1, "unit": "working_days"}]
    r = mini_client.put(url, headers=admin_h, json=new)
    got = sorted((x["stage"], x["urgency"] or "", x["amount"]) for x in r.json()["time_limits"])
    assert got == [("dispatch", "", 30.0), ("handle", "一般", 1.0)]
    for bad in (
        [limits[0], limits[0]],
        [{**limits[0], "unit": "fortnights"}],
        [{**limits[0], "urgency": "慢"}],
        [{**limits[0], "amount": 0}],
        [{**limits[0], "stage": "Bad Stage"}],
        [{**limits[0], "stage": "lunch"}],
    ):
        assert mini_client.put(url, headers=admin_h, json=bad).status_code == 422, bad
    r = mini_client.put(url, headers=admin_h, json=[])
    assert r.json()["time_limits"] == []


def test_local_category_and_standard(mini_client: TestClient, admin_h: dict[str, str]) -> None:
    body = {"code": "06999", "name": "共享单车乱停放", "kind": "matter"}
    r = mini_client.post("/api/v1/categories", headers=admin_h, json=body)
    assert r.status_code == 201, r.text
    c = r.json()
    assert c["standard"] == "local" and c["is_local"] and c["big_class_name"] == "市容环境类"
    assert mini_client.post("/api/v1/categories", headers=admin_h, json=body).status_code == 409
    # A national code cannot be shadowed; a new big class needs a name; the code form follows
    # the chosen standard.
    r = mini_client.post(
        "/api/v1/categories", headers=admin_h, json={**body, "code": "01001", "kind": "component"}
    )
    assert r.status_code == 409
    r = mini_client.post("/api/v1/categories", headers=admin_h, json={**body, "code": "21001"})
    assert r.status_code == 422
    r = mini_client.post(
        "/api/v1/categories",
        headers=admin_h,
        json={**body, "code": "21001", "kind": "component", "big_class_name": "地方部件"},
    )
    assert r.status_code == 201
    assert (
        mini_client.post(
            "/api/v1/categories", headers=admin_h, json={**body, "code": "0699"}
        ).status_code
        == 422
    )
    r = mini_client.get("/api/v1/categories", headers=admin_h, params={"q": "06999"})
    assert [x["code"] for x in r.json()] == ["06999"]
    # A local component class works in component codes.
    lon, lat = grid_centre(GA1)
    r = mini_client.post(
        "/api/v1/components",
        headers=admin_h,
        json={"code": "99010121001000001", "lon": lon, "lat": lat},
    )
    assert r.status_code == 201 and r.json()["category"]["standard"] == "local"
    # Switch the city to the legacy standard.
    assert (
        mini_client.get("/api/v1/settings/category-standard", headers=admin_h).json()["standard"]
        == "gbt47678"
    )
    r = mini_client.put(
        "/api/v1/settings/category-standard", headers=admin_h, json={"standard": "gbt30428"}
    )
    assert r.json() == {"standard": "gbt30428", "added": 110}
    r = mini_client.get(
        "/api/v1/categories", headers=admin_h, params={"kind": "component", "q": "0101"}
    )
    assert [(x["code"], x["standard"]) for x in r.json()] == [("0101", "gbt30428")]
    r = mini_client.put(
        "/api/v1/settings/category-standard", headers=admin_h, json={"standard": "gbt47678"}
    )
    assert r.json() == {"standard": "gbt47678", "added": 0}
    r = mini_client.put(
        "/api/v1/settings/category-standard", headers=admin_h, json={"standard": "local"}
    )
    assert r.status_code == 422


def test_openapi_has_tags(mini_client: TestClient) -> None:
    spec = mini_client.get("/api/openapi.json").json()
    tags = {t for p in spec["paths"].values() for op in p.values() for t in op.get("tags", [])}
    assert {
        "auth",
        "users",
        "audit",
        "geo",
        "regions",
        "units",
        "grids",
        "components",
        "categories",
        "settings",
    } <= tags

"""Command-centre map 一张图: layers, scope, click details, KPI panel, roles, no-internet map."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import h3
import pytest
from sqlalchemy import func, select

from cityops.access.models import User
from cityops.cases import service
from cityops.cases.models import Case
from cityops.cases.storage import LocalStorage
from cityops.console import command_service
from cityops.core.db import utcnow
from cityops.core.settings import get_settings
from cityops.evaluation import rollup
from cityops.geo.models import Grid
from tests.console_support import console_user, log_in
from tests.factories import matter_category, point_in, principal, report_data
from tests.public_support import advance


@pytest.fixture(autouse=True)
def _fresh_caches() -> Any:
    command_service.clear_kpi_cache()
    yield
    command_service.clear_kpi_cache()


def _grids(s: Any) -> tuple[Grid, Grid, str]:
    """A grid inside district1's district and one outside it."""
    scope = s.scalar(select(User.scope_region_code).where(User.username == "district1"))
    inside = s.scalars(select(Grid).where(Grid.code.like(f"{scope}%")).order_by(Grid.code)).first()
    outside = s.scalars(
        select(Grid).where(Grid.code.not_like(f"{scope}%")).order_by(Grid.code)
    ).first()
    assert inside is not None and outside is not None
    return inside, outside, scope


def _report(s: Any, grid: Grid, **kw: Any) -> Case:
    lon, lat = point_in(grid)
    op = principal(s, "operator1")
    data = report_data(matter_category(s), lon, lat, source="hotline", **kw)
    return service.create_case(s, op, data).case


def test_kpis_count_today_closures_overdue_and_intake_by_source(city: Any, tmp_path: Any) -> None:
    store = LocalStorage(tmp_path / "att")
    installed = rollup.installed()
    if not installed:
        rollup.install()
    try:
        with city.session() as s:
            inside, outside, _ = _grids(s)
            a = _report(s, inside)
            b = _report(s, outside)
            c = _report(s, outside, description="第三起")
            old = _report(s, inside, description="昨天的")
            old.reported_at = utcnow() - timedelta(days=3)
            b.overdue = True
            s.flush()
            advance(s, store, a.id, "closed")
            s.commit()
            leader = principal(s, "leader1")
            district = principal(s, "district1")
            k = command_service.kpis(s, leader, cached=False)
            kd = command_service.kpis(s, district, cached=False)
    finally:
        if not installed:
            rollup.uninstall()
    assert (k["today_intake"], k["today_closed"], k["overdue"], k["open"]) == (3, 1, 1, 3)
    assert k["intake_by_source"] == {"hotline": [0] * 10 + [1, 0, 0, 3]}
    assert sum(sum(v) for v in k["intake_by_category"].values()) == 4
    # the month's cohort: only a was filed (立案) and it is closed
    assert k["month"] == {"closed": 1, "due": 1} and k["close_rate"] == 100.0
    # district1 sees only its district: a (closed today) and old
    assert (kd["today_intake"], kd["today_closed"], kd["overdue"], kd["open"]) == (1, 1, 0, 1)
    assert c.id != b.id


def test_hexagons_and_details_respect_the_district_scope(city: Any) -> None:
    with city.session() as s:
        inside, outside, scope = _grids(s)
        a = _report(s, inside)
        b = _report(s, outside)
        b.overdue = True
        s.commit()
        district = principal(s, "district1")
        leader = principal(s, "leader1")
        mine = command_service.case_hexagons(s, district, 9)
        everyone = command_service.case_hexagons(s, leader, 9)
        assert [c["h3"] for c in mine] == [h3.int_to_str(a.h3)]
        assert {c["h3"] for c in everyone} == {h3.int_to_str(a.h3), h3.int_to_str(b.h3)}
        over = next(c for c in everyone if c["h3"] == h3.int_to_str(b.h3))
        assert (over["count"], over["state"]) == (1, "overdue")
        coarse = command_service.case_hexagons(s, leader, 7)
        assert sum(c["count"] for c in coarse) == 2
        assert all(h3.get_resolution(c["h3"]) == 7 for c in coarse)
        layers = command_service.hexagon_layers(everyone)
        assert len(layers["overdue"]["features"]) == 1
        assert len(layers["normal"]["features"]) == 1

        d_in = command_service.details_at(s, district, a.lon, a.lat, 16)
        assert d_in["place"]["grid"]["code"] == inside.code
        assert [c["number"] for c in d_in["cases"]] == [a.number]
        d_out = command_service.details_at(s, district, b.lon, b.lat, 16)
        assert "place" not in d_out and d_out["cases"] == []
        assert [
            c["number"] for c in command_service.details_at(s, leader, b.lon, b.lat, 16)["cases"]
        ] == [b.number]
        regions = command_service.region_layers(s, scope)
        codes = {f["properties"]["code"] for lv in regions.values() for f in lv["features"]}
        assert codes and all(code.startswith(scope) for code in codes)
        lat, lon = a.lat, a.lon
        assert (
            command_service.grid_layer(s, scope, command_service.view_bbox(lat, lon, 12), 12)
            is None
        )
        grids = command_service.grid_layer(s, scope, command_service.view_bbox(lat, lon, 15), 15)
        assert grids is not None
        gcodes = [f["properties"]["code"] for f in grids["features"]]
        assert inside.code in gcodes and all(g.startswith(scope) for g in gcodes)
        assert (
            command_service.component_points(s, None, command_service.view_bbox(lat, lon, 15), 15)
            == []
        )
        comps = command_service.component_points(
            s, None, command_service.view_bbox(lat, lon, 18), 18
        )
        x0, y0, x1, y1 = command_service.view_bbox(lat, lon, 18)
        assert all(x0 <= c["lon"] <= x1 and y0 <= c["lat"] <= y1 for c in comps)
        assert comps  # the demo city has components around every grid centre
        groups = command_service.component_layers(comps)
        assert sum(len(g["features"]) for g in groups) == len(comps)
        for i, g in enumerate(groups):
            assert all(f["properties"]["category_id"] % len(groups) == i for f in g["features"])


async def test_map_page_shows_kpis_and_click_details_for_a_district_leader(city: Any) -> None:
    with city.session() as s:
        inside, outside, _ = _grids(s)
        a = _report(s, inside)
        _report(s, outside)
        s.commit()
        number = a.number
    async with console_user(city) as user:
        await log_in(user, "district1")  # leaders land on /map
        await user.should_see(marker="map")
        await user.should_see("今日受理")
        kpi = user.find(marker="kpi-today-intake").elements.pop()
        assert kpi.text == "1"  # only the case in the district
        m = user.find(marker="map").elements.pop()
        # no basemap configured: no tile layer (no internet), only our vector layers
        assert all(layer.to_dict()["type"] == "geoJSON" for layer in m.layers)
        assert len(m.layers) >= 4  # districts, streets, communities, the case hexagon
        # click the case's place
        user.find(marker="map").trigger("mapClick", {"latlng": {"lat": a.lat, "lng": a.lon}})
        await user.should_see(marker=f"details-case-{number}")
        await user.should_see(marker="details-place")
        # the lifeline layers are on (no alarm: the facilities in their device colours), and
        # a click on a waterlogging point of the district names it with its state
        await user.should_see(marker="layer-lifeline")
        await user.should_see(marker="layer-ponding")
        names = {layer.to_dict()["args"][1]["style"]["color"] for layer in m.layers
                 if len(layer.to_dict()["args"]) > 1}  # fmt: skip
        assert "#2e7d32" in names  # online facilities / normal points
        with city.session() as s:
            from cityops.flood.models import WaterloggingPoint

            scope = principal(s, "district1").scope_region_code
            wp = s.scalars(
                select(WaterloggingPoint)
                .where(WaterloggingPoint.grid_code.like(f"{scope}%"))
                .order_by(WaterloggingPoint.code)
            ).first()
            assert wp is not None
            code, name, wlon, wlat = wp.code, wp.name, wp.lon, wp.lat
        user.find(marker="map").trigger("mapClick", {"latlng": {"lat": wlat, "lng": wlon}})
        await user.should_see(marker=f"details-{code}")
        await user.should_see(name)


async def test_map_is_refused_to_other_roles_and_uses_a_configured_basemap(
    city: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    async with console_user(city) as user:
        await log_in(user, "operator1")
        await user.open("/map")
        await user.should_see(marker="forbidden")
        await user.should_not_see(marker="map")
    monkeypatch.setenv("CITYOPS_BASEMAP_URL", "http://tiles.local/{z}/{x}/{y}.png")
    monkeypatch.setenv("CITYOPS_BASEMAP_ATTRIBUTION", "本地底图")
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    async with console_user(city) as user:
        await log_in(user, "commander1")
        await user.open("/map")
        m = user.find(marker="map").elements.pop()
        tiles = [ly.to_dict() for ly in m.layers if ly.to_dict()["type"] == "tileLayer"]
        assert tiles == [
            {
                "type": "tileLayer",
                "args": [
                    "http://tiles.local/{z}/{x}/{y}.png",
                    {"attribution": "本地底图", "maxZoom": 19},
                ],
            }
        ]


def test_lifeline_layers_sensors_alarms_and_waterlogging_points_in_scope(city: Any) -> None:
    """The map's lifeline layers: every monitored facility of the scope (coloured by device
    status), a methane alarm turns its facility red and lists it among the alarms, the
    waterlogging points of the flood board; a district leader gets only their district's;
    a dispatcher (no flood board) gets no waterlogging points rather than an error."""
    from cityops.flood.models import WaterloggingPoint
    from cityops.monitoring.models import Facility
    from cityops.monitoring.ui import LEVEL_COLOURS, STATUS_COLOURS
    from tests.monitoring_support import at, facility_of, ingest, reading

    ch4 = "GAS-VW-001-CH4"
    with city.session() as s:
        leader, district = principal(s, "leader1"), principal(s, "district1")
        scope = district.scope_region_code
        assert scope
        n_fac = s.scalar(select(func.count()).select_from(Facility))
        n_pts = s.scalar(select(func.count()).select_from(WaterloggingPoint))
        in_district = set(
            s.scalars(select(Facility.code).where(Facility.grid_code.like(f"{scope}%")))
        )
        pts_district = set(s.scalars(select(WaterloggingPoint.code).where(WaterloggingPoint.grid_code.like(f"{scope}%"))))  # fmt: skip
        lines = command_service.lifeline(s, leader, at(0))
        assert len(lines["sensors"]) == n_fac > 0 and len(lines["ponding"]) == n_pts > 0
        assert lines["alarms"] == []
        assert {x["colour"] for x in lines["sensors"]} <= set(STATUS_COLOURS.values())
        mine = command_service.lifeline(s, district, at(0))
        assert {x["code"] for x in mine["sensors"]} == in_district
        assert {x["code"] for x in mine["ponding"]} == pts_district
        assert 0 < len(in_district) < n_fac
        assert command_service.lifeline(s, principal(s, "dispatcher1"), at(0))["ponding"] == []
        fac = facility_of(s, ch4).code
    ingest(city, [reading(ch4, "ch4", at(2), 30.0)], at(2))  # 30 %LEL: 一级
    with city.session() as s:
        lines = command_service.lifeline(s, principal(s, "leader1"), at(3))
        [hit] = [x for x in lines["alarms"] if x["code"] == fac]
        assert hit["alarm_level"] == 1 and hit["colour"] == LEVEL_COLOURS[1]
        near = command_service.lifeline_near(lines, hit["lon"] + 0.0001, hit["lat"], 30.0)
        assert near[0]["code"] == fac and near[0]["distance_m"] < 12
        layers = command_service.marker_layers(lines["alarms"], 40.0, diamond=True)
        assert [len(fc["features"]) for fc in layers.values()] == [1]

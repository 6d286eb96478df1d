"""The demo city: exact tiling, codes, numbering, components in their grids, users, determinism."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator

import h3
import numpy as np
import pytest
import shapely
from sqlalchemy import func, select

from cityops.access.models import ROLES, User, UserRole
from cityops.access.passwords import verify_password
from cityops.core import db as dbmod
from cityops.core.audit import AuditLog
from cityops.core.errors import Conflict, Invalid
from cityops.geo.crs import GEOD
from cityops.geo.demo import (
    DEMO_PASSWORD,
    ROW_BAND_DEG,
    SCALES,
    Scale,
    build_demo,
    build_layout,
    is_valid_credit_code,
)
from cityops.geo.index import GridIndex, read_geo_version
from cityops.geo.models import (
    H3_RES,
    Category,
    CategoryTimeLimit,
    Component,
    GreenSpace,
    Grid,
    Poi,
    Region,
    ResponsibilityGrid,
    Unit,
    grid_inspectors,
    unit_regions,
)
from cityops.geo.service import chosen_standard
from tests.conftest import Templates, _use


@pytest.fixture
def other_db(templates: Templates, empty_template: str) -> Iterator[dbmod.Database]:
    yield from _use(templates, empty_template, "demo2")


def _geod_area(g: shapely.Geometry) -> float:
    return abs(GEOD.geometry_area_perimeter(g)[0])


def _regions(s, level: str) -> list[Region]:  # type: ignore[no-untyped-def]
    return list(s.scalars(select(Region).where(Region.level == level).order_by(Region.code)))


def _snapshot(d: dbmod.Database) -> dict[str, list[tuple[object, ...]]]:
    """Everything that must not change between two builds with the same seed."""
    with d.session() as s:
        unit_code = dict(s.execute(select(Unit.id, Unit.code)).all())
        return {
            "regions": list(
                s.execute(
                    select(
                        Region.code, Region.name, Region.level, Region.geom, Region.area_m2
                    ).order_by(Region.code)
                )
            ),
            "grids": list(
                s.execute(
                    select(Grid.code, Grid.geom, Grid.area_m2, Grid.management_level).order_by(
                        Grid.code
                    )
                )
            ),
            "units": list(
                s.execute(select(Unit.code, Unit.name, Unit.credit_code).order_by(Unit.code))
            ),
            "components": [
                (c, lon, lat, h, g, st, unit_code.get(o), unit_code.get(m), unit_code.get(cu))
                for c, lon, lat, h, g, st, o, m, cu in s.execute(
                    select(
                        Component.code,
                        Component.lon,
                        Component.lat,
                        Component.h3,
                        Component.grid_code,
                        Component.status,
                        Component.owner_unit_id,
                        Component.maintainer_unit_id,
                        Component.competent_unit_id,
                    ).order_by(Component.code)
                )
            ],
            "users": list(
                s.execute(
                    select(User.username, User.display_name, User.scope_region_code).order_by(
                        User.username
                    )
                )
            ),
            "inspectors": sorted(
                s.execute(
                    select(Grid.code, User.username)
                    .join(grid_inspectors, grid_inspectors.c.grid_id == Grid.id)
                    .join(User, User.id == grid_inspectors.c.user_id)
                )
            ),
        }


def test_same_seed_same_city_other_seed_other_city(city, db, other_db) -> None:
    build_demo(db, scale="small", seed=7)
    a, b = _snapshot(city), _snapshot(db)
    for key in a:
        assert a[key] == b[key], key
    build_demo(other_db, scale="small", seed=8)
    c = _snapshot(other_db)
    assert [g[1] for g in c["grids"]] != [g[1] for g in a["grids"]]


def test_small_city_counts_are_in_range(city) -> None:
    spec = SCALES["small"]
    with city.session() as s:
        by_level = dict(s.execute(select(Region.level, func.count()).group_by(Region.level)).all())
        assert by_level == {
            "city": 1,
            "district": spec.districts,
            "street": spec.streets,
            "community": spec.communities,
        }
        assert 1 <= spec.districts <= 2 and spec.streets == 3 and spec.communities == 8
        n_grids = s.scalar(select(func.count()).select_from(Grid))
        assert n_grids == spec.grids and 150 <= n_grids <= 300
        assert s.scalar(select(func.count()).select_from(Component)) == 3_000
        assert 30 <= s.scalar(select(func.count()).select_from(User)) <= 60
        assert s.scalar(select(func.count()).select_from(Unit)) >= 25
        assert s.scalar(select(func.count()).select_from(Poi)) >= 20
        assert s.scalar(select(func.count()).select_from(GreenSpace)) >= 10
        # every component category of the standard is used
        used = s.scalar(select(func.count(func.distinct(Component.category_id))))
        n_cat = s.scalar(
            select(func.count())
            .select_from(Category)
            .where(Category.standard == "gbt47678", Category.kind == "component")
        )
        assert used == n_cat == 153
        # mostly 完好, some 破损/丢失
        status = Counter(
            dict(s.execute(select(Component.status, func.count()).group_by(Component.status)).all())
        )
        assert status["完好"] > 0.9 * 3_000 and status["破损"] > 0 and status["丢失"] > 0
        # the city sits on Bozhou
        c = s.scalars(select(Region).where(Region.level == "city")).one()
        assert c.code == "341600"
        assert 115.6 < c.min_lon < c.max_lon < 116.0 and 33.7 < c.min_lat < c.max_lat < 34.0
        districts = [r.code for r in _regions(s, "district")]
        assert districts[0] == "341602"


def test_grids_tile_every_community_exactly(city) -> None:
    with city.session() as s:
        communities = _regions(s, "community")
        rows = s.execute(
            select(Grid.code, Grid.community_id, Grid.geom, Grid.area_m2).order_by(Grid.code)
        ).all()
    by_comm: dict[int, list[tuple[str, shapely.Geometry, float]]] = defaultdict(list)
    for code, cid, geom, area in rows:
        by_comm[cid].append((code, shapely.from_wkb(geom), area))
    assert len(by_comm) == len(communities)
    for comm in communities:
        cg = shapely.from_wkb(comm.geom)
        assert cg.geom_type == "Polygon" and cg.is_valid
        grids = by_comm[comm.id]
        geoms = np.array([g for _, g, _ in grids])
        assert shapely.is_valid(geoms).all()
        assert (shapely.get_type_id(geoms) == 3).all()  # Polygon
        # geodesic areas: the grids add up to the community (and match the stored values)
        areas = np.array([_geod_area(g) for g in geoms])
        np.testing.assert_allclose(areas, [a for _, _, a in grids], rtol=1e-9)
        assert areas.sum() == pytest.approx(_geod_area(cg), rel=1e-6)
        assert comm.area_m2 == pytest.approx(areas.sum(), rel=1e-6)
        assert areas.min() > 5_000 and areas.max() < 20_000  # 万米单元网格
        # no overlaps
        tree = shapely.STRtree(geoms)
        left, right = tree.query(geoms, predicate="intersects")
        pair = left < right
        overlap = shapely.area(shapely.intersection(geoms[left[pair]], geoms[right[pair]]))
        assert (overlap <= 1e-9 * shapely.area(geoms[left[pair]])).all()
        # the union is the community: no gaps
        u = shapely.union_all(geoms)
        assert shapely.area(shapely.symmetric_difference(u, cg)) <= 1e-9 * cg.area
        # bounding box columns
        assert (comm.min_lon, comm.min_lat, comm.max_lon, comm.max_lat) == pytest.approx(cg.bounds)


def test_regions_nest_and_are_unions_of_their_children(city) -> None:
    with city.session() as s:
        levels = {lv: _regions(s, lv) for lv in ("city", "district", "street", "community")}
        by_id = {r.id: r for rs in levels.values() for r in rs}
    for parent_level, child_level in (
        ("city", "district"),
        ("district", "street"),
        ("street", "community"),
    ):
        for parent in levels[parent_level]:
            kids = [r for r in levels[child_level] if r.parent_id == parent.id]
            assert kids, parent.code
            pg = shapely.from_wkb(parent.geom)
            assert pg.geom_type == "Polygon" and pg.is_valid
            u = shapely.union_all([shapely.from_wkb(k.geom) for k in kids])
            assert shapely.area(shapely.symmetric_difference(u, pg)) <= 1e-9 * pg.area
            assert sum(k.area_m2 for k in kids) == pytest.approx(parent.area_m2, rel=1e-6)
    for r in levels["street"] + levels["community"]:
        parent = by_id[r.parent_id]
        assert r.code.startswith(parent.code)
        assert len(r.code) == (9 if r.level == "street" else 12)
    for r in levels["district"]:
        assert len(r.code) == 6 and r.code.startswith("3416")
    city_geom = shapely.from_wkb(levels["city"][0].geom)
    assert shapely.get_num_interior_rings(city_geom) == 0


def test_grid_codes_and_west_east_north_south_numbering(city) -> None:
    with city.session() as s:
        comms = {r.id: r for r in _regions(s, "community")}
        rows = s.execute(select(Grid.code, Grid.community_id, Grid.geom).order_by(Grid.code)).all()
    seqs: dict[int, list[int]] = defaultdict(list)
    keys: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for code, cid, geom in rows:
        comm = comms[cid]
        assert len(code) == 15 and code.isdigit()
        assert code.startswith(comm.code)
        seqs[cid].append(int(code[12:]))
        c = shapely.centroid(shapely.from_wkb(geom))
        keys[cid].append((int((comm.max_lat - c.y) // ROW_BAND_DEG), c.x))
    for cid, seq in seqs.items():
        assert seq == list(range(1, len(seq) + 1))  # 001, 002, … without gaps
        k = keys[cid]
        assert k == sorted(k), comms[cid].code  # north → south by row band, west → east in a band
        assert k[0][0] == 0 and k[-1][0] > 0


def test_components_lie_in_their_grid(city) -> None:
    with city.session() as s:
        grids = s.execute(select(Grid.id, Grid.code, Grid.geom).order_by(Grid.code)).all()
        cats = dict(s.execute(select(Category.id, Category.code)).all())
        comps = s.execute(
            select(
                Component.code,
                Component.category_id,
                Component.lon,
                Component.lat,
                Component.h3,
                Component.grid_id,
                Component.grid_code,
                Component.owner_unit_id,
                Component.maintainer_unit_id,
                Component.competent_unit_id,
                Component.initial_date,
                Component.data_source,
            )
        ).all()
        gi = GridIndex.build(s)
    geoms = shapely.from_wkb([g.geom for g in grids])
    xs = np.array([c.lon for c in comps])
    ys = np.array([c.lat for c in comps])
    # brute force: lowest-code grid covering each point
    best = np.full(len(comps), -1)
    for i in range(len(geoms) - 1, -1, -1):
        best[shapely.intersects_xy(geoms[i], xs, ys)] = i
    assert (best >= 0).all()
    assert [c.grid_code for c in comps] == [grids[i].code for i in best]
    assert [c.grid_id for c in comps] == [grids[i].id for i in best]
    np.testing.assert_array_equal(gi.locate_many(xs, ys), best)
    serials: dict[tuple[str, str], list[int]] = defaultdict(list)
    for c in comps:
        assert len(c.code) == 17 and c.code.isdigit()
        assert c.code[:6] == c.grid_code[:6]
        assert c.code[6:11] == cats[c.category_id]
        serials[(c.code[:6], c.code[6:11])].append(int(c.code[11:]))
        assert c.h3 == h3.str_to_int(h3.latlng_to_cell(c.lat, c.lon, H3_RES))
        assert c.owner_unit_id and c.maintainer_unit_id and c.competent_unit_id
        assert c.initial_date is not None and c.data_source
    for seq in serials.values():
        assert sorted(seq) == list(range(1, len(seq) + 1))


def test_component_owners_follow_the_category(city) -> None:
    with city.session() as s:
        rows = s.execute(
            select(Category.name, Unit.name, Component.grid_code)
            .join(Component, Component.category_id == Category.id)
            .join(Unit, Unit.id == Component.owner_unit_id)
        ).all()
        maint = s.execute(
            select(Category.name, Unit.name, Unit.unit_type)
            .join(Component, Component.category_id == Category.id)
            .join(Unit, Unit.id == Component.maintainer_unit_id)
        ).all()
    owners: dict[str, set[str]] = defaultdict(set)
    for cat, unit, _ in rows:
        owners[cat].add(unit)
    assert owners["供水井盖"] == {"亳州市供水有限公司"}
    assert owners["燃气井盖"] == {"亳州市燃气有限公司"}
    assert owners["路灯"] == {"亳州市路灯管理所"}
    assert len(owners["通信井盖"]) >= 2  # shared between the carriers
    assert {u for c, u, t in maint if c == "供水井盖"} <= {
        u for c, u, t in maint if t == "养护单位" and "市政养护" in u
    }


def test_every_role_has_users_and_the_documented_logins_work(city) -> None:
    with city.session() as s:
        roles = Counter(r for (r,) in s.execute(select(UserRole.role)))
        users = {u.username: u for u in s.scalars(select(User))}
        districts = [r.code for r in _regions(s, "district")]
        streets = {r.code for r in _regions(s, "street")}
        unit_types = dict(s.execute(select(Unit.id, Unit.unit_type)).all())
    assert set(ROLES) <= set(roles)
    for name in (
        "admin",
        "leader1",
        "district1",
        "operator1",
        "shift1",
        "dispatcher1",
        "inspector1",
        "handler1",
        "reviewer1",
    ):
        assert name in users, name
    assert verify_password(users["admin"].password_hash, DEMO_PASSWORD)
    # one hash for everyone (argon2 is slow): the same password opens every account
    assert len({u.password_hash for u in users.values()}) == 1
    assert users["district1"].scope_region_code == districts[0]
    assert users["handler1"].scope_unit_only and users["handler1"].unit_id is not None
    for u in users.values():
        if u.username.startswith("inspector"):
            assert u.scope_region_code in streets
        if u.username.startswith("handler"):
            assert u.scope_unit_only and unit_types[u.unit_id] not in ("监督中心", "指挥中心")
        if u.username.startswith(
            ("operator", "shift", "dispatcher", "leader", "admin", "reviewer")
        ):
            assert u.scope_region_code is None


def test_every_grid_has_an_inspector_of_its_street(city) -> None:
    with city.session() as s:
        pairs = s.execute(
            select(Grid.code, User.username, User.scope_region_code)
            .join(grid_inspectors, grid_inspectors.c.grid_id == Grid.id)
            .join(User, User.id == grid_inspectors.c.user_id)
        ).all()
        all_grids = set(s.scalars(select(Grid.code)))
        inspectors = set(
            s.scalars(select(User.username).join(UserRole).where(UserRole.role == "inspector"))
        )
        rg = s.execute(
            select(Grid.code, ResponsibilityGrid.code, ResponsibilityGrid.region_code).join(
                ResponsibilityGrid, Grid.responsibility_grid_id == ResponsibilityGrid.id
            )
        ).all()
    assert {g for g, _, _ in pairs} == all_grids
    assert {u for _, u, _ in pairs} == inspectors
    for grid_code, _, scope in pairs:
        assert grid_code.startswith(scope)
    assert {g for g, _, _ in rg} == all_grids
    sizes = Counter(code for _, code, _ in rg)
    for grid_code, rg_code, region in rg:
        assert grid_code.startswith(region) and rg_code.startswith(region + "R")
    assert max(sizes.values()) <= 120


def test_units_have_valid_credit_codes_parents_and_regions(city) -> None:
    # a published real code checks the algorithm itself
    assert is_valid_credit_code("91440300708461136T")
    assert not is_valid_credit_code("91440300708461136A")
    with city.session() as s:
        units = list(s.scalars(select(Unit)))
        served = Counter(uid for (uid,) in s.execute(select(unit_regions.c.unit_id)))
    ids = {u.id for u in units}
    types = Counter(u.unit_type for u in units)
    assert {"主管部门", "权属单位", "养护单位", "处置单位", "监督中心", "指挥中心"} <= set(types)
    assert len({u.credit_code for u in units}) == len(units)
    for u in units:
        assert u.credit_code and is_valid_credit_code(u.credit_code), (u.name, u.credit_code)
        assert u.credit_code[2:6] == "3416"
        assert u.parent_id is None or u.parent_id in ids
        assert served[u.id] >= 1
    names = {u.name for u in units}
    for n in ("亳州市城市管理局", "亳州市供水有限公司", "亳州市排水有限公司", "亳州市燃气有限公司"):
        assert n in names


def test_categories_settings_and_time_limits(city) -> None:
    with city.session() as s:
        assert chosen_standard(s) == "gbt47678"
        cats = list(s.scalars(select(Category)))
        limits = s.execute(
            select(
                Category.name,
                CategoryTimeLimit.stage,
                CategoryTimeLimit.urgency,
                CategoryTimeLimit.amount,
                CategoryTimeLimit.unit,
            )
            .join(Category, Category.id == CategoryTimeLimit.category_id)
            .where(Category.standard == "gbt47678")
        ).all()
    std = Counter(c.standard for c in cats)
    assert std["gbt47678"] == 403 and std["gbt30428"] > 0
    for c in cats:
        if c.kind == "component":
            assert c.handler_mode == "component_owner"
        assert c.filing_standard and c.closing_standard
        assert c.default_urgency in ("特急", "紧急", "一般")
    got = {(n, st, u): (a, unit) for n, st, u, a, unit in limits}
    assert got[("供水井盖", "handle", "紧急")] == (2, "natural_hours")
    assert got[("暴露垃圾", "handle", None)] == (4, "working_hours")


def test_pois_green_spaces_audit_and_geo_version(city) -> None:
    with city.session() as s:
        pois = list(s.scalars(select(Poi)))
        greens = list(s.scalars(select(GreenSpace)))
        comm = {r.code: shapely.from_wkb(r.geom) for r in _regions(s, "community")}
        audit_rows = {
            a.entity: a.after for a in s.scalars(select(AuditLog).where(AuditLog.action == "demo"))
        }
        version = read_geo_version(s)
        n_components = s.scalar(select(func.count()).select_from(Component))
    assert {p.kind for p in pois} == {"toilet", "park", "parking"}
    city_geom = shapely.union_all(list(comm.values()))
    for p in pois:
        assert p.name and p.address and p.attrs
        assert p.h3 == h3.str_to_int(h3.latlng_to_cell(p.lat, p.lon, H3_RES))
        assert city_geom.covers(shapely.Point(p.lon, p.lat))
    for g in greens:
        geom = shapely.from_wkb(g.geom)
        assert geom.is_valid and comm[g.community_code].covers(geom)
        assert g.area_m2 == pytest.approx(_geod_area(geom), rel=1e-9)
    assert audit_rows["components"]["count"] == n_components
    for entity in ("regions", "units", "grids", "users", "pois", "green_spaces"):
        assert audit_rows[entity]["count"] > 0
    assert version["grids"] >= 1 and version["components"] >= 1


def test_demo_refuses_a_city_database_and_unknown_scales(city, db) -> None:
    with pytest.raises(Conflict, match="empty database"):
        build_demo(city, scale="small")
    with pytest.raises(Invalid, match="scale"):
        build_demo(db, scale="huge")


def test_layout_has_exactly_the_requested_grids_and_groups() -> None:
    # the generator is exact for any size: `large` relies on it for 51,495 grids
    assert SCALES["large"].grids == 51_495 and SCALES["large"].communities == 1_047
    assert SCALES["large"].streets == 99 and SCALES["large"].components == 2_580_000
    spec = Scale(
        **{
            **SCALES["small"].__dict__,
            "grids": 1_234,
            "districts": 3,
            "streets": 7,
            "communities": 25,
        }
    )
    lay = build_layout(spec, np.random.default_rng(11))
    assert len(lay.grid_codes) == 1_234 == len(set(lay.grid_codes))
    assert len(lay.comm_geoms) == 25 and len(lay.street_geoms) == 7 and len(lay.district_geoms) == 3
    assert all(
        g.geom_type == "Polygon" for g in (*lay.comm_geoms, *lay.street_geoms, *lay.district_geoms)
    )
    assert lay.grid_area.sum() == pytest.approx(_geod_area(lay.city_geom), rel=1e-6)

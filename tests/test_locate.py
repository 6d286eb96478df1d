"""locate() agrees with brute-force shapely, including points on shared edges and corners."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy import select

from cityops.core.errors import Invalid, NotFound
from cityops.geo import crs
from cityops.geo.index import GridIndex, bump_geo_version, indexes_for
from cityops.geo.models import Grid, Region
from cityops.geo.service import locate, locate_many, nearest_components


def _brute_force(geoms: np.ndarray, lons: np.ndarray, lats: np.ndarray) -> np.ndarray:
    """Lowest-code grid covering each point (geoms are in code order), -1 if none."""
    out = np.full(len(lons), -1, dtype=np.int64)
    for i, (x, y) in enumerate(zip(lons, lats, strict=True)):
        hits = np.flatnonzero(shapely.intersects_xy(geoms, x, y))
        if hits.size:
            out[i] = hits.min()
    return out


def _test_points(geoms: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """10,000 points: random in and around the city, on shared edges, and on shared corners."""
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    pad = 0.01
    n_rand, n_edge, n_corner = 6000, 2000, 2000
    rx = rng.uniform(minx - pad, maxx + pad, n_rand)
    ry = rng.uniform(miny - pad, maxy + pad, n_rand)
    # vertices of grid rings: every interior vertex is a corner shared by 2+ grids
    coords = shapely.get_coordinates(shapely.get_exterior_ring(geoms))
    corners = coords[rng.integers(0, len(coords), n_corner)]
    # points on edges: the midpoint of a random ring segment, computed exactly as GEOS does
    seg_start = rng.integers(0, len(coords) - 1, n_edge)
    a, b = coords[seg_start], coords[seg_start + 1]
    mids = (a + b) / 2.0
    xs = np.concatenate([rx, mids[:, 0], corners[:, 0]])
    ys = np.concatenate([ry, mids[:, 1], corners[:, 1]])
    return xs, ys, f"{n_rand} random, {n_edge} edge midpoints, {n_corner} corners"


def test_locate_agrees_with_brute_force_on_10000_points(city) -> None:
    with city.session() as s:
        index = indexes_for(s).grids(s)
        city_outline = shapely.union_all(index.geoms)
        xs, ys, _ = _test_points(index.geoms, np.random.default_rng(2026))
        expected = _brute_force(index.geoms, xs, ys)
        bulk = index.locate_many(xs, ys)
        single = np.array([index.locate_idx(x, y) for x, y in zip(xs, ys, strict=True)])
    assert len(xs) == 10_000
    np.testing.assert_array_equal(bulk, expected)
    np.testing.assert_array_equal(single, expected)
    # every point inside (or on the boundary of) the city gets exactly one grid
    # every point inside the city (away from its outer edge by a micrometre) gets a grid;
    # every point outside gets none
    inner = shapely.buffer(city_outline, -1e-11)
    outer = shapely.buffer(city_outline, 1e-11)
    inside = shapely.intersects_xy(inner, xs, ys)
    outside = ~shapely.intersects_xy(outer, xs, ys)
    assert 500 < inside[:6000].sum() < 6000  # random points fall both inside and outside
    assert inside[6000:].mean() > 0.75  # most grid edges and corners are inside the city
    assert (bulk[inside] >= 0).all()
    assert (bulk[outside] == -1).all()
    # shared corners really are shared: many corner points are covered by 3+ grids
    multi = [
        np.count_nonzero(shapely.intersects_xy(index.geoms, x, y))
        for x, y in zip(xs[-200:], ys[-200:], strict=True)
    ]
    assert max(multi) >= 3


def test_locate_returns_the_whole_hierarchy(city) -> None:
    with city.session() as s:
        grid = s.scalars(select(Grid).order_by(Grid.code).limit(1)).one()
        p = shapely.point_on_surface(shapely.from_wkb(grid.geom))
        got = locate(s, p.x, p.y)
        community = s.get(Region, grid.community_id)
        assert community is not None
        district = s.scalars(select(Region).where(Region.code == grid.code[:6])).one()
    assert got["grid"]["code"] == grid.code
    assert got["grid"]["id"] == grid.id
    assert got["community"] == {"code": community.code, "name": community.name}
    assert got["street"]["code"] == grid.code[:9]
    assert got["district"] == {"code": district.code, "name": district.name}
    assert got["grid"]["area_m2"] == pytest.approx(grid.area_m2, abs=0.1)


def test_gcj02_and_bd09_input_locates_the_same_grid(city) -> None:
    with city.session() as s:
        grid = s.scalars(select(Grid).order_by(Grid.code.desc()).limit(1)).one()
        p = shapely.point_on_surface(shapely.from_wkb(grid.geom))
        glon, glat = crs.from_wgs84(p.x, p.y, "gcj02")
        blon, blat = crs.from_wgs84(p.x, p.y, "bd09")
        assert locate(s, glon, glat, "gcj02")["grid"]["code"] == grid.code
        assert locate(s, blon, blat, "bd09")["grid"]["code"] == grid.code
        # the raw GCJ-02 numbers taken as WGS84 land hundreds of metres away
        assert crs.distance_m(glon, glat, p.x, p.y) > 300


def test_outside_point_is_a_clear_not_found(city) -> None:
    with city.session() as s, pytest.raises(NotFound, match="outside every unit grid"):
        locate(s, 100.0, 30.0)


def test_bad_input_is_refused_with_the_field(city) -> None:
    with city.session() as s:
        with pytest.raises(Invalid) as e:
            locate(s, 115.7, 95.0)
        assert e.value.details["field"] == "lat"
        with pytest.raises(Invalid) as e:
            locate(s, 115.7, 33.8, "mercator")
        assert e.value.details["field"] == "crs"


def test_locate_many_returns_ids_and_codes(city) -> None:
    with city.session() as s:
        rows = s.execute(select(Grid.id, Grid.code, Grid.geom).order_by(Grid.id).limit(50)).all()
        pts = shapely.point_on_surface(shapely.from_wkb([r.geom for r in rows]))
        lons, lats = shapely.get_x(pts), shapely.get_y(pts)
        ids, codes = locate_many(s, np.append(lons, 100.0), np.append(lats, 30.0))
    assert ids[:-1].tolist() == [r.id for r in rows]
    assert codes[:-1] == [r.code for r in rows]
    assert ids[-1] == -1 and codes[-1] is None


def test_grid_index_is_rebuilt_when_grids_change(city) -> None:
    with city.session() as s:
        holder = indexes_for(s)
        before = holder.grids(s)
        grid = s.scalars(select(Grid).order_by(Grid.code).limit(1)).one()
        p = shapely.point_on_surface(shapely.from_wkb(grid.geom))
        # move the grid far away: the point must no longer locate to it
        grid.geom = shapely.to_wkb(shapely.affinity.translate(shapely.from_wkb(grid.geom), 5.0, 0))
        bump_geo_version(s, grids=True)
        holder.invalidate()
        after = holder.grids(s)
        assert after is not before
        idx = after.locate_idx(p.x, p.y)
        assert idx == -1 or after.codes[idx] != grid.code


def test_nearest_components_matches_brute_force_geodesic(city) -> None:
    with city.session() as s:
        comp_index = indexes_for(s).components(s)
        rng = np.random.default_rng(5)
        sample = rng.integers(0, len(comp_index), 40)
        for i in sample:
            lon = float(comp_index.lons[i]) + rng.normal(0, 0.001)
            lat = float(comp_index.lats[i]) + rng.normal(0, 0.001)
            d_all = crs.GEOD.inv(
                np.full(len(comp_index), lon),
                np.full(len(comp_index), lat),
                comp_index.lons,
                comp_index.lats,
            )[2]
            best = int(np.argmin(d_all))
            got = comp_index.nearest(lon, lat, limit=1)
            assert got[0][0] == int(comp_index.ids[best])
            assert got[0][1] == pytest.approx(d_all[best], abs=1e-6)
            # by category: brute force within the category
            cat = int(comp_index.category_ids[i])
            mask = comp_index.category_ids == cat
            best_c = int(comp_index.ids[mask][np.argmin(d_all[mask])])
            assert comp_index.nearest(lon, lat, category_id=cat, limit=1)[0][0] == best_c
        # the service adds the component's details and honours the radius
        lon, lat = float(comp_index.lons[0]), float(comp_index.lats[0])
        res = nearest_components(s, lon, lat, radius_m=50, limit=3)
        assert res and res[0]["distance_m"] == pytest.approx(0.0, abs=0.01)
        assert all(r["distance_m"] <= 50 for r in res)
        assert res == sorted(res, key=lambda r: r["distance_m"])


def test_grid_index_on_an_empty_city_locates_nothing(db) -> None:
    with db.session() as s:
        g = GridIndex.build(s)
        assert len(g) == 0
        assert g.locate_idx(115.78, 33.85) == -1
        assert g.locate_many(np.array([115.78]), np.array([33.85])).tolist() == [-1]

"""Deterministic demo city (演示城市) around 亳州市 (Bozhou, 115.78 E, 33.85 N).

``build_demo(db, scale, seed)`` fills an empty, migrated database with a complete city:
regions (市 → 区 → 街道 → 社区), unit grids (单元网格) and responsibility grids (责任网格),
units (部门/单位) with 统一社会信用代码, the GB/T 47678 categories with their settings and a
few time limits, coded components (部件) with their owners, users of every role, POIs and
green spaces. The same seed always gives the same city (codes, geometry, owners).

Geometry is built bottom-up so that it tiles exactly:

1. In metres (a transverse Mercator centred on the city), seeds on a jittered triangular
   lattice (one seed per ~10,000 m²) cover a region larger than the city; their Voronoi
   cells are computed once, so neighbouring cells share bit-identical edges.
2. The city is grown from the centre over the cell adjacency graph, by an irregular
   star-shaped outline (with a little noise), until it holds exactly the wanted number of
   cells; enclosed holes are filled. Cells are never clipped.
3. Cells are grouped into communities, communities into streets, streets into districts
   (weighted k-means, then every group is made connected over shared edges), so every
   region is a single polygon that is exactly the union of its unit grids.
4. Every vertex is converted to lon/lat point by point (the same vertex always gives the
   same lon/lat, so shared edges stay shared); region polygons are unions of the lon/lat
   grids; areas are geodesic (WGS84).

Codes: district 6 digits (real 341602 谯城区, 341621 涡阳县, 341622 蒙城县, 341623 利辛县;
invented 3416xx codes beyond those), street = district + 3 digits, community = street + 3,
unit grid = community + 3-digit sequence numbered west → east, north → south: grids are
sorted by the row band ``(community max_lat − centroid lat) // ROW_BAND_DEG`` (north
first), then by centroid longitude. Components: 17 digits = district (6) + category (5) +
serial (6) per district and category; each component's grid is the lowest-code grid that
covers it (the rule of :class:`cityops.geo.index.GridIndex`).

Demo users all have the password :data:`DEMO_PASSWORD`; usernames are listed in the
returned summary (``admin``, ``leader1``, ``district1``, ``operator1``, ``shift1``,
``dispatcher1``, ``inspector1``, ``handler1``, ``reviewer1``, …).

Bulk tables are written with bulk statements (PostgreSQL ``COPY``; SQLite ``executemany``)
and one :func:`cityops.core.audit.record` summary row per table.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from cityops.access.models import ROLES, User, UserRole
from cityops.access.passwords import hash_password
from cityops.core import audit
from cityops.core.bulk import bulk_insert
from cityops.core.db import Database, utcnow
from cityops.core.errors import Conflict, Invalid
from cityops.data import demo_names as names
from cityops.geo.crs import GEOD
from cityops.geo.index import bump_geo_version, count_rows, local_transformer
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
from cityops.geo.service import load_categories

LON0, LAT0 = 115.78, 33.85
CITY_CODE, CITY_NAME = names.CITY_CODE, names.CITY_NAME
DEMO_PASSWORD = "demo-pass-2026"
#: Target area of one unit grid (万米单元网格).
GRID_AREA_M2 = 10_000.0
#: Height of a numbering row band for unit grids inside a community (≈ 100 m).
ROW_BAND_DEG = 0.0009
#: Unit grids per responsibility grid (责任网格), roughly.
GRIDS_PER_RESPONSIBILITY_GRID = 45

Array = NDArray[Any]


@dataclass(frozen=True)
class Scale:
    grids: int
    districts: int
    streets: int
    communities: int
    components: int
    toilets: int
    parks: int
    parking: int
    green_spaces: int
    street_units: bool
    leaders: int
    operators: int
    shift_leaders: int
    dispatchers: int
    #: 0 = one inspector per responsibility grid.
    inspectors_per_street: int
    handlers_per_unit: int
    reviewers: int


SCALES: dict[str, Scale] = {
    "small": Scale(
        grids=240,
        districts=2,
        streets=3,
        communities=8,
        components=3_000,
        toilets=12,
        parks=6,
        parking=12,
        green_spaces=16,
        street_units=False,
        leaders=2,
        operators=3,
        shift_leaders=2,
        dispatchers=3,
        inspectors_per_street=3,
        handlers_per_unit=1,
        reviewers=3,
    ),
    "city": Scale(
        grids=5_000,
        districts=4,
        streets=20,
        communities=80,
        components=100_000,
        toilets=120,
        parks=60,
        parking=120,
        green_spaces=300,
        street_units=False,
        leaders=3,
        operators=8,
        shift_leaders=4,
        dispatchers=6,
        inspectors_per_street=4,
        handlers_per_unit=1,
        reviewers=10,
    ),
    "large": Scale(
        grids=51_495,
        districts=10,
        streets=99,
        communities=1_047,
        components=2_580_000,
        toilets=1_200,
        parks=600,
        parking=1_200,
        green_spaces=3_000,
        street_units=True,
        leaders=6,
        operators=40,
        shift_leaders=12,
        dispatchers=24,
        inspectors_per_street=0,
        handlers_per_unit=2,
        reviewers=40,
    ),
}


# --------------------------------------------------------------------------------------
# 统一社会信用代码 (GB 32100) with the GB 11714 organisation-code check digit
# --------------------------------------------------------------------------------------

CREDIT_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = [pow(3, i, 31) for i in range(17)]
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


#: Days from 2008-01-01 (first initial_date) to 2025-06-01 (first change_date).
_CHANGE_EPOCH_OFFSET = 6361


def org_code_check(body: str) -> str:
    """Check character of an 8-character organisation code body (GB 11714)."""
    total = sum(int(ch, 36) * w for ch, w in zip(body, _ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def credit_code_check(first17: str) -> str:
    """Check character of a 统一社会信用代码 (GB 32100) from its first 17 characters."""
    total = sum(CREDIT_CHARS.index(ch) * w for ch, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return CREDIT_CHARS[(31 - total % 31) % 31]


def is_valid_credit_code(code: str) -> bool:
    return (
        len(code) == 18
        and all(ch in CREDIT_CHARS for ch in code)
        and org_code_check(code[8:16]) == code[16]
        and credit_code_check(code[:17]) == code[17]
    )


def make_credit_code(kind: str, region: str, rng: np.random.Generator) -> str:
    """A valid-looking code: ``kind`` = 登记管理部门码 + 机构类别码 (11 机关, 12 事业单位, 91 企业)."""
    digits = "0123456789"
    if kind == "91" and rng.random() < 0.5:
        alnum = "0123456789ABCDEFGHJKLMNPQRTUWXY"
        body = "MA" + "".join(alnum[i] for i in rng.integers(0, len(alnum), 6))
    else:
        body = "".join(digits[i] for i in rng.integers(0, 10, 8))
    org = body + org_code_check(body)
    first17 = kind + region + org
    return first17 + credit_code_check(first17)


# --------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------


def _kmeans(
    pts: Array, w: Array, k: int, rng: np.random.Generator, iters: int = 30, balance_iters: int = 40
) -> NDArray[np.int64]:
    """Weighted k-means (k-means++ start); every label 0..k-1 is used."""
    n = len(pts)
    if k >= n:
        return np.arange(n, dtype=np.int64)
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if k <= 200:  # k-means++
        centres = np.empty((k, 2))
        centres[0] = pts[int(rng.choice(n, p=w / w.sum()))]
        d2 = ((pts - centres[0]) ** 2).sum(1)
        for j in range(1, k):
            p = w * d2
            s = p.sum()
            i = int(rng.choice(n, p=p / s)) if s > 0 else int(rng.integers(n))
            centres[j] = pts[i]
            d2 = np.minimum(d2, ((pts - centres[j]) ** 2).sum(1))
    else:  # many groups over a near-uniform density: a weighted sample is a fine start
        centres = pts[rng.choice(n, size=k, replace=False, p=w / w.sum())].astype(np.float64)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iters):
        dist, lab = cKDTree(centres).query(pts)
        labels = lab.astype(np.int64)
        cnt = np.bincount(labels, weights=w, minlength=k)
        sx = np.bincount(labels, weights=w * pts[:, 0], minlength=k)
        sy = np.bincount(labels, weights=w * pts[:, 1], minlength=k)
        new = centres.copy()
        ok = cnt > 0
        new[ok, 0] = sx[ok] / cnt[ok]
        new[ok, 1] = sy[ok] / cnt[ok]
        for e in np.flatnonzero(~ok):
            far = int(np.argmax(dist))
            new[e] = pts[far]
            dist[far] = 0.0
        if np.allclose(new, centres, rtol=0, atol=1e-6):
            break
        centres = new
    labels = cKDTree(centres).query(pts)[1].astype(np.int64)
    # even out the group sizes: a power diagram (additive weight per centre) nudged towards
    # equal totals, re-centred as it goes; groups stay compact
    target = w.sum() / k
    kk = min(k, 8)
    d, _ = cKDTree(centres).query(pts, k=2)
    scale = float(np.median(d[:, 1] ** 2))
    off = np.zeros(k)
    rows = np.arange(n)
    for _ in range(balance_iters):
        d, j = cKDTree(centres).query(pts, k=kk)
        labels = j[rows, np.argmin(d**2 - off[j], axis=1)].astype(np.int64)
        cnt = np.bincount(labels, weights=w, minlength=k)
        off += 0.25 * scale * (target - cnt) / target
        ok = cnt > 0
        for i in (0, 1):
            centres[ok, i] = np.bincount(labels, weights=w * pts[:, i], minlength=k)[ok] / cnt[ok]
    # any empty label takes the point farthest from its own centre (in a multi-point group)
    while True:
        cnt = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(cnt == 0)
        if empty.size == 0:
            return labels
        d = ((pts - centres[labels]) ** 2).sum(1)
        d[cnt[labels] <= 1] = -1.0
        labels[int(np.argmax(d))] = empty[0]
        centres[empty[0]] = pts[int(np.argmax(d))]


def _connect(
    labels: NDArray[np.int64], k: int, ea: Array, eb: Array, elen: Array
) -> NDArray[np.int64]:
    """Reassign stray pieces so that each label's nodes are connected in the graph."""
    labels = labels.copy()
    n = len(labels)
    for _ in range(1000):
        same = labels[ea] == labels[eb]
        g = coo_matrix((np.ones(int(same.sum())), (ea[same], eb[same])), shape=(n, n))
        ncomp, comp = connected_components(g, directed=False)
        if ncomp == k:
            return labels
        size = np.bincount(comp)
        comp_label = np.empty(ncomp, dtype=np.int64)
        comp_label[comp] = labels
        order = np.lexsort((-size, comp_label))
        head = np.ones(ncomp, dtype=bool)
        head[1:] = comp_label[order[1:]] != comp_label[order[:-1]]
        main = np.zeros(ncomp, dtype=bool)
        main[order[head]] = True
        # border length between each stray piece and each neighbouring main piece
        src = np.concatenate([ea, eb])
        dst = np.concatenate([eb, ea])
        length = np.concatenate([elen, elen])
        cs, cd = comp[src], comp[dst]
        m = (~main[cs]) & main[cd] & (cs != cd)
        if not m.any():  # pragma: no cover - impossible for a connected graph
            raise RuntimeError("cannot make the regions connected")
        keys = cs[m] * ncomp + cd[m]
        uk, inv = np.unique(keys, return_inverse=True)
        tot = np.bincount(inv, weights=length[m])
        piece = uk // ncomp
        o = np.lexsort((-tot, piece))
        firsts = o[np.r_[True, piece[o[1:]] != piece[o[:-1]]]]
        target = np.arange(ncomp)
        target[piece[firsts]] = uk[firsts] % ncomp
        labels = comp_label[target[comp]]
    raise RuntimeError("cannot make the regions connected")  # pragma: no cover


def _partition(
    pts: Array, w: Array, k: int, ea: Array, eb: Array, elen: Array, rng: np.random.Generator
) -> NDArray[np.int64]:
    return _connect(_kmeans(pts, w, k, rng), k, ea, eb, elen)


def _edges(cells: Array) -> tuple[Array, Array, Array]:
    """Pairs of cells sharing an edge (exactly the same two vertices) and the edge length."""
    coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(cells), return_index=True)
    same = idx[1:] == idx[:-1]
    p0, p1, ci = coords[:-1][same], coords[1:][same], idx[:-1][same]
    swap = (p0[:, 0] > p1[:, 0]) | ((p0[:, 0] == p1[:, 0]) & (p0[:, 1] > p1[:, 1]))
    a = np.where(swap[:, None], p1, p0)
    b = np.where(swap[:, None], p0, p1)
    e = np.ascontiguousarray(np.column_stack([a, b]))
    _, inv, cnt = np.unique(
        e.view(np.dtype((np.void, 32))).ravel(), return_inverse=True, return_counts=True
    )
    inv = inv.ravel()
    order = np.argsort(inv, kind="stable")
    pairs = order[cnt[inv[order]] == 2].reshape(-1, 2)
    ea, eb = ci[pairs[:, 0]], ci[pairs[:, 1]]
    elen = np.hypot(e[pairs[:, 0], 2] - e[pairs[:, 0], 0], e[pairs[:, 0], 3] - e[pairs[:, 0], 1])
    ok = ea != eb
    return ea[ok], eb[ok], elen[ok]


def _neighbours(n: int, ea: Array, eb: Array) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(n)]
    for a, b in zip(ea.tolist(), eb.tolist(), strict=True):
        out[a].append(b)
        out[b].append(a)
    return out


def _grow(n_target: int, prio: Array, nbrs: list[list[int]], start: int) -> list[int]:
    """Cells in the order a region grows from ``start``, lowest priority first."""
    seen = np.zeros(len(prio), dtype=bool)
    seen[start] = True
    heap = [(float(prio[start]), start)]
    order: list[int] = []
    p = prio.tolist()
    while heap and len(order) < n_target:
        _, i = heapq.heappop(heap)
        order.append(i)
        for j in nbrs[i]:
            if not seen[j]:
                seen[j] = True
                heapq.heappush(heap, (p[j], j))
    return order


def _holes(sel: Array, n: int, ea: Array, eb: Array, outside: int) -> Array:
    """Unselected cells that the selection encloses (not connected to ``outside``)."""
    free = ~sel
    m = free[ea] & free[eb]
    g = coo_matrix((np.ones(int(m.sum())), (ea[m], eb[m])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    return np.flatnonzero(free & (comp != comp[outside]))


@dataclass
class Layout:
    """The generated city geometry, every array in unit-grid code order."""

    xy: Array  # metric seed points
    rho: Array  # normalised distance from the centre (0 centre … ~1 outline)
    grids: Array  # lon/lat polygons
    grid_codes: list[str]
    grid_area: Array
    grid_comm: NDArray[np.int64]
    ea: Array
    eb: Array
    elen: Array
    district_codes: list[str]
    district_names: list[str]
    street_codes: list[str]
    street_names: list[str]
    street_district: NDArray[np.int64]
    comm_codes: list[str]
    comm_names: list[str]
    comm_street: NDArray[np.int64]
    district_geoms: Array
    street_geoms: Array
    comm_geoms: Array
    city_geom: Any


def _reading_order(cx: Array, cy: Array, band: float) -> Array:
    """Indices sorted north → south by bands of ``band``, then west → east."""
    top = cy.max() if len(cy) else 0.0
    rows = np.floor((top - cy) / band)
    return np.lexsort((cx, rows))


def _geod_area(geoms: Array) -> Array:
    """Geodesic (WGS84) area in m² of lon/lat polygons (holes subtracted)."""
    if all(shapely.get_num_interior_rings(geoms) == 0):
        coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
        bounds = np.searchsorted(idx, np.arange(len(geoms) + 1))
        f = GEOD.polygon_area_perimeter
        x, y = coords[:, 0], coords[:, 1]
        return np.array(
            [abs(f(x[a:b], y[a:b])[0]) for a, b in pairwise(bounds.tolist())],
            dtype=np.float64,
        )
    return np.array([abs(GEOD.geometry_area_perimeter(g)[0]) for g in geoms], dtype=np.float64)


def _union_each(geoms: Array, labels: Array, k: int) -> Array:
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(k + 1))
    out = np.empty(k, dtype=object)
    for j in range(k):
        u = shapely.union_all(geoms[order[bounds[j] : bounds[j + 1]]])
        if u.geom_type != "Polygon" or not u.is_valid:
            raise RuntimeError(f"region {j} is not a single valid polygon: {u.geom_type}")
        out[j] = u
    return out


def build_layout(spec: Scale, rng: np.random.Generator) -> Layout:
    n = spec.grids
    a = float(np.sqrt(GRID_AREA_M2 * 2 / np.sqrt(3)))  # triangular lattice: a*h = area
    h = a * np.sqrt(3) / 2
    r0 = float(np.sqrt(n * GRID_AREA_M2 / np.pi))
    ks = np.arange(2, 6)
    amp = rng.uniform(0.03, 0.10, ks.size) / np.sqrt(ks / 2)
    phase = rng.uniform(0, 2 * np.pi, ks.size)
    rmax = r0 * (1 + amp.sum()) * 1.3 + 6 * a
    nr, nc = int(2 * rmax / h) + 1, int(2 * rmax / a) + 1
    jj, ii = np.meshgrid(np.arange(nc), np.arange(nr))
    x = (-rmax + jj * a + (ii % 2) * a / 2).ravel()
    y = (-rmax + ii * h).ravel()
    x = x + rng.uniform(-0.2, 0.2, x.size) * a
    y = y + rng.uniform(-0.2, 0.2, y.size) * h
    theta = np.arctan2(y, x)
    r_outline = r0 * (1 + (amp[:, None] * np.cos(ks[:, None] * theta + phase[:, None])).sum(0))
    noise = rng.normal(0.0, 0.3 * a, x.size)
    rho_all = np.hypot(x, y) / r_outline
    keep = rho_all < 1.3
    x, y, rho_all = x[keep], y[keep], rho_all[keep]
    prio = (np.hypot(x, y) + noise[keep]) / r_outline[keep]
    box = shapely.box(-2 * rmax, -2 * rmax, 2 * rmax, 2 * rmax)
    vor = shapely.voronoi_polygons(
        shapely.multipoints(np.column_stack([x, y])), extend_to=box, ordered=True
    )
    cells = np.asarray(shapely.get_parts(vor))
    if len(cells) != len(x):  # pragma: no cover - GEOS contract
        raise RuntimeError("Voronoi diagram lost cells")
    m = len(cells)
    ea, eb, elen = _edges(cells)
    nbrs = _neighbours(m, ea, eb)

    # grow the city from the centre, then fill any enclosed hole
    order = np.array(_grow(n, prio, nbrs, int(np.argmin(np.hypot(x, y)))), dtype=np.int64)
    if len(order) != n:  # pragma: no cover
        raise RuntimeError("the candidate region is too small")
    # a hole (unchosen cells enclosed by the city) is filled; as many of the last-grown
    # cells (on the rim) are given back, so the count stays exact and the city connected
    outside = int(np.argmax(rho_all))
    keep_order = order.tolist()
    for _ in range(20):
        sel = np.zeros(m, dtype=bool)
        sel[keep_order] = True
        holes = _holes(sel, m, ea, eb, outside)
        if holes.size == 0:
            break
        keep_order = holes.tolist() + keep_order[: n - holes.size]
    else:  # pragma: no cover
        raise RuntimeError("cannot build a city outline without holes")
    chosen = np.flatnonzero(sel)
    if rho_all[chosen].max() > 1.2:  # pragma: no cover
        raise RuntimeError("the city reached the edge of the candidate region")

    # sub-graph of the chosen cells
    remap = np.full(m, -1, dtype=np.int64)
    remap[chosen] = np.arange(n)
    both = (remap[ea] >= 0) & (remap[eb] >= 0)
    gea, geb, glen = remap[ea[both]], remap[eb[both]], elen[both]
    g = coo_matrix((np.ones(len(gea)), (gea, geb)), shape=(n, n))
    if connected_components(g, directed=False)[0] != 1:  # pragma: no cover
        raise RuntimeError("the city is not connected")
    xy = np.column_stack([x[chosen], y[chosen]])
    rho = rho_all[chosen]
    cells_m = cells[chosen]

    # communities → streets → districts, each group connected
    ones = np.ones(n)
    comm = _partition(xy, ones, spec.communities, gea, geb, glen, rng)
    c_cnt = np.bincount(comm, minlength=spec.communities).astype(np.float64)
    c_xy = np.column_stack(
        [np.bincount(comm, weights=xy[:, i], minlength=spec.communities) / c_cnt for i in (0, 1)]
    )
    cea, ceb, clen = _group_edges(comm, gea, geb, glen)
    street = _partition(c_xy, c_cnt, spec.streets, cea, ceb, clen, rng)
    s_cnt = np.bincount(street, weights=c_cnt, minlength=spec.streets)
    s_xy = np.column_stack(
        [
            np.bincount(street, weights=c_xy[:, i] * c_cnt, minlength=spec.streets) / s_cnt
            for i in (0, 1)
        ]
    )
    sea, seb, slen = _group_edges(street, cea, ceb, clen)
    district = _partition(s_xy, s_cnt, spec.districts, sea, seb, slen, rng)
    d_cnt = np.bincount(district, weights=s_cnt, minlength=spec.districts)
    d_xy = np.column_stack(
        [
            np.bincount(district, weights=s_xy[:, i] * s_cnt, minlength=spec.districts) / d_cnt
            for i in (0, 1)
        ]
    )

    # lon/lat, vertex by vertex
    tr = local_transformer(LON0, LAT0)
    coords = shapely.get_coordinates(cells_m)
    lon, lat = tr.transform(coords[:, 0], coords[:, 1], direction="INVERSE")
    grids_ll = shapely.orient_polygons(
        shapely.set_coordinates(cells_m.copy(), np.column_stack([lon, lat])), exterior_cw=False
    )

    # codes: districts (centre first, then clockwise from north), streets, communities
    d_first = int(np.argmin(np.hypot(d_xy[:, 0], d_xy[:, 1])))
    ang = np.mod(np.arctan2(d_xy[:, 0], d_xy[:, 1]), 2 * np.pi)
    ang[d_first] = -1.0
    d_order = np.argsort(ang, kind="stable")
    d_rank = np.empty(spec.districts, dtype=np.int64)
    d_rank[d_order] = np.arange(spec.districts)
    district_codes = [names.DISTRICTS[i][0] for i in range(spec.districts)]
    district_names = [names.DISTRICTS[i][1] for i in range(spec.districts)]

    street_codes: list[str] = [""] * spec.streets
    for d in d_order:
        members = np.flatnonzero(district == d)
        o = members[_reading_order(s_xy[members, 0], s_xy[members, 1], 2000.0)]
        for j, s in enumerate(o, start=1):
            street_codes[s] = f"{district_codes[d_rank[d]]}{j:03d}"
    comm_codes: list[str] = [""] * spec.communities
    for s in range(spec.streets):
        members = np.flatnonzero(street == s)
        o = members[_reading_order(c_xy[members, 0], c_xy[members, 1], 800.0)]
        for j, c in enumerate(o, start=1):
            comm_codes[c] = f"{street_codes[s]}{j:03d}"

    # unit grids: row bands (north first) of the lon/lat centroid, then west → east
    cent = shapely.centroid(grids_ll)
    cx, cy = shapely.get_x(cent), shapely.get_y(cent)
    max_lat = shapely.bounds(grids_ll)[:, 3]
    top = np.full(spec.communities, -np.inf)
    np.maximum.at(top, comm, max_lat)
    grid_codes: list[str] = [""] * n
    for c in range(spec.communities):
        members = np.flatnonzero(comm == c)
        keys = sorted(
            (int((float(top[c]) - float(cy[i])) // ROW_BAND_DEG), float(cx[i]), int(i))
            for i in members
        )
        if len(keys) > 999:  # pragma: no cover
            raise RuntimeError("a community has more than 999 unit grids")
        for j, (_, _, i) in enumerate(keys, start=1):
            grid_codes[i] = f"{comm_codes[c]}{j:03d}"

    # reorder everything by code
    gperm = np.array(sorted(range(n), key=grid_codes.__getitem__), dtype=np.int64)
    ginv = np.empty(n, dtype=np.int64)
    ginv[gperm] = np.arange(n)
    cperm = np.array(sorted(range(spec.communities), key=comm_codes.__getitem__), dtype=np.int64)
    cinv = np.empty(spec.communities, dtype=np.int64)
    cinv[cperm] = np.arange(spec.communities)
    sperm = np.array(sorted(range(spec.streets), key=street_codes.__getitem__), dtype=np.int64)
    sinv = np.empty(spec.streets, dtype=np.int64)
    sinv[sperm] = np.arange(spec.streets)

    grids_sorted = grids_ll[gperm]
    grid_comm = cinv[comm[gperm]]
    comm_street = sinv[street[cperm]]
    street_district = d_rank[district[sperm]]
    comm_geoms = _union_each(grids_sorted, grid_comm, spec.communities)
    street_geoms = _union_each(comm_geoms, comm_street, spec.streets)
    district_geoms = _union_each(street_geoms, street_district, spec.districts)
    city_geom = shapely.union_all(district_geoms)
    if city_geom.geom_type != "Polygon" or shapely.get_num_interior_rings(city_geom) != 0:
        raise RuntimeError("the city outline is not a simple polygon")  # pragma: no cover

    street_names, comm_names = _region_names(spec, rng)
    return Layout(
        xy=xy[gperm],
        rho=rho[gperm],
        grids=grids_sorted,
        grid_codes=[grid_codes[i] for i in gperm],
        grid_area=_geod_area(grids_sorted),
        grid_comm=grid_comm,
        ea=ginv[gea],
        eb=ginv[geb],
        elen=glen,
        district_codes=district_codes,
        district_names=district_names,
        street_codes=[street_codes[i] for i in sperm],
        street_names=street_names,
        street_district=street_district,
        comm_codes=[comm_codes[i] for i in cperm],
        comm_names=comm_names,
        comm_street=comm_street,
        district_geoms=district_geoms,
        street_geoms=street_geoms,
        comm_geoms=comm_geoms,
        city_geom=city_geom,
    )


def _group_edges(labels: Array, ea: Array, eb: Array, elen: Array) -> tuple[Array, Array, Array]:
    """Edges between groups (summed border length) from edges between members."""
    la, lb = labels[ea], labels[eb]
    m = la != lb
    lo, hi = np.minimum(la[m], lb[m]), np.maximum(la[m], lb[m])
    k = int(labels.max()) + 1
    key, inv = np.unique(lo * k + hi, return_inverse=True)
    tot = np.bincount(inv.ravel(), weights=elen[m])
    return key // k, key % k, tot


def _region_names(spec: Scale, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    stems = list(names.STREET_STEMS)
    if spec.streets > len(stems):  # pragma: no cover
        raise RuntimeError("not enough street names")
    street_names = [f"{stems[i]}街道" for i in range(spec.streets)]
    combos = [f"{p}{q}社区" for p in names.COMMUNITY_A for q in names.COMMUNITY_B]
    pick = rng.permutation(len(combos))[: spec.communities]
    return street_names, [combos[i] for i in pick]


# --------------------------------------------------------------------------------------
# Units, categories, components
# --------------------------------------------------------------------------------------

#: City-level units: key, name, unit type, parent key, credit-code kind (11/12/91).
CITY_UNITS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("CGJ", "亳州市城市管理局", "主管部门", None, "11"),
    ("JDZX", "亳州市数字化城市管理监督中心", "监督中心", "CGJ", "12"),
    ("ZHZX", "亳州市城市运行管理指挥中心", "指挥中心", "CGJ", "12"),
    ("ZJJ", "亳州市住房和城乡建设局", "主管部门", None, "11"),
    ("JJZD", "亳州市公安局交通警察支队", "主管部门", None, "11"),
    ("YLJ", "亳州市林业和园林局", "主管部门", None, "11"),
    ("STHJ", "亳州市生态环境局", "主管部门", None, "11"),
    ("JTJ", "亳州市交通运输局", "主管部门", None, "11"),
    ("SZC", "亳州市市政设施管理处", "养护单位", "CGJ", "12"),
    ("LDS", "亳州市路灯管理所", "养护单位", "CGJ", "12"),
    ("WATER", "亳州市供水有限公司", "权属单位", None, "91"),
    ("DRAIN", "亳州市排水有限公司", "权属单位", None, "91"),
    ("GAS", "亳州市燃气有限公司", "权属单位", None, "91"),
    ("POWER", "国网安徽省电力有限公司亳州供电公司", "权属单位", None, "91"),
    ("CT", "中国电信股份有限公司亳州分公司", "权属单位", None, "91"),
    ("CM", "中国移动通信集团安徽有限公司亳州分公司", "权属单位", None, "91"),
    ("CU", "中国联合网络通信有限公司亳州市分公司", "权属单位", None, "91"),
    ("HEAT", "亳州市热力有限公司", "权属单位", None, "91"),
    ("BUS", "亳州市公共交通集团有限公司", "权属单位", None, "91"),
    ("PARK", "亳州市城市停车管理有限公司", "权属单位", None, "91"),
)
#: Per district: key, name pattern ({d} district name, {s} its short name), type, parent, kind.
DISTRICT_UNITS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("CGJ", "{d}城市管理局", "处置单位", "CGJ", "11"),
    ("HWS", "{d}环境卫生管理所", "处置单位", "d:CGJ", "12"),
    ("ZFDD", "{d}城市管理行政执法大队", "处置单位", "d:CGJ", "12"),
    ("SZYH", "亳州市{s}市政养护工程有限公司", "养护单位", None, "91"),
    ("YLLH", "亳州市{s}园林绿化工程有限公司", "养护单位", None, "91"),
)
#: Per street (``large`` only).
STREET_UNITS: tuple[tuple[str, str, str, str | None, str], ...] = (
    ("JDB", "{d}{t}办事处", "处置单位", None, "11"),
    ("ZD", "{d}城市管理行政执法大队{t}中队", "处置单位", "d:ZFDD", "12"),
    ("BJ", "亳州市{u}环卫保洁有限公司", "养护单位", None, "91"),
)

_TEL = ("CT", "CM", "CU")
# component category code → (competent, owner, maintainer); "d:" = the district's unit
_OWNER_RULES: list[tuple[set[str], tuple[str, str, str]]] = [
    ({"01001", "01013", "01019", "01024", "01025", "01063", "01068"}, ("CGJ", "WATER", "d:SZYH")),
    (
        {"01002", "01003", "01004", "01018", "01026", "01067", "01071", "01072", "01073", "03003"},
        ("CGJ", "DRAIN", "d:SZYH"),
    ),
    ({"01005", "01017", "01028", "01029", "01030", "01047", "01048"}, ("ZJJ", "POWER", "POWER")),
    ({"01006", "01037", "01038", "01039", "01060"}, ("CGJ", "LDS", "LDS")),
    ({"01007", "01008", "01009", "01027", "01031", "01041", "01062"}, ("ZJJ", "TEL", "TEL")),
    ({"01010", "01061"}, ("ZJJ", "HEAT", "HEAT")),
    ({"01011", "01021", "01036", "01049", "01057", "05003"}, ("ZJJ", "GAS", "GAS")),
    (
        {
            "01012",
            "01015",
            "01050",
            "01051",
            "01066",
            "02010",
            "02011",
            "02014",
            "02015",
            "02016",
            "02017",
            "02018",
            "02019",
            "02020",
            "02022",
            "02023",
            "02033",
            "02039",
            "02043",
        },
        ("JJZD", "JJZD", "d:SZYH"),
    ),
    ({"01020", "01032", "02004", "02005"}, ("JTJ", "BUS", "BUS")),
    ({"02001", "02002", "02003", "02025", "02026", "02027", "02041"}, ("JJZD", "PARK", "PARK")),
    ({"02028", "02031", "02032", "02042", "02044"}, ("JTJ", "JTJ", "d:SZYH")),
    (
        {"02006", "02007", "02008", "02009", "02024", "02029", "02012", "02013"},
        ("CGJ", "SZC", "d:SZYH"),
    ),
    ({"03001", "03002", "03004", "03005", "03014", "03015", "03016"}, ("CGJ", "d:HWS", "d:HWS")),
    ({"03006", "03007", "03008"}, ("CGJ", "d:CGJ", "d:ZFDD")),
    ({"03009", "03010", "03011", "03012", "03013"}, ("STHJ", "STHJ", "STHJ")),
    ({"05002"}, ("ZJJ", "ZJJ", "d:SZYH")),
]
_DEFAULT_OWNERS = ("CGJ", "SZC", "d:SZYH")
_GREEN_OWNERS = ("YLJ", "YLJ", "d:YLLH")

#: Relative frequency of component categories (default :data:`_DEFAULT_WEIGHT`).
_WEIGHTS: dict[str, float] = {
    # 井盖 and pipes
    "01001": 5, "01002": 8, "01003": 8, "01004": 10, "01005": 4, "01006": 2.5, "01007": 5,
    "01008": 0.8, "01009": 1.5, "01010": 1, "01011": 2.5, "01012": 0.6, "01013": 1.5,
    "01014": 1, "01017": 1.5, "01018": 1.5, "01023": 0.8, "01026": 1,
    # poles, lamps, boxes
    "01027": 1.5, "01028": 2, "01030": 4, "01031": 2.5, "01037": 12, "01038": 1.5,
    "01039": 3, "01046": 0.8, "01048": 1.5, "01050": 2, "01054": 1.2, "01060": 1, "01065": 1,
    # traffic
    "02003": 1, "02004": 1.2, "02010": 6, "02012": 2, "02014": 1.2, "02017": 4, "02020": 2,
    "02021": 6, "02022": 1.5, "02025": 1.5, "02027": 2, "02034": 1.5, "02038": 10, "02043": 1,
    # sanitation, signs
    "03001": 0.5, "03005": 8, "03006": 2.5, "03007": 5, "03008": 1, "03016": 1,
    # green
    "04002": 20, "04003": 3, "04004": 3, "04005": 1, "04007": 2, "04008": 2, "04011": 6,
    "04013": 1.5,
    # rare
    "01047": 0.1, "01049": 0.3, "01056": 0.05, "01062": 0.5, "01063": 0.03, "01068": 0.05,
    "01071": 0.05, "01072": 0.05, "02001": 0.3, "02002": 0.05, "02006": 0.05, "02007": 0.05,
    "02008": 0.03, "02009": 0.05, "02028": 0.02, "02029": 0.02, "02031": 0.02, "02032": 0.05,
    "02042": 0.02, "02044": 0.02, "03009": 0.03, "03010": 0.05, "03011": 0.03, "04001": 0.1,
    "05002": 0.1, "05003": 0.05, "05009": 0.05,
}  # fmt: skip
_DEFAULT_WEIGHT = 0.25
_LOSABLE = (
    "井盖",
    "箅子",
    "盖板",
    "牌",
    "桩",
    "垃圾箱",
    "座椅",
    "护栏",
    "隔离体",
    "防撞桶",
    "纸箱",
)
_STATUS_P = (0.94, 0.035, 0.015, 0.01)  # 完好, 破损, 丢失, 废弃

# Stage names of the case workflow used for time limits.
#: (category kind, code, stage, urgency, amount, unit) — GUIDE §4 observed defaults.
_TIME_LIMITS: list[tuple[str, str, str, str | None, float, str]] = []
for _k in ("component", "matter"):
    for _c in ("01001", "01002", "01003", "01004", "01005", "01011", "01018"):  # 井盖/箅子
        _TIME_LIMITS += [
            (_k, _c, "handle", "特急", 2, "natural_hours"),
            (_k, _c, "handle", "紧急", 2, "natural_hours"),
            (_k, _c, "handle", None, 6, "natural_hours"),
        ]
    _TIME_LIMITS.append((_k, "01037", "handle", None, 1, "working_days"))  # 路灯
    _TIME_LIMITS.append((_k, "04013", "handle", None, 5, "working_days"))  # 绿地养护
_TIME_LIMITS += [
    ("matter", "06010", "handle", None, 4, "working_hours"),  # 暴露垃圾
    ("matter", "06017", "handle", None, 4, "working_hours"),  # 绿地脏乱
    ("matter", "08005", "handle", None, 4, "working_hours"),  # 施工废弃料
    ("matter", "06012", "handle", None, 2, "working_hours"),  # 道路不洁
    ("matter", "06011", "handle", None, 3, "working_days"),  # 积存垃圾渣土
    ("matter", "06001", "handle", None, 15, "working_days"),  # 私搭乱建
    ("matter", "06029", "handle", None, 2, "natural_hours"),  # 露天烧烤
]
_URGENT = {"01011": "特急", "01021": "特急"}  # gas covers


def _category_settings(cat: Category) -> dict[str, Any]:
    name = cat.name
    well = "井盖" in name or "箅子" in name
    urgency = _URGENT.get(cat.code, "紧急" if well else "一般")
    if cat.kind == "component":
        return {
            "id": cat.id,
            "handler_mode": "component_owner",
            "handler_unit_type": None,
            "default_urgency": urgency,
            "filing_standard": f"{name}破损、缺失、移位或功能异常，影响使用或存在安全隐患",
            "closing_standard": f"{name}修复或更换完毕，恢复完好，现场无安全隐患",
        }
    # matters of the component big classes (01–05: "…异常") go to the component's owner
    owner_based = cat.big_class_code in ("01", "02", "03", "04", "05")
    return {
        "id": cat.id,
        "handler_mode": "component_owner" if owner_based else "unit_type",
        "handler_unit_type": None if owner_based else "处置单位",
        "default_urgency": urgency,
        "filing_standard": f"现场发现{name}，经核实属实",
        "closing_standard": f"{name}问题已处置完毕，现场恢复整洁有序",
    }


# --------------------------------------------------------------------------------------
# Bulk writing
# --------------------------------------------------------------------------------------


def _insert(session: Session, model: Any, rows: list[dict[str, Any]], chunk: int = 5_000) -> None:
    for i in range(0, len(rows), chunk):
        session.execute(insert(model), rows[i : i + chunk])


def _bbox(geoms: Array) -> Array:
    return shapely.bounds(geoms)


def _person_name(rng: np.random.Generator) -> str:
    s = names.SURNAMES[int(rng.integers(len(names.SURNAMES)))]
    return s + names.GIVEN_NAMES[int(rng.integers(len(names.GIVEN_NAMES)))]


def _phone(rng: np.random.Generator) -> str:
    prefix = ("138", "139", "158", "186", "187", "135", "152")[int(rng.integers(7))]
    return prefix + "".join(str(d) for d in rng.integers(0, 10, 8))


def _sample_in_grids(
    grids: Array, which: NDArray[np.int64], rng: np.random.Generator, shrink: float = 0.96
) -> tuple[Array, Array]:
    """Uniform random points inside the given (convex) grids, kept off their edges."""
    coords, idx = shapely.get_coordinates(shapely.get_exterior_ring(grids), return_index=True)
    starts = np.searchsorted(idx, np.arange(len(grids)))
    nv = np.bincount(idx, minlength=len(grids)) - 1  # closing vertex repeated
    # fan triangles (v0, vi, vi+1), i = 1 … nv-2
    ntri = nv - 2
    tri_grid = np.repeat(np.arange(len(grids)), ntri)
    local = np.arange(ntri.sum()) - np.repeat(np.cumsum(ntri) - ntri, ntri)
    v0 = coords[starts[tri_grid]]
    v1 = coords[starts[tri_grid] + local + 1]
    v2 = coords[starts[tri_grid] + local + 2]
    area = 0.5 * np.abs(
        (v1[:, 0] - v0[:, 0]) * (v2[:, 1] - v0[:, 1])
        - (v2[:, 0] - v0[:, 0]) * (v1[:, 1] - v0[:, 1])
    )
    cum = np.cumsum(area)
    tri_start = np.cumsum(ntri) - ntri
    before = np.where(tri_start > 0, cum[np.maximum(tri_start - 1, 0)], 0.0)
    total = cum[tri_start + ntri - 1] - before
    target = before[which] + rng.random(len(which)) * total[which]
    t = np.minimum(np.searchsorted(cum, target, side="right"), len(cum) - 1)
    t = np.clip(t, tri_start[which], tri_start[which] + ntri[which] - 1)
    r1, r2 = rng.random(len(which)), rng.random(len(which))
    flip = r1 + r2 > 1
    r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
    p = v0[t] + r1[:, None] * (v1[t] - v0[t]) + r2[:, None] * (v2[t] - v0[t])
    vsum = np.add.reduceat(coords[:, :2], starts) - coords[starts + nv]  # drop closing vertex
    centre = vsum / nv[:, None]
    c = centre[which]
    p = c + shrink * (p - c)
    return p[:, 0], p[:, 1]


def _locate(grids: Array, lons: Array, lats: Array, hint: Array | None = None) -> NDArray[np.int64]:
    """Lowest grid index (code order) covering each point, -1 outside: GridIndex's rule.

    With ``hint`` (a grid per point), points strictly inside their hinted grid take it
    directly: grids tile without overlap, so no other grid can cover such a point. The rest
    go through the STRtree.
    """
    out = np.full(len(lons), -1, dtype=np.int64)
    todo = np.arange(len(lons))
    if hint is not None:
        shapely.prepare(grids)
        inside = shapely.contains_xy(grids[hint], lons, lats)
        out[inside] = hint[inside]
        todo = np.flatnonzero(~inside)
    if todo.size:
        tree = shapely.STRtree(grids)
        best = np.full(todo.size, np.iinfo(np.int64).max, dtype=np.int64)
        pairs = tree.query(shapely.points(lons[todo], lats[todo]), predicate="intersects")
        if pairs.shape[1]:
            np.minimum.at(best, pairs[0], pairs[1])
        best[best == np.iinfo(np.int64).max] = -1
        out[todo] = best
    return out


def _h3(lons: Array, lats: Array) -> list[int]:
    f = h3i.latlng_to_cell
    return [f(y, x, H3_RES) for x, y in zip(lons.tolist(), lats.tolist(), strict=True)]


def _iso_dates(start: str, days: int) -> list[str]:
    """ISO dates ``start`` + 0 … days-1."""
    d0 = date.fromisoformat(start).toordinal()
    return [date.fromordinal(d0 + i).isoformat() for i in range(days)]


# --------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------


def _ids(session: Session, col_id: Any, col_code: Any) -> dict[str, int]:
    """code → id of the rows just inserted."""
    return {c: int(i) for c, i in session.execute(select(col_code, col_id))}


def _check_empty(session: Session) -> None:
    for table in ("regions", "grids", "components", "users"):
        if count_rows(session, table):
            raise Conflict(
                f"the database already holds {table}: the demo city needs an empty database",
                table=table,
            )


def build_demo(db: Database, scale: str = "small", seed: int = 7) -> dict[str, Any]:
    """Build the demo city into an empty, migrated database; return a JSON-able summary."""
    if scale not in SCALES:
        raise Invalid(
            f"unknown demo scale {scale!r}: expected one of {', '.join(SCALES)}",
            field="scale",
            value=scale,
        )
    spec = SCALES[scale]
    with db.session() as s:
        _check_empty(s)  # fail fast, before the geometry
    t_start = last = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        timings[name] = round(now - last, 3)
        last = now

    # independent streams, so that changing one part does not move the others
    geo_rng, unit_rng, comp_rng, user_rng, poi_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)
    )
    layout = build_layout(spec, geo_rng)
    lap("geometry")
    password_hash = hash_password(DEMO_PASSWORD)  # once: argon2 is deliberately slow
    lap("password_hash")

    with db.session() as s:
        _check_empty(s)
        counts: dict[str, int] = {}
        region_ids = _write_regions(s, layout, counts)
        lap("regions")
        units = _write_units(s, spec, layout, region_ids, unit_rng, counts)
        lap("units")
        cats = _write_categories(s, counts)
        lap("categories")
        grid_ids, rg_of_grid, rg_codes = _write_grids(s, layout, region_ids, units, geo_rng, counts)
        lap("grids")
        comp_stats = _write_components(s, spec, layout, grid_ids, units, cats, comp_rng, counts)
        lap("components")
        logins = _write_users(
            s, spec, layout, units, rg_of_grid, rg_codes, grid_ids, password_hash, user_rng, counts
        )
        lap("users")
        _write_pois_and_green(s, spec, layout, units, poi_rng, counts)
        lap("pois_green")
        bump_geo_version(s, grids=True, components=True)
    lap("commit")
    # the other contexts' demo data (lifeline devices, flood command), on the committed city
    from cityops.flood.demo import seed_demo as seed_flood
    from cityops.monitoring.demo import seed_demo as seed_monitoring

    for name, seeder, offset in (("monitoring", seed_monitoring, 101), ("flood", seed_flood, 202)):
        with db.session() as s:
            counts.update(seeder(s, scale, np.random.default_rng(seed + offset)))
        lap(name)

    minx, miny, maxx, maxy = layout.city_geom.bounds
    return {
        "scale": scale,
        "seed": seed,
        "city": {
            "code": CITY_CODE,
            "name": CITY_NAME,
            "center": {"lon": LON0, "lat": LAT0},
            "bbox": [round(minx, 6), round(miny, 6), round(maxx, 6), round(maxy, 6)],
            "area_km2": round(float(layout.grid_area.sum()) / 1e6, 3),
        },
        "districts": [
            {"code": c, "name": n}
            for c, n in zip(layout.district_codes, layout.district_names, strict=True)
        ],
        "counts": counts,
        "components": comp_stats,
        "login": logins,
        "seconds": round(time.perf_counter() - t_start, 2),
        "timings": timings,
    }


def _write_regions(s: Session, L: Layout, counts: dict[str, int]) -> dict[str, int]:
    def rows(
        level: str, codes: list[str], nm: list[str], geoms: Array, parents: list[int | None]
    ) -> list[dict[str, Any]]:
        bb = _bbox(geoms)
        areas = _geod_area(geoms)
        wkb = shapely.to_wkb(geoms)
        return [
            {
                "code": codes[i],
                "name": nm[i],
                "level": level,
                "parent_id": parents[i],
                "geom": bytes(wkb[i]),
                "area_m2": float(areas[i]),
                "min_lon": float(bb[i, 0]),
                "min_lat": float(bb[i, 1]),
                "max_lon": float(bb[i, 2]),
                "max_lat": float(bb[i, 3]),
            }
            for i in range(len(codes))
        ]

    ids: dict[str, int] = {}
    plan: list[tuple[str, list[str], list[str], Array, Any]] = [
        ("city", [CITY_CODE], [CITY_NAME], np.array([L.city_geom], dtype=object), lambda i: None),
        ("district", L.district_codes, L.district_names, L.district_geoms, lambda i: ids[CITY_CODE]),
        ("street", L.street_codes, L.street_names, L.street_geoms,
         lambda i: ids[L.district_codes[L.street_district[i]]]),
        ("community", L.comm_codes, L.comm_names, L.comm_geoms,
         lambda i: ids[L.street_codes[L.comm_street[i]]]),
    ]  # fmt: skip
    for level, codes, nm, geoms, parent in plan:
        _insert(s, Region, rows(level, codes, nm, geoms, [parent(i) for i in range(len(codes))]))
        ids.update(_ids(s, Region.id, Region.code))
    counts["regions"] = len(ids)
    counts["districts"] = len(L.district_codes)
    counts["streets"] = len(L.street_codes)
    counts["communities"] = len(L.comm_codes)
    audit.record(
        s,
        "demo",
        "regions",
        after={
            "count": len(ids),
            "districts": len(L.district_codes),
            "streets": len(L.street_codes),
            "communities": len(L.comm_codes),
        },
    )
    return ids


@dataclass
class _Units:
    ids: dict[str, int]  # key ("CGJ", "341602:HWS", "341602001:JDB") → id
    handling: list[str]  # keys of units that get handlers, in order
    rows: list[dict[str, Any]]


def _write_units(
    s: Session,
    spec: Scale,
    L: Layout,
    region_ids: dict[str, int],
    rng: np.random.Generator,
    counts: dict[str, int],
) -> _Units:
    all_districts = [region_ids[c] for c in L.district_codes]
    units: list[dict[str, Any]] = []  # with "key", "parent_key", "regions"
    for key, name, utype, parent, kind in CITY_UNITS:
        units.append(
            {
                "key": key,
                "code": f"{CITY_CODE}-{key}",
                "name": name,
                "unit_type": utype,
                "parent_key": parent,
                "kind": kind,
                "region": CITY_CODE,
                "regions": all_districts,
            }
        )
    for dcode, dname in zip(L.district_codes, L.district_names, strict=True):
        short = dname[:-1]
        for key, pattern, utype, parent, kind in DISTRICT_UNITS:
            pk = (
                None
                if parent is None
                else (f"{dcode}:{parent[2:]}" if parent.startswith("d:") else parent)
            )
            units.append(
                {
                    "key": f"{dcode}:{key}",
                    "code": f"{dcode}-{key}",
                    "name": pattern.format(d=dname, s=short),
                    "unit_type": utype,
                    "parent_key": pk,
                    "kind": kind,
                    "region": dcode,
                    "regions": [region_ids[dcode]],
                }
            )
    if spec.street_units:
        for scode, sname, d in zip(L.street_codes, L.street_names, L.street_district, strict=True):
            dcode, dname = L.district_codes[d], L.district_names[d]
            for key, pattern, utype, parent, kind in STREET_UNITS:
                pk = None if parent is None else f"{dcode}:{parent[2:]}"
                units.append(
                    {
                        "key": f"{scode}:{key}",
                        "code": f"{scode}-{key}",
                        "name": pattern.format(d=dname, t=sname, u=sname[:-2]),
                        "unit_type": utype,
                        "parent_key": pk,
                        "kind": kind,
                        "region": dcode,
                        "regions": [region_ids[scode]],
                    }
                )
    used: set[str] = set()
    for u in units:
        while True:
            cc = make_credit_code(u["kind"], u["region"], rng)
            if cc not in used:
                used.add(cc)
                u["credit_code"] = cc
                break
        u["phone"] = "0558-" + "".join(str(d) for d in rng.integers(0, 10, 7))

    ids: dict[str, int] = {}
    pending = units
    while pending:
        layer = [u for u in pending if u["parent_key"] is None or u["parent_key"] in ids]
        if not layer:  # pragma: no cover
            raise RuntimeError("unit parents form a cycle")
        _insert(
            s,
            Unit,
            [
                {
                    "code": u["code"],
                    "name": u["name"],
                    "unit_type": u["unit_type"],
                    "parent_id": ids.get(u["parent_key"]) if u["parent_key"] else None,
                    "credit_code": u["credit_code"],
                    "phone": u["phone"],
                    "active": True,
                }
                for u in layer
            ],
        )
        by_code = _ids(s, Unit.id, Unit.code)
        for u in layer:
            ids[u["key"]] = by_code[u["code"]]
        done = {id(u) for u in layer}
        pending = [u for u in pending if id(u) not in done]
    ur = [{"unit_id": ids[u["key"]], "region_id": r} for u in units for r in u["regions"]]
    _insert(s, unit_regions, ur)
    counts["units"] = len(units)
    audit.record(s, "demo", "units", after={"count": len(units), "unit_regions": len(ur)})
    # handlers: district units first (handler1 works for the first district's 城管局)
    levels = sorted(units, key=lambda u: {6: 0, 9: 1}.get(u["key"].find(":"), 2))
    handling = [u["key"] for u in levels if u["unit_type"] not in ("监督中心", "指挥中心")]
    return _Units(ids=ids, handling=handling, rows=units)


def _write_categories(s: Session, counts: dict[str, int]) -> list[Category]:
    load_categories(s, "gbt30428", choose=False)
    load_categories(s, "gbt47678")
    cats = list(
        s.scalars(select(Category).order_by(Category.standard, Category.kind, Category.code))
    )
    settings = [_category_settings(c) for c in cats]
    s.execute(update(Category), settings)
    by_key = {(c.kind, c.code): c.id for c in cats if c.standard == "gbt47678"}
    limits = [
        {
            "category_id": by_key[(k, code)],
            "stage": stage,
            "urgency": urg,
            "amount": float(amount),
            "unit": unit,
        }
        for k, code, stage, urg, amount, unit in _TIME_LIMITS
        if (k, code) in by_key
    ]
    _insert(s, CategoryTimeLimit, limits)
    from cityops.worktime.service import bump_version

    bump_version(s)  # the clock caches category limits
    audit.record(s, "demo", "categories", after={"settings": len(settings), "standard": "gbt47678"})
    audit.record(s, "demo", "category_time_limits", after={"count": len(limits)})
    s.expire_all()
    counts["categories"] = len(cats)
    counts["category_time_limits"] = len(limits)
    return [c for c in cats if c.standard == "gbt47678" and c.kind == "component"]


def _write_grids(
    s: Session,
    L: Layout,
    region_ids: dict[str, int],
    units: _Units,
    rng: np.random.Generator,
    counts: dict[str, int],
) -> tuple[NDArray[np.int64], NDArray[np.int64], list[str]]:
    n = len(L.grid_codes)
    # responsibility grids: ~45 unit grids of one street each
    grid_street = L.comm_street[L.grid_comm]
    rg_of_grid = np.full(n, -1, dtype=np.int64)
    rg_codes: list[str] = []
    rg_rows: list[dict[str, Any]] = []
    for st, (scode, sname) in enumerate(zip(L.street_codes, L.street_names, strict=True)):
        members = np.flatnonzero(grid_street == st)
        k = max(1, min(99, round(len(members) / GRIDS_PER_RESPONSIBILITY_GRID)))
        remap = np.full(n, -1, dtype=np.int64)
        remap[members] = np.arange(len(members))
        m = (remap[L.ea] >= 0) & (remap[L.eb] >= 0)
        lab = _partition(
            L.xy[members], np.ones(len(members)), k, remap[L.ea[m]], remap[L.eb[m]], L.elen[m], rng
        )
        cxy = np.array([L.xy[members[lab == j]].mean(0) for j in range(k)])
        order = _reading_order(cxy[:, 0], cxy[:, 1], 500.0)
        for j, lj in enumerate(order, start=1):
            rg_of_grid[members[lab == lj]] = len(rg_codes)
            rg_codes.append(f"{scode}R{j:02d}")
            rg_rows.append(
                {"code": rg_codes[-1], "name": f"{sname}第{j}责任网格", "region_code": scode}
            )
    _insert(s, ResponsibilityGrid, rg_rows)
    rg_ids = _ids(s, ResponsibilityGrid.id, ResponsibilityGrid.code)
    audit.record(s, "demo", "responsibility_grids", after={"count": len(rg_rows)})

    levels = np.where(L.rho < 0.4, "一级", np.where(L.rho < 0.75, "二级", "三级"))
    bb = _bbox(L.grids)
    wkb = shapely.to_wkb(L.grids)
    comm_ids = [region_ids[c] for c in L.comm_codes]
    district_of_grid = L.street_district[grid_street]
    owner = [units.ids[f"{L.district_codes[d]}:CGJ"] for d in range(len(L.district_codes))]
    cols = (
        "code",
        "community_id",
        "responsibility_grid_id",
        "geom",
        "area_m2",
        "management_level",
        "owner_unit_id",
        "min_lon",
        "min_lat",
        "max_lon",
        "max_lat",
    )
    rows = (
        (
            L.grid_codes[i],
            comm_ids[L.grid_comm[i]],
            rg_ids[rg_codes[rg_of_grid[i]]],
            bytes(wkb[i]),
            float(L.grid_area[i]),
            str(levels[i]),
            owner[district_of_grid[i]],
            float(bb[i, 0]),
            float(bb[i, 1]),
            float(bb[i, 2]),
            float(bb[i, 3]),
        )
        for i in range(n)
    )
    bulk_insert(s, Grid.__table__, cols, rows)  # type: ignore[arg-type]
    by_code = _ids(s, Grid.id, Grid.code)
    grid_ids = np.array([by_code[c] for c in L.grid_codes], dtype=np.int64)
    counts["grids"] = n
    counts["responsibility_grids"] = len(rg_rows)
    audit.record(
        s, "demo", "grids", after={"count": n, "area_m2": round(float(L.grid_area.sum()), 1)}
    )
    return grid_ids, rg_of_grid, rg_codes


def _category_counts(cats: list[Category], total: int) -> NDArray[np.int64]:
    w = np.array([_WEIGHTS.get(c.code, _DEFAULT_WEIGHT) for c in cats])
    base = np.ones(len(cats), dtype=np.int64)
    rest = total - len(cats)
    share = w / w.sum() * rest
    cnt = np.floor(share).astype(np.int64)
    left = rest - int(cnt.sum())
    cnt[np.argsort(-(share - cnt), kind="stable")[:left]] += 1
    return base + cnt


def _write_components(
    s: Session,
    spec: Scale,
    L: Layout,
    grid_ids: NDArray[np.int64],
    units: _Units,
    cats: list[Category],
    rng: np.random.Generator,
    counts: dict[str, int],
) -> dict[str, Any]:
    n_total = spec.components
    per_cat = _category_counts(cats, n_total)
    cat_idx = np.repeat(np.arange(len(cats)), per_cat)
    # denser in the centre
    gw = np.clip(1.5 - L.rho, 0.3, None)
    gsel = rng.choice(len(L.grids), size=n_total, p=gw / gw.sum())
    lons, lats = _sample_in_grids(L.grids, gsel, rng)
    gidx = _locate(L.grids, lons, lats, gsel)
    if (gidx < 0).any():  # pragma: no cover - points are sampled inside grids
        raise RuntimeError("a component fell outside every grid")
    del gsel
    nd = len(L.district_codes)
    grid_district = L.street_district[L.comm_street[L.grid_comm]]
    dist = grid_district[gidx]

    # owners per (category, district)
    def unit_id(key: str, d: int) -> int:
        if key.startswith("d:"):
            return units.ids[f"{L.district_codes[d]}:{key[2:]}"]
        return units.ids[key]

    comp_u = np.zeros((len(cats), nd), dtype=np.int64)
    own_u = np.zeros((len(cats), nd), dtype=np.int64)
    mnt_u = np.zeros((len(cats), nd), dtype=np.int64)
    tel = np.zeros(len(cats), dtype=bool)
    for ci, c in enumerate(cats):
        rule = next((r for codes, r in _OWNER_RULES if c.code in codes), None)
        if rule is None:
            rule = (
                _GREEN_OWNERS if c.code.startswith("04") or c.code == "01014" else _DEFAULT_OWNERS
            )
        tel[ci] = rule[1] == "TEL"
        for d in range(nd):
            comp_u[ci, d] = unit_id(rule[0], d)
            own_u[ci, d] = unit_id(rule[1], d) if rule[1] != "TEL" else 0
            mnt_u[ci, d] = unit_id(rule[2], d) if rule[2] != "TEL" else 0
    competent = comp_u[cat_idx, dist]
    owner = own_u[cat_idx, dist]
    maint = mnt_u[cat_idx, dist]
    tel_ids = np.array([units.ids[k] for k in _TEL])
    pick = tel_ids[rng.integers(0, len(_TEL), n_total)]
    is_tel = tel[cat_idx]
    owner = np.where(is_tel, pick, owner)
    maint = np.where(is_tel, pick, maint)
    del pick, is_tel

    # status, dates, data source
    cp = np.cumsum(_STATUS_P)
    status_i = np.searchsorted(cp, rng.random(n_total) * cp[-1], side="right").astype(np.int8)
    losable = np.array([any(t in c.name for t in _LOSABLE) for c in cats])
    status_i[(status_i == 2) & ~losable[cat_idx]] = 1
    initial_day = rng.integers(0, 6575, n_total).astype(np.int32)  # 2008-01-01 … 2025-12-31
    change_day = rng.integers(0, 395, n_total).astype(np.int32)  # 2025-06-01 … 2026-06-30
    # a component cannot change before it was first recorded
    initial_day = np.minimum(initial_day, change_day + _CHANGE_EPOCH_OFFSET)
    source_i = np.searchsorted([0.88, 0.96], rng.random(n_total), side="right").astype(np.int8)
    road_of_grid = rng.integers(0, len(names.ROADS), len(L.grids)).tolist()

    # codes: district + category + serial (per district and category, in grid/position order)
    order = np.lexsort((lons, gidx, cat_idx, dist))
    key = dist[order] * len(cats) + cat_idx[order]
    first = np.r_[True, key[1:] != key[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(n_total), 0))
    serial = np.empty(n_total, dtype=np.int64)
    serial[order] = np.arange(n_total) - group_start + 1
    del key, first, group_start
    if serial.max() > 999_999:  # pragma: no cover
        raise RuntimeError("too many components of one category in one district")

    statuses = ("完好", "破损", "丢失", "废弃")
    sources = ("实测", "竣工图", "地形图")
    initial_iso = _iso_dates("2008-01-01", 6575)
    change_iso = _iso_dates("2025-06-01", 395)
    prefix = [[f"{d}{c.code}" for c in cats] for d in L.district_codes]
    cat_names = [c.name for c in cats]
    cat_ids = [c.id for c in cats]
    grid_codes = L.grid_codes
    gid_all = grid_ids.tolist()
    roads = names.ROADS

    def rows() -> Iterable[tuple[Any, ...]]:
        step = 100_000
        for c0 in range(0, n_total, step):
            ix = order[c0 : c0 + step]
            lo, la = lons[ix], lats[ix]
            cells = _h3(lo, la)
            for ci, d, g, ser, x, y, cell, cu, ou, mu, st, ini, chg, src in zip(
                cat_idx[ix].tolist(),
                dist[ix].tolist(),
                gidx[ix].tolist(),
                serial[ix].tolist(),
                lo.tolist(),
                la.tolist(),
                cells,
                competent[ix].tolist(),
                owner[ix].tolist(),
                maint[ix].tolist(),
                status_i[ix].tolist(),
                initial_day[ix].tolist(),
                change_day[ix].tolist(),
                source_i[ix].tolist(),
                strict=True,
            ):
                yield (
                    f"{prefix[d][ci]}{ser:06d}",
                    cat_ids[ci],
                    roads[road_of_grid[g]] + cat_names[ci],
                    x,
                    y,
                    cell,
                    gid_all[g],
                    grid_codes[g],
                    statuses[st],
                    cu,
                    ou,
                    mu,
                    initial_iso[ini],
                    change_iso[chg] if st else None,
                    sources[src],
                )

    cols = (
        "code",
        "category_id",
        "name",
        "lon",
        "lat",
        "h3",
        "grid_id",
        "grid_code",
        "status",
        "competent_unit_id",
        "owner_unit_id",
        "maintainer_unit_id",
        "initial_date",
        "change_date",
        "data_source",
    )
    n = bulk_insert(s, Component.__table__, cols, rows(), defer_checks=n_total >= 500_000)  # type: ignore[arg-type]
    st_counts = np.bincount(status_i, minlength=len(statuses))
    by_status = {statuses[i]: int(st_counts[i]) for i in range(len(statuses))}
    counts["components"] = n
    audit.record(
        s,
        "demo",
        "components",
        after={"count": n, "categories": len(cats), "by_status": by_status},
    )
    return {"categories": len(cats), "by_status": by_status}


def _write_users(
    s: Session,
    spec: Scale,
    L: Layout,
    units: _Units,
    rg_of_grid: NDArray[np.int64],
    rg_codes: list[str],
    grid_ids: NDArray[np.int64],
    password_hash: str,
    rng: np.random.Generator,
    counts: dict[str, int],
) -> dict[str, Any]:
    now = utcnow()
    users: list[dict[str, Any]] = []
    roles: list[tuple[str, str]] = []

    def add(
        username: str,
        role: str,
        unit: str | None = None,
        scope: str | None = None,
        unit_only: bool = False,
        title: str = "",
    ) -> None:
        users.append(
            {
                "username": username,
                "display_name": _person_name(rng) + (f"（{title}）" if title else ""),
                "password_hash": password_hash,
                "phone": _phone(rng),
                "unit_id": units.ids[unit] if unit else None,
                "scope_region_code": scope,
                "scope_unit_only": unit_only,
                "active": True,
                "failed_logins": 0,
                "password_changed_at": now,
                "created_at": now,
            }
        )
        roles.append((username, role))

    add("admin", "admin", title="系统管理员")
    for i in range(1, spec.leaders + 1):
        add(f"leader{i}", "leader", "CGJ", title="领导")
    for i, (dcode, dname) in enumerate(zip(L.district_codes, L.district_names, strict=True), 1):
        add(f"district{i}", "leader", f"{dcode}:CGJ", scope=dcode, title=f"{dname}领导")
    for i in range(1, spec.operators + 1):
        add(f"operator{i}", "operator", "JDZX", title="受理员")
    for i in range(1, spec.shift_leaders + 1):
        add(f"shift{i}", "shift_leader", "JDZX", title="值班长")
    for i in range(1, spec.dispatchers + 1):
        add(f"dispatcher{i}", "dispatcher", "ZHZX", title="派遣员")
    # inspectors: per street, every responsibility grid covered
    rg_street = [c[:9] for c in rg_codes]
    inspector_rgs: list[tuple[str, list[int]]] = []
    k = 0
    for scode in L.street_codes:
        rgs = [j for j, sc in enumerate(rg_street) if sc == scode]
        n_insp = spec.inspectors_per_street or len(rgs)
        n_insp = max(n_insp, 1)
        for t in range(n_insp):
            k += 1
            mine = [rgs[t % len(rgs)]] if n_insp >= len(rgs) else rgs[t::n_insp]
            inspector_rgs.append((f"inspector{k}", mine))
            add(f"inspector{k}", "inspector", "JDZX", scope=scode, title="监督员")
    h = 0
    for key in units.handling:
        for _ in range(spec.handlers_per_unit):
            h += 1
            add(f"handler{h}", "handler", key, unit_only=True, title="处置人员")
    for i in range(1, spec.reviewers + 1):
        add(f"reviewer{i}", "reviewer", title="第三方考评员")
    add("evaluator1", "evaluator", "CGJ", title="综合评价考评员")
    add("monitor1", "monitor", "JDZX", title="监测值班员")
    add("commander1", "commander", "CGJ", title="防汛指挥")

    _insert(s, User, users, chunk=2_000)
    uid = _ids(s, User.id, User.username)
    _insert(s, UserRole, [{"user_id": uid[u], "role": r} for u, r in roles], chunk=5_000)
    # grid_inspectors
    grids_of_rg: dict[int, list[int]] = {}
    for g, rg in enumerate(rg_of_grid.tolist()):
        grids_of_rg.setdefault(rg, []).append(int(grid_ids[g]))
    pairs = (
        (gid, uid[name]) for name, rgs in inspector_rgs for rg in rgs for gid in grids_of_rg[rg]
    )
    n_gi = bulk_insert(s, grid_inspectors, ("grid_id", "user_id"), pairs)
    audit.record(
        s,
        "demo",
        "users",
        after={"count": len(users), "user_roles": len(roles), "grid_inspectors": n_gi},
    )
    by_role: dict[str, list[str]] = {r: [] for r in ROLES}
    by_prefix: dict[str, list[str]] = {}
    for u, r in roles:
        by_role[r].append(u)
        by_prefix.setdefault(u.rstrip("0123456789"), []).append(u)
    counts["users"] = len(users)
    counts["grid_inspectors"] = n_gi
    return {
        "password": DEMO_PASSWORD,
        "accounts": [
            {"username": "admin", "role": "admin", "note": "管理员"},
            {"username": "leader1", "role": "leader", "note": "市级领导 (whole city)"},
            {
                "username": "district1",
                "role": "leader",
                "note": f"区级领导, scope {L.district_codes[0]} {L.district_names[0]}",
            },
            {"username": "operator1", "role": "operator", "note": "受理员 (监督中心)"},
            {"username": "shift1", "role": "shift_leader", "note": "值班长 (监督中心)"},
            {"username": "dispatcher1", "role": "dispatcher", "note": "派遣员 (指挥中心)"},
            {
                "username": "inspector1",
                "role": "inspector",
                "note": f"监督员, scope {L.street_codes[0]} {L.street_names[0]}",
            },
            {
                "username": "handler1",
                "role": "handler",
                "note": f"处置人员 of {next(u['name'] for u in units.rows if u['key'] == units.handling[0])}",
            },
            {"username": "reviewer1", "role": "reviewer", "note": "第三方考评员"},
            {"username": "evaluator1", "role": "evaluator", "note": "综合评价考评员"},
            {"username": "monitor1", "role": "monitor", "note": "监测值班员 (城市生命线 研判)"},
            {"username": "commander1", "role": "commander", "note": "防汛指挥"},
        ],
        "usernames": {
            p: v[0] if len(v) == 1 else f"{v[0]} … {v[-1]}" for p, v in by_prefix.items()
        },
        "users_by_role": {r: len(v) for r, v in by_role.items()},
    }


def _write_pois_and_green(
    s: Session,
    spec: Scale,
    L: Layout,
    units: _Units,
    rng: np.random.Generator,
    counts: dict[str, int],
) -> None:
    n = len(L.grids)
    grid_street = L.comm_street[L.grid_comm]
    grid_district = L.street_district[grid_street]

    def address(g: int, num: int) -> str:
        st = grid_street[g]
        d = grid_district[g]
        road = names.ROADS[int(rng.integers(len(names.ROADS)))]
        return f"{CITY_NAME}{L.district_names[d]}{L.street_names[st]}{road}{num}号"

    # green spaces: shrunken copies of some grids (inside the grid, so inside its community)
    n_green = min(spec.green_spaces, n)
    gsel = np.sort(rng.choice(n, size=n_green, replace=False))
    base = L.grids[gsel]
    coords, idx = shapely.get_coordinates(base, return_index=True)
    centre = np.array([c.coords[0] for c in shapely.centroid(base)])
    f = rng.uniform(0.35, 0.8, n_green)
    new = centre[idx] + f[idx, None] * (coords - centre[idx])
    green = shapely.set_coordinates(base.copy(), new)
    areas = _geod_area(green)
    bb = _bbox(green)
    wkb = shapely.to_wkb(green)
    is_park = np.zeros(n_green, dtype=bool)
    is_park[rng.choice(n_green, size=min(spec.parks, n_green), replace=False)] = True
    other = rng.integers(1, len(names.GREEN_KINDS), n_green)
    kinds = [names.GREEN_KINDS[0 if is_park[j] else int(other[j])] for j in range(n_green)]
    green_rows = []
    park_points: list[tuple[int, float, float, str, float]] = []
    for j in range(n_green):
        g = int(gsel[j])
        comm_name = L.comm_names[L.grid_comm[g]]
        stem = comm_name[:-2]
        if kinds[j] == names.GREEN_KINDS[0]:
            nm = f"{stem}{names.PARK_SUFFIXES[int(rng.integers(len(names.PARK_SUFFIXES)))]}"
            rp = shapely.point_on_surface(green[j])
            park_points.append((g, rp.x, rp.y, nm, float(areas[j])))
        else:
            nm = f"{stem}{kinds[j]}{j + 1}"
        green_rows.append(
            {
                "name": nm,
                "kind": kinds[j],
                "community_code": L.comm_codes[L.grid_comm[g]],
                "geom": bytes(wkb[j]),
                "area_m2": float(areas[j]),
                "min_lon": float(bb[j, 0]),
                "min_lat": float(bb[j, 1]),
                "max_lon": float(bb[j, 2]),
                "max_lat": float(bb[j, 3]),
            }
        )
    _insert(s, GreenSpace, green_rows)
    audit.record(s, "demo", "green_spaces", after={"count": len(green_rows)})

    pois: list[dict[str, Any]] = []
    gw = np.clip(1.5 - L.rho, 0.3, None)
    n_pts = spec.toilets + spec.parking
    which = rng.choice(n, size=n_pts, p=gw / gw.sum())
    lons, lats = _sample_in_grids(L.grids, which, rng)
    for j in range(n_pts):
        g = int(which[j])
        if j < spec.toilets:
            pois.append(
                {
                    "kind": "toilet",
                    "name": f"{L.street_names[grid_street[g]][:-2]}第{j + 1}公厕",
                    "address": address(g, int(rng.integers(1, 300))),
                    "lon": float(lons[j]),
                    "lat": float(lats[j]),
                    "attrs": {
                        "opening_hours": "全天" if rng.random() < 0.4 else "06:00-22:00",
                        "grade": ("一类", "二类", "三类")[int(rng.integers(3))],
                        "accessible": bool(rng.random() < 0.7),
                        "baby_room": bool(rng.random() < 0.3),
                        "stalls": int(rng.integers(4, 20)),
                        "managed_by": next(
                            u["name"]
                            for u in units.rows
                            if u["key"] == f"{L.district_codes[grid_district[g]]}:HWS"
                        ),
                    },
                }
            )
        else:
            cap = int(rng.integers(20, 400))
            road = names.ROADS[int(rng.integers(len(names.ROADS)))]
            pois.append(
                {
                    "kind": "parking",
                    "name": f"{road}{('地面', '地下', '立体', '路内')[int(rng.integers(4))]}停车场{j - spec.toilets + 1}",
                    "address": address(g, int(rng.integers(1, 300))),
                    "lon": float(lons[j]),
                    "lat": float(lats[j]),
                    "attrs": {
                        "capacity": cap,
                        "free_spaces": int(rng.integers(0, cap)),
                        "opening_hours": "全天",
                        "fee": "首小时2元，之后每小时1元，24小时最高20元",
                        "charging_piles": int(rng.integers(0, 12)),
                    },
                }
            )
    for g, lon, lat, nm, area in park_points:
        pois.append(
            {
                "kind": "park",
                "name": nm,
                "address": address(g, int(rng.integers(1, 300))),
                "lon": float(lon),
                "lat": float(lat),
                "attrs": {"opening_hours": "05:30-22:00", "area_m2": round(area, 1), "free": True},
            }
        )
    cells = _h3(np.array([p["lon"] for p in pois]), np.array([p["lat"] for p in pois]))
    for p, c in zip(pois, cells, strict=True):
        p["h3"] = c
    _insert(s, Poi, pois)
    audit.record(s, "demo", "pois", after={"count": len(pois)})
    counts["green_spaces"] = len(green_rows)
    counts["pois"] = len(pois)


__all__ = ["DEMO_PASSWORD", "SCALES", "build_demo", "build_layout", "is_valid_credit_code"]

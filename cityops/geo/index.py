"""In-process spatial indexes, rebuilt from the database when grids or components change.

* :class:`GridIndex` — unit grids in a shapely STRtree. A point on a shared edge or corner
  is covered by several grids; the rule is that it belongs to the one with the **lowest
  grid code**, so every point in the city gets exactly one grid. Geometries are kept in
  code order, so "lowest code" is "lowest tree index".
* :class:`ComponentIndex` — component points in k-d trees (scipy ``cKDTree``) over a
  transverse Mercator projection centred on the city (scale error < 2e-5 within 50 km),
  one tree for all and one per category; candidates are re-ranked by exact geodesic
  distance.

The database keeps a ``geo_version`` counter (``city_settings``); every write that moves
grids or components bumps it, and each process rebuilds its indexes when it sees a newer
value (checked at most every ``CITYOPS_INDEX_REFRESH_SECONDS``).
"""

from __future__ import annotations

import secrets
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from scipy import ndimage
from scipy.spatial import cKDTree
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from cityops.core.settings import get_settings
from cityops.geo.crs import GEOD
from cityops.geo.models import CitySetting, Grid, Region, ResponsibilityGrid

GEO_VERSION_KEY = "geo_version"
_NONE = np.iinfo(np.int64).max


def read_geo_version(session: Session) -> dict[str, int]:
    row = session.get(CitySetting, GEO_VERSION_KEY)
    value = row.value if row is not None else None
    return dict(value) if isinstance(value, dict) else {"grids": 0, "components": 0}


def bump_geo_version(session: Session, *, grids: bool = False, components: bool = False) -> None:
    """Mark grids and/or components as changed (call in the same transaction as the write)."""
    row = session.get(CitySetting, GEO_VERSION_KEY)
    current = read_geo_version(session)
    # A random new value, not a counter: after a rollback a counter could reach the same
    # number again and an index built inside the rolled-back transaction would look current.
    if grids:
        current["grids"] = secrets.randbits(62)
    if components:
        current["components"] = secrets.randbits(62)
    if row is None:
        session.add(CitySetting(key=GEO_VERSION_KEY, value=current))
    else:
        row.value = current
    session.flush()


@dataclass
class CellRaster:
    """Exact fast path for point-in-grid: a raster whose "pure" cells lie inside one grid.

    Every grid boundary is sampled at sub-cell steps and every cell the boundary could touch
    (with a small safety margin) is marked impure. The unmarked cells then form connected
    regions that no boundary crosses, so each region lies wholly inside one grid (or outside
    all); one representative point per region is located exactly. A query in a pure cell is
    an array lookup; any other falls back to the STRtree. The answer is identical either way.
    """

    x0: float
    y0: float
    dx: float
    dy: float
    nx: int
    ny: int
    #: grid index per cell: >= 0 pure inside that grid, -1 pure outside all, -2 impure
    cells: NDArray[np.int32]

    IMPURE = -2
    MARGIN = 1e-6  # in cell units

    @classmethod
    def build(
        cls, geoms: NDArray[Any], tree: shapely.STRtree, cells_per_grid_side: int = 8
    ) -> CellRaster | None:
        if len(geoms) == 0:
            return None
        minx, miny, maxx, maxy = shapely.total_bounds(geoms)
        lat_mid = (miny + maxy) / 2.0
        # cell size: ~1/8 of a typical grid's side, at most ~6 M cells
        side_deg = float(np.sqrt(np.median(shapely.area(geoms))))
        dy = side_deg / cells_per_grid_side
        dx = dy / max(np.cos(np.radians(lat_mid)), 0.1)
        while (maxx - minx) / dx * (maxy - miny) / dy > 6_000_000:
            dx *= 1.25
            dy *= 1.25
        x0, y0 = minx - dx, miny - dy
        nx = int(np.ceil((maxx - x0) / dx)) + 2
        ny = int(np.ceil((maxy - y0) / dy)) + 2
        impure = np.zeros((ny, nx), dtype=bool)
        rings = shapely.get_rings(geoms)
        coords, ring_idx = shapely.get_coordinates(rings, return_index=True)
        cx = (coords[:, 0] - x0) / dx
        cy = (coords[:, 1] - y0) / dy
        same = ring_idx[1:] == ring_idx[:-1]
        ax, ay, bx, by = cx[:-1][same], cy[:-1][same], cx[1:][same], cy[1:][same]
        k = np.ceil(np.maximum(np.abs(bx - ax), np.abs(by - ay))).astype(np.int64) + 1
        seg = np.repeat(np.arange(len(k)), k)
        t0 = (np.arange(len(seg)) - np.repeat(np.cumsum(k) - k, k)) / np.repeat(k, k)
        t1 = t0 + 1.0 / np.repeat(k, k)
        px0 = ax[seg] + (bx[seg] - ax[seg]) * t0
        py0 = ay[seg] + (by[seg] - ay[seg]) * t0
        px1 = ax[seg] + (bx[seg] - ax[seg]) * np.minimum(t1, 1.0)
        py1 = ay[seg] + (by[seg] - ay[seg]) * np.minimum(t1, 1.0)
        m = cls.MARGIN
        ix_lo = np.floor(np.minimum(px0, px1) - m).astype(np.int64)
        ix_hi = np.floor(np.maximum(px0, px1) + m).astype(np.int64)
        iy_lo = np.floor(np.minimum(py0, py1) - m).astype(np.int64)
        iy_hi = np.floor(np.maximum(py0, py1) + m).astype(np.int64)
        # each sub-segment spans at most 2 cells per axis (plus margin): mark the 3x3 worst case
        for ox in range(3):
            for oy in range(3):
                sel = (ix_lo + ox <= ix_hi) & (iy_lo + oy <= iy_hi)
                impure[np.clip(iy_lo[sel] + oy, 0, ny - 1), np.clip(ix_lo[sel] + ox, 0, nx - 1)] = (
                    True
                )
        labels, n = ndimage.label(~impure)
        cells = np.full((ny, nx), cls.IMPURE, dtype=np.int32)
        if n:
            # one representative cell centre per connected pure region
            flat = labels.ravel()
            order = np.argsort(flat, kind="stable")
            first = np.searchsorted(flat[order], np.arange(1, n + 1))
            rep = order[first]
            ry, rx = np.divmod(rep, nx)
            px = x0 + (rx + 0.5) * dx
            py = y0 + (ry + 0.5) * dy
            pairs = tree.query(shapely.points(px, py), predicate="intersects")
            region_grid = np.full(n, _NONE, dtype=np.int64)
            if pairs.shape[1]:
                np.minimum.at(region_grid, pairs[0], pairs[1])
            region_grid[region_grid == _NONE] = -1
            lut = np.concatenate([[cls.IMPURE], region_grid]).astype(np.int32)
            cells = lut[labels]
        return cls(x0, y0, dx, dy, nx, ny, cells)

    def lookup(self, lons: NDArray[np.float64], lats: NDArray[np.float64]) -> NDArray[np.int32]:
        ix = np.floor((lons - self.x0) / self.dx).astype(np.int64)
        iy = np.floor((lats - self.y0) / self.dy).astype(np.int64)
        inside = (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        out = np.full(len(lons), -1, dtype=np.int32)
        out[inside] = self.cells[iy[inside], ix[inside]]
        return out

    def lookup_one(self, lon: float, lat: float) -> int:
        ix = int((lon - self.x0) // self.dx)
        iy = int((lat - self.y0) // self.dy)
        if 0 <= ix < self.nx and 0 <= iy < self.ny:
            return int(self.cells[iy, ix])
        return -1


@dataclass
class GridIndex:
    version: int
    ids: NDArray[np.int64]
    codes: list[str]
    geoms: NDArray[Any]
    area_m2: NDArray[np.float64]
    rgrid_ids: NDArray[np.int64]
    tree: shapely.STRtree
    raster: CellRaster | None
    region_names: dict[str, str]
    rgrids: dict[int, tuple[str, str]]
    id_to_idx: dict[int, int] = field(default_factory=dict)

    @classmethod
    def build(cls, session: Session, version: int = 0) -> GridIndex:
        rows = session.execute(
            select(
                Grid.id, Grid.code, Grid.geom, Grid.area_m2, Grid.responsibility_grid_id
            ).order_by(Grid.code)
        ).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        codes = [r[1] for r in rows]
        geoms = shapely.from_wkb([r[2] for r in rows]) if rows else np.empty(0, dtype=object)
        shapely.prepare(geoms)
        area = np.fromiter((r[3] for r in rows), dtype=np.float64, count=len(rows))
        rg = np.fromiter(
            ((r[4] if r[4] is not None else -1) for r in rows), dtype=np.int64, count=len(rows)
        )
        names = {code: name for code, name in session.execute(select(Region.code, Region.name))}
        rgrids = {
            i: (c, n)
            for i, c, n in session.execute(
                select(ResponsibilityGrid.id, ResponsibilityGrid.code, ResponsibilityGrid.name)
            )
        }
        tree = shapely.STRtree(geoms)
        return cls(
            version=version,
            ids=ids,
            codes=codes,
            geoms=geoms,
            area_m2=area,
            rgrid_ids=rg,
            tree=tree,
            raster=CellRaster.build(geoms, tree),
            region_names=names,
            rgrids=rgrids,
            id_to_idx={int(g): i for i, g in enumerate(ids)},
        )

    def __len__(self) -> int:
        return len(self.codes)

    def locate_idx(self, lon: float, lat: float) -> int:
        """Index (code order) of the grid containing the point, or -1."""
        if self.raster is not None:
            hit = self.raster.lookup_one(lon, lat)
            if hit != CellRaster.IMPURE:
                return hit
        return self.exact_idx(lon, lat)

    def exact_idx(self, lon: float, lat: float) -> int:
        """The STRtree answer, without the raster (the reference for tests)."""
        hits = self.tree.query(shapely.Point(lon, lat), predicate="intersects")
        if hits.size == 0:
            return -1
        return int(hits.min())

    def locate_many(
        self, lons: NDArray[np.float64], lats: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Vectorised :meth:`locate_idx`: one grid index per point, -1 outside every grid."""
        lons = np.asarray(lons, dtype=np.float64)
        lats = np.asarray(lats, dtype=np.float64)
        if self.raster is None:
            return self.exact_many(lons, lats)
        out = self.raster.lookup(lons, lats).astype(np.int64)
        rest = np.flatnonzero(out == CellRaster.IMPURE)
        if rest.size:
            out[rest] = self.exact_many(lons[rest], lats[rest])
        return out

    def exact_many(self, lons: NDArray[np.float64], lats: NDArray[np.float64]) -> NDArray[np.int64]:
        """The STRtree answer for many points, without the raster."""
        pts = shapely.points(lons, lats)
        pairs = self.tree.query(pts, predicate="intersects")
        out = np.full(len(pts), _NONE, dtype=np.int64)
        if pairs.shape[1]:
            np.minimum.at(out, pairs[0], pairs[1])
        out[out == _NONE] = -1
        return out

    def describe(self, idx: int) -> dict[str, Any]:
        """The grid at ``idx`` with its responsibility grid, community, street and district."""
        code = self.codes[idx]
        rg = int(self.rgrid_ids[idx])
        rg_info = self.rgrids.get(rg) if rg >= 0 else None
        return {
            "grid": {
                "id": int(self.ids[idx]),
                "code": code,
                "area_m2": round(float(self.area_m2[idx]), 1),
            },
            "responsibility_grid": (
                {"id": rg, "code": rg_info[0], "name": rg_info[1]} if rg_info else None
            ),
            "community": {"code": code[:12], "name": self.region_names.get(code[:12])},
            "street": {"code": code[:9], "name": self.region_names.get(code[:9])},
            "district": {"code": code[:6], "name": self.region_names.get(code[:6])},
        }


def local_transformer(lon0: float, lat0: float) -> Transformer:
    """WGS84 → metres in a transverse Mercator centred on (lon0, lat0)."""
    return Transformer.from_crs(
        "EPSG:4326",
        f"+proj=tmerc +lat_0={lat0:.6f} +lon_0={lon0:.6f} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m",
        always_xy=True,
    )


class _Buckets:
    """Points in square cells (CSR layout) for the commonest query — the single nearest
    component of any category — in plain Python, without the k-d tree's per-call overhead.

    Rings of cells around the query are searched until the best candidate is provably the
    nearest (closer than any unsearched cell can be); near-ties and far searches answer
    None so that the caller uses the tree, whose answer is the reference.
    """

    MAX_RING = 2

    def __init__(
        self,
        x0: float,
        y0: float,
        size: float,
        nx: int,
        ny: int,
        start: array[int],
        xs: array[float],
        ys: array[float],
        rows: array[int],
    ) -> None:
        self.x0, self.y0, self.size, self.nx, self.ny = x0, y0, size, nx, ny
        self.start, self.xs, self.ys, self.rows = start, xs, ys, rows
        # occupancy of blocks of (2R+1)^2 cells, R = MAX_RING: skip searches that must fail
        counts = np.diff(np.asarray(start)).reshape(ny, nx).astype(np.int64)
        sat = np.zeros((ny + 1, nx + 1), dtype=np.int64)
        sat[1:, 1:] = counts.cumsum(0).cumsum(1)
        self.sat = sat

    @classmethod
    def build(cls, xy: NDArray[np.float64]) -> _Buckets | None:
        n = len(xy)
        if n < 64:
            return None
        x0, y0 = float(xy[:, 0].min()) - 1.0, float(xy[:, 1].min()) - 1.0
        w = float(xy[:, 0].max()) - x0 + 2.0
        h = float(xy[:, 1].max()) - y0 + 2.0
        size = max(float(np.sqrt(2.0 * w * h / n)), 5.0)  # about two points per cell
        nx, ny = int(w // size) + 1, int(h // size) + 1
        if nx * ny > 20_000_000:
            return None
        cell = np.floor((xy[:, 1] - y0) / size).astype(np.int64) * nx + np.floor(
            (xy[:, 0] - x0) / size
        ).astype(np.int64)
        order = np.argsort(cell, kind="stable")
        start = np.searchsorted(cell[order], np.arange(nx * ny + 1))
        # array.array: 8 bytes a value (a list would cost ~4x) and still fast to index
        return cls(
            x0,
            y0,
            size,
            nx,
            ny,
            array("q", start.astype(np.int64).tobytes()),
            array("d", np.ascontiguousarray(xy[order, 0]).tobytes()),
            array("d", np.ascontiguousarray(xy[order, 1]).tobytes()),
            array("q", order.astype(np.int64).tobytes()),
        )

    def nearest(self, x: float, y: float, radius_m: float | None) -> int | None:
        """Row of the nearest point; -1 if none within ``radius_m``; None if undecided."""
        size, nx, ny = self.size, self.nx, self.ny
        cx = int((x - self.x0) // size)
        cy = int((y - self.y0) // size)
        start, xs, ys = self.start, self.xs, self.ys
        m = self.MAX_RING
        y_lo, y_hi = min(max(cy - m, 0), ny), min(max(cy + m + 1, 0), ny)
        x_lo, x_hi = min(max(cx - m, 0), nx), min(max(cx + m + 1, 0), nx)
        sat = self.sat
        if sat[y_hi, x_hi] - sat[y_lo, x_hi] - sat[y_hi, x_lo] + sat[y_lo, x_lo] == 0:
            return None  # nothing near: the tree finds the nearest far away (or none)
        best = second = float("inf")
        best_i = -1
        for r in range(self.MAX_RING + 1):
            for yy in range(cy - r, cy + r + 1):
                if yy < 0 or yy >= ny:
                    continue
                edge = yy in (cy - r, cy + r)
                for xx in range(cx - r, cx + r + 1) if edge else (cx - r, cx + r):
                    if xx < 0 or xx >= nx:
                        continue
                    k = yy * nx + xx
                    for i in range(start[k], start[k + 1]):
                        dx = xs[i] - x
                        dy = ys[i] - y
                        d2 = dx * dx + dy * dy
                        if d2 < best:
                            best, second, best_i = d2, best, i
                        elif d2 < second:
                            second = d2
            reach = r * size  # every unsearched point is at least this far away
            if radius_m is not None and reach >= radius_m * 1.001 + 1.0 and best_i < 0:
                return -1
            if best_i >= 0 and best <= reach * reach:
                d, d2nd = best**0.5, second**0.5
                if d2nd - d <= 1e-4 * d2nd + 0.01:
                    return None  # near-tie: let the geodesic re-ranking decide
                return self.rows[best_i]
        return None


@dataclass
class ComponentIndex:
    version: int
    ids: NDArray[np.int64]
    category_ids: NDArray[np.int64]
    lons: NDArray[np.float64]
    lats: NDArray[np.float64]
    transformer: Transformer
    tree: cKDTree | None
    #: category id → (row offsets into the arrays, tree over those rows)
    by_category: dict[int, tuple[NDArray[np.int64], cKDTree]]
    buckets: _Buckets | None = None

    @classmethod
    def build(cls, session: Session, version: int = 0) -> ComponentIndex:
        # the raw DB-API cursor yields plain tuples (numpy on SQLAlchemy Row objects is slow)
        cur = session.connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        cur.execute("SELECT id, category_id, lon, lat FROM components")
        chunks = []
        while True:
            part = cur.fetchmany(250_000)
            if not part:
                break
            chunks.append(np.array(part, dtype=np.float64))
        cur.close()
        data = np.concatenate(chunks) if chunks else np.empty((0, 4))
        data = data[np.lexsort((data[:, 0], data[:, 1]))]  # by category, then id
        ids = data[:, 0].astype(np.int64)
        cats = data[:, 1].astype(np.int64)
        lons = np.ascontiguousarray(data[:, 2])
        lats = np.ascontiguousarray(data[:, 3])
        lon0 = float(np.median(lons)) if len(lons) else 116.0
        lat0 = float(np.median(lats)) if len(lats) else 35.0
        tr = local_transformer(lon0, lat0)
        x, y = tr.transform(lons, lats)
        xy = np.column_stack([x, y]) if len(lons) else np.empty((0, 2))
        tree = cKDTree(xy, balanced_tree=False, compact_nodes=True) if len(xy) else None
        by_cat: dict[int, tuple[NDArray[np.int64], cKDTree]] = {}
        if len(cats):
            bounds = np.flatnonzero(np.diff(cats)) + 1
            starts = np.concatenate([[0], bounds])
            ends = np.concatenate([bounds, [len(cats)]])
            for s, e in zip(starts, ends, strict=True):
                rows = np.arange(s, e, dtype=np.int64)
                by_cat[int(cats[s])] = (
                    rows,
                    cKDTree(xy[s:e], balanced_tree=False, compact_nodes=True),
                )
        return cls(version, ids, cats, lons, lats, tr, tree, by_cat, _Buckets.build(xy))

    def __len__(self) -> int:
        return len(self.ids)

    def nearest(
        self,
        lon: float,
        lat: float,
        category_id: int | None = None,
        radius_m: float | None = None,
        limit: int = 1,
    ) -> list[tuple[int, float]]:
        """Up to ``limit`` (component id, geodesic metres), nearest first."""
        if category_id is None:
            tree, rows = self.tree, None
        else:
            entry = self.by_category.get(category_id)
            if entry is None:
                return []
            rows, tree = entry
        if tree is None or tree.n == 0:
            return []
        x, y = self.transformer.transform(lon, lat)
        if category_id is None and limit == 1 and self.buckets is not None:
            hit = self.buckets.nearest(x, y, radius_m)
            if hit is not None:  # None: undecided (near-tie or far away): use the tree
                if hit < 0:
                    return []
                d = float(GEOD.inv(lon, lat, float(self.lons[hit]), float(self.lats[hit]))[2])
                return [] if radius_m is not None and d > radius_m else [(int(self.ids[hit]), d)]
        # One spare candidate tells whether the projected ranking could differ from the
        # geodesic one (the projection's scale error is < 2e-5 within 50 km of the centre).
        ub = radius_m * 1.001 + 1.0 if radius_m is not None else np.inf
        k = min(limit + 1, tree.n)
        dist_a, pos_a = tree.query((x, y), k=[k] if k == 1 else k, distance_upper_bound=ub)
        found = [
            (d, p)
            for d, p in zip(np.ravel(dist_a).tolist(), np.ravel(pos_a).tolist(), strict=True)
            if d != np.inf
        ]
        if not found:
            return []
        if (
            len(found) > limit
            and found[limit][0] - found[limit - 1][0] <= 1e-4 * found[limit][0] + 0.01
        ):
            # near-ties at the cut: fetch more and rank them all by exact geodesic distance
            dist_a, pos_a = tree.query((x, y), k=min(limit + 8, tree.n), distance_upper_bound=ub)
            found = [
                (d, p)
                for d, p in zip(np.ravel(dist_a).tolist(), np.ravel(pos_a).tolist(), strict=True)
                if d != np.inf
            ]
        else:
            found = found[:limit]
        positions = [p for _, p in found]
        r = positions if rows is None else rows[positions].tolist()
        inv = GEOD.inv
        lons, lats, ids = self.lons, self.lats, self.ids
        # scalar geodesics: for a handful of points far cheaper than the array call
        cand = sorted((inv(lon, lat, float(lons[i]), float(lats[i]))[2], int(ids[i])) for i in r)
        out = []
        for d, cid in cand[:limit]:
            if radius_m is not None and d > radius_m:
                break
            out.append((cid, float(d)))
        return out


class SpatialIndexes:
    """Per-process holder of the indexes for one database; rebuilds them when stale."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._grids: GridIndex | None = None
        self._components: ComponentIndex | None = None
        self._checked_at = 0.0
        self._version: dict[str, int] = {"grids": -1, "components": -1}

    def _refresh_version(self, session: Session, force: bool = False) -> dict[str, int]:
        now = time.monotonic()
        if force or now - self._checked_at >= get_settings().index_refresh_seconds:
            self._version = read_geo_version(session)
            self._checked_at = now
        return self._version

    def grids(self, session: Session) -> GridIndex:
        v = self._refresh_version(session)["grids"]
        idx = self._grids
        if idx is None or idx.version != v:
            with self._lock:
                idx = self._grids
                if idx is None or idx.version != v:
                    idx = GridIndex.build(session, v)
                    self._grids = idx
        return idx

    def components(self, session: Session) -> ComponentIndex:
        v = self._refresh_version(session)["components"]
        idx = self._components
        if idx is None or idx.version != v:
            with self._lock:
                idx = self._components
                if idx is None or idx.version != v:
                    idx = ComponentIndex.build(session, v)
                    self._components = idx
        return idx

    def invalidate(self) -> None:
        """Forget the checked version so that the next access re-reads it (after a local write)."""
        self._checked_at = 0.0


_holders: dict[str, SpatialIndexes] = {}
_holders_lock = threading.Lock()


def indexes_for(session: Session) -> SpatialIndexes:
    """The index holder for the database this session talks to."""
    key = session.get_bind().engine.url.render_as_string(hide_password=False)
    with _holders_lock:
        h = _holders.get(key)
        if h is None:
            h = _holders[key] = SpatialIndexes()
        return h


def count_rows(session: Session, table: str) -> int:
    return int(session.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

"""Validated import of city data (城市基础数据导入) from GeoJSON or CSV.

``import_file(session, kind, path)`` reads one file, validates **every** row against the
file itself and the database, collects all problems, and writes only when the file is
clean (or, with ``skip_invalid``, writes the valid rows and reports the rest). It never
commits: the caller's transaction does. Kinds, in the order a new city loads them::

    regions → units → categories → grids → components

File formats
============

* **GeoJSON** (``.geojson`` / ``.json``): a ``FeatureCollection``; the fields below are
  feature ``properties``; geometry is the feature geometry in WGS84/CGCS2000 lon/lat
  (RFC 7946). Kinds without geometry (units, categories) use ``"geometry": null``.
  Features are numbered from 1 in file order.
* **CSV** (``.csv``): UTF-8 (with or without BOM; GB18030 is accepted as a fallback for
  files saved by Excel), a header row with the field names below (case-insensitive).
  Polygons go in a ``geometry`` column as WKT (or GeoJSON geometry text); points in
  ``lon``/``lat`` columns. Rows are numbered from 1 = the first data row after the header.

Empty cells / missing properties are "no value". Columns that the importer does not know
are ignored and listed in the report's notes. Columns marked *(info)* are written by the
exporter for people and are not read back (they are recomputed).

regions
    ``code`` (required; city 6, district 6 (GB/T 2260), street 9 = district + 3,
    community 12 = street + 3 digits), ``name`` (required), ``level`` (city | district |
    street | community; default from the code length, a 6-digit code is a district unless
    ``level`` says ``city``), ``parent_code`` (street/community: defaults to the code
    prefix; must be it; district: optional city whose code prefix (trailing ``00`` pairs
    removed) the district code starts with), ``geometry`` (Polygon or MultiPolygon;
    required for communities), ``area_m2`` *(info)*. The parent must exist in the file or
    the database.
units
    ``code`` (required, ≤ 40 characters of ``A-Z a-z 0-9 _ . -``), ``name`` (required),
    ``unit_type`` (required, one of :data:`~cityops.geo.models.UNIT_TYPES`),
    ``parent_code`` (a unit in the file or database; no cycles), ``credit_code``
    (统一社会信用代码: 18 characters of ``0-9 A-H J-N P-R T U W-Y`` with a valid GB 32100
    check character), ``phone``, ``region_codes`` (``;``-separated region codes that
    exist; a JSON list in GeoJSON), ``active`` (true/false, default true).
categories
    ``standard`` (gbt47678 | gbt30428 | local), ``kind`` (component | matter; ``event``
    is read as matter), ``code`` (gbt30428: 4 digits, gbt47678: 5 digits, local: 4 or
    5 digits and not a code of a national standard), ``big_class_code`` (2 digits, the
    start of ``code``), ``big_class_name``, ``name`` (all required), optional settings
    ``enabled``, ``handler_mode`` (:data:`~cityops.geo.models.HANDLER_MODES`;
    ``fixed_unit`` needs ``handler_unit_code``), ``handler_unit_type``,
    ``handler_unit_code`` (an existing unit), ``default_urgency`` (特急/紧急/一般, default
    一般), ``filing_standard``, ``closing_standard``. A row whose (standard, kind, code)
    exists **updates** that category: every column present in the file is set (an empty
    cell clears an optional setting); columns absent from the file are left alone.
grids
    ``code`` (required, 15 digits = community code (12) + 3-digit sequence; the community
    must exist with a geometry), ``geometry`` (required, Polygon), ``community_code``
    (optional; if given must equal the code's first 12 digits), ``management_level``,
    ``responsibility_grid_code`` + ``responsibility_grid_name`` (a new responsibility grid
    is created, its region being the community, or the street when it spans communities;
    the name is required for a new one), ``owner_unit_code``, ``note``, ``area_m2``
    *(info; computed geodesically)*. Geometry checks: valid (shapely's reason is reported),
    inside its community (tolerance :data:`CONTAIN_TOL_M`), no overlap with another grid
    of the same community in the file or the database (> :data:`OVERLAP_TOL_M2`; slivers
    narrower than :data:`OVERLAP_SHRINK_M` are ignored as noise), and the
    grids of each community touched by the file (with those already stored) tile it: gaps
    (wider than 2 × :data:`CONTAIN_TOL_M` and larger than :data:`GAP_TOL_M2`) are reported
    with their area and location. A gap is a community-level issue (no row number): with
    ``skip_invalid`` it does not stop the otherwise valid grids from being written.
components
    ``code`` (required; legacy 16 digits = 6 region + 2 big + 2 small + 6 serial, or
    GB/T 47678.5-2026 17 digits = 6 region + 2 big + 3 small + 6 serial),
    ``category_code`` (required; 4 digits for 16-digit codes → a gbt30428 or local
    category, 5 digits for 17-digit codes → gbt47678 or local; must equal the code's
    category part and exist as a component category), ``lon``/``lat`` (CSV; GeoJSON: a
    Point geometry), ``crs`` (wgs84 | cgcs2000 | gcj02 | bd09 per row, default the
    file-level ``crs`` option, else wgs84; stored as WGS84), ``status`` (default 完好,
    one of :data:`~cityops.geo.models.COMPONENT_STATUSES`), ``name``,
    ``competent_unit_code`` / ``owner_unit_code`` / ``maintainer_unit_code`` (existing
    units), ``initial_date`` / ``change_date`` (ISO ``YYYY-MM-DD``; change ≥ initial),
    ``data_source``, ``note``, ``grid_code`` *(info)*. The point must lie in a unit grid of
    the city (grid and grid code are derived from it) and the code's region part must be
    the district of that grid.

Every kind reports malformed codes, duplicate codes (in the file and against the
database), unknown references, missing required fields, bad enum values and unparsable
geometry, each as an :class:`ImportIssue` naming the file, row/feature, field and value.
All issues are collected; the report keeps the first :data:`MAX_ISSUES` and counts the rest.

Writing: validation is vectorised (numpy, shapely STRtree, one grid-index lookup for all
points), then rows go in with SQLAlchemy Core ``insert()`` in chunks on the session's
connection. Components, the bulk kind, skip SQLAlchemy's per-row parameter processing:
``executemany`` of plain tuples on SQLite, ``COPY … FROM STDIN`` on PostgreSQL (psycopg 3),
both inside the caller's transaction. After grids/components the geo version is bumped
(spatial indexes rebuild), and one audit summary row (``action="import"``) is recorded.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3i
import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import shape as geojson_shape
from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

import cityops.models  # noqa: F401  (every mapper: Grid.inspectors → access User)
from cityops.core import audit
from cityops.core.errors import Invalid
from cityops.core.tabular import TabularInput as _Input
from cityops.core.tabular import load_json, norm_cell, read_csv
from cityops.geo import crs as crsmod
from cityops.geo.crs import GEOD
from cityops.geo.index import bump_geo_version, indexes_for, local_transformer
from cityops.geo.models import (
    CATEGORY_KINDS,
    CATEGORY_STANDARDS,
    COMPONENT_STATUSES,
    H3_RES,
    HANDLER_MODES,
    REGION_CODE_LENGTH,
    REGION_LEVELS,
    UNIT_TYPES,
    URGENCIES,
    Category,
    Component,
    Grid,
    Region,
    ResponsibilityGrid,
    Unit,
    unit_regions,
)
from cityops.geo.service import chosen_standard

KINDS = ("regions", "units", "grids", "components", "categories")
FORMATS = ("geojson", "csv")
#: Issues kept in a report (the rest are only counted).
MAX_ISSUES = 1000
#: Rows per INSERT batch and codes per ``IN (…)`` lookup.
CHUNK = 5000
#: A grid may stick out of its community by this much (digitising noise), in metres.
CONTAIN_TOL_M = 0.5
#: Two grids of a community may overlap by at most this much (m²).
OVERLAP_TOL_M2 = 1.0
#: Overlap candidates: grids are shrunk by this much (m) first, so overlaps narrower than it
#: (floating-point noise along shared edges) are not measured.
OVERLAP_SHRINK_M = 0.05
#: Gaps in a community's tiling smaller than this (m²) are ignored.
GAP_TOL_M2 = 1.0
#: Gaps reported per community at most (the largest first).
MAX_GAPS_PER_COMMUNITY = 5

#: Fields read per kind (``geometry`` is the CSV column / GeoJSON geometry).
FIELDS: dict[str, tuple[str, ...]] = {
    "regions": ("code", "name", "level", "parent_code", "geometry", "area_m2"),
    "units": (
        "code",
        "name",
        "unit_type",
        "parent_code",
        "credit_code",
        "phone",
        "region_codes",
        "active",
    ),
    "categories": (
        "standard",
        "kind",
        "code",
        "big_class_code",
        "big_class_name",
        "name",
        "enabled",
        "handler_mode",
        "handler_unit_type",
        "handler_unit_code",
        "default_urgency",
        "filing_standard",
        "closing_standard",
    ),
    "grids": (
        "code",
        "community_code",
        "management_level",
        "responsibility_grid_code",
        "responsibility_grid_name",
        "owner_unit_code",
        "note",
        "area_m2",
        "geometry",
    ),
    "components": (
        "code",
        "category_code",
        "name",
        "status",
        "lon",
        "lat",
        "crs",
        "grid_code",
        "competent_unit_code",
        "owner_unit_code",
        "maintainer_unit_code",
        "initial_date",
        "change_date",
        "data_source",
        "note",
    ),
}
#: Fields every row must have.
REQUIRED: dict[str, tuple[str, ...]] = {
    "regions": ("code", "name"),
    "units": ("code", "name", "unit_type"),
    "categories": ("standard", "kind", "code", "big_class_code", "big_class_name", "name"),
    "grids": ("code", "geometry"),
    "components": ("code", "category_code", "lon", "lat"),
}

_UNIT_CODE_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z_.\-]{0,39}")
_RGRID_CODE_RE = _UNIT_CODE_RE
_PHONE_RE = re.compile(r"[0-9+\-() ,;/转#*]{3,40}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TRUE = {"true", "1", "yes", "y", "t", "是"}
_FALSE = {"false", "0", "no", "n", "f", "否"}
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
#: Legacy GeoJSON ``crs`` members naming lon/lat on WGS84 or CGCS2000.
_LONLAT_CRS = ("CRS84", "4326", "4490")


# --------------------------------------------------------------------------- report


@dataclass
class ImportIssue:
    """One problem: ``row`` is the 1-based CSV data row (header excluded) or 1-based
    GeoJSON feature number; 0 means the whole file or a group of rows (e.g. a community)."""

    file: str
    row: int
    field: str
    value: Any
    message: str

    def to_text(self, label: str = "row") -> str:
        where = f"{label} {self.row}, " if self.row else ""
        return (
            f'{self.file}: {where}field "{self.field}", value {_quote(self.value)}: {self.message}'
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "row": self.row,
            "field": self.field,
            "value": self.value,
            "message": self.message,
        }


@dataclass
class ImportReport:
    kind: str
    file: str
    fmt: str = "csv"
    #: Rows (CSV) or features (GeoJSON) read.
    total: int = 0
    #: Rows written (inserted or, for categories, updated).
    written: int = 0
    #: Of ``written``, rows that updated an existing row (categories).
    updated: int = 0
    #: Rows with at least one issue.
    invalid_rows: int = 0
    #: All issues found (``errors`` holds at most :data:`MAX_ISSUES` of them).
    error_count: int = 0
    errors: list[ImportIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skip_invalid: bool = False
    seconds: float = 0.0

    @property
    def row_label(self) -> str:
        return "feature" if self.fmt == "geojson" else "row"

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    @property
    def skipped(self) -> int:
        return self.total - self.written

    def numbering(self) -> str:
        if self.fmt == "geojson":
            return "features are numbered from 1 in file order"
        return "rows are numbered from 1 = the first data row after the header"

    def to_text(self) -> str:
        unit = self.row_label + ("s" if self.total != 1 else "")
        head = f"{self.file}: {self.kind} ({self.fmt}): {self.total} {unit} read"
        if self.error_count and not self.skip_invalid:
            head += (
                f", {self.error_count} error(s) in {self.invalid_rows} {self.row_label}(s):"
                " NOTHING written (fix the errors, or use --skip-invalid to write the valid"
                " rows)"
            )
        else:
            head += f", {self.written} written"
            if self.updated:
                head += f" ({self.written - self.updated} new, {self.updated} updated)"
            if self.error_count:
                head += (
                    f", {self.error_count} error(s), {self.invalid_rows} invalid"
                    f" {self.row_label}(s) skipped"
                )
        head += f" [{self.seconds:.2f} s]"
        lines = [head]
        if self.errors:
            lines.append(f"({self.numbering()})")
        lines.extend(f"{self.file}: note: {n}" for n in self.notes)
        lines.extend(i.to_text(self.row_label) for i in self.errors)
        if self.error_count > len(self.errors):
            lines.append(f"{self.file}: … and {self.error_count - len(self.errors)} more error(s)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "format": self.fmt,
            "total": self.total,
            "written": self.written,
            "updated": self.updated,
            "skipped": self.skipped,
            "invalid_rows": self.invalid_rows,
            "error_count": self.error_count,
            "errors_shown": len(self.errors),
            "numbering": self.numbering(),
            "errors": [i.to_dict() for i in self.errors],
            "notes": list(self.notes),
            "skip_invalid": self.skip_invalid,
            "seconds": round(self.seconds, 3),
        }


def _quote(value: Any) -> str:
    if value is None:
        return "(empty)"
    return json.dumps(str(value), ensure_ascii=False)


def _short(value: Any, limit: int = 80) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 1] + "…"
    return value


# --------------------------------------------------------------------------- helpers


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        f = fmt.lower()
        if f not in FORMATS:
            raise Invalid(f"unknown format {fmt!r}: expected geojson or csv", field="format")
        return f
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return "geojson"
    if suffix == ".csv":
        return "csv"
    raise Invalid(
        f"cannot tell the format of {path.name!r} from its suffix: use .geojson/.json or"
        " .csv, or give the format (--format geojson|csv)",
        field="format",
    )


def check_credit_code(code: str) -> str | None:
    """Why ``code`` is not a valid 统一社会信用代码 (GB 32100), or None when it is."""
    if len(code) != 18:
        return f"统一社会信用代码 must be 18 characters, not {len(code)}"
    for ch in code:
        if ch not in _USCC_CHARS:
            return (
                f"统一社会信用代码 contains {ch!r}: only digits and upper-case letters except"
                " I, O, S, V, Z are allowed"
            )
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(code[:17], _USCC_WEIGHTS, strict=True))
    expected = _USCC_CHARS[(31 - total % 31) % 31]
    if code[17] != expected:
        return f"统一社会信用代码 check character is {code[17]!r} but should be {expected!r} (GB 32100)"
    return None


def _is_digits(s: str, n: int) -> bool:
    return len(s) == n and s.isascii() and s.isdigit()


def _parse_bool(s: str) -> bool | None:
    v = s.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    return None


def _split_codes(s: str | None) -> list[str]:
    if not s:
        return []
    return [p.strip() for p in re.split(r"[;；,，]", s) if p.strip()]


def _geom_text(g: Any) -> str:
    try:
        return str(_short(shapely.to_wkt(g, rounding_precision=6), 60))
    except Exception:  # pragma: no cover - defensive
        return str(g)


def _areas_m2(geoms: NDArray[Any]) -> NDArray[np.float64]:
    """Geodesic areas (WGS84 ellipsoid, :data:`~cityops.geo.crs.GEOD`) of (multi)polygons.

    The same numbers as ``GEOD.geometry_area_perimeter`` (exterior minus holes, per part),
    without its per-ring Python overhead: one coordinate extraction, one call per ring.
    """
    geoms = _objarr(geoms)
    if len(geoms) == 0:
        return np.zeros(0)
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    cut = np.flatnonzero(np.diff(coord_of)) + 1
    starts = np.concatenate([[0], cut]).tolist()
    ends = np.concatenate([cut, [len(coord_of)]]).tolist()
    ring_area = np.empty(len(rings))
    pa = GEOD.polygon_area_perimeter
    lon, lat = coords[:, 0], coords[:, 1]
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        ring_area[k] = abs(pa(lon[a:b], lat[a:b])[0])
    exterior = np.ones(len(rings), dtype=bool)
    exterior[1:] = ring_of[1:] != ring_of[:-1]
    ring_area[~exterior] *= -1.0
    out = np.bincount(part_of[ring_of], weights=ring_area, minlength=len(geoms))
    return np.asarray(out, dtype=np.float64)


def _orient(geoms: NDArray[Any]) -> NDArray[Any]:
    """Exterior rings counter-clockwise, holes clockwise (RFC 7946)."""
    if hasattr(shapely, "orient_polygons"):
        return np.asarray(shapely.orient_polygons(geoms, exterior_cw=False), dtype=object)
    from shapely.geometry.polygon import orient  # pragma: no cover - shapely < 2.1

    out = []  # pragma: no cover
    for g in geoms:  # pragma: no cover
        if g is None or g.geom_type not in ("Polygon", "MultiPolygon"):
            out.append(g)
        elif g.geom_type == "Polygon":
            out.append(orient(g))
        else:
            out.append(shapely.MultiPolygon([orient(p) for p in g.geoms]))
    return np.asarray(out, dtype=object)  # pragma: no cover


def _objarr(items: Iterable[Any]) -> NDArray[Any]:
    """A 1-d object array (numpy must not look inside geometries)."""
    lst = list(items)
    out = np.empty(len(lst), dtype=object)
    out[:] = lst
    return out


def _chunks(seq: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for k in range(0, len(seq), size):
        yield seq[k : k + size]


def _existing(session: Session, column: Any, values: Iterable[str]) -> set[str]:
    """Which of ``values`` already exist in ``column`` (looked up in chunks)."""
    vals = sorted({v for v in values if v})
    found: set[str] = set()
    if not vals:
        return found
    table = column.class_.__tablename__
    name = column.key
    conn = session.connection()
    if conn.exec_driver_sql(f"SELECT 1 FROM {table} LIMIT 1").first() is None:
        return found
    style = conn.dialect.paramstyle
    for part in _chunks(vals):
        if style in ("qmark", "format", "pyformat"):
            mark = "?" if style == "qmark" else "%s"
            sql = f"SELECT {name} FROM {table} WHERE {name} IN ({', '.join([mark] * len(part))})"
            found.update(r[0] for r in conn.exec_driver_sql(sql, tuple(part)))
        else:  # pragma: no cover
            found.update(session.scalars(select(column).where(column.in_(part))))
    return found


def _metric(
    geoms: NDArray[Any], lon0: float, lat0: float
) -> tuple[NDArray[Any], Callable[[NDArray[np.float64], NDArray[np.float64]], Any]]:
    """Geometries in metres (transverse Mercator centred on the data) and the inverse."""
    tr = local_transformer(lon0, lat0)

    def fwd(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    def inv(x: NDArray[np.float64], y: NDArray[np.float64]) -> Any:
        return tr.transform(x, y, direction="INVERSE")

    return np.asarray(shapely.transform(geoms, fwd), dtype=object), inv


# --------------------------------------------------------------------------- input


class IssueCollector:
    """Collects an import's issues (capped at MAX_ISSUES listed) and marks the bad rows."""

    def __init__(self, file: str, n: int) -> None:
        self.file = file
        self.items: list[ImportIssue] = []
        self.count = 0
        self.bad = np.zeros(n, dtype=bool)

    def add(self, i: int | None, fld: str, value: Any, message: str) -> None:
        """Issue on row ``i`` (0-based; None = file/group level, which blocks no row)."""
        self.count += 1
        row = 0
        if i is not None:
            self.bad[i] = True
            row = i + 1
        if len(self.items) < MAX_ISSUES:
            self.items.append(ImportIssue(self.file, row, fld, _short(value), message))

    def fatal(self, fld: str, value: Any, message: str) -> None:
        """A file-level issue that makes every row unusable (e.g. a missing column)."""
        self.add(None, fld, value, message)
        self.bad[:] = True


def _read_geojson(path: Path, inp: _Input) -> list[tuple[int, str, str]]:
    problems: list[tuple[int, str, str]] = []
    doc = load_json(path, inp)
    if doc is None:
        return problems
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        inp.unreadable = ("type", f"expected a GeoJSON FeatureCollection, got {got!r}")
        return problems
    crs_member = doc.get("crs")
    if crs_member:
        name = json.dumps(crs_member)
        if not any(tag in name for tag in _LONLAT_CRS):
            inp.unreadable = (
                "crs",
                f"unsupported GeoJSON crs {_short(name, 80)}: coordinates must be WGS84 /"
                " CGCS2000 longitude/latitude (EPSG:4326 / EPSG:4490)",
            )
            return problems
    feats = doc.get("features")
    if not isinstance(feats, list):
        inp.unreadable = ("features", "the FeatureCollection has no 'features' list")
        return problems
    inp.n = len(feats)
    props_list: list[dict[str, Any]] = []
    geoms: list[Any] = []
    keys: Counter[str] = Counter()
    for k, f in enumerate(feats):
        if not isinstance(f, dict) or f.get("type") != "Feature":
            problems.append((k, "(feature)", "not a GeoJSON Feature object"))
            props_list.append({})
            geoms.append(None)
            continue
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            problems.append((k, "properties", "properties must be a JSON object"))
            props = {}
        props = {str(key).strip().lower(): v for key, v in props.items()}
        keys.update(props.keys())
        props_list.append(props)
        geoms.append(f.get("geometry"))
    known = set(FIELDS[inp.kind]) - {"geometry"}
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        inp.notes.append("ignored unknown propert(ies): " + ", ".join(unknown))
    for name in known:
        if name in keys:
            inp.present.add(name)
            inp.cols[name] = [norm_cell(p.get(name)) for p in props_list]
    inp.geoms = geoms
    if any(g is not None for g in geoms):
        inp.present.add("geometry")
    return problems


# --------------------------------------------------------------------------- job


class _Job:
    def __init__(self, session: Session, inp: _Input, skip_invalid: bool, crs: str | None) -> None:
        self.session = session
        self.inp = inp
        self.kind = inp.kind
        self.n = inp.n
        self.issues = IssueCollector(inp.file, inp.n)
        self.skip_invalid = skip_invalid
        self.crs = crs
        self.updated = 0

    def add(self, i: int | None, fld: str, value: Any, message: str) -> None:
        self.issues.add(i, fld, value, message)

    def good(self) -> NDArray[np.bool_]:
        return ~self.issues.bad

    def require(self, names: Sequence[str]) -> None:
        """Missing required columns (CSV) / values (both formats)."""
        for name in names:
            if self.inp.fmt == "csv" and name not in self.inp.present:
                self.issues.fatal(name, None, f"required column {name!r} is missing")
                continue
            values = self.inp.geoms if name == "geometry" else self.inp.col(name)
            for i, v in enumerate(values):
                if v is None:
                    self.add(i, name, None, f"required field {name!r} is empty")

    def check_len(self, name: str, limit: int) -> None:
        for i, v in enumerate(self.inp.col(name)):
            if v is not None and len(v) > limit:
                self.add(i, name, v, f"longer than {limit} characters")

    def check_enum(self, name: str, allowed: Sequence[str]) -> None:
        for i, v in enumerate(self.inp.col(name)):
            if v is not None and v not in allowed:
                self.add(i, name, v, f"must be one of {', '.join(allowed)}")

    def check_duplicates(self, name: str, keys: Sequence[str | None], what: str) -> None:
        first: dict[str, int] = {}
        label = "feature" if self.inp.fmt == "geojson" else "row"
        for i, key in enumerate(keys):
            if key is None:
                continue
            j = first.setdefault(key, i)
            if j != i:
                self.add(i, name, key, f"duplicate {what}: also in {label} {j + 1}")

    def bool_col(self, name: str, default: bool) -> list[bool]:
        out = []
        for i, v in enumerate(self.inp.col(name)):
            if v is None:
                out.append(default)
                continue
            b = _parse_bool(v)
            if b is None:
                self.add(i, name, v, "must be true or false")
                b = default
            out.append(b)
        return out

    def label(self, i: int) -> str:
        return f"{'feature' if self.inp.fmt == 'geojson' else 'row'} {i + 1}"

    def parse_polygons(self, multi_ok: bool) -> NDArray[Any]:
        """Shapely geometries per row (None where missing or unusable), oriented, 2D."""
        out = np.full(self.n, None, dtype=object)
        # Fast path: all parseable geometries in one vectorised call (GeoJSON dicts / text,
        # WKT); the per-row loop below parses the rest one by one for a precise message.
        texts = [
            json.dumps(r) if isinstance(r, dict) else (r if isinstance(r, str) else None)
            for r in self.inp.geoms
        ]
        is_json = np.array([t is not None and t.lstrip().startswith("{") for t in texts])
        is_wkt = np.array([t is not None for t in texts]) & ~is_json
        pre = np.full(self.n, None, dtype=object)
        if is_json.any():
            pre[is_json] = shapely.from_geojson(
                _objarr(t for t, j in zip(texts, is_json, strict=True) if j), on_invalid="ignore"
            )
        if is_wkt.any():
            pre[is_wkt] = shapely.from_wkt(
                _objarr(t for t, w in zip(texts, is_wkt, strict=True) if w), on_invalid="ignore"
            )
        for i, raw in enumerate(self.inp.geoms):
            if raw is None:
                continue
            try:
                if pre[i] is not None:
                    g = pre[i]
                elif isinstance(raw, dict):
                    g = geojson_shape(raw)
                elif isinstance(raw, str) and raw.lstrip().startswith("{"):
                    g = shapely.from_geojson(raw)
                elif isinstance(raw, str):
                    g = shapely.from_wkt(raw)
                else:
                    raise ValueError(f"unexpected {type(raw).__name__}")
            except Exception as exc:
                self.add(i, "geometry", _short(str(raw), 60), f"unparsable geometry: {exc}")
                continue
            if g is None or g.is_empty:
                self.add(i, "geometry", _short(str(raw), 60), "empty geometry")
                continue
            gt = g.geom_type
            if gt == "MultiPolygon" and not multi_ok and len(g.geoms) == 1:
                g = g.geoms[0]
                gt = "Polygon"
            allowed = ("Polygon", "MultiPolygon") if multi_ok else ("Polygon",)
            if gt not in allowed:
                extra = f" of {len(g.geoms)} parts" if gt == "MultiPolygon" else ""
                self.add(
                    i,
                    "geometry",
                    gt,
                    f"geometry must be {' or '.join(allowed)}, not {gt}{extra}",
                )
                continue
            out[i] = g
        has = np.array([g is not None for g in out], dtype=bool)
        if not has.any():
            return out
        idx = np.flatnonzero(has)
        geoms = shapely.force_2d(out[idx])
        b = shapely.bounds(geoms)
        finite = np.isfinite(b).all(axis=1)
        inrange = finite & (b[:, 0] >= -180) & (b[:, 2] <= 180) & (b[:, 1] >= -90) & (b[:, 3] <= 90)
        valid = shapely.is_valid(geoms)
        keep = np.ones(len(idx), dtype=bool)
        for k in np.flatnonzero(~inrange):
            i = int(idx[k])
            self.add(
                i,
                "geometry",
                _geom_text(geoms[k]),
                "coordinates are not longitude/latitude degrees (projected coordinates?"
                " expected WGS84/CGCS2000 lon/lat)",
            )
            keep[k] = False
        for k in np.flatnonzero(inrange & ~valid):
            i = int(idx[k])
            reason = shapely.is_valid_reason(geoms[k])
            self.add(i, "geometry", _geom_text(geoms[k]), f"invalid polygon: {reason}")
            keep[k] = False
        out[:] = None
        out[idx[keep]] = _orient(geoms[keep])
        return out


# --------------------------------------------------------------------------- entry point


def import_file(
    session: Session,
    kind: str,
    path: Path,
    skip_invalid: bool = False,
    fmt: str | None = None,
    *,
    crs: str | None = None,
) -> ImportReport:
    """Validate ``path`` and import it as ``kind``; see the module docstring for formats.

    Nothing is written when there is any issue, unless ``skip_invalid`` (then the valid
    rows are written). Never commits. ``crs`` is the default coordinate system of
    component points (wgs84 | cgcs2000 | gcj02 | bd09).
    """
    t0 = time.perf_counter()
    if kind not in KINDS:
        raise Invalid(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}", field="kind")
    path = Path(path)
    try:
        f = detect_format(path, fmt)
    except Invalid as exc:
        bad = ImportReport(kind=kind, file=path.name, fmt=(fmt or path.suffix.lstrip(".") or "?"))
        bad.error_count = 1
        bad.errors = [ImportIssue(path.name, 0, "format", fmt or path.suffix, exc.message)]
        return bad
    if crs is not None and crs.lower() not in crsmod.CRS_NAMES:
        raise Invalid(
            f"unknown crs {crs!r}: expected one of {', '.join(crsmod.CRS_NAMES)}", field="crs"
        )
    inp = _Input(kind=kind, file=path.name, fmt=f, known=frozenset(FIELDS[kind]))
    problems = read_csv(path, inp) if f == "csv" else _read_geojson(path, inp)
    job = _Job(session, inp, skip_invalid, crs.lower() if crs else None)
    report = ImportReport(kind=kind, file=path.name, fmt=f, skip_invalid=skip_invalid)
    if inp.unreadable is not None:
        job.issues.fatal(inp.unreadable[0], None, inp.unreadable[1])
    else:
        for i, fld, msg in problems:
            job.add(i, fld, None, msg)
        validate, write = _KINDS[kind]
        plan = validate(job)
        good = job.good()
        if not (job.issues.count and not skip_invalid) and good.any():
            report.written = write(job, plan, good)
            report.updated = job.updated
            audit.record(
                session,
                "import",
                kind,
                after={
                    "file": path.name,
                    "format": f,
                    "written": report.written,
                    "updated": report.updated,
                    "skipped": int(inp.n - report.written),
                },
            )
    report.total = inp.n
    report.invalid_rows = int(job.issues.bad.sum())
    report.error_count = job.issues.count
    report.errors = sorted(job.issues.items, key=lambda x: x.row)
    report.notes = inp.notes
    report.seconds = time.perf_counter() - t0
    return report


# --------------------------------------------------------------------------- regions


@dataclass
class _RegionPlan:
    codes: list[str | None]
    levels: list[str | None]
    parents: list[str | None]
    geoms: NDArray[Any]
    db: dict[str, tuple[int, str]]


def _city_prefix(code: str) -> str:
    p = code
    while p.endswith("00") and len(p) > 2:
        p = p[:-2]
    return p


def _validate_regions(job: _Job) -> _RegionPlan:
    s, inp = job.session, job.inp
    job.require(REQUIRED["regions"])
    job.check_len("name", 100)
    codes = inp.col("code")
    db = {c: (i, lv) for c, i, lv in s.execute(select(Region.code, Region.id, Region.level))}
    levels: list[str | None] = []
    for i, (code, lvl) in enumerate(zip(codes, inp.col("level"), strict=True)):
        if lvl is not None and lvl not in REGION_LEVELS:
            job.add(i, "level", lvl, f"must be one of {', '.join(REGION_LEVELS)}")
            levels.append(None)
            continue
        if code is None:
            levels.append(None)
            continue
        if not (code.isascii() and code.isdigit() and len(code) in (6, 9, 12)):
            job.add(
                i,
                "code",
                code,
                "region code must be 6 (district/city, GB/T 2260), 9 (street) or 12"
                " (community) digits",
            )
            levels.append(None)
            continue
        if lvl is None:
            lvl = {6: "district", 9: "street", 12: "community"}[len(code)]
        elif REGION_CODE_LENGTH[lvl] != len(code):
            job.add(
                i,
                "code",
                code,
                f"a {lvl} code must be {REGION_CODE_LENGTH[lvl]} digits, not {len(code)}",
            )
            levels.append(None)
            continue
        levels.append(lvl)
    job.check_duplicates("code", codes, "region code")
    for i, code in enumerate(codes):
        if code is not None and code in db:
            job.add(i, "code", code, "region code already exists in the database")
    in_file = {c: (i, levels[i]) for i, c in enumerate(codes) if c is not None and levels[i]}
    parents: list[str | None] = []
    for i, (code, lvl, parent) in enumerate(
        zip(codes, levels, inp.col("parent_code"), strict=True)
    ):
        if code is None or lvl is None:
            parents.append(None)
            continue
        if lvl == "city":
            if parent is not None:
                job.add(i, "parent_code", parent, "a city has no parent region")
            parents.append(None)
            continue
        if lvl == "district":
            if parent is None:
                parents.append(None)
                continue
            plevel = in_file[parent][1] if parent in in_file else db.get(parent, (0, None))[1]
            if plevel is None:
                job.add(
                    i, "parent_code", parent, "parent region not found in the file or the database"
                )
            elif plevel != "city":
                job.add(
                    i,
                    "parent_code",
                    parent,
                    f"the parent of a district must be a city, not a {plevel}",
                )
            elif not code.startswith(_city_prefix(parent)):
                job.add(
                    i,
                    "code",
                    code,
                    f"district code does not start with its city's prefix {_city_prefix(parent)}",
                )
            parents.append(parent)
            continue
        expected = code[: 6 if lvl == "street" else 9]
        want = "district" if lvl == "street" else "street"
        if parent is not None and parent != expected:
            job.add(
                i,
                "parent_code",
                parent,
                f"a {lvl} code must start with its parent code: the parent of {code} is {expected}",
            )
            parents.append(None)
            continue
        plevel = in_file[expected][1] if expected in in_file else db.get(expected, (0, None))[1]
        if plevel is None:
            job.add(
                i,
                "parent_code",
                expected,
                f"parent {want} {expected} not found in the file or the database",
            )
        elif plevel != want:
            job.add(i, "parent_code", expected, f"parent {expected} is a {plevel}, not a {want}")
        parents.append(expected)
    geoms = job.parse_polygons(multi_ok=True)
    for i, (lvl, raw) in enumerate(zip(levels, inp.geoms, strict=True)):
        if lvl == "community" and raw is None:
            job.add(i, "geometry", None, "a community needs a geometry (its grids must tile it)")
    # Children of invalid parents in the file cannot be written either.
    order = sorted(
        (i for i in range(job.n) if levels[i]), key=lambda i: REGION_LEVELS.index(levels[i] or "")
    )
    for i in order:
        p = parents[i]
        if p is not None and p in in_file:
            pi = in_file[p][0]
            if job.issues.bad[pi] and not job.issues.bad[i]:
                job.add(i, "parent_code", p, f"parent region is invalid ({job.label(pi)})")
    return _RegionPlan(codes, levels, parents, geoms, db)


def _write_regions(job: _Job, plan: _RegionPlan, good: NDArray[np.bool_]) -> int:
    s = job.session
    ids = {c: v[0] for c, v in plan.db.items()}
    names = job.inp.col("name")
    has_geom = [i for i in np.flatnonzero(good).tolist() if plan.geoms[i] is not None]
    areas = dict(zip(has_geom, _areas_m2(plan.geoms[has_geom]).tolist(), strict=True))
    table = Region.__table__
    assert isinstance(table, Table)
    written = 0
    for lvl in REGION_LEVELS:
        rows = []
        for i in np.flatnonzero(good).tolist():
            if plan.levels[i] != lvl:
                continue
            g = plan.geoms[i]
            row: dict[str, Any] = {
                "code": plan.codes[i],
                "name": names[i],
                "level": lvl,
                "parent_id": ids[plan.parents[i] or ""] if plan.parents[i] else None,
                "geom": None,
                "area_m2": None,
                "min_lon": None,
                "min_lat": None,
                "max_lon": None,
                "max_lat": None,
            }
            if g is not None:
                b = g.bounds
                row.update(
                    geom=shapely.to_wkb(g),
                    area_m2=areas[i],
                    min_lon=b[0],
                    min_lat=b[1],
                    max_lon=b[2],
                    max_lat=b[3],
                )
            rows.append(row)
        for part in _chunks(rows):
            s.connection().execute(insert(table), list(part))
        if rows:
            new = [r["code"] for r in rows]
            for part in _chunks(new):
                ids.update(
                    s.execute(select(Region.code, Region.id).where(Region.code.in_(part))).all()
                )
        written += len(rows)
    return written


# --------------------------------------------------------------------------- units


@dataclass
class _UnitPlan:
    db: dict[str, int]
    depth: list[int]
    regions: list[list[str]]
    active: list[bool]
    region_ids: dict[str, int]


def _validate_units(job: _Job) -> _UnitPlan:
    s, inp = job.session, job.inp
    job.require(REQUIRED["units"])
    job.check_len("name", 200)
    job.check_enum("unit_type", UNIT_TYPES)
    codes = inp.col("code")
    for i, code in enumerate(codes):
        if code is not None and not _UNIT_CODE_RE.fullmatch(code):
            job.add(
                i,
                "code",
                code,
                "unit code must be 1–40 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            )
    job.check_duplicates("code", codes, "unit code")
    db = dict(s.execute(select(Unit.code, Unit.id)).all())
    for i, code in enumerate(codes):
        if code is not None and code in db:
            job.add(i, "code", code, "unit code already exists in the database")
    for i, cc in enumerate(inp.col("credit_code")):
        if cc is not None:
            problem = check_credit_code(cc)
            if problem:
                job.add(i, "credit_code", cc, problem)
    for i, ph in enumerate(inp.col("phone")):
        if ph is not None and not _PHONE_RE.fullmatch(ph):
            job.add(
                i,
                "phone",
                ph,
                "phone must be 3–40 characters of digits, spaces and + - ( ) , ; / 转 # *",
            )
    active = job.bool_col("active", True)
    region_ids = dict(s.execute(select(Region.code, Region.id)).all())
    regions: list[list[str]] = []
    for i, rc in enumerate(inp.col("region_codes")):
        lst = _split_codes(rc)
        for r in lst:
            if r not in region_ids:
                job.add(i, "region_codes", r, "region code not found in the database")
        regions.append(sorted(set(lst)))
    in_file = {c: i for i, c in enumerate(codes) if c is not None}
    parents = inp.col("parent_code")
    for i, p in enumerate(parents):
        if p is None:
            continue
        if p == codes[i]:
            job.add(i, "parent_code", p, "a unit cannot be its own parent")
        elif p not in in_file and p not in db:
            job.add(i, "parent_code", p, "parent unit not found in the file or the database")
    # Depth in the file's parent forest (parents first); cycles are errors.
    depth = [0] * job.n
    state = [0] * job.n  # 0 new, 1 visiting, 2 done
    for start in range(job.n):
        if state[start]:
            continue
        path: list[int] = []
        cur: int | None = start
        while cur is not None and state[cur] == 0:
            state[cur] = 1
            path.append(cur)
            p = parents[cur]
            cur = in_file.get(p) if p is not None and p != codes[cur] else None
        if cur is not None and state[cur] == 1:  # a cycle through cur
            cyc = path[path.index(cur) :]
            for j in cyc:
                job.add(j, "parent_code", parents[j], "parent chain forms a cycle")
                depth[j] = 0
                state[j] = 2
            path = path[: path.index(cur)]
            base = 1
        else:
            base = depth[cur] + 1 if cur is not None else 0
        for j in reversed(path):
            depth[j] = base
            state[j] = 2
            base += 1
    for i in sorted(range(job.n), key=lambda k: depth[k]):
        p = parents[i]
        if p is not None and p in in_file and p != codes[i]:
            pi = in_file[p]
            if job.issues.bad[pi] and not job.issues.bad[i]:
                job.add(i, "parent_code", p, f"parent unit is invalid ({job.label(pi)})")
    return _UnitPlan(db, depth, regions, active, region_ids)


def _write_units(job: _Job, plan: _UnitPlan, good: NDArray[np.bool_]) -> int:
    s, inp = job.session, job.inp
    ids = dict(plan.db)
    idx = sorted(np.flatnonzero(good).tolist(), key=lambda k: plan.depth[k])
    codes, parents = inp.col("code"), inp.col("parent_code")
    written = 0
    for d in sorted({plan.depth[i] for i in idx}):
        rows = [
            {
                "code": codes[i],
                "name": inp.col("name")[i],
                "unit_type": inp.col("unit_type")[i],
                "parent_id": ids[parents[i] or ""] if parents[i] else None,
                "credit_code": inp.col("credit_code")[i],
                "phone": inp.col("phone")[i],
                "active": plan.active[i],
            }
            for i in idx
            if plan.depth[i] == d
        ]
        for part in _chunks(rows):
            s.execute(insert(Unit), list(part))
        for part in _chunks([r["code"] for r in rows]):
            ids.update(s.execute(select(Unit.code, Unit.id).where(Unit.code.in_(part))).all())
        written += len(rows)
    links = [
        {"unit_id": ids[codes[i] or ""], "region_id": plan.region_ids[r]}
        for i in idx
        for r in plan.regions[i]
    ]
    for part in _chunks(links):
        s.execute(insert(unit_regions), list(part))
    return written


# --------------------------------------------------------------------------- categories

_CATEGORY_CODE_LEN = {"gbt30428": (4,), "gbt47678": (5,), "local": (4, 5)}
_CATEGORY_OPTIONAL = (
    "enabled",
    "handler_mode",
    "handler_unit_type",
    "handler_unit_code",
    "default_urgency",
    "filing_standard",
    "closing_standard",
)


@dataclass
class _CategoryPlan:
    kinds: list[str | None]
    existing: dict[tuple[str, str, str], int]
    units: dict[str, int]
    enabled: list[bool]


def _validate_categories(job: _Job) -> _CategoryPlan:
    s, inp = job.session, job.inp
    job.require(REQUIRED["categories"])
    job.check_enum("standard", CATEGORY_STANDARDS)
    job.check_len("big_class_name", 60)
    job.check_len("name", 100)
    kinds: list[str | None] = []
    for i, k in enumerate(inp.col("kind")):
        kk = "matter" if k == "event" else k
        if kk is not None and kk not in CATEGORY_KINDS:
            job.add(i, "kind", k, "must be component or matter (event)")
            kk = None
        kinds.append(kk)
    stds, codes, bigs = inp.col("standard"), inp.col("code"), inp.col("big_class_code")
    national: dict[tuple[str, str], tuple[str, str]] = {}
    existing: dict[tuple[str, str, str], int] = {}
    for row in s.execute(
        select(Category.id, Category.standard, Category.kind, Category.code, Category.name)
    ):
        existing[(row.standard, row.kind, row.code)] = row.id
        if row.standard != "local":
            national[(row.kind, row.code)] = (row.standard, row.name)
    keys: list[str | None] = []
    for i in range(job.n):
        std, kind, code, big = stds[i], kinds[i], codes[i], bigs[i]
        if big is not None and not _is_digits(big, 2):
            job.add(i, "big_class_code", big, "big class code must be 2 digits")
        if code is not None and std in _CATEGORY_CODE_LEN:
            lens = _CATEGORY_CODE_LEN[std]
            if not (code.isascii() and code.isdigit() and len(code) in lens):
                job.add(
                    i,
                    "code",
                    code,
                    f"a {std} category code must be {' or '.join(map(str, lens))} digits",
                )
            elif big is not None and _is_digits(big, 2) and not code.startswith(big):
                job.add(i, "code", code, f"category code must start with its big class code {big}")
            elif std == "local" and kind and (kind, code) in national:
                ns, nn = national[(kind, code)]
                job.add(
                    i, "code", code, f"local code collides with {ns} {kind} category {code} {nn}"
                )
        keys.append(f"{std}/{kind}/{code}" if std and kind and code else None)
    job.check_duplicates("code", keys, "category (standard, kind, code)")
    job.check_enum("handler_mode", HANDLER_MODES)
    job.check_enum("handler_unit_type", UNIT_TYPES)
    job.check_enum("default_urgency", URGENCIES)
    enabled = job.bool_col("enabled", True)
    units = dict(s.execute(select(Unit.code, Unit.id)).all())
    for i, (mode, uc) in enumerate(
        zip(inp.col("handler_mode"), inp.col("handler_unit_code"), strict=True)
    ):
        if uc is not None and uc not in units:
            job.add(i, "handler_unit_code", uc, "unit not found in the database")
        if mode == "fixed_unit" and uc is None:
            job.add(
                i, "handler_unit_code", None, "handler_mode fixed_unit needs a handler_unit_code"
            )
    return _CategoryPlan(kinds, existing, units, enabled)


def _write_categories(job: _Job, plan: _CategoryPlan, good: NDArray[np.bool_]) -> int:
    s, inp = job.session, job.inp
    present = set(inp.present)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    settable = [c for c in _CATEGORY_OPTIONAL if c in present]
    for i in np.flatnonzero(good):
        std, kind, code = inp.col("standard")[i], plan.kinds[i], inp.col("code")[i]
        base: dict[str, Any] = {
            "big_class_code": inp.col("big_class_code")[i],
            "big_class_name": inp.col("big_class_name")[i],
            "name": inp.col("name")[i],
        }
        for c in settable:
            if c == "enabled":
                base["enabled"] = plan.enabled[i]
            elif c == "handler_unit_code":
                uc = inp.col(c)[i]
                base["handler_unit_id"] = plan.units[uc] if uc else None
            elif c == "default_urgency":
                base["default_urgency"] = inp.col(c)[i] or "一般"
            else:
                base[c] = inp.col(c)[i]
        key = (std or "", kind or "", code or "")
        if key in plan.existing:
            base["_id"] = plan.existing[key]
            updates.append(base)
        else:
            row = {
                "standard": std,
                "kind": kind,
                "code": code,
                "is_local": std == "local",
                "enabled": True,
                "default_urgency": "一般",
                "handler_mode": None,
                "handler_unit_type": None,
                "handler_unit_id": None,
                "filing_standard": None,
                "closing_standard": None,
            }
            row.update(base)
            inserts.append(row)
    for part in _chunks(inserts):
        s.execute(insert(Category), list(part))
    if updates:
        cols = [c for c in updates[0] if c != "_id"]
        t = Category.__table__
        assert isinstance(t, Table)
        stmt = (
            update(t)
            .where(t.c.id == bindparam("b__id"))
            .values({c: bindparam(f"b_{c}") for c in cols})
        )
        params = [{f"b_{k}": v for k, v in u.items()} for u in updates]
        for part in _chunks(params):
            s.connection().execute(stmt, list(part))
    job.updated = len(updates)
    return len(inserts) + len(updates)


# --------------------------------------------------------------------------- grids


@dataclass
class _GridPlan:
    geoms: NDArray[Any]
    community_ids: dict[str, int]
    rgrid_existing: dict[str, int]
    rgrid_new: dict[str, tuple[str, str]]  # code → (name, region_code)
    units: dict[str, int]


def _validate_grids(job: _Job) -> _GridPlan:
    s, inp = job.session, job.inp
    job.require(REQUIRED["grids"])
    job.check_len("management_level", 20)
    codes = inp.col("code")
    for i, code in enumerate(codes):
        if code is not None and not _is_digits(code, 15):
            job.add(
                i,
                "code",
                code,
                "grid code must be 15 digits (12-digit community code + 3-digit sequence)",
            )
    job.check_duplicates("code", codes, "grid code")
    in_db = _existing(s, Grid.code, [c for c in codes if c])
    for i, code in enumerate(codes):
        if code is not None and code in in_db:
            job.add(i, "code", code, "grid code already exists in the database")
    comms = {
        c: (cid, g)
        for c, cid, g in s.execute(
            select(Region.code, Region.id, Region.geom).where(Region.level == "community")
        )
    }
    comm_of: list[str | None] = []
    for i, (code, cc) in enumerate(zip(codes, inp.col("community_code"), strict=True)):
        if code is None or not _is_digits(code, 15):
            comm_of.append(None)
            continue
        c = code[:12]
        if cc is not None and cc != c:
            job.add(i, "community_code", cc, f"does not match the grid code's community part {c}")
        if c not in comms:
            job.add(
                i, "code", code, f"community {c} (the first 12 digits) not found in the database"
            )
            comm_of.append(None)
        elif comms[c][1] is None:
            job.add(i, "code", code, f"community {c} has no geometry: import it with one first")
            comm_of.append(None)
        else:
            comm_of.append(c)
    units = dict(s.execute(select(Unit.code, Unit.id)).all())
    for i, uc in enumerate(inp.col("owner_unit_code")):
        if uc is not None and uc not in units:
            job.add(i, "owner_unit_code", uc, "unit not found in the database")
    job.check_len("note", 10_000)
    rgrid_existing, rgrid_new = _check_rgrids(job, codes)
    geoms = job.parse_polygons(multi_ok=False)
    _check_grid_geometry(job, geoms, comm_of, {c: g for c, (_, g) in comms.items()})
    return _GridPlan(geoms, {c: v[0] for c, v in comms.items()}, rgrid_existing, rgrid_new, units)


def _check_rgrids(
    job: _Job, codes: list[str | None]
) -> tuple[dict[str, int], dict[str, tuple[str, str]]]:
    s, inp = job.session, job.inp
    rcodes = inp.col("responsibility_grid_code")
    rnames = inp.col("responsibility_grid_name")
    for i, (rc, rn) in enumerate(zip(rcodes, rnames, strict=True)):
        if rc is not None and not _RGRID_CODE_RE.fullmatch(rc):
            job.add(
                i,
                "responsibility_grid_code",
                rc,
                "responsibility grid code must be 1–40 characters of A-Z, a-z, 0-9, '_', '.', '-'",
            )
        if rn is not None and rc is None:
            job.add(
                i, "responsibility_grid_code", None, "responsibility_grid_name given without a code"
            )
        if rn is not None and len(rn) > 100:
            job.add(i, "responsibility_grid_name", rn, "longer than 100 characters")
    existing = {
        c: (rid, region)
        for c, rid, region in s.execute(
            select(ResponsibilityGrid.code, ResponsibilityGrid.id, ResponsibilityGrid.region_code)
        )
    }
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, rc in enumerate(rcodes):
        if rc is not None:
            rows_of[rc].append(i)
    new: dict[str, tuple[str, str]] = {}
    for rc, rows in rows_of.items():
        gcodes = [codes[i] for i in rows if codes[i] and _is_digits(codes[i] or "", 15)]
        if rc in existing:
            region = existing[rc][1]
            for i in rows:
                gc = codes[i]
                if gc and _is_digits(gc, 15) and not gc.startswith(region):
                    job.add(
                        i,
                        "responsibility_grid_code",
                        rc,
                        f"responsibility grid {rc} belongs to region {region}; grid {gc} is"
                        " outside it",
                    )
            continue
        names: set[str] = {n for n in (rnames[i] for i in rows) if n}
        if not names:
            for i in rows:
                job.add(
                    i,
                    "responsibility_grid_name",
                    None,
                    f"responsibility grid {rc} is new: give its name",
                )
            continue
        if len(names) > 1:
            for i in rows:
                job.add(
                    i,
                    "responsibility_grid_name",
                    rnames[i],
                    f"responsibility grid {rc} has different names in the file: "
                    + ", ".join(sorted(names)),
                )
            continue
        comms = {g[:12] for g in gcodes if g}
        streets = {g[:9] for g in gcodes if g}
        if len(streets) > 1:
            for i in rows:
                job.add(
                    i,
                    "responsibility_grid_code",
                    rc,
                    f"responsibility grid {rc} spans several streets: "
                    + ", ".join(sorted(streets)),
                )
            continue
        region = next(iter(comms)) if len(comms) == 1 else (next(iter(streets)) if streets else "")
        new[rc] = (next(iter(names)), region)
    return {c: v[0] for c, v in existing.items()}, new


def _check_grid_geometry(
    job: _Job,
    geoms: NDArray[Any],
    comm_of: list[str | None],
    comm_wkb: dict[str, bytes | None],
) -> None:
    """Containment, overlaps and tiling, in a local metric projection."""
    s = job.session
    idx = np.array(
        [i for i in range(job.n) if geoms[i] is not None and comm_of[i] is not None], dtype=np.int64
    )
    if idx.size == 0:
        return
    touched = sorted({comm_of[i] or "" for i in idx})
    comm_geom = {c: shapely.from_wkb(comm_wkb[c]) for c in touched}
    # Grids already stored in the touched communities.
    db_codes: list[str] = []
    db_wkb: list[bytes] = []
    for c in touched:
        for code, wkb in s.execute(
            select(Grid.code, Grid.geom).where(Grid.code.like(f"{c}%")).order_by(Grid.code)
        ):
            db_codes.append(code)
            db_wkb.append(wkb)
    db_geoms = shapely.from_wkb(db_wkb) if db_wkb else np.empty(0, dtype=object)
    file_geoms = geoms[idx]
    b = shapely.total_bounds(np.concatenate([file_geoms, _objarr(comm_geom.values())]))
    lon0, lat0 = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    allg = np.concatenate([file_geoms, db_geoms, _objarr(comm_geom[c] for c in touched)])
    allm, inv = _metric(allg, lon0, lat0)
    nf, nd = len(file_geoms), len(db_geoms)
    fm, dm, cm = allm[:nf], allm[nf : nf + nd], allm[nf + nd :]
    comm_m = dict(zip(touched, cm, strict=True))
    f_comm = [comm_of[i] or "" for i in idx]
    all_comm = _objarr(f_comm + [c[:12] for c in db_codes])
    codes = job.inp.col("code")
    all_codes = [codes[i] or "" for i in idx] + db_codes

    # 1. Inside the community (with tolerance).
    cbuf = {c: shapely.buffer(g, CONTAIN_TOL_M) for c, g in comm_m.items()}
    for g in cbuf.values():
        shapely.prepare(g)
    cover = shapely.covers(_objarr(cbuf[c] for c in f_comm), fm)
    for k in np.flatnonzero(~cover):
        i = int(idx[k])
        outside = float(shapely.area(shapely.difference(fm[k], comm_m[f_comm[k]])))
        job.add(
            i,
            "geometry",
            _geom_text(geoms[i]),
            f"grid lies outside its community {f_comm[k]}: {outside:.1f} m² outside"
            f" (tolerance {CONTAIN_TOL_M} m)",
        )

    # 2. Overlaps within a community (file × file and file × database).
    # Candidate pairs: each file grid shrunk by OVERLAP_SHRINK_M against all grids, so that
    # neighbours that merely share an edge (the normal case) never become pairs. Slivers
    # narrower than that are precision noise; the rest are measured exactly below.
    tree = shapely.STRtree(allm[: nf + nd])
    qi, qj = tree.query(shapely.buffer(fm, -OVERLAP_SHRINK_M), predicate="intersects")
    keep = (qj != qi) & ((qj >= nf) | (qj > qi))
    qi, qj = qi[keep], qj[keep]
    same = all_comm[qi] == all_comm[qj]
    qi, qj = qi[same], qj[same]
    if qi.size:
        areas = shapely.area(shapely.intersection(fm[qi], allm[qj]))
        for a, p, q in zip(areas, qi, qj, strict=True):
            if a <= OVERLAP_TOL_M2:
                continue
            ip = int(idx[p])
            if q >= nf:
                job.add(
                    ip,
                    "geometry",
                    all_codes[p],
                    f"grid {all_codes[p]} overlaps existing grid {all_codes[q]} by {a:.1f} m²",
                )
            else:
                iq = int(idx[q])
                job.add(
                    iq,
                    "geometry",
                    all_codes[q],
                    f"grid {all_codes[q]} overlaps grid {all_codes[p]} ({job.label(ip)}) by"
                    f" {a:.1f} m²",
                )
                job.issues.bad[ip] = True

    # 3. The grids of each touched community tile it (gaps).
    members: dict[str, list[Any]] = defaultdict(list)
    for c, g in zip(all_comm.tolist(), np.concatenate([fm, dm]).tolist(), strict=True):
        members[c].append(g)
    for c in touched:
        cover_g = shapely.union_all(_objarr(members[c]))
        gap = shapely.difference(comm_m[c], cover_g)
        if gap.is_empty:
            continue
        # Opening: drop slivers narrower than 2 × tolerance (digitising noise).
        gap = shapely.buffer(shapely.buffer(gap, -CONTAIN_TOL_M), CONTAIN_TOL_M)
        parts = [p for p in shapely.get_parts(gap) if p.area > GAP_TOL_M2]
        parts.sort(key=lambda p: -p.area)
        for p in parts[:MAX_GAPS_PER_COMMUNITY]:
            pt = p.representative_point()
            lon, lat = inv(np.array([pt.x]), np.array([pt.y]))
            job.add(
                None,
                "geometry",
                c,
                f"community {c} is not fully covered by its grids: gap of {p.area:.1f} m²"
                f" near lon {float(lon[0]):.6f}, lat {float(lat[0]):.6f}",
            )
        if len(parts) > MAX_GAPS_PER_COMMUNITY:
            rest = sum(p.area for p in parts[MAX_GAPS_PER_COMMUNITY:])
            job.add(
                None,
                "geometry",
                c,
                f"community {c}: {len(parts) - MAX_GAPS_PER_COMMUNITY} more gap(s), {rest:.1f} m²"
                " in total",
            )


def _write_grids(job: _Job, plan: _GridPlan, good: NDArray[np.bool_]) -> int:
    s, inp = job.session, job.inp
    codes = inp.col("code")
    rcodes = inp.col("responsibility_grid_code")
    used = {rcodes[i] for i in np.flatnonzero(good) if rcodes[i]}
    rg_ids = dict(plan.rgrid_existing)
    new_rg = [
        {"code": c, "name": v[0], "region_code": v[1]}
        for c, v in sorted(plan.rgrid_new.items())
        if c in used
    ]
    for part in _chunks(new_rg):
        s.execute(insert(ResponsibilityGrid), list(part))
    for part in _chunks([r["code"] for r in new_rg]):
        rg_ids.update(
            s.execute(
                select(ResponsibilityGrid.code, ResponsibilityGrid.id).where(
                    ResponsibilityGrid.code.in_(part)
                )
            ).all()
        )
    idx = np.flatnonzero(good)
    areas = _areas_m2(plan.geoms[idx]).tolist()
    rows = []
    for i, area in zip(idx.tolist(), areas, strict=True):
        g = plan.geoms[i]
        code = codes[i] or ""
        b = g.bounds
        owner = inp.col("owner_unit_code")[i]
        rows.append(
            {
                "code": code,
                "community_id": plan.community_ids[code[:12]],
                "responsibility_grid_id": rg_ids[rcodes[i] or ""] if rcodes[i] else None,
                "geom": shapely.to_wkb(g),
                "area_m2": area,
                "management_level": inp.col("management_level")[i],
                "owner_unit_id": plan.units[owner] if owner else None,
                "note": inp.col("note")[i],
                "min_lon": b[0],
                "min_lat": b[1],
                "max_lon": b[2],
                "max_lat": b[3],
            }
        )
    table = Grid.__table__
    assert isinstance(table, Table)
    for part in _chunks(rows):
        s.connection().execute(insert(table), list(part))
    if rows:
        bump_geo_version(s, grids=True)
        indexes_for(s).invalidate()
    return len(rows)


# --------------------------------------------------------------------------- components


@dataclass
class _ComponentPlan:
    category_ids: list[int]
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    grid_ids: NDArray[np.int64]
    grid_codes: list[str | None]
    unit_ids: dict[str, list[int | None]]
    dates: dict[str, list[date | None]]


_LEGACY_STD = {16: "gbt30428", 17: "gbt47678"}
_CAT_LEN = {16: 4, 17: 5}


def _floats(job: _Job, name: str, values: list[str | None]) -> NDArray[np.float64]:
    try:
        arr = np.array([v if v is not None else "nan" for v in values], dtype=np.float64)
    except ValueError:
        arr = np.empty(len(values), dtype=np.float64)
        for i, v in enumerate(values):
            try:
                arr[i] = float(v) if v is not None else np.nan
            except ValueError:
                arr[i] = np.nan
                job.add(i, name, v, "not a number")
    return arr


def _validate_components(job: _Job) -> _ComponentPlan:
    s, inp = job.session, job.inp
    n = job.n
    # GeoJSON: the point comes from the geometry (lon/lat properties only as a fallback).
    if inp.fmt == "geojson":
        lon_col, lat_col = inp.col("lon"), inp.col("lat")
        for i, g in enumerate(inp.geoms):
            if g is None:
                continue
            if not isinstance(g, dict) or g.get("type") != "Point":
                t = g.get("type") if isinstance(g, dict) else type(g).__name__
                job.add(i, "geometry", t, "a component geometry must be a Point")
                continue
            c = g.get("coordinates")
            if not isinstance(c, list | tuple) or len(c) < 2:
                job.add(i, "geometry", _short(json.dumps(c), 60), "unparsable Point coordinates")
                continue
            lon_col[i], lat_col[i] = norm_cell(c[0]), norm_cell(c[1])
        inp.present.update(("lon", "lat"))
    job.require(REQUIRED["components"])
    codes = inp.col("code")
    cat_codes = inp.col("category_code")
    code_ok = np.zeros(n, dtype=bool)
    for i, code in enumerate(codes):
        if code is None:
            continue
        if code.isascii() and code.isdigit() and len(code) in (16, 17):
            code_ok[i] = True
        else:
            job.add(
                i,
                "code",
                code,
                "component code must be 16 digits (legacy: 6 region + 2 big + 2 small + 6"
                " serial) or 17 digits (GB/T 47678.5: 6 region + 2 big + 3 small + 6 serial)",
            )
    job.check_duplicates("code", codes, "component code")
    in_db = _existing(s, Component.code, [c for c in codes if c])
    if in_db:
        for i, code in enumerate(codes):
            if code in in_db:
                job.add(i, "code", code, "component code already exists in the database")
    # Categories: 16-digit codes → 4-digit (gbt30428/local), 17-digit → 5-digit (gbt47678/local).
    lookup: dict[str, int] = {}
    for cid, std, code in s.execute(
        select(Category.id, Category.standard, Category.code)
        .where(Category.kind == "component")
        .order_by(Category.standard.desc())  # local first, so that national codes win
    ):
        if std == "local" or len(code) == {"gbt30428": 4, "gbt47678": 5}.get(std, 0):
            lookup[code] = cid
    chosen = chosen_standard(s)
    cat_ids = [0] * n
    for i, (code, cc) in enumerate(zip(codes, cat_codes, strict=True)):
        if cc is None or code is None or not code_ok[i]:
            continue
        want = _CAT_LEN[len(code)]
        if not _is_digits(cc, want):
            job.add(
                i,
                "category_code",
                cc,
                f"a {len(code)}-digit component code needs a {want}-digit category code",
            )
            continue
        if code[6 : 6 + want] != cc:
            job.add(
                i,
                "code",
                code,
                f"the code's category part {code[6 : 6 + want]} does not match category_code {cc}",
            )
        found_id = lookup.get(cc)
        if found_id is None:
            std = _LEGACY_STD[len(code)]
            hint = "" if std == chosen else f"; the city uses {chosen}"
            job.add(
                i,
                "category_code",
                cc,
                f"unknown component category {cc} in standard {std} or local classes{hint}",
            )
            continue
        cat_ids[i] = found_id
    job.check_enum("status", COMPONENT_STATUSES)
    job.check_len("name", 100)
    job.check_len("data_source", 20)
    units = dict(s.execute(select(Unit.code, Unit.id)).all())
    unit_ids: dict[str, list[int | None]] = {}
    for col in ("competent_unit_code", "owner_unit_code", "maintainer_unit_code"):
        vals = inp.col(col)
        ids: list[int | None] = [units.get(uc) if uc is not None else None for uc in vals]
        for i in [k for k, (uc, uid) in enumerate(zip(vals, ids, strict=True)) if uid is None]:
            if vals[i] is not None:
                job.add(i, col, vals[i], "unit not found in the database")
        unit_ids[col] = ids
    dates: dict[str, list[date | None]] = {}
    seen: dict[str, date | None] = {}

    def parse_day(v: str) -> date | None:
        if v not in seen:
            try:
                seen[v] = date.fromisoformat(v) if _DATE_RE.fullmatch(v) else None
            except ValueError:
                seen[v] = None
        return seen[v]

    for col in ("initial_date", "change_date"):
        raw = inp.col(col)
        out = [parse_day(v) if v is not None else None for v in raw]
        for i in [k for k, d in enumerate(out) if d is None]:
            if raw[i] is not None:
                job.add(i, col, raw[i], "must be an ISO date YYYY-MM-DD")
        dates[col] = out
    for i, (a, b) in enumerate(zip(dates["initial_date"], dates["change_date"], strict=True)):
        if a is not None and b is not None and b < a:
            job.add(i, "change_date", b.isoformat(), f"is before initial_date {a.isoformat()}")

    # Coordinates: parse, range-check, convert to WGS84 per crs, locate in the grids.
    lon = _floats(job, "lon", inp.col("lon"))
    lat = _floats(job, "lat", inp.col("lat"))
    has = ~(np.isnan(lon) | np.isnan(lat))
    bad_lon = has & ~((lon >= -180) & (lon <= 180))
    bad_lat = has & ~((lat >= -90) & (lat <= 90))
    for k in np.flatnonzero(bad_lon).tolist():
        job.add(k, "lon", inp.col("lon")[k], "longitude out of range [-180, 180]")
    for k in np.flatnonzero(bad_lat).tolist():
        job.add(k, "lat", inp.col("lat")[k], "latitude out of range [-90, 90]")
    has &= ~(bad_lon | bad_lat)
    for k in np.flatnonzero(~has & ~job.issues.bad).tolist():
        job.add(k, "lon", f"{inp.col('lon')[k]}, {inp.col('lat')[k]}", "no usable coordinates")
    default_crs = job.crs or "wgs84"
    crs_vals = np.array([(c or default_crs).lower() for c in inp.col("crs")], dtype=object)
    wlon, wlat = lon.copy(), lat.copy()
    for c in set(crs_vals.tolist()):
        sel = crs_vals == c
        if c not in crsmod.CRS_NAMES:
            for k in np.flatnonzero(sel).tolist():
                job.add(
                    k,
                    "crs",
                    inp.col("crs")[k],
                    f"must be one of {', '.join(crsmod.CRS_NAMES)}",
                )
            has &= ~sel
            continue
        m = sel & has
        if m.any() and c not in ("wgs84", "cgcs2000"):
            wlon[m], wlat[m] = crsmod.to_wgs84(lon[m], lat[m], c)
    idx = indexes_for(s)
    idx.invalidate()
    gindex = idx.grids(s)
    grid_ids = np.full(n, -1, dtype=np.int64)
    grid_codes: list[str | None] = [None] * n
    if has.any():
        where = np.flatnonzero(has)
        found = (
            gindex.locate_many(wlon[where], wlat[where])
            if len(gindex)
            else np.full(where.size, -1, dtype=np.int64)
        )
        for k, gi in zip(where.tolist(), found.tolist(), strict=True):
            if gi < 0:
                job.add(
                    k,
                    "lon",
                    f"{inp.col('lon')[k]}, {inp.col('lat')[k]}",
                    f"point ({wlon[k]:.6f}, {wlat[k]:.6f}) [WGS84] is outside every unit grid of"
                    " the city",
                )
                continue
            gc = gindex.codes[gi]
            grid_ids[k] = int(gindex.ids[gi])
            grid_codes[k] = gc
            code = codes[k]
            if code_ok[k] and code is not None and code[:6] != gc[:6]:
                job.add(
                    k,
                    "code",
                    code,
                    f"the code's region part {code[:6]} is not the district {gc[:6]} of grid {gc}"
                    " where the point lies",
                )
    return _ComponentPlan(cat_ids, wlon, wlat, grid_ids, grid_codes, unit_ids, dates)


_COMPONENT_COLUMNS = (
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
    "note",
)


def _write_components(job: _Job, plan: _ComponentPlan, good: NDArray[np.bool_]) -> int:
    s, inp = job.session, job.inp
    codes, names, statuses = inp.col("code"), inp.col("name"), inp.col("status")
    # Insert in code order: the unique index on code then grows at its end.
    order = sorted(np.flatnonzero(good).tolist(), key=lambda i: codes[i] or "")
    srcs, notes = inp.col("data_source"), inp.col("note")
    comp, own, mnt = (
        plan.unit_ids["competent_unit_code"],
        plan.unit_ids["owner_unit_code"],
        plan.unit_ids["maintainer_unit_code"],
    )
    lon, lat = plan.lon.tolist(), plan.lat.tolist()
    gids = plan.grid_ids.tolist()
    cats = plan.category_ids
    gcodes = plan.grid_codes
    cell = h3i.latlng_to_cell
    conn = s.connection()
    dialect = conn.dialect.name
    raw: Any = conn.connection.driver_connection
    use_copy = dialect == "postgresql" and hasattr(raw, "cursor") and hasattr(raw, "pipeline")
    use_driver = not use_copy and conn.dialect.paramstyle in ("qmark", "format", "pyformat")
    if use_copy or use_driver:
        # Validated dates are already ISO 'YYYY-MM-DD' text: what SQLite stores for DATE
        # and what PostgreSQL's COPY reads.
        d0, d1 = inp.col("initial_date"), inp.col("change_date")
    else:  # pragma: no cover
        d0, d1 = plan.dates["initial_date"], plan.dates["change_date"]  # type: ignore[assignment]

    def rows(part: Sequence[int]) -> list[tuple[Any, ...]]:
        return [
            (
                codes[i],
                cats[i],
                names[i],
                lon[i],
                lat[i],
                cell(lat[i], lon[i], H3_RES),
                gids[i],
                gcodes[i],
                statuses[i] or "完好",
                comp[i],
                own[i],
                mnt[i],
                d0[i],
                d1[i],
                srcs[i],
                notes[i],
            )
            for i in part
        ]

    cols = ", ".join(_COMPONENT_COLUMNS)
    written = 0
    if use_copy:
        # psycopg 3: COPY (text format) on the session's own connection, same transaction.
        # Codes, numbers, statuses and validated dates never need escaping; free text does.
        def esc(v: str | None) -> str:
            if v is None:
                return "\\N"
            if "\\" in v or "\t" in v or "\n" in v or "\r" in v:
                return (
                    v.replace("\\", "\\\\")
                    .replace("\t", "\\t")
                    .replace("\n", "\\n")
                    .replace("\r", "\\r")
                )
            return v

        null = "\\N"

        def num(v: int | None) -> str:
            return null if v is None else str(v)

        with raw.cursor() as cur, cur.copy(f"COPY components ({cols}) FROM STDIN") as cp:
            for part in _chunks(order, 20_000):
                cp.write(
                    "".join(
                        f"{codes[i]}\t{cats[i]}\t{esc(names[i])}\t{lon[i]!r}\t{lat[i]!r}\t"
                        f"{cell(lat[i], lon[i], H3_RES)}\t{gids[i]}\t{gcodes[i]}\t"
                        f"{statuses[i] or '完好'}\t{num(comp[i])}\t{num(own[i])}\t"
                        f"{num(mnt[i])}\t{d0[i] or null}\t{d1[i] or null}\t"
                        f"{esc(srcs[i])}\t{esc(notes[i])}\n"
                        for i in part
                    )
                )
                written += len(part)
    elif use_driver:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO components ({cols}) VALUES ({', '.join([mark] * len(_COMPONENT_COLUMNS))})"
        for part in _chunks(order, 20_000):
            conn.exec_driver_sql(sql, rows(part))
            written += len(part)
    else:  # pragma: no cover - other dialects: plain Core executemany
        table = Component.__table__
        assert isinstance(table, Table)
        for part in _chunks(order, 10_000):
            conn.execute(
                insert(table), [dict(zip(_COMPONENT_COLUMNS, r, strict=True)) for r in rows(part)]
            )
            written += len(part)
    if written:
        bump_geo_version(s, components=True)
        indexes_for(s).invalidate()
    return written


_KINDS: dict[str, tuple[Callable[[_Job], Any], Callable[[_Job, Any, NDArray[np.bool_]], int]]] = {
    "regions": (_validate_regions, _write_regions),
    "units": (_validate_units, _write_units),
    "categories": (_validate_categories, _write_categories),
    "grids": (_validate_grids, _write_grids),
    "components": (_validate_components, _write_components),
}

"""Bulk import of legacy cases (历史案卷导入) from CSV or JSON, with validation.

``import_cases(session, path, skip_invalid=False)`` reads one file, checks **every** row
against the file itself and the database, and writes only when the file is clean — or,
with ``skip_invalid``, writes exactly the valid rows and reports the others. It never
commits: the caller's transaction does. The report is a
:class:`cityops.geo.importer.ImportReport` (kind ``cases``) whose issues name the file,
row, field and value.

File formats
============

* **CSV** (``.csv``): UTF-8 (with or without BOM; GB18030 accepted for files saved by
  Excel), a header row with the field names below (case-insensitive), rows numbered from
  1 = the first data row after the header.
* **JSON** (``.json``): a list of objects (or ``{"cases": [...]}``) with the field names
  as keys; objects numbered from 1 in file order.

Empty cells / missing keys / ``null`` are "no value"; unknown fields are ignored and
listed in the report's notes.

Fields
======

``number`` (required, ≤ 20 characters, unique in the file and the database; kept as is —
numbers of the form ``YYYYMMDDnnnnn`` also move that day's counter so that new cases never
collide with them), ``tracking_code`` (optional, ≤ 16, unique; generated when empty),
``source`` (required: inspector, public, hotline, video, iot, leader, upper, media, self,
or the Chinese label such as 监督员上报), ``case_type`` (component | matter, or 部件 |
事项; needed only when a ``category_code`` is both), ``category_code`` (required; looked
up in the city's standard, then local categories, then the other national standard —
``category_standard`` names one explicitly), ``urgency`` (特急 | 紧急 | 一般, default the
category's), ``description`` (required), ``address``, ``lon``/``lat`` (required; ``crs``
per row wgs84 | cgcs2000 | gcj02 | bd09, default the file-level ``crs``, else wgs84; the
point must lie in a unit grid of the city, which gives the grid code), ``reporter_name``,
``reporter_phone``, ``component_code`` (an existing component).

The workflow: ``stage`` (required: the current stage accept, verify, file, dispatch, sign,
handle, check, close, or the end state closed, void, rejected; Chinese labels such as 待处置
or 已结案 are accepted; 回退待审批/挂账/已合并 cannot be imported), the stage timestamps
``reported_at`` (required), ``accepted_at``, ``verified_at``, ``filed_at``,
``dispatched_at``, ``signed_at``, ``handled_at``, ``checked_at``, ``closed_at`` (closed
cases only) and ``ended_at`` (when a void or rejected case ended; default its last
timestamp), ``handle_deadline`` (default: the category's handling limit from
``dispatched_at`` on the working-time clock). Timestamps are ISO 8601 (``2026-11-17
09:30``, ``2026-11-17T09:30:00+08:00``, ``…Z``; ``/`` date separators accepted); without
a zone they are local time (Asia/Shanghai). They must be in workflow order, within
2000–2099 and not in the future. A stage needs the timestamp that starts it (待处置 needs
``signed_at``, 已结案 ``closed_at`` …) and may not have the timestamps of later steps.

``lead_unit_code`` (an existing unit; required once ``dispatched_at`` is given or the stage
is 待签收 or later), ``co_unit_codes`` (``;``-separated; a JSON list in JSON files),
``close_type`` (正常 | 超时 | 差错 | 特殊; closed cases only; default 超时 when handled late,
else 正常), ``handled_late`` and ``supervised`` (true/false; ``handled_late`` defaults to
``handled_at`` > ``handle_deadline``), ``rework_count``, ``return_count``,
``extension_count`` (integers ≥ 0), ``end_reason`` (void/rejected).

What is written
===============

One ``cases`` row per valid row (with its ``case_units``), one history event per timestamp
given (上报, 受理, 核实, 立案, 派遣, 签收, 处置, 核查, 结案, and 作废/不予受理 at the end;
actor ``import``, in workflow order, each starting from the stage the previous one left),
the deadline and 临期 instant of each open case's current stage (what the workflow would
have set; the 临期/超期 flags themselves are left to the scheduler), an inspector of the
grid for open 核实/核查 tasks, and one audit summary row
(:func:`cityops.core.audit.record`, ``action="import"``). Validation is vectorised
(numpy, one grid lookup for all points); rows go in with bulk statements (SQLite
``executemany``, PostgreSQL ``COPY``) in the caller's transaction. A file at least as big as
the table and of at least :data:`~cityops.cases.simulate.DEFER_CHECKS_FROM` rows has the
secondary indexes (and on PostgreSQL the foreign keys) of the case tables rebuilt once after
the load, in the same transaction.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import h3.api.basic_int as h3i
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

import cityops.models  # noqa: F401  (every mapper configured)
from cityops.cases import simulate as sim
from cityops.cases.models import (
    CLOSE_TYPES,
    SOURCES,
    STAGES,
    Case,
    CaseSequence,
)
from cityops.cases.service import CLOCK_STAGE, WARN_FRACTION
from cityops.core import audit
from cityops.core.errors import Invalid
from cityops.core.tabular import TabularInput as _Input
from cityops.core.tabular import load_json, norm_cell, read_csv
from cityops.geo import crs as crsmod
from cityops.geo.importer import ImportIssue, ImportReport, IssueCollector
from cityops.geo.index import indexes_for
from cityops.geo.models import H3_RES, URGENCIES, Category, Component, Unit, grid_inspectors
from cityops.geo.service import chosen_standard
from cityops.worktime.models import MAX_YEAR, MIN_YEAR
from cityops.worktime.service import TZ

I64 = NDArray[np.int64]
NONE_T = sim.NONE_T

FORMATS = ("csv", "json")
#: The stage timestamps, in workflow order, with the action each one records.
STAMPS = (
    ("reported_at", "report"),
    ("accepted_at", "accept"),
    ("verified_at", "verify"),
    ("filed_at", "file"),
    ("dispatched_at", "dispatch"),
    ("signed_at", "sign"),
    ("handled_at", "handle"),
    ("checked_at", "check"),
    ("closed_at", "close"),
)
STAMP_NAMES = tuple(n for n, _ in STAMPS)
TIME_FIELDS = (*STAMP_NAMES, "ended_at", "handle_deadline")
#: Stages that can be imported, each with how far along the timestamps it allows (index
#: into STAMPS) and the timestamp that must start it.
STAGE_RANK = {
    "accept": 0,
    "verify": 1,
    "file": 2,
    "dispatch": 3,
    "sign": 4,
    "handle": 5,
    "check": 6,
    "close": 7,
    "closed": 8,
    "void": 3,
    "rejected": 1,
}
ENTRY_STAMP = {
    "verify": "accepted_at",
    "file": "accepted_at",
    "dispatch": "filed_at",
    "sign": "dispatched_at",
    "handle": "signed_at",
    "check": "handled_at",
    "close": "checked_at",
    "closed": "closed_at",
}
#: The stage each stamped action leads to on the normal path.
NEXT_STAGE = {
    "report": "accept",
    "verify": "file",
    "file": "dispatch",
    "dispatch": "sign",
    "sign": "handle",
    "handle": "check",
    "check": "close",
    "close": "closed",
}
NOT_IMPORTABLE = {
    "return_review": "a 回退 request needs its approval record",
    "parked": "挂账 needs its approval record",
    "merged": "a merged case needs the case it was merged into",
}
FIELDS = (
    "number",
    "tracking_code",
    "source",
    "case_type",
    "category_code",
    "category_standard",
    "urgency",
    "description",
    "address",
    "lon",
    "lat",
    "crs",
    "reporter_name",
    "reporter_phone",
    "component_code",
    "stage",
    *TIME_FIELDS,
    "lead_unit_code",
    "co_unit_codes",
    "close_type",
    "handled_late",
    "supervised",
    "rework_count",
    "return_count",
    "extension_count",
    "end_reason",
)
REQUIRED = (
    "number",
    "source",
    "category_code",
    "description",
    "lon",
    "lat",
    "stage",
    "reported_at",
)
LENGTHS = {
    "number": 20,
    "tracking_code": 16,
    "address": 300,
    "reporter_name": 100,
    "reporter_phone": 30,
}
SOURCE_LABELS = {label: key for key, label in SOURCES.items()}
STAGE_LABELS = {label: key for key, label in STAGES.items()}
CASE_TYPES = {"component": "component", "matter": "matter", "部件": "component", "事项": "matter"}
_TRUE = {"true", "1", "yes", "y", "t", "是"}
_FALSE = {"false", "0", "no", "n", "f", "否"}
_NUMBER_RE = re.compile(r"(\d{8})(\d{5})")
DEFAULT_END_REASON = "历史数据导入"
ACTOR = "import"
#: Tolerance for clock skew when refusing timestamps in the future.
FUTURE_SLACK = 10 * sim.MINUTE


class CaseImportReport(ImportReport):
    def numbering(self) -> str:
        if self.fmt == "json":
            return "objects are numbered from 1 in file order"
        return super().numbering()


# --------------------------------------------------------------------------- reading


def _read_json(path: Path, inp: _Input) -> list[tuple[int, str, str]]:
    problems: list[tuple[int, str, str]] = []
    doc = load_json(path, inp)
    if doc is None:
        return problems
    if isinstance(doc, dict) and isinstance(doc.get("cases"), list):
        doc = doc["cases"]
    if not isinstance(doc, list):
        inp.unreadable = ("json", f"expected a list of case objects, got {type(doc).__name__}")
        return problems
    inp.n = len(doc)
    rows: list[dict[str, Any]] = []
    keys: Counter[str] = Counter()
    for k, obj in enumerate(doc):
        if not isinstance(obj, dict):
            problems.append((k, "(object)", "not a JSON object"))
            rows.append({})
            continue
        row = {str(key).strip().lower(): v for key, v in obj.items()}
        keys.update(row.keys())
        rows.append(row)
    known = set(FIELDS)
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        inp.notes.append("ignored unknown field(s): " + ", ".join(unknown))
    for name in known:
        if name in keys:
            inp.present.add(name)
            inp.cols[name] = [norm_cell(r.get(name)) for r in rows]
    return problems


# --------------------------------------------------------------------------- validation


def _in_chunks(session: Session, column: Any, values: Sequence[str], out: Any) -> dict[str, Any]:
    """``{value: out column}`` for the values that exist in ``column``.

    Plain driver statements (no SQL compilation per chunk): PostgreSQL one ``= ANY(array)``
    query, SQLite chunked ``IN``."""
    vals = sorted(set(values))
    if not vals:
        return {}
    conn = session.connection()
    table, col, res = column.table.name, column.name, out.name
    if conn.dialect.name == "postgresql":
        sql = f"SELECT {col}, {res} FROM {table} WHERE {col} = ANY(%(v)s)"
        return dict(conn.exec_driver_sql(sql, {"v": vals}).tuples().all())
    found: dict[str, Any] = {}
    for k in range(0, len(vals), 5000):
        part = vals[k : k + 5000]
        sql = f"SELECT {col}, {res} FROM {table} WHERE {col} IN ({', '.join('?' * len(part))})"
        found.update(conn.exec_driver_sql(sql, tuple(part)).all())
    return found


def _parse_one(s: str) -> datetime | None:
    v = s.strip().replace("/", "-")
    if v.endswith(("Z", "z")):
        v = v[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        pass
    for f in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(v, f)
        except ValueError:
            continue
    return None


def parse_times(values: Sequence[str | None]) -> tuple[I64, list[int]]:
    """UTC µs per value (NONE_T where empty) and the positions that could not be parsed.

    Values without a zone are local time (Asia/Shanghai, UTC+8)."""
    n = len(values)
    out = np.full(n, NONE_T, dtype=np.int64)
    idx = [i for i, v in enumerate(values) if v is not None]
    if not idx:
        return out, []
    vals = [values[i] for i in idx]
    try:
        if min(map(len, cast(list[str], vals))) < 10:  # numpy would read "2026" as a year
            raise ValueError("short")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.array(vals, dtype="datetime64[us]")
        if np.isnat(arr).any():
            raise ValueError("empty")
        out[np.array(idx)] = arr.astype(np.int64) - sim.LOCAL_OFFSET
        return out, []
    except (ValueError, Warning):
        pass
    bad: list[int] = []
    for i, v in zip(idx, vals, strict=True):
        assert v is not None
        d = _parse_one(v)
        if d is None:
            bad.append(i)
            continue
        if d.tzinfo is None:
            d = d.replace(tzinfo=TZ)
        out[i] = sim.to_us(d.astimezone(UTC))
    return out, bad


@dataclass
class _Plan:
    """Validated columns (aligned with the file's rows)."""

    sources: list[str | None]
    cat_ids: I64
    case_types: list[str | None]
    urg: I64
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    grid_idx: I64
    times: dict[str, I64]
    stages: list[str | None]
    lead: I64
    co: list[list[int]]
    component: I64
    ints: dict[str, I64]
    bools: dict[str, list[bool | None]]
    close_types: list[str | None]


class _Job:
    def __init__(self, session: Session, inp: _Input, crs: str | None) -> None:
        self.s = session
        self.inp = inp
        self.n = inp.n
        self.issues = IssueCollector(inp.file, inp.n)
        self.crs = crs

    def add(self, i: int | None, fld: str, value: Any, message: str) -> None:
        self.issues.add(i, fld, value, message)

    def enum(self, name: str, mapping: dict[str, str], what: str) -> list[str | None]:
        out: list[str | None] = []
        allowed = ", ".join(dict.fromkeys(mapping.values()))
        for i, v in enumerate(self.inp.col(name)):
            if v is None:
                out.append(None)
                continue
            key = mapping.get(v) or mapping.get(v.lower())
            if key is None:
                self.add(i, name, v, f"unknown {what}: one of {allowed}")
            out.append(key)
        return out

    def validate(self) -> _Plan:
        inp, s, n = self.inp, self.s, self.n
        for name in REQUIRED:
            if inp.fmt == "csv" and name not in inp.present:
                self.issues.fatal(name, None, f"required column {name!r} is missing")
                continue
            for i, v in enumerate(inp.col(name)):
                if v is None:
                    self.add(i, name, None, f"required field {name!r} is empty")
        for name, limit in LENGTHS.items():
            for i, v in enumerate(inp.col(name)):
                if v is not None and len(v) > limit:
                    self.add(i, name, v, f"longer than {limit} characters")
        # numbers and tracking codes: unique in the file and the database
        for name, what in (("number", "case number"), ("tracking_code", "tracking code")):
            vals = inp.col(name)
            first: dict[str, int] = {}
            for i, v in enumerate(vals):
                if v is not None:
                    j = first.setdefault(v, i)
                    if j != i:
                        self.add(i, name, v, f"duplicate {what}: also in {self._label(j)}")
            column = Case.number if name == "number" else Case.tracking_code
            existing = _in_chunks(s, column, [v for v in vals if v is not None], Case.id)
            for i, v in enumerate(vals):
                if v is not None and v in existing:
                    self.add(
                        i, name, v, f"{what} already exists in the database (case id {existing[v]})"
                    )
        sources = self.enum("source", {**{k: k for k in SOURCES}, **SOURCE_LABELS}, "source")
        case_types = self.enum("case_type", CASE_TYPES, "case type")
        raw_stages = inp.col("stage")
        stages: list[str | None] = []
        allowed = ", ".join(STAGE_RANK)
        for i, v in enumerate(raw_stages):
            key = (
                None
                if v is None
                else (STAGE_LABELS.get(v) or (v.lower() if v.lower() in STAGES else None))
            )
            if v is not None and key is None:
                self.add(
                    i, "stage", v, f"unknown stage: one of {allowed} (or their Chinese labels)"
                )
            elif key in NOT_IMPORTABLE:
                self.add(i, "stage", v, f"stage {key} cannot be imported ({NOT_IMPORTABLE[key]})")
                key = None
            stages.append(key)
        cat_ids, urg = self._categories(case_types)
        times = self._times()
        self._order(times, stages, sources)
        lon, lat, gidx = self._points()
        lead, co = self._units(times, stages)
        component = self._components()
        ints: dict[str, I64] = {}
        for name in ("rework_count", "return_count", "extension_count"):
            arr = np.zeros(n, dtype=np.int64)
            for i, v in enumerate(inp.col(name)):
                if v is None:
                    continue
                if not (v.isascii() and v.isdigit()) or len(v) > 6:
                    self.add(i, name, v, "must be a whole number ≥ 0")
                    continue
                arr[i] = int(v)
            ints[name] = arr
        bools: dict[str, list[bool | None]] = {}
        for name in ("handled_late", "supervised"):
            out: list[bool | None] = []
            for i, v in enumerate(inp.col(name)):
                b = (
                    None
                    if v is None
                    else (True if v.lower() in _TRUE else False if v.lower() in _FALSE else None)
                )
                if v is not None and b is None:
                    self.add(i, name, v, "must be true or false")
                out.append(b)
            bools[name] = out
        close_types: list[str | None] = []
        for i, v in enumerate(inp.col("close_type")):
            if v is not None and v not in CLOSE_TYPES:
                self.add(i, "close_type", v, f"must be one of {', '.join(CLOSE_TYPES)}")
            elif v is not None and stages[i] not in (None, "closed"):
                self.add(
                    i,
                    "close_type",
                    v,
                    f"only closed cases have a close type, not stage {stages[i]}",
                )
            close_types.append(v)
        return _Plan(sources, cat_ids, case_types, urg, lon, lat, gidx, times, stages, lead, co,
                     component, ints, bools, close_types)  # fmt: skip

    def _label(self, i: int) -> str:
        return f"{'object' if self.inp.fmt == 'json' else 'row'} {i + 1}"

    def _categories(self, case_types: list[str | None]) -> tuple[I64, I64]:
        inp, s = self.inp, self.s
        std = chosen_standard(s)
        by_code: dict[str, list[Category]] = {}
        for c in s.scalars(select(Category)):
            by_code.setdefault(c.code, []).append(c)
        standards = {c.standard for cs in by_code.values() for c in cs}
        rank = {std: 0, "local": 1}
        cache: dict[tuple[str, str | None, str | None], Category | str] = {}
        ids = np.full(self.n, -1, dtype=np.int64)
        urg = np.full(self.n, URGENCIES.index("一般"), dtype=np.int64)
        given_urg = inp.col("urgency")
        for i, (code, kind, standard) in enumerate(
            zip(inp.col("category_code"), case_types, inp.col("category_standard"), strict=True)
        ):
            if code is None:
                continue
            key = (code, kind, standard)
            got = cache.get(key)
            if got is None:
                cands = by_code.get(code, [])
                if standard is not None:
                    if standard not in standards:
                        got = f"unknown category_standard {standard!r}: one of {', '.join(sorted(standards))}"
                    cands = [c for c in cands if c.standard == standard]
                if kind is not None:
                    cands = [c for c in cands if c.kind == kind]
                if got is None and not cands:
                    got = "unknown category code" + (f" for case_type {kind}" if kind else "")
                elif got is None:
                    best = min(rank.get(c.standard, 2) for c in cands)
                    cands = [c for c in cands if rank.get(c.standard, 2) == best]
                    if len(cands) > 1:
                        kinds = "/".join(sorted({c.kind for c in cands}))
                        got = f"category code {code} is both a component and a matter category ({kinds}): give case_type"
                    else:
                        got = cands[0]
                cache[key] = got
            if isinstance(got, str):
                self.add(i, "category_code", code, got)
                continue
            ids[i] = got.id
            u = given_urg[i]
            if u is None:
                urg[i] = URGENCIES.index(got.default_urgency or "一般")
            elif u in URGENCIES:
                urg[i] = URGENCIES.index(u)
        for i, u in enumerate(given_urg):
            if u is not None and u not in URGENCIES:
                self.add(i, "urgency", u, f"must be one of {', '.join(URGENCIES)}")
        return ids, urg

    def _times(self) -> dict[str, I64]:
        out: dict[str, I64] = {}
        lo = sim.local_midnight(date(MIN_YEAR, 1, 1))
        hi = sim.local_midnight(date(MAX_YEAR, 12, 31))
        future = sim.to_us(datetime.now(UTC)) + FUTURE_SLACK
        for name in TIME_FIELDS:
            raw = self.inp.col(name)
            t, bad = parse_times(raw)
            for i in bad:
                self.add(
                    i,
                    name,
                    raw[i],
                    "not a date-time (ISO 8601, e.g. 2026-11-17 09:30 or 2026-11-17T09:30:00+08:00)",
                )
            has = t != NONE_T
            for i in np.flatnonzero(has & ((t < lo) | (t > hi))).tolist():
                self.add(
                    i, name, raw[i], f"outside the working-time calendar ({MIN_YEAR}–{MAX_YEAR})"
                )
                t[i] = NONE_T
            if name != "handle_deadline":
                for i in np.flatnonzero((t != NONE_T) & (t > future)).tolist():
                    self.add(i, name, raw[i], "lies in the future")
            out[name] = t
        return out

    def _order(
        self, times: dict[str, I64], stages: list[str | None], sources: list[str | None]
    ) -> None:
        """Timestamps in workflow order; the stage matches the timestamps given."""
        raw = {k: self.inp.col(k) for k in TIME_FIELDS}
        n = self.n
        latest = np.full(n, NONE_T, dtype=np.int64)
        latest_name = np.full(n, -1, dtype=np.int64)
        for k, name in enumerate(STAMP_NAMES):
            t = times[name]
            has = t != NONE_T
            back = has & (latest != NONE_T) & (t < latest)
            for i in np.flatnonzero(back).tolist():
                prev = STAMP_NAMES[int(latest_name[i])]
                self.add(
                    i,
                    name,
                    raw[name][i],
                    f"is before {prev} {raw[prev][i]}: timestamps must follow the workflow order",
                )
            newer = has & ~back
            latest = np.where(newer, t, latest)
            latest_name = np.where(newer, k, latest_name)
        for name, what in (
            ("ended_at", "the last timestamp"),
            ("handle_deadline", "dispatched_at"),
        ):
            t = times[name]
            ref = latest if name == "ended_at" else times["dispatched_at"]
            back = (t != NONE_T) & (ref != NONE_T) & (t < ref)
            for i in np.flatnonzero(back).tolist():
                self.add(i, name, raw[name][i], f"is before {what}")
        for i, st in enumerate(stages):
            if st is None:
                continue
            entry = ENTRY_STAMP.get(st)
            if entry is not None and times[entry][i] == NONE_T:
                alt = st == "file" and times["verified_at"][i] != NONE_T
                if not alt:
                    self.add(i, entry, None, f"stage {st} ({STAGES[st]}) needs {entry}")
            limit = STAGE_RANK[st]
            for k, name in enumerate(STAMP_NAMES):
                if k > limit and times[name][i] != NONE_T:
                    self.add(
                        i,
                        name,
                        raw[name][i],
                        f"a case at stage {st} ({STAGES[st]}) cannot have {name} yet",
                    )
            if times["ended_at"][i] != NONE_T and st not in ("void", "rejected"):
                self.add(
                    i, "ended_at", raw["ended_at"][i], "only void and rejected cases have ended_at"
                )
            if st in ("void", "rejected") and times["closed_at"][i] != NONE_T:
                self.add(
                    i,
                    "closed_at",
                    raw["closed_at"][i],
                    f"a {st} case has no closed_at (use ended_at)",
                )

    def _points(self) -> tuple[NDArray[np.float64], NDArray[np.float64], I64]:
        inp, n = self.inp, self.n
        lon = np.full(n, np.nan)
        lat = np.full(n, np.nan)
        for name, arr, lo, hi in (("lon", lon, -180, 180), ("lat", lat, -90, 90)):
            for i, v in enumerate(inp.col(name)):
                if v is None:
                    continue
                try:
                    x = float(v)
                except ValueError:
                    self.add(i, name, v, "must be a number")
                    continue
                if not (math.isfinite(x) and lo <= x <= hi):
                    self.add(i, name, v, f"out of range [{lo}, {hi}]")
                    continue
                arr[i] = x
        has = ~(np.isnan(lon) | np.isnan(lat))
        default = (self.crs or "wgs84").lower()
        crs_vals = np.array([(c or default).lower() for c in inp.col("crs")], dtype=object)
        wlon, wlat = lon.copy(), lat.copy()
        for c in set(crs_vals.tolist()):
            sel = crs_vals == c
            if c not in crsmod.CRS_NAMES:
                for i in np.flatnonzero(sel).tolist():
                    self.add(
                        i, "crs", inp.col("crs")[i], f"must be one of {', '.join(crsmod.CRS_NAMES)}"
                    )
                has &= ~sel
                continue
            m = sel & has
            if m.any() and c not in ("wgs84", "cgcs2000"):
                wlon[m], wlat[m] = crsmod.to_wgs84(lon[m], lat[m], c)
        gidx = np.full(n, -1, dtype=np.int64)
        grids = indexes_for(self.s).grids(self.s)
        where = np.flatnonzero(has)
        if where.size:
            found = (
                grids.locate_many(wlon[where], wlat[where])
                if len(grids)
                else np.full(where.size, -1)
            )
            gidx[where] = found
            for i in where[found < 0].tolist():
                self.add(
                    i,
                    "lon",
                    f"{inp.col('lon')[i]}, {inp.col('lat')[i]}",
                    f"point ({wlon[i]:.6f}, {wlat[i]:.6f}) [WGS84] is outside every unit grid of the city",
                )
        return wlon, wlat, gidx

    def _units(
        self, times: dict[str, I64], stages: list[str | None]
    ) -> tuple[I64, list[list[int]]]:
        inp, n = self.inp, self.n
        codes = {c: i for c, i in self.s.execute(select(Unit.code, Unit.id))}
        lead = np.full(n, -1, dtype=np.int64)
        for i, v in enumerate(inp.col("lead_unit_code")):
            if v is None:
                st = stages[i]
                if times["dispatched_at"][i] != NONE_T or st in (
                    "sign",
                    "handle",
                    "check",
                    "close",
                ):
                    self.add(i, "lead_unit_code", None, "a dispatched case needs lead_unit_code")
                continue
            if v not in codes:
                self.add(i, "lead_unit_code", v, "unknown unit")
                continue
            lead[i] = codes[v]
        co: list[list[int]] = []
        for i, v in enumerate(inp.col("co_unit_codes")):
            if v is None:
                co.append([])
                continue
            ids: list[int] = []
            for code in re.split(r"[;；,，]", v or ""):
                code = code.strip()
                if not code:
                    continue
                if code not in codes:
                    self.add(i, "co_unit_codes", code, "unknown unit")
                elif codes[code] != lead[i] and codes[code] not in ids:
                    ids.append(codes[code])
            if ids and lead[i] < 0 and inp.col("lead_unit_code")[i] is None:
                self.add(i, "co_unit_codes", v, "co-units need a lead_unit_code")
            co.append(ids)
        return lead, co

    def _components(self) -> I64:
        vals = self.inp.col("component_code")
        out = np.full(self.n, -1, dtype=np.int64)
        given = [v for v in vals if v is not None]
        if not given:
            return out
        found = _in_chunks(self.s, Component.code, given, Component.id)
        for i, v in enumerate(vals):
            if v is None:
                continue
            if v not in found:
                self.add(i, "component_code", v, "unknown component")
            else:
                out[i] = found[v]
        return out


# --------------------------------------------------------------------------- writing


def _write(job: _Job, plan: _Plan, good: NDArray[np.bool_], file: str) -> tuple[int, int]:
    """Insert the good rows; returns (cases, events)."""
    s, inp = job.s, job.inp
    rows = np.flatnonzero(good)
    n = len(rows)
    wr = sim.BulkWriter(s)
    first_id = wr.next_id("cases")
    ids = first_id + np.arange(n, dtype=np.int64)
    everything = n == inp.n
    picked = rows.tolist()
    col = {
        k: (list(v) if everything else [v[i] for i in picked])
        for k, v in inp.cols.items()
        if k in FIELDS
    }

    def get(name: str) -> list[str | None]:
        return col.get(name) or [None] * n

    t = {k: v[rows] for k, v in plan.times.items()}
    stages = np.array([plan.stages[i] for i in rows.tolist()], dtype=object)
    sources = [plan.sources[i] for i in rows.tolist()]
    cat = plan.cat_ids[rows]
    urg = plan.urg[rows]
    lead = plan.lead[rows]
    grids = indexes_for(s).grids(s)
    gi = plan.grid_idx[rows]
    lon8, lat8 = np.round(plan.lon[rows], 8), np.round(plan.lat[rows], 8)
    vc = sim.VectorClock.of(s)
    limits = sim.LimitTable(s)
    lim = {
        stg: limits.arrays(stg, cat, urg)
        for stg in ("accept", "verify", "file", "dispatch", "sign", "handle", "check", "close")
    }
    # handling deadline: given, else the category's limit from dispatch
    hd = t["handle_deadline"].copy()
    need = (hd == NONE_T) & (t["dispatched_at"] != NONE_T)
    if need.any():
        hd[need] = vc.add(t["dispatched_at"][need], lim["handle"][0][need], lim["handle"][1][need])
    late_given = [plan.bools["handled_late"][i] for i in rows.tolist()]
    computed_late = (t["handled_at"] != NONE_T) & (hd != NONE_T) & (t["handled_at"] > hd)
    late = np.array(
        [
            g if g is not None else bool(c)
            for g, c in zip(late_given, computed_late.tolist(), strict=True)
        ],
        dtype=bool,
    )
    sup = np.array([bool(plan.bools["supervised"][i]) for i in rows.tolist()], dtype=bool)
    close_type = np.array([plan.close_types[i] for i in rows.tolist()], dtype=object)
    closed = stages == "closed"
    missing_ct = closed & np.array([c is None for c in close_type.tolist()], dtype=bool)
    close_type[missing_ct] = np.where(late[missing_ct], "超时", "正常")
    # events: one per timestamp given, each leaving the stage the next one starts from
    ev = sim.EventLog()
    cur = np.full(n, None, dtype=object)
    last_t = np.full(n, NONE_T, dtype=np.int64)
    verified = t["verified_at"] != NONE_T
    voided = stages == "void"
    rejected = stages == "rejected"
    by_source = {
        x: json.dumps({"source": x, "imported": file}, ensure_ascii=False) for x in set(sources)
    }
    report_data = np.array([by_source[x] for x in sources], dtype=object)
    desc = np.array(get("description"), dtype=object)
    for k, (name, action) in enumerate(STAMPS):
        m = np.flatnonzero(t[name] != NONE_T)
        if not m.size:
            continue
        to = np.full(len(m), NEXT_STAGE.get(action, "file"), dtype=object)
        if action == "accept":
            to = np.where(verified[m] | (stages[m] == "verify"), "verify", "file").astype(object)
            to[rejected[m]] = "accept"
        if action == "verify":
            ends_here = (
                voided[m]
                & (t["filed_at"][m] == NONE_T)
                & ((t["ended_at"][m] == NONE_T) | (t["ended_at"][m] == t[name][m]))
            )
            to[ends_here] = "void"
        note = desc[m] if action == "report" else None
        data: Any = None
        unit: Any = -1
        if action == "report":
            data = report_data[m]
        elif action == "dispatch":
            data = [
                f'{{"lead_unit_id": {a}, "co_unit_ids": {plan.co[r]}}}'
                for a, r in zip(lead[m].tolist(), rows[m].tolist(), strict=True)
            ]
        elif action == "close":
            ct_json = {c: json.dumps({"close_type": c}, ensure_ascii=False) for c in CLOSE_TYPES}
            data = [ct_json.get(c) for c in close_type[m].tolist()]
        if action in ("dispatch", "sign", "handle"):
            unit = lead[m]
        ev.add(m, k, t[name][m], action, cur[m], to, -1, unit=unit, note=note, data=data)
        cur[m] = to
        last_t[m] = t[name][m]
    end_reason = np.array(get("end_reason"), dtype=object)
    ended = voided | rejected
    end_reason[ended & np.array([r is None for r in end_reason.tolist()], dtype=bool)] = (
        DEFAULT_END_REASON
    )
    end_reason[~ended] = None
    for state, action in (("void", "void"), ("rejected", "reject")):
        m = np.flatnonzero((stages == state) & (cur != state))
        if m.size:
            te = np.where(t["ended_at"][m] != NONE_T, t["ended_at"][m], last_t[m])
            ev.add(m, len(STAMPS), te, action, cur[m], state, -1, note=end_reason[m])
            cur[m] = state
            last_t[m] = te
    # the current stage's clock (what _start_stage sets) for open cases
    stage_start = last_t.copy()
    sd = np.full(n, NONE_T, dtype=np.int64)
    warn = np.full(n, NONE_T, dtype=np.int64)
    for st in set(stages.tolist()):
        clk = CLOCK_STAGE.get(st)
        if clk is None:
            continue
        m = np.flatnonzero(stages == st)
        amt, unit = lim[clk][0][m], lim[clk][1][m]
        if clk == "handle":
            sd[m] = hd[m]
            warn[m] = vc.warn_before(hd[m], stage_start[m], amt, unit)
        else:
            sd[m] = vc.add(stage_start[m], amt, unit)
            warn[m] = vc.add(stage_start[m], amt * WARN_FRACTION, unit)
    assignee = np.full(n, -1, dtype=np.int64)
    tasks = np.flatnonzero(np.isin(stages, ["verify", "check"]))
    if tasks.size:
        first_insp: dict[int, int] = {}
        for gid, uid in s.execute(
            select(grid_inspectors.c.grid_id, grid_inspectors.c.user_id).order_by(
                grid_inspectors.c.user_id
            )
        ):
            first_insp.setdefault(int(gid), int(uid))
        assignee[tasks] = [first_insp.get(int(grids.ids[g]), -1) for g in gi[tasks].tolist()]
    # rows
    tracking = get("tracking_code")
    missing = [k for k, v in enumerate(tracking) if v is None]
    if missing:
        for k, code in zip(missing, sim.tracking_codes(len(missing)), strict=True):
            tracking[k] = code
    kinds = {
        c: ("component" if k == "component" else "matter")
        for c, k in s.execute(select(Category.id, Category.kind))
    }
    h3s = np.fromiter(
        (
            h3i.latlng_to_cell(y, x, H3_RES)
            for x, y in zip(lon8.tolist(), lat8.tolist(), strict=True)
        ),
        dtype=np.int64,
        count=n,
    )
    updated = np.maximum(last_t, t["reported_at"])
    cols = ev.columns()
    cases: dict[str, sim.Col] = {
        "id": sim.c_int(ids),
        "number": sim.c_text(get("number")),
        "tracking_code": sim.c_text(tracking),
        "source": sim.c_text(sources),
        "case_type": sim.c_text([kinds[int(c)] for c in cat.tolist()]),
        "category_id": sim.c_int(cat),
        "urgency": sim.c_text(np.array(URGENCIES, dtype=object)[urg]),
        "description": sim.c_text(desc),
        "address": sim.c_text(get("address")),
        "lon": sim.c_float(lon8),
        "lat": sim.c_float(lat8),
        "h3": sim.c_int(h3s),
        "grid_id": sim.c_int(grids.ids[gi]),
        "grid_code": sim.c_text(np.array(grids.codes, dtype=object)[gi]),
        "component_id": sim.c_int_null(plan.component[rows]),
        "reporter_user_id": sim.c_const(None, n),
        "reporter_name": sim.c_text(get("reporter_name")),
        "reporter_phone": sim.c_text(get("reporter_phone")),
        "stage": sim.c_text(stages),
        "stage_started_at": sim.c_time(stage_start),
        "stage_deadline": sim.c_time(sd),
        "stage_warn_at": sim.c_time(warn),
        "assignee_user_id": sim.c_int_null(assignee),
        "lead_unit_id": sim.c_int_null(lead),
        "pending_request": sim.c_const(None, n),
        "paused_since": sim.c_const(None, n),
        "near_due": sim.c_const(False, n),
        "overdue": sim.c_const(False, n),
        "supervised": sim.c_bool(sup),
        "extended": sim.c_bool(plan.ints["extension_count"][rows] > 0),
        "parked": sim.c_const(False, n),
        "escalation_level": sim.c_const(0, n),
        "extension_count": sim.c_int(plan.ints["extension_count"][rows]),
        "return_count": sim.c_int(plan.ints["return_count"][rows]),
        "rework_count": sim.c_int(plan.ints["rework_count"][rows]),
        "handled_late": sim.c_bool(late),
        "duplicate_of_id": sim.c_const(None, n),
        "report_count": sim.c_const(1, n),
        "last_seen_at": sim.c_time(t["reported_at"]),
        "close_type": sim.c_text(
            [c if k else None for c, k in zip(close_type.tolist(), closed.tolist(), strict=True)]
        ),
        "end_reason": sim.c_text(end_reason),
        **{name: sim.c_time(t[name]) for name in STAMP_NAMES},
        "handle_deadline": sim.c_time(hd),
        **sim.actor_columns(cols, n),
        "updated_at": sim.c_time(updated),
        "version": sim.c_const(1, n),
    }
    existing = int(s.scalar(select(func.count()).select_from(Case)) or 0)
    defer = n >= max(sim.DEFER_CHECKS_FROM, existing)
    conn = s.connection()
    if defer:
        sim.drop_checks(conn)
    wr.write("cases", list(cases), list(cases.values()))
    with_lead = np.flatnonzero(lead >= 0)
    cu_case, cu_unit = ids[with_lead].tolist(), lead[with_lead].tolist()
    cu_role = ["lead"] * len(with_lead)
    for k in with_lead.tolist():
        for u in plan.co[int(rows[k])]:
            cu_case.append(int(ids[k]))
            cu_unit.append(u)
            cu_role.append("co")
    wr.write(
        "case_units",
        ["case_id", "unit_id", "role"],
        [sim.c_int(cu_case), sim.c_int(cu_unit), sim.c_text(cu_role)],
    )
    n_ev = len(cols["case"]) if cols else 0
    if n_ev:
        wr.write(
            "case_events",
            list(sim.EVENT_COLUMNS),
            [
                sim.c_int(ids[cols["case"]]),
                sim.c_time(cols["at"]),
                sim.c_const(None, n_ev),
                sim.c_const(ACTOR, n_ev),
                sim.c_text(cols["action"]),
                sim.c_text(cols["from"]),
                sim.c_text(cols["to"]),
                sim.c_int_null(cols["unit"]),
                sim.c_text(cols["note"]),
                sim.c_text(cols["data"]),
            ],
            chunk=100_000,
        )
    if defer:
        sim.restore_checks(conn)
    wr.sync_sequence("cases")
    _advance_sequences(s, get("number"))
    return n, n_ev


def _advance_sequences(s: Session, numbers: list[str | None]) -> None:
    """Numbers like YYYYMMDDnnnnn move that day's counter past them (no future collision)."""
    top: dict[str, int] = {}
    for v in numbers:
        m = _NUMBER_RE.fullmatch(v or "")
        if m is not None:
            q = int(m.group(2))
            if q > top.get(m.group(1), 0):
                top[m.group(1)] = q
    best: dict[date, int] = {}
    for day, q in top.items():
        try:
            best[datetime.strptime(day, "%Y%m%d").date()] = q
        except ValueError:
            continue
    if not best:
        return
    have = {
        d: v
        for d, v in s.execute(
            select(CaseSequence.day, CaseSequence.last).where(CaseSequence.day.in_(list(best)))
        )
    }
    for d, q in sorted(best.items()):
        if d not in have:
            s.execute(insert(CaseSequence).values(day=d, last=q))
        elif q > have[d]:
            s.execute(update(CaseSequence).where(CaseSequence.day == d).values(last=q))


# --------------------------------------------------------------------------- entry point


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        f = fmt.lower()
        if f not in FORMATS:
            raise Invalid(
                f"unknown format {fmt!r}: expected csv or json", field="format", value=fmt
            )
        return f
    suffix = path.suffix.lower()
    if suffix in (".csv", ".json"):
        return suffix[1:]
    raise Invalid(
        f"cannot tell the format of {path.name!r} from its suffix: use .csv or .json, or give"
        " the format (--format csv|json)",
        field="format",
        value=path.suffix,
    )


def import_cases(
    session: Session,
    path: Path | str,
    skip_invalid: bool = False,
    *,
    fmt: str | None = None,
    crs: str | None = None,
) -> ImportReport:
    """Validate ``path`` and import its cases (see the module docstring). Never commits.

    Nothing is written when there is any issue, unless ``skip_invalid`` (then exactly the
    valid rows are). ``crs``: coordinate system of points without a ``crs`` field."""
    t0 = time.perf_counter()
    path = Path(path)
    try:
        f = detect_format(path, fmt)
    except Invalid as exc:
        bad = CaseImportReport(
            kind="cases", file=path.name, fmt=(fmt or path.suffix.lstrip(".") or "?")
        )
        bad.error_count = 1
        bad.errors = [ImportIssue(path.name, 0, "format", fmt or path.suffix, exc.message)]
        return bad
    if crs is not None and crs.lower() not in crsmod.CRS_NAMES:
        raise Invalid(
            f"unknown crs {crs!r}: expected one of {', '.join(crsmod.CRS_NAMES)}",
            field="crs",
            value=crs,
        )
    inp = _Input(kind="cases", file=path.name, fmt=f, known=frozenset(FIELDS))
    problems = read_csv(path, inp) if f == "csv" else _read_json(path, inp)
    job = _Job(session, inp, crs)
    report = CaseImportReport(kind="cases", file=path.name, fmt=f, skip_invalid=skip_invalid)
    events = 0
    if inp.unreadable is not None:
        job.issues.fatal(inp.unreadable[0], None, inp.unreadable[1])
    else:
        for i, fld, msg in problems:
            job.add(i, fld, None, msg)
        plan = job.validate()
        good = ~job.issues.bad
        if not (job.issues.count and not skip_invalid) and good.any():
            report.written, events = _write(job, plan, good, path.name)
            audit.record(
                session,
                "import",
                "cases",
                after={
                    "file": path.name,
                    "format": f,
                    "written": report.written,
                    "skipped": int(inp.n - report.written),
                    "events": events,
                },
            )
            report.notes.append(f"{events} history events written")
    report.total = inp.n
    report.invalid_rows = int(job.issues.bad.sum())
    report.error_count = job.issues.count
    report.errors = sorted(job.issues.items, key=lambda x: x.row)
    report.notes = inp.notes + report.notes
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["FIELDS", "CaseImportReport", "import_cases", "parse_times"]

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
grid for open 核实/核查 tasks, the case actor columns (``accepted_by_id`` … from
:func:`cityops.cases.simulate.actor_columns`), the daily number counters, and one audit
summary row (:func:`cityops.core.audit.record`, ``action="import"``). The evaluation
rollups are not written by :func:`import_cases`: run ``cityops evaluation rebuild`` after it
(the ``cityops import cases`` command does).

How
===

Everything is done column by column, never per row in Python where it can be helped: the
CSV is split into columns (the ``csv`` module only when the file has quotes), timestamps are
parsed by numpy or as one ``uint8`` matrix per column (other spellings fall back to
:func:`datetime.fromisoformat`), lookups go through one dictionary per column of distinct
values, the points through one grid lookup, and each check loops only over the rows it
flags. The rows are then written in batches of :data:`BATCH`, in the caller's transaction:
the case rows pre-formatted (SQLite ``executemany``, where constant columns are SQL
literals; PostgreSQL ``COPY``), then their lead units and their history derived from the new
case rows by one ``INSERT … SELECT`` each, in the database (the history holds nothing that is
not on the case row but each case's first event id and the co-units of its 派遣, which come
from a temporary table). A worker thread prepares the next batch while the database runs
those statements. A file at least as big as the table and of at least
:data:`~cityops.cases.simulate.DEFER_CHECKS_FROM` rows has the secondary indexes (and on
PostgreSQL the foreign keys) of the case tables rebuilt once after the load, in the same
transaction. ``report.timings`` holds the seconds of each phase.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import h3.api.basic_int as h3i
import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, insert, select, text, update
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
from cityops.core.tabular import clean_cells, load_json, norm_cell, read_csv
from cityops.geo import crs as crsmod
from cityops.geo.importer import ImportIssue, ImportReport, IssueCollector
from cityops.geo.index import indexes_for
from cityops.geo.models import H3_RES, URGENCIES, Category, Component, Unit, grid_inspectors
from cityops.geo.service import chosen_standard
from cityops.worktime.models import MAX_YEAR, MIN_YEAR
from cityops.worktime.service import TZ

I64 = NDArray[np.int64]
B = NDArray[np.bool_]
Obj = NDArray[np.object_]
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
#: Stages by code (the plan's ``stage_idx``; -1 = none).
STAGE_KEYS = tuple(STAGE_RANK)
_STAGE_CODE = {k: i for i, k in enumerate(STAGE_KEYS)}
#: Stages from 待签收 on: they need a lead unit.
_NEEDS_LEAD = tuple(_STAGE_CODE[k] for k in ("sign", "handle", "check", "close"))
#: Rows per batch of the write: the next batch is prepared (in a worker thread) while the
#: database writes the current one.
BATCH = 20_000
#: Temporary table of what the history statement needs beyond the case row: the id of each
#: new case's first event and the co-units of its 派遣.
_EV_TABLE = "cityops_import_history"


@dataclass
class CaseImportReport(ImportReport):
    #: Seconds per phase: read, validate, setup (what the writing reads from the database),
    #: prepare (case rows and history slots, in a worker thread: it overlaps the next
    #: phases), wait (for it), cases (their insert), units, events (the history statement),
    #: indexes (rebuilt after a deferred load), finish (audit row).
    timings: dict[str, float] = field(default_factory=dict)

    def numbering(self) -> str:
        if self.fmt == "json":
            return "objects are numbered from 1 in file order"
        return super().numbering()


# --------------------------------------------------------------------------- reading


def _norm_column(values: list[Any]) -> list[str | None]:
    """:func:`norm_cell` of each value (strings, the common case, column-wise)."""
    if set(map(type, values)) <= {str}:
        return clean_cells(values)
    return [norm_cell(v) for v in values]


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
    keys: set[str] = set()
    for k, obj in enumerate(doc):
        if not isinstance(obj, dict):
            problems.append((k, "(object)", "not a JSON object"))
            rows.append({})
            continue
        keys.update(obj)
        rows.append(obj)
    if any(key.strip().lower() != key for key in keys):  # field names as written: normalise
        rows = [{str(key).strip().lower(): v for key, v in obj.items()} for obj in rows]
        keys = {key.strip().lower() for key in keys}
    known = set(FIELDS)
    unknown = sorted(k for k in keys if k not in known)
    if unknown:
        inp.notes.append("ignored unknown field(s): " + ", ".join(unknown))
    names = [name for name in FIELDS if name in keys]
    columns: list[Sequence[Any]] = []
    if names:
        get = itemgetter(*names)
        try:  # every object has every field: one tuple per object, then the columns
            tuples = map(get, rows)
            columns = list(zip(*tuples, strict=True)) if len(names) > 1 else [list(tuples)]
        except KeyError:
            columns = [[r.get(name) for r in rows] for name in names]
    for name, values in zip(names, columns, strict=True):
        inp.present.add(name)
        inp.cols[name] = _norm_column(list(values))
    return problems


# --------------------------------------------------------------------------- validation


def _in_chunks(session: Session, column: Any, values: Iterable[str], out: Any) -> dict[str, Any]:
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
        return dict(conn.exec_driver_sql(sql, {"v": vals}).all())
    found: dict[str, Any] = {}
    for k in range(0, len(vals), 5000):
        part = vals[k : k + 5000]
        sql = f"SELECT {col}, {res} FROM {table} WHERE {col} IN ({', '.join('?' * len(part))})"
        found.update(conn.exec_driver_sql(sql, tuple(part)).all())
    return found


def _nones(col: Sequence[Any]) -> list[int]:
    """Positions of the empty values (after one C-speed scan: most columns have none)."""
    if None not in col:
        return []
    return [i for i, v in enumerate(col) if v is None]


def _all_none(col: Sequence[Any]) -> bool:
    return col.count(None) == len(col)


def _obj(values: Sequence[Any]) -> Obj:
    """A list as a 1-d object array (numpy would make a 2-d array of a list of lists)."""
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


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


#: Character positions of the plain local spellings read as one uint8 matrix: the digits
#: (year, month, day, hour, minute, second) by length, and which separators sit where.
_PLAIN_LENGTHS = (10, 16, 19)
_DIGIT_AT = ((0, 4), (5, 7), (8, 10), (11, 13), (14, 16), (17, 19))
_SEPARATORS = ((4, b"-/"), (7, b"-/"), (10, b" T"), (13, b":"), (16, b":"))


def _parse_plain(vals: Sequence[str]) -> tuple[I64, B]:
    """UTC µs of ``YYYY-MM-DD[ HH:MM[:SS]]`` local times (``/`` or ``-`` in the date, `` ``
    or ``T`` before the time) and which values had that form and a valid calendar date and
    time of day; the rest is left to :func:`parse_times`' general path."""
    k = len(vals)
    out = np.zeros(k, dtype=np.int64)
    ok = np.zeros(k, dtype=bool)
    lens = np.fromiter(map(len, vals), dtype=np.int64, count=k)
    for width in _PLAIN_LENGTHS:
        sel = np.flatnonzero(lens == width)
        if not sel.size:
            continue
        part = vals if sel.size == k else [vals[j] for j in sel.tolist()]
        # one byte per character: a non-ASCII character becomes "?" and fails the checks
        raw = "".join(part).encode("ascii", "replace")
        a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
        good = np.ones(len(a), dtype=bool)
        fields: list[I64] = []
        for lo, hi in _DIGIT_AT:
            if hi > width:
                fields.append(np.zeros(len(a), dtype=np.int64))
                continue
            d = a[:, lo:hi].astype(np.int64) - 48
            good &= ((d >= 0) & (d <= 9)).all(axis=1)
            fields.append(d @ (10 ** np.arange(hi - lo - 1, -1, -1, dtype=np.int64)))
        for pos, allowed in _SEPARATORS:
            if pos < width:
                good &= np.isin(a[:, pos], np.frombuffer(allowed, dtype=np.uint8))
        y, mo, d, hh, mi, ss = fields
        month = (y - 1970) * 12 + (mo - 1)
        good &= (y >= 1) & (mo >= 1) & (mo <= 12) & (d >= 1) & (hh < 24) & (mi < 60) & (ss < 60)
        month = np.where(good, month, 0)
        first = month.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        after = (month + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
        good &= d <= after - first
        us = (first + d - 1) * sim.DAY + hh * sim.HOUR + mi * sim.MINUTE + ss * sim.US
        out[sel] = us - sim.LOCAL_OFFSET
        ok[sel] = good
    return out, ok


def _parse_numpy(vals: list[str]) -> I64 | None:
    """UTC µs of zone-less local times when numpy reads every value (without a warning),
    else None."""
    try:
        if min(map(len, vals)) < 10:  # numpy would read "2026" as a year
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            arr = np.array(vals, dtype="datetime64[us]")
    except (ValueError, Warning):
        return None
    if np.isnat(arr).any():
        return None
    return cast(I64, arr.astype(np.int64) - sim.LOCAL_OFFSET)


def parse_times(values: Sequence[str | None]) -> tuple[I64, list[int]]:
    """UTC µs per value (NONE_T where empty) and the positions that could not be parsed.

    Values without a zone are local time (Asia/Shanghai, UTC+8). A column numpy reads as a
    whole is read so; else its plain spellings are read as one matrix of characters and the
    others (zones, ``/`` dates, fractions, …) one by one."""
    n = len(values)
    out = np.full(n, NONE_T, dtype=np.int64)
    if None in values:
        idx = [i for i, v in enumerate(values) if v is not None]
        vals = cast(list[str], [values[i] for i in idx])
    else:
        idx = list(range(n))
        vals = cast(list[str], list(values))
    if not idx:
        return out, []
    got = _parse_numpy(vals)
    if got is not None:
        if len(idx) == n:
            return got, []
        out[np.array(idx, dtype=np.int64)] = got
        return out, []
    t, ok = _parse_plain(vals)
    pos = np.array(idx, dtype=np.int64)
    out[pos[ok]] = t[ok]
    rest = np.flatnonzero(~ok).tolist()
    idx = [idx[j] for j in rest]
    vals = [vals[j] for j in rest]
    if not idx:
        return out, []
    got = _parse_numpy(vals)
    if got is not None:
        out[np.array(idx, dtype=np.int64)] = got
        return out, []
    bad: list[int] = []
    for i, v in zip(idx, vals, strict=True):
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
    urg: I64
    lon: NDArray[np.float64]
    lat: NDArray[np.float64]
    grid_idx: I64
    times: dict[str, I64]
    #: index into STAGE_KEYS, -1 = none
    stage_idx: I64
    lead: I64
    #: row → co-unit ids (rows with any)
    co: dict[int, list[int]]
    component: I64
    ints: dict[str, I64]
    #: handled_late as given: -1 none, 0 false, 1 true
    late_given: NDArray[np.int8]
    supervised: B
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

    def add_sorted(self, found: list[tuple[int, int, str, Any, str]]) -> None:
        """Issues (row, order within the row, field, value, message) in row order."""
        for i, _, fld, value, message in sorted(found, key=lambda x: (x[0], x[1])):
            self.add(i, fld, value, message)

    def lookup(
        self,
        name: str,
        resolve: Callable[[str], Any],
        problem: Callable[[str], str | None],
        none: Any = None,
    ) -> list[Any]:
        """Each value of a column resolved once per distinct value (empty cells: ``none``);
        rows whose value has a ``problem`` are reported (in row order)."""
        col = self.inp.col(name)
        table: dict[str | None, Any] = {None: none}
        bad: dict[str, str] = {}
        for v in set(col):
            if v is None:
                continue
            table[v] = resolve(v)
            msg = problem(v)
            if msg is not None:
                bad[v] = msg
        if bad:
            for i, v in enumerate(col):
                if v in bad:
                    self.add(i, name, v, bad[cast(str, v)])
        return list(map(table.__getitem__, col))

    def enum(self, name: str, mapping: dict[str, str], what: str) -> list[str | None]:
        allowed = ", ".join(dict.fromkeys(mapping.values()))

        def resolve(v: str) -> str | None:
            return mapping.get(v) or mapping.get(v.lower())

        def problem(v: str) -> str | None:
            return None if resolve(v) is not None else f"unknown {what}: one of {allowed}"

        return self.lookup(name, resolve, problem)

    def validate(self) -> _Plan:
        inp, s, n = self.inp, self.s, self.n
        for name in REQUIRED:
            if inp.fmt == "csv" and name not in inp.present:
                self.issues.fatal(name, None, f"required column {name!r} is missing")
                continue
            for i in _nones(inp.col(name)):
                self.add(i, name, None, f"required field {name!r} is empty")
        for name, limit in LENGTHS.items():
            col = inp.col(name)
            if max(map(len, filter(None, col)), default=0) > limit:
                for i, v in enumerate(col):
                    if v is not None and len(v) > limit:
                        self.add(i, name, v, f"longer than {limit} characters")
        # numbers and tracking codes: unique in the file and the database
        for name, what in (("number", "case number"), ("tracking_code", "tracking code")):
            vals = inp.col(name)
            given = cast(list[str], [v for v in vals if v is not None] if None in vals else vals)
            distinct = set(given)
            if len(distinct) != len(given):
                first: dict[str, int] = {}
                for i, v in enumerate(vals):
                    if v is not None:
                        j = first.setdefault(v, i)
                        if j != i:
                            self.add(i, name, v, f"duplicate {what}: also in {self._label(j)}")
            column = Case.number if name == "number" else Case.tracking_code
            existing = _in_chunks(s, column, distinct, Case.id)
            if existing:
                for i, v in enumerate(vals):
                    if v is not None and v in existing:
                        self.add(
                            i,
                            name,
                            v,
                            f"{what} already exists in the database (case id {existing[v]})",
                        )
        sources = self.enum("source", {**{k: k for k in SOURCES}, **SOURCE_LABELS}, "source")
        case_types = self.enum("case_type", CASE_TYPES, "case type")
        stage_idx = self._stages()
        cat_ids, urg = self._categories(case_types)
        times = self._times()
        self._order(times, stage_idx)
        lon, lat, gidx = self._points()
        lead, co = self._units(times, stage_idx)
        component = self._components()
        ints: dict[str, I64] = {}
        for name in ("rework_count", "return_count", "extension_count"):
            arr = np.zeros(n, dtype=np.int64)
            col = inp.col(name)
            if not _all_none(col):
                for i, v in enumerate(col):
                    if v is None:
                        continue
                    if not (v.isascii() and v.isdigit()) or len(v) > 6:
                        self.add(i, name, v, "must be a whole number ≥ 0")
                        continue
                    arr[i] = int(v)
            ints[name] = arr
        flags: dict[str, NDArray[np.int8]] = {}
        for name in ("handled_late", "supervised"):
            flag: dict[str | None, int] = {None: -1}
            for v in set(inp.col(name)):
                if v is not None:
                    low = v.lower()
                    flag[v] = 1 if low in _TRUE else 0 if low in _FALSE else -2

            def problem(v: str, flag: dict[str | None, int] = flag) -> str | None:
                return "must be true or false" if flag[v] == -2 else None

            got = self.lookup(name, flag.__getitem__, problem, none=-1)
            arr8 = np.array(got, dtype=np.int8)
            arr8[arr8 == -2] = -1
            flags[name] = arr8
        close_types = inp.col("close_type")
        if not _all_none(close_types):
            for i, v in enumerate(close_types):
                if v is not None and v not in CLOSE_TYPES:
                    self.add(i, "close_type", v, f"must be one of {', '.join(CLOSE_TYPES)}")
                elif v is not None and stage_idx[i] not in (-1, _STAGE_CODE["closed"]):
                    st = STAGE_KEYS[int(stage_idx[i])]
                    self.add(
                        i, "close_type", v, f"only closed cases have a close type, not stage {st}"
                    )
        return _Plan(
            sources=sources,
            cat_ids=cat_ids,
            urg=urg,
            lon=lon,
            lat=lat,
            grid_idx=gidx,
            times=times,
            stage_idx=stage_idx,
            lead=lead,
            co=co,
            component=component,
            ints=ints,
            late_given=flags["handled_late"],
            supervised=flags["supervised"] == 1,
            close_types=close_types,
        )

    def _label(self, i: int) -> str:
        return f"{'object' if self.inp.fmt == 'json' else 'row'} {i + 1}"

    def _stages(self) -> I64:
        allowed = ", ".join(STAGE_RANK)

        def key(v: str) -> str | None:
            return STAGE_LABELS.get(v) or (v.lower() if v.lower() in STAGES else None)

        def resolve(v: str) -> int:
            k = key(v)
            return -1 if k is None else _STAGE_CODE.get(k, -1)

        def problem(v: str) -> str | None:
            k = key(v)
            if k is None:
                return f"unknown stage: one of {allowed} (or their Chinese labels)"
            if k in NOT_IMPORTABLE:
                return f"stage {k} cannot be imported ({NOT_IMPORTABLE[k]})"
            return None

        return np.array(self.lookup("stage", resolve, problem, none=-1), dtype=np.int64)

    def _categories(self, case_types: list[str | None]) -> tuple[I64, I64]:
        inp, s = self.inp, self.s
        std = chosen_standard(s)
        by_code: dict[str, list[Category]] = {}
        for c in s.scalars(select(Category)):
            by_code.setdefault(c.code, []).append(c)
        standards = {c.standard for cs in by_code.values() for c in cs}
        rank = {std: 0, "local": 1}
        yiban = URGENCIES.index("一般")

        def resolve(key: tuple[str | None, str | None, str | None]) -> Category | str | None:
            code, kind, standard = key
            if code is None:
                return None
            cands = by_code.get(code, [])
            got: Category | str | None = None
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
            return got

        codes = inp.col("category_code")
        keys = list(zip(codes, case_types, inp.col("category_standard"), strict=True))
        distinct = list(dict.fromkeys(keys))
        found = [resolve(k) for k in distinct]
        pos = {k: j for j, k in enumerate(distinct)}
        kidx = np.fromiter(map(pos.__getitem__, keys), dtype=np.int64, count=self.n)
        ids_of = np.array([g.id if isinstance(g, Category) else -1 for g in found], np.int64)
        urg_of = np.array(
            [
                URGENCIES.index(g.default_urgency or "一般") if isinstance(g, Category) else yiban
                for g in found
            ],
            dtype=np.int64,
        )
        bad = {k for k, g in zip(distinct, found, strict=True) if isinstance(g, str)}
        if bad:
            for i, k in enumerate(keys):
                if k in bad:
                    self.add(i, "category_code", k[0], cast(str, found[pos[k]]))
        ids = ids_of[kidx]
        urg = urg_of[kidx]
        # urgency given: its index (-2 when not one of URGENCIES: reported below)
        given_urg = inp.col("urgency")
        if not _all_none(given_urg):
            table = {u: (URGENCIES.index(u) if u in URGENCIES else -2) for u in set(given_urg)}
            table[None] = -1
            u_idx = np.fromiter(map(table.__getitem__, given_urg), dtype=np.int64, count=self.n)
            urg = np.where(u_idx >= 0, u_idx, np.where(u_idx == -2, yiban, urg))
            urg[ids < 0] = yiban
            for i in np.flatnonzero(u_idx == -2).tolist():
                u = given_urg[i]
                self.add(i, "urgency", u, f"must be one of {', '.join(URGENCIES)}")
        return ids, urg

    def _times(self) -> dict[str, I64]:
        out: dict[str, I64] = {}
        lo = sim.local_midnight(date(MIN_YEAR, 1, 1))
        hi = sim.local_midnight(date(MAX_YEAR, 12, 31))
        future = sim.to_us(datetime.now(UTC)) + FUTURE_SLACK
        for name in TIME_FIELDS:
            raw = self.inp.col(name)
            if _all_none(raw):
                out[name] = np.full(self.n, NONE_T, dtype=np.int64)
                continue
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

    def _order(self, times: dict[str, I64], stage_idx: I64) -> None:
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
        # the stage against the timestamps: per stage, the rows it flags (then in row order,
        # each row's issues in the order entry stamp, later stamps, ended_at, closed_at)
        has = {name: times[name] != NONE_T for name in TIME_FIELDS}
        found: list[tuple[int, int, str, Any, str]] = []
        for code in np.unique(stage_idx[stage_idx >= 0]).tolist():
            st = STAGE_KEYS[code]
            rows = np.flatnonzero(stage_idx == code)
            entry = ENTRY_STAMP.get(st)
            if entry is not None:
                miss = rows[~has[entry][rows]]
                if st == "file":
                    miss = miss[~has["verified_at"][miss]]
                msg = f"stage {st} ({STAGES[st]}) needs {entry}"
                found.extend((i, 0, entry, None, msg) for i in miss.tolist())
            limit = STAGE_RANK[st]
            for k, name in enumerate(STAMP_NAMES):
                if k > limit:
                    msg = f"a case at stage {st} ({STAGES[st]}) cannot have {name} yet"
                    found.extend(
                        (i, 1 + k, name, raw[name][i], msg) for i in rows[has[name][rows]].tolist()
                    )
            if st not in ("void", "rejected"):
                msg = "only void and rejected cases have ended_at"
                found.extend(
                    (i, 20, "ended_at", raw["ended_at"][i], msg)
                    for i in rows[has["ended_at"][rows]].tolist()
                )
            else:
                msg = f"a {st} case has no closed_at (use ended_at)"
                found.extend(
                    (i, 21, "closed_at", raw["closed_at"][i], msg)
                    for i in rows[has["closed_at"][rows]].tolist()
                )
        self.add_sorted(found)

    def _floats(self, name: str, lo: float, hi: float) -> NDArray[np.float64]:
        col = self.inp.col(name)
        arr = np.full(self.n, np.nan)
        if None not in col:
            try:
                vals = np.array(list(map(float, cast(list[str], col))), dtype=np.float64)
            except ValueError:
                pass
            else:
                ok = np.isfinite(vals) & (vals >= lo) & (vals <= hi)
                for i in np.flatnonzero(~ok).tolist():
                    self.add(i, name, col[i], f"out of range [{lo}, {hi}]")
                arr[ok] = vals[ok]
                return arr
        for i, v in enumerate(col):
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
        return arr

    def _points(self) -> tuple[NDArray[np.float64], NDArray[np.float64], I64]:
        inp, n = self.inp, self.n
        lon = self._floats("lon", -180, 180)
        lat = self._floats("lat", -90, 90)
        has = ~(np.isnan(lon) | np.isnan(lat))
        default = (self.crs or "wgs84").lower()
        crs_col = inp.col("crs")
        wlon, wlat = lon.copy(), lat.copy()
        if _all_none(crs_col):
            groups: list[tuple[str, B | None]] = [(default, None)]
        else:
            crs_vals = _obj([(c or default).lower() for c in crs_col])
            groups = [(c, crs_vals == c) for c in dict.fromkeys(crs_vals.tolist())]
        for c, sel in groups:
            if c not in crsmod.CRS_NAMES:
                assert sel is not None
                for i in np.flatnonzero(sel).tolist():
                    self.add(i, "crs", crs_col[i], f"must be one of {', '.join(crsmod.CRS_NAMES)}")
                has &= ~sel
                continue
            m = has if sel is None else sel & has
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

    def _units(self, times: dict[str, I64], stage_idx: I64) -> tuple[I64, dict[int, list[int]]]:
        inp, n = self.inp, self.n
        codes = {c: i for c, i in self.s.execute(select(Unit.code, Unit.id))}
        col = inp.col("lead_unit_code")
        table: dict[str | None, int] = {v: codes.get(v, -2) for v in set(col) if v is not None}
        table[None] = -1
        lead = np.fromiter(map(table.__getitem__, col), dtype=np.int64, count=n)
        needs = (times["dispatched_at"] != NONE_T) | np.isin(stage_idx, _NEEDS_LEAD)
        for i in np.flatnonzero(((lead == -1) & needs) | (lead == -2)).tolist():
            if lead[i] == -1:
                self.add(i, "lead_unit_code", None, "a dispatched case needs lead_unit_code")
            else:
                self.add(i, "lead_unit_code", col[i], "unknown unit")
        lead[lead == -2] = -1
        co: dict[int, list[int]] = {}
        co_col = inp.col("co_unit_codes")
        if _all_none(co_col):
            return lead, co
        for i, v in enumerate(co_col):
            if v is None:
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
            if ids and lead[i] < 0 and col[i] is None:
                self.add(i, "co_unit_codes", v, "co-units need a lead_unit_code")
            if ids:
                co[i] = ids
        return lead, co

    def _components(self) -> I64:
        vals = self.inp.col("component_code")
        out = np.full(self.n, -1, dtype=np.int64)
        if _all_none(vals):
            return out
        given = [v for v in vals if v is not None]
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


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


_COPY_ESCAPES = ("\\", "\t", "\n", "\r")
_TF = np.array(["f", "t"], dtype=object)


class _Rows:
    """The columns of one table's new rows, ready for the driver: COPY text cells on
    PostgreSQL; on SQLite plain values for ``executemany``, where a column of a single value
    is an SQL literal and a column equal to an earlier one binds the same parameter (each
    value bound costs, row by row)."""

    def __init__(self, n: int, copy: bool) -> None:
        self.n = n
        self.copy = copy
        self.null: Any = "\\N" if copy else None
        #: the table's columns, and on SQLite what each is set to (?k or a literal)
        self.names: list[str] = []
        self.sql: list[str] = []
        #: the columns sent (COPY) / bound (SQLite: parameter k = values[k - 1])
        self.values: list[Sequence[Any]] = []
        self._times: list[tuple[I64, int]] = []

    def _add(self, name: str, values: Sequence[Any]) -> None:
        assert len(values) == self.n, name
        self.names.append(name)
        self.values.append(values)
        self.sql.append(f"?{len(self.values)}")

    def _single(self, name: str, values: list[Any]) -> bool:
        """SQLite: a column of one value (not a float) becomes a literal."""
        if self.copy or not self.n:
            return False
        first = values[0]
        if isinstance(first, float) or values.count(first) != self.n:
            return False
        self.names.append(name)
        self.sql.append(_sql_literal(first))
        return True

    def const(self, name: str, value: Any) -> None:
        if not self.copy:
            self.names.append(name)
            self.sql.append(_sql_literal(value))
        elif value is None:
            self._add(name, [self.null] * self.n)
        elif isinstance(value, bool):
            self._add(name, ["t" if value else "f"] * self.n)
        else:
            self._add(name, [str(value)] * self.n)

    def ints(self, name: str, a: I64, nullable: bool = False) -> None:
        """Integers (``nullable``: -1 is NULL, as ids)."""
        null = a == -1 if nullable else None
        vals = list(map(str, a.tolist())) if self.copy else a.tolist()
        if null is not None and null.any():
            o = _obj(vals)
            o[null] = self.null
            vals = o.tolist()
        if not self._single(name, vals):
            self._add(name, vals)

    def floats(self, name: str, a: NDArray[np.float64]) -> None:
        self._add(name, list(map(repr, a.tolist())) if self.copy else a.tolist())

    def bools(self, name: str, a: B) -> None:
        if self.copy:
            self._add(name, _TF[a.astype(np.intp)].tolist())
        elif not self._single(name, a.tolist()):
            self._add(name, a.tolist())

    def texts(self, name: str, values: Sequence[str | None] | Obj) -> None:
        vals: list[Any] = values.tolist() if isinstance(values, np.ndarray) else list(values)
        if not self.copy:
            if not self._single(name, vals):
                self._add(name, vals)
            return
        nulls = None in vals
        given = [v for v in vals if v is not None] if nulls else vals
        joined = "\x00".join(given)
        if any(ch in joined for ch in _COPY_ESCAPES):
            vals = [None if v is None else _copy_escape(v) for v in vals]
        if nulls:
            vals = [self.null if v is None else v for v in vals]
        self._add(name, vals)

    def times(self, name: str, t: I64) -> None:
        """UTC µs (NONE_T = NULL) as SQLAlchemy stores them."""
        null = t == NONE_T
        if not self.copy:
            if self.n and null.all():
                self.names.append(name)
                self.sql.append("NULL")
                return
            for earlier, k in self._times:
                if np.array_equal(earlier, t):
                    self.names.append(name)
                    self.sql.append(f"?{k}")
                    return
        vals = sim.ts_strings(t)
        if self.copy and null.any():
            vals = [self.null if v is None else v for v in vals]
        self._add(name, vals)
        self._times.append((t, len(self.values)))

    def payload(self) -> str | list[tuple[Any, ...]]:
        """COPY text, or the rows as tuples for ``executemany``."""
        part = zip(*self.values, strict=True)
        if self.copy:
            return "".join(f"{row}\n" for row in map("\t".join, part))
        return list(part) if self.values else [()] * self.n  # all literals (one row)

    def write(
        self, wr: sim.BulkWriter, table: str, payload: str | list[tuple[Any, ...]] | None = None
    ) -> None:
        if self.n == 0:
            return
        data = self.payload() if payload is None else payload
        if isinstance(data, str):
            wr.write_text(table, self.names, data)
            return
        sql = f"INSERT INTO {table} ({', '.join(self.names)}) VALUES ({', '.join(self.sql)})"
        cur = wr.raw.cursor()
        try:
            cur.executemany(sql, data)
        finally:
            cur.close()


def _copy_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


#: A void case whose 核实 ended it (no 立案; it ended when it was verified): its 核实 event
#: leads to void and no 作废 event follows.
_VOID_AT_VERIFY = (
    "(c.stage = 'void' AND c.verified_at IS NOT NULL AND c.filed_at IS NULL"
    " AND c.stage_started_at = c.verified_at)"
)


def _history_slots(t: dict[str, I64], st: I64, stage_start: I64) -> B:
    """Which history events each new case has (n × 10): slot k = 0 … 8 the event of the
    k-th stage timestamp, slot 9 the 作废/不予受理 that ends a void or rejected case — unless
    its 核实 ended it (no 立案, ended when verified: that event leads to void)."""
    void = st == _STAGE_CODE["void"]
    void_at_verify = (
        void
        & (t["verified_at"] != NONE_T)
        & (t["filed_at"] == NONE_T)
        & (stage_start == t["verified_at"])
    )
    end = (st == _STAGE_CODE["rejected"]) | (void & ~void_at_verify)
    return np.column_stack([*(t[name] != NONE_T for name in STAMP_NAMES), end])


#: :func:`_history_slots`' void case ended by its 核实, on the case row.
_VOID_AT_VERIFY = (
    "(c.stage = 'void' AND c.verified_at IS NOT NULL AND c.filed_at IS NULL"
    " AND c.stage_started_at = c.verified_at)"
)


@lru_cache(maxsize=4)
def _history_sql(pg: bool) -> str:
    """``INSERT … SELECT`` of the history events of the new cases (ids :first … :last).

    The slots of :func:`_history_slots`, each event at its timestamp (slot 9: at the
    case's ``stage_started_at`` = ended_at, else its last timestamp) and starting from the
    stage the previous present slot led to. Ids are explicit: the case's first event id
    (from :data:`_EV_TABLE`) plus the number of present slots before, so they follow each
    case's history in slot order (= time order: the timestamps were checked to follow the
    workflow), whatever order the database produces the rows in."""
    present = [f"c.{name} IS NOT NULL" for name in STAMP_NAMES]
    present.append(f"(c.stage = 'rejected' OR (c.stage = 'void' AND NOT {_VOID_AT_VERIFY}))")
    to: list[str] = []
    for _, action in STAMPS:
        if action == "accept":
            to.append(
                "CASE WHEN c.stage = 'rejected' THEN 'accept'"
                " WHEN c.verified_at IS NOT NULL OR c.stage = 'verify' THEN 'verify'"
                " ELSE 'file' END"
            )
        elif action == "verify":
            to.append(f"CASE WHEN {_VOID_AT_VERIFY} THEN 'void' ELSE 'file' END")
        else:
            to.append(f"'{NEXT_STAGE[action]}'")
    to.append("c.stage")

    def slots(exprs: Sequence[str | None]) -> str:
        whens = " ".join(f"WHEN {k} THEN {e}" for k, e in enumerate(exprs) if e is not None)
        return f"CASE s.k {whens} END"

    def came_from(k: int) -> str | None:
        if k == 0:
            return None
        whens = " ".join(f"WHEN {present[j]} THEN {to[j]}" for j in range(k - 1, -1, -1))
        return f"CASE {whens} END"

    def before(k: int) -> str:
        return " + ".join(["0", *(f"CASE WHEN {present[j]} THEN 1 ELSE 0 END" for j in range(k))])

    data: list[str | None] = [None] * 10
    data[0] = (
        "'{\"source\": \"' || c.source || '\", \"imported\": ' || CAST(:imported AS TEXT) || '}'"
    )
    data[4] = (
        "'{\"lead_unit_id\": ' || COALESCE(c.lead_unit_id, -1) || ', \"co_unit_ids\": '"
        " || COALESCE(x.co, '[]') || '}'"
    )
    data[8] = "'{\"close_type\": \"' || c.close_type || '\"}'"
    data_sql = slots(data)
    if pg:
        data_sql = f"CAST({data_sql} AS jsonb)"
    actions: list[str | None] = [f"'{a}'" for _, a in STAMPS]
    actions.append("CASE WHEN c.stage = 'void' THEN 'void' ELSE 'reject' END")
    note: list[str | None] = [None] * 10
    note[0], note[9] = "c.description", "c.end_reason"
    k_values = " UNION ALL ".join(f"SELECT {k}{' AS k' if k == 0 else ''}" for k in range(10))
    return (
        "INSERT INTO case_events (id, case_id, at, actor_id, actor_name, action, from_stage,"
        " to_stage, unit_id, note, data)"
        f" SELECT x.first_event + {slots([before(k) for k in range(10)])}, c.id,"
        f" {slots([*(f'c.{x}' for x in STAMP_NAMES), 'c.stage_started_at'])},"
        f" NULL, '{ACTOR}', {slots(actions)}, {slots([came_from(k) for k in range(10)])},"
        f" {slots(to)}, CASE WHEN s.k IN (4, 5, 6) THEN c.lead_unit_id END, {slots(note)},"
        f" {data_sql}"
        f" FROM cases c JOIN {_EV_TABLE} x ON x.case_id = c.id CROSS JOIN ({k_values}) s"
        f" WHERE c.id BETWEEN :first AND :last AND {slots(present)}"
    )


def _actor_columns(t: dict[str, I64], n: int) -> dict[str, sim.Col]:
    """``accepted_by_id`` … ``dispatch_stage_at`` of the new cases: who did 受理/立案/派遣 (the
    import: nobody) and when each case last entered 待派遣, given by the simulator's
    :func:`~cityops.cases.simulate.actor_columns` from those events of the history."""
    acts = [
        (k, name, a) for k, (name, a) in enumerate(STAMPS) if a in ("accept", "file", "dispatch")
    ]
    where = [np.flatnonzero(t[name] != NONE_T) for _, name, _ in acts]
    case = np.concatenate(where)
    slot = np.concatenate([np.full(len(m), k) for (k, _, _), m in zip(acts, where, strict=True)])
    order = np.lexsort((slot, case))
    action = np.concatenate(
        [np.full(len(m), a, dtype=object) for (_, _, a), m in zip(acts, where, strict=True)]
    )
    at = np.concatenate([t[name][m] for (_, name, _), m in zip(acts, where, strict=True)])
    cols = {
        "case": case[order],
        "action": action[order],
        "actor": np.full(len(case), -1, dtype=np.int64),
        "at": at[order],
        "data": np.full(len(case), None, dtype=object),
    }
    return sim.actor_columns(cols, n)


@dataclass
class _Batch:
    """Rows a … b of the rows written (case ids first … last), ready for the driver."""

    first: int
    last: int
    #: id of the batch's first history event
    first_event: int
    cases: _Rows
    cases_payload: str | list[tuple[Any, ...]]
    history: _Rows
    history_payload: str | list[tuple[Any, ...]]
    #: (case id, co-unit ids) of the batch's dispatched cases with co-units
    co: list[tuple[int, list[int]]]
    events: int
    seconds: float


class _Writer:
    """The valid rows and everything their case rows need from the database, read up front:
    :meth:`batch` uses no connection, so it runs in a worker thread while the connection
    writes the previous batch."""

    def __init__(self, s: Session, plan: _Plan, inp: _Input, good: B, file: str) -> None:
        self.plan, self.inp = plan, inp
        self.rows = np.flatnonzero(good)
        self.n = n = len(self.rows)
        self.wr = sim.BulkWriter(s)
        self.first_id = self.wr.next_id("cases")
        self.grids = indexes_for(s).grids(s)
        self.grid_ids = np.asarray(self.grids.ids, dtype=np.int64)
        self.grid_codes = np.array(self.grids.codes, dtype=object)
        self.vc = sim.VectorClock.of(s)
        self.limits = sim.LimitTable(s)
        self.kinds = {
            c: ("component" if k == "component" else "matter")
            for c, k in s.execute(select(Category.id, Category.kind))
        }
        st = plan.stage_idx[self.rows]
        self.inspector: dict[int, int] = {}
        if np.isin(st, [_STAGE_CODE["verify"], _STAGE_CODE["check"]]).any():
            q = select(grid_inspectors.c.grid_id, grid_inspectors.c.user_id)
            for gid, uid in s.execute(q.order_by(grid_inspectors.c.user_id)):
                self.inspector.setdefault(int(gid), int(uid))
        # every row valid: a batch's rows are a slice of the file's
        self.whole = n == inp.n
        tracking = _obj(self.column(inp.cols.get("tracking_code"), 0, n))
        missing = np.flatnonzero(tracking == None)  # noqa: E711  (element-wise on objects)
        if missing.size:
            tracking[missing] = sim.tracking_codes(len(missing))
        self.tracking = tracking
        co_rows = [i for i in sorted(plan.co) if good[i]]
        self.co = dict(zip(np.searchsorted(self.rows, co_rows).tolist(), co_rows, strict=True))
        self.imported = json.dumps(file, ensure_ascii=False)

    def column(self, values: Sequence[Any] | None, a: int, b: int) -> list[Any]:
        """``values`` (aligned with the file's rows; None: all empty) at rows a … b of the
        rows written."""
        if values is None:
            return [None] * (b - a)
        if self.whole:
            return list(values[a:b])
        return [values[i] for i in self.rows[a:b].tolist()]

    def batch(self, a: int, b: int, first_event: int) -> _Batch:
        """Rows a … b of the rows written as case rows and history slots (event ids from
        ``first_event``)."""
        t_start = time.perf_counter()
        plan, sel, n, vc, limits = self.plan, self.rows[a:b], b - a, self.vc, self.limits
        copy = self.wr.copy
        ids = self.first_id + np.arange(a, b, dtype=np.int64)

        def texts(name: str) -> list[Any]:
            return self.column(self.inp.cols.get(name), a, b)

        t = {k: v[sel] for k, v in plan.times.items()}
        st = plan.stage_idx[sel]
        cat, urg, lead, gi = plan.cat_ids[sel], plan.urg[sel], plan.lead[sel], plan.grid_idx[sel]
        lon8, lat8 = np.round(plan.lon[sel], 8), np.round(plan.lat[sel], 8)
        # handling deadline: given, else the category's limit from dispatch
        hd = t["handle_deadline"].copy()
        need = (hd == NONE_T) & (t["dispatched_at"] != NONE_T)
        lim: dict[str, tuple[NDArray[np.float64], I64]] = {}
        if need.any():
            lim["handle"] = limits.arrays("handle", cat, urg)
            amount, unit = lim["handle"]
            hd[need] = vc.add(t["dispatched_at"][need], amount[need], unit[need])
        computed_late = (t["handled_at"] != NONE_T) & (hd != NONE_T) & (t["handled_at"] > hd)
        late_given = plan.late_given[sel]
        late = np.where(late_given >= 0, late_given == 1, computed_late)
        closed = st == _STAGE_CODE["closed"]
        close_type = _obj(self.column(plan.close_types, a, b))
        close_type[~closed] = None
        missing_ct = closed & (close_type == None)  # noqa: E711
        close_type[missing_ct] = np.where(late[missing_ct], "超时", "正常")
        ended = (st == _STAGE_CODE["void"]) | (st == _STAGE_CODE["rejected"])
        end_reason = _obj(texts("end_reason"))
        end_reason[ended & (end_reason == None)] = DEFAULT_END_REASON  # noqa: E711
        end_reason[~ended] = None
        # the last event: the last timestamp (they are in order), or the end of a void or
        # rejected case (ended_at, else that last timestamp); its stage starts there
        last_t = np.maximum.reduce([t[name] for name in STAMP_NAMES])
        stage_start = np.where(ended & (t["ended_at"] != NONE_T), t["ended_at"], last_t)
        # the current stage's clock (what _start_stage sets) for open cases
        sd = np.full(n, NONE_T, dtype=np.int64)
        warn = np.full(n, NONE_T, dtype=np.int64)
        for code in np.unique(st).tolist():
            clk = CLOCK_STAGE.get(STAGE_KEYS[code])
            if clk is None:
                continue
            if clk not in lim:
                lim[clk] = limits.arrays(clk, cat, urg)
            m = np.flatnonzero(st == code)
            amt, unit = lim[clk][0][m], lim[clk][1][m]
            if clk == "handle":
                sd[m] = hd[m]
                warn[m] = vc.warn_before(hd[m], stage_start[m], amt, unit)
            else:
                sd[m] = vc.add(stage_start[m], amt, unit)
                warn[m] = vc.add(stage_start[m], amt * WARN_FRACTION, unit)
        assignee = np.full(n, -1, dtype=np.int64)
        tasks = np.flatnonzero((st == _STAGE_CODE["verify"]) | (st == _STAGE_CODE["check"]))
        if tasks.size:
            grid_of = self.grid_ids[gi[tasks]].tolist()
            assignee[tasks] = [self.inspector.get(g, -1) for g in grid_of]
        h3s = np.fromiter(
            map(h3i.latlng_to_cell, lat8.tolist(), lon8.tolist(), repeat(H3_RES, n)),
            dtype=np.int64,
            count=n,
        )
        ext = plan.ints["extension_count"][sel]
        kind_of = {c: self.kinds[c] for c in np.unique(cat).tolist()}

        r = _Rows(n, copy)
        r.ints("id", ids)
        r.texts("number", texts("number"))
        r.texts("tracking_code", self.tracking[a:b])
        r.texts("source", self.column(plan.sources, a, b))
        r.texts("case_type", [kind_of[c] for c in cat.tolist()])
        r.ints("category_id", cat)
        r.texts("urgency", np.array(URGENCIES, dtype=object)[urg])
        r.texts("description", texts("description"))
        r.texts("address", texts("address"))
        r.floats("lon", lon8)
        r.floats("lat", lat8)
        r.ints("h3", h3s)
        r.ints("grid_id", self.grid_ids[gi])
        r.texts("grid_code", self.grid_codes[gi])
        r.ints("component_id", plan.component[sel], nullable=True)
        r.const("reporter_user_id", None)
        r.texts("reporter_name", texts("reporter_name"))
        r.texts("reporter_phone", texts("reporter_phone"))
        r.texts("stage", np.array(STAGE_KEYS, dtype=object)[st])
        r.times("stage_started_at", stage_start)
        r.times("stage_deadline", sd)
        r.times("stage_warn_at", warn)
        r.ints("assignee_user_id", assignee, nullable=True)
        r.ints("lead_unit_id", lead, nullable=True)
        r.const("pending_request", None)
        r.const("paused_since", None)
        r.const("near_due", False)
        r.const("overdue", False)
        r.bools("supervised", plan.supervised[sel])
        r.bools("extended", ext > 0)
        r.const("parked", False)
        r.const("escalation_level", 0)
        r.ints("extension_count", ext)
        r.ints("return_count", plan.ints["return_count"][sel])
        r.ints("rework_count", plan.ints["rework_count"][sel])
        r.bools("handled_late", late)
        r.const("duplicate_of_id", None)
        r.const("report_count", 1)
        r.times("last_seen_at", t["reported_at"])
        r.texts("close_type", close_type)
        r.texts("end_reason", end_reason)
        for name in STAMP_NAMES:
            r.times(name, t[name])
        r.times("handle_deadline", hd)
        for name, col in _actor_columns(t, n).items():
            if col[0] == "in":
                r.ints(name, col[1], nullable=True)
            else:
                r.texts(name, sim.decode(col))
        r.times("updated_at", np.maximum(stage_start, t["reported_at"]))
        r.const("version", 1)
        # the history: the id of each case's first event, and the co-units of its 派遣
        counts = _history_slots(t, st, stage_start).sum(axis=1)
        co = [(int(ids[k - a]), plan.co[i]) for k, i in self.co.items() if a <= k < b]
        co_json = np.full(n, None, dtype=object)
        co_json[[c - int(ids[0]) for c, _ in co]] = [str(us) for _, us in co]
        h = _Rows(n, copy)
        h.ints("case_id", ids)
        h.ints("first_event", first_event + np.cumsum(counts) - counts)
        h.texts("co", co_json)
        return _Batch(
            first=int(ids[0]),
            last=int(ids[-1]),
            first_event=first_event,
            cases=r,
            cases_payload=r.payload(),
            history=h,
            history_payload=h.payload(),
            co=co,
            events=int(counts.sum()),
            seconds=time.perf_counter() - t_start,
        )


def _write(
    job: _Job, plan: _Plan, good: B, file: str, timings: dict[str, float]
) -> tuple[int, int]:
    """Insert the good rows; returns (cases, events).

    In batches of :data:`BATCH` rows: the case rows (executemany / COPY), then their lead
    units and history (``INSERT … SELECT`` from the new case rows) while a worker thread
    prepares the next batch. The connection stays in this thread; the worker runs while
    the database works on one statement (SQLite and psycopg release the GIL meanwhile)."""
    t0 = time.perf_counter()
    s = job.s
    w = _Writer(s, plan, job.inp, good, file)
    wr, n = w.wr, w.n
    conn = s.connection()
    defer = n >= sim.DEFER_CHECKS_FROM and (
        n >= w.first_id - 1  # max(id) bounds the count
        or n >= int(s.scalar(select(func.count()).select_from(Case)) or 0)
    )
    if defer:
        sim.drop_checks(conn)
    temp = "pg_temp" if wr.copy else "temp"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {temp}.{_EV_TABLE}")
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {_EV_TABLE} (case_id {'BIGINT' if wr.copy else 'INTEGER'}"
        " PRIMARY KEY, first_event BIGINT NOT NULL, co TEXT)"
        + (" ON COMMIT DROP" if wr.copy else "")
    )
    units_sql = text(
        "INSERT INTO case_units (case_id, unit_id, role) SELECT id, lead_unit_id, 'lead'"
        " FROM cases WHERE id BETWEEN :first AND :last AND lead_unit_id IS NOT NULL"
    )
    history_sql = text(_history_sql(wr.copy))
    spans = [(a, min(a + BATCH, n)) for a in range(0, n, BATCH)]
    n_ev = 0
    timings["setup"] = time.perf_counter() - t0
    for phase in ("prepare", "wait", "cases", "units", "events"):
        timings[phase] = 0.0
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(w.batch, *spans[0], wr.next_id("case_events"))
        for k in range(len(spans)):
            t0 = time.perf_counter()
            b = ahead.result()
            timings["wait"] += time.perf_counter() - t0
            timings["prepare"] += b.seconds
            later = spans[k + 1] if k + 1 < len(spans) else None
            t0 = time.perf_counter()
            b.cases.write(wr, "cases", b.cases_payload)
            b.history.write(wr, _EV_TABLE, b.history_payload)
            if b.co:
                wr.write(
                    "case_units",
                    ["case_id", "unit_id", "role"],
                    [
                        [c for c, us in b.co for _ in us],
                        [u for _, us in b.co for u in us],
                        ["co"] * sum(len(us) for _, us in b.co),
                    ],
                )
            timings["cases"] += time.perf_counter() - t0
            # the next batch is prepared while the database derives this one's lead units and
            # history; not during an executemany / COPY: they take the GIL back for every row
            # / buffer and would wait out the worker's switch interval each time
            if later is not None:
                ahead = pool.submit(w.batch, *later, b.first_event + b.events)
            t0 = time.perf_counter()
            bounds = {"first": b.first, "last": b.last}
            conn.execute(units_sql, bounds)
            timings["units"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            res = conn.execute(history_sql, {**bounds, "imported": w.imported})
            if res.rowcount != b.events:  # the statement and _history_slots disagree
                raise RuntimeError(f"history of the import: {res.rowcount} events, not {b.events}")
            n_ev += b.events
            conn.exec_driver_sql(f"DELETE FROM {temp}.{_EV_TABLE}")
            timings["events"] += time.perf_counter() - t0
    conn.exec_driver_sql(f"DROP TABLE {temp}.{_EV_TABLE}")
    t0 = time.perf_counter()
    if defer:
        sim.restore_checks(conn)
    timings["indexes"] = time.perf_counter() - t0
    wr.sync_sequence("cases")
    wr.sync_sequence("case_events")
    numbers = job.inp.col("number")
    _advance_sequences(s, numbers if n == job.inp.n else [numbers[i] for i in w.rows.tolist()])
    return n, n_ev


def _advance_sequences(s: Session, numbers: list[str | None]) -> None:
    """Numbers like YYYYMMDDnnnnn move that day's counter past them (no future collision)."""
    top: dict[str, int] = {}
    if 13 not in set(map(len, filter(None, numbers))):
        return  # no number of that form
    for v in numbers:
        if v is None or len(v) != 13:
            continue
        m = _NUMBER_RE.fullmatch(v)
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
) -> CaseImportReport:
    """Validate ``path`` and import its cases (see the module docstring). Never commits.

    Nothing is written when there is any issue, unless ``skip_invalid`` (then exactly the
    valid rows are). ``crs``: coordinate system of points without a ``crs`` field."""
    t_begin = time.perf_counter()
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
    report = CaseImportReport(kind="cases", file=path.name, fmt=f, skip_invalid=skip_invalid)
    timings = report.timings
    t0 = time.perf_counter()
    inp = _Input(kind="cases", file=path.name, fmt=f, known=frozenset(FIELDS))
    problems = read_csv(path, inp) if f == "csv" else _read_json(path, inp)
    timings["read"] = time.perf_counter() - t0
    job = _Job(session, inp, crs)
    events = 0
    if inp.unreadable is not None:
        job.issues.fatal(inp.unreadable[0], None, inp.unreadable[1])
    else:
        t0 = time.perf_counter()
        for i, fld, msg in problems:
            job.add(i, fld, None, msg)
        plan = job.validate()
        good = ~job.issues.bad
        timings["validate"] = time.perf_counter() - t0
        if not (job.issues.count and not skip_invalid) and good.any():
            report.written, events = _write(job, plan, good, path.name, timings)
            t0 = time.perf_counter()
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
            timings["finish"] = time.perf_counter() - t0
    report.total = inp.n
    report.invalid_rows = int(job.issues.bad.sum())
    report.error_count = job.issues.count
    report.errors = sorted(job.issues.items, key=lambda x: x.row)
    report.notes = inp.notes + report.notes
    report.seconds = time.perf_counter() - t_begin
    for k, v in timings.items():
        timings[k] = round(v, 3)
    return report


__all__ = ["FIELDS", "CaseImportReport", "import_cases", "parse_times"]

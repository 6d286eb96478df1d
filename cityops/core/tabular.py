"""Reading tabular import files (CSV, JSON/GeoJSON properties) into columns of strings.

Shared by every importer: the columns a file may hold are the importer's ``known`` set;
unknown columns are noted and ignored; a file that cannot be read at all sets
``unreadable`` (field, message) instead of raising, so the caller reports it like any
other issue. Text is UTF-8 (with or without a BOM) or, as Excel in China writes it, GB18030.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TabularInput:
    kind: str
    file: str
    fmt: str
    #: Column names the importer reads ("geometry" goes to ``geoms``, not ``cols``).
    known: frozenset[str] = frozenset()
    n: int = 0
    cols: dict[str, list[str | None]] = field(default_factory=dict)
    #: Columns present in the CSV header / in any feature's properties.
    present: set[str] = field(default_factory=set)
    #: Per row: GeoJSON geometry dict, CSV geometry text, or None.
    geoms: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Set when the file could not be read at all.
    unreadable: tuple[str, str] | None = None

    def col(self, name: str) -> list[str | None]:
        c = self.cols.get(name)
        if c is None:
            c = [None] * self.n
            self.cols[name] = c
        return c


def norm_cell(v: Any) -> str | None:
    """A property/cell value as a stripped string (None when empty)."""
    if v is None:
        return None
    if isinstance(v, str):
        s = v.strip()
        return s or None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return repr(v)
    if isinstance(v, list | tuple):
        return ";".join(str(x).strip() for x in v if x is not None and str(x).strip()) or None
    return json.dumps(v, ensure_ascii=False)


def decode_text(raw: bytes, inp: TabularInput) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        inp.unreadable = ("encoding", "the file is neither UTF-8 nor GB18030 text")
        return None
    inp.notes.append("the file is not UTF-8: read as GB18030")
    return text


def load_json(path: Path, inp: TabularInput) -> Any:
    """The parsed JSON document, or None with ``inp.unreadable`` set."""
    text = decode_text(path.read_bytes(), inp)
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        inp.unreadable = ("json", f"not valid JSON: {exc}")
        return None
    if doc is None:
        inp.unreadable = ("json", "the file holds JSON null, not data")
    return doc


def read_csv(path: Path, inp: TabularInput) -> list[tuple[int, str, str]]:
    """Fill ``inp`` from a CSV file; returns row-level problems (row, field, message)."""
    problems: list[tuple[int, str, str]] = []
    text = decode_text(path.read_bytes(), inp)
    if text is None:
        return problems
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        inp.unreadable = ("csv", f"not a readable CSV file: {exc}")
        return problems
    if not records or not any(c.strip() for c in records[0]):
        inp.unreadable = ("header", "the file has no header row")
        return problems
    header = [h.strip().lstrip("\ufeff").lower() for h in records[0]]
    dup = [h for h, c in Counter(header).items() if c > 1 and h]
    if dup:
        inp.unreadable = (dup[0], f"column {dup[0]!r} appears more than once in the header")
        return problems
    body = records[1:]
    # Trailing blank lines are dropped; a blank line inside the file is kept as an empty row
    # so that row numbers stay the record positions.
    while body and not any(c.strip() for c in body[-1]):
        body.pop()
    width = len(header)
    fixed: list[list[str]] = body if {len(r) for r in body} <= {width} else []
    for k, rec in enumerate(body if not fixed else ()):
        if len(rec) != width:
            if len(rec) > width and any(c.strip() for c in rec[width:]):
                problems.append(
                    (k, "(row)", f"the row has {len(rec)} fields but the header has {width}")
                )
            rec = (rec + [""] * width)[:width]
        fixed.append(rec)
    inp.n = len(fixed)
    known = inp.known
    unknown = [h for h in header if h and h not in known]
    if unknown:
        inp.notes.append("ignored unknown column(s): " + ", ".join(unknown))
    columns = list(zip(*fixed, strict=True)) if fixed else [() for _ in header]
    for name, values in zip(header, columns, strict=True):
        if name not in known:
            continue
        inp.present.add(name)
        if name == "geometry":
            inp.geoms = [v.strip() or None for v in values]
        else:
            inp.cols[name] = [v.strip() or None for v in values]
    if not inp.geoms:
        inp.geoms = [None] * inp.n
    return problems

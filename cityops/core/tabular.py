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
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import methodcaller
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


def clean_cells(values: Sequence[str]) -> list[str | None]:
    """Cells stripped, empty ones None (``[v.strip() or None for v in values]``, faster)."""
    out: list[Any] = list(map(str.strip, values))
    if "" in out:
        out = [v or None for v in out]
    return out


def plain_columns(text: str) -> tuple[list[str], list[list[str]]] | None:
    """The header and the columns of a CSV text that ``csv.reader`` would read as plain
    ``split(",")`` lines: no quotes, NULs or bare CRs, every data line as wide as the header,
    no blank last line. None when the csv module is needed."""
    if '"' in text or "\x00" in text:
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    head, _, body = text.partition("\n")
    body = body.removesuffix("\n")
    header = head.split(",")
    width = len(header)
    lines = body.split("\n") if body else []
    if lines and not any(c.strip() for c in lines[-1].split(",")):
        return None  # trailing blank lines are dropped: the general path does it
    if lines and set(map(methodcaller("count", ","), lines)) != {width - 1}:
        return None
    if max(map(len, lines), default=0) > csv.field_size_limit():
        return None  # let csv report the oversized field
    flat = body.replace("\n", ",").split(",") if lines else []
    return header, [flat[k::width] for k in range(width)]


def read_csv(path: Path, inp: TabularInput) -> list[tuple[int, str, str]]:
    """Fill ``inp`` from a CSV file; returns row-level problems (row, field, message).

    Plain files (no quotes, every row as wide as the header) are split with ``str.split``
    straight into columns; others go through the csv module."""
    problems: list[tuple[int, str, str]] = []
    text = decode_text(path.read_bytes(), inp)
    if text is None:
        return problems
    plain = plain_columns(text)
    if plain is not None:
        first, columns = plain
        n = len(columns[0])
    else:
        try:
            records = list(csv.reader(io.StringIO(text, newline="")))
        except csv.Error as exc:
            inp.unreadable = ("csv", f"not a readable CSV file: {exc}")
            return problems
        first = records[0] if records else []
    if not any(c.strip() for c in first):
        inp.unreadable = ("header", "the file has no header row")
        return problems
    header = [h.strip().lstrip("\ufeff").lower() for h in first]
    dup = [h for h, c in Counter(header).items() if c > 1 and h]
    if dup:
        inp.unreadable = (
            dup[0],
            f"column {dup[0]!r} appears more than once in the header",
        )
        return problems
    width = len(header)
    if plain is None:
        body = records[1:]
        # Trailing blank lines are dropped; a blank line inside the file is kept as an empty
        # row so that row numbers stay the record positions.
        while body and not any(c.strip() for c in body[-1]):
            body.pop()
        fixed: list[list[str]] = body if set(map(len, body)) <= {width} else []
        for k, rec in enumerate(body if not fixed else ()):
            if len(rec) != width:
                if len(rec) > width and any(c.strip() for c in rec[width:]):
                    problems.append(
                        (
                            k,
                            "(row)",
                            f"the row has {len(rec)} fields but the header has {width}",
                        )
                    )
                rec = (rec + [""] * width)[:width]
            fixed.append(rec)
        n = len(fixed)
        columns = list(map(list, zip(*fixed, strict=True))) if fixed else [[] for _ in header]
    inp.n = n
    known = inp.known
    unknown = [h for h in header if h and h not in known]
    if unknown:
        inp.notes.append("ignored unknown column(s): " + ", ".join(unknown))
    for name, values in zip(header, columns, strict=True):
        if name not in known:
            continue
        inp.present.add(name)
        if name == "geometry":
            inp.geoms = clean_cells(values)
        else:
            inp.cols[name] = clean_cells(values)
    if not inp.geoms:
        inp.geoms = [None] * inp.n
    return problems

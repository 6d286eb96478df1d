"""Bulk import benchmark: ``import_cases`` (cityops import cases FILE) on N legacy rows.

Generates a CSV of N closed and open legacy cases on the ``city`` demo (built by
bench/intake.py in var/bench/), imports it into a fresh copy of that database (SQLite: file
copy; PostgreSQL: ``CREATE DATABASE … TEMPLATE``), and reports rows/s for the whole call
(read + validate + write, one transaction) and for its phases. Side by side, in the same
run, the reference: the bare bulk write of the same number of case rows and events
(``executemany`` / ``COPY`` of pre-made tuples into the same tables, no validation).

The machine is shared: each figure comes with the load average (1 min) before and after it,
the CPU seconds of this process (both threads of the import) and, for a local PostgreSQL, of
its server process — the work done, whatever the load. ``--repeat N`` runs each measure N
times on fresh copies and reports the first run (what a ``cityops import cases`` process
does: it includes the one-off set-up of this process) and the best.

Usage: python bench/case_import.py [--rows 100000] [--only sqlite|pg] [--repeat 1]
Prints JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.intake import PG_ADMIN, categories, prepare, sample_points  # noqa: E402
from bench.spatial import machine  # noqa: E402
from cityops.core.db import Database  # noqa: E402

FIELDS = [
    "number", "source", "category_code", "description", "lon", "lat", "stage",
    "reported_at", "accepted_at", "filed_at", "dispatched_at", "signed_at", "handled_at",
    "checked_at", "closed_at", "lead_unit_code",
]  # fmt: skip


def make_csv(db: Database, path: Path, n: int) -> None:
    pts = sample_points(db, min(n, 20_000))
    cats = categories(db)
    with db.engine.connect() as c:
        units = [r[0] for r in c.exec_driver_sql("SELECT code FROM units WHERE active ORDER BY id")]
    rng = np.random.default_rng(11)
    base = np.datetime64("2024-01-01T08:00")
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        minutes = rng.integers(0, 600 * 24 * 60, n)
        for i in range(n):
            x, y = pts[i % len(pts)]
            t0 = base + np.timedelta64(int(minutes[i]), "m")
            stamps = [t0 + np.timedelta64(k * 17, "m") for k in range(8)]
            closed = i % 5 != 0
            ts = [str(s).replace("T", " ") for s in stamps]
            if not closed:  # open at 待处置: no handled/checked/closed stamps
                ts[5:] = ["", "", ""]
            w.writerow(
                [
                    f"IMP{i:09d}",
                    "inspector" if i % 3 else "hotline",
                    cats[i % len(cats)],
                    "历史案卷导入",
                    f"{x:.8f}",
                    f"{y:.8f}",
                    "closed" if closed else "handle",
                    *ts,
                    units[i % len(units)],
                ]
            )


def fresh_copy(url: str, label: str) -> str:
    if url.startswith("sqlite"):
        src = Path(url.split("///", 1)[1])
        e = Database(url)
        with e.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        e.dispose()
        dst = src.with_name(f"import-{label}.db")
        for suffix in ("-wal", "-shm", ""):
            Path(str(dst) + suffix).unlink(missing_ok=True)
        shutil.copyfile(src, dst)
        return f"sqlite:///{dst}"
    import psycopg

    name = f"cityops_bench_import_{label}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name} TEMPLATE cityops_bench_intake")
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_copy(url: str) -> None:
    if url.startswith("sqlite"):
        p = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
        return
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def load() -> float:
    return round(os.getloadavg()[0], 2)


def server_cpu(pid: int | None) -> float | None:
    """CPU seconds of a local PostgreSQL server process so far (None: not readable)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall and CPU seconds (this process; the PostgreSQL server process of the session) and
    the load average around one measure."""

    def __init__(self, s: Any) -> None:
        conn = s.connection()
        self.pid = (
            int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
            if conn.dialect.name == "postgresql"
            else None
        )
        self.load = load()
        self.srv = server_cpu(self.pid)
        self.cpu = time.process_time()
        self.t0 = time.perf_counter()

    def done(self, out: dict[str, Any]) -> dict[str, Any]:
        out["cpu_s"] = round(time.process_time() - self.cpu, 2)
        srv = server_cpu(self.pid)
        if srv is not None and self.srv is not None:
            out["server_cpu_s"] = round(srv - self.srv, 2)
        out["load_before"], out["load_after"] = self.load, load()
        return out


def run_import(url: str, path: Path, n: int) -> dict[str, Any]:
    from cityops.cases.legacy_import import import_cases

    db = Database(url)
    try:
        with db.session() as s:
            meter = Meter(s)
            t0 = time.perf_counter()
            report = import_cases(s, path)
            t_call = time.perf_counter() - t0
        total = time.perf_counter() - t0
        assert report.written == n, (report.error_count, report.errors[:3])
        out: dict[str, Any] = {
            "rows": n,
            "seconds": round(total, 2),
            "rows_per_s": round(n / total),
            "import_call_s": round(t_call, 2),
            "commit_s": round(total - t_call, 2),
        }
        meter.done(out)
        out["phases"] = dict(getattr(report, "timings", {}))
        return out
    finally:
        db.dispose()


def run_reference(url: str, n: int) -> dict[str, Any]:
    """The bare bulk write of n case rows + 8 events each (pre-made tuples, no checks)."""
    from cityops.cases import simulate as sim

    db = Database(url)
    try:
        with db.engine.connect() as c:
            # any category and unit grid (a fresh demo city has no case to copy them from)
            row = c.exec_driver_sql(
                "SELECT (SELECT id FROM categories ORDER BY id LIMIT 1),"
                " g.id, g.code FROM grids g ORDER BY g.id LIMIT 1"
            ).first()
        assert row is not None and row[0] is not None, "the bench database has no city"
        with db.session() as s:
            meter = Meter(s)
            t0 = time.perf_counter()
            wr = sim.BulkWriter(s)
            first = wr.next_id("cases")
            ids = list(range(first, first + n))
            ts = "2024-01-01 00:00:00.000000"
            cols = {
                "id": ids,
                "number": [f"REF{i:09d}" for i in range(n)],
                "tracking_code": [f"R{i:09d}" for i in range(n)],
                "source": ["inspector"] * n,
                "case_type": ["matter"] * n,
                "category_id": [row[0]] * n,
                "urgency": ["一般"] * n,
                "description": ["参照"] * n,
                "lon": [115.0] * n,
                "lat": [33.0] * n,
                "h3": [0] * n,
                "grid_id": [row[1]] * n,
                "grid_code": [row[2]] * n,
                "stage": ["closed"] * n,
                "stage_started_at": [ts] * n,
                "near_due": [False] * n,
                "overdue": [False] * n,
                "supervised": [False] * n,
                "extended": [False] * n,
                "parked": [False] * n,
                "escalation_level": [0] * n,
                "extension_count": [0] * n,
                "return_count": [0] * n,
                "rework_count": [0] * n,
                "handled_late": [False] * n,
                "report_count": [1] * n,
                "reported_at": [ts] * n,
                "updated_at": [ts] * n,
                "version": [1] * n,
            }
            wr.write("cases", list(cols), list(cols.values()))
            m = n * 8
            ev = [
                [ids[i // 8] for i in range(m)],
                [ts] * m,
                [None] * m,
                ["import"] * m,
                ["report"] * m,
                [None] * m,
                ["accept"] * m,
                [None] * m,
                [None] * m,
                [None] * m,
            ]
            wr.write("case_events", list(sim.EVENT_COLUMNS), ev)
            s.rollback()
            total = time.perf_counter() - t0
            out = meter.done(
                {
                    "rows": n,
                    "events": n * 8,
                    "seconds": round(total, 2),
                    "rows_per_s": round(n / total),
                }
            )
        return out
    finally:
        db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--only", choices=["sqlite", "pg"], default=None)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measure (fresh copies)")
    a = ap.parse_args()
    out: dict[str, Any] = {"machine": machine(), "rows": a.rows, "load_at_start": load()}
    sqlite_url = f"sqlite:///{ROOT / 'var' / 'bench' / 'city.db'}"
    db = prepare(sqlite_url)
    path = ROOT / "var" / "bench" / f"legacy-{a.rows}.csv"
    if not path.exists():
        make_csv(db, path, a.rows)
    db.dispose()
    targets = []
    if a.only in (None, "sqlite"):
        targets.append(("sqlite", sqlite_url))
    if a.only in (None, "pg"):
        from bench.intake import pg_fresh

        pg = pg_fresh()
        prepare(pg).dispose()
        targets.append(("postgresql", pg))
    for label, url in targets:
        refs: list[dict[str, Any]] = []
        runs: list[dict[str, Any]] = []
        for _ in range(max(1, a.repeat)):
            for measure, results in (("reference", refs), ("import", runs)):
                copy = fresh_copy(url, label)
                try:
                    if measure == "reference":
                        results.append(run_reference(copy, a.rows))
                    else:
                        results.append(run_import(copy, path, a.rows))
                finally:
                    drop_copy(copy)
        out[f"reference_{label}"] = refs[0]
        out[label] = runs[0]
        out[f"ratio_{label}_vs_reference"] = round(runs[0]["rows_per_s"] / refs[0]["rows_per_s"], 3)
        if len(runs) > 1:
            out[f"best_{label}"] = {
                "reference_rows_per_s": max(r["rows_per_s"] for r in refs),
                "import_rows_per_s": max(r["rows_per_s"] for r in runs),
                "import_runs": [
                    {k: r[k] for k in ("rows_per_s", "cpu_s", "load_before")}
                    | ({"server_cpu_s": r["server_cpu_s"]} if "server_cpu_s" in r else {})
                    for r in runs
                ],
                "reference_runs": [r["rows_per_s"] for r in refs],
            }
    out["load_at_end"] = load()
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

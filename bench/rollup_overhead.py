"""Evaluation rollup upkeep: what the per-transition counters add to case transition time.

300 × (上报 + 受理 + 立案/自动派遣 + 签收) through the real service layer on a fresh `small`
demo city, with and without the rollup listener (best of 3 each), plus the time spent
inside the listener. ``--full`` runs every case through the whole loop (… + 处置反馈 with a
photo + 核查 + 结案), which moves the position counters too (受理员 核查派发, 值班长 结案, …).
Target (issue 4): upkeep adds ≤ 10 % to transition time. Times are this process's CPU time
(SQLite runs in-process), so other work on the machine does not blur the comparison. With
``--db postgresql`` the database works in its own processes: wall-clock time is measured
(each run on a fresh copy of a template database, best of 3), plus this process's CPU.

Usage: python bench/rollup_overhead.py [--cases 300] [--full] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cityops.cases import queries, service  # noqa: E402
from cityops.cases.storage import LocalStorage  # noqa: E402
from cityops.core.db import Database  # noqa: E402
from cityops.core.migrate import upgrade  # noqa: E402
from cityops.evaluation import rollup  # noqa: E402
from cityops.geo.demo import build_demo  # noqa: E402
from tests.factories import (  # noqa: E402
    grid_of_inspector,
    handler_of,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)

T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)
#: What the workload is timed with: process CPU (SQLite, in-process) or wall time (PostgreSQL).
CLOCK: list[Any] = [time.process_time]


PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_TEMPLATE = "cityops_bench_rollup"


def _pg_admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    eng = create_engine(PG_ADMIN.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(sql))
    eng.dispose()


def fresh_pg(i: int) -> Database:
    name = f"{PG_TEMPLATE}_run{i}"
    _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _pg_admin(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}")
    return Database(f"postgresql://postgres@127.0.0.1:5432/{name}")


def workload(db: Database, n: int, full: bool = False, store: Any = None) -> float:
    with db.session() as s:
        insp = principal(s, "inspector1")
        op, shift = principal(s, "operator1"), principal(s, "shift1")
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        cat = matter_category(s)
        start = CLOCK[0]()
        for i in range(n):
            t = T0 + timedelta(minutes=i)
            c = service.create_case(
                s, insp, report_data(cat, lon, lat, description=f"c{i}"), t
            ).case
            service.perform(s, op, c.id, "accept", {}, None, t + timedelta(minutes=1))
            service.perform(s, shift, c.id, "file", {}, None, t + timedelta(minutes=2))
            if c.lead_unit_id:
                h = handler_of(s, c.lead_unit_id)
                service.perform(s, h, c.id, "sign", {}, None, t + timedelta(minutes=3))
                if full:
                    att = [int(queries.upload(s, h, store, "p.jpg", "image/jpeg", photo())["id"])]
                    payload = {"note": "ok", "attachment_ids": att, "inspector_id": insp.user_id}
                    service.perform(s, h, c.id, "handle", payload, None, t + timedelta(minutes=9))
                    att = [
                        int(queries.upload(s, insp, store, "p.jpg", "image/jpeg", photo())["id"])
                    ]
                    check = {"passed": True, "attachment_ids": att}
                    service.perform(s, insp, c.id, "check", check, None, t + timedelta(minutes=12))
                    service.perform(s, shift, c.id, "close", {}, None, t + timedelta(minutes=14))
            s.commit()
        return CLOCK[0]() - start


def fresh_sqlite(template: Path, tmp: Path, i: int) -> Database:
    dst = tmp / f"run{i}.db"
    shutil.copyfile(template, dst)
    return Database(f"sqlite:///{dst}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--full", action="store_true", help="the whole loop up to 结案")
    ap.add_argument("--db", default="sqlite", choices=("sqlite", "postgresql"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = LocalStorage(tmp / "att")
    template = tmp / "city.db"
    if a.db == "postgresql":
        CLOCK[0] = time.perf_counter
        _pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)")
        _pg_admin(f"CREATE DATABASE {PG_TEMPLATE}")
        db = Database(f"postgresql://postgres@127.0.0.1:5432/{PG_TEMPLATE}")
        upgrade(db.engine)
        build_demo(db, "small", 7)
    else:
        db = Database(f"sqlite:///{template}")
        upgrade(db.engine)
        build_demo(db, "small", 7)
        with db.engine.connect() as c:
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    plain = rollup._after_flush
    spent = [0.0]

    def timed(session: Any, ctx: Any) -> None:
        t = CLOCK[0]()
        plain(session, ctx)
        spent[0] += CLOCK[0]() - t

    best: dict[bool, float] = {}
    inside = 1e9
    for i, with_listener in enumerate((False, True) * 3):
        run = fresh_pg(i) if a.db == "postgresql" else fresh_sqlite(template, tmp, i)
        rollup.uninstall()
        try:
            if with_listener:
                rollup._after_flush = timed  # type: ignore[assignment]
                rollup.install()
            spent[0] = 0.0
            took = workload(run, a.cases, a.full, store)
            best[with_listener] = min(best.get(with_listener, 1e9), took)
            if with_listener:
                inside = min(inside, spent[0] / took * 100)
        finally:
            rollup.uninstall()
            rollup._after_flush = plain  # type: ignore[assignment]
            rollup.install()
            run.dispose()
            if a.db == "postgresql":
                _pg_admin(f"DROP DATABASE IF EXISTS {PG_TEMPLATE}_run{i} WITH (FORCE)")
    print(
        json.dumps(
            {
                "db": a.db,
                "clock": "wall" if a.db == "postgresql" else "process CPU",
                "cases": a.cases,
                "full_loop": a.full,
                "without_s": round(best[False], 2),
                "with_s": round(best[True], 2),
                "added_percent": round((best[True] - best[False]) / best[False] * 100, 1),
                "inside_listener_percent": round(inside, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

"""Evaluation rollup upkeep: what the per-transition counters add to case transition time.

300 × (上报 + 受理 + 立案/自动派遣 + 签收) through the real service layer on a fresh `small`
demo city, with and without the rollup listener (best of 3 each), plus the time spent
inside the listener. ``--full`` runs every case through the whole loop (… + 处置反馈 with a
photo + 核查 + 结案), which moves the position counters too (受理员 核查派发, 值班长 结案, …).
Target (issue 4): upkeep adds ≤ 10 % to transition time. Times are this process's CPU time
(SQLite runs in-process), so other work on the machine does not blur the comparison.

Usage: python bench/rollup_overhead.py [--cases 300] [--full]   (SQLite)
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


def workload(db: Database, n: int, full: bool = False, store: Any = None) -> float:
    with db.session() as s:
        insp = principal(s, "inspector1")
        op, shift = principal(s, "operator1"), principal(s, "shift1")
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        cat = matter_category(s)
        start = time.process_time()
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
        return time.process_time() - start


def fresh_sqlite(template: Path, tmp: Path, i: int) -> Database:
    dst = tmp / f"run{i}.db"
    shutil.copyfile(template, dst)
    return Database(f"sqlite:///{dst}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=300)
    ap.add_argument("--full", action="store_true", help="the whole loop up to 结案")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    store = LocalStorage(tmp / "att")
    template = tmp / "city.db"
    db = Database(f"sqlite:///{template}")
    upgrade(db.engine)
    build_demo(db, "small", 7)
    with db.engine.connect() as c:
        c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    db.dispose()
    plain = rollup._after_flush
    spent = [0.0]

    def timed(session: Any, ctx: Any) -> None:
        t = time.process_time()
        plain(session, ctx)
        spent[0] += time.process_time() - t

    best: dict[bool, float] = {}
    inside = 1e9
    for i, with_listener in enumerate((False, True) * 3):
        run = fresh_sqlite(template, tmp, i)
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
    print(
        json.dumps(
            {
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

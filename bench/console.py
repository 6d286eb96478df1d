"""Console speed on a big database: worklists, case search, the command-centre map + KPIs.

Targets (issue 5): worklist and case search p95 ≤ 150 ms; the command-centre map with its
KPI panel loads in ≤ 1 s.

Needs an SQLite file with the demo city and ~3 M cases (``cityops simulate cases --mode bulk``),
migrated to head (0009 adds ``ix_cases_closed_at``). Measures, in one run:

1. the data functions the pages call, directly (``queries.worklist`` per role,
   ``queries.list_cases`` with the console's filters, ``command_service.kpis`` uncached at the last
   simulated day, ``command_service.case_hexagons``, the region/grid/component layers);
2. the same over HTTP on a real ``cityops serve`` (bearer token; worklist and case search);
3. the map page in headless Chromium (login, then ``/map`` until the vector layers and the
   charts are drawn), cold (KPI cache empty) and warm.

A reference in the same run (a case read by primary key over HTTP) gives the ratios.

Usage: python bench/console.py [--db var/bench-console/console.db] [--runs 30] [--no-browser]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from cityops.cases import queries  # noqa: E402
from cityops.cases.models import Case  # noqa: E402
from cityops.console import command_service  # noqa: E402
from cityops.core.db import Database, utcnow  # noqa: E402
from cityops.geo.models import Category  # noqa: E402
from tests.factories import principal  # noqa: E402

PASSWORD = "demo-pass-2026"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def timed(fn: Callable[[], Any], runs: int, warm: int = 2) -> dict[str, float]:
    for _ in range(warm):
        fn()
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        xs.append((time.perf_counter() - t) * 1000)
    return {
        "p50_ms": round(statistics.median(xs), 1),
        "p95_ms": round(pct(xs, 95), 1),
        "max_ms": round(max(xs), 1),
    }


def direct(db: Database, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with db.session() as s:
        last = s.scalar(select(func.max(Case.reported_at)))
        n = s.scalar(select(func.count()).select_from(Case))
        out["cases"] = n
        now = last or utcnow()
        users = {
            u: principal(s, u)
            for u in (
                "operator1",
                "shift1",
                "dispatcher1",
                "handler1",
                "inspector1",
                "leader1",
                "district1",
            )
        }
        for u in ("operator1", "shift1", "dispatcher1", "handler1", "inspector1", "leader1"):
            out[f"worklist {u}"] = timed(lambda u=u: queries.worklist(s, users[u], now), runs)
        cat = s.scalar(select(Category.code).where(Category.kind == "matter").limit(1))
        number = s.scalar(select(Case.number).order_by(Case.id.desc()).limit(1))
        searches = {
            "open, newest first": queries.CaseFilter(status="open"),
            "overdue open": queries.CaseFilter(status="open", overdue=True),
            "by number": queries.CaseFilter(text=number),
            "category, last 30 days": queries.CaseFilter(
                category=cat, reported_from=now - timedelta(days=30)
            ),
            "district1, open": queries.CaseFilter(status="open"),
        }
        for name, f in searches.items():
            who = users["district1"] if name.startswith("district1") else users["shift1"]
            out[f"search {name}"] = timed(
                lambda f=f, who=who: queries.list_cases(s, who, f, now, limit=50),
                max(3, runs // 6) if name == "by number" else runs,
                1 if name == "by number" else 2,
            )
        out["search text 'garbage' (LIKE)"] = timed(
            lambda: queries.list_cases(s, users["shift1"], queries.CaseFilter(text="垃圾"), now),
            max(5, runs // 3),
        )
        for who in ("leader1", "district1"):
            out[f"map kpis uncached {who}"] = timed(
                lambda who=who: command_service.kpis(s, users[who], now, cached=False),
                max(5, runs // 3),
                1,
            )
            out[f"map hexagons res8 {who}"] = timed(
                lambda who=who: command_service.case_hexagons(s, users[who], 8),
                max(5, runs // 3),
                1,
            )
        command_service.clear_kpi_cache()
        t = time.perf_counter()
        command_service.region_layers(s, None)
        out["map region layers cold_ms"] = round((time.perf_counter() - t) * 1000, 1)
        lat, lon, _zoom = command_service.scope_centre(s, None)
        bbox15 = command_service.view_bbox(lat, lon, 15)
        bbox18 = command_service.view_bbox(lat, lon, 18)
        out["map grid layer z15"] = timed(
            lambda: command_service.grid_layer(s, None, bbox15, 15), runs, 1
        )
        out["map components z18"] = timed(
            lambda: command_service.component_points(s, None, bbox18, 18), runs, 1
        )
        out["map details click"] = timed(
            lambda: command_service.details_at(s, users["leader1"], lon, lat, 15), runs
        )
    return out


def _free_port() -> int:
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return int(so.getsockname()[1])


def http(db_path: Path, runs: int, browser: bool) -> dict[str, Any]:
    port = _free_port()
    env = {
        **os.environ,
        "CITYOPS_DATABASE_URL": f"sqlite:///{db_path}",
        "CITYOPS_SCHEDULER": "false",
        "CITYOPS_CONSOLE": "true",
        "CITYOPS_CONSOLE_SECRET": "bench",
        "CITYOPS_VAR_DIR": str(db_path.parent),
    }
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/cityops"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("server did not start")
            time.sleep(0.5)
        time.sleep(5)  # let the background index warm-up finish
        with httpx.Client(base_url=base, timeout=30) as c:

            def token(u: str) -> dict[str, str]:
                r = c.post("/api/v1/auth/login", json={"username": u, "password": PASSWORD})
                return {"Authorization": f"Bearer {r.json()['token']}"}

            shift, opr = token("shift1"), token("operator1")
            first = c.get("/api/v1/cases", params={"limit": 1}, headers=shift).json()
            cid = first["items"][0]["id"]
            out["reference GET /cases/{id}"] = timed(
                lambda: c.get(f"/api/v1/cases/{cid}", headers=shift), runs
            )
            out["GET /worklist shift1"] = timed(
                lambda: c.get("/api/v1/worklist", headers=shift), runs
            )
            out["GET /worklist operator1"] = timed(
                lambda: c.get("/api/v1/worklist", headers=opr), runs
            )
            out["GET /cases?status=open"] = timed(
                lambda: c.get("/api/v1/cases", params={"status": "open"}, headers=shift), runs
            )
            out["GET /cases?overdue=true"] = timed(
                lambda: c.get("/api/v1/cases", params={"overdue": "true"}, headers=shift), runs
            )
        print(json.dumps({"http": out}, ensure_ascii=False), file=sys.stderr)
        if browser:
            try:
                out.update(page_load(base))
            except Exception as exc:  # keep the other figures
                out["browser error"] = repr(exc)[:300]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def page_load(base: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        ctx = b.new_context(base_url=base, viewport={"width": 1280, "height": 800})
        ctx.set_default_timeout(60_000)
        page = ctx.new_page()
        page.goto("/login")
        for name, value in (("username", "leader1"), ("password", PASSWORD)):
            page.locator(f'input[data-testid="{name}"], [data-testid="{name}"] input').first.fill(
                value
            )
        page.locator('[data-testid="login"]').click()
        page.wait_for_url("**/map")
        page.close()
        ref = []
        for _ in range(5):
            page = ctx.new_page()  # reference: a plain console page (my account)
            t = time.perf_counter()
            page.goto("/account")
            page.locator('[data-testid="title"]').wait_for()
            ref.append((time.perf_counter() - t) * 1000)
            page.close()
        out["browser reference /account p50_ms"] = round(statistics.median(ref), 1)
        loads = []
        for _ in range(8):
            page = ctx.new_page()  # a fresh tab each time, as a user opening the map
            t = time.perf_counter()
            page.goto("/map")
            page.locator(".leaflet-overlay-pane path").first.wait_for()
            page.locator('[data-testid="chart-source"] canvas').first.wait_for()
            page.locator('[data-testid="kpi-overdue"]').wait_for()
            loads.append((time.perf_counter() - t) * 1000)
            page.close()
        out["browser /map loads_ms"] = [round(x) for x in loads]
        out["browser /map p50_ms"] = round(statistics.median(loads), 1)
        out["browser /map max_ms"] = round(max(loads), 1)
        b.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(ROOT / "var/bench-console/console.db"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-http", action="store_true")
    a = ap.parse_args()
    path = Path(a.db).resolve()
    os.environ.setdefault("CITYOPS_WARM_INDEXES", "false")
    db = Database(f"sqlite:///{path}")
    res: dict[str, Any] = {"direct": direct(db, a.runs)}
    print(json.dumps(res, ensure_ascii=False), file=sys.stderr)
    db.engine.dispose()
    if not a.no_http:
        res["http"] = http(path, a.runs, not a.no_browser)
        ref = res["http"]["reference GET /cases/{id}"]["p95_ms"]
        res["http_ratio_p95_vs_reference"] = {
            k: round(v["p95_ms"] / ref, 1)
            for k, v in res["http"].items()
            if isinstance(v, dict) and k != "reference GET /cases/{id}"
        }
    print(json.dumps(res, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()

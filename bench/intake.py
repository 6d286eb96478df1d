"""Case intake benchmark: HTTP POST /api/v1/cases under 32 concurrent clients.

Each request runs the real intake: locate (grid/community/street/district), duplicate check,
automatic 受理 + 立案 (inspector reports are auto-filed, as in many cities), auto-dispatch by
rules/category defaults, stage deadlines on the working-time clock, history, notifications
and audit rows. Side by side, in the same session: a bare Starlette endpoint that parses the
same JSON body and answers, served the same way — the ceiling of this machine + load client.

Usage: python bench/intake.py [--seconds 20] [--clients 32] [--workers 2] [--only sqlite|pg]
Prints JSON; the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.spatial import machine  # noqa: E402
from cityops.core.db import Database  # noqa: E402
from cityops.core.migrate import upgrade  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BENCH = "postgresql://postgres@127.0.0.1:5432/cityops_bench_intake"
BARE_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

async def intake(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"case": {"id": 1, "description": body.get("description")}}, status_code=201)

async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})

app = Starlette(routes=[
    Route("/api/v1/cases", intake, methods=["POST"]),
    Route("/api/v1/health", health),
])
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(url: str) -> Database:
    db = Database(url)
    upgrade(db.engine)
    from cityops.cases.service import set_auto_file_sources
    from cityops.geo.index import count_rows

    with db.session() as s:
        empty = count_rows(s, "grids") == 0
    if empty:
        from cityops.geo.demo import build_demo

        print(f"building the city-scale demo in {url} …", file=sys.stderr, flush=True)
        build_demo(db, scale="city", seed=7)
    with db.session() as s:
        set_auto_file_sources(s, ["inspector", "iot"])
    return db


def sample_points(db: Database, n: int) -> list[tuple[float, float]]:
    with db.engine.connect() as c:
        wkbs = [r[0] for r in c.exec_driver_sql("SELECT geom FROM grids")]
    geoms = shapely.from_wkb(wkbs)
    rng = np.random.default_rng(3)
    pick = geoms[rng.integers(0, len(geoms), n)]
    pts = shapely.point_on_surface(pick)
    return list(zip(shapely.get_x(pts).tolist(), shapely.get_y(pts).tolist(), strict=True))


def categories(db: Database) -> list[str]:
    with db.engine.connect() as c:
        return [
            r[0]
            for r in c.exec_driver_sql(
                "SELECT code FROM categories WHERE standard='gbt47678' AND kind='matter' "
                "AND big_class_code IN ('06','09') ORDER BY code"
            )
        ]


def serve(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.time()
    while time.time() - t0 < 180:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(
    port: int,
    headers: dict[str, str],
    seconds: float,
    clients: int,
    points: list[tuple[float, float]],
    cats: list[str],
) -> dict[str, Any]:
    lat_ms: list[float] = []
    status: dict[int, int] = {}
    stop = time.perf_counter() + seconds
    rnd = random.Random(5)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=30
    ) as cl:

        async def worker() -> None:
            while time.perf_counter() < stop:
                lon, lat = points[rnd.randrange(len(points))]
                body = {
                    "source": "inspector",
                    "category_code": rnd.choice(cats),
                    "description": "监督员巡查发现问题",
                    "lon": lon + rnd.uniform(-2e-5, 2e-5),
                    "lat": lat + rnd.uniform(-2e-5, 2e-5),
                }
                t = time.perf_counter()
                r = await cl.post("/api/v1/cases", json=body)
                lat_ms.append((time.perf_counter() - t) * 1000)
                status[r.status_code] = status.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    a = np.array(lat_ms)
    ok = sum(v for k, v in status.items() if k in (200, 201))
    return {
        "requests": len(a),
        "ok": ok,
        "status": status,
        "per_s": round(ok / elapsed, 1),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "p99_ms": round(float(np.percentile(a, 99)), 1),
    }


WRK_LUA = """
local points = {%s}
local cats = {%s}
local counter = 0
math.randomseed(7)
request = function()
  counter = counter + 1
  local p = points[math.random(#points)]
  local body = string.format(
    '{"source":"inspector","category_code":"%%s","description":"监督员巡查发现问题","lon":%%.8f,"lat":%%.8f}',
    cats[math.random(#cats)], p[1] + (math.random() - 0.5) * 4e-5, p[2] + (math.random() - 0.5) * 4e-5)
  return wrk.format("POST", "/api/v1/cases", {["Content-Type"]="application/json", ["Authorization"]=auth}, body)
end
"""


def load_wrk(
    port: int,
    headers: dict[str, str],
    seconds: float,
    clients: int,
    points: list[tuple[float, float]],
    cats: list[str],
) -> dict[str, Any]:
    """The same load with wrk (C, much lighter than a Python client): fairer on 2 cores."""
    import re
    import shutil
    import tempfile

    lua = WRK_LUA % (
        ",".join(f"{{{x:.8f},{y:.8f}}}" for x, y in points[:5000]),
        ",".join(f'"{c}"' for c in cats),
    )
    lua = f'auth = "{headers.get("Authorization", "")}"\n' + lua
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
    wrk = shutil.which("wrk")
    assert wrk
    out = subprocess.run(
        [
            wrk,
            "-t2",
            f"-c{clients}",
            f"-d{int(seconds)}s",
            "--latency",
            "--timeout",
            "30s",
            "-s",
            f.name,
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        v, unit = float(m.group(1)), m.group(2)
        return round(v / 1000 if unit == "us" else v * 1000 if unit == "s" else v, 1)

    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {
        "client": "wrk",
        "requests": total,
        "non_2xx": errors,
        "per_s": round(rps * (total - errors) / max(total, 1), 1),
        "p50_ms": ms("50"),
        "p90_ms": ms("90"),
        "p99_ms": ms("99"),
    }


def measure(
    port: int,
    headers: dict[str, str],
    a: argparse.Namespace,
    pts: list[tuple[float, float]],
    cats: list[str],
) -> dict[str, Any]:
    import shutil

    if shutil.which("wrk"):
        return load_wrk(port, headers, a.seconds, a.clients, pts, cats)
    return asyncio.run(load(port, headers, a.seconds, a.clients, pts, cats))


def run_cityops(
    url: str, a: argparse.Namespace, pts: list[tuple[float, float]], cats: list[str]
) -> dict[str, Any]:
    port = free_port()
    env = dict(
        os.environ, CITYOPS_DATABASE_URL=url, CITYOPS_WARM_INDEXES="true", PYTHONPATH=str(ROOT)
    )
    proc = serve(["cityops.app:create_app", "--factory", "--workers", str(a.workers)], env, port)
    try:
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": "inspector1", "password": "demo-pass-2026"},
            timeout=30,
        )
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        # warm every worker (indexes, clock) before measuring
        asyncio.run(load(port, headers, 5, a.clients, pts, cats))
        return measure(port, headers, a, pts, cats)
    finally:
        proc.terminate()
        proc.wait(30)


def run_bare(
    a: argparse.Namespace, pts: list[tuple[float, float]], cats: list[str]
) -> dict[str, Any]:
    mod = ROOT / "var" / "bench" / "bare_app.py"
    mod.parent.mkdir(parents=True, exist_ok=True)
    mod.write_text(BARE_APP)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(mod.parent))
    proc = serve(["bare_app:app", "--workers", str(a.workers)], env, port)
    try:
        return measure(port, {}, a, pts, cats)
    finally:
        proc.terminate()
        proc.wait(30)


def pg_fresh() -> str:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        exists = c.execute(
            "SELECT 1 FROM pg_database WHERE datname='cityops_bench_intake'"
        ).fetchone()
        if not exists:
            c.execute("CREATE DATABASE cityops_bench_intake")
    return PG_BENCH


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", choices=["sqlite", "pg"], default=None)
    a = ap.parse_args()
    out: dict[str, Any] = {
        "machine": machine(),
        "clients": a.clients,
        "workers": a.workers,
        "seconds": a.seconds,
    }
    sqlite_url = f"sqlite:///{ROOT / 'var' / 'bench' / 'city.db'}"
    db = prepare(sqlite_url)
    pts, cats = sample_points(db, 20_000), categories(db)
    out["bare_starlette"] = run_bare(a, pts, cats)
    if a.only in (None, "sqlite"):
        out["sqlite"] = run_cityops(sqlite_url, a, pts, cats)
    if a.only in (None, "pg"):
        pg = pg_fresh()
        prepare(pg)
        out["postgresql"] = run_cityops(pg, a, pts, cats)
    for k in ("sqlite", "postgresql"):
        if k in out:
            out[f"ratio_{k}_vs_bare"] = round(out[k]["per_s"] / out["bare_starlette"]["per_s"], 3)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

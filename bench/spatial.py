"""Spatial benchmark on the `large` demo city (51,495 unit grids, 2.58 M components).

Measures, in one session on one machine:
  * locate (single point, our GridIndex) vs raw shapely STRtree on the same polygons;
  * bulk locate (points/s) vs raw STRtree bulk query;
  * nearest component among 2.58 M (our ComponentIndex, geodesic result) vs raw shapely
    STRtree.query_nearest on the same points (planar degrees, i.e. less correct);
  * PostgreSQL GiST on the same data (built-in box/point types, no PostGIS): box containment
    for grid lookup and KNN `<->` for nearest, 2 client connections;
  * peak memory (VmHWM) of a `cityops serve` process with the large city loaded and both
    indexes built.

Usage: python bench/spatial.py [--db var/bench/large.db] [--pg postgresql://postgres@127.0.0.1:5432/test]
The large city is generated on first use (a few minutes) and reused afterwards.
Prints a JSON summary and a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import psycopg
import shapely

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cityops.core.db import Database  # noqa: E402
from cityops.core.migrate import upgrade  # noqa: E402
from cityops.geo.index import ComponentIndex, GridIndex, count_rows  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}, shapely {shapely.__version__}"


def ensure_large(path: Path) -> Database:
    url = f"sqlite:///{path}"
    db = Database(url)
    upgrade(db.engine)
    with db.session() as s:
        n = count_rows(s, "grids")
    if n == 0:
        from cityops.geo.demo import build_demo

        t = time.perf_counter()
        print("building the large demo city (once)…", flush=True)
        build_demo(db, scale="large", seed=7)
        print(f"  built in {time.perf_counter() - t:.0f} s", flush=True)
    return db


def per_call_us(fn, args_list) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for a in args_list:
        fn(*a)
    return (time.perf_counter() - t) / len(args_list) * 1e6


def best_of(n: int, fn) -> float:  # type: ignore[no-untyped-def]
    return min(fn() for _ in range(n))


_SHARED: dict = {}


def _child(fn_name: str, part: list[tuple[float, float]]) -> float:
    fn = _SHARED[fn_name]
    t = time.perf_counter()
    for x, y in part:
        fn(x, y)
    return time.perf_counter() - t


def two_process_qps(fn_name: str, pts: list[tuple[float, float]]) -> float:
    """Throughput of a per-point call from 2 forked processes (2 cores, like PG's 2 clients)."""
    import multiprocessing as mp

    half = len(pts) // 2
    with mp.get_context("fork").Pool(2) as pool:
        times = pool.starmap(_child, [(fn_name, pts[:half]), (fn_name, pts[half : 2 * half])])
    return 2 * half / max(times)


def pg_reference(
    pg_url: str, grids: GridIndex, comps: ComponentIndex, qx, qy, n_q: int, ix, iy
) -> dict:  # type: ignore[no-untyped-def]
    """Load the same boxes and points into PostgreSQL, GiST-index them, measure q/s with 2 clients."""
    conn = psycopg.connect(pg_url, autocommit=True)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_grid_box, bench_comp_pt")
    cur.execute("CREATE TABLE bench_grid_box (idx int, b box)")
    cur.execute("CREATE TABLE bench_comp_pt (id bigint, p point)")
    b = shapely.bounds(grids.geoms)
    t = time.perf_counter()
    with cur.copy("COPY bench_grid_box (idx, b) FROM STDIN") as cp:
        for i, (x0, y0, x1, y1) in enumerate(b):
            cp.write_row((i, f"(({x1},{y1}),({x0},{y0}))"))
    with cur.copy("COPY bench_comp_pt (id, p) FROM STDIN") as cp:
        for cid, x, y in zip(
            comps.ids.tolist(), comps.lons.tolist(), comps.lats.tolist(), strict=True
        ):
            cp.write_row((cid, f"({x},{y})"))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    cur.execute("CREATE INDEX ON bench_grid_box USING gist (b)")
    cur.execute("CREATE INDEX ON bench_comp_pt USING gist (p)")
    cur.execute("ANALYZE bench_grid_box; ANALYZE bench_comp_pt")
    index_s = time.perf_counter() - t

    box_q = _pg_run_box(pg_url, qx, qy, n_q)
    knn_q = _pg_run_knn(pg_url, qx, qy, n_q)
    knn_in = _pg_run_knn(pg_url, ix, iy, len(ix))
    explain = conn.execute(
        "EXPLAIN SELECT idx FROM bench_grid_box WHERE b @> box(point(115.7,33.8), point(115.7,33.8))"
    ).fetchall()
    cur.execute("DROP TABLE bench_grid_box, bench_comp_pt")
    conn.close()
    return {
        "load_s": round(load_s, 1),
        "index_build_s": round(index_s, 1),
        "box_lookup_qps_2_clients": round(box_q),
        "knn_qps_2_clients": round(knn_q),
        "knn_qps_2_clients_in_city": round(knn_in),
        "box_plan_uses_index": any("Index" in r[0] for r in explain),
    }


def _pg_threads(pg_url: str, sql: str, params: list[tuple[float, ...]], clients: int = 2) -> float:
    per = len(params) // clients

    def worker(k: int) -> None:
        c = psycopg.connect(pg_url, autocommit=True)
        cu = c.cursor()
        for p in params[k * per : (k + 1) * per]:
            cu.execute(sql, p, prepare=True)
            cu.fetchall()
        c.close()

    ths = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    return per * clients / (time.perf_counter() - t0)


def _pg_run_box(pg_url: str, qx, qy, n_q: int) -> float:  # type: ignore[no-untyped-def]
    sql = "SELECT idx FROM bench_grid_box WHERE b @> box(point(%s, %s), point(%s, %s))"
    return _pg_threads(
        pg_url,
        sql,
        [(float(x), float(y), float(x), float(y)) for x, y in zip(qx[:n_q], qy[:n_q], strict=True)],
    )


def _pg_run_knn(pg_url: str, qx, qy, n_q: int) -> float:  # type: ignore[no-untyped-def]
    sql = "SELECT id FROM bench_comp_pt ORDER BY p <-> point(%s, %s) LIMIT 1"
    return _pg_threads(
        pg_url, sql, [(float(x), float(y)) for x, y in zip(qx[:n_q], qy[:n_q], strict=True)]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_peak_memory(db_path: Path) -> dict:
    """Start `cityops serve` on the large city, build both indexes via the API, read VmHWM."""
    port = free_port()
    env = dict(
        os.environ,
        CITYOPS_DATABASE_URL=f"sqlite:///{db_path}",
        CITYOPS_PORT=str(port),
        CITYOPS_WARM_INDEXES="true",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cityops.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.perf_counter()
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5).read()
                break
            except Exception:
                if time.perf_counter() - t0 > 120:
                    raise
                time.sleep(0.5)
        # wait until the background warm-up has built both indexes (RSS stops growing)
        last, stable = 0, 0
        while stable < 6 and time.perf_counter() - t0 < 600:
            time.sleep(1.0)
            rss = _status_kb(proc.pid, "VmRSS")
            stable = stable + 1 if abs(rss - last) < 2048 else 0
            last = rss
        ready_s = time.perf_counter() - t0
        return {
            "peak_rss_mb": round(_status_kb(proc.pid, "VmHWM") / 1024),
            "rss_after_warmup_mb": round(_status_kb(proc.pid, "VmRSS") / 1024),
            "warmup_s": round(ready_s, 1),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default=str(ROOT / "var" / "bench" / "large.db"))
    ap.add_argument(
        "--pg",
        default=os.environ.get("CITYOPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--queries", type=int, default=20_000)
    ap.add_argument("--bulk", type=int, default=1_000_000)
    ap.add_argument("--skip-server", action="store_true")
    a = ap.parse_args()
    path = Path(a.db)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = ensure_large(path)
    out: dict = {"machine": machine()}

    with db.session() as s:
        t = time.perf_counter()
        grids = GridIndex.build(s)
        out["grid_index_build_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        comps = ComponentIndex.build(s)
        out["component_index_build_s"] = round(time.perf_counter() - t, 2)
    out["grids"] = len(grids)
    out["components"] = len(comps)

    rng = np.random.default_rng(1)
    minx, miny, maxx, maxy = shapely.total_bounds(grids.geoms)
    qx = rng.uniform(minx, maxx, a.bulk)
    qy = rng.uniform(miny, maxy, a.bulk)
    nq = a.queries
    pts = [(float(x), float(y)) for x, y in zip(qx[:nq], qy[:nq], strict=True)]

    # --- locate, single point
    raw_tree = shapely.STRtree(grids.geoms)

    def raw_single(x: float, y: float) -> object:
        return raw_tree.query(shapely.Point(x, y), predicate="intersects")

    out["locate_single_us"] = round(best_of(3, lambda: per_call_us(grids.locate_idx, pts)), 1)
    out["raw_strtree_single_us"] = round(best_of(3, lambda: per_call_us(raw_single, pts)), 1)

    # --- locate, bulk
    def ours_bulk() -> float:
        t = time.perf_counter()
        grids.locate_many(qx, qy)
        return time.perf_counter() - t

    def raw_bulk() -> float:
        t = time.perf_counter()
        raw_tree.query(shapely.points(qx, qy), predicate="intersects")
        return time.perf_counter() - t

    out["locate_bulk_points_per_s"] = round(a.bulk / best_of(3, ours_bulk))
    out["raw_strtree_bulk_points_per_s"] = round(a.bulk / best_of(3, raw_bulk))

    # --- nearest component among all
    out["nearest_single_us"] = round(
        best_of(3, lambda: per_call_us(lambda x, y: comps.nearest(x, y), pts)), 1
    )
    cat = int(np.bincount(comps.category_ids).argmax())
    out["nearest_in_category_us"] = round(
        best_of(
            3,
            lambda: per_call_us(
                lambda x, y: comps.nearest(x, y, category_id=cat, radius_m=500), pts
            ),
        ),
        1,
    )
    t = time.perf_counter()
    comp_pts = shapely.points(comps.lons, comps.lats)
    raw_comp_tree = shapely.STRtree(comp_pts)
    out["raw_strtree_components_build_s"] = round(time.perf_counter() - t, 2)
    out["raw_strtree_nearest_us"] = round(
        best_of(
            3,
            lambda: per_call_us(lambda x, y: raw_comp_tree.query_nearest(shapely.Point(x, y)), pts),
        ),
        1,
    )

    _SHARED["locate"] = grids.locate_idx
    _SHARED["nearest"] = lambda x, y: comps.nearest(x, y)
    out["locate_qps_2_processes"] = round(two_process_qps("locate", pts))
    out["nearest_qps_2_processes"] = round(two_process_qps("nearest", pts))

    # in-city queries (what intake asks: a case point always lies in some grid)
    inside = grids.locate_many(qx[: 4 * nq], qy[: 4 * nq]) >= 0
    ix, iy = qx[: 4 * nq][inside][:nq], qy[: 4 * nq][inside][:nq]
    pts_in = [(float(x), float(y)) for x, y in zip(ix, iy, strict=True)]
    out["nearest_single_us_in_city"] = round(
        best_of(3, lambda: per_call_us(lambda x, y: comps.nearest(x, y), pts_in)), 1
    )
    out["nearest_qps_2_processes_in_city"] = round(two_process_qps("nearest", pts_in))

    # --- PostgreSQL GiST reference
    out["postgresql"] = pg_reference(a.pg, grids, comps, qx, qy, nq, ix, iy)
    # like for like: our index from 2 processes against 2 PostgreSQL client connections
    pg = out["postgresql"]
    out["ratio_locate_vs_pg_box"] = round(
        out["locate_qps_2_processes"] / pg["box_lookup_qps_2_clients"], 1
    )
    out["ratio_nearest_vs_pg_knn"] = round(
        out["nearest_qps_2_processes"] / pg["knn_qps_2_clients"], 1
    )
    out["ratio_nearest_vs_pg_knn_in_city"] = round(
        out["nearest_qps_2_processes_in_city"] / pg["knn_qps_2_clients_in_city"], 1
    )
    out["ratio_nearest_one_process_vs_pg_knn_2_clients"] = round(
        1e6 / out["nearest_single_us"] / pg["knn_qps_2_clients"], 1
    )

    if not a.skip_server:
        out["server"] = server_peak_memory(path)

    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

"""Telemetry intake: batched ingest with rule evaluation vs a raw bulk insert, and alarm latency.

Per database (SQLite file ``var/bench/telemetry.db``; PostgreSQL database
``cityops_bench_telemetry`` on 127.0.0.1:5432, user postgres — both recreated each run):
the ``small`` demo city plus 10,000 load series (4,000 pressure gauges, 2,000 methane
detectors with temperature, 2,000 ponding gauges) on 8,000 extra facilities.

1. **Throughput.** Batches of 200,000 readings (20 instants × 10,000 series, values normal
   so no alarm is raised — the rules are still evaluated on every reading) through
   :func:`cityops.monitoring.ingest.ingest_readings` with and without rule evaluation,
   against the reference: the same rows written raw (PostgreSQL ``COPY``, SQLite
   ``executemany``) into a plain table with the same primary key. Each variant runs on its
   own fresh instants, interleaved, ``--rounds`` times; the median is reported.
   Targets: ≥ 200,000 readings/s; rule evaluation adds ≤ 20 %.
2. **Alarm latency.** The MQTT subscriber (:mod:`cityops.monitoring.mqtt`) on the broker at
   127.0.0.1:1883 (unique topic root); a separate process publishes a background load of
   ``--load`` readings/s (messages of 100 readings, 10 ms apart, per device: high-rate
   channels as a gateway sends them); every 0.25 s a probe device
   publishes 30 %LEL methane. Latency = publish → the alarm row with its urgent case
   committed (polled every 5 ms). Target: p99 ≤ 500 ms under 20,000 readings/s.

Usage: python bench/telemetry.py [--db sqlite|postgresql|both] [--rounds 3] [--probes 80]
       [--load 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CITYOPS_WARM_INDEXES", "false")

from sqlalchemy import create_engine, insert, select, text  # noqa: E402

import cityops.models  # noqa: E402, F401
from cityops.core.db import Database, utcnow  # noqa: E402
from cityops.core.migrate import upgrade  # noqa: E402
from cityops.geo.models import Component, Unit  # noqa: E402
from cityops.monitoring.ingest import ingest_readings, sqlite_ts  # noqa: E402
from cityops.monitoring.models import Alarm, Device, Facility  # noqa: E402
from cityops.monitoring.mqtt import BrokerAddress, Subscriber  # noqa: E402

VAR = ROOT / "var" / "bench"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PG_NAME = "cityops_bench_telemetry"
SERIES = (("pressure_gauge", ("pressure",), 4000), ("methane_detector", ("ch4", "temp"), 2000))
SERIES += (("ponding_gauge", ("ponding",), 2000),)
NORMAL = {"pressure": 0.40, "ch4": 0.3, "temp": 16.0, "ponding": 0.5}
INSTANTS = 20


def fresh_db(kind: str) -> Database:
    if kind == "sqlite":
        VAR.mkdir(parents=True, exist_ok=True)
        p = VAR / "telemetry.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
        url = f"sqlite:///{p}"
    else:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{PG_NAME}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{PG_NAME}"'))
        admin.dispose()
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_NAME}"
    db = Database(url)
    upgrade(db.engine)
    from cityops.geo.demo import build_demo

    build_demo(db, scale="small", seed=7)
    return db


def add_devices(db: Database) -> tuple[list[tuple[str, str]], list[str]]:
    """Load series (code, measurand) and 100 probe methane detectors at distinct places."""
    now = utcnow()
    with db.session() as s:
        owner = s.scalars(select(Unit.id).where(Unit.code.like("%-WATER"))).one()
        gas = s.scalars(select(Unit.id).where(Unit.code.like("%-GAS"))).one()
        comps = s.execute(
            select(Component.id, Component.lon, Component.lat, Component.h3, Component.grid_code)
            .where(Component.grid_code.is_not(None))
            .order_by(Component.id)
        ).all()
        facs: list[dict[str, Any]] = []
        n_load = sum(n for _, _, n in SERIES)
        for i in range(n_load + 100):
            c = comps[(i * 7) % len(comps)] if i < n_load else comps[-(i - n_load) * 13 - 1]
            probe = i >= n_load
            facs.append(
                {
                    "code": f"BENCH-{'P' if probe else 'F'}{i:05d}",
                    "name": f"bench {i}",
                    "kind": "valve_well" if probe else "water_main",
                    "owner_unit_id": gas if probe else owner,
                    "component_id": None,
                    "lon": c.lon,
                    "lat": c.lat,
                    "h3": c.h3,
                    "grid_code": c.grid_code,
                    "active": True,
                    "created_at": now,
                    "version": 1,
                }
            )
        s.execute(insert(Facility), facs)
        ids = {c: i for c, i in s.execute(select(Facility.code, Facility.id))}
        devs: list[dict[str, Any]] = []
        series: list[tuple[str, str]] = []
        k = 0
        for dtype, ms, n in SERIES:
            for _ in range(n):
                f = facs[k]
                code = f"BENCH-D{k:05d}"
                devs.append(_dev(code, dtype, list(ms), ids[f["code"]], f, now))
                series.extend((code, m) for m in ms)
                k += 1
        probes = []
        for j in range(100):
            f = facs[k + j]
            code = f"BENCH-PROBE{j:03d}"
            devs.append(_dev(code, "methane_detector", ["ch4", "temp"], ids[f["code"]], f, now))
            probes.append(code)
        s.execute(insert(Device), devs)
    return series, probes


def _dev(
    code: str, dtype: str, ms: list[str], fid: int, f: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "code": code,
        "name": code,
        "device_type": dtype,
        "facility_id": fid,
        "measurands": ms,
        "lon": f["lon"],
        "lat": f["lat"],
        "grid_code": f["grid_code"],
        "interval_s": 60,
        "status": "online",
        "accepted_count": 0,
        "rejected_count": 0,
        "created_at": now,
        "version": 1,
    }


def batch_rows(series: list[tuple[str, str]], t0: datetime) -> list[dict[str, Any]]:
    rows = []
    for j in range(INSTANTS):
        t = t0 + timedelta(seconds=j)
        for i, (code, m) in enumerate(series):
            rows.append(
                {
                    "device_code": code,
                    "measurand": m,
                    "ts": t,
                    "value": NORMAL[m] + ((i + j) % 7) * 0.001,
                }
            )
    return rows


def raw_insert(db: Database, rows: list[dict[str, Any]], ids: dict[str, int]) -> float:
    """The reference: the same rows written raw into a table with the same key."""
    pg = not db.is_sqlite
    tuples = [
        (
            ids[r["device_code"]],
            r["measurand"],
            r["ts"].astimezone(UTC).replace(tzinfo=None),
            r["value"],
        )
        for r in rows
    ]
    t = time.perf_counter()
    with db.engine.begin() as conn:
        if pg:
            raw = conn.connection.driver_connection
            with (
                raw.cursor() as cur,
                cur.copy(  # type: ignore[union-attr]
                    "COPY bench_raw (device_id, measurand, ts, value) FROM STDIN"
                ) as cp,
            ):
                for tup in tuples:
                    cp.write_row(tup)
        else:
            conn.exec_driver_sql(
                "INSERT INTO bench_raw (device_id, measurand, ts, value) VALUES (?, ?, ?, ?)",
                [(a, b, sqlite_ts(c), d) for a, b, c, d in tuples],
            )
    return time.perf_counter() - t


def ingest_once(db: Database, rows: list[dict[str, Any]], evaluate: bool) -> float:
    t = time.perf_counter()
    with db.session() as s:
        r = ingest_readings(s, rows, utcnow(), evaluate=evaluate)
    el = time.perf_counter() - t
    assert r.stored == len(rows) and not r.rejected and not r.alarms_raised, r.to_dict()
    return el


def throughput(db: Database, series: list[tuple[str, str]], rounds: int) -> dict[str, Any]:
    with db.engine.begin() as conn:
        if db.is_sqlite:
            conn.exec_driver_sql(
                "CREATE TABLE bench_raw (device_id INTEGER NOT NULL, measurand VARCHAR(16) NOT "
                "NULL, ts DATETIME NOT NULL, value FLOAT NOT NULL, PRIMARY KEY (device_id, "
                "measurand, ts)) WITHOUT ROWID"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TABLE bench_raw (device_id integer NOT NULL, measurand varchar(16) NOT "
                "NULL, ts timestamp NOT NULL, value double precision NOT NULL, PRIMARY KEY "
                "(device_id, measurand, ts))"
            )
    with db.session() as s:
        ids = {c: i for c, i in s.execute(select(Device.code, Device.id))}
    base = utcnow().replace(microsecond=0) - timedelta(hours=2)
    times: dict[str, list[float]] = {"raw": [], "ingest": [], "ingest+rules": []}
    n = len(series) * INSTANTS
    # one untimed warm-up of each path (statement caches, rule/device queries)
    for k, variant in enumerate(("raw", "ingest", "ingest+rules") * (rounds + 1), start=1):
        rows = batch_rows(series, base + timedelta(seconds=k * INSTANTS))
        if variant == "raw":
            el = raw_insert(db, rows, ids)
        else:
            el = ingest_once(db, rows, variant == "ingest+rules")
        if k > 3:
            times[variant].append(el)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    return {
        "rows_per_batch": n,
        "raw_rows_per_s": round(n / med["raw"]),
        "ingest_rows_per_s": round(n / med["ingest"]),
        "ingest_rules_rows_per_s": round(n / med["ingest+rules"]),
        "ingest_vs_raw": round(med["ingest"] / med["raw"], 2),
        "rules_overhead_pct": round((med["ingest+rules"] / med["ingest"] - 1) * 100, 1),
    }


def _load_process(root: str, codes: list[list[str]], rate: int, stop_at: float) -> None:
    import paho.mqtt.client as paho

    c = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"bench-load-{uuid.uuid4().hex[:8]}"
    )
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", 1883, keepalive=30)
    c.loop_start()
    per_msg = 100
    msgs_per_s = max(1, rate // per_msg)
    tick = 0.05
    per_tick = max(1, int(msgs_per_s * tick))
    i = 0
    nxt = time.monotonic()
    sent = 0
    while time.time() < stop_at:
        now = datetime.now(UTC)
        for _ in range(per_tick):
            code, m = codes[i % len(codes)]
            i += 1
            rows = [
                {
                    "measurand": m,
                    "ts": (
                        now - timedelta(milliseconds=100 * (per_msg - j) + (i % 97))
                    ).isoformat(),
                    "value": NORMAL[m],
                }
                for j in range(per_msg)
            ]
            c.publish(f"{root}/{code}", json.dumps({"readings": rows}), qos=1)
            sent += per_msg
        nxt += tick
        time.sleep(max(0.0, nxt - time.monotonic()))
    c.loop_stop()
    c.disconnect()


def latency(
    db: Database, series: list[tuple[str, str]], probes: list[str], n_probes: int, load: int
) -> dict[str, Any]:
    import paho.mqtt.client as paho

    from cityops.geo.index import indexes_for

    with db.session() as s:  # as the server does at start-up (CITYOPS_WARM_INDEXES)
        indexes_for(s).grids(s)
        indexes_for(s).components(s)
    root = f"bench-{uuid.uuid4().hex[:8]}/telemetry"
    sub = Subscriber(db, BrokerAddress("127.0.0.1", 1883), f"bench-{uuid.uuid4().hex[:8]}", root)
    sub.start()
    assert sub.connected.wait(10)
    with db.session() as s:
        probe_ids = {
            i: c
            for c, i in s.execute(select(Device.code, Device.id).where(Device.code.in_(probes)))
        }
    duration = n_probes * 0.25 + 8
    stop_at = time.time() + duration
    loader = mp.get_context("spawn").Process(
        target=_load_process, args=(root, [list(x) for x in series], load, stop_at)
    )
    loader.start()
    time.sleep(3)  # the load runs first
    pub = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{uuid.uuid4().hex[:8]}"
    )
    pub.connect("127.0.0.1", 1883, keepalive=30)
    pub.loop_start()
    sent: dict[int, float] = {}
    found: dict[int, float] = {}
    stored0 = sub.stats.stored
    t_start = time.time()
    by_code = {c: i for i, c in probe_ids.items()}
    eng = db.engine
    for j in range(n_probes):
        code = probes[j % len(probes)]
        payload = json.dumps(
            {"measurand": "ch4", "ts": datetime.now(UTC).isoformat(), "value": 30.0}
        )
        sent[by_code[code]] = time.time()
        pub.publish(f"{root}/{code}", payload, qos=1)
        end = time.time() + 0.25
        while time.time() < end:
            with eng.connect() as conn:
                for dev_id, _case in conn.execute(
                    select(Alarm.device_id, Alarm.case_id).where(
                        Alarm.device_id.in_(list(set(sent) - set(found))),
                        Alarm.case_id.is_not(None),
                    )
                ):
                    found[dev_id] = time.time()
            time.sleep(0.005)
    deadline = time.time() + 10
    while len(found) < len(sent) and time.time() < deadline:
        with eng.connect() as conn:
            for dev_id, _case in conn.execute(
                select(Alarm.device_id, Alarm.case_id).where(
                    Alarm.device_id.in_(list(set(sent) - set(found))), Alarm.case_id.is_not(None)
                )
            ):
                found[dev_id] = time.time()
        time.sleep(0.005)
    t_el = time.time() - t_start
    stored = sub.stats.stored - stored0
    loader.join(duration + 10)
    pub.loop_stop()
    pub.disconnect()
    sub.stop()
    lat = sorted((found[d] - sent[d]) * 1000 for d in found)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    return {
        "probes": len(sent),
        "alarms_with_case": len(found),
        "background_readings_per_s": round(stored / t_el),
        "messages_per_batch": round(sub.stats.messages / max(1, sub.stats.batches), 1),
        "p50_ms": round(statistics.median(lat), 1),
        "p99_ms": round(q[98], 1),
        "max_ms": round(lat[-1], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", default="both", choices=["sqlite", "postgresql", "both"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probes", type=int, default=80)
    ap.add_argument("--load", type=int, default=20_000)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    out: dict[str, Any] = {}
    for kind in kinds:
        t = time.perf_counter()
        db = fresh_db(kind)
        series, probes = add_devices(db)
        print(f"[{kind}] setup {time.perf_counter() - t:.1f}s", file=sys.stderr)
        res: dict[str, Any] = {}
        if not args.skip_throughput:
            res["throughput"] = throughput(db, series, args.rounds)
            print(f"[{kind}] {res['throughput']}", file=sys.stderr)
        if not args.skip_latency:
            res["latency"] = latency(db, series, probes, args.probes, args.load)
            print(f"[{kind}] {res['latency']}", file=sys.stderr)
        out[kind] = res
        db.dispose()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

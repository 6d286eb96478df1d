"""The monitoring REST API: telemetry intake (JSON, CSV, device keys), admin CRUD, scoped
lists and map, alarm list/detail and 研判."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from cityops.core.db import Database, utcnow
from cityops.geo.models import Unit
from cityops.monitoring.models import Facility
from tests.monitoring_support import device

PW = "demo-pass-2026"
URL = "/api/v1/monitoring"


def login(c: TestClient, user: str) -> dict[str, str]:
    r = c.post("/api/v1/auth/login", json={"username": user, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _ts(seconds_ago: float) -> str:
    return (utcnow() - timedelta(seconds=seconds_ago)).isoformat()


def test_telemetry_json_csv_and_device_keys(city_client: TestClient, city: Database) -> None:
    c = city_client
    mon = login(c, "monitor1")
    body = {
        "readings": [
            {"device_code": "WAT-WM-001-P", "measurand": "pressure", "ts": _ts(60), "value": 0.41},
            {"device_code": "WAT-WM-001-P", "measurand": "pressure", "ts": _ts(30), "value": "x"},
        ]
    }
    r = c.post(f"{URL}/telemetry", json=body, headers=mon)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["rejected_count"]) == (1, 1)
    assert out["rejected"][0]["index"] == 1 and "non-numeric" in out["rejected"][0]["reason"]
    csv_body = (
        "device_code,measurand,ts,value,unit\n"
        f"WAT-WM-001-Q,flow,{_ts(60)},120.5,m³/h\n"
        f"WAT-WM-001-Q,flow,{_ts(30)},nan,m³/h\n"
        f"WAT-WM-001-Q,flow,{_ts(20)},118,\n"
    )
    r = c.post(
        f"{URL}/telemetry",
        content=csv_body.encode(),
        headers={**mon, "Content-Type": "text/csv"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["stored"], r.json()["rejected_count"]) == (2, 1)
    # a reader may not send telemetry; nobody may without login or key
    assert c.post(f"{URL}/telemetry", json=body, headers=login(c, "leader1")).status_code == 403
    c.cookies.clear()  # the logins above left a session cookie
    assert c.post(f"{URL}/telemetry", json=body).status_code == 401
    # device keys: issued by the admin, shown once, valid for that device only
    admin = login(c, "admin")
    with city.session() as s:
        dev_id = device(s, "WAT-WM-001-P").id
    key = c.post(f"{URL}/devices/{dev_id}/key", headers=admin).json()["key"]
    r = c.post(
        f"{URL}/telemetry",
        json=[
            {"device_code": "WAT-WM-001-P", "measurand": "pressure", "ts": _ts(10), "value": 0.4},
            {"device_code": "WAT-WM-001-Q", "measurand": "flow", "ts": _ts(10), "value": 3},
        ],
        headers={"X-Device-Key": key},
    )
    assert r.status_code == 200
    assert (
        r.json()["stored"] == 1 and "only device WAT-WM-001-P" in r.json()["rejected"][0]["reason"]
    )
    assert c.post(f"{URL}/telemetry", json=[], headers={"X-Device-Key": "bad"}).status_code == 401
    # the refusals are visible per device
    d = c.get(f"{URL}/devices/{dev_id}", headers=mon).json()
    assert d["rejected_count"] == 1 and d["accepted_count"] == 2 and d["has_key"] is True
    stats = c.get(f"{URL}/devices/stats", headers=mon).json()
    assert {x["code"] for x in stats["rejecting"]} == {"WAT-WM-001-P", "WAT-WM-001-Q"}
    series = c.get(
        f"{URL}/devices/{dev_id}/series", params={"measurand": "pressure"}, headers=mon
    ).json()
    assert [p[1] for p in series["points"]] == [0.41, 0.4]
    # an unreadable body is one clear error and nothing is stored
    r = c.post(
        f"{URL}/telemetry", content=b"{oops", headers={**mon, "Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["details"]["field"] == "body"


def test_admin_crud_and_scoped_reads(city_client: TestClient, city: Database) -> None:
    c = city_client
    admin = login(c, "admin")
    with city.session() as s:
        gas = s.scalars(select(Unit).where(Unit.code.like("%-GAS"))).one()
        base = s.scalars(select(Facility).where(Facility.code == "GAS-VW-001")).one()
        lon, lat, district = base.lon, base.lat, (base.grid_code or "")[:6]
    new: dict[str, Any] = {
        "code": "GAS-VW-900",
        "name": "测试阀门井",
        "kind": "valve_well",
        "owner_unit_id": gas.id,
        "lon": lon + 0.0001,
        "lat": lat,
    }
    bad = c.post(f"{URL}/facilities", json={**new, "kind": "volcano"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["details"]["field"] == "kind"
    assert c.post(f"{URL}/facilities", json=new, headers=login(c, "monitor1")).status_code == 403
    r = c.post(f"{URL}/facilities", json=new, headers=admin)
    assert r.status_code == 201, r.text
    fac = r.json()
    assert fac["grid_code"].startswith(district)
    r = c.post(
        f"{URL}/devices",
        json={
            "code": "GAS-VW-900-CH4",
            "device_type": "methane_detector",
            "facility_id": fac["id"],
        },
        headers=admin,
    )
    assert r.status_code == 201, r.text
    dev = r.json()
    assert [m["unit"] for m in dev["measurands"]] == ["%LEL", "°C"]
    assert (dev["lon"], dev["lat"], dev["interval_s"]) == (fac["lon"], fac["lat"], 60)
    r = c.patch(f"{URL}/devices/{dev['id']}", json={"interval_s": 30}, headers=admin)
    assert r.json()["interval_s"] == 30
    assert c.delete(f"{URL}/facilities/{fac['id']}", headers=admin).status_code == 409
    assert c.delete(f"{URL}/devices/{dev['id']}", headers=admin).status_code == 204
    assert c.delete(f"{URL}/facilities/{fac['id']}", headers=admin).status_code == 204

    # a district user sees only the district's facilities; others are 404
    d1 = login(c, "district1")
    with city.session() as s:
        from cityops.access.models import User

        scope = s.scalars(select(User.scope_region_code).where(User.username == "district1")).one()
        facs = list(s.scalars(select(Facility)))
    mine = [f for f in facs if (f.grid_code or "").startswith(scope)]
    other = [f for f in facs if not (f.grid_code or "").startswith(scope)]
    assert mine and other
    listed = {f["code"] for f in c.get(f"{URL}/facilities", headers=d1).json()}
    assert listed == {f.code for f in mine}
    assert c.get(f"{URL}/facilities/{other[0].id}", headers=d1).status_code == 404
    feats = c.get(f"{URL}/map", headers=d1).json()["features"]
    assert {f["properties"]["code"] for f in feats} == listed


def test_alarm_list_detail_and_judgement(city_client: TestClient, city: Database) -> None:
    c = city_client
    mon = login(c, "monitor1")
    rows = [
        {"device_code": "BRG-001-S2", "measurand": "strain", "ts": _ts(120), "value": 100.0},
        {"device_code": "BRG-001-S2", "measurand": "strain", "ts": _ts(60), "value": 520.0},
    ]
    r = c.post(f"{URL}/telemetry", json=rows, headers=mon)
    assert len(r.json()["alarms_raised"]) == 1
    alarm_id = r.json()["alarms_raised"][0]
    lst = c.get(f"{URL}/alarms", params={"open": True}, headers=mon).json()
    assert [a["id"] for a in lst] == [alarm_id]
    assert lst[0]["status"] == "pending" and lst[0]["level_name"] == "二级(橙)"
    det = c.get(f"{URL}/alarms/{alarm_id}", headers=mon).json()
    assert [p[1] for p in det["readings"]] == [100.0, 520.0]
    assert det["rule"]["levels"][1] == {"level": 2, "low": -500.0, "high": 500.0}
    assert [e["action"] for e in det["events"]] == ["raised"]
    # live readings of the same level keep coming while the monitor looks at it: the
    # version they judge stays valid
    more = [{"device_code": "BRG-001-S2", "measurand": "strain", "ts": _ts(30), "value": 530.0}]
    assert c.post(f"{URL}/telemetry", json=more, headers=mon).json()["stored"] == 1
    r = c.post(
        f"{URL}/alarms/{alarm_id}/judge",
        json={"confirm": True, "reason": "现场核实", "version": det["version"]},
        headers=mon,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active" and r.json()["case_id"] is not None
    # judged already: a second judgement is a conflict
    r = c.post(
        f"{URL}/alarms/{alarm_id}/judge", json={"confirm": False, "reason": "x"}, headers=mon
    )
    assert r.status_code == 409
    det = c.get(f"{URL}/alarms/{alarm_id}", headers=mon).json()
    assert det["case"]["urgency"] == "特急" and det["case"]["stage"] == "sign"

"""The flood API over HTTP: roles (403), district scope (404), the order loop by its
receiver, the board, report downloads and rule editing."""

from __future__ import annotations

import io
from typing import Any

from openpyxl import load_workbook

from tests.flood_support import field_person, points_of_district, username_of

PW = "demo-pass-2026"
API = "/api/v1/flood"


def login(client: Any, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_flood_api_roles_scope_orders_and_report(city, city_client) -> None:
    with city.session() as s:
        mine = points_of_district(s, "341602")[0]
        theirs = points_of_district(s, "341621")[0]
        person = field_person(s, mine)
        receiver = username_of(s, person.user_id)
        mine_id, theirs_id, person_id = mine.id, theirs.id, person.id
    c = city_client
    assert c.get(f"{API}/board").status_code == 401
    cmd, d1, rec, adm = (login(c, u) for u in ("commander1", "district1", receiver, "admin"))

    # a handler cannot issue orders or change the level
    order = {"point_id": mine_id, "person_id": person_id, "task": "封闭下穿通道, 开泵排水"}
    r = c.post(f"{API}/orders", headers=rec, json=order)
    assert r.status_code == 403, r.text
    assert (
        c.post(
            f"{API}/level", headers=rec, json={"action": "start", "level": 4, "reason": "x"}
        ).status_code
        == 403
    )
    assert c.get(f"{API}/board", headers=rec).status_code == 403

    # a district leader sees their district only; another district's point is 404
    board = c.get(f"{API}/board", headers=d1).json()
    assert {p["district_code"] for p in board["points"]} == {"341602"}
    assert c.get(f"{API}/points/{theirs_id}", headers=d1).status_code == 404
    assert c.get(f"{API}/points/{mine_id}", headers=d1).json()["id"] == mine_id

    # the commander starts Ⅳ and sends the receiver; the receiver acknowledges
    r = c.post(
        f"{API}/level", headers=cmd, json={"action": "start", "level": 4, "reason": "暴雨蓝色预警"}
    )
    assert r.status_code == 200, r.text
    event_id = r.json()["id"]
    r = c.post(f"{API}/level", headers=cmd, json={"action": "start", "level": 3, "reason": "x"})
    assert r.status_code == 409
    r = c.post(f"{API}/orders", headers=cmd, json={**order, "person_id": None})
    assert r.status_code == 422  # exactly one receiver
    r = c.post(f"{API}/orders", headers=cmd, json=order)
    assert r.status_code == 201, r.text
    o = r.json()
    assert o["status"] == "issued" and o["event_id"] == event_id and not o["ack_overdue"]
    listed = c.get(f"{API}/orders", headers=rec, params={"mine": True, "status": "issued"}).json()
    assert [x["id"] for x in listed] == [o["id"]]
    r = c.post(
        f"{API}/orders/{o['id']}/actions",
        headers=rec,
        json={"action": "acknowledge", "version": o["version"]},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["history"][-1]["on_behalf"] is False
    r = c.post(f"{API}/orders/{o['id']}/actions", headers=rec, json={"action": "acknowledge"})
    assert r.status_code == 409
    r = c.post(
        f"{API}/orders/{o['id']}/actions",
        headers=rec,
        json={"action": "arrive", "lon": 115.78, "lat": 33.85},
    )
    assert r.status_code == 200 and r.json()["arrival"] == {"lon": 115.78, "lat": 33.85}
    board = c.get(f"{API}/board", headers=cmd).json()
    row = next(p for p in board["points"] if p["id"] == mine_id)
    assert row["arrived"] == [row["assigned"][0]["name"]] and board["event"]["level"] == 4

    r = c.post(f"{API}/level", headers=cmd, json={"action": "end", "reason": "雨停"})
    assert r.status_code == 200 and r.json()["active"] is False
    rep = c.get(f"{API}/events/{event_id}/report", headers=d1).json()
    assert rep["averages"]["orders"] == 1 and rep["averages"]["arrived"] == 1
    x = c.get(f"{API}/events/{event_id}/report.xlsx", headers=cmd)
    assert x.status_code == 200 and x.headers["content-type"].startswith("application/vnd.openxml")
    assert load_workbook(io.BytesIO(x.content)).sheetnames[0] == "概要"

    # rules: admin only, validated
    bad = {"signal": "rainfall", "level": 2, "threshold": 50}
    assert c.post(f"{API}/rules", headers=adm, json=bad).status_code == 422
    good = {**bad, "window_minutes": 60, "note": "1小时50毫米"}
    assert c.post(f"{API}/rules", headers=cmd, json=good).status_code == 403
    r = c.post(f"{API}/rules", headers=adm, json=good)
    assert r.status_code == 201 and r.json()["level_info"]["color"] == "orange"
    assert len(c.get(f"{API}/rules", headers=cmd).json()) == 6
    assert c.delete(f"{API}/rules/{r.json()['id']}", headers=adm).status_code == 204
    assert len(c.get(f"{API}/rules", headers=cmd).json()) == 5

    # positions: the receiver reports their own; not someone else's
    r = c.post(
        f"{API}/positions/persons/{person_id}", headers=rec, json={"lon": 115.781, "lat": 33.851}
    )
    assert r.status_code == 200 and r.json()["lon"] == 115.781
    others = [p["id"] for p in c.get(f"{API}/persons", headers=cmd).json() if p["user_id"] is None]
    r = c.post(
        f"{API}/positions/persons/{others[0]}", headers=rec, json={"lon": 115.78, "lat": 33.85}
    )
    assert r.status_code == 403

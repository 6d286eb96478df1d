"""The case API contract over HTTP: paths, 409 refusals, scope, worklists, photos."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from cityops.geo.crs import from_wgs84
from tests.factories import grid_of_inspector, matter_category, photo, point_in

PW = "demo-pass-2026"


def login(client: Any, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _place(city: Any) -> tuple[float, float, int]:
    with city.session() as s:
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        return lon, lat, matter_category(s).id


def test_case_loop_over_the_public_contract(city, city_client) -> None:
    lon, lat, cat = _place(city)
    op = login(city_client, "operator1")
    glon, glat = from_wgs84(lon, lat, "gcj02")  # the hotline seat's map is 高德 (GCJ-02)
    r = city_client.post(
        "/api/v1/cases",
        headers=op,
        json={
            "source": "hotline",
            "category_id": cat,
            "description": "小区门口垃圾没人清",
            "lon": glon,
            "lat": glat,
            "crs": "gcj02",
            "reporter_name": "李四",
            "reporter_phone": "13900001111",
        },
    )
    assert r.status_code == 201, r.text
    case = r.json()["case"]
    assert case["stage"] == "accept" and case["stage_label"] == "待受理"
    assert abs(case["lon"] - lon) < 1e-7 and abs(case["lat"] - lat) < 1e-7
    cid, version = case["id"], case["version"]
    assert "accept" in case["actions"]

    listed = city_client.get(
        "/api/v1/cases", headers=op, params={"stage": "accept", "q": "垃圾"}
    ).json()
    assert cid in [i["id"] for i in listed["items"]]
    wl = city_client.get("/api/v1/worklist", headers=op).json()
    assert cid in [i["id"] for i in wl["accept"]["items"]]

    r = city_client.post(
        f"/api/v1/cases/{cid}/actions", headers=op, json={"action": "accept", "version": version}
    )
    assert r.status_code == 200, r.text
    assert r.json()["stage"] == "verify"
    # the same action again with the old version: 409 with the reason, nothing changed
    again = city_client.post(
        f"/api/v1/cases/{cid}/actions", headers=op, json={"action": "accept", "version": version}
    )
    assert again.status_code == 409
    assert "changed by someone else" in again.json()["message"]
    detail = city_client.get(f"/api/v1/cases/{cid}", headers=op).json()
    assert [h["action"] for h in detail["history"]] == ["report", "accept"]

    # the assigned inspector sees the 核实 task in their worklist and does it
    inspector_id = detail["assignee_user_id"]
    with city.session() as s:
        from cityops.access.models import User

        username = s.get(User, inspector_id).username
    insp = login(city_client, username)
    assert cid in [
        i["id"] for i in city_client.get("/api/v1/worklist", headers=insp).json()["verify"]["items"]
    ]
    r = city_client.post(
        f"/api/v1/cases/{cid}/actions",
        headers=insp,
        json={"action": "verify", "confirmed": True, "note": "属实"},
    )
    assert r.json()["stage"] == "file"
    # an inspector sees the reporter masked; the centre sees it in full
    assert r.json()["reporter"] == {"name": "李*", "phone": "139****1111"}
    assert (
        city_client.get(f"/api/v1/cases/{cid}", headers=op).json()["reporter"]["phone"]
        == "13900001111"
    )


def test_refusals_over_http(city, city_client) -> None:
    lon, lat, cat = _place(city)
    insp = login(city_client, "inspector1")
    r = city_client.post(
        "/api/v1/cases",
        headers=insp,
        json={"category_id": cat, "description": "井边垃圾", "lon": lon, "lat": lat},
    )
    assert r.status_code == 201
    cid = r.json()["case"]["id"]
    # an inspector may not accept (403), the other district may not even see it (404)
    r = city_client.post(f"/api/v1/cases/{cid}/actions", headers=insp, json={"action": "accept"})
    assert r.status_code == 403 and "roles" in r.json()["message"]
    other = login(city_client, "district2")
    assert city_client.get(f"/api/v1/cases/{cid}", headers=other).status_code == 404
    # a wrong stage is a 409 naming the stage
    shift = login(city_client, "shift1")
    r = city_client.post(f"/api/v1/cases/{cid}/actions", headers=shift, json={"action": "close"})
    assert r.status_code == 409 and "待受理" in r.json()["message"]
    # unknown action and missing fields are 422 with the field
    r = city_client.post(f"/api/v1/cases/{cid}/actions", headers=shift, json={"action": "teleport"})
    assert r.status_code == 422 and r.json()["details"]["field"] == "action"
    op = login(city_client, "operator1")
    r = city_client.post(f"/api/v1/cases/{cid}/actions", headers=op, json={"action": "reject"})
    assert r.status_code == 422 and r.json()["details"]["field"] == "reason"
    # no token at all (login also set the console cookie on this client: drop it)
    city_client.cookies.clear()
    assert city_client.get("/api/v1/cases").status_code == 401
    # a point outside the city
    r = city_client.post(
        "/api/v1/cases",
        headers=insp,
        json={"category_id": cat, "description": "x", "lon": 100.0, "lat": 30.0},
    )
    assert r.status_code == 404 and "outside" in r.json()["message"]


def test_photo_upload_offers_exif_position_and_strips_it_for_the_public(city, city_client) -> None:
    lon, lat, cat = _place(city)
    insp = login(city_client, "inspector1")
    r = city_client.post(
        "/api/v1/attachments",
        headers=insp,
        files={"file": ("scene.jpg", photo(lon, lat), "image/jpeg")},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert (
        abs(body["exif_location"]["lon"] - lon) < 1e-5
        and abs(body["exif_location"]["lat"] - lat) < 1e-5
    )
    att = body["id"]
    r = city_client.post(
        "/api/v1/cases",
        headers=insp,
        json={
            "category_id": cat,
            "description": "照片上报",
            "lon": lon,
            "lat": lat,
            "attachment_ids": [att],
        },
    )
    assert r.status_code == 201
    assert [a["id"] for a in r.json()["case"]["attachments"]] == [att]
    original = city_client.get(f"/api/v1/attachments/{att}", headers=insp).content
    public = city_client.get(
        f"/api/v1/attachments/{att}", headers=insp, params={"public": True}
    ).content
    assert Image.open(io.BytesIO(original)).getexif()  # the evidence keeps its EXIF
    assert not Image.open(io.BytesIO(public)).getexif()  # the public copy has none
    # not an image or PDF: refused with the field
    r = city_client.post(
        "/api/v1/attachments", headers=insp, files={"file": ("x.exe", b"MZ\x90\x00", "image/jpeg")}
    )
    assert r.status_code == 422 and r.json()["details"]["field"] == "file"


def test_dispatch_rule_tester_and_admin_only_rules(city, city_client) -> None:
    lon, lat, _ = _place(city)
    admin = login(city_client, "admin")
    with city.session() as s:
        from sqlalchemy import select

        from cityops.geo.models import Unit

        unit = s.scalars(select(Unit).where(Unit.unit_type == "养护单位").order_by(Unit.id)).first()
        assert unit is not None
        uid, uname = unit.id, unit.name
    r = city_client.post(
        "/api/v1/dispatch-rules",
        headers=admin,
        json={"name": "垃圾都给养护", "category_id": None, "unit_id": uid},
    )
    assert r.status_code == 201, r.text
    dispatcher = login(city_client, "dispatcher1")
    r = city_client.post(
        "/api/v1/dispatch-rules", headers=dispatcher, json={"name": "x", "unit_id": uid}
    )
    assert r.status_code == 403
    r = city_client.post(
        "/api/v1/dispatch-rules/test",
        headers=dispatcher,
        json={"category_code": "06010", "lon": lon, "lat": lat},
    )
    assert r.status_code == 200, r.text
    assert r.json()["unit"] == {"id": uid, "name": uname}


def test_reviewers_and_evaluators_see_no_cases_through_the_case_api(city, city_client) -> None:
    lon, lat, cat = _place(city)
    op = login(city_client, "operator1")
    r = city_client.post(
        "/api/v1/cases",
        headers=op,
        json={
            "source": "hotline",
            "category_id": cat,
            "description": "井盖破损",
            "lon": lon,
            "lat": lat,
        },
    )
    assert r.status_code == 201, r.text
    cid = r.json()["case"]["id"]
    assert city_client.get(f"/api/v1/cases/{cid}", headers=op).status_code == 200
    for who in ("reviewer1", "evaluator1"):
        h = login(city_client, who)
        assert city_client.get(f"/api/v1/cases/{cid}", headers=h).status_code == 404
        assert city_client.get("/api/v1/cases", headers=h).json()["items"] == []

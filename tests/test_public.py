"""Citizen reporting (随手拍), status by tracking code, rating, 便民服务 POIs; limits, privacy."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from cityops.cases.models import Case, CaseAttachment
from cityops.cases.storage import LocalStorage
from cityops.geo.crs import distance_m
from cityops.geo.models import Poi
from cityops.public import api as public_api
from cityops.public import service as public
from cityops.public.models import CitizenRating
from tests.factories import grid_of_inspector, matter_category, photo, point_in
from tests.public_support import advance

PHONE = "13912345678"


@pytest.fixture
def store(tmp_path, monkeypatch) -> LocalStorage:  # type: ignore[no-untyped-def]
    s = LocalStorage(tmp_path / "att")
    monkeypatch.setattr(public_api, "default_storage", lambda: s)
    public.reset_limits()
    yield s
    public.reset_limits()


def _form(city: Any, **kw: Any) -> dict[str, Any]:
    with city.session() as s:
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        code = matter_category(s).code
    d = {
        "category_code": code,
        "description": "小区门口垃圾堆放三天无人清理",
        "lon": str(lon),
        "lat": str(lat),
        "address": "幸福路 8 号",
        "phone": PHONE,
    }
    d.update(kw)
    return d


def _report(client: Any, city: Any, **kw: Any) -> Any:
    files = {"photo": ("scene.jpg", photo(117.4, 33.9), "image/jpeg")}
    return client.post("/api/v1/public/reports", data=_form(city, **kw), files=files)


def test_report_to_closure_status_photo_without_exif_and_one_rating(
    city_client: Any, city: Any, store: LocalStorage
) -> None:
    r = _report(city_client, city)
    assert r.status_code == 201, r.text
    code = r.json()["tracking_code"]
    assert PHONE not in r.text
    with city.session() as s:
        case = s.scalars(select(Case).where(Case.tracking_code == code)).one()
        assert (case.source, case.stage, case.reporter_phone) == ("public", "accept", PHONE)
        assert case.reporter_user_id is None
        case_id = case.id

    st = city_client.get(f"/api/v1/public/cases/{code.lower()}")  # codes are case-insensitive
    assert st.status_code == 200
    body = st.json()
    assert (body["stage"], body["stage_name"], body["can_rate"]) == ("accept", "待受理", False)
    assert [x["label"] for x in body["steps"]] == ["已上报"]
    assert body["result_photo_ids"] == []
    assert PHONE not in st.text and "1391" not in st.text
    # not closed yet: no rating
    early = city_client.post(f"/api/v1/public/cases/{code}/rating", json={"rating": "satisfied"})
    assert early.status_code == 409

    with city.session() as s:
        advance(s, store, case_id, "closed")
    st = city_client.get(f"/api/v1/public/cases/{code}").json()
    assert st["stage_name"] == "已结案" and st["can_rate"] is True
    labels = [x["label"] for x in st["steps"]]
    assert labels[:4] == ["已上报", "已受理", "已核实", "已立案"] and labels[-1] == "已结案"
    assert len(st["result_photo_ids"]) == 1
    pid = st["result_photo_ids"][0]
    img = city_client.get(f"/api/v1/public/cases/{code}/photos/{pid}")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    got = Image.open(io.BytesIO(img.content))
    assert len(got.getexif()) == 0  # the handler's photo had GPS and a camera make
    with city.session() as s:
        att = s.get(CaseAttachment, pid)
        assert att is not None and att.exif_lon is not None  # the original kept them
        before = s.scalars(
            select(CaseAttachment.id).where(
                CaseAttachment.case_id == case_id, CaseAttachment.purpose == "before"
            )
        ).one()
    # the citizen's own 'before' photo and unknown ids are not served
    assert city_client.get(f"/api/v1/public/cases/{code}/photos/{before}").status_code == 404

    ok = city_client.post(
        f"/api/v1/public/cases/{code}/rating", json={"rating": "fair", "comment": "处理及时"}
    )
    assert ok.status_code == 201 and ok.json()["label"] == "基本满意"
    again = city_client.post(f"/api/v1/public/cases/{code}/rating", json={"rating": "satisfied"})
    assert again.status_code == 409
    bad = city_client.post(f"/api/v1/public/cases/{code}/rating", json={"rating": "great"})
    assert bad.status_code == 422
    with city.session() as s:
        rows = s.scalars(select(CitizenRating).where(CitizenRating.case_id == case_id)).all()
        assert [(x.rating, x.comment) for x in rows] == [("fair", "处理及时")]
    st = city_client.get(f"/api/v1/public/cases/{code}").json()
    assert st["can_rate"] is False and st["rating"]["label"] == "基本满意"


def test_bad_reports_are_refused_and_change_nothing(
    city_client: Any, city: Any, store: LocalStorage
) -> None:
    with city.session() as s:
        n = s.query(Case).count()
    assert _report(city_client, city, category_code="nope").status_code == 422
    assert _report(city_client, city, description=" ").status_code == 422
    assert _report(city_client, city, phone="call me").status_code == 422
    outside = _report(city_client, city, lon="100.0", lat="20.0")
    assert outside.status_code == 422 and "服务范围" in outside.json()["message"]
    assert city_client.get("/api/v1/public/cases/NOSUCHCODE").status_code == 404
    with city.session() as s:
        assert s.query(Case).count() == n


def test_rate_limits_per_ip_and_per_phone_answer_429_with_retry_after(
    city_client: Any, city: Any, store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        public,
        "public_settings",
        lambda: public.PublicSettings(
            reports_per_ip_per_hour=3, reports_per_phone_per_day=2, reads_per_ip_per_minute=4
        ),
    )
    assert _report(city_client, city).status_code == 201
    assert _report(city_client, city).status_code == 201
    third = _report(city_client, city)  # same phone: 2 a day
    assert third.status_code == 429
    assert 86000 < int(third.headers["Retry-After"]) <= 86400
    other = _report(city_client, city, phone="13800000000")  # IP: 3 an hour (4th counted hit)
    assert other.status_code == 429
    assert 3500 < int(other.headers["Retry-After"]) <= 3600
    with city.session() as s:
        assert s.scalar(select(Case.id).where(Case.reporter_phone == "13800000000")) is None
    for _ in range(4):
        assert city_client.get("/api/v1/public/categories").status_code == 200
    limited = city_client.get("/api/v1/public/categories")
    assert limited.status_code == 429 and 0 < int(limited.headers["Retry-After"]) <= 60


def test_sliding_window_frees_a_slot_when_the_oldest_hit_leaves_the_window() -> None:
    now = [100.0]
    w = public.SlidingWindow(60.0, clock=lambda: now[0])
    assert w.hit("a", 2) is None
    now[0] = 130.0
    assert w.hit("a", 2) is None
    assert w.hit("a", 2) == 30  # the first hit leaves at 160
    assert w.hit("b", 2) is None  # keys are independent
    now[0] = 160.0
    assert w.hit("a", 2) is None


def test_nearest_pois_by_geodesic_distance(city_client: Any, city: Any, store: Any) -> None:
    with city.session() as s:
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        toilets = s.execute(select(Poi.name, Poi.lon, Poi.lat).where(Poi.kind == "toilet")).all()
    assert len(toilets) >= 3
    expected = sorted(toilets, key=lambda p: distance_m(lon, lat, p[1], p[2]))[:3]
    r = city_client.get(
        "/api/v1/public/pois", params={"kind": "toilet", "lon": lon, "lat": lat, "limit": 3}
    )
    assert r.status_code == 200
    got = r.json()
    assert [p["name"] for p in got] == [p[0] for p in expected]
    assert got[0]["distance_m"] == pytest.approx(
        distance_m(lon, lat, expected[0][1], expected[0][2]), abs=0.1
    )
    assert got[0]["distance_m"] <= got[1]["distance_m"] <= got[2]["distance_m"]
    bad = city_client.get("/api/v1/public/pois", params={"kind": "bank", "lon": lon, "lat": lat})
    assert bad.status_code == 422


def test_no_public_answer_holds_the_reporters_personal_data(
    city_client: Any, city: Any, store: LocalStorage
) -> None:
    r = _report(city_client, city)
    code = r.json()["tracking_code"]
    with city.session() as s:
        case = s.scalars(select(Case).where(Case.tracking_code == code)).one()
        case.reporter_name = "张三丰"
        s.commit()
    for url in (f"/api/v1/public/cases/{code}", "/api/v1/public/categories"):
        text = city_client.get(url).text
        assert PHONE not in text and "张三丰" not in text and "5678" not in text


async def test_citizen_pages_report_track_rate_and_find_a_toilet(
    city: Any, store: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nicegui.elements.upload_files import SmallFileUpload

    from cityops.public import ui as public_ui
    from tests.console_support import console_user

    monkeypatch.setattr(public_ui, "default_storage", lambda: store)
    with city.session() as s:
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        code = matter_category(s).code
    async with console_user(city) as user:
        await user.open("/public/report")
        up = user.find(marker="photo").elements.pop()
        await up.handle_uploads([SmallFileUpload("s.jpg", "image/jpeg", photo(lon, lat))])
        await user.should_see("已选择照片", retries=30)
        user.find(marker="use-exif").click()
        user.find(marker="category").elements.pop().value = code
        user.find(marker="description").type("路灯不亮")
        user.find(marker="phone").type(PHONE)
        user.find(marker="submit").click()
        await user.should_see(marker="tracking-code", retries=20)
        tracking = user.find(marker="tracking-code").elements.pop().text
    with city.session() as s:
        case = s.scalars(select(Case).where(Case.tracking_code == tracking)).one()
        assert (case.source, case.description, case.reporter_phone) == ("public", "路灯不亮", PHONE)
        assert distance_m(case.lon, case.lat, lon, lat) < 1.0  # the photo's position
        assert s.scalar(select(CaseAttachment.case_id).where(CaseAttachment.case_id == case.id))
        advance(s, store, case.id, "closed")
        s.commit()
    async with console_user(city) as user:
        await user.open(f"/public/track?code={tracking}")
        await user.should_see("已结案")
        await user.should_see(marker="result-photo")
        await user.should_not_see(PHONE)
        user.find(marker="comment").type("很快")
        user.find(marker="rate-satisfied").click()
        await user.should_see(marker="rated", retries=20)
        await user.should_not_see(marker="rate-satisfied")
        await user.open("/public/track?code=WRONGCODE1")
        await user.should_see(marker="track-error")
    with city.session() as s:
        r = s.scalars(select(CitizenRating).where(CitizenRating.case_id == case.id)).one()
        assert (r.rating, r.comment) == ("satisfied", "很快")
    async with console_user(city) as user:
        await user.open("/public/services")
        await user.should_see(marker="poi-1")
        user.find(marker="map").trigger("mapClick", {"latlng": {"lat": lat, "lng": lon}})
        with city.session() as s:
            pois = s.execute(select(Poi.name, Poi.lon, Poi.lat).where(Poi.kind == "toilet")).all()
        nearest = min(pois, key=lambda p: distance_m(lon, lat, p[1], p[2]))
        await user.should_see(f"1. {nearest[0]}")
        d = distance_m(lon, lat, nearest[1], nearest[2])
        await user.should_see(f"{d:.0f} 米")

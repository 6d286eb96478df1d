"""Third-party review (第三方考评): sampling, ratings, scores, reopening, reviewer isolation.

Six cases are closed on 2026-11-17 (local) through the real workflow: two in each of the
streets 341602001 and 341602002 (谯城区) and two in 341621001 (涡阳县). Every figure below is
worked out by hand from those six.
"""

from __future__ import annotations

import io
import threading
from datetime import date, datetime
from typing import Any

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from cityops.cases.models import Case, CaseAttachment, CaseEvent
from cityops.cases.storage import Storage, default_storage
from cityops.core.db import Database
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.core.security import lock_for_write
from cityops.evaluation import review
from cityops.evaluation.models import ReviewAssignment
from cityops.evaluation.review_api import router
from cityops.evaluation.rollup import TZ
from tests.evaluation_review_support import app_client, at, bearer, make_case
from tests.factories import photo, principal

NOV = (date(2026, 11, 1), date(2026, 12, 1))


@pytest.fixture
def store() -> Storage:
    """The app's storage (the API serves the case photos from it)."""
    return default_storage()


def six_cases(city: Database, store: Storage) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    with city.session() as s:
        for prefix in ("341602001", "341602002", "341621001"):
            out[prefix] = [make_case(s, store, prefix, m, reporter=(m == 0)).id for m in (0, 20)]
        # an open case (待结案) in 341602001: never drawn
        out["open"] = [make_case(s, store, "341602001", 40, close=False).id]
    return out


def reviewers(city: Database) -> dict[str, int]:
    """R1 district 341602 (reviewer1), R3 district 341621 (reviewer2), R2 street 341602001
    (reviewer3), R4 the whole city (a new user, registered last)."""
    with city.session() as s:
        admin = principal(s, "admin")
        ids = {
            "R1": review.register_reviewer(
                s, admin, {"user_id": _uid(s, "reviewer1"), "kind": "人大代表", "area": "341602"}
            ).id,
            "R3": review.register_reviewer(
                s, admin, {"user_id": _uid(s, "reviewer2"), "kind": "cppcc", "area": "341621"}
            ).id,
            "R2": review.register_reviewer(
                s,
                admin,
                {"user_id": _uid(s, "reviewer3"), "kind": "效能监督员", "area": "341602001"},
            ).id,
            "R4": review.register_reviewer(
                s,
                admin,
                {
                    "username": "citizen1",
                    "display_name": "市民甲",
                    "password": "citizen-pass-2026",
                    "kind": "市民",
                    "area": "341600",
                },
            ).id,
        }
    return ids


def _uid(s: Any, username: str) -> int:
    return principal(s, username).user_id


def _assigned(city: Database, round_id: int) -> dict[int, set[int]]:
    with city.session() as s:
        out: dict[int, set[int]] = {}
        for a in s.scalars(select(ReviewAssignment).where(ReviewAssignment.round_id == round_id)):
            out.setdefault(a.reviewer_id, set()).add(a.case_id)
        return out


def test_sample_respects_area_exclusivity_and_is_reproducible(
    city: Database, store: Storage
) -> None:
    cases = six_cases(city, store)
    ids = reviewers(city)
    with city.session() as s:
        rnd = review.create_round(
            s, None, name="2026-11", period_start=NOV[0], period_end=NOV[1], sample_size=2, seed=42
        )
        res = review.draw(s, rnd.id)
        rid = rnd.id
    got = _assigned(city, rid)
    # most specific area first: the street reviewer takes both cases of 341602001, the
    # district reviewer of 341602 the two left there (341602002), 341621's reviewer its two;
    # the city-wide reviewer (last of the 6-digit areas by id) finds nothing left.
    assert got == {
        ids["R2"]: set(cases["341602001"]),
        ids["R1"]: set(cases["341602002"]),
        ids["R3"]: set(cases["341621001"]),
    }
    assert res["total"] == 6
    assert res["short"] == [{"reviewer_id": ids["R4"], "wanted": 2, "drawn": 0}]
    # drawing the same round again adds nothing: every closed case is in the round already
    with city.session() as s:
        assert review.draw(s, rid)["total"] == 0
    assert _assigned(city, rid) == got

    # reproducible: the city reviewer alone, 3 of the 6 closed cases, same seed → same cases
    with city.session() as s:
        for key in ("R1", "R2", "R3"):
            review.update_reviewer(s, ids[key], {"active": False})
        r1 = review.create_round(
            s, None, name="a", period_start=NOV[0], period_end=NOV[1], sample_size=3, seed=7
        )
        r2 = review.create_round(
            s, None, name="b", period_start=NOV[0], period_end=NOV[1], sample_size=3, seed=7
        )
        d1, d2 = review.draw(s, r1.id), review.draw(s, r2.id)
        october = review.create_round(
            s,
            None,
            name="10月",
            period_start=date(2026, 10, 1),
            period_end=date(2026, 11, 1),
            sample_size=3,
        )
        d_oct = review.draw(s, october.id)
    closed = {c for k, v in cases.items() if k != "open" for c in v}
    assert d1["drawn"] == d2["drawn"]
    picked = set(d1["drawn"][str(ids["R4"])])
    assert len(picked) == 3 and picked <= closed
    assert d_oct["total"] == 0  # nothing closed in October


def test_validation_and_profile(city: Database) -> None:
    with city.session() as s:
        with pytest.raises(Invalid) as e:
            review.create_round(
                s, None, name="x", period_start=NOV[1], period_end=NOV[0], sample_size=2
            )
        assert e.value.details["field"] == "period_end"
        with pytest.raises(Invalid) as e:
            review.register_reviewer(s, None, {"user_id": 1, "kind": "记者", "area": "341602"})
        assert e.value.details == {"field": "kind", "value": "记者"}
        with pytest.raises(Invalid) as e:
            review.register_reviewer(s, None, {"user_id": 1, "kind": "市民", "area": "999999"})
        assert e.value.details["field"] == "area"
        # a user with the role but no reviewer profile has no worklist
        with pytest.raises(Forbidden):
            review.my_assignments(s, principal(s, "reviewer1"))
        with pytest.raises(NotFound):
            review.update_reviewer(s, 999, {"active": False})


def _rate_all(city: Database, rid: int, ratings: dict[int, tuple[str, datetime]]) -> None:
    with city.session() as s:
        for a in s.scalars(select(ReviewAssignment).where(ReviewAssignment.round_id == rid)):
            if a.case_id not in ratings:
                continue
            rating, when = ratings[a.case_id]
            who = s.scalars(
                select(review.User).join(review.Reviewer).where(review.Reviewer.id == a.reviewer_id)
            ).one()
            review.rate(s, principal(s, who.username), a.id, rating, "意见", None, False, now=when)


def test_ratings_give_exact_unit_and_region_scores(city: Database, store: Storage) -> None:
    cases = six_cases(city, store)
    reviewers(city)
    with city.session() as s:
        rnd = review.create_round(
            s, None, name="11月", period_start=NOV[0], period_end=NOV[1], sample_size=2, seed=1
        )
        review.draw(s, rnd.id)
        rid = rnd.id
        units = {cid: s.get(Case, cid).lead_unit_id for v in cases.values() for cid in v}  # type: ignore[union-attr]
    s1, s2 = cases["341602001"]
    s3, s4 = cases["341602002"]
    d1, d2 = cases["341621001"]
    u_a, u_b = units[s1], units[d1]
    assert u_a == units[s2] == units[s3] == units[s4] and u_b == units[d2] and u_a != u_b
    nov20 = at(60 * 24 * 3)  # 2026-11-20 09:00 local
    dec1_0010 = datetime(2026, 12, 1, 0, 10, tzinfo=TZ)  # just outside November
    nov30_2350 = datetime(2026, 11, 30, 23, 50, tzinfo=TZ)  # last minutes of November
    _rate_all(
        city,
        rid,
        {
            s1: ("满意", nov20),
            s2: ("基本满意", nov20),
            s3: ("不满意", nov30_2350),
            s4: ("满意", dec1_0010),
            d1: ("不满意", nov20),
            d2: ("满意", nov20),
        },
    )
    with city.session() as s:
        got = review.unit_review_scores(s, *NOV)
        # unit A: 100 + 60 + 0 (s4 rated in December) → 160 / 3 = 53.33; unit B: 0 + 100 → 50
        assert got == {
            u_a: review.ReviewScore(53.33, 3),
            u_b: review.ReviewScore(50.0, 2),
        }
        assert review.unit_review_scores(s, date(2026, 12, 1), date(2026, 12, 2)) == {
            u_a: review.ReviewScore(100.0, 1)
        }
        rep = review.report(s, *NOV)
        regions = {r["code"]: (r["score"], r["count"]) for r in rep["regions"]}
        assert regions == {
            "341602": (53.33, 3),
            "341602001": (80.0, 2),
            "341602002": (0.0, 1),
            "341621": (50.0, 2),
            "341621001": (50.0, 2),
        }
        assert rep["overall"] == {"count": 5, "score": 52.0, "满意": 2, "基本满意": 1, "不满意": 2}
        assert [u["unit_id"] for u in rep["units"]] == [u_a, u_b]
        # a city changes the score of 基本满意 to 70: unit A → 170 / 3 = 56.67
        review.set_settings(s, {"scores": {"基本满意": 70}})
        assert review.unit_review_scores(s, *NOV)[u_a] == review.ReviewScore(56.67, 3)
        with pytest.raises(Invalid):
            review.set_settings(s, {"scores": {"很好": 100}})
        # a scope keeps the ratings of cases in that region only
        assert review.report(s, *NOV, scope="341621")["overall"]["count"] == 2


def test_unsatisfied_reopens_the_case_for_check(city: Database, store: Storage) -> None:
    with city.session() as s:
        cases = {"341621001": [make_case(s, store, "341621001", m).id for m in (0, 20)]}
        review.register_reviewer(
            s, None, {"user_id": _uid(s, "reviewer2"), "kind": "cppcc", "area": "341621"}
        )
    with city.session() as s:
        rnd = review.create_round(
            s, None, name="11月", period_start=NOV[0], period_end=NOV[1], sample_size=2, seed=3
        )
        review.draw(s, rnd.id)
        a1, a2 = s.scalars(
            select(ReviewAssignment)
            .where(ReviewAssignment.case_id.in_(cases["341621001"]))
            .order_by(ReviewAssignment.case_id)
        ).all()
        ids = (a1.id, a2.id, a1.case_id, a2.case_id)
    with city.session() as s:
        r2 = principal(s, "reviewer2")
        with pytest.raises(Invalid) as e:
            review.rate(s, r2, ids[0], "不满意", "", reopen=True)
        assert e.value.details["field"] == "comment"
        out = review.rate(s, r2, ids[0], "不满意", "垃圾仍在", reopen=True, now=at(600))
        assert out["reopened"] is True
        case = s.get(Case, ids[2])
        assert case is not None and case.stage == "check" and case.closed_at is None
        ev = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id.desc())
        ).first()
        assert ev is not None
        assert (ev.action, ev.from_stage, ev.to_stage) == ("reopen", "closed", "check")
        assert ev.actor_name == "第三方考评" and ev.actor_id is None
        assert "垃圾仍在" in (ev.note or "") and "政协委员" in (ev.note or "")
        assert ev.data == {
            "origin": "third_party_review",
            "round_id": out["round_id"],
            "assignment_id": ids[0],
            "reviewer_user_id": r2.user_id,
            "rating": "不满意",
        }
        assert case.assignee_user_id is not None  # the grid's inspector got the 核查 task
        with pytest.raises(Conflict):  # rated once only
            review.rate(s, r2, ids[0], "满意")
        # 不满意 without asking for it leaves the case closed…
        review.set_settings(s, {"auto_reopen": False})
    with city.session() as s:
        r2 = principal(s, "reviewer2")
        review.rate(s, r2, ids[1], "不满意", "台账不清", now=at(610))
        c2 = s.get(Case, ids[3])
        assert c2 is not None and c2.stage == "closed"


def test_auto_reopen_and_concurrent_ratings(city: Database, store: Storage) -> None:
    """auto_reopen: 不满意 reopens without being asked. Two ratings of one assignment sent at
    the same moment: one wins, the other gets 409, and the case is reopened once."""
    with city.session() as s:
        cid = make_case(s, store, "341621001", 0).id
        admin = principal(s, "admin")
        review.register_reviewer(
            s, admin, {"user_id": _uid(s, "reviewer1"), "kind": "市民", "area": "341621"}
        )
        review.set_settings(s, {"auto_reopen": True})
        rnd = review.create_round(
            s, None, name="x", period_start=NOV[0], period_end=NOV[1], sample_size=1, seed=1
        )
        review.draw(s, rnd.id)
        aid = s.scalars(select(ReviewAssignment.id)).one()
    barrier = threading.Barrier(2)
    results: list[str] = []

    def rate_once(comment: str) -> None:
        try:
            with city.session() as s:
                barrier.wait(timeout=10)
                lock_for_write(s)
                review.rate(s, principal(s, "reviewer1"), aid, "不满意", comment, now=at(100))
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=rate_once, args=(c,)) for c in ("甲", "乙")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == ["conflict", "ok"]
    with city.session() as s:
        assert s.get(Case, cid).stage == "check"  # type: ignore[union-attr]
        reopens = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == cid, CaseEvent.action == "reopen")
        ).all()
        assert len(reopens) == 1


def test_monthly_job_makes_one_round(city: Database, store: Storage) -> None:
    from cityops.core import jobs

    assert "evaluation.review_monthly_round" in {j.name for j in jobs.registered()}
    with city.session() as s:
        case = make_case(s, store, "341621001", 0)
        # the inspector who reported the case is also a reviewer (first by id): never given
        # their own case, so it goes to reviewer1
        assert case.reporter_user_id is not None
        own = review.register_reviewer(
            s, None, {"user_id": case.reporter_user_id, "kind": "市民", "area": "341621"}
        )
        rv1 = review.register_reviewer(
            s, None, {"user_id": _uid(s, "reviewer1"), "kind": "市民", "area": "341621"}
        )
        dec3 = datetime(2026, 12, 3, 8, 0, tzinfo=TZ)
        assert review.monthly_round(s, dec3) is None  # disabled by default
        review.set_settings(s, {"auto_round": {"enabled": True, "sample_size": 4}})
        res = review.monthly_round(s, dec3)
        assert res is not None and res["total"] == 1
        assert res["drawn"] == {str(own.id): [], str(rv1.id): [case.id]}
        assert review.monthly_round(s, dec3) is None  # once per month
        rounds = s.scalars(select(review.ReviewRound)).all()
        assert [(r.period_start, r.period_end, r.sample_size) for r in rounds] == [
            (date(2026, 11, 1), date(2026, 12, 1), 4)
        ]


def test_api_reviewer_sees_only_own_cases_without_personal_data(
    city: Database, store: Storage
) -> None:
    with city.session() as s:
        cases = {
            p: [make_case(s, store, p, 0, reporter=(p == "341602001")).id]
            for p in ("341602001", "341602002", "341621001")
        }
    with app_client(city, router) as client:
        admin = bearer(city, "admin")
        for user, area in (("reviewer1", "341602"), ("reviewer2", "341621")):
            with city.session() as s:
                uid = _uid(s, user)
            r = client.post(
                "/api/v1/evaluation/review/reviewers",
                json={"user_id": uid, "kind": "npc", "area": area},
                headers=admin,
            )
            assert r.status_code == 201, r.text
            assert r.json()["kind_label"] == "人大代表"
        r = client.post(
            "/api/v1/evaluation/review/rounds",
            json={
                "name": "2026年11月",
                "period_start": "2026-11-01",
                "period_end": "2026-12-01",
                "sample_size": 5,
                "seed": 11,
            },
            headers=admin,
        )
        assert r.status_code == 201, r.text
        assert r.json()["assigned"] == 3
        rid = r.json()["id"]
        rounds = client.get("/api/v1/evaluation/review/rounds", headers=admin).json()
        assert [(x["id"], x["assigned"], x["rated"], x["seed"]) for x in rounds] == [
            (rid, 3, 0, 11)
        ]
        listed = client.get(f"/api/v1/evaluation/review/rounds/{rid}/assignments", headers=admin)
        assert sorted(a["case_id"] for a in listed.json()) == sorted(
            c for v in cases.values() for c in v
        )

        rv1, rv2 = bearer(city, "reviewer1"), bearer(city, "reviewer2")
        mine = client.get("/api/v1/evaluation/review/assignments", headers=rv1).json()
        theirs = client.get("/api/v1/evaluation/review/assignments", headers=rv2).json()
        assert len(mine) == 2 and len(theirs) == 1
        assert {a["case"]["grid_code"][:6] for a in mine} == {"341602"}
        # the case with a reporter: name and phone masked, no tracking code anywhere
        first = next(a for a in mine if a["case"]["number"] and "张" in str(a["case"]["reporter"]))
        assert first["case"]["reporter"] == {"name": "张**", "phone": "138****5678"}
        detail = client.get(
            f"/api/v1/evaluation/review/assignments/{first['id']}", headers=rv1
        ).json()
        assert "tracking_code" not in str(detail) and "13812345678" not in str(detail)
        assert detail["photos"] and {p["purpose"] for p in detail["photos"]} == {"after", "check"}
        pr = client.get(
            f"/api/v1/evaluation/review/assignments/{first['id']}/photos/{detail['photos'][0]['id']}",
            headers=rv1,
        )
        assert pr.status_code == 200 and pr.headers["content-type"] == "image/jpeg"

        # another reviewer's case: 404 to see, to rate, and for its photos
        other = theirs[0]["id"]
        photo_id = client.get(f"/api/v1/evaluation/review/assignments/{other}", headers=rv2).json()[
            "photos"
        ][0]["id"]
        r = client.get(
            f"/api/v1/evaluation/review/assignments/{other}/photos/{photo_id}", headers=rv1
        )
        assert r.status_code == 404
        assert (
            client.get(f"/api/v1/evaluation/review/assignments/{other}", headers=rv1).status_code
            == 404
        )
        r = client.post(
            f"/api/v1/evaluation/review/assignments/{other}/rating",
            json={"rating": "满意"},
            headers=rv1,
        )
        assert r.status_code == 404
        assert client.get("/api/v1/evaluation/review/assignments", headers=admin).status_code == 403
        assert client.get("/api/v1/evaluation/review/reviewers", headers=rv1).status_code == 403

        # rating with a photo: the upload is bound to the case as a review photo
        up = client.post(
            "/api/v1/attachments",
            files={"file": ("r.jpg", photo(), "image/jpeg")},
            headers=rv2,
        )
        assert up.status_code == 201, up.text
        r = client.post(
            f"/api/v1/evaluation/review/assignments/{other}/rating",
            json={
                "rating": "不满意",
                "comment": "仍有垃圾",
                "attachment_id": up.json()["id"],
                "reopen": True,
            },
            headers=rv2,
        )
        assert r.status_code == 200, r.text
        assert r.json()["reopened"] is True and r.json()["case"]["stage"] == "check"
        with city.session() as s:
            att = s.get(CaseAttachment, up.json()["id"])
            assert att is not None and att.purpose == "review"
            assert att.case_id in cases["341621001"]

        # report: a district leader sees only their district
        leader = bearer(city, "leader1")
        d1 = bearer(city, "district1")
        full = client.get("/api/v1/evaluation/review/report?period=2026", headers=leader).json()
        assert full["overall"]["count"] == 1
        mine_d = client.get("/api/v1/evaluation/review/report?period=2026", headers=d1).json()
        assert mine_d["overall"]["count"] == 0 and mine_d["scope"] == "341602"
        r = client.get("/api/v1/evaluation/review/report?period=2026&region=341621", headers=d1)
        assert r.status_code == 404
        x = client.get("/api/v1/evaluation/review/report.xlsx?period=2026", headers=leader)
        assert x.status_code == 200
        wb = load_workbook(io.BytesIO(x.content))
        assert wb.sheetnames == ["汇总", "单位", "区域", "不满意案卷"]
        assert wb["不满意案卷"].cell(2, 4).value == "仍有垃圾"
        assert (
            client.get("/api/v1/evaluation/review/report?period=2026", headers=rv1).status_code
            == 403
        )

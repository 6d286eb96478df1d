"""Position indicators (岗位考核): 监督员 漏报, 受理员, 值班长, 派遣员 — counters, rates,
composites, rankings, drill-down and their configuration (GUIDE §6).

The crafted day of :mod:`tests.test_evaluation` (cases A–H) plus three cases of our own:

* I: an inspector's report, 受理 at +71, 立案 40 min later (late: 立案 limit 30 min), then
  作废 from 待派遣 (a wrong 立案);
* J: an inspector's report, 受理 +81, 立案 +82 without auto-dispatch, 派遣 by dispatcher1 45
  min later (late: 派遣 limit 30 min), 回退 approved (a wrong dispatch), 改派 on time;
* K: a 公众举报 受理'd 8.5 hours after it came in (late: 受理 limit 0.5 working day) — its
  核实 task went out late.

Every figure below was counted by hand (see the comments).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from cityops.access.models import User
from cityops.cases import service
from cityops.core.errors import Invalid
from cityops.evaluation import rollup
from cityops.evaluation import service as ev
from cityops.geo.models import grid_inspectors
from tests.factories import (
    grid_of_inspector,
    handler_of,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)
from tests.test_evaluation import DAY, act, at, crafted_day, store  # noqa: F401  (fixture)

NOV = ev.parse_period("2026-11")


def crafted_positions(s: Any, store: Any) -> dict[str, Any]:  # noqa: F811
    x = crafted_day(s, store)
    insp = principal(s, "inspector1")
    op, shift, disp = principal(s, "operator1"), principal(s, "shift1"), principal(s, "dispatcher1")
    lon, lat = point_in(grid_of_inspector(s, "inspector1"))
    cat = matter_category(s)

    def report(m: float, who: Any = insp, **kw: Any) -> Any:
        data = report_data(cat, lon, lat, description=f"case {m}", **kw)
        return service.create_case(s, who, data, at(m)).case

    i = report(70)
    act(s, op, i, "accept", at(71))
    act(s, shift, i, "file", at(111), auto_dispatch=False)  # 40 min after 受理: late
    act(s, shift, i, "void", at(112), reason="立案错误")  # from 待派遣: 作废数 of shift1
    j = report(80)
    act(s, op, j, "accept", at(81))
    act(s, shift, j, "file", at(82), auto_dispatch=False)
    act(s, disp, j, "dispatch", at(127), unit_id=x["u"])  # 45 min after 立案: late
    act(s, handler_of(s, x["u"]), j, "request_return", at(128), reason="非本单位")
    act(s, shift, j, "decide_return", at(129), approve=True)  # a wrong dispatch: 派遣返工
    act(s, disp, j, "dispatch", at(135), unit_id=x["v"])  # 6 min after the 回退: on time
    # 10:30 report; the 受理 limit (0.5 working day = 240 working min) ends at 16:30; 受理 19:00
    k = report(90, who=op, source="public")
    act(s, op, k, "accept", at(600), inspector_id=insp.user_id)
    s.flush()
    x["cases"].update(i=i.id, j=j.id, k=k.id)
    x.update(op=op.user_id, shift=shift.user_id, disp=disp.user_id)
    return x


def _other_inspectors(s: Any, grid: str, me: int) -> list[int]:
    from cityops.geo.models import Grid

    gid = s.scalars(select(Grid.id).where(Grid.code == grid)).one()
    return [
        u
        for u in s.scalars(
            select(grid_inspectors.c.user_id).where(grid_inspectors.c.grid_id == gid)
        )
        if u != me
    ]


def test_positions_every_indicator_by_hand(city: Any, store: Any) -> None:  # noqa: F811
    with city.session() as s:
        x = crafted_positions(s, store)
        ids = x["cases"]

        o = ev.indicators(s, "operator", str(x["op"]), DAY)
        assert o["counts"] == {
            "受理数": 10,  # A B C D E G H I J K
            "核实派发数": 2,  # G K (public reports: the 受理 sends the 核实 task)
            "核实按时派发数": 1,  # G (K's 受理 came after 16:30)
            "核查派发数": 5,  # 处置反馈 of A, B (twice: 返工), C, D
            "核查按时派发数": 5,  # the grid has an inspector for each
        }
        assert o["rates"] == {"受理数分值": 0.0, "核实按时派发率": 50.0, "核查按时派发率": 100.0}
        # 0 × 0.25 + 50 × 0.40 + 100 × 0.35 = 55
        assert o["composite"] == 55.0 and o["grade"] == "D"

        sl = ev.indicators(s, "shift_leader", str(x["shift"]), DAY)
        assert sl["counts"] == {
            "立案数": 8,  # A B C D E G I J (F was 自行处置, H voided before 立案)
            "按时立案数": 7,  # all but I
            "作废数": 1,  # I
            "结案数": 4,  # A B C D
            "按时结案数": 4,  # each within 1 working hour of its 核查
        }
        assert sl["rates"] == {"按时立案率": 87.5, "准确立案率": 87.5, "按时结案率": 100.0}
        # 87.5 × 0.25 + 87.5 × 0.40 + 100 × 0.35 = 21.875 + 35 + 35 = 91.875
        assert sl["composite"] == 91.88 and sl["grade"] == "A"

        d = ev.indicators(s, "dispatcher", str(x["disp"]), DAY)
        assert d["counts"] == {
            "派遣数": 3,  # D (改派 after its 回退), J, J again
            "应派遣数": 3,
            "按时派遣数": 2,  # D, J's second
            "派遣返工数": 1,  # J's first dispatch came back (A–H were auto-dispatched)
        }
        assert d["rates"] == {"派遣数分值": 0.0, "按时派遣率": 66.67, "准确派遣率": 66.67}
        # 0 × 0.2 + 66.667 × 0.4 + 66.667 × 0.4 = 53.33
        assert d["composite"] == 53.33 and d["grade"] == "D"

        i = ev.indicators(s, "inspector", str(x["insp"]), DAY)
        assert i["counts"] == {
            "上报数": 9,  # A B C D E F H I J
            "有效上报数": 8,  # all but H
            "应核实数": 1,
            "按时核实数": 1,
            "应核查数": 5,
            "按时核查数": 4,
            "自行处置数": 1,
            "网格立案数": 9,  # A B C D E F G I J
            "漏报数": 1,  # G (reported by the public)
        }
        assert i["rates"] == {
            "有效上报率": 88.89,
            "漏报率": 11.11,
            "按时核实率": 100.0,
            "按时核查率": 80.0,
        }
        # 88.889 × 0.4 + (100 − 11.111) × 0.2 + 100 × 0.2 + 80 × 0.2 = 89.33
        assert i["composite"] == 89.33 and i["grade"] == "B"
        # every other inspector of the grid missed all nine
        for other in _other_inspectors(s, x["grid"], x["insp"]):
            oi = ev.indicators(s, "inspector", str(other), DAY)["counts"]
            assert (oi["网格立案数"], oi["漏报数"]) == (9, 9)

        # drill-down: every position figure to its cases
        def dd(entity: str, key: int, fig: str) -> dict[int, int]:
            out = ev.drilldown(s, entity, str(key), fig, DAY)
            return {c["id"]: c["count"] for c in out["cases"]}

        assert dd("operator", x["op"], "核实派发数") == {ids["g"]: 1, ids["k"]: 1}
        assert dd("operator", x["op"], "核实按时派发数") == {ids["g"]: 1}
        assert dd("operator", x["op"], "核查派发数") == {
            ids["a"]: 1,
            ids["b"]: 2,
            ids["c"]: 1,
            ids["d"]: 1,
        }
        assert dd("shift_leader", x["shift"], "作废数") == {ids["i"]: 1}
        assert dd("shift_leader", x["shift"], "按时立案数") == {ids[c]: 1 for c in "abcdegj"}
        assert dd("dispatcher", x["disp"], "派遣数") == {ids["d"]: 1, ids["j"]: 2}
        assert dd("dispatcher", x["disp"], "派遣返工数") == {ids["j"]: 1}
        assert dd("inspector", x["insp"], "漏报数") == {ids["g"]: 1}
        assert dd("inspector", x["insp"], "网格立案数") == {ids[c]: 1 for c in "abcdefgij"}
        for entity, key in (
            ("operator", x["op"]),
            ("shift_leader", x["shift"]),
            ("dispatcher", x["disp"]),
            ("inspector", x["insp"]),
        ):
            counts = ev.indicators(s, entity, str(key), DAY)["counts"]
            for fig in ev.FIGURES[entity]:
                assert ev.drilldown(s, entity, str(key), fig, DAY)["total"] == counts[fig], fig

        # the month (monthly rollup level) says the same as the day (daily level)
        for entity, key in (("operator", x["op"]), ("dispatcher", x["disp"])):
            assert (
                ev.indicators(s, entity, str(key), NOV)["counts"]
                == ev.indicators(s, entity, str(key), DAY)["counts"]
            )

        # the incremental counters equal a rebuild from history, on both levels
        before, before_m = ev.all_counts(s), rollup_monthly(s)
        rollup.rebuild(s)
        assert ev.all_counts(s) == before and rollup_monthly(s) == before_m
        rollup.rebuild(s, since=date(2026, 11, 17))
        assert ev.all_counts(s) == before and rollup_monthly(s) == before_m


def rollup_monthly(s: Any) -> dict[tuple[Any, ...], int]:
    from cityops.evaluation.schedule_models import EvalMonthlyCount

    return {
        (r.month, r.metric, r.unit_id, r.grid_code, r.user_id): r.count
        for r in s.scalars(select(EvalMonthlyCount))
        if r.count
    }


def test_position_rankings_and_configuration(city: Any, store: Any) -> None:  # noqa: F811
    with city.session() as s:
        x = crafted_positions(s, store)
        rk = ev.ranking(s, "operator", NOV, top=1)
        operators = {u.id for u in s.scalars(select(User)) if "operator" in u.roles and u.active}
        assert {r["id"] for r in rk["rows"]} == operators
        mine = next(r for r in rk["rows"] if r["id"] == x["op"])
        assert mine["composite"] == 55.0 and mine["rank"] == 1 and mine["username"] == "operator1"
        assert mine["counts"]["受理数"] == 10
        assert rk["red"][0]["id"] == x["op"]
        sl = ev.ranking(s, "shift_leader", NOV)
        assert next(r for r in sl["rows"] if r["id"] == x["shift"])["composite"] == 91.88
        dp = ev.ranking(s, "dispatcher", NOV)
        assert next(r for r in dp["rows"] if r["id"] == x["disp"])["composite"] == 53.33
        ins = ev.ranking(s, "inspector", NOV)
        assert next(r for r in ins["rows"] if r["id"] == x["insp"])["composite"] == 89.33

        # buckets, weights and grade bands are configuration
        ev.set_weights(s, {"accept_buckets": [[10, 100], [5, 50], [0, 0]]})
        o = ev.indicators(s, "operator", str(x["op"]), DAY)
        # 100 × 0.25 + 50 × 0.40 + 100 × 0.35 = 80
        assert o["rates"]["受理数分值"] == 100.0 and o["composite"] == 80.0 and o["grade"] == "B"
        ev.set_weights(
            s,
            {
                "accept_buckets": [[10, 100], [5, 50], [0, 0]],
                "dispatch_buckets": [[3, 90], [0, 0]],
                "dispatcher": {
                    "dispatch_count": 50,
                    "on_time_dispatch": 50,
                    "accurate_dispatch": 0,
                },
                "grades": [[80, "优"], [50, "良"], [0, "差"]],
            },
        )
        d = ev.indicators(s, "dispatcher", str(x["disp"]), DAY)
        # 90 × 0.5 + 66.667 × 0.5 = 78.33 → 良
        assert d["rates"]["派遣数分值"] == 90.0 and d["composite"] == 78.33 and d["grade"] == "良"
        assert ev.indicators(s, "operator", str(x["op"]), DAY)["grade"] == "优"
        for bad in (
            {"accept_buckets": [[10, 100], [20, 50], [0, 0]]},  # minimums not descending
            {"accept_buckets": [[10, 100], [5, 50]]},  # no band down to 0
            {"dispatch_buckets": [[3, 120], [0, 0]]},  # score over 100
            {"grades": [[90, "A"], [0, ""]]},
            {"operator": {"accept_count": 0, "verify_sent": 0, "check_sent": 0}},
            {"shift_leader": {"nonsense": 1}},
            {"filed_buckets": [[0, 100], [None, 0], [3, 10]]},
        ):
            with pytest.raises(Invalid):
                ev.set_weights(s, bad)
        # unchanged after the refused updates
        assert ev.get_weights(s)["dispatch_buckets"] == [[3, 90], [0, 0]]


def test_position_api(city: Any, store: Any) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from cityops.app import create_app

    with city.session() as s:
        x = crafted_positions(s, store)
    with TestClient(create_app(city)) as client:

        def login(u: str) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/login", json={"username": u, "password": "demo-pass-2026"}
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        lead, adm = login("leader1"), login("admin")
        q = {"entity": "shift_leader", "id_or_code": str(x["shift"]), "period": "2026-11-17"}
        r = client.get("/api/v1/evaluation/indicators", params=q, headers=lead)
        assert r.status_code == 200, r.text
        assert r.json()["composite"] == 91.88
        r = client.get(
            "/api/v1/evaluation/drilldown", params={**q, "metric": "作废数"}, headers=lead
        )
        assert r.json()["case_ids"] == [x["cases"]["i"]]
        r = client.get(
            "/api/v1/evaluation/rankings",
            params={"entity": "dispatcher", "period": "2026-11"},
            headers=lead,
        )
        assert r.status_code == 200 and r.json()["red"][0]["id"] == x["disp"]
        bad = {"accept_buckets": [[10, 100], [20, 50], [0, 0]]}
        r = client.put("/api/v1/evaluation/config", json=bad, headers=adm)
        assert r.status_code == 422 and "accept_buckets" in r.text
        good = {"shift_leader": {"on_time_file": 100, "accurate_file": 0, "on_time_close": 0}}
        assert client.put("/api/v1/evaluation/config", json=good, headers=lead).status_code == 403
        r = client.put("/api/v1/evaluation/config", json=good, headers=adm)
        assert r.status_code == 200, r.text
        assert r.json()["defaults"]["accept_buckets"][0] == [2001, 100]
        r = client.get("/api/v1/evaluation/indicators", params=q, headers=lead)
        assert r.json()["composite"] == 87.5


def test_reopen_takes_back_the_closing_counters(city: Any, store: Any) -> None:  # noqa: F811
    from cityops.cases import queries

    with city.session() as s:
        x = crafted_day(s, store)
        ids, unit = x["cases"], str(x["u"])
        shift, insp = principal(s, "shift1"), principal(s, "inspector1")
        a = s.get(service.Case, ids["a"])
        act(s, shift, a, "reopen", at(600), note="第三方考评不满意")
        s.flush()
        u = ev.indicators(s, "unit", unit, DAY)["counts"]
        # A is no longer handled nor closed: 处置数 3 → 2, 按期处置 2 → 1, 结案 3 → 2, 按期 2 → 1
        assert (u["处置数"], u["按期处置数"], u["结案数"], u["按期结案数"]) == (2, 1, 2, 1)
        r = ev.indicators(s, "region", x["grid"], DAY)["counts"]
        assert (r["结案数"], r["按期结案数"]) == (4, 3)
        assert ev.drilldown(s, "unit", unit, "结案数", DAY)["case_ids"] == [ids["b"], ids["c"]]
        # checked and closed again (on the same day): counted once more
        photo_id = int(queries.upload(s, insp, store, "p.jpg", "image/jpeg", photo())["id"])
        act(s, insp, a, "check", at(610), passed=True, attachment_ids=[photo_id])
        act(s, shift, a, "close", at(615))
        s.flush()
        u = ev.indicators(s, "unit", unit, DAY)["counts"]
        assert (u["处置数"], u["按期处置数"], u["结案数"], u["按期结案数"]) == (3, 2, 3, 2)
        assert ev.indicators(s, "shift_leader", str(shift.user_id), DAY)["counts"]["结案数"] == 5
        before, before_m = ev.all_counts(s), rollup_monthly(s)
        rollup.rebuild(s)
        assert ev.all_counts(s) == before and rollup_monthly(s) == before_m


def test_unit_composite_blends_the_third_party_review(city: Any, store: Any) -> None:  # noqa: F811
    """Weight ``unit.review`` (default 0: the GUIDE formula) blends in the review score of
    :func:`cityops.evaluation.review.unit_review_scores`."""
    from cityops.evaluation import review
    from cityops.evaluation.models import ReviewAssignment, Reviewer

    with city.session() as s:
        x = crafted_day(s, store)
        ids = x["cases"]
        if s.scalars(select(Reviewer.id)).first() is None:
            review.register_reviewer(
                s,
                None,
                {
                    "user_id": principal(s, "reviewer1").user_id,
                    "kind": "citizen",
                    "area": x["grid"][:6],
                },
            )
        rnd = review.create_round(
            s,
            None,
            name="11-17",
            period_start=date(2026, 11, 17),
            period_end=date(2026, 11, 18),
            sample_size=50,
            seed=1,
        )
        review.draw(s, rnd.id)
        drawn = {
            a.case_id: a
            for a in s.scalars(select(ReviewAssignment).where(ReviewAssignment.round_id == rnd.id))
        }
        # the closed cases of the day: A B C (unit U), D (unit V), F (自行处置)
        assert {ids[c] for c in "abcd"} <= set(drawn)
        ratings = {"a": "满意", "b": "基本满意", "c": "不满意", "d": "满意"}  # U: (100+60+0)/3
        for c, rating in ratings.items():
            a = drawn[ids[c]]
            who_id = s.get(Reviewer, a.reviewer_id).user_id
            who = principal(s, s.get(User, who_id).username)
            review.rate(
                s, who, a.id, rating, comment="不干净" if rating == "不满意" else None, now=at(700)
            )
        scores = review.unit_review_scores(s, DAY.start, DAY.end)
        assert scores[x["u"]].score == 53.33 and scores[x["u"]].count == 3
        # default weight 0: the GUIDE formula, unchanged
        u = ev.indicators(s, "unit", str(x["u"]), DAY)
        assert u["composite"] == 49.17 and "第三方考评" not in u["rates"]
        ev.set_weights(s, {"unit": {"review": 50}})
        u = ev.indicators(s, "unit", str(x["u"]), DAY)
        # (49.1667 × 1 + 53.33 × 0.5) / 1.5 = 75.8317 / 1.5 = 50.55
        assert u["rates"]["第三方考评"] == 53.33 and u["composite"] == 50.55
        v = ev.indicators(s, "unit", str(x["v"]), DAY)
        assert v["composite"] == 100.0  # D rated 满意: 100 blended with 100
        rk = ev.ranking(s, "unit", NOV)
        assert {r["id"]: r["composite"] for r in rk["rows"] if r["composite"] is not None} == {
            x["v"]: 100.0,
            x["u"]: 50.55,
        }
        # a unit without any review keeps the other terms only (renormalised), one rated 0
        # has the term: 0 × 0.6 + 0 × 0.3 + 100 × 0.1 = 10; (10 + 0 × 0.5) / 1.5 = 6.67
        w = ev.get_weights(s)
        assert ev.unit_figures({"u_dispatched": 1}, w, None)["composite"] == 10.0
        assert ev.unit_figures({"u_dispatched": 1}, w, 0.0)["composite"] == 6.67


def test_migration_0010_fills_the_case_actors_from_history(city: Any, store: Any) -> None:  # noqa: F811
    """Cases from before migration 0010 get who did their current 受理/立案/派遣 and when they
    last entered 待派遣 from their history — what the workflow itself keeps on new cases
    (checked on J: 派遣 by dispatcher1, 回退 approved, 改派; and I: 作废 after 立案)."""
    from alembic import command

    from cityops.cases.models import Case
    from cityops.cases.simulate import simulate_cases
    from cityops.core.migrate import alembic_config, upgrade

    cols = ("accepted_by_id", "filed_by_id", "dispatched_by_id", "dispatch_stage_at")
    # plus a bulk-simulated month: 自动立案/派遣 by the system, 回退s, 改派s, 作废s (the
    # simulator writes the columns itself: the migration must agree with it too)
    simulate_cases(
        city, days=3, per_day=80, seed=5, start=date(2026, 10, 12), mode="bulk", progress=None
    )
    with city.session() as s:
        x = crafted_positions(s, store)
        s.commit()
        kept = {c.id: tuple(getattr(c, k) for k in cols) for c in s.scalars(select(Case))}
    j = kept[x["cases"]["j"]]
    assert j == (x["op"], x["shift"], x["disp"], at(129))  # the 回退 re-opened 待派遣
    assert kept[x["cases"]["i"]][:3] == (x["op"], x["shift"], None)
    assert sum(1 for v in kept.values() if v[1] is None and v[3] is not None) > 5  # auto 立案
    assert sum(1 for v in kept.values() if v[2] is not None) > 10  # 派遣 by a dispatcher
    cfg = alembic_config(city.engine.url.render_as_string(hide_password=False))
    with city.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    upgrade(city.engine)
    with city.session() as s:
        again = {c.id: tuple(getattr(c, k) for k in cols) for c in s.scalars(select(Case))}
    assert again == kept

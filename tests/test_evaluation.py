"""Evaluation (以评促管): rollups kept on every transition, indicators, rankings, drill-down.

The crafted day below is driven through the real workflow; every figure was computed by hand
(see the comments) from the definitions in :mod:`cityops.evaluation.rollup`.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cityops.access.models import User
from cityops.cases import queries, service
from cityops.cases.models import Case, CaseEvent
from cityops.cases.storage import LocalStorage
from cityops.core.errors import DomainError
from cityops.evaluation import rollup
from cityops.evaluation import service as ev
from cityops.evaluation.models import EvalDailyCount
from cityops.evaluation.schedule_models import EvalMonthlyCount
from cityops.geo.models import Unit, grid_inspectors
from tests.factories import (
    grid_of_inspector,
    handler_of,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)

# Tuesday 2026-11-17 09:00 Asia/Shanghai; the whole crafted day stays on that local date.
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)
DAY = ev.Period(date(2026, 11, 17), date(2026, 11, 18))


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path) -> LocalStorage:  # type: ignore[no-untyped-def]
    return LocalStorage(tmp_path / "att")


def pic(s, who, store) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo())["id"])]


def act(s, who, case: Case, action: str, t: datetime, **payload: Any) -> Case:  # type: ignore[no-untyped-def]
    return service.perform(s, who, case.id, action, payload, None, t)


def crafted_day(s, store) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    insp = principal(s, "inspector1")
    op, shift = principal(s, "operator1"), principal(s, "shift1")
    grid = grid_of_inspector(s, "inspector1")
    lon, lat = point_in(grid)
    cat = matter_category(s)

    def report(m: float, who=insp, **kw: Any) -> Case:  # type: ignore[no-untyped-def]
        data = report_data(cat, lon, lat, description=f"case {m}", **kw)
        return service.create_case(s, who, data, at(m)).case

    def to_sign(m: float) -> Case:
        c = report(m)
        act(s, op, c, "accept", at(m + 1))
        act(s, shift, c, "file", at(m + 2))  # auto-dispatched to the district's 处置单位
        return c

    def handle(c: Case, h, m: float) -> None:  # type: ignore[no-untyped-def]
        act(
            s,
            h,
            c,
            "handle",
            at(m),
            note="ok",
            attachment_ids=pic(s, h, store),
            inspector_id=insp.user_id,
        )

    def check(c: Case, m: float, passed: bool = True) -> None:
        act(s, insp, c, "check", at(m), passed=passed, attachment_ids=pic(s, insp, store))

    # A: normal, on time everywhere
    a = to_sign(0)
    unit_u = a.lead_unit_id
    h = handler_of(s, unit_u)
    act(s, h, a, "sign", at(3))
    handle(a, h, 30)
    check(a, 40)  # 核查 deadline 30 + 30 min: on time
    act(s, shift, a, "close", at(45))
    # B: 返工 (the failed 核查 is late: 20 + 30 < 100), then fixed and closed
    b = to_sign(5)
    act(s, h, b, "sign", at(8))
    handle(b, h, 20)
    check(b, 100, passed=False)
    handle(b, h, 110)
    check(b, 120)
    act(s, shift, b, "close", at(125))
    # C: 延期 approved, still handled late (deadline 16:13 local, handled 17:20) → 超时 结案
    c = to_sign(10)
    act(s, h, c, "sign", at(13))
    act(s, h, c, "request_extension", at(14), reason="需要时间", amount=1, unit="working_hours")
    act(s, shift, c, "decide_extension", at(15), approve=True)
    handle(c, h, 500)
    check(c, 510)
    act(s, shift, c, "close", at(515))
    assert c.close_type == "超时"
    # D: 回退 by U approved, 改派 to V, handled and closed by V
    d = to_sign(15)
    act(s, h, d, "request_return", at(18), reason="非本单位")
    act(s, shift, d, "decide_return", at(19), approve=True)
    others = [
        u.id
        for u in s.scalars(select(Unit).where(Unit.unit_type == "处置单位").order_by(Unit.id))
        if u.id != unit_u
    ]
    unit_v = next(
        u for u in others if s.scalars(select(User).where(User.unit_id == u)).first() is not None
    )
    act(s, principal(s, "dispatcher1"), d, "dispatch", at(20), unit_id=unit_v)
    hv = handler_of(s, unit_v)
    act(s, hv, d, "sign", at(21))
    handle(d, hv, 40)
    check(d, 50)
    act(s, shift, d, "close", at(55))
    # E: 挂账 approved (excluded from 立案数 and 应结案数)
    e = to_sign(20)
    act(s, h, e, "sign", at(23))
    act(s, h, e, "request_park", at(24), reason="资金未到位")
    act(s, shift, e, "decide_park", at(25), approve=True)
    # F: 自行处置 (上报 + 立案 + 结案)
    f = report(30, source="self", attachment_ids=pic(s, insp, store))
    # G: 公众举报, 核实 on time and confirmed, filed and dispatched to U (waits for 签收)
    g = report(40, who=op, source="public")
    act(s, op, g, "accept", at(41), inspector_id=insp.user_id)
    act(s, insp, g, "verify", at(50), confirmed=True, note="属实")
    act(s, shift, g, "file", at(51))
    assert g.lead_unit_id == unit_u
    # H: the inspector's report is voided before 立案: 上报 but not 有效上报
    hh = report(60)
    act(s, op, hh, "accept", at(61))
    act(s, shift, hh, "void", at(62), reason="不属于城管范围")
    s.flush()
    return {
        "u": unit_u,
        "v": unit_v,
        "grid": grid.code,
        "insp": insp.user_id,
        "cases": dict(a=a.id, b=b.id, c=c.id, d=d.id, e=e.id, f=f.id, g=g.id, h=hh.id),
    }


def test_crafted_day_every_indicator_by_hand(city, store) -> None:
    with city.session() as s:
        x = crafted_day(s, store)
        ids = x["cases"]
        u = ev.indicators(s, "unit", str(x["u"]), DAY)
        assert u["counts"] == {
            "应处置数": 6,  # A B C D E G
            "处置数": 3,  # A B C (passed 核查)
            "按期处置数": 2,  # A B
            "超期处置数": 1,  # C
            "返工数": 1,  # B
            "回退数": 1,  # D
            "延期数": 1,  # C
            "挂账数": 1,  # E
            "应结案数": 4,  # 6 − 回退 1 − 挂账 1
            "结案数": 3,  # A B C
            "按期结案数": 2,  # A B (C closed 超时)
        }
        assert u["rates"] == {
            "处置率": 50.0,
            "按期处置率": 33.33,
            "返工率": 33.33,
            "结案率": 75.0,
            "按期结案率": 50.0,
            "延期率": 16.67,
        }
        # 33.33… × 0.6 + 75 × 0.3 + (100 − 33.33…) × 0.1 = 20 + 22.5 + 6.666… = 49.17
        assert u["composite"] == 49.17 and u["grade"] == "D"

        v = ev.indicators(s, "unit", str(x["v"]), DAY)
        assert v["counts"]["应处置数"] == 1 and v["counts"]["按期结案数"] == 1
        assert v["composite"] == 100.0 and v["grade"] == "A"

        r = ev.indicators(s, "region", x["grid"], DAY)
        assert r["counts"] == {
            "立案(含挂账)": 7,  # A B C D E F G (H voided before 立案)
            "挂账数": 1,  # E
            "立案后作废/合并": 0,
            "立案数": 6,
            "应结案数": 6,
            "结案数": 5,  # A B C D F
            "按期结案数": 4,  # A B D F
            "监督举报核实数": 1,  # G
        }
        assert r["rates"] == {
            "监督举报率": 16.67,
            "结案率": 83.33,
            "按期结案率": 66.67,
            "立案数分值": 60.0,
        }
        # (100 − 16.67) × 0.1 + 60 × 0.2 + 83.33 × 0.3 + 66.67 × 0.4 = 8.33 + 12 + 25 + 26.67
        assert r["composite"] == 72.0 and r["grade"] == "C"
        # the community holding the grid: same counts; 立案数分值 averaged over its grids
        community = ev.indicators(s, "region", x["grid"][:12], DAY)
        assert community["counts"] == r["counts"]

        i = ev.indicators(s, "inspector", str(x["insp"]), DAY)
        assert i["counts"] == {
            "上报数": 7,  # A B C D E F H
            "有效上报数": 6,  # all but H
            "应核实数": 1,  # G
            "按时核实数": 1,
            "应核查数": 5,  # A, B (fail), B, C, D
            "按时核查数": 4,  # B's failed 核查 came 80 min after the 处置反馈
            "自行处置数": 1,
            "网格立案数": 7,  # A B C D E F G were filed in the inspector's grid
            "漏报数": 1,  # G: first reported by the public
        }
        assert i["rates"] == {
            "有效上报率": 85.71,
            "漏报率": 14.29,
            "按时核实率": 100.0,
            "按时核查率": 80.0,
        }
        # 85.714 × 0.4 + (100 − 14.286) × 0.2 + 100 × 0.2 + 80 × 0.2
        # = 34.286 + 17.143 + 20 + 16 = 87.43
        assert i["composite"] == 87.43 and i["grade"] == "B"

        # drill-down: the exact cases behind figures
        def dd(entity: str, key: str, fig: str) -> dict[int, int]:
            out = ev.drilldown(s, entity, key, fig, DAY)
            return {c["id"]: c["count"] for c in out["cases"]}

        U = str(x["u"])
        assert dd("unit", U, "应处置数") == {ids[k]: 1 for k in "abcdeg"}
        assert dd("unit", U, "返工数") == {ids["b"]: 1}
        assert dd("unit", U, "应结案数") == {ids[k]: 1 for k in "abcg"}
        assert dd("unit", U, "按期结案数") == {ids["a"]: 1, ids["b"]: 1}
        assert dd("region", x["grid"], "立案数") == {ids[k]: 1 for k in "abcdfg"}
        assert dd("region", x["grid"], "监督举报核实数") == {ids["g"]: 1}
        assert dd("inspector", str(x["insp"]), "按时核查数") == {
            ids["a"]: 1,
            ids["b"]: 1,
            ids["c"]: 1,
            ids["d"]: 1,
        }
        # another day holds nothing
        nothing = ev.indicators(s, "unit", U, ev.Period(date(2026, 11, 18), date(2026, 11, 19)))
        assert nothing["counts"]["应处置数"] == 0 and nothing["composite"] is None

        # the incremental rollups equal a rebuild from history
        before = ev.all_counts(s)
        rollup.rebuild(s)
        assert ev.all_counts(s) == before
        rollup.rebuild(s, since=date(2026, 11, 17))
        assert ev.all_counts(s) == before

        # resuming E puts it back into 立案数 (and the unit's 应结案数)
        e = s.get(Case, ids["e"])
        act(s, principal(s, "shift1"), e, "resume", at(300))
        s.flush()
        assert ev.indicators(s, "region", x["grid"], DAY)["counts"]["立案数"] == 7
        assert ev.indicators(s, "unit", U, DAY)["counts"]["应结案数"] == 5


def test_ranking_and_weights(city, store) -> None:
    with city.session() as s:
        x = crafted_day(s, store)
        nov = ev.parse_period("2026-11")
        assert (nov.start, nov.end) == (date(2026, 11, 1), date(2026, 12, 1))
        assert nov.previous() == ev.parse_period("2026-10")
        rk = ev.ranking(s, "unit", nov, top=1)
        scored = [r for r in rk["rows"] if r["composite"] is not None]
        assert [(r["id"], r["composite"], r["rank"]) for r in scored] == [
            (x["v"], 100.0, 1),
            (x["u"], 49.17, 2),
        ]
        assert scored[0]["previous"] is None and scored[0]["change"] is None
        assert rk["red"][0]["id"] == x["v"] and rk["black"][0]["id"] == x["u"]
        streets = ev.ranking(s, "street", nov)
        mine = next(r for r in streets["rows"] if r["code"] == x["grid"][:9])
        # the street's other grids had no case: 立案数分值 is their average with the grid's 60
        assert mine["rates"]["结案率"] == 83.33
        communities = ev.ranking(s, "community", nov)
        assert any(r["code"] == x["grid"][:12] for r in communities["rows"])
        # weights are configuration: 专业部门 = 按期处置率 only
        ev.set_weights(s, {"unit": {"on_time_handle": 100, "close": 0, "no_rework": 0}})
        assert ev.indicators(s, "unit", str(x["u"]), DAY)["composite"] == 33.33
        assert ev.get_weights(s)["region"] == ev.DEFAULT_WEIGHTS["region"]


def _put(s, metric: str, n: int, grid: str = "341602001001001", unit: int = 9) -> None:  # type: ignore[no-untyped-def]
    # through the rollup writer: both levels (daily and monthly) get the counter
    rollup.upsert_sums(s, {(date(2026, 10, 15), unit, grid, 1, 0, metric): n})


def test_the_real_monthly_report_figures(db) -> None:
    with db.session() as s:
        # region: 立案 996 of which 24 挂账 → 应结案 972; 结案 911; 按期结案 737
        _put(s, "r_filed", 996)
        _put(s, "r_parked", 24)
        _put(s, "r_closed", 911)
        _put(s, "r_closed_on_time", 737)
        # unit: 应处置 980, 8 回退 → 应结案 972
        _put(s, "u_dispatched", 980)
        _put(s, "u_returned", 8)
        _put(s, "u_closed", 911)
        _put(s, "u_closed_on_time", 737)
        s.flush()
        oct_ = ev.parse_period("2026-10")
        r = ev.indicators(s, "region", "341602", oct_)
        assert r["counts"]["应结案数"] == 972
        assert r["rates"]["结案率"] == 93.72 and r["rates"]["按期结案率"] == 75.82
        u = ev.indicators(s, "unit", "9", oct_)
        assert u["counts"]["应结案数"] == 972
        assert u["rates"]["结案率"] == 93.72 and u["rates"]["按期结案率"] == 75.82


# --------------------------------------------------------------------------- property


def _monthly_counts(s) -> dict[tuple[Any, ...], int]:  # type: ignore[no-untyped-def]
    return {
        (r.month, r.metric, r.unit_id, r.grid_code, r.user_id): r.count
        for r in s.scalars(select(EvalMonthlyCount))
        if r.count
    }


USERS = ["operator1", "shift1", "dispatcher1", "leader1", "inspector1", "inspector2", "handler1"]


def _payload(action: str, s, who, store, draw) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return {
        "reject": {"reason": "x"},
        "void": {"reason": "x"},
        "verify": {"confirmed": draw(st.booleans()), "note": "核实"},
        "file": {"auto_dispatch": draw(st.booleans())},
        "dispatch": {"unit_id": draw(st.sampled_from([25, 27, 28]))},
        "handle": {"note": "ok", "attachment_ids": pic(s, who, store)},
        "request_return": {"reason": "x"},
        "request_extension": {
            "reason": "x",
            "amount": draw(st.sampled_from([1, 8])),
            "unit": "working_hours",
        },
        "request_park": {"reason": "x"},
        "decide_return": {"approve": draw(st.booleans())},
        "decide_extension": {"approve": draw(st.booleans())},
        "decide_park": {"approve": draw(st.booleans())},
        "check": {"passed": draw(st.booleans()), "attachment_ids": pic(s, who, store)},
        "supervise": {"note": "督办"},
        "close": {"close_type": draw(st.sampled_from([None, "正常", "特殊"]))},
    }.get(action, {})


def _brute(s, period: ev.Period) -> dict[tuple[str, str, int | str], int]:  # type: ignore[no-untyped-def]
    """Some figures straight from the raw events (own code, not the rollup replay)."""
    out: dict[tuple[str, str, int | str], int] = defaultdict(int)
    cases = {c.id: c for c in s.scalars(select(Case))}
    evs = s.scalars(select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.id)).all()
    by_case: dict[int, list[CaseEvent]] = defaultdict(list)
    for e in evs:
        by_case[e.case_id].append(e)

    def inside(t: datetime | None) -> bool:
        return t is not None and period.start <= rollup.local_day(t) < period.end

    members: dict[int, list[int]] = defaultdict(list)
    for g, u in s.execute(select(grid_inspectors.c.grid_id, grid_inspectors.c.user_id)):
        members[g].append(u)
    for cid, es in by_case.items():
        c = cases[cid]
        dispatch: CaseEvent | None = None
        filed: datetime | None = None
        for e in es:
            # positions (acts of the system count for nobody)
            if e.actor_id and inside(e.at):
                for action, entity, fig in (
                    ("accept", "operator", "受理数"),
                    ("file", "shift_leader", "立案数"),
                    ("close", "shift_leader", "结案数"),
                    ("dispatch", "dispatcher", "派遣数"),
                ):
                    if e.action == action:
                        out[(entity, fig, e.actor_id)] += 1
            if (
                e.action == "decide_return"
                and (e.data or {}).get("approve")
                and dispatch is not None
                and dispatch.actor_id
                and inside(dispatch.at)
            ):
                out[("dispatcher", "派遣返工数", dispatch.actor_id)] += 1
            if e.action in ("file", "self_handle") and inside(e.at) and c.grid_id:
                for uid in members[c.grid_id]:
                    out[("inspector", "网格立案数", uid)] += 1
                    if not (c.source in ("inspector", "self") and c.reporter_user_id == uid):
                        out[("inspector", "漏报数", uid)] += 1
            if e.action == "dispatch":
                dispatch = e
                if inside(e.at):
                    out[("unit", "应处置数", e.unit_id or 0)] += 1
            if e.action in ("file", "self_handle"):
                filed = e.at
                if inside(e.at):
                    out[("region", "立案(含挂账)", c.grid_code or "")] += 1
            if e.action == "rework" and dispatch is not None and inside(dispatch.at):
                out[("unit", "返工数", dispatch.unit_id or 0)] += 1
            if e.action == "close" and dispatch is not None and inside(dispatch.at):
                out[("unit", "结案数", dispatch.unit_id or 0)] += 1
            if e.action in ("close", "self_handle") and inside(filed):
                out[("region", "结案数", c.grid_code or "")] += 1
            if e.action in ("check", "rework") and inside(e.at):
                out[("inspector", "应核查数", e.actor_id or 0)] += 1
            if e.action == "report" and c.source in ("inspector", "self") and inside(e.at):
                out[("inspector", "上报数", e.actor_id or 0)] += 1
    return {k: v for k, v in out.items() if v}


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_incremental_rollups_equal_rebuild_and_brute_force(
    templates, city_template, store, data
) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _use

    gen = _use(templates, city_template, "evalprop")
    city = next(gen)
    try:
        with city.session() as s:
            insp = principal(s, "inspector1")
            lon, lat = point_in(grid_of_inspector(s, "inspector1"))
            t = T0
            case_ids: list[int] = []
            for _ in range(data.draw(st.integers(1, 3))):
                source = data.draw(st.sampled_from(["inspector", "public", "self"]))
                who = principal(s, "operator1") if source == "public" else insp
                extra = {"attachment_ids": pic(s, who, store)} if source == "self" else {}
                case_ids.append(
                    service.create_case(
                        s, who, report_data(matter_category(s), lon, lat, source=source, **extra), t
                    ).case.id
                )
                t += timedelta(minutes=data.draw(st.integers(0, 30)))
            for _ in range(data.draw(st.integers(5, 40))):
                t += timedelta(minutes=data.draw(st.sampled_from([0, 3, 10, 25, 40, 90, 300, 900])))
                case = s.get(Case, data.draw(st.sampled_from(case_ids)))
                assert case is not None
                fitting = [a for a, spec in service.ACTIONS.items() if case.stage in spec.stages]
                if not fitting:
                    continue
                onward = [a for a in fitting if a not in ("reject", "void", "merge", "supervise")]
                if onward and data.draw(st.integers(0, 9)) < 9:
                    action = data.draw(st.sampled_from(onward))
                else:
                    action = data.draw(st.sampled_from(fitting))
                roles = service.ACTIONS[action].roles
                fit = [u for u in USERS if principal(s, u).roles & roles] or USERS
                who = principal(
                    s, fit[0] if data.draw(st.booleans()) else data.draw(st.sampled_from(fit))
                )
                if action in service.UNIT_ACTIONS and case.lead_unit_id:
                    who = handler_of(s, case.lead_unit_id)
                if action in ("verify", "check") and case.assignee_user_id:
                    who = principal(s, s.get(User, case.assignee_user_id).username)
                try:
                    service.perform(
                        s, who, case.id, action, _payload(action, s, who, store, data.draw), None, t
                    )
                except DomainError:
                    continue
            s.flush()
            incremental = ev.all_counts(s)
            for m in sorted({k[5] for k in incremental}):
                event(f"metric {m}")
            incremental_months = _monthly_counts(s)
            rollup.rebuild(s)
            assert ev.all_counts(s) == incremental
            assert _monthly_counts(s) == incremental_months
            # random periods: the rollup figures equal a brute-force count from the events
            d0 = date(2026, 11, 16) + timedelta(days=data.draw(st.integers(0, 6)))
            period = ev.Period(d0, d0 + timedelta(days=data.draw(st.integers(1, 20))))
            brute = _brute(s, period)
            units = {k[2] for k in brute if k[0] == "unit"} | {25, 27, 28}
            for uid in units:
                f = ev.indicators(s, "unit", str(uid), period)["counts"]
                for fig in ("应处置数", "返工数", "结案数"):
                    assert f[fig] == brute.get(("unit", fig, uid), 0), (uid, fig)
            grids = {k[2] for k in brute if k[0] == "region"}
            for g in grids:
                f = ev.indicators(s, "region", str(g), period)["counts"]
                for fig in ("立案(含挂账)", "结案数"):
                    assert f[fig] == brute.get(("region", fig, g), 0), (g, fig)
            for uname in ("inspector1", "inspector2"):
                uid = principal(s, uname).user_id
                f = ev.indicators(s, "inspector", str(uid), period)["counts"]
                for fig in ("应核查数", "上报数", "网格立案数", "漏报数"):
                    assert f[fig] == brute.get(("inspector", fig, uid), 0), (uname, fig)
            for uname in USERS:
                uid = principal(s, uname).user_id
                for entity, figs in (
                    ("operator", ("受理数",)),
                    ("shift_leader", ("立案数", "结案数")),
                    ("dispatcher", ("派遣数", "派遣返工数")),
                ):
                    f = ev.indicators(s, entity, str(uid), period)["counts"]
                    for fig in figs:
                        assert f[fig] == brute.get((entity, fig, uid), 0), (uname, entity, fig)
            # the monthly level is the daily one summed per month (region grids kept)
            months: dict[tuple[Any, ...], int] = defaultdict(int)
            for (day, unit, grid, _cat, user, metric), n in ev.all_counts(s).items():
                g = grid if metric.startswith("r_") else ""
                months[(day.replace(day=1), metric, unit, g, user)] += n
            assert {k: v for k, v in months.items() if v} == _monthly_counts(s)
            # every figure equals its drill-down total (the history replayed per entity)
            for uid in units:
                ind = ev.indicators(s, "unit", str(uid), period)["counts"]
                for fig in ev.FIGURES["unit"]:
                    assert ev.drilldown(s, "unit", str(uid), fig, period)["total"] == ind[fig]
            for entity, uname in (("dispatcher", "dispatcher1"), ("shift_leader", "shift1")):
                uid = principal(s, uname).user_id
                ind = ev.indicators(s, entity, str(uid), period)["counts"]
                for fig in ev.FIGURES[entity]:
                    assert ev.drilldown(s, entity, str(uid), fig, period)["total"] == ind[fig]
    finally:
        gen.close()


# --------------------------------------------------------------------------- overhead


def test_api_indicators_rankings_drilldown_config_and_scope(city, store) -> None:
    from fastapi.testclient import TestClient

    from cityops.app import create_app
    from cityops.evaluation.api import router

    with city.session() as s:
        x = crafted_day(s, store)
    app = create_app(city)
    if not any(getattr(r, "path", "").startswith("/api/v1/evaluation") for r in app.routes):
        app.include_router(router)
    with TestClient(app) as client:

        def login(u: str) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/login", json={"username": u, "password": "demo-pass-2026"}
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        lead, adm = login("leader1"), login("admin")
        q = {
            "entity": "unit",
            "id_or_code": str(x["u"]),
            "start": "2026-11-17",
            "end": "2026-11-18",
        }
        r = client.get("/api/v1/evaluation/indicators", params=q, headers=lead)
        assert r.status_code == 200, r.text
        assert r.json()["composite"] == 49.17
        r = client.get(
            "/api/v1/evaluation/drilldown", params={**q, "metric": "返工数"}, headers=lead
        )
        assert r.json()["case_ids"] == [x["cases"]["b"]]
        r = client.get("/api/v1/evaluation/rankings", params={"period": "2026-11"}, headers=lead)
        assert r.json()["red"][0]["id"] == x["v"]
        # handlers and inspectors may not read the evaluation
        assert (
            client.get(
                "/api/v1/evaluation/indicators", params=q, headers=login("inspector1")
            ).status_code
            == 403
        )
        # a district leader: their district only
        with city.session() as s:
            other = s.scalars(
                select(User).where(
                    User.username.like("district%"), User.scope_region_code != x["grid"][:6]
                )
            ).first()
            mine = s.scalars(
                select(User).where(
                    User.username.like("district%"), User.scope_region_code == x["grid"][:6]
                )
            ).first()
        if other is not None:
            h = login(other.username)
            rq = {**q, "entity": "region", "id_or_code": x["grid"]}
            assert (
                client.get("/api/v1/evaluation/indicators", params=rq, headers=h).status_code == 404
            )
            # the unit's figures limited to the district's cases: none there
            r = client.get("/api/v1/evaluation/indicators", params=q, headers=h)
            assert r.json()["counts"]["应处置数"] == 0
        assert mine is not None
        if mine is not None:
            r = client.get("/api/v1/evaluation/indicators", params=q, headers=login(mine.username))
            assert r.json()["counts"]["应处置数"] == 6
        # weights: admin only
        body = {"unit": {"on_time_handle": 100, "close": 0, "no_rework": 0}}
        assert client.put("/api/v1/evaluation/config", json=body, headers=lead).status_code == 403
        r = client.put("/api/v1/evaluation/config", json=body, headers=adm)
        assert r.status_code == 200 and r.json()["weights"]["unit"]["on_time_handle"] == 100
        r = client.get("/api/v1/evaluation/indicators", params=q, headers=lead)
        assert r.json()["composite"] == 33.33


def test_cli_rebuild(city, store, monkeypatch) -> None:
    from typer.testing import CliRunner

    from cityops.core.settings import get_settings
    from cityops.evaluation.cli import evaluation_app

    with city.session() as s:
        crafted_day(s, store)
        before = ev.all_counts(s)
        s.execute(EvalDailyCount.__table__.delete())
    monkeypatch.setenv("CITYOPS_DATABASE_URL", city.url)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(evaluation_app, ["rebuild"])
        assert r.exit_code == 0, r.output
        r = CliRunner().invoke(evaluation_app, ["rebuild", "--since", "2026-11-17"])
        assert r.exit_code == 0 and "since 2026-11-17" in r.output
    finally:
        get_settings.cache_clear()
    with city.session() as s:
        assert ev.all_counts(s) == before

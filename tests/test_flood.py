"""Flood command services on the demo city: response levels and their log, rule proposals,
dispatch orders with acknowledgement times and the overdue flag, the live board, the
after-event report, permissions and data scope. Gauges come from an in-memory stand-in
(``tests.flood_support.FakeGauges``); the real monitoring path is tested in
``test_flood_integration.py``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from openpyxl import load_workbook
from sqlalchemy import event, select

from cityops.cases.models import Notification
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.flood import service
from cityops.flood.models import Equipment, Proposal, ResponseEvent
from cityops.flood.rules import LevelProposal
from tests.factories import principal
from tests.flood_support import (  # noqa: F401 (fixture)
    FakeGauges,
    fake_gauges_fixture,
    field_person,
    point,
    points_of_district,
    team,
    username_of,
)

T0 = datetime(2026, 7, 5, 8, 0, tzinfo=UTC)


def m(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_demo_flood_data(city) -> None:
    with city.session() as s:
        pts = points_of_district(s, "")
        assert len(pts) == 12
        assert [p.code for p in pts][:2] == ["YLD-001", "YLD-002"]
        for p in pts:
            assert p.depth_device_code == f"WL-{p.code}"
            assert p.rain_device_code in {"RG-1", "RG-2", "RG-3", "RG-4"}
            assert len(p.grid_code) == 15 and p.warn_depth_cm == 15.0
            assert {x.role for x in p.persons} == {"包保领导", "现场责任人"}
            assert field_person(s, p).user_id is not None
        assert len(service.list_teams(s, principal(s, "commander1"))) == 4
        pumps = s.scalars(select(Equipment).where(Equipment.kind == "pump")).all()
        assert pumps and all(e.capacity_m3h for e in pumps)
        # one finished past response (7·5 rainstorm): Ⅳ → Ⅰ → Ⅲ → end, six orders
        cmd = principal(s, "commander1")
        (past,) = service.list_events(s, cmd)
        assert past.ended_at is not None and past.peak_level == 1
        assert [c.action for c in past.changes] == ["start", "raise", "lower", "end"]
        rep = service.event_report(s, cmd, past.id, m(0))
        assert rep["averages"]["orders"] == rep["averages"]["arrived"] == 6
        assert all(r["status"] == "done" for r in rep["responses"])
        assert service.active_event(s) is None


def test_level_changes_are_an_event_log(city) -> None:
    with city.session() as s:
        cmd = principal(s, "commander1")
        ev = service.change_level(s, cmd, "start", 4, "暴雨蓝色预警", m(0))
        with pytest.raises(Conflict):
            service.change_level(s, cmd, "start", 3, "again", m(1))
        with pytest.raises(Conflict):  # "raise" to a lower level
            service.change_level(s, cmd, "raise", 4, "no", m(1))
        service.change_level(s, cmd, "raise", 2, "3小时降雨量超50毫米", m(30))
        service.change_level(s, cmd, "lower", 3, "雨势减弱", m(90))
        with pytest.raises(Invalid):
            service.change_level(s, cmd, "lower", 4, "  ", m(95))
        with pytest.raises(Forbidden):
            service.change_level(s, principal(s, "leader1"), "end", None, "x", m(100))
        with pytest.raises(Forbidden):
            service.change_level(s, principal(s, "admin"), "end", None, "x", m(100))
        service.change_level(s, cmd, "end", None, "积水退去", m(120))
        out = service.event_out(ev)
        assert not out["active"] and out["peak_level"]["name"] == "Ⅱ级"
        assert [
            (
                c["action"],
                c["from_level"] and c["from_level"]["level"],
                c["to_level"] and c["to_level"]["level"],
            )
            for c in out["changes"]
        ] == [("start", None, 4), ("raise", 4, 2), ("lower", 2, 3), ("end", 3, None)]
        assert out["changes"][1]["reason"] == "3小时降雨量超50毫米"
        assert out["changes"][1]["by"] == cmd.display_name
        assert service.active_event(s) is None
        # a new response may start after the end
        ev2 = service.change_level(s, cmd, "start", 3, "新一轮降雨", m(300))
        assert ev2.id != ev.id and service.active_event(s) is ev2


def test_proposals_are_deduplicated_accepted_and_superseded(city) -> None:
    with city.session() as s:
        cmd = principal(s, "commander1")
        orange = LevelProposal(2, [{"rule_id": 3, "level": 2}])
        p1 = service.record_proposal(s, orange, m(0))
        assert p1 is not None and p1.status == "pending" and p1.current_level is None
        assert service.record_proposal(s, orange, m(1)) is None  # same level pending
        assert service.record_proposal(s, LevelProposal(3, [{"level": 3}]), m(2)) is None
        red = service.record_proposal(s, LevelProposal(1, [{"rule_id": 4, "level": 1}]), m(3))
        assert red is not None and p1.status == "superseded"
        with pytest.raises(Forbidden):
            service.decide_proposal(s, principal(s, "leader1"), red.id, "accept", None, m(4))
        service.decide_proposal(s, cmd, red.id, "accept", None, m(5))
        ev = service.active_event(s)
        assert ev is not None and ev.level == 1 and ev.started_at == m(5)
        assert ev.changes[0].proposal_id == red.id and "采纳规则建议" in ev.changes[0].reason
        assert red.status == "accepted" and red.event_id == ev.id
        with pytest.raises(Conflict):
            service.decide_proposal(s, cmd, red.id, "dismiss", None, m(6))
        # at Ⅰ nothing more is proposed
        assert service.record_proposal(s, orange, m(7)) is None
        # lowered to Ⅲ, an orange proposal comes again; dismissing it is recorded
        service.change_level(s, cmd, "lower", 3, "雨停", m(60))
        again = service.record_proposal(s, orange, m(61))
        assert again is not None and again.current_level == 3 and again.event_id == ev.id
        service.decide_proposal(s, cmd, again.id, "dismiss", "积水已退", m(62))
        assert again.status == "dismissed" and again.decided_by_name == cmd.display_name
        # a manual raise to Ⅱ makes a pending orange proposal moot
        p3 = service.record_proposal(s, orange, m(63))
        assert p3 is not None
        service.change_level(s, cmd, "raise", 2, "人工研判", m(64))
        assert p3.status == "superseded"


def test_proposal_job_from_gauges(city, fake_gauges: FakeGauges) -> None:
    now = m(180)
    with city.session() as s:
        assert service.run_proposals(s, now) == {"level": None, "proposal_id": None}
        # RG-2: 49.9 mm in the last 3 h → nothing; YLD-001 at 29.9 cm → nothing
        fake_gauges.add("RG-2", "rainfall", *[(m(10 * i), 2.8) for i in range(1, 18)])
        fake_gauges.add("RG-2", "rainfall", (m(180), 2.3))
        fake_gauges.add("WL-YLD-001", "ponding_depth", (m(175), 29.9))
        assert service.run_proposals(s, now)["level"] is None
        # YLD-001 reaches its close depth → Ⅱ proposed and recorded once
        fake_gauges.add("WL-YLD-001", "ponding_depth", (m(179), 30.0))
        first = service.run_proposals(s, now)
        assert first["level"] == 2 and first["proposal_id"] is not None
        assert service.run_proposals(s, now + timedelta(minutes=1))["proposal_id"] is None
        prop = s.get(Proposal, first["proposal_id"])
        assert prop is not None
        assert prop.reasons[0]["signal"] == "ponding"
        assert prop.reasons[0]["points"][0]["point"] == "YLD-001"
        # a stale depth (over an hour old) does not count
        fake_gauges.rows[("WL-YLD-001", "ponding_depth")] = [(m(100), 45.0)]
        fake_gauges.add("RG-2", "rainfall", (m(170), 0.1))  # 50.0 mm in 3 h now
        res = service.evaluate_rules(s, now + timedelta(minutes=70))
        assert res.level is None  # rain windows ending in the last hour: ≤ 0.1+…; depth stale
        res = service.evaluate_rules(s, now)
        assert res.level == 2 and [r["signal"] for r in res.reasons] == [
            "rainfall",
            "rainfall",
            "rainfall",
        ]


def _order(s, cmd, p, minutes: float, **kw):  # type: ignore[no-untyped-def]
    data = {"point_id": p.id, "task": "赶赴现场排水, 设置警戒", "ack_minutes": 10, **kw}
    if "team_id" not in data:
        data.setdefault("person_id", field_person(s, p).id)
    return service.issue_order(s, cmd, data, m(minutes))


def test_orders_acknowledgement_times_and_overdue(city) -> None:
    with city.session() as s:
        cmd = principal(s, "commander1")
        p1, p2 = points_of_district(s, "341602")[:2]
        receiver1 = principal(s, username_of(s, field_person(s, p1).user_id))
        assert "handler" in receiver1.roles
        with pytest.raises(Forbidden):  # a handler cannot issue orders
            service.issue_order(
                s,
                receiver1,
                {"point_id": p1.id, "person_id": field_person(s, p1).id, "task": "x"},
                m(0),
            )
        pump = s.scalars(select(Equipment).where(Equipment.point_id == p1.id)).first()
        assert pump is not None
        o1 = _order(s, cmd, p1, 0, equipment_ids=[pump.id])
        assert o1.status == "issued" and o1.ack_due_at == m(10) and pump.status == "in_use"
        with pytest.raises(Conflict):  # the pump is busy with o1
            _order(s, cmd, p2, 1, equipment_ids=[pump.id])
        o2 = _order(s, cmd, p2, 1)
        squad = team(s, "排水公司")
        o3 = _order(s, cmd, p2, 2, team_id=squad.id)
        assert squad.status == "dispatched"

        # the receiver acknowledges o1 in 4 minutes
        service.order_action(s, receiver1, o1.id, "acknowledge", m(4))
        assert o1.acknowledged_at == m(4)
        assert not service.order_out(o1, m(30))["ack_overdue"]
        assert o1.history[-1]["on_behalf"] is False
        # someone else's order is invisible to a handler
        other = principal(s, username_of(s, field_person(s, p2).user_id))
        if other.user_id != receiver1.user_id:
            with pytest.raises(NotFound):
                service.order_action(s, other, o1.id, "en_route", m(5))

        # o2 (due 08:11) and o3 (due 08:12) are not acknowledged at 08:13 → overdue;
        # the commander acknowledges o2 for its receiver
        def overdue_ids(at: datetime) -> set[int]:  # this test's orders (not the demo's)
            return {o.id for o in service.list_orders(s, cmd, at, overdue=True) if o.id >= o1.id}

        assert overdue_ids(m(12)) == {o2.id}
        assert overdue_ids(m(13)) == {o2.id, o3.id}
        # the receiver got the order in their inbox; the overdue job tells issuer and
        # receiver once
        inbox = s.scalars(
            select(Notification).where(Notification.dedupe_key.like("flood_order:%"))
        ).all()
        assert {(n.user_id, n.dedupe_key) for n in inbox if n.kind == "flood_order"} >= {
            (receiver1.user_id, f"flood_order:{o1.id}:issued")
        }
        assert service.flag_overdue(s, m(13)) == [o2.id, o3.id]
        assert service.flag_overdue(s, m(14)) == []
        late = s.scalars(
            select(Notification).where(Notification.dedupe_key == f"flood_order:{o3.id}:overdue")
        ).all()
        assert {n.user_id for n in late} == {cmd.user_id, squad.leader_user_id}
        service.order_action(s, cmd, o2.id, "acknowledge", m(15))
        assert o2.history[-1]["on_behalf"] is True and o2.history[-1]["by"] == cmd.display_name
        assert service.order_out(o2, m(30))["ack_overdue"]  # acknowledged 4 minutes late

        # arrival needs a position, moves the receiver and the equipment there
        service.order_action(s, receiver1, o1.id, "en_route", m(6))
        with pytest.raises(Invalid):
            service.order_action(s, receiver1, o1.id, "arrive", m(20))
        service.order_action(s, receiver1, o1.id, "arrive", m(20), lon=p1.lon, lat=p1.lat)
        person = field_person(s, p1)
        assert (person.lon, person.lat, person.position_at) == (p1.lon, p1.lat, m(20))
        assert (pump.lon, pump.lat) == (p1.lon, p1.lat)
        with pytest.raises(Conflict):  # already arrived
            service.order_action(s, receiver1, o1.id, "acknowledge", m(21))
        service.order_action(s, receiver1, o1.id, "done", m(50), note="积水已排除")
        assert o1.status == "done" and pump.status == "available"
        assert [h["status"] for h in o1.history] == [
            "issued",
            "acknowledged",
            "en_route",
            "arrived",
            "done",
        ]
        # cancelling is the commander's; the team goes back to standby
        with pytest.raises(Forbidden):
            service.order_action(s, principal(s, "leader1"), o3.id, "cancel", m(51))
        with pytest.raises(NotFound):  # not the handler's order
            service.order_action(s, receiver1, o3.id, "cancel", m(51))
        service.order_action(s, cmd, o3.id, "cancel", m(52))
        assert squad.status == "standby" and o3.cancelled_at == m(52)
        mine = service.list_orders(s, receiver1, m(60))
        assert o1.id in {o.id for o in mine}
        assert {o.id for o in mine} & {o2.id, o3.id} == set()
        assert all(receiver1.user_id == service._receiver_user(o) for o in mine)


def test_board_depth_trend_status_assignees_scope_and_query_count(
    city, fake_gauges: FakeGauges
) -> None:
    now = m(60)
    with city.session() as s:
        cmd = principal(s, "commander1")
        pts = points_of_district(s, "341602")
        p1, p2, p3 = pts[:3]
        fake_gauges.add(p1.depth_device_code, "ponding_depth", (m(35), 28.0), (m(50), 31.5))
        fake_gauges.add(p2.depth_device_code, "ponding_depth", (m(40), 20.0), (m(55), 16.0))
        fake_gauges.add(p3.depth_device_code, "ponding_depth", (m(45), 5.0), (m(58), 5.4))
        service.change_level(s, cmd, "start", 2, "积水超封闭深度", m(40))
        o1 = _order(s, cmd, p1, 41)
        service.order_action(s, cmd, o1.id, "acknowledge", m(43))
        service.order_action(s, cmd, o1.id, "arrive", m(52), lon=p1.lon, lat=p1.lat)
        o2 = _order(s, cmd, p1, 42, team_id=team(s, "排水公司").id)

        b = service.board(s, cmd, now)
        assert b["event"]["level"] == 2 and b["event"]["color"] == "orange"
        rows = {r["code"]: r for r in b["points"]}
        assert len(rows) == 12
        r1, r2, r3 = rows[p1.code], rows[p2.code], rows[p3.code]
        assert (r1["depth_cm"], r1["trend"], r1["status"]) == (31.5, "rising", "closed")
        assert (r2["depth_cm"], r2["trend"], r2["status"]) == (16.0, "falling", "warning")
        assert (r3["depth_cm"], r3["trend"], r3["status"]) == (5.4, "steady", "normal")
        assert rows[pts[3].code]["status"] == "unknown"
        assert [(a["order_id"], a["status"], a["ack_overdue"]) for a in r1["assigned"]] == [
            (o1.id, "arrived", False),
            (o2.id, "issued", True),  # due 08:52, not acknowledged at 09:00
        ]
        assert r1["arrived"] == [field_person(s, p1).name]
        assert b["summary"]["closed"] == 1 and b["summary"]["warning"] == 1
        assert b["summary"]["open_orders"] == 2
        assert b["summary"]["overdue_orders"] == 1
        assert service.board(s, cmd, m(52))["summary"]["overdue_orders"] == 0

        # a district leader sees only their district's points
        d2 = principal(s, "district2")
        other = service.board(s, d2, now)
        assert {r["district_code"] for r in other["points"]} == {"341621"}
        with pytest.raises(NotFound):
            service.get_point(s, d2, p1.id)
        # a proposal's reasons show a district leader only their own points
        p9 = points_of_district(s, "341621")[0]
        hits = [{"point": x.code, "depth_cm": 33.0, "limit_cm": 30.0} for x in (p1, p9)]
        service.record_proposal(
            s,
            LevelProposal(1, [{"rule_id": 5, "signal": "ponding", "level": 1, "points": hits}]),
            now,
        )
        (seen,) = service.board(s, d2, now)["pending_proposals"]
        assert seen["reasons"][0]["points"] == [hits[1]]
        assert seen["reasons"][0]["points_elsewhere"] == 1
        (full,) = service.board(s, cmd, now)["pending_proposals"]
        assert full["reasons"][0]["points"] == hits
        with pytest.raises(Forbidden):
            service.board(s, principal(s, "handler1"), now)

        # the number of statements does not grow with the orders (no N+1)
        def count_statements(at: datetime) -> int:
            n = 0

            def bump(*_a: object) -> None:
                nonlocal n
                n += 1

            engine = s.get_bind()
            event.listen(engine, "before_cursor_execute", bump)
            try:
                s.expire_all()
                service.board(s, cmd, at)
            finally:
                event.remove(engine, "before_cursor_execute", bump)
            return n

        before = count_statements(now)
        assert 0 < before <= 8, before
        for p in pts[1:6]:
            _order(s, cmd, p, 59)
        s.flush()
        assert count_statements(now) == before


def test_after_event_report_timeline_peaks_response_times_and_xlsx(
    city, fake_gauges: FakeGauges
) -> None:
    with city.session() as s:
        cmd = principal(s, "commander1")
        p1, p2 = points_of_district(s, "341602")[:2]
        p9 = points_of_district(s, "341621")[0]
        prop = service.record_proposal(s, LevelProposal(3, [{"rule_id": 2, "level": 3}]), m(0))
        assert prop is not None
        service.decide_proposal(s, cmd, prop.id, "accept", None, m(2))
        ev = service.active_event(s)
        assert ev is not None
        o1 = _order(s, cmd, p1, 5)  # ack after 2 min, arrival after 15 min
        receiver1 = principal(s, username_of(s, field_person(s, p1).user_id))
        service.order_action(s, receiver1, o1.id, "acknowledge", m(7))
        service.order_action(s, receiver1, o1.id, "arrive", m(20), lon=p1.lon, lat=p1.lat)
        o2 = _order(s, cmd, p2, 6, team_id=team(s, "排水公司").id)  # ack 10 min, arrival 30
        service.order_action(s, cmd, o2.id, "acknowledge", m(16))
        service.order_action(s, cmd, o2.id, "en_route", m(17))
        service.order_action(s, cmd, o2.id, "arrive", m(36), lon=p2.lon, lat=p2.lat)
        o9 = _order(s, cmd, p9, 8)  # never acknowledged
        service.change_level(s, cmd, "raise", 2, "积水超30厘米", m(25))
        service.change_level(s, cmd, "end", None, "雨停水退", m(120))
        fake_gauges.add(
            p1.depth_device_code,
            "ponding_depth",
            (m(-30), 50.0),  # before the event: ignored
            (m(10), 22.0),
            (m(24), 34.5),
            (m(40), 34.5),
            (m(60), 12.0),
        )
        fake_gauges.add(p2.depth_device_code, "ponding_depth", (m(30), 18.0))
        fake_gauges.add(p9.depth_device_code, "ponding_depth", (m(30), 9.0))

        rep = service.event_report(s, cmd, ev.id, m(200))
        assert rep["event"]["duration_s"] == 118 * 60
        assert rep["event"]["peak_level"]["level"] == 2
        tl = [(t["at"], t["kind"], t["action"]) for t in rep["timeline"]]
        assert tl == [
            (m(0).isoformat(), "proposal", "proposed"),
            (m(2).isoformat(), "level", "start"),
            (m(2).isoformat(), "proposal", "accepted"),
            (m(5).isoformat(), "order", "issued"),
            (m(6).isoformat(), "order", "issued"),
            (m(7).isoformat(), "order", "acknowledged"),
            (m(8).isoformat(), "order", "issued"),
            (m(16).isoformat(), "order", "acknowledged"),
            (m(17).isoformat(), "order", "en_route"),
            (m(20).isoformat(), "order", "arrived"),
            (m(25).isoformat(), "level", "raise"),
            (m(36).isoformat(), "order", "arrived"),
            (m(120).isoformat(), "level", "end"),
        ]
        assert "(代签)" in rep["timeline"][7]["text"]
        peaks = {r["code"]: (r["peak_cm"], r["peak_at"], r["status_at_peak"]) for r in rep["peaks"]}
        assert peaks[p1.code] == (34.5, m(24).isoformat(), "closed")  # first time of the peak
        assert peaks[p2.code] == (18.0, m(30).isoformat(), "warning")
        resp = {r["order_id"]: r for r in rep["responses"]}
        assert (resp[o1.id]["issue_to_ack_s"], resp[o1.id]["issue_to_arrival_s"]) == (120, 900)
        assert (resp[o2.id]["issue_to_ack_s"], resp[o2.id]["issue_to_arrival_s"]) == (600, 1800)
        assert resp[o2.id]["acknowledged_on_behalf"] and not resp[o2.id]["ack_overdue"]
        assert resp[o9.id]["ack_overdue"] and resp[o9.id]["issue_to_ack_s"] is None
        av = rep["averages"]
        assert av["issue_to_ack_s"] == 360.0  # (120 + 600) / 2
        assert av["ack_to_arrival_s"] == 990.0  # (780 + 1200) / 2
        assert av["issue_to_arrival_s"] == 1350.0  # (900 + 1800) / 2
        assert (av["orders"], av["acknowledged"], av["arrived"], av["ack_overdue"]) == (3, 2, 2, 1)

        # a district leader's report holds only their district's orders and points
        d1 = service.event_report(s, principal(s, "district1"), ev.id, m(200))
        assert {r["order_id"] for r in d1["responses"]} == {o1.id, o2.id}
        assert p9.code not in {r["code"] for r in d1["peaks"]}

        wb = load_workbook(io.BytesIO(service.report_xlsx(rep)))
        assert wb.sheetnames == ["概要", "时间线", "积水峰值", "响应时间"]
        summary = {r[0]: r[1] for r in wb["概要"].iter_rows(values_only=True)}
        assert summary["平均签收用时(秒)"] == 360.0 and summary["最高响应级别"] == "Ⅱ级橙"
        assert wb["时间线"].max_row == 1 + len(tl)
        assert s.get(ResponseEvent, ev.id) is ev


def test_admin_edits_points_and_rules(city) -> None:
    with city.session() as s:
        admin = principal(s, "admin")
        p1 = points_of_district(s, "341602")[0]
        with pytest.raises(Forbidden):
            service.update_point(s, principal(s, "commander1"), p1.id, {"version": p1.version})
        with pytest.raises(Conflict):
            service.update_point(s, admin, p1.id, {"version": p1.version + 5, "name": "x"})
        with pytest.raises(Invalid):
            service.update_point(s, admin, p1.id, {"version": p1.version, "warn_depth_cm": 35.0})
        service.update_point(
            s, admin, p1.id, {"version": p1.version, "close_depth_cm": 25.0, "warn_depth_cm": 10}
        )
        assert (p1.warn_depth_cm, p1.close_depth_cm) == (10, 25.0)
        created = service.create_point(
            s,
            admin,
            {"code": "YLD-100", "name": "测试下穿", "lon": p1.lon, "lat": p1.lat, "person_ids": []},
        )
        assert created.grid_code == p1.grid_code and created.close_depth_cm == 30.0
        with pytest.raises(Invalid):
            service.create_point(
                s, admin, {"code": "YLD-101", "name": "x", "lon": 100.0, "lat": 20.0}
            )
        rules = service.list_rules(s, admin)
        assert [(r.signal, r.window_minutes, r.threshold, r.level) for r in rules] == [
            ("rainfall", 720, 50.0, 4),
            ("rainfall", 360, 50.0, 3),
            ("rainfall", 180, 50.0, 2),
            ("ponding", None, None, 2),
            ("rainfall", 180, 100.0, 1),
        ]
        with pytest.raises(Forbidden):
            service.save_rule(s, principal(s, "commander1"), {"signal": "ponding", "level": 1})
        r = service.save_rule(
            s, admin, {"signal": "ponding", "level": 1, "threshold": 50.0, "min_points": 3}
        )
        assert r.id > 5 and len(service.rule_specs(s)) == 6


def test_cli_evaluate_board_and_report(city, monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from cityops.core.settings import get_settings
    from cityops.flood.cli import flood_app

    with city.session() as s:
        cmd = principal(s, "commander1")
        ev = service.change_level(s, cmd, "start", 3, "黄色预警", m(0))
        _order(s, cmd, points_of_district(s, "341602")[0], 1)
        service.change_level(s, cmd, "end", None, "解除", m(60))
        event_id = ev.id
    monkeypatch.setenv("CITYOPS_DATABASE_URL", city.url)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(flood_app, ["evaluate"])
        assert r.exit_code == 0, r.output
        assert set(json.loads(r.output)) == {"level", "proposal_id"}
        r = CliRunner().invoke(flood_app, ["board"])
        assert r.exit_code == 0 and '"points"' in r.output
        r = CliRunner().invoke(flood_app, ["report", str(event_id)])
        assert r.exit_code == 0, r.output
        assert '"orders": 1' in r.output
        out = tmp_path / "r.xlsx"
        r = CliRunner().invoke(flood_app, ["report", str(event_id), "--xlsx", str(out)])
        assert r.exit_code == 0 and load_workbook(out).sheetnames[1] == "时间线"
        r = CliRunner().invoke(flood_app, ["report", "9999"])
        assert r.exit_code == 1 and "no event 9999" in r.output
    finally:
        get_settings.cache_clear()


def test_only_one_active_response_even_when_two_commanders_race(city, monkeypatch) -> None:
    with city.session() as s:
        service.change_level(s, principal(s, "commander1"), "start", 4, "蓝色预警", m(0))
    with city.session() as s:
        # the second commander's check ran before the first one committed: the unique
        # active_key still refuses a second active response, as a clean 409
        monkeypatch.setattr(service, "active_event", lambda session: None)
        with pytest.raises(Conflict):
            service.change_level(s, principal(s, "commander1"), "start", 3, "黄色预警", m(1))
        active = s.scalars(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None))).all()
        assert [e.level for e in active] == [4]

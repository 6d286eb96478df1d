"""The closed loop, its side flows, refusals and concurrency (service level)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from cityops.access.models import User
from cityops.cases import queries, service
from cityops.cases.models import ApprovalRequest, Case, CaseEvent, DispatchRule, Notification
from cityops.cases.storage import LocalStorage
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.geo.models import Grid, Unit, grid_inspectors
from tests.factories import (
    grid_of_inspector,
    handler_of,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)

# A Tuesday morning in working hours (Asia/Shanghai 09:00 = 01:00 UTC).
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def store(tmp_path) -> LocalStorage:  # type: ignore[no-untyped-def]
    return LocalStorage(tmp_path / "att")


def upload(s, who, store, lon=None, lat=None) -> int:  # type: ignore[no-untyped-def]
    return int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo(lon, lat))["id"])


def act(s, who, case: Case, action: str, t: datetime, **payload: Any) -> Case:  # type: ignore[no-untyped-def]
    return service.perform(s, who, case.id, action, payload, None, t)


def history(s, case: Case) -> list[str]:  # type: ignore[no-untyped-def]
    return list(
        s.scalars(
            select(CaseEvent.action).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
        )
    )


def new_report(s, store, who="inspector1", source=None, minutes=0.0, **kw):  # type: ignore[no-untyped-def]
    rep = principal(s, who)
    grid = grid_of_inspector(s, "inspector1")
    lon, lat = point_in(grid)
    cat = matter_category(s)
    data = report_data(cat, lon, lat, attachment_ids=[upload(s, rep, store)], **kw)
    if source:
        data["source"] = source
    return service.create_case(s, rep, data, at(minutes)).case


def test_full_loop_from_an_inspector_report(city, store) -> None:
    with city.session() as s:
        case = new_report(s, store)
        assert case.stage == "accept"
        assert case.number.startswith("20261117") and len(case.number) == 13
        assert case.grid_code == grid_of_inspector(s, "inspector1").code
        act(s, principal(s, "operator1"), case, "accept", at(5))
        assert case.stage == "file"  # an inspector's own report needs no 核实
        act(s, principal(s, "shift1"), case, "file", at(10))
        # 暴露垃圾's default handler is the district's 处置单位: dispatched automatically
        assert case.stage == "sign"
        assert case.lead_unit_id is not None
        assert case.dispatched_at == at(10)
        # 4 working hours for 暴露垃圾 from 09:10 → 15:10 the same day (lunch skipped)
        assert case.handle_deadline == datetime(2026, 11, 17, 7, 10, tzinfo=UTC)
        h = handler_of(s, case.lead_unit_id)
        act(s, h, case, "sign", at(20))
        assert case.stage == "handle"
        act(s, h, case, "handle", at(60), note="已清理", attachment_ids=[upload(s, h, store)])
        assert case.stage == "check"
        assert case.assignee_user_id is not None
        checker = s.get(User, case.assignee_user_id)
        insp = principal(s, checker.username)
        act(s, insp, case, "check", at(70), passed=True, attachment_ids=[upload(s, insp, store)])
        assert case.stage == "close"
        act(s, principal(s, "shift1"), case, "close", at(75))
        assert case.stage == "closed" and case.close_type == "正常"
        assert history(s, case) == [
            "report",
            "accept",
            "file",
            "dispatch",
            "sign",
            "handle",
            "check",
            "close",
        ]
        stamps = [
            case.reported_at,
            case.accepted_at,
            case.filed_at,
            case.dispatched_at,
            case.signed_at,
            case.handled_at,
            case.checked_at,
            case.closed_at,
        ]
        assert stamps == sorted(stamps)
        # the handler was notified of the dispatch, the inspector of the 核查 task
        kinds = set(s.scalars(select(Notification.kind).where(Notification.case_id == case.id)))
        assert {"dispatch", "check"} <= kinds


def test_full_loop_from_a_public_report_with_verification(city, store) -> None:
    with city.session() as s:
        op = principal(s, "operator1")
        grid = grid_of_inspector(s, "inspector1")
        lon, lat = point_in(grid)
        cat = matter_category(s)
        case = service.create_case(
            s,
            op,
            report_data(
                cat, lon, lat, source="public", reporter_name="王小明", reporter_phone="13812345678"
            ),
            at(0),
        ).case
        act(s, op, case, "accept", at(3))
        assert case.stage == "verify"
        inspector = s.get(User, case.assignee_user_id)
        assert grid.id in [
            g.id
            for g in s.scalars(
                select(Grid)
                .join(grid_inspectors)
                .where(
                    __import__(
                        "cityops.geo.models", fromlist=["grid_inspectors"]
                    ).grid_inspectors.c.user_id
                    == inspector.id
                )
            )
        ]
        insp = principal(s, inspector.username)
        act(s, insp, case, "verify", at(20), confirmed=True, note="属实")
        assert case.stage == "file"
        act(s, principal(s, "shift1"), case, "file", at(25), auto_dispatch=False)
        assert case.stage == "dispatch"
        units = [u for u in s.scalars(select(Unit)) if u.unit_type == "处置单位"]
        act(
            s,
            principal(s, "dispatcher1"),
            case,
            "dispatch",
            at(30),
            unit_id=units[0].id,
            co_unit_ids=[units[1].id],
        )
        assert {(u.unit_id, u.role) for u in case.units} == {
            (units[0].id, "lead"),
            (units[1].id, "co"),
        }
        h = handler_of(s, units[0].id)
        act(s, h, case, "sign", at(35))
        act(s, h, case, "handle", at(50), note="done", attachment_ids=[upload(s, h, store)])
        act(s, insp, case, "check", at(60), passed=True, attachment_ids=[upload(s, insp, store)])
        act(s, principal(s, "shift1"), case, "close", at(65))
        assert case.stage == "closed"
        # the reporter's personal data is masked outside the centre, shown inside it
        d_out = queries.case_detail(s, h, case, at(70))
        assert d_out["reporter"] == {"name": "王**", "phone": "138****5678"}
        assert d_out["tracking_code"] is None
        d_in = queries.case_detail(s, op, case, at(70))
        assert d_in["reporter"] == {"name": "王小明", "phone": "13812345678"}


def test_reject_verify_false_and_void(city, store) -> None:
    with city.session() as s:
        op, shift = principal(s, "operator1"), principal(s, "shift1")
        c1 = new_report(s, store)
        with pytest.raises(Invalid, match="reason"):
            act(s, op, c1, "reject", at(1))
        act(s, op, c1, "reject", at(1), reason="重复上报")
        assert c1.stage == "rejected" and c1.end_reason == "重复上报"
        c2 = new_report(s, store, who="operator1", source="hotline", description="热线：垃圾")
        act(s, op, c2, "accept", at(2))
        insp = principal(
            s,
            s.get(User, c2.assignee_user_id).username,
        )
        act(s, insp, c2, "verify", at(3), confirmed=False, note="现场未发现")
        assert c2.stage == "void" and c2.end_reason == "现场未发现"
        c3 = new_report(s, store, minutes=4, description="另一处垃圾")
        act(s, op, c3, "accept", at(5))
        act(s, shift, c3, "void", at(6), reason="不属于城管范围")
        assert c3.stage == "void"
        with pytest.raises(Conflict, match="作废"):
            act(s, shift, c3, "file", at(7))


def _to_handle(s, store, minutes=0.0):  # type: ignore[no-untyped-def]
    case = new_report(s, store, minutes=minutes, description=f"case at {minutes}")
    act(s, principal(s, "operator1"), case, "accept", at(minutes + 1))
    act(s, principal(s, "shift1"), case, "file", at(minutes + 2))
    h = handler_of(s, case.lead_unit_id)
    act(s, h, case, "sign", at(minutes + 3))
    return case, h


def test_return_approved_goes_back_to_dispatch_for_reassignment(city, store) -> None:
    with city.session() as s:
        case, h = _to_handle(s, store)
        with pytest.raises(Invalid, match="reason"):
            act(s, h, case, "request_return", at(10))
        act(s, h, case, "request_return", at(10), reason="不属于本单位职责")
        assert case.stage == "return_review" and case.paused_since == at(10)
        with pytest.raises(Forbidden):
            act(s, principal(s, "dispatcher1"), case, "decide_return", at(11), approve=True)
        act(s, principal(s, "shift1"), case, "decide_return", at(12), approve=True)
        assert case.stage == "dispatch" and case.lead_unit_id is None and case.return_count == 1
        other = next(
            u for u in s.scalars(select(Unit)) if u.unit_type == "处置单位" and u.id != h.unit_id
        )
        act(s, principal(s, "dispatcher1"), case, "dispatch", at(13), unit_id=other.id)  # 改派
        assert case.stage == "sign" and case.lead_unit_id == other.id
        # the old unit can no longer act on it
        with pytest.raises((Forbidden, NotFound)):
            act(s, h, case, "sign", at(14))


def test_return_rejected_resumes_with_deadline_moved_by_the_pause(city, store) -> None:
    with city.session() as s:
        case, h = _to_handle(s, store)
        due = case.handle_deadline
        act(s, h, case, "request_return", at(10), reason="不是我们的")
        act(s, principal(s, "shift1"), case, "decide_return", at(40), approve=False)
        assert case.stage == "handle"
        # 30 working minutes passed while waiting: the deadline moves by exactly that
        assert case.handle_deadline == due + timedelta(minutes=30)
        assert case.stage_deadline == case.handle_deadline


def test_extension_tiers(city, store) -> None:
    with city.session() as s:
        case, h = _to_handle(s, store)
        due = case.handle_deadline
        shift, leader = principal(s, "shift1"), principal(s, "leader1")
        act(
            s,
            h,
            case,
            "request_extension",
            at(10),
            reason="需要调度车辆",
            amount=1,
            unit="working_days",
        )
        with pytest.raises(Conflict, match="already waiting"):
            act(s, h, case, "request_park", at(11), reason="x")
        with pytest.raises(Conflict, match="waiting for a decision"):
            act(s, h, case, "handle", at(11), note="x", attachment_ids=[upload(s, h, store)])
        act(s, shift, case, "decide_extension", at(10), approve=True)
        # one working day (480 min) later; no time lost (decided at once)
        assert case.handle_deadline is not None and due is not None
        assert case.extended and case.extension_count == 1
        assert service.wt.get_clock(s).elapsed(due, case.handle_deadline) == 480
        # a second extension needs a leader: the shift leader is refused
        act(
            s, h, case, "request_extension", at(20), reason="还需要", amount=2, unit="working_hours"
        )
        req = s.scalars(
            select(ApprovalRequest).where(
                ApprovalRequest.case_id == case.id, ApprovalRequest.decision.is_(None)
            )
        ).one()
        assert req.required_role == "leader"
        v = case.version
        with pytest.raises(Forbidden, match="leader"):
            act(s, shift, case, "decide_extension", at(21), approve=True)
        assert case.version == v and case.pending_request == "extend"
        act(s, leader, case, "decide_extension", at(21), approve=False)
        assert case.extension_count == 1 and case.pending_request is None


def test_park_stops_the_clock_across_a_weekend_and_resume_moves_the_deadline(city, store) -> None:
    friday = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)  # Friday 15:00 local
    with city.session() as s:
        case = new_report(s, store)
        act(s, principal(s, "operator1"), case, "accept", friday)
        act(s, principal(s, "shift1"), case, "file", friday)
        h = handler_of(s, case.lead_unit_id)
        act(s, h, case, "sign", friday)
        due = case.handle_deadline  # 4 working hours from Fri 15:00: 3 h Friday + 1 h → Mon 09:00
        assert due == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
        act(s, h, case, "request_park", friday + timedelta(hours=1), reason="需列入年度维修计划")
        act(
            s,
            principal(s, "shift1"),
            case,
            "decide_park",
            friday + timedelta(hours=1),
            approve=True,
        )
        assert case.stage == "parked" and case.parked
        # resumed Monday 10:00 local: the pause covered Fri 16:00–18:00 and Mon 08:00–10:00
        monday = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
        act(s, principal(s, "shift1"), case, "resume", monday)
        assert case.stage == "handle" and not case.parked
        # 3 hours were left at 16:00 Friday → due Monday 10:00 + 3 working hours = 15:00 local
        assert case.handle_deadline == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
        assert service.wt.get_clock(s).elapsed(due, case.handle_deadline) == 240


def test_check_failure_sends_the_case_back_for_rework(city, store) -> None:
    with city.session() as s:
        case, h = _to_handle(s, store)
        act(s, h, case, "handle", at(30), note="处理了", attachment_ids=[upload(s, h, store)])
        insp = principal(
            s,
            s.get(User, case.assignee_user_id).username,
        )
        with pytest.raises(Invalid, match="photo"):
            act(s, insp, case, "check", at(40), passed=False)
        act(
            s,
            insp,
            case,
            "check",
            at(40),
            passed=False,
            note="垃圾还在",
            attachment_ids=[upload(s, insp, store)],
        )
        assert case.stage == "handle" and case.rework_count == 1
        # a new full handling limit from the failed check: 4 working hours from 09:40
        assert case.handle_deadline == at(40) + timedelta(hours=4 + 2)  # lunch 12–14 inside
        assert "rework" in history(s, case)


def test_self_handled_report_is_filed_and_closed_in_one_step(city, store) -> None:
    with city.session() as s:
        insp = principal(s, "inspector1")
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        cat = matter_category(s)
        with pytest.raises(Invalid, match="photo"):
            service.create_case(s, insp, report_data(cat, lon, lat, source="self"), at(0))
        case = service.create_case(
            s,
            insp,
            report_data(cat, lon, lat, source="self", attachment_ids=[upload(s, insp, store)]),
            at(0),
        ).case
        assert case.stage == "closed" and case.source == "self" and case.closed_at == at(0)
        assert history(s, case) == ["report", "self_handle"]


def test_supervise_and_roles(city, store) -> None:
    with city.session() as s:
        case, _h = _to_handle(s, store)
        with pytest.raises(Forbidden, match="leader"):
            act(s, principal(s, "operator1"), case, "supervise", at(5), note="快")
        act(s, principal(s, "leader1"), case, "supervise", at(5), note="请尽快处理")
        assert case.supervised
        assert s.scalars(
            select(Notification).where(
                Notification.case_id == case.id, Notification.kind == "supervise"
            )
        ).first()


def test_wrong_action_is_a_conflict_and_leaves_the_case_untouched(city, store) -> None:
    with city.session() as s:
        case = new_report(s, store)
        before = (case.stage, case.version, case.updated_at)
        with pytest.raises(Conflict, match="待受理"):
            act(s, principal(s, "shift1"), case, "close", at(1))
        with pytest.raises(Conflict, match="version"):
            service.perform(
                s, principal(s, "operator1"), case.id, "accept", {}, case.version + 1, at(1)
            )
        with pytest.raises(Forbidden):
            act(s, principal(s, "dispatcher1"), case, "accept", at(1))
        assert (case.stage, case.version, case.updated_at) == before
        assert history(s, case) == ["report"]


def test_scope_a_district_user_and_another_units_handler_cannot_see_it(city, store) -> None:
    with city.session() as s:
        case, _h = _to_handle(s, store)  # in 341602 谯城区
        other_district = principal(s, "district2")  # 341621
        with pytest.raises(NotFound):
            service.load_case(s, other_district, case.id)
        assert service.load_case(s, principal(s, "district1"), case.id).id == case.id
        others = [u for u in range(1, 31) if u != case.lead_unit_id]
        foreign = None
        for u in others:
            try:
                foreign = handler_of(s, u)
                break
            except AssertionError:
                continue
        assert foreign is not None
        with pytest.raises(NotFound):
            act(s, foreign, case, "handle", at(9), note="x")
        listed = queries.list_cases(s, other_district, queries.CaseFilter(), at(10))
        assert case.id not in [i["id"] for i in listed["items"]]


def test_duplicates_are_offered_and_machine_reports_merged(city, store) -> None:
    with city.session() as s:
        first = new_report(s, store)
        op = principal(s, "operator1")
        cat = matter_category(s)
        # 20 m away, same category → offered as a duplicate
        intake = service.create_case(
            s, op, report_data(cat, first.lon + 0.0002, first.lat, source="hotline"), at(1)
        )
        assert [c.id for c in intake.duplicates] == [first.id]
        assert not intake.merged
        # a video report at the same place is merged automatically
        video = service.create_case(
            s, op, report_data(cat, first.lon, first.lat, source="video"), at(2)
        )
        assert video.merged and video.case.id == first.id
        assert first.report_count == 2 and first.last_seen_at == at(2)
        # an operator merges the hotline case into the first, and can split it again
        act(s, op, intake.case, "merge", at(3), into_case_id=first.id)
        assert intake.case.stage == "merged" and first.report_count == 3
        act(s, op, intake.case, "split", at(4))
        assert intake.case.stage == "accept" and first.report_count == 2


def test_dispatch_rules_decide_the_unit(city, store) -> None:
    with city.session() as s:
        cat = matter_category(s)
        target = next(u for u in s.scalars(select(Unit)) if u.unit_type == "养护单位")
        grid = grid_of_inspector(s, "inspector1")
        s.add(
            DispatchRule(
                name="夜间垃圾",
                category_id=cat.id,
                region_prefix=grid.code[:9],
                time_from="08:00",
                time_to="12:00",
                weekdays="12345",
                unit_id=target.id,
            )
        )
        s.flush()
        case = new_report(s, store)
        act(s, principal(s, "operator1"), case, "accept", at(1))
        act(s, principal(s, "shift1"), case, "file", at(2))  # 09:02 local Tuesday: the rule applies
        assert case.lead_unit_id == target.id
        case2 = new_report(s, store, minutes=300, description="afternoon")
        act(s, principal(s, "operator1"), case2, "accept", at(301))
        act(s, principal(s, "shift1"), case2, "file", at(302))  # 14:02: outside the window
        assert case2.lead_unit_id != target.id


def test_two_dispatchers_at_once_exactly_one_wins(city, store) -> None:
    with city.session() as s:
        case = new_report(s, store)
        act(s, principal(s, "operator1"), case, "accept", at(1))
        act(s, principal(s, "shift1"), case, "file", at(2), auto_dispatch=False)
        case_id = case.id
        units = sorted(u.id for u in s.scalars(select(Unit)) if u.unit_type == "处置单位")
    results: list[str] = []
    barrier = threading.Barrier(2)

    def dispatcher(name: str, unit_id: int) -> None:
        try:
            with city.session() as s2:
                from cityops.core.security import lock_for_write

                barrier.wait()
                lock_for_write(s2)
                p = principal(s2, name)
                c = service.load_case(s2, p, case_id)
                service.perform(s2, p, case_id, "dispatch", {"unit_id": unit_id}, c.version, at(3))
            results.append("ok")
        except Conflict:
            results.append("conflict")

    threads = [
        threading.Thread(target=dispatcher, args=("dispatcher1", units[0])),
        threading.Thread(target=dispatcher, args=("dispatcher2", units[1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "ok"]
    with city.session() as s:
        c = s.get(Case, case_id)
        assert c is not None and c.stage == "sign"
        assert (
            s.scalars(
                select(CaseEvent).where(
                    CaseEvent.case_id == case_id, CaseEvent.action == "dispatch"
                )
            )
            .all()
            .__len__()
            == 1
        )


def test_configured_channels_are_filed_and_dispatched_at_intake(city, store) -> None:
    with city.session() as s:
        assert service.auto_file_sources(s) == {"iot"}  # the default: lifeline alarms go straight
        service.set_auto_file_sources(s, ["inspector", "iot"])
        case = new_report(s, store)
        assert case.stage == "sign" and case.lead_unit_id is not None
        assert case.accepted_at == case.filed_at == case.dispatched_at == at(0)
        assert history(s, case) == ["report", "accept", "file", "dispatch"]
        with pytest.raises(Invalid, match="unknown source"):
            service.set_auto_file_sources(s, ["telepathy"])


def test_an_edited_category_limit_applies_to_the_next_deadline(city, store) -> None:
    from cityops.geo import admin
    from cityops.worktime import service as wt

    with city.session() as s:
        cat = matter_category(s)
        assert wt.resolve_limit(s, "handle", cat.id, "一般").limit == wt.TimeLimit(
            4, "working_hours"
        )
        admin_p = principal(s, "admin")
        admin.set_time_limits(
            s,
            admin_p,
            cat.id,
            [{"stage": "handle", "urgency": None, "amount": 2, "unit": "working_days"}],
        )
        assert wt.resolve_limit(s, "handle", cat.id, "一般").limit == wt.TimeLimit(
            2, "working_days"
        )


def test_a_closed_case_can_be_reopened_for_a_new_check(city, store) -> None:
    with city.session() as s:
        case, h = _to_handle(s, store)
        act(s, h, case, "handle", at(30), note="已清理", attachment_ids=[upload(s, h, store)])
        insp = principal(s, s.get(User, case.assignee_user_id).username)
        act(s, insp, case, "check", at(40), passed=True, attachment_ids=[upload(s, insp, store)])
        act(s, principal(s, "shift1"), case, "close", at(45))
        with pytest.raises(Forbidden):
            act(s, principal(s, "operator1"), case, "reopen", at(50), note="考评不满意")
        with pytest.raises(Invalid, match="note"):
            act(s, principal(s, "shift1"), case, "reopen", at(50))
        act(s, principal(s, "shift1"), case, "reopen", at(50), note="第三方考评: 垃圾仍在")
        assert case.stage == "check" and case.closed_at is None and case.close_type is None
        assert case.assignee_user_id is not None
        assert history(s, case)[-2:] == ["close", "reopen"]
        insp = principal(s, s.get(User, case.assignee_user_id).username)
        act(s, insp, case, "check", at(60), passed=False, attachment_ids=[upload(s, insp, store)])
        assert case.stage == "handle" and case.rework_count == 1


def test_merge_by_case_number_only_into_a_case_the_user_may_see(city, store) -> None:
    import dataclasses

    with city.session() as s:
        first = new_report(s, store)
        op = principal(s, "operator1")
        other = s.scalars(
            select(Grid).where(Grid.code != first.grid_code).order_by(Grid.code)
        ).first()
        lon, lat = point_in(other)
        dup = service.create_case(
            s, op, report_data(matter_category(s), lon, lat, source="hotline"), at(1)
        ).case
        assert dup.grid_code == other.code != first.grid_code
        # an operator whose scope is the duplicate's grid only: the target is not theirs
        blind = dataclasses.replace(op, scope_region_code=dup.grid_code)
        with pytest.raises(Invalid, match="合并"):
            act(s, blind, dup, "merge", at(2), into_case=first.number)
        assert dup.stage == "accept"
        act(s, op, dup, "merge", at(3), into_case=first.number)
        assert dup.stage == "merged" and dup.duplicate_of_id == first.id

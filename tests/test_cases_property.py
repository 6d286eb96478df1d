"""Property: random action sequences by random users never break the workflow's invariants.

Invariants checked after every step: exactly one current stage from the known set; history
timestamps never go backwards and every successful action left exactly one event (plus the
automatic dispatch); a refused action changed nothing; every closed case passed 核查 or was
self-handled; no deadline before its stage's start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from cityops.cases import queries, service
from cityops.cases.models import STAGES, Case, CaseEvent, track_actors
from cityops.cases.storage import LocalStorage
from cityops.core.errors import DomainError
from tests.factories import (
    grid_of_inspector,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)

ACTOR_FIELDS = ("accepted_by_id", "filed_by_id", "dispatched_by_id", "dispatch_stage_at")
USERS = [
    "operator1",
    "shift1",
    "dispatcher1",
    "leader1",
    "inspector1",
    "inspector2",
    "inspector3",
    "handler1",
    "handler2",
]
ACTIONS = list(service.ACTIONS)
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)


def payload_for(action: str, s: Any, who: Any, store: LocalStorage, draw: Any) -> dict[str, Any]:
    def pic() -> list[int]:
        return [int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo())["id"])]

    return {
        "reject": {"reason": "不属于受理范围"},
        "void": {"reason": "作废"},
        "verify": {"confirmed": draw(st.booleans()), "note": "核实"},
        "file": {"auto_dispatch": draw(st.booleans())},
        "dispatch": {"unit_id": draw(st.sampled_from([25, 27, 28]))},
        "handle": {"note": "已处理", "attachment_ids": pic()},
        "request_return": {"reason": "非本单位"},
        "request_extension": {
            "reason": "需要时间",
            "amount": draw(st.sampled_from([1, 2, 8])),
            "unit": "working_hours",
        },
        "request_park": {"reason": "资金未到位"},
        "decide_return": {"approve": draw(st.booleans())},
        "decide_extension": {"approve": draw(st.booleans())},
        "decide_park": {"approve": draw(st.booleans())},
        "check": {"passed": draw(st.booleans()), "attachment_ids": pic()},
        "supervise": {"note": "督办"},
        "close": {},
    }.get(action, {})


def snapshot(c: Case) -> tuple[Any, ...]:
    return (
        c.stage,
        c.version,
        c.lead_unit_id,
        c.rework_count,
        c.extension_count,
        c.pending_request,
        c.stage_deadline,
    )


@pytest.fixture
def store(tmp_path) -> LocalStorage:  # type: ignore[no-untyped-def]
    return LocalStorage(tmp_path / "att")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_action_sequences_keep_the_invariants(templates, city_template, store, data) -> None:  # type: ignore[no-untyped-def]
    # a fresh copy of the city per example, so that hypothesis can replay and shrink exactly
    from tests.conftest import _use

    gen = _use(templates, city_template, "prop")
    city = next(gen)
    try:
        _walk(city, store, data)
    finally:
        gen.close()


def _walk(city: Any, store: LocalStorage, data: Any) -> None:
    with city.session() as s:
        insp = principal(s, "inspector1")
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        source = data.draw(st.sampled_from(["inspector", "public", "hotline"]))
        reporter = insp if source == "inspector" else principal(s, "operator1")
        case = service.create_case(
            s, reporter, report_data(matter_category(s), lon, lat, source=source), T0
        ).case
        t = T0
        successes = 0
        for _ in range(data.draw(st.integers(3, 25))):
            t += timedelta(minutes=data.draw(st.integers(0, 600)))
            fitting = [a for a, spec in service.ACTIONS.items() if case.stage in spec.stages]
            onward = [a for a in fitting if a not in ("reject", "void", "merge", "supervise")]
            roll = data.draw(st.integers(0, 19))
            if onward and roll < 16:
                action = data.draw(st.sampled_from(onward))
            elif fitting and roll < 18:
                action = data.draw(st.sampled_from(fitting))
            else:
                action = data.draw(st.sampled_from(ACTIONS))
            # mostly users whose role fits the action, sometimes anyone
            roles = service.ACTIONS[action].roles
            fit_users = [u for u in USERS if principal(s, u).roles & roles] or USERS
            who_name = data.draw(
                st.sampled_from(fit_users if data.draw(st.integers(0, 9)) < 8 else USERS)
            )
            who = principal(s, who_name)
            if (
                action in ("sign", "handle", "request_return", "request_extension", "request_park")
                and case.lead_unit_id
            ) and data.draw(st.integers(0, 9)) < 8:
                from tests.factories import handler_of

                who = handler_of(s, case.lead_unit_id)
            if (
                action in ("verify", "check")
                and case.assignee_user_id
                and data.draw(st.integers(0, 9)) < 8
            ):
                from cityops.access.models import User

                who = principal(s, s.get(User, case.assignee_user_id).username)
            payload = payload_for(action, s, who, store, data.draw)
            before = snapshot(case)
            events_before = s.scalar(
                select(service.func.count()).where(CaseEvent.case_id == case.id)
            )
            try:
                service.perform(s, who, case.id, action, payload, None, t)
                successes += 1
            except DomainError:
                s.refresh(case)
                assert snapshot(case) == before, f"refused {action} changed the case"
                assert (
                    s.scalar(select(service.func.count()).where(CaseEvent.case_id == case.id))
                    == events_before
                )
                continue
            # ---- invariants after a successful action
            assert case.stage in STAGES
            events = s.scalars(
                select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.id)
            ).all()
            times = [e.at for e in events]
            assert times == sorted(times), "history went back in time"
            # one event per success, plus the report and any automatic dispatch
            auto = sum(1 for e in events if e.action == "dispatch" and e.actor_name == "system")
            assert len(events) == 1 + successes + auto
            assert events[-1].to_stage == case.stage or events[-1].action in ("supervise",) or auto
            if case.stage in ("handle", "return_review", "parked"):
                # the 处置 clock runs from 派遣 (or 返工), not from 签收
                assert case.handle_deadline is not None and case.dispatched_at is not None
                assert case.handle_deadline >= case.dispatched_at
            elif case.stage_deadline is not None:
                assert case.stage_deadline >= case.stage_started_at
            if case.stage == "closed":
                assert case.checked_at is not None or case.source == "self"
                assert any(e.action in ("check", "self_handle") for e in events)
            stamps = [case.reported_at, case.accepted_at, case.filed_at, case.closed_at]
            present = [x for x in stamps if x is not None]
            assert present == sorted(present)
            # who did the current 受理/立案/派遣 (evaluation counters read them off the row)
            folded = SimpleNamespace(**dict.fromkeys(ACTOR_FIELDS))
            for e in events:
                track_actors(folded, e.action, e.at, e.actor_id, e.data)
            assert {k: getattr(case, k) for k in ACTOR_FIELDS} == vars(folded)
        event(f"final stage: {case.stage}")

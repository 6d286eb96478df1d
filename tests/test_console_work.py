"""Console worklists (/work): tabs by role, countdown badges, filters, accept, bulk dispatch,
the handler's unit scope."""

from __future__ import annotations

from tests.console_support import console_user
from tests.console_work_support import (
    act,
    enter,
    report,
    stage_of,
    to_dispatch,
    username_of_handler,
)


async def test_operator_filters_the_accept_tab_and_accepts_a_case(city) -> None:
    a = report(city, description="垃圾桶满溢甲")
    b = report(city, description="乱堆物料乙", urgency="紧急")
    async with console_user(city) as user:
        await enter(user, "operator1")  # lands on /work
        await user.should_see("待受理 (2)")
        await user.should_not_see(marker="tab-dispatch")  # not an operator's work
        badge = user.find(marker=f"deadline-{a}").elements.pop()
        assert badge.props["color"] == "green" and "剩余" in badge.text
        # text search, then a filter
        user.find(marker="work-search").type("物料乙")
        user.find(marker="work-apply").click()
        await user.should_see(marker=f"case-{b}")
        await user.should_not_see(marker=f"case-{a}")
        user.find(marker="work-search").clear()
        user.find(marker="work-urgency").elements.pop().value = "一般"
        user.find(marker="work-apply").click()
        await user.should_see(marker=f"case-{a}")
        await user.should_not_see(marker=f"case-{b}")
        # open it and accept
        user.find(marker=f"case-{a}").click()
        await user.should_see(marker="action-accept")
        await user.should_see(marker="action-reject")
        user.find(marker="accept-note").type("属实，受理")
        user.find(marker="do-accept").click()
        await user.should_see("受理：已完成")
    case = stage_of(city, a)
    assert case.stage == "file"  # an inspector's report needs no 核实
    assert case.accepted_at is not None
    assert stage_of(city, b).stage == "accept"


async def test_dispatcher_dispatches_in_bulk_and_hears_of_a_case_changed_meanwhile(city) -> None:
    a, b, c = to_dispatch(city), to_dispatch(city), to_dispatch(city)
    unit_id = 25  # a district 处置单位 of the demo city
    async with console_user(city) as user:
        await enter(user, "dispatcher1")
        await user.should_see("待派遣 (3)")
        act(city, "shift1", c, "void", reason="重复上报")  # someone else acts first
        for cid in (a, b, c):
            user.find(marker=f"select-{cid}").click()
        user.find(marker="bulk-unit").elements.pop().value = unit_id
        user.find(marker="bulk-dispatch").click()
        await user.should_see("已派遣 2 件")
        await user.should_see("案件已被他人修改")
        await user.should_see(marker="work-empty")
    for cid in (a, b):
        case = stage_of(city, cid)
        assert (case.stage, case.lead_unit_id) == ("sign", unit_id)
    assert stage_of(city, c).stage == "void"


async def test_handler_sees_only_their_units_cases(city) -> None:
    mine, other = to_dispatch(city), to_dispatch(city)
    act(city, "dispatcher1", mine, "dispatch", unit_id=25)
    act(city, "dispatcher1", other, "dispatch", unit_id=27)
    handler = username_of_handler(city, 25)
    async with console_user(city) as user:
        await enter(user, handler)
        await user.should_see("待签收/待处置 (1)")
        await user.should_see(marker=f"case-{mine}")
        await user.should_not_see(marker=f"case-{other}")
        await user.should_not_see(marker="tab-accept")
        await user.open(f"/cases/{other}")
        await user.should_see(marker="not-found")
        await user.should_see("无权")
        await user.open(f"/cases/{mine}")
        await user.should_see(marker="action-sign")
        await user.should_not_see(marker="action-dispatch")


def test_work_page_pages_by_cursor_and_lists_requests_awaiting_approval(city) -> None:
    """queries.work_page: the worklist tabs' paging (no UI)."""
    from datetime import timedelta

    from cityops.cases import queries
    from cityops.cases.models import Case
    from cityops.cases.ui import deadline_badge
    from cityops.core.db import utcnow
    from cityops.worktime.service import get_clock
    from tests.factories import principal

    ids = [to_dispatch(city) for _ in range(3)]
    act(city, "dispatcher1", ids[0], "dispatch", unit_id=25)
    handler = username_of_handler(city, 25)
    act(city, handler, ids[0], "request_return", reason="不属于本单位")  # clock paused
    with city.session() as s:  # a stage without a time limit: no deadline, listed last
        s.get(Case, ids[1]).stage_deadline = None  # type: ignore[union-attr]
    now = utcnow() + timedelta(minutes=1)
    with city.session() as s:
        shift = principal(s, "shift1")
        tabs = [t.key for t in queries.work_tabs(shift)]
        assert tabs == ["accept", "verify", "file", "dispatch", "approvals", "check", "close"]
        seen: list[int] = []
        cursor = None
        for _ in range(3):
            page = queries.work_page(
                s, shift, "dispatch", queries.CaseFilter(), now, cursor=cursor, limit=1
            )
            assert page["total"] == 2
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [ids[2], ids[1]]  # by deadline, no deadline last, each once
        approvals = queries.work_page(s, shift, "approvals", queries.CaseFilter(), now)
        assert [i["id"] for i in approvals["items"]] == [ids[0]]
        clock = get_clock(s)
        assert deadline_badge(clock, approvals["items"][0], now) == ("计时暂停", "grey")
        handler_p = principal(s, handler)
        assert [t.key for t in queries.work_tabs(handler_p)] == ["handle"]
        page = queries.work_page(s, handler_p, "handle", queries.CaseFilter(), now)
        assert page["items"] == []  # return_review is not 待签收/待处置


def test_countdown_badges_count_working_time(city) -> None:
    """Green with the working time left, orange when 临期, red with the working time overdue
    (working hours 08:00–12:00 and 14:00–18:00, Asia/Shanghai)."""
    from datetime import UTC, datetime

    from cityops.cases.ui import deadline_badge
    from cityops.worktime.service import get_clock

    def item(due: datetime, **flags: bool) -> dict[str, object]:
        return {"stage_deadline": due.isoformat(), "flags": flags, "stage_warn_at": None}

    with city.session() as s:
        clock = get_clock(s)
    tue_11 = datetime(2026, 11, 17, 3, 0, tzinfo=UTC)  # Tuesday 11:00 local
    tue_15 = datetime(2026, 11, 17, 7, 0, tzinfo=UTC)  # 11–12 + 14–15 = 2 working hours
    assert deadline_badge(clock, item(tue_15), tue_11) == ("剩余 2小时0分", "green")
    assert deadline_badge(clock, item(tue_15, near_due=True), tue_11) == (
        "临期 剩余2小时0分",
        "orange",
    )
    mon_17 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # Monday 17:00 local
    tue_0930 = datetime(2026, 11, 17, 1, 30, tzinfo=UTC)  # Mon 17–18 + Tue 08–09:30
    assert deadline_badge(clock, item(mon_17), tue_0930) == ("超期 2小时30分", "red")
    paused = item(tue_15, pending_request=True)
    assert deadline_badge(clock, paused, tue_11) == ("计时暂停", "grey")

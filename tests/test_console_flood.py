"""Console pages of flood command: the commander starts a Ⅳ-level response and dispatches a
responsible person, the board shows the assignment; leaders watch without acting; the
after-event report with its Excel download."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from nicegui import ui
from openpyxl import load_workbook
from sqlalchemy import select

from cityops.core.db import Database, utcnow
from cityops.flood import service
from cityops.flood import ui as flood_ui
from cityops.flood.models import (
    LevelChange,
    Order,
    Proposal,
    ResponseEvent,
    WaterloggingPoint,
)
from tests.console_support import console_user, log_in
from tests.factories import principal
from tests.flood_support import field_person


async def enter(user: Any, username: str) -> None:
    """Log in and wait until the browser has landed on the user's home page (its navigation
    would otherwise replace a page opened right after)."""
    await log_in(user, username)
    await user.should_see(marker="title", retries=50)


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flood_ui, "POLL_SECONDS", 0.25)


def _text(user: object, marker: str) -> str:
    el = user.find(marker=marker).elements.pop()  # type: ignore[attr-defined]
    assert isinstance(el, ui.label)
    return str(el.text)


async def test_commander_starts_level_iv_and_an_order_shows_on_the_board(city: Database) -> None:
    with city.session() as s:
        pt = s.scalars(
            select(WaterloggingPoint)
            .where(WaterloggingPoint.active.is_(True))
            .order_by(WaterloggingPoint.code)
        ).first()
        assert pt is not None
        person = field_person(s, pt)
        point_id, point_code, person_id, person_name = pt.id, pt.code, person.id, person.name
        assert s.scalar(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None))) is None

    async with console_user(city) as user:
        await enter(user, "commander1")  # lands on /flood
        await user.should_see(marker="flood-level")
        assert _text(user, "flood-level") == "未启动响应"
        assert _text(user, f"point-assigned-{point_code}") == "—"

        # starting needs a reason: refused, nothing changes
        user.find(marker="level-start").click()
        await user.should_see(marker="level-error")
        with city.session() as s:
            assert s.scalar(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None))) is None

        user.find(marker="level-reason").type("暴雨蓝色预警信号")
        user.find(marker="level-start").click()  # the level chosen is Ⅳ (the default)
        await user.should_see("Ⅳ级响应（蓝色）")
        await user.should_see(marker="level-raise")
        with city.session() as s:
            ev = s.scalars(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None))).one()
            assert (ev.level, ev.peak_level) == (4, 4)
            ch = s.scalars(select(LevelChange).where(LevelChange.event_id == ev.id)).one()
            assert (ch.action, ch.to_level, ch.reason) == ("start", 4, "暴雨蓝色预警信号")
            event_id = ev.id

        # a dispatch order to the point's 现场责任人
        form = user.find(marker="order-point").elements.pop()
        assert isinstance(form, ui.select)
        form.value = point_id
        sel = user.find(marker="order-person").elements.pop()
        assert isinstance(sel, ui.select)
        sel.value = person_id
        user.find(marker="order-task").type("封闭通道, 设置警戒, 开泵排水")
        user.find(marker="order-issue").click()
        with city.session() as s:
            o = s.scalars(
                select(Order).where(Order.point_id == point_id, Order.event_id == event_id)
            ).one()
            assert (o.person_id, o.team_id, o.event_id, o.status, o.task) == (
                person_id,
                None,
                event_id,
                "issued",
                "封闭通道, 设置警戒, 开泵排水",
            )
            order_id = o.id
        await user.should_see(marker=f"order-{order_id}")
        assert _text(user, f"order-status-{order_id}") == "已下达"
        assert _text(user, f"point-assigned-{point_code}") == f"{person_name}（已下达）"
        assert _text(user, f"point-arrived-{point_code}") == "—"

    # a leader watches the same board (auto-refreshed) but has no commands
    async with console_user(city) as user:
        await enter(user, "leader1")
        await user.open("/flood")
        await user.should_see("Ⅳ级响应（蓝色）")
        await user.should_see(marker=f"order-{order_id}")
        await user.should_not_see(marker="order-form")
        await user.should_not_see(marker="level-raise")
        # the receiver acknowledges and arrives (here: the commander on their behalf): the
        # open board follows without a reload
        with city.session() as s:
            cmd = principal(s, "commander1")
            pt = s.get(WaterloggingPoint, point_id)
            assert pt is not None
            service.order_action(s, cmd, order_id, "acknowledge", utcnow())
            service.order_action(s, cmd, order_id, "arrive", utcnow(), lon=pt.lon, lat=pt.lat)
        for _ in range(50):
            if _text(user, f"point-arrived-{point_code}") == person_name:
                break
            await asyncio.sleep(0.1)
        assert _text(user, f"point-arrived-{point_code}") == person_name
        assert _text(user, f"order-status-{order_id}") == "已到达"


async def test_the_board_is_refused_to_a_handler_and_the_report_downloads(city: Database) -> None:
    async with console_user(city) as user:
        await enter(user, "handler1")
        await user.open("/flood")
        await user.should_see(marker="forbidden")

    with city.session() as s:
        past = s.scalars(select(ResponseEvent).order_by(ResponseEvent.id)).first()
        assert past is not None and past.ended_at is not None  # the demo's 7·5 response
        n_orders = len(list(s.scalars(select(Order.id).where(Order.event_id == past.id))))
        past_id = past.id
    assert n_orders > 0
    async with console_user(city) as user:
        await enter(user, "commander1")
        await user.open(f"/flood/events/{past_id}")
        await user.should_see("防汛响应复盘")
        assert _text(user, "report-peak") == "最高级别 Ⅰ级（红）"
        assert _text(user, "report-averages").startswith(f"指令 {n_orders} · 已签收 {n_orders}")
        user.find(marker="report-download").click()
        response = await user.download.next()
        wb = load_workbook(io.BytesIO(response.content))
        assert wb.sheetnames == ["概要", "时间线", "积水峰值", "响应时间"]
        assert wb["响应时间"].max_row == n_orders + 1
        await user.open("/flood/events/999999")
        await user.should_see(marker="not-found")


async def test_commander_accepts_a_rule_proposal_and_dismisses_another(city: Database) -> None:
    with city.session() as s:
        rain = [{"signal": "rain", "window_minutes": 60, "value": 52.0, "threshold": 50.0}]
        p3 = Proposal(level=3, current_level=None, reasons=rain, status="pending")
        p4 = Proposal(level=4, current_level=None, reasons=rain, status="pending")
        s.add_all([p3, p4])
        s.flush()
        ids = (p3.id, p4.id)
    async with console_user(city) as user:
        await enter(user, "commander1")
        await user.should_see(marker="proposals")
        user.find(marker=f"proposal-dismiss-{ids[1]}").click()
        await user.should_not_see(marker=f"proposal-dismiss-{ids[1]}")
        user.find(marker=f"proposal-accept-{ids[0]}").click()
        await user.should_see("Ⅲ级响应（黄色）")
        await user.should_not_see(marker="proposals")
    with city.session() as s:
        a, d = s.get(Proposal, ids[0]), s.get(Proposal, ids[1])
        assert a is not None and d is not None
        assert (a.status, d.status) == ("accepted", "dismissed")
        ev = s.scalars(select(ResponseEvent).where(ResponseEvent.ended_at.is_(None))).one()
        assert ev.level == 3 and a.event_id == ev.id
        assert a.decided_at is not None and a.decided_at <= utcnow()

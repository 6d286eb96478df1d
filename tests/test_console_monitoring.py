"""Console pages of lifeline monitoring: the live alarm list, alarm detail with its chart and
研判 (rejecting a false alarm with a reason), and the refusal of other roles."""

from __future__ import annotations

from typing import Any

import pytest
from nicegui import ui
from sqlalchemy import select

from cityops.core.db import Database
from cityops.monitoring import ui as monitoring_ui
from cityops.monitoring.models import Alarm, AlarmEvent
from tests.console_support import console_user, log_in
from tests.monitoring_support import at, ingest, open_alarm, reading

STRAIN = "BRG-001-S1"  # bridge strain gauge: outside ±300 με 三级, ±500 二级, ±800 一级


async def enter(user: Any, username: str) -> None:
    """Log in and wait until the browser has landed on the user's home page (its navigation
    would otherwise replace a page opened right after)."""
    await log_in(user, username)
    await user.should_see(marker="title", retries=50)


@pytest.fixture(autouse=True)
def _fast_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(monitoring_ui, "POLL_SECONDS", 0.1)


async def test_a_new_alarm_appears_live_and_the_monitor_rejects_it_as_false(
    city: Database,
) -> None:
    async with console_user(city) as user:
        await enter(user, "monitor1")  # lands on /monitoring
        await user.should_see(marker="monitoring-map")
        await user.should_see(marker="no-alarms")
        # readings arrive while the page is open: 560 με is outside ±500 → 二级, 待研判
        ingest(city, [reading(STRAIN, "strain", at(0), 100.0)], at(0))
        ingest(city, [reading(STRAIN, "strain", at(1), 560.0)], at(1))
        with city.session() as s:
            a = open_alarm(s, STRAIN)
            assert a is not None and (a.level, a.status) == (2, "pending")
            alarm_id = a.id
        await user.should_see(marker=f"alarm-{alarm_id}", retries=50)
        status = user.find(marker=f"alarm-status-{alarm_id}").elements.pop()
        assert isinstance(status, ui.label) and status.text == "待研判"
        await user.should_not_see(marker="no-alarms")

        user.find(marker=f"alarm-{alarm_id}").click()  # the link to the detail page
        await user.should_see("报警详情")
        await user.should_see(marker="judge-form")
        chart = user.find(marker="alarm-chart").elements.pop()
        assert isinstance(chart, ui.echart)
        series = chart.options["series"][0]
        assert [v for _, v in series["data"]] == [100.0, 560.0]
        # the rule's thresholds (±300 三级, ±500 二级, ±800 一级) as mark lines
        lines = sorted(x["yAxis"] for x in series["markLine"]["data"])
        assert lines == [-800.0, -500.0, -300.0, 300.0, 500.0, 800.0]

        # a false alarm needs a reason: nothing changes without one
        user.find(marker="judge-choice").click()  # no target: stays as it is
        choice = user.find(marker="judge-choice").elements.pop()
        assert isinstance(choice, ui.radio)
        choice.value = "reject"
        user.find(marker="judge").click()
        await user.should_see("误报须填写原因")
        with city.session() as s:
            assert s.get(Alarm, alarm_id).status == "pending"  # type: ignore[union-attr]

        user.find(marker="judge-note").type("车辆荷载瞬时冲击")
        user.find(marker="judge").click()
        await user.should_see(marker="alarm-status")
        await user.should_not_see(marker="judge-form")
        status = user.find(marker="alarm-status").elements.pop()
        assert isinstance(status, ui.label) and status.text == "误报"
        with city.session() as s:
            a2 = s.get(Alarm, alarm_id)
            assert a2 is not None
            assert (a2.status, a2.judged_by, a2.judgement_note, a2.case_id) == (
                "rejected",
                "monitor1",
                "车辆荷载瞬时冲击",
                None,
            )
            actions = list(
                s.scalars(select(AlarmEvent.action).where(AlarmEvent.alarm_id == alarm_id))
            )
            assert actions[-1] == "rejected"

        # back on the list: the rejected alarm has left the open alarms
        await user.open("/monitoring")
        await user.should_see(marker="no-alarms")
        await user.should_not_see(marker=f"alarm-{alarm_id}")


async def test_a_handler_is_refused_and_the_map_has_no_internet_tiles(city: Database) -> None:
    async with console_user(city) as user:
        await enter(user, "handler1")
        await user.open("/monitoring")
        await user.should_see(marker="forbidden")
        await user.should_not_see(marker="monitoring-map")
        await user.open("/monitoring/alarms/1")
        await user.should_see(marker="forbidden")

    async with console_user(city) as user:
        await enter(user, "leader1")
        await user.open("/monitoring")
        m = user.find(marker="monitoring-map").elements.pop()
        assert isinstance(m, ui.leaflet)
        kinds: list[Any] = [layer.__class__.__name__ for layer in m.layers]
        assert "TileLayer" not in kinds
        assert len(m.layers) > 0  # the facilities as circle markers
        await user.should_not_see(marker="judge-form")
        await user.open("/monitoring/alarms/999999")
        await user.should_see(marker="not-found")

"""Console work calendar (/admin/calendar): a year view to mark holidays (节假日) and make-up
working days (调休上班) through :mod:`cityops.worktime.service`, and to confirm a year."""

from __future__ import annotations

import calendar
from datetime import date
from typing import Any

from fastapi import Request
from nicegui import ui

from cityops.cases.ui import show_error, write_session
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.worktime import service as wt

#: Colour of each kind of day in the year view.
KIND_COLOURS = {"workday": "white", "weekend": "grey-4", "holiday": "red-4", "makeup": "orange-4"}
WEEKDAYS_ZH = "一二三四五六日"


def _calendar_page(request: Request) -> None:
    p = auth.require("admin")
    if p is None:
        return
    try:
        year0 = int(request.query_params.get("year", date.today().year))
    except ValueError:
        year0 = date.today().year
    with frame(t("工作日历", "Work calendar"), p):
        state: dict[str, Any] = {"year": year0, "day": None}

        with ui.dialog() as dialog, ui.card().classes("w-96"):
            d_title = tid(ui.label("").classes("text-subtitle1"), "day-title")
            d_kind = tid(
                ui.radio(
                    {
                        "holiday": t("节假日（不上班）", "Holiday (no work)"),
                        "makeup": t("调休上班", "Make-up working day"),
                        "default": t("按周一至周五规则", "Default Mon–Fri rule"),
                    },
                    value="holiday",
                ),
                "day-kind",
            )
            d_name = tid(ui.input(t("名称（如 国庆节）", "Name (e.g. National Day)")), "day-name")
            d_error = tid(ui.label("").classes("text-negative"), "day-error")
            d_error.visible = False

            def save_day() -> None:
                d: date = state["day"]
                kind = d_kind.value
                name = (d_name.value or "").strip() or None
                if kind == "default":
                    working, name = d.weekday() < 5, None
                else:
                    working = kind == "makeup"
                try:
                    with write_session() as s:
                        wt.set_day(s, d, working, name)
                except DomainError as exc:
                    show_error(exc, d_error)
                    return
                ui.notify(t(f"{d.isoformat()} 已更新", f"{d.isoformat()} updated"), type="positive")
                dialog.close()
                year_view.refresh()

            with ui.row():
                tid(
                    ui.button(t("保存", "Save"), on_click=save_day).props("color=primary"),
                    "day-save",
                )
                ui.button(t("取消", "Cancel"), on_click=dialog.close).props("flat")

        def open_day(d: date, kind: str, name: str | None) -> None:
            state["day"] = d
            d_title.text = f"{d.isoformat()} {t('星期', 'weekday ')}{WEEKDAYS_ZH[d.weekday()]}"
            d_kind.value = "makeup" if kind == "holiday" else "holiday"
            d_name.value = name or ""
            d_error.visible = False
            dialog.open()

        with ui.row().classes("items-end gap-2"):
            year_in = tid(ui.number(t("年份", "Year"), value=year0, format="%d"), "cal-year")

            def go() -> None:
                if year_in.value:
                    state["year"] = int(year_in.value)
                    year_view.refresh()

            tid(ui.button(t("查看", "Show"), on_click=go), "cal-go")

        @ui.refreshable
        def year_view() -> None:
            year = state["year"]
            try:
                with get_db().session() as s:
                    view = wt.year_view(s, year)
            except DomainError as exc:
                show_error(exc)
                return
            with ui.row().classes("items-center gap-3"):
                tid(
                    ui.label(
                        t(
                            f"{year} 年：工作日 {view.working_days} 天，节假日 {view.holidays} 天，"
                            f"调休上班 {view.makeup_days} 天",
                            f"{year}: {view.working_days} working days, {view.holidays} "
                            f"holidays, {view.makeup_days} make-up days",
                        )
                    ),
                    "cal-summary",
                )
                tid(
                    ui.badge(
                        t("已确认", "confirmed") if view.confirmed else t("未确认", "unconfirmed"),
                        color="positive" if view.confirmed else "warning",
                    ),
                    "cal-confirmed",
                )

                def confirm(value: bool) -> None:
                    try:
                        with write_session() as s:
                            wt.confirm_year(s, year, value)
                    except DomainError as exc:
                        show_error(exc)
                        return
                    year_view.refresh()

                tid(
                    ui.button(
                        t("取消确认", "Unconfirm")
                        if view.confirmed
                        else t("确认本年日历", "Confirm"),
                        on_click=lambda: confirm(not view.confirmed),
                    ).props("flat dense"),
                    "cal-confirm",
                )
            with ui.row().classes("gap-2 text-caption"):
                for kind, label in (
                    ("workday", t("工作日", "working day")),
                    ("weekend", t("周末", "weekend")),
                    ("holiday", t("节假日", "holiday")),
                    ("makeup", t("调休上班", "make-up day")),
                ):
                    ui.badge(label, color=KIND_COLOURS[kind], text_color="black")
            days = {d.date: d for d in view.days}
            with ui.grid(columns=4).classes("gap-4"):
                for month in range(1, 13):
                    with ui.card().classes("q-pa-xs"):
                        ui.label(t(f"{month} 月", calendar.month_name[month])).classes(
                            "text-weight-medium"
                        )
                        with ui.grid(columns=7).classes("gap-0"):
                            for wd in WEEKDAYS_ZH:
                                ui.label(wd).classes("text-caption text-center w-7")
                            first = date(year, month, 1)
                            for _ in range(first.weekday()):
                                ui.label("")
                            for n in range(1, calendar.monthrange(year, month)[1] + 1):
                                d = date(year, month, n)
                                info = days[d]
                                btn = tid(
                                    ui.button(
                                        str(n),
                                        on_click=lambda d=d, k=info.kind, nm=info.name: open_day(
                                            d, k, nm
                                        ),
                                        color=KIND_COLOURS[info.kind],
                                    )
                                    .props(
                                        f"dense unelevated size=sm text-color=black "
                                        f"data-kind={info.kind}"
                                    )
                                    .classes("w-7 min-w-0"),
                                    f"day-{d.isoformat()}",
                                )
                                if info.name:
                                    btn.tooltip(info.name)

        year_view()


def register() -> None:
    nav_item("/admin/calendar", "工作日历", "Work calendar", "event", "admin")
    ui.page("/admin/calendar")(_calendar_page)

"""Console pages of flood command (防汛指挥).

* ``/flood``: the live board — the active response level (Ⅳ–Ⅰ 蓝/黄/橙/红) with 启动 / 提级 /
  降级 / 结束 for commanders, pending rule proposals to accept or dismiss, every waterlogging
  point (积水点) with depth, trend, status, its responsible people, who is assigned and who
  has arrived; the dispatch form (调度指令: a person or a team, a point, the task) and the
  order list with acknowledgement and arrival. Board and orders are polled every
  :data:`POLL_SECONDS` and re-rendered only when they changed.
* ``/flood/events/{id}``: the after-event report (复盘) with its Excel download.

Roles: leader, commander, admin see the board (a district leader only its district's
points — applied by :mod:`cityops.flood.service`); only ``commander`` acts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from nicegui import ui
from sqlalchemy.orm import Session

from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import local_time, tid, write_session
from cityops.core.db import get_db, utcnow
from cityops.core.errors import DomainError, NotFound
from cityops.core.security import Principal
from cityops.flood import service
from cityops.flood.models import LEVELS

#: Who sees the board (the service checks the same roles).
ROLES = ("leader", "commander", "admin")
#: Who changes levels, decides proposals and issues orders.
COMMANDER = "commander"
#: Seconds between two refreshes of the board (tests make it shorter).
POLL_SECONDS = 5.0
ORDER_LIMIT = 50

LEVEL_COLOURS = {4: "#1976d2", 3: "#fbc02d", 2: "#f57c00", 1: "#d32f2f"}
POINT_STATUS = {
    "normal": ("正常", "Normal", "text-positive"),
    "warning": ("预警", "Warning", "text-orange"),
    "closed": ("封闭", "Closed", "text-negative"),
    "unknown": ("无数据", "No data", "text-grey-6"),
}
TRENDS = {"rising": "↑ 上涨", "falling": "↓ 回落", "steady": "→ 平稳"}


def local(ts: str | datetime | None) -> str:
    return local_time(ts, "%m-%d %H:%M")


def level_text(level: int | None) -> str:
    if level is None:
        return t("未启动响应", "No response active")
    roman, zh, _ = LEVELS[level]
    return f"{roman}级响应（{zh}色）"


def level_options() -> dict[int, str]:
    return {lv: f"{LEVELS[lv][0]}级（{LEVELS[lv][1]}）" for lv in (4, 3, 2, 1)}


def snapshot(session: Session, principal: Principal) -> dict[str, Any]:
    """Everything the board shows (board and the latest orders)."""
    now = utcnow()
    b = service.board(session, principal, now)
    orders = [
        service.order_out(o, now)
        for o in service.list_orders(session, principal, now, limit=ORDER_LIMIT)
    ]
    return {"board": b, "orders": orders}


def signature(snap: dict[str, Any]) -> str:
    """The part of a snapshot that matters for display (not the time it was made)."""
    b = {k: v for k, v in snap["board"].items() if k != "generated_at"}
    orders = [{k: v for k, v in o.items() if k not in ("history",)} for o in snap["orders"]]
    return json.dumps({"b": b, "o": orders}, sort_keys=True, default=str)


def _fail(exc: DomainError, label: ui.label | None = None) -> None:
    ui.notify(str(exc), type="negative", multi_line=True)
    if label is not None:
        label.text = str(exc)
        label.visible = True


# --------------------------------------------------------------------------- board parts


def _level_panel(p: Principal, b: dict[str, Any], refresh: Callable[[], None]) -> None:
    event = b["event"]
    level = event["level"] if event else None
    colour = LEVEL_COLOURS.get(level or 0, "#9e9e9e")
    with ui.card().classes("w-full").style(f"border-left: 8px solid {colour}"):
        with ui.row().classes("items-center gap-4"):
            ui.label(t("当前响应", "Response level")).classes("text-grey-7")
            tid(
                ui.label(level_text(level)).classes("text-h5").style(f"color: {colour}"),
                "flood-level",
            )
            if event:
                ui.label(f"{t('启动于', 'since')} {local(event['started_at'])}").classes(
                    "text-caption"
                )
                tid(
                    ui.link(t("事件复盘", "Event report"), f"/flood/events/{event['id']}"),
                    "flood-event-link",
                )
        if not p.has_role(COMMANDER):
            return
        with ui.row().classes("items-end gap-2"):
            choice = tid(
                ui.select(level_options(), value=4, label=t("级别", "Level")).classes("w-36"),
                "level-choice",
            )
            reason = tid(
                ui.input(t("理由", "Reason")).props("outlined dense").classes("w-72"),
                "level-reason",
            )
            error = tid(ui.label("").classes("text-negative"), "level-error")
            error.visible = False

            def act(action: str) -> None:
                try:
                    with write_session() as s:
                        service.change_level(
                            s,
                            p,
                            action,
                            None if action == "end" else int(choice.value),
                            reason.value or "",
                            utcnow(),
                            version=event["version"] if event else None,
                        )
                except DomainError as exc:
                    _fail(exc, error)
                    return
                ui.notify(t("响应级别已更新", "Response level changed"), type="positive")
                refresh()

            if event is None:
                tid(
                    ui.button(t("启动响应", "Start"), on_click=lambda: act("start")).props(
                        "color=primary"
                    ),
                    "level-start",
                )
            else:
                tid(
                    ui.button(t("提级", "Raise"), on_click=lambda: act("raise")).props(
                        "color=negative"
                    ),
                    "level-raise",
                )
                tid(
                    ui.button(t("降级", "Lower"), on_click=lambda: act("lower")).props(
                        "color=warning"
                    ),
                    "level-lower",
                )
                tid(
                    ui.button(t("结束响应", "End"), on_click=lambda: act("end")).props("outline"),
                    "level-end",
                )


def _proposals(p: Principal, b: dict[str, Any], refresh: Callable[[], None]) -> None:
    pending = b["pending_proposals"]
    if not pending:
        return
    with tid(ui.card().classes("w-full"), "proposals"):
        ui.label(t("待决策的响应建议", "Proposals to decide")).classes("text-subtitle1")
        for pr in pending:
            with ui.row().classes("items-center gap-3 w-full"):
                ui.label(
                    f"#{pr['id']} {local(pr['created_at'])} {t('建议', 'proposes')} "
                    f"{pr['level']['name']}（{pr['level']['color_zh']}）"
                ).classes("text-body1")
                reasons = "; ".join(
                    str(r.get("text") or r.get("signal") or "") for r in pr["reasons"]
                )
                ui.label(reasons).classes("text-caption text-grey-8 col")
                if p.has_role(COMMANDER):

                    def decide(action: str, pid: int = pr["id"]) -> None:
                        try:
                            with write_session() as s:
                                service.decide_proposal(s, p, pid, action, None, utcnow())
                        except DomainError as exc:
                            _fail(exc)
                            return
                        refresh()

                    tid(
                        ui.button(
                            t("采纳", "Accept"), on_click=lambda pid=pr["id"]: decide("accept", pid)
                        ).props("dense color=primary"),
                        f"proposal-accept-{pr['id']}",
                    )
                    tid(
                        ui.button(
                            t("驳回", "Dismiss"),
                            on_click=lambda pid=pr["id"]: decide("dismiss", pid),
                        ).props("dense flat"),
                        f"proposal-dismiss-{pr['id']}",
                    )


def _points(b: dict[str, Any]) -> None:
    s = b["summary"]
    with ui.row().classes("gap-2"):
        for key, label in (
            ("points", t("积水点", "Points")),
            ("warning", t("预警", "Warning")),
            ("closed", t("封闭", "Closed")),
            ("open_orders", t("在办指令", "Open orders")),
            ("overdue_orders", t("签收超时", "Late acks")),
        ):
            with ui.card().classes("q-pa-sm items-center").style("min-width: 6rem"):
                ui.label(label).classes("text-caption text-grey-7")
                tid(ui.label(str(s.get(key, 0))).classes("text-h6"), f"summary-{key}")
    with tid(ui.column().classes("w-full gap-0"), "points"):
        with ui.row().classes("w-full no-wrap text-grey-7 text-caption q-px-sm"):
            for text, width in (
                (t("点位", "Point"), "w-56"),
                (t("水深(cm)", "Depth (cm)"), "w-20"),
                (t("趋势", "Trend"), "w-20"),
                (t("状态", "Status"), "w-16"),
                (t("责任人", "Responsible"), "w-40"),
                (t("已调度", "Assigned"), "col"),
                (t("已到达", "Arrived"), "w-32"),
            ):
                ui.label(text).classes(width)
        for pt in b["points"]:
            zh, en, cls = POINT_STATUS.get(pt["status"], (pt["status"], pt["status"], ""))
            with tid(
                ui.row().classes("w-full no-wrap items-center q-px-sm q-py-xs border-b"),
                f"point-{pt['code']}",
            ):
                ui.label(f"{pt['code']} {pt['name']}").classes("w-56")
                depth = "—" if pt["depth_cm"] is None else f"{pt['depth_cm']:.0f}"
                if pt.get("stale"):
                    depth += t("（过期）", " (stale)")
                tid(ui.label(depth).classes("w-20"), f"point-depth-{pt['code']}")
                ui.label(TRENDS.get(pt["trend"] or "", "—")).classes("w-20")
                tid(ui.label(t(zh, en)).classes(f"w-16 {cls}"), f"point-status-{pt['code']}")
                ui.label("、".join(x["name"] for x in pt["persons"]) or "—").classes(
                    "w-40 text-caption"
                )
                assigned = "、".join(
                    f"{a['name']}（{a['status_label']}{'·超时' if a['ack_overdue'] else ''}）"
                    for a in pt["assigned"]
                )
                tid(
                    ui.label(assigned or "—").classes("col text-caption"),
                    f"point-assigned-{pt['code']}",
                )
                tid(
                    ui.label("、".join(pt["arrived"]) or "—").classes("w-32 text-caption"),
                    f"point-arrived-{pt['code']}",
                )


def _orders(orders: list[dict[str, Any]]) -> None:
    with tid(ui.card().classes("w-full"), "orders"):
        ui.label(t("调度指令", "Dispatch orders")).classes("text-subtitle1")
        if not orders:
            tid(ui.label(t("暂无指令", "No orders")).classes("text-grey-6"), "no-orders")
        for o in orders:
            late = o["ack_overdue"]
            with tid(ui.row().classes("w-full items-center gap-2"), f"order-{o['id']}"):
                ui.label(f"#{o['id']} {local(o['issued_at'])}").classes("w-32 text-caption")
                ui.label(f"{o['receiver']['name']} → {o['point']['name']}").classes("w-64")
                ui.label(o["task"]).classes("col text-caption")
                tid(
                    ui.label(
                        o["status_label"] + (t("（签收超时）", " (late)") if late else "")
                    ).classes("text-negative" if late else ""),
                    f"order-status-{o['id']}",
                )
                ui.label(
                    f"{t('签收', 'ack')} {local(o['acknowledged_at'])} · "
                    f"{t('到达', 'arrived')} {local(o['arrived_at'])}"
                ).classes("text-caption text-grey-8")


def _order_form(p: Principal, b: dict[str, Any], refresh: Callable[[], None]) -> None:
    with get_db().session() as s:
        persons = {x.id: f"{x.name}（{x.role}）" for x in service.list_persons(s, p) if x.active}
        teams = {
            x.id: f"{x.name}（{x.status}）" for x in service.list_teams(s, p) if x.status != "off"
        }
    points = {pt["id"]: f"{pt['code']} {pt['name']}" for pt in b["points"]}
    with tid(ui.card().classes("w-full"), "order-form"):
        ui.label(t("下达调度指令", "Issue a dispatch order")).classes("text-subtitle1")
        with ui.row().classes("items-end gap-2 w-full"):
            point = tid(
                ui.select(points, label=t("积水点", "Point"), with_input=True).classes("w-64"),
                "order-point",
            )
            kind = tid(
                ui.radio(
                    {"person": t("责任人", "Person"), "team": t("抢险队伍", "Team")},
                    value="person",
                ).props("inline"),
                "order-kind",
            )
            person = tid(
                ui.select(persons, label=t("责任人", "Person"), with_input=True).classes("w-56"),
                "order-person",
            )
            team = tid(
                ui.select(teams, label=t("队伍", "Team"), with_input=True).classes("w-56"),
                "order-team",
            )
            person.bind_visibility_from(kind, "value", value="person")
            team.bind_visibility_from(kind, "value", value="team")
            minutes = tid(
                ui.number(t("签收时限(分钟)", "Ack within (min)"), value=10, min=1, max=120)
                .props("dense")
                .classes("w-32"),
                "order-minutes",
            )
        task = tid(
            ui.textarea(t("任务", "Task")).props("outlined autogrow").classes("w-full"),
            "order-task",
        )
        error = tid(ui.label("").classes("text-negative"), "order-error")
        error.visible = False

        def issue() -> None:
            error.visible = False
            if point.value is None or not (task.value or "").strip():
                error.text = t("请选择积水点并填写任务", "Choose a point and write the task")
                error.visible = True
                return
            receiver = person.value if kind.value == "person" else team.value
            if receiver is None:
                error.text = t("请选择接收人", "Choose who receives the order")
                error.visible = True
                return
            data: dict[str, Any] = {
                "point_id": int(point.value),
                "task": task.value.strip(),
                "ack_minutes": int(minutes.value or 10),
                "person_id": int(receiver) if kind.value == "person" else None,
                "team_id": int(receiver) if kind.value == "team" else None,
            }
            try:
                with write_session() as s:
                    o = service.issue_order(s, p, data, utcnow())
                    oid = o.id
            except DomainError as exc:
                _fail(exc, error)
                return
            ui.notify(t(f"指令 #{oid} 已下达", f"Order #{oid} issued"), type="positive")
            task.value = ""
            refresh()

        tid(ui.button(t("下达", "Issue"), on_click=issue).props("color=primary"), "order-issue")


def _flood_page() -> None:
    p = auth.require(*ROLES)
    if p is None:
        return
    with get_db().session() as s:
        snap = snapshot(s, p)
        events = [service.event_out(e) for e in service.list_events(s, p, limit=10)]
    state: dict[str, Any] = {"sig": None}
    with frame(t("防汛指挥", "Flood command"), p):
        top = ui.column().classes("w-full gap-2")
        form_box = ui.column().classes("w-full")
        orders_box = ui.column().classes("w-full")
        with ui.card().classes("w-full"):
            ui.label(t("响应事件", "Responses")).classes("text-subtitle1")
            for e in events:
                lv = e["peak_level"]
                tid(
                    ui.link(
                        f"#{e['id']} {local(e['started_at'])} – {local(e['ended_at'])} "
                        f"{t('最高', 'peak')} {lv['name'] if lv else ''}",
                        f"/flood/events/{e['id']}",
                    ),
                    f"event-{e['id']}",
                )

    def render(snap: dict[str, Any]) -> None:
        top.clear()
        with top:
            _level_panel(p, snap["board"], refresh)
            _proposals(p, snap["board"], refresh)
            _points(snap["board"])
        orders_box.clear()
        with orders_box:
            _orders(snap["orders"])

    def refresh(force: bool = True) -> None:
        with get_db().session() as s:
            new = snapshot(s, p)
        sig = signature(new)
        if not force and sig == state["sig"]:
            return
        state["sig"] = sig
        render(new)

    state["sig"] = signature(snap)
    render(snap)
    if p.has_role(COMMANDER):
        with form_box:
            _order_form(p, snap["board"], refresh)
    ui.timer(POLL_SECONDS, lambda: refresh(False), immediate=False)


# --------------------------------------------------------------------------- report


def _report_page(event_id: int) -> None:
    p = auth.require(*ROLES)
    if p is None:
        return
    with frame(t("防汛响应复盘", "Flood response report"), p):
        with get_db().session() as s:
            try:
                r = service.event_report(s, p, event_id, utcnow())
            except NotFound:
                tid(ui.label(t("没有这个响应事件", "No such response")), "not-found")
                return
        ev, av = r["event"], r["averages"]

        def download() -> None:
            ui.download.content(
                service.report_xlsx(r),
                f"flood-event-{event_id}.xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )

        with ui.card().classes("w-full"):
            with ui.row().classes("items-center gap-3"):
                ui.label(f"{t('响应事件', 'Response')} #{ev['id']}").classes("text-h6")
                peak = ev["peak_level"]
                tid(
                    ui.label(f"{t('最高级别', 'Peak')} {peak['name']}（{peak['color_zh']}）"),
                    "report-peak",
                )
                ui.space()
                tid(
                    ui.button(t("下载 Excel", "Download Excel"), on_click=download).props(
                        "icon=download outline"
                    ),
                    "report-download",
                )
            ui.label(
                f"{local(ev['started_at'])} – {local(ev['ended_at']) if ev['ended_at'] else t('进行中', 'ongoing')}"
                f" · {round(ev['duration_s'] / 60)} {t('分钟', 'min')}"
            )
            tid(
                ui.label(
                    f"{t('指令', 'Orders')} {av['orders']} · {t('已签收', 'acknowledged')} "
                    f"{av['acknowledged']} · {t('已到达', 'arrived')} {av['arrived']} · "
                    f"{t('签收超时', 'late')} {av['ack_overdue']}"
                ),
                "report-averages",
            )
        with ui.card().classes("w-full"):
            ui.label(t("时间线", "Timeline")).classes("text-subtitle1")
            for row in r["timeline"]:
                ui.label(f"{local(row['at'])} · {row['text']} · {row.get('by') or ''}").classes(
                    "text-body2"
                )
        with ui.card().classes("w-full"):
            ui.label(t("积水峰值", "Peak depths")).classes("text-subtitle1")
            if not r["peaks"]:
                ui.label(t("无水深数据", "No depth readings")).classes("text-grey-6")
            for pk in r["peaks"]:
                ui.label(
                    f"{pk['code']} {pk['name']}: {pk['peak_cm']:.0f} cm · {local(pk['peak_at'])}"
                ).classes("text-body2")
        with ui.card().classes("w-full"):
            ui.label(t("响应时间", "Response times")).classes("text-subtitle1")
            for x in r["responses"]:
                ack = x["issue_to_ack_s"]
                arr = x["issue_to_arrival_s"]
                tid(
                    ui.label(
                        f"#{x['order_id']} {x['receiver']} → {x['point']} · "
                        f"{t('签收', 'ack')} {'—' if ack is None else f'{ack / 60:.0f}′'} · "
                        f"{t('到达', 'arrival')} {'—' if arr is None else f'{arr / 60:.0f}′'}"
                        + (t(" · 超时", " · late") if x["ack_overdue"] else "")
                        + (t(" · 代签", " · on behalf") if x["acknowledged_on_behalf"] else "")
                    ).classes("text-body2"),
                    f"report-order-{x['order_id']}",
                )


def register() -> None:
    nav_item("/flood", "防汛指挥", "Flood command", "flood", *ROLES)
    ui.page("/flood")(_flood_page)

    @ui.page("/flood/events/{event_id}")
    def report_page(event_id: int) -> None:
        _report_page(event_id)

"""Console pages of lifeline monitoring (城市生命线监测).

* ``/monitoring``: the live device map (facilities coloured by their worst open alarm, else
  by their devices' status), device counts by status and the alarm list. The list polls the
  service every :data:`POLL_SECONDS` and re-renders only when something changed, so a new
  alarm appears without reloading the page.
* ``/monitoring/alarms/{id}``: one alarm with its readings as an ECharts line chart (the
  rule's thresholds drawn as mark lines), its history, the link to its urgent case and the
  研判 form (confirm / reject as false with a reason) for the role ``monitor``.

The map works offline: tiles are added only when ``CITYOPS_BASEMAP_URL`` is set. The data
scope (district / unit) is applied by :mod:`cityops.monitoring.service`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nicegui import ui
from sqlalchemy.orm import Session

from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import local_time, tid, write_session
from cityops.core.db import get_db
from cityops.core.errors import DomainError, NotFound
from cityops.core.security import Principal
from cityops.core.settings import get_settings
from cityops.monitoring import service
from cityops.monitoring.catalog import DEVICE_STATUSES

#: Who may open the monitoring pages (研判 needs ``monitor``; the service checks it too).
ROLES = ("monitor", "leader", "commander", "shift_leader", "admin")
#: Seconds between two polls of the alarm list (tests make it shorter).
POLL_SECONDS = 3.0
#: Alarms shown in the list.
LIST_LIMIT = 50

#: Alarm level → colour (一级 红 … 四级 蓝).
LEVEL_COLOURS = {1: "#d32f2f", 2: "#f57c00", 3: "#fbc02d", 4: "#1976d2"}
STATUS_COLOURS = {"online": "#2e7d32", "offline": "#757575", "maintenance": "#6a1b9a"}
ALARM_STATUS_CLASSES = {
    "pending": "text-negative",
    "active": "text-deep-orange",
    "rejected": "text-grey-7",
    "cleared": "text-positive",
}


def local(ts: str | datetime | None) -> str:
    return local_time(ts, "%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- data


def facility_colour(props: dict[str, Any]) -> str:
    """The map colour of a facility: its worst open alarm, else its devices' status."""
    level = props.get("alarm_level")
    if level is not None:
        return LEVEL_COLOURS.get(int(level), "#d32f2f")
    statuses = {d["status"] for d in props.get("devices", [])}
    if "offline" in statuses:
        return STATUS_COLOURS["offline"]
    if "maintenance" in statuses:
        return STATUS_COLOURS["maintenance"]
    return STATUS_COLOURS["online"]


def alarm_rows(session: Session, principal: Principal, open_only: bool) -> list[dict[str, Any]]:
    names = service.level_names(session)
    return [
        service.alarm_out(session, a, names)
        for a in service.list_alarms(session, principal, open_only=open_only, limit=LIST_LIMIT)
    ]


def signature(rows: list[dict[str, Any]]) -> tuple[tuple[Any, ...], ...]:
    """What the list shows: it is re-rendered only when this changes."""
    return tuple((r["id"], r["status"], r["level"], r["repeat_count"], r["version"]) for r in rows)


def threshold_lines(rule: dict[str, Any] | None, names: dict[int, str]) -> list[dict[str, Any]]:
    """ECharts markLine data of a rule's value thresholds (none for rates and offline)."""
    if not rule:
        return []
    out: list[dict[str, Any]] = []
    for lv in rule.get("levels") or []:
        level = int(lv.get("level", 0))
        colour = LEVEL_COLOURS.get(level, "#d32f2f")
        label = names.get(level, f"{level}级")
        keys: tuple[str, ...] = ()
        if rule.get("comparator") in ("above", "below"):
            keys = ("value",)
        elif rule.get("comparator") == "outside":
            keys = ("low", "high")
        for k in keys:
            if lv.get(k) is None:
                continue
            out.append(
                {
                    "yAxis": float(lv[k]),
                    "name": label,
                    "label": {"formatter": f"{label} {lv[k]}"},
                    "lineStyle": {"color": colour, "type": "dashed"},
                }
            )
    return out


def chart_options(detail: dict[str, Any], names: dict[int, str]) -> dict[str, Any]:
    lines = threshold_lines(detail.get("rule"), names)
    return {
        "title": {
            "text": f"{detail.get('device_code') or ''} · {detail.get('measurand') or ''}",
            "textStyle": {"fontSize": 13},
        },
        "tooltip": {"trigger": "axis"},
        "grid": {"top": 40, "left": 50, "right": 90, "bottom": 30},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "scale": True},
        "series": [
            {
                "name": detail.get("measurand") or "",
                "type": "line",
                "showSymbol": False,
                "data": detail.get("readings") or [],
                "markLine": {"symbol": "none", "data": lines},
            }
        ],
    }


# --------------------------------------------------------------------------- pages


def _base_map(lat: float, lon: float, zoom: int = 12) -> ui.leaflet:
    st = get_settings()
    m = (
        ui.leaflet(center=(lat, lon), zoom=zoom, options={"zoomSnap": 1})
        .classes("w-full")
        .style("height: 62vh; background: #eef2f5")
    )
    m.clear_layers()  # no internet tiles unless a basemap is configured
    if st.basemap_url:
        m.tile_layer(
            url_template=st.basemap_url,
            options={"attribution": st.basemap_attribution, "maxZoom": 19},
        )
    return m


def _monitoring_page() -> None:
    p = auth.require(*ROLES)
    if p is None:
        return
    with get_db().session() as s:
        layer = service.map_layer(s, p)
        stats = service.device_stats(s, p)
    feats = layer["features"]
    if feats:
        lat = sum(f["geometry"]["coordinates"][1] for f in feats) / len(feats)
        lon = sum(f["geometry"]["coordinates"][0] for f in feats) / len(feats)
    else:
        lat, lon = 33.85, 115.78
    state: dict[str, Any] = {"sig": None, "map_sig": None, "markers": []}
    with (
        frame(t("城市生命线监测", "Lifeline monitoring"), p),
        ui.row().classes("w-full no-wrap items-start gap-3"),
    ):
        with ui.column().classes("col-7 gap-2"):
            with ui.row().classes("items-center gap-3"):
                for key, colour in STATUS_COLOURS.items():
                    ui.label(f"● {DEVICE_STATUSES.get(key, key)}").style(f"color: {colour}")
                for level, colour in LEVEL_COLOURS.items():
                    ui.label(f"● {level}{t('级报警', ' alarm')}").style(f"color: {colour}")
            m = tid(_base_map(lat, lon), "monitoring-map")
            with ui.row().classes("gap-2"):
                by_status = stats["by_status"]
                for key, label in DEVICE_STATUSES.items():
                    with ui.card().classes("q-pa-sm items-center").style("min-width: 6rem"):
                        ui.label(label).classes("text-caption text-grey-7")
                        tid(
                            ui.label(str(by_status.get(key, 0))).classes("text-h6"),
                            f"devices-{key}",
                        )
                with ui.card().classes("q-pa-sm items-center").style("min-width: 6rem"):
                    ui.label(t("设施", "Facilities")).classes("text-caption text-grey-7")
                    tid(ui.label(str(len(feats))).classes("text-h6"), "facilities-count")
        with ui.column().classes("col-5 gap-2"):
            with ui.row().classes("items-center w-full"):
                ui.label(t("报警列表", "Alarms")).classes("text-h6")
                ui.space()
                show_all = tid(
                    ui.switch(t("含已处理", "Include closed"), value=False), "alarms-all"
                )
            alarm_box = tid(ui.column().classes("w-full gap-1"), "alarm-list")

    def draw_map(features: list[dict[str, Any]]) -> None:
        sig = tuple((f["properties"]["id"], facility_colour(f["properties"])) for f in features)
        if sig == state["map_sig"]:
            return
        state["map_sig"] = sig
        for old in state["markers"]:
            if old in m.layers:
                m.remove_layer(old)
        state["markers"] = []
        for f in features:
            lon_, lat_ = f["geometry"]["coordinates"]
            colour = facility_colour(f["properties"])
            state["markers"].append(
                m.generic_layer(
                    name="circleMarker",
                    args=[
                        [lat_, lon_],
                        {
                            "radius": 8 if f["properties"].get("alarm_level") else 6,
                            "color": colour,
                            "fillColor": colour,
                            "fillOpacity": 0.8,
                            "weight": 2,
                        },
                    ],
                )
            )

    def render_alarms(rows: list[dict[str, Any]]) -> None:
        alarm_box.clear()
        with alarm_box:
            if not rows:
                tid(ui.label(t("暂无报警", "No alarms")).classes("text-grey-6"), "no-alarms")
            for r in rows:
                colour = LEVEL_COLOURS.get(int(r["level"]), "#d32f2f")
                with (
                    tid(
                        ui.card()
                        .classes("w-full q-pa-sm")
                        .style(f"border-left: 4px solid {colour}"),
                        f"alarm-card-{r['id']}",
                    ),
                    ui.row().classes("w-full items-center no-wrap gap-2"),
                ):
                    with ui.column().classes("gap-0 col"):
                        tid(
                            ui.link(
                                f"#{r['id']} {r['facility_name'] or ''} · {r['rule_name'] or ''}",
                                f"/monitoring/alarms/{r['id']}",
                            ),
                            f"alarm-{r['id']}",
                        )
                        ui.label(
                            f"{r['device_code'] or ''} · {r['measurand'] or ''} = "
                            f"{r['last_value'] if r['last_value'] is not None else r['trigger_value']}"
                            f" · {local(r['raised_at'])}"
                            + (f" · ×{r['repeat_count']}" if r["repeat_count"] else "")
                        ).classes("text-caption text-grey-8")
                    ui.label(r["level_name"] or f"{r['level']}级").style(f"color: {colour}")
                    tid(
                        ui.label(r["status_name"]).classes(
                            ALARM_STATUS_CLASSES.get(r["status"], "")
                        ),
                        f"alarm-status-{r['id']}",
                    )

    def poll(force: bool = False) -> None:
        with get_db().session() as s:
            rows = alarm_rows(s, p, open_only=not show_all.value)
            sig = signature(rows)
            changed = force or sig != state["sig"]
            features = service.map_layer(s, p)["features"] if changed else None
        if not changed:
            return
        state["sig"] = sig
        render_alarms(rows)
        if features is not None:
            draw_map(features)

    draw_map(feats)
    poll(force=True)
    show_all.on_value_change(lambda _e: poll(force=True))
    ui.timer(POLL_SECONDS, poll, immediate=False)


def _alarm_page(alarm_id: int) -> None:
    p = auth.require(*ROLES)
    if p is None:
        return
    with frame(t("报警详情", "Alarm"), p):
        content = ui.column().classes("w-full gap-3")

    def render() -> None:
        content.clear()
        with get_db().session() as s:
            try:
                d = service.alarm_detail(s, p, alarm_id)
            except NotFound:
                d = None
            names = service.level_names(s)
        with content:
            if d is None:
                tid(
                    ui.label(t("报警不存在或不在您的管辖范围内", "No such alarm in your area")),
                    "not-found",
                )
                return
            _alarm_view(d, names)
            if d["status"] == "pending" and p.has_role("monitor", "admin"):
                _judge_form(p, d, render)

    def _alarm_view(d: dict[str, Any], names: dict[int, str]) -> None:
        colour = LEVEL_COLOURS.get(int(d["level"]), "#d32f2f")
        with ui.card().classes("w-full").style(f"border-left: 6px solid {colour}"):
            with ui.row().classes("items-center gap-3"):
                ui.label(f"#{d['id']} {d.get('facility_name') or ''}").classes("text-h6")
                ui.label(d.get("level_name") or f"{d['level']}级").style(f"color: {colour}")
                tid(ui.label(d["status_name"]).classes("text-subtitle1"), "alarm-status")
            rows = [
                (t("规则", "Rule"), d.get("rule_name")),
                (t("设备", "Device"), d.get("device_code")),
                (t("监测量", "Measurand"), d.get("measurand")),
                (t("触发值", "Trigger value"), d.get("trigger_value")),
                (t("最新值", "Latest value"), d.get("last_value")),
                (t("报警时间", "Raised"), local(d.get("raised_at"))),
                (t("重复次数", "Repeats"), d.get("repeat_count")),
                (t("研判人", "Judged by"), d.get("judged_by") or "—"),
                (t("研判意见", "Judgement"), d.get("judgement_note") or "—"),
            ]
            for label, value in rows:
                with ui.row().classes("w-full gap-2"):
                    ui.label(label).classes("w-28 text-grey-7")
                    tid(ui.label("—" if value is None else str(value)), f"alarm-{label}")
            if d.get("escalated"):
                ui.label(t("已超时升级", "Escalated (not judged in time)")).classes("text-negative")
            case = d.get("case")
            if case:
                tid(
                    ui.link(
                        f"{t('紧急案件', 'Urgent case')} {case['number']}",
                        f"/cases/{case['id']}",
                    ),
                    "alarm-case",
                )
        tid(ui.echart(chart_options(d, names)).classes("w-full h-80"), "alarm-chart")
        with ui.card().classes("w-full"):
            ui.label(t("处理记录", "History")).classes("text-subtitle1")
            for e in d.get("events") or []:
                ui.label(
                    f"{local(e['at'])} · {e['action']} · {e.get('actor') or ''}"
                    + (f" · {e['note']}" if e.get("note") else "")
                ).classes("text-body2")

    render()


def _judge_form(p: Principal, d: dict[str, Any], done: Any) -> None:
    """研判: confirm (→ 预警 + urgent case) or reject as false (误报) with a reason."""
    with tid(ui.card().classes("w-full max-w-xl"), "judge-form"):
        ui.label(t("研判", "Judgement")).classes("text-subtitle1")
        choice = tid(
            ui.radio(
                {"confirm": t("确认报警", "Confirm"), "reject": t("误报", "False alarm")},
                value="confirm",
            ).props("inline"),
            "judge-choice",
        )
        note = tid(
            ui.textarea(t("研判意见 / 误报原因", "Note / reason for a false alarm")).props(
                "outlined autogrow"
            ),
            "judge-note",
        )
        error = tid(ui.label("").classes("text-negative"), "judge-error")
        error.visible = False

        def submit() -> None:
            confirm = choice.value == "confirm"
            text = (note.value or "").strip()
            if not confirm and not text:
                error.text = t("误报须填写原因", "A false alarm needs a reason")
                error.visible = True
                return
            try:
                with write_session() as s:
                    service.judge(s, p, int(d["id"]), confirm, text or None, d["version"])
            except DomainError as exc:
                error.text = str(exc)
                error.visible = True
                ui.notify(str(exc), type="negative")
                return
            ui.notify(
                t("已确认, 已发布预警", "Confirmed: warning issued")
                if confirm
                else t("已判定为误报", "Rejected as false"),
                type="positive",
            )
            done()

        tid(ui.button(t("提交研判", "Submit"), on_click=submit).props("color=primary"), "judge")


def register() -> None:
    nav_item("/monitoring", "生命线监测", "Lifeline monitoring", "sensors", *ROLES)
    ui.page("/monitoring")(_monitoring_page)

    @ui.page("/monitoring/alarms/{alarm_id}")
    def alarm_page(alarm_id: int) -> None:
        _alarm_page(alarm_id)

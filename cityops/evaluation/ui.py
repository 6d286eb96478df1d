"""Console evaluation pages: the weights (/admin/weights, admin) and the rankings with the
红黑榜 (/evaluation/rankings, leaders, shift leaders, admins) from
:mod:`cityops.evaluation.service`."""

from __future__ import annotations

from datetime import date
from typing import Any

from nicegui import ui

from cityops.cases.ui import show_error, write_session
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.evaluation import service

GROUP_LABELS = {
    "unit": "专业部门",
    "region": "区域（街道/社区）",
    "inspector": "监督员",
    "operator": "受理员",
    "shift_leader": "值班长",
    "dispatcher": "派遣员",
}
ENTITY_LABELS = {
    "unit": "专业部门",
    "street": "街道",
    "community": "社区",
    "inspector": "监督员",
    "operator": "受理员",
    "shift_leader": "值班长",
    "dispatcher": "派遣员",
}
VIEWERS = ("leader", "shift_leader", "admin")


def _weights_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("考核权重", "Evaluation weights"), p):
        ui.label(
            t(
                "各岗位/对象综合评价中每项指标的权重（≥0）。保存后立即用于排名。",
                "Weight of each indicator in the composite value (≥ 0); used at once.",
            )
        ).classes("text-grey-8")
        with get_db().session() as s:
            weights = service.get_weights(s)
        inputs: dict[str, dict[str, Any]] = {}
        with ui.row().classes("gap-4 items-start"):
            for group in service.WEIGHT_GROUPS:
                with tid(ui.card().classes("w-72"), f"weights-{group}"):
                    ui.label(GROUP_LABELS.get(group, group)).classes("text-subtitle1")
                    inputs[group] = {}
                    for key, value in weights[group].items():
                        inputs[group][key] = tid(
                            ui.number(key, value=value, min=0).classes("w-full"),
                            f"weight-{group}-{key}",
                        )
        error = tid(ui.label("").classes("text-negative"), "weights-error")
        error.visible = False

        def save() -> None:
            value = {
                g: {k: (el.value if el.value is not None else -1) for k, el in fields.items()}
                for g, fields in inputs.items()
            }
            try:
                with write_session() as s:
                    service.set_weights(s, value)
            except DomainError as exc:
                show_error(exc, error)
                return
            error.visible = False
            ui.notify(t("权重已保存", "Weights saved"), type="positive")

        tid(
            ui.button(t("保存权重", "Save weights"), on_click=save).props("color=primary"),
            "weights-save",
        )


def _rankings_page() -> None:
    p = auth.require(*VIEWERS)
    if p is None:
        return
    with frame(t("考核排名", "Rankings"), p):
        with ui.row().classes("items-end gap-2"):
            entity = tid(
                ui.select(
                    {e: ENTITY_LABELS.get(e, e) for e in service.RANK_ENTITIES},
                    value="unit",
                    label=t("对象", "Entity"),
                ).classes("w-40"),
                "rank-entity",
            )
            period = tid(
                ui.input(
                    t("期间（2026-11、2026-W47、2026-Q4、2026）", "Period"),
                    value=date.today().strftime("%Y-%m"),
                ),
                "rank-period",
            )
            tid(ui.button(t("查询", "Show"), on_click=lambda: table.refresh()), "rank-go")

        @ui.refreshable
        def table() -> None:
            try:
                with get_db().session() as s:
                    out = service.ranking(
                        s,
                        entity.value,
                        service.parse_period(period.value or ""),
                        scope_prefix=p.scope_region_code,
                    )
            except DomainError as exc:
                show_error(exc)
                return
            ui.label(f"{out['start']} — {out['end']}").classes("text-grey-7")
            with ui.row().classes("gap-4"):
                for key, zh, en, colour in (
                    ("red", "红榜", "Best", "text-red"),
                    ("black", "黑榜", "Worst", "text-black"),
                ):
                    with tid(ui.card().classes("w-72"), f"rank-{key}"):
                        ui.label(t(zh, en)).classes(f"text-subtitle1 {colour}")
                        for r in out[key]:
                            ui.label(
                                f"{r.get('name') or r.get('username') or r.get('code')}"
                                f" {r['composite']:.2f}"
                            )
            if not out["rows"]:
                tid(ui.label(t("本期没有数据", "No data for this period")), "rank-empty")
            for r in out["rows"]:
                with ui.row().classes("gap-3 w-full"):
                    ui.label(str(r["rank"] or "—")).classes("w-8")
                    ui.label(str(r.get("name") or r.get("username") or r.get("code"))).classes(
                        "w-56"
                    )
                    ui.label("—" if r["composite"] is None else f"{r['composite']:.2f}").classes(
                        "w-16"
                    )
                    ui.label(r["grade"] or "").classes("w-8")
                    ch = r["change"]
                    ui.label("" if ch is None else f"{ch:+.2f}").classes(
                        "text-positive" if (ch or 0) >= 0 else "text-negative"
                    )

        table()


def register() -> None:
    nav_item("/evaluation/rankings", "考核排名", "Rankings", "leaderboard", *VIEWERS)
    nav_item("/admin/weights", "考核权重", "Evaluation weights", "tune", "admin")
    ui.page("/admin/weights")(_weights_page)
    ui.page("/evaluation/rankings")(_rankings_page)

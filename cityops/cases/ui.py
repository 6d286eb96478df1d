"""Console pages of the closed loop: worklists (/work), the case page (/cases/{id}), new
cases (/cases/new) and the dispatch rules (/admin/dispatch-rules).

Pages are thin: they call :mod:`cityops.cases.service` / :mod:`cityops.cases.queries` with the
logged-in user's :class:`~cityops.core.security.Principal`, so role, scope, stage and version
checks are the service's; a refusal (``DomainError``) is shown with ``ui.notify`` and on the
form. Photos are served by ``/console/attachments/{id}``, which checks the console user's
access to the case like the API does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import shapely
from fastapi import Response
from nicegui import app, events, ui
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.cases import dispatch_rules, queries, service
from cityops.cases.models import SOURCES, STAGES
from cityops.cases.storage import default_storage
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import local_time, tid, write_session
from cityops.core.db import get_db, utcnow
from cityops.core.errors import Conflict, DomainError, NotFound
from cityops.core.security import Principal
from cityops.core.settings import get_settings
from cityops.geo import service as geo_service
from cityops.geo.models import URGENCIES, Category, Grid, Region, Unit
from cityops.worktime import service as wt
from cityops.worktime.models import LIMIT_UNITS, UNIT_LABELS

#: Roles that have a worklist.
WORK_ROLES = ("operator", "shift_leader", "dispatcher", "handler", "leader", "inspector")
#: Roles that may open the new-case form (the channels each may use: service.SOURCE_ROLES).
NEW_CASE_ROLES = ("operator", "shift_leader", "leader")
PAGE_SIZE = 20
#: What a pending request waits for (shown on 待审批 cases).
PENDING_LABELS = {"return": "回退待审批", "extend": "延期待审批", "park": "挂账待审批"}


# --------------------------------------------------------------------------- shared helpers


def error_text(exc: DomainError) -> str:
    """A refusal as the user should read it (zh first; the service's detail after it)."""
    if isinstance(exc, Conflict) and "current_version" in exc.details:
        return (
            t(
                "案件已被他人修改，请刷新页面后重试",
                "The case was changed by someone else: reload the page and try again",
            )
            + f"（{exc.message}）"
        )
    head = {
        404: t("不存在或无权查看", "Not found or not yours to see"),
        403: t("无权操作", "Not allowed"),
        409: t("操作冲突", "Conflict"),
        422: t("输入有误", "Invalid input"),
    }.get(exc.status, t("操作失败", "Failed"))
    return f"{head}：{exc.message}"


def show_error(exc: DomainError, label: ui.label | None = None) -> None:
    text = error_text(exc)
    ui.notify(text, type="negative", multi_line=True)
    if label is not None:
        label.text = text
        label.visible = True


def local(ts: str | datetime | None) -> str:
    return local_time(ts)


def base_map(lat: float, lon: float, zoom: int = 17) -> ui.leaflet:
    """A Leaflet map without NiceGUI's default internet tiles: a tile layer only when the
    city configured one (``CITYOPS_BASEMAP_URL``), else a plain background."""
    m = ui.leaflet(center=(lat, lon), zoom=zoom).classes("w-full h-80")
    m.clear_layers()
    st = get_settings()
    if st.basemap_url:
        m.tile_layer(
            url_template=st.basemap_url,
            options={"attribution": st.basemap_attribution, "maxZoom": 20},
        )
    return m


def polygon_latlngs(geom_wkb: bytes) -> list[list[list[float]]]:
    g = shapely.from_wkb(geom_wkb)
    polys = list(g.geoms) if hasattr(g, "geoms") else [g]
    return [[[y, x] for x, y in p.exterior.coords] for p in polys]


def _fmt_minutes(minutes: float) -> str:
    m = round(minutes)
    h, m = divmod(m, 60)
    return t(f"{h}小时{m}分", f"{h} h {m} min")


def deadline_badge(clock: wt.WorkClock, item: dict[str, Any], now: datetime) -> tuple[str, str]:
    """(text, colour) of the countdown to the current stage deadline: green, yellow 临期,
    red 超期, with the remaining / overdue working time; grey while the clock is paused."""
    flags = item.get("flags") or {}
    if flags.get("pending_request") or flags.get("parked"):
        return t("计时暂停", "Clock paused"), "grey"  # 回退/延期/挂账 waits for a decision
    if not item.get("stage_deadline"):
        return t("无时限", "No limit"), "grey"
    due = datetime.fromisoformat(item["stage_deadline"])
    if now >= due:
        late = clock.elapsed(due, now, unit="working_minutes")
        return t("超期 ", "Overdue ") + _fmt_minutes(late), "red"
    left = clock.elapsed(now, due, unit="working_minutes")
    warn = item.get("stage_warn_at")
    if flags.get("near_due") or (warn and now >= datetime.fromisoformat(warn)):
        return t("临期 剩余", "Due soon, ") + _fmt_minutes(left), "orange"
    return t("剩余 ", "Left ") + _fmt_minutes(left), "green"


def unit_options(s: Session) -> dict[int, str]:
    return dict(
        s.execute(select(Unit.id, Unit.name).where(Unit.active.is_(True)).order_by(Unit.code)).all()
    )


def category_options(s: Session) -> dict[int, str]:
    """Enabled categories of the city's standard (and local ones) as "code name"."""
    std = geo_service.chosen_standard(s)
    rows = s.execute(
        select(Category.id, Category.code, Category.name, Category.kind)
        .where(Category.standard.in_([std, "local"]), Category.enabled.is_(True))
        .order_by(Category.kind, Category.code)
    ).all()
    kinds = {"component": t("部件", "component"), "matter": t("事项", "matter")}
    return {i: f"{code} {name}（{kinds.get(kind, kind)}）" for i, code, name, kind in rows}


# --------------------------------------------------------------------------- /work


def _build_filter(v: dict[str, Any], codes: dict[int, str]) -> queries.CaseFilter:
    return queries.CaseFilter(
        category=codes.get(v["category"]) if v.get("category") else None,
        source=v.get("source") or None,
        urgency=v.get("urgency") or None,
        region=v.get("region") or None,
        overdue=True if v.get("overdue") else None,
        text=(v.get("text") or "").strip() or None,
    )


def _work_page() -> None:
    p = auth.require(*WORK_ROLES)
    if p is None:
        return
    tabs = queries.work_tabs(p)
    with frame(t("工作台", "Worklist"), p):
        if not tabs:
            ui.label(t("您的角色没有待办工作", "Your roles have no worklist"))
            return
        now = utcnow()
        with get_db().session() as s:
            cats = category_options(s)
            cat_codes = dict(s.execute(select(Category.id, Category.code)).all())
            units = unit_options(s)
            regions = {
                code: f"{code} {name}"
                for code, name in s.execute(
                    select(Region.code, Region.name)
                    .where(Region.level.in_(("district", "street")))
                    .order_by(Region.code)
                )
                if p.scope_region_code is None
                or code.startswith(p.scope_region_code)
                or p.scope_region_code.startswith(code)
            }
        may_dispatch = bool(p.roles.intersection({"dispatcher", "shift_leader"}))
        state: dict[str, Any] = {
            "tab": tabs[0].key,
            "cursors": [None],
            "next": None,
            "selected": set(),
            "versions": {},
            "filters": {},
            "sort": "deadline",
        }

        with ui.row().classes("items-end gap-2 w-full"):
            f_text = tid(
                ui.input(t("搜索：编号/描述/地址", "Search: number/text/address")).props(
                    "dense clearable"
                ),
                "work-search",
            ).classes("w-64")
            f_cat = tid(
                ui.select(cats, label=t("类别", "Category"), with_input=True, clearable=True)
                .props("dense")
                .classes("w-56"),
                "work-category",
            )
            f_source = tid(
                ui.select(dict(SOURCES), label=t("来源", "Source"), clearable=True)
                .props("dense")
                .classes("w-36"),
                "work-source",
            )
            f_urg = tid(
                ui.select(list(URGENCIES), label=t("紧急程度", "Urgency"), clearable=True)
                .props("dense")
                .classes("w-28"),
                "work-urgency",
            )
            f_region = tid(
                ui.select(regions, label=t("区域", "Region"), with_input=True, clearable=True)
                .props("dense")
                .classes("w-48"),
                "work-region",
            )
            f_over = tid(ui.checkbox(t("只看超期", "Overdue only")), "work-overdue")
            f_sort = tid(
                ui.select(
                    {
                        "deadline": t("按时限", "By deadline"),
                        "-reported_at": t("最新上报", "Newest"),
                        "reported_at": t("最早上报", "Oldest"),
                        "-updated_at": t("最近更新", "Recently updated"),
                    },
                    value="deadline",
                    label=t("排序", "Sort"),
                )
                .props("dense")
                .classes("w-32"),
                "work-sort",
            )

            def apply() -> None:
                state["filters"] = {
                    "text": f_text.value,
                    "category": f_cat.value,
                    "source": f_source.value,
                    "urgency": f_urg.value,
                    "region": f_region.value,
                    "overdue": f_over.value,
                }
                state["sort"] = f_sort.value or "deadline"
                state["cursors"] = [None]
                listing.refresh()

            f_text.on("keydown.enter", apply)
            tid(ui.button(t("查询", "Search"), icon="search", on_click=apply), "work-apply")

        with get_db().session() as s:
            counts = {
                tab.key: queries.work_page(s, p, tab.key, queries.CaseFilter(), now, limit=1)[
                    "total"
                ]
                for tab in tabs
            }

        def switch(e: events.ValueChangeEventArguments) -> None:
            state["tab"] = e.value
            state["cursors"] = [None]
            state["selected"] = set()
            listing.refresh()

        tabbar = ui.tabs(value=tabs[0].key, on_change=switch)  # type: ignore[arg-type]
        with tid(tabbar, "work-tabs").classes("w-full"):
            for tab in tabs:
                tid(ui.tab(tab.key, label=f"{tab.label} ({counts[tab.key]})"), f"tab-{tab.key}")

        @ui.refreshable
        def listing() -> None:
            now = utcnow()
            try:
                with get_db().session() as s:
                    page = queries.work_page(
                        s,
                        p,
                        state["tab"],
                        _build_filter(state["filters"], cat_codes),
                        now,
                        cursor=state["cursors"][-1],
                        limit=PAGE_SIZE,
                        sort=state["sort"],
                    )
                    clock = wt.get_clock(s)
            except DomainError as exc:
                show_error(exc)
                return
            state["next"] = page["next_cursor"]
            state["versions"] = {i["id"]: i["version"] for i in page["items"]}
            bulk = state["tab"] == "dispatch" and may_dispatch
            tid(
                ui.label(t(f"共 {page['total']} 件", f"{page['total']} case(s)")),
                "work-total",
            ).classes("text-grey-7")
            if not page["items"]:
                tid(ui.label(t("暂无案件", "No cases")), "work-empty")
            for item in page["items"]:
                text, colour = deadline_badge(clock, item, now)
                with tid(ui.card().classes("w-full q-pa-sm"), f"row-{item['id']}"):
                    with ui.row().classes("items-center w-full gap-3 no-wrap"):
                        if bulk:

                            def pick(
                                e: events.ValueChangeEventArguments, cid: int = item["id"]
                            ) -> None:
                                (state["selected"].add if e.value else state["selected"].discard)(
                                    cid
                                )

                            tid(ui.checkbox(on_change=pick), f"select-{item['id']}")
                        tid(
                            ui.link(item["number"], f"/cases/{item['id']}"),
                            f"case-{item['id']}",
                        ).classes("text-weight-bold")
                        ui.badge(item["stage_label"] or item["stage"]).props("outline")
                        tid(ui.badge(text, color=colour), f"deadline-{item['id']}")
                        if item["flags"].get("supervised"):
                            ui.badge(t("督办", "Supervised"), color="purple")
                        pending = item["flags"].get("pending_request")
                        if pending:
                            tid(
                                ui.badge(PENDING_LABELS.get(pending, pending), color="deep-orange"),
                                f"pending-{item['id']}",
                            )
                        ui.label(item["category"] or "").classes("text-weight-medium")
                        ui.label(item["urgency"] or "")
                        ui.label(item["source_label"] or "").classes("text-grey-7")
                        ui.space()
                        ui.label(local(item["reported_at"])).classes("text-grey-7 text-caption")
                    ui.label(
                        f"{item['address'] or ''} · {(item['description'] or '')[:80]}"
                    ).classes("text-caption")
                    if item["lead_unit"]:
                        ui.label(t("主办：", "Lead unit: ") + item["lead_unit"]).classes(
                            "text-caption text-grey-8"
                        )
            with ui.row().classes("gap-2"):
                prev = tid(ui.button(t("上一页", "Previous"), on_click=back), "work-prev")
                prev.enabled = len(state["cursors"]) > 1
                nxt = tid(ui.button(t("下一页", "Next"), on_click=forward), "work-next")
                nxt.enabled = state["next"] is not None
            if bulk and page["items"]:
                with ui.row().classes("items-end gap-2"):
                    unit_sel = tid(
                        ui.select(units, label=t("派遣到单位", "Dispatch to unit"), with_input=True)
                        .props("dense")
                        .classes("w-72"),
                        "bulk-unit",
                    )
                    tid(
                        ui.button(
                            t("批量派遣", "Dispatch selected"),
                            icon="send",
                            on_click=lambda: bulk_dispatch(unit_sel.value),
                        ).props("color=primary"),
                        "bulk-dispatch",
                    )

        def back() -> None:
            if len(state["cursors"]) > 1:
                state["cursors"].pop()
                listing.refresh()

        def forward() -> None:
            if state["next"]:
                state["cursors"].append(state["next"])
                listing.refresh()

        def bulk_dispatch(unit_id: int | None) -> None:
            ids = sorted(state["selected"])
            if not ids:
                ui.notify(t("请先勾选案件", "Select cases first"), type="warning")
                return
            if unit_id is None:
                ui.notify(t("请选择派遣单位", "Choose a unit"), type="warning")
                return
            done, failed = [], []
            for cid in ids:
                try:
                    with write_session() as s:
                        c = service.perform(
                            s, p, cid, "dispatch", {"unit_id": unit_id}, state["versions"].get(cid)
                        )
                        done.append(c.number)
                except DomainError as exc:
                    failed.append(error_text(exc))
            if done:
                ui.notify(
                    t(f"已派遣 {len(done)} 件：", f"Dispatched {len(done)}: ") + "、".join(done),
                    type="positive",
                )
            for msg in failed:
                ui.notify(msg, type="negative", multi_line=True)
            state["selected"] = set()
            listing.refresh()

        listing()


# --------------------------------------------------------------------------- /cases/{id}

#: Form fields per action: (payload key, kind, zh label, en label).
FIELDS: dict[str, list[tuple[str, str, str, str]]] = {
    "accept": [("note", "text", "备注", "Note")],
    "reject": [("reason", "text", "不予受理理由", "Reason")],
    "verify": [
        ("confirmed", "bool", "是否属实", "Confirmed"),
        ("note", "text", "核实说明", "Note"),
        ("attachment_ids", "photos", "核实照片", "Photos"),
    ],
    "file": [("note", "text", "立案意见", "Note")],
    "void": [("reason", "text", "作废理由", "Reason")],
    "dispatch": [
        ("unit_id", "unit", "主办单位", "Lead unit"),
        ("co_unit_ids", "units", "协办单位", "Co-units"),
        ("note", "text", "派遣意见", "Note"),
    ],
    "sign": [],
    "handle": [
        ("note", "text", "处置说明", "What was done"),
        ("attachment_ids", "photos", "处置后照片", "Photos after"),
    ],
    "request_return": [("reason", "text", "回退理由", "Reason")],
    "request_extension": [
        ("amount", "number", "延期时长", "Amount"),
        ("unit", "limit_unit", "单位", "Unit"),
        ("reason", "text", "延期理由", "Reason"),
    ],
    "request_park": [("reason", "text", "挂账理由", "Reason")],
    "decide_return": [("approve", "bool", "同意回退", "Approve"), ("note", "text", "意见", "Note")],
    "decide_extension": [
        ("approve", "bool", "同意延期", "Approve"),
        ("note", "text", "意见", "Note"),
    ],
    "decide_park": [("approve", "bool", "同意挂账", "Approve"), ("note", "text", "意见", "Note")],
    "resume": [("note", "text", "备注", "Note")],
    "check": [
        ("passed", "bool", "核查通过", "Passed"),
        ("note", "text", "核查说明", "Note"),
        ("attachment_ids", "photos", "核查照片", "Photos"),
    ],
    "close": [
        ("close_type", "close_type", "结案类型", "Close type"),
        ("note", "text", "结案意见", "Note"),
    ],
    "supervise": [("note", "text", "督办意见", "Note")],
    "merge": [
        ("into_case", "text", "合并到案件编号", "Into case number"),
        ("note", "text", "备注", "Note"),
    ],
    "split": [("note", "text", "备注", "Note")],
    "reopen": [("note", "text", "重新核查理由", "Reason")],
}


def photo_upload(p: Principal, ids: list[int], marker: str, label: str) -> ui.upload:
    """An upload that stores each photo at once (queries.upload) and collects its id."""

    async def received(e: events.UploadEventArguments) -> None:
        data = await e.file.read()
        try:
            with write_session() as s:
                info = queries.upload(
                    s, p, default_storage(), e.file.name, e.file.content_type, data
                )
        except DomainError as exc:
            show_error(exc)
            return
        ids.append(int(info["id"]))
        ui.notify(t(f"已上传 {e.file.name}", f"Uploaded {e.file.name}"), type="positive")

    return tid(
        ui.upload(label=label, multiple=True, auto_upload=True, on_upload=received)
        .props('accept="image/*"')
        .classes("w-72"),
        marker,
    )


def _action_form(
    p: Principal,
    case_id: int,
    version: int,
    action: str,
    units: dict[int, str],
    done: Callable[[], Any],
    defaults: dict[str, Any] | None = None,
) -> None:
    spec = service.ACTIONS[action]
    values: dict[str, Any] = {}
    photos: list[int] = []
    with tid(ui.card().classes("w-full q-pa-sm"), f"action-{action}"):
        ui.label(spec.label).classes("text-subtitle1 text-weight-medium")
        for key, kind, zh, en in FIELDS.get(action, []):
            label = t(zh, en)
            marker = f"{action}-{key}"
            if kind == "text":
                values[key] = tid(ui.input(label).props("dense").classes("w-full"), marker)
            elif kind == "bool":
                values[key] = tid(
                    ui.radio({True: t("是", "Yes"), False: t("否", "No")}, value=True).props(
                        "inline"
                    ),
                    marker,
                )
                ui.label(label).classes("text-caption text-grey-7")
            elif kind == "unit":
                values[key] = tid(
                    ui.select(units, label=label, with_input=True).classes("w-72"), marker
                )
            elif kind == "units":
                values[key] = tid(
                    ui.select(units, label=label, multiple=True, with_input=True).classes("w-72"),
                    marker,
                )
            elif kind == "number":
                values[key] = tid(ui.number(label, min=0).classes("w-40"), marker)
            elif kind == "limit_unit":
                values[key] = tid(
                    ui.select(
                        {u: UNIT_LABELS[u] for u in LIMIT_UNITS}, value="working_days", label=label
                    ).classes("w-40"),
                    marker,
                )
            elif kind == "close_type":
                values[key] = tid(
                    ui.select(
                        ["正常", "超时", "差错", "特殊"], label=label, clearable=True
                    ).classes("w-40"),
                    marker,
                )
            elif kind == "photos":
                photo_upload(p, photos, marker, label)
            if defaults and key in defaults and key in values:
                values[key].value = defaults[key]
        error = tid(ui.label("").classes("text-negative"), f"error-{action}")
        error.visible = False

        def submit() -> None:
            payload: dict[str, Any] = {}
            for key, el in values.items():
                v = el.value
                if isinstance(v, str):
                    v = v.strip() or None
                if key == "amount" and v is not None:
                    v = int(v) if float(v).is_integer() else float(v)
                if v is not None and v != []:
                    payload[key] = v
            if photos:
                payload["attachment_ids"] = list(photos)
            try:
                with write_session() as s:
                    service.perform(s, p, case_id, action, payload, version)
            except DomainError as exc:
                show_error(exc, error)
                return
            ui.notify(t(f"{spec.label}：已完成", f"{spec.label}: done"), type="positive")
            done()

        tid(
            ui.button(spec.label, on_click=submit).props("color=primary"),
            f"do-{action}",
        )


def _gallery(attachments: list[dict[str, Any]]) -> None:
    purposes = {"before": t("处置前", "Before"), "after": t("处置后", "After")}
    photos = [a for a in attachments if (a["content_type"] or "").startswith("image/")]
    if not photos:
        ui.label(t("没有照片", "No photos")).classes("text-grey-7")
        return
    with ui.dialog() as dialog, ui.card():
        big = ui.image().classes("w-[70vw] max-w-4xl")
        ui.button(t("关闭", "Close"), on_click=dialog.close).props("flat")

    def enlarge(src: str) -> None:
        big.set_source(src)
        dialog.open()

    for purpose in ("before", "after", "check"):
        group = [a for a in photos if a["purpose"] == purpose]
        if not group:
            continue
        ui.label(purposes.get(purpose, t("核实/核查", "On-site check"))).classes("text-caption")
        with ui.row().classes("gap-2"):
            for a in group:
                src = f"/console/attachments/{a['id']}"
                tid(
                    ui.image(src)
                    .classes("w-32 h-24 cursor-pointer")
                    .on("click", lambda s=src: enlarge(s)),
                    f"photo-{a['id']}",
                )


def _case_page(case_id: int) -> None:
    p = auth.require()
    if p is None:
        return
    with frame(t("案件详情", "Case"), p):

        @ui.refreshable
        def body() -> None:
            now = utcnow()
            with get_db().session() as s:
                try:
                    case = service.load_case(s, p, case_id)
                except NotFound:
                    tid(
                        ui.label(
                            t(
                                "案件不存在或您无权查看",
                                "No such case, or you may not see it",
                            )
                        ).classes("text-negative text-h6"),
                        "not-found",
                    )
                    return
                d = queries.case_detail(s, p, case, now)
                clock = wt.get_clock(s)
                d["stage_warn_at"] = case.stage_warn_at.isoformat() if case.stage_warn_at else None
                grid = s.scalars(select(Grid).where(Grid.code == case.grid_code)).first()
                outline = polygon_latlngs(grid.geom) if grid is not None else []
                try:
                    nearby = geo_service.nearest_components(
                        s, case.lon, case.lat, radius_m=100.0, limit=10
                    )
                except DomainError:
                    nearby = []
                units = unit_options(s) if "dispatch" in d["actions"] else {}
                suggested = service.match_rule(s, case, now) if "dispatch" in d["actions"] else None
            badge, colour = deadline_badge(clock, d, now)
            with ui.row().classes("items-center gap-3"):
                tid(ui.label(d["number"]).classes("text-h5"), "case-number")
                tid(ui.badge(d["stage_label"] or d["stage"]), "case-stage")
                tid(ui.badge(badge, color=colour), "case-deadline")
                if d["flags"]["pending_request"]:
                    ui.badge(
                        PENDING_LABELS.get(d["flags"]["pending_request"], ""), color="deep-orange"
                    )
                if d["flags"]["supervised"]:
                    ui.badge(t("督办", "Supervised"), color="purple")
                ui.label(t("时限：", "Due: ") + local(d["stage_deadline"])).classes("text-grey-7")
            with ui.row().classes("w-full gap-4 no-wrap items-start"):
                with ui.card().classes("w-1/2"):
                    rows = [
                        (t("类别", "Category"), d["category"]),
                        (t("类型", "Type"), d["case_type_label"]),
                        (t("来源", "Source"), d["source_label"]),
                        (t("紧急程度", "Urgency"), d["urgency"]),
                        (t("描述", "Description"), d["description"]),
                        (t("地址", "Address"), d["address"]),
                        (t("网格", "Grid"), d["grid_code"]),
                        (t("坐标", "Position"), f"{d['lon']:.6f}, {d['lat']:.6f}"),
                        (t("主办单位", "Lead unit"), d["lead_unit"]),
                        (
                            t("协办单位", "Co-units"),
                            "、".join(u["name"] or "" for u in d["units"] if u["role"] == "co"),
                        ),
                        (t("上报人", "Reporter"), d["reporter"]["name"]),
                        (t("电话", "Phone"), d["reporter"]["phone"]),
                        (t("上报时间", "Reported"), local(d["reported_at"])),
                        (t("处置时限", "Handling due"), local(d["handle_deadline"])),
                        (
                            t("部件", "Component"),
                            (d["component"] or {}).get("code"),
                        ),
                        (
                            t("次数", "Counts"),
                            t(
                                f"延期 {d['counts']['extensions']}、回退 {d['counts']['returns']}、"
                                f"返工 {d['counts']['reworks']}、上报 {d['counts']['reports']}",
                                f"extensions {d['counts']['extensions']}, returns "
                                f"{d['counts']['returns']}, reworks {d['counts']['reworks']}, "
                                f"reports {d['counts']['reports']}",
                            ),
                        ),
                        (t("结案类型", "Close type"), d["close_type"]),
                        (t("终止原因", "End reason"), d["end_reason"]),
                        (t("版本", "Version"), str(d["version"])),
                    ]
                    for label, value in rows:
                        if value in (None, ""):
                            continue
                        with ui.row().classes("w-full no-wrap"):
                            ui.label(label).classes("w-24 text-grey-7 shrink-0")
                            ui.label(str(value))
                with ui.column().classes("w-1/2"):
                    m = tid(base_map(d["lat"], d["lon"]), "case-map")
                    for ring in outline:
                        m.generic_layer(
                            name="polygon", args=[ring, {"color": "#1976d2", "fill": False}]
                        )
                    for c in nearby:
                        m.generic_layer(
                            name="circleMarker",
                            args=[[c["lat"], c["lon"]], {"radius": 5, "color": "#2e7d32"}],
                        )
                    m.generic_layer(
                        name="circleMarker",
                        args=[[d["lat"], d["lon"]], {"radius": 9, "color": "#d32f2f"}],
                    )
                    if nearby:
                        ui.label(t("附近部件", "Nearby components")).classes("text-caption")
                        for c in nearby[:5]:
                            ui.label(
                                f"{c['code']} {c['category']['name']} · {c['distance_m']:.0f} m"
                                f" · {c['owner_unit'] or ''}"
                            ).classes("text-caption")
            ui.label(t("照片", "Photos")).classes("text-subtitle1")
            _gallery(d["attachments"])
            ui.label(t("可执行的操作", "What you can do")).classes("text-subtitle1")
            if not d["actions"]:
                tid(
                    ui.label(t("当前没有您可执行的操作", "Nothing for you to do now")), "no-actions"
                )
            for action in d["actions"]:
                defaults: dict[str, Any] = {}
                if action == "dispatch" and suggested is not None:
                    defaults = {
                        "unit_id": suggested[0] if suggested[0] in units else None,
                        "co_unit_ids": [u for u in suggested[1] if u in units],
                    }
                    ui.label(
                        t("派遣规则建议：", "The dispatch rules suggest: ")
                        + f"{units.get(suggested[0], suggested[0])}（{suggested[2]}）"
                    ).classes("text-caption text-grey-8")
                _action_form(
                    p, case_id, d["version"], action, units, lambda: body.refresh(), defaults
                )
            ui.label(t("办理过程", "Timeline")).classes("text-subtitle1")
            with tid(ui.timeline(side="right"), "timeline"):
                for h in d["history"]:
                    label = (
                        service.ACTIONS[h["action"]].label
                        if h["action"] in service.ACTIONS
                        else {
                            "report": "上报",
                            "merged_in": "合并入",
                            "rework": "返工",
                        }.get(h["action"], h["action"])
                    )
                    stage = STAGES.get(h["to_stage"] or "", h["to_stage"] or "")
                    ui.timeline_entry(
                        " · ".join(x for x in (h["unit"], h["note"]) if x) or "",
                        title=f"{label} → {stage}" if stage else label,
                        subtitle=f"{local(h['at'])} {h['actor'] or ''}",
                    )

        body()


# --------------------------------------------------------------------------- /cases/new


def _new_case_page() -> None:
    p = auth.require(*NEW_CASE_ROLES)
    if p is None:
        return
    sources = {k: v for k, v in SOURCES.items() if p.roles.intersection(service.SOURCE_ROLES[k])}
    with frame(t("新建案件", "New case"), p):
        if not sources:
            ui.label(t("您不能登记案件", "You may not register cases"))
            return
        with get_db().session() as s:
            cats = category_options(s)
            centre = s.execute(
                select(Grid.min_lon, Grid.min_lat, Grid.max_lon, Grid.max_lat).limit(1)
            ).first()
        lon0, lat0 = 123.43, 41.8
        if centre is not None:
            a, b, c, d = centre
            if a is not None and b is not None and c is not None and d is not None:
                lon0, lat0 = (a + c) / 2, (b + d) / 2
        photos: list[int] = []
        with ui.row().classes("w-full gap-4 no-wrap items-start"):
            with ui.column().classes("w-1/2 gap-2"):
                default = "hotline" if "hotline" in sources else next(iter(sources))
                source = tid(
                    ui.select(sources, value=default, label=t("来源", "Source")).classes("w-full"),
                    "new-source",
                )
                category = tid(
                    ui.select(
                        cats,
                        label=t("类别（可按名称或编码搜索）", "Category (search name or code)"),
                        with_input=True,
                    ).classes("w-full"),
                    "new-category",
                )
                urgency = tid(
                    ui.select(
                        list(URGENCIES),
                        label=t("紧急程度（默认按类别）", "Urgency"),
                        clearable=True,
                    ).classes("w-full"),
                    "new-urgency",
                )
                description = tid(
                    ui.textarea(t("问题描述", "Description")).classes("w-full"), "new-description"
                )
                address = tid(ui.input(t("地址", "Address")).classes("w-full"), "new-address")
                with ui.row().classes("w-full gap-2"):
                    name = tid(ui.input(t("来电人", "Caller")), "new-reporter")
                    phone = tid(ui.input(t("联系电话", "Phone")), "new-phone")
                photo_upload(p, photos, "new-photos", t("现场照片", "Photos"))
            with ui.column().classes("w-1/2 gap-2"):
                with ui.row().classes("items-end gap-2"):
                    query = tid(
                        ui.input(t("按地名查找（便民点、区域名称、网格编码）", "Find a place")),
                        "new-place-search",
                    ).classes("w-72")
                    tid(ui.button(t("查找", "Find"), on_click=lambda: find()), "new-place-find")
                places = ui.column().classes("gap-1")
                m = tid(base_map(lat0, lon0, 14), "new-map")
                with ui.row().classes("gap-2"):
                    lon = tid(ui.number(t("经度", "Longitude"), format="%.6f"), "new-lon")
                    lat = tid(ui.number(t("纬度", "Latitude"), format="%.6f"), "new-lat")
                located = tid(ui.label(t("尚未定位", "Not located yet")), "new-located")
                marker: list[Any] = []

                def place(x: float, y: float) -> None:
                    lon.value, lat.value = round(x, 7), round(y, 7)

                def show_location() -> None:
                    if lon.value is None or lat.value is None:
                        return
                    try:
                        with get_db().session() as s:
                            where = geo_service.locate(s, float(lon.value), float(lat.value))
                    except DomainError as exc:
                        located.text = error_text(exc)
                        located.classes(replace="text-negative")
                        return
                    parts = [where.get(k, {}) or {} for k in ("district", "street", "community")]
                    located.text = t("网格 ", "Grid ") + " · ".join(
                        [where["grid"]["code"], *(x.get("name") or "" for x in parts if x)]
                    )
                    located.classes(replace="text-positive")
                    for layer in marker:
                        m.remove_layer(layer)
                    marker.clear()
                    marker.append(
                        m.generic_layer(
                            name="circleMarker",
                            args=[[lat.value, lon.value], {"radius": 9, "color": "#d32f2f"}],
                        )
                    )

                lon.on_value_change(show_location)
                lat.on_value_change(show_location)
                m.on(
                    "map-click",
                    lambda e: place(e.args["latlng"]["lng"], e.args["latlng"]["lat"]),
                )

                def choose(f: dict[str, Any]) -> None:
                    place(f["lon"], f["lat"])
                    if not address.value:
                        address.value = (
                            f["detail"] if f["kind"] == "poi" and f["detail"] else f["name"]
                        )

                def find() -> None:
                    places.clear()
                    with get_db().session() as s:
                        found = queries.search_places(s, query.value or "")
                    with places:
                        if not found:
                            ui.label(t("没有找到", "Nothing found")).classes("text-grey-7")
                        for i, f in enumerate(found):
                            tid(
                                ui.button(
                                    f"{f['name']} {f['detail'] or ''}",
                                    on_click=lambda f=f: choose(f),
                                ).props("flat dense no-caps"),
                                f"place-{i}",
                            )

        error = tid(ui.label("").classes("text-negative"), "new-error")
        error.visible = False

        def submit() -> None:
            data: dict[str, Any] = {
                "source": source.value,
                "category_id": category.value,
                "urgency": urgency.value or None,
                "description": description.value,
                "address": (address.value or "").strip() or None,
                "lon": lon.value,
                "lat": lat.value,
                "reporter_name": (name.value or "").strip() or None,
                "reporter_phone": (phone.value or "").strip() or None,
                "attachment_ids": list(photos),
            }
            if category.value is None:
                show_error(
                    DomainError(t("请选择类别", "Choose a category"), field="category"), error
                )
                return
            try:
                with write_session() as s:
                    result = service.create_case(s, p, data)
                    case_id, number = result.case.id, result.case.number
                    dups = [c.number for c in result.duplicates]
            except DomainError as exc:
                show_error(exc, error)
                return
            ui.notify(t(f"已登记案件 {number}", f"Case {number} registered"), type="positive")
            if dups:
                ui.notify(
                    t("附近有同类未结案件：", "Possible duplicates nearby: ") + "、".join(dups),
                    type="warning",
                    multi_line=True,
                )
            ui.navigate.to(f"/cases/{case_id}")

        tid(ui.button(t("登记", "Register"), on_click=submit).props("color=primary"), "new-submit")


# --------------------------------------------------------------------------- dispatch rules


def _rules_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("派遣规则", "Dispatch rules"), p):
        with get_db().session() as s:
            units = unit_options(s)
            cats = category_options(s)
            codes = dict(s.execute(select(Category.id, Category.code)).all())

        @ui.refreshable
        def rules() -> None:
            with get_db().session() as s:
                items = dispatch_rules.list_rules(s)
            if not items:
                ui.label(t("还没有派遣规则：按类别的默认处置单位派遣", "No rules yet"))
            for r in items:
                with tid(ui.row().classes("items-center gap-3 w-full"), f"rule-{r['id']}"):
                    ui.label(f"#{r['id']} {r['name']}").classes("text-weight-medium")
                    ui.label(cats.get(r["category_id"], t("任意类别", "any category")))
                    ui.label(r["region_prefix"] or t("全市", "whole city"))
                    ui.label("→ " + (units.get(r["unit_id"]) or r["to_component"] or ""))
                    ui.label(t(f"优先级 {r['priority']}", f"priority {r['priority']}"))
                    if not r["active"]:
                        ui.badge(t("停用", "inactive"), color="grey")
                    tid(
                        ui.button(icon="delete", on_click=lambda rid=r["id"]: remove(rid)).props(
                            "flat dense"
                        ),
                        f"rule-delete-{r['id']}",
                    )

        def remove(rule_id: int) -> None:
            try:
                with write_session() as s:
                    dispatch_rules.delete_rule(s, rule_id)
            except DomainError as exc:
                show_error(exc)
            rules.refresh()

        with ui.card().classes("w-full"):
            ui.label(t("现有规则", "Rules")).classes("text-subtitle1")
            rules()
        with ui.card().classes("w-full"):
            ui.label(t("新增规则", "New rule")).classes("text-subtitle1")
            with ui.row().classes("items-end gap-2"):
                r_name = tid(ui.input(t("名称", "Name")), "rule-name")
                r_cat = tid(
                    ui.select(
                        cats, label=t("类别", "Category"), with_input=True, clearable=True
                    ).classes("w-64"),
                    "rule-category",
                )
                r_region = tid(ui.input(t("区域编码前缀", "Region code prefix")), "rule-region")
                r_unit = tid(
                    ui.select(units, label=t("派遣到", "Dispatch to"), with_input=True).classes(
                        "w-64"
                    ),
                    "rule-unit",
                )
                r_prio = tid(ui.number(t("优先级", "Priority"), value=100, min=0), "rule-priority")
            r_error = tid(ui.label("").classes("text-negative"), "rule-error")
            r_error.visible = False

            def add() -> None:
                data = {
                    "name": (r_name.value or "").strip() or t("未命名规则", "Unnamed rule"),
                    "active": True,
                    "priority": int(r_prio.value or 100),
                    "category_id": r_cat.value,
                    "region_prefix": (r_region.value or "").strip() or None,
                    "component_owner_unit_id": None,
                    "to_component": None,
                    "time_from": None,
                    "time_to": None,
                    "weekdays": None,
                    "unit_id": r_unit.value,
                    "co_unit_ids": [],
                }
                try:
                    with write_session() as s:
                        dispatch_rules.save_rule(s, None, data)
                except DomainError as exc:
                    show_error(exc, r_error)
                    return
                r_error.visible = False
                ui.notify(t("规则已保存", "Rule saved"), type="positive")
                rules.refresh()

            tid(ui.button(t("保存规则", "Save rule"), on_click=add), "rule-save")
        with ui.card().classes("w-full"):
            ui.label(t("测试：这个案件会派给谁？", "Which unit would get this?")).classes(
                "text-subtitle1"
            )
            with ui.row().classes("items-end gap-2"):
                q_cat = tid(
                    ui.select(cats, label=t("类别", "Category"), with_input=True).classes("w-64"),
                    "test-category",
                )
                q_lon = tid(ui.number(t("经度", "Longitude"), format="%.6f"), "test-lon")
                q_lat = tid(ui.number(t("纬度", "Latitude"), format="%.6f"), "test-lat")
                q_comp = tid(ui.input(t("部件编码（可选）", "Component code")), "test-component")
            result = tid(ui.label(""), "test-result")

            def probe() -> None:
                if q_cat.value is None or q_lon.value is None or q_lat.value is None:
                    result.text = t("请填写类别和位置", "Give a category and a position")
                    return
                try:
                    with get_db().session() as s:
                        out = dispatch_rules.which_unit(
                            s,
                            {
                                "category_code": codes[q_cat.value],
                                "lon": float(q_lon.value),
                                "lat": float(q_lat.value),
                                "component_code": (q_comp.value or "").strip() or None,
                            },
                        )
                except DomainError as exc:
                    result.text = error_text(exc)
                    return
                if out["unit"] is None:
                    result.text = t(
                        f"没有匹配的规则：进入派遣员的待派遣（网格 {out['grid']}）",
                        f"No rule matches: goes to the dispatcher (grid {out['grid']})",
                    )
                else:
                    co = "、".join(u["name"] or "" for u in out["co_units"])
                    result.text = (
                        t("派遣到：", "Goes to: ")
                        + f"{out['unit']['name']}"
                        + (t(f"，协办：{co}", f", co-units: {co}") if co else "")
                        + f"（{out['why']}；{t('网格', 'grid')} {out['grid']}）"
                    )

            tid(ui.button(t("测试", "Test"), on_click=probe), "test-run")


# --------------------------------------------------------------------------- registration


def register() -> None:
    nav_item("/work", "工作台", "Worklist", "inbox", *WORK_ROLES)
    nav_item("/cases/new", "新建案件", "New case", "add_circle", *NEW_CASE_ROLES)
    nav_item("/admin/dispatch-rules", "派遣规则", "Dispatch rules", "alt_route", "admin")

    @app.get("/console/attachments/{attachment_id}", include_in_schema=False)
    def attachment(attachment_id: int) -> Response:
        """A case photo for the console user (same access check as the API)."""
        p = auth.current()
        if p is None:
            return Response(status_code=401)
        try:
            with get_db().session() as s:
                att, data = queries.read_attachment(s, p, default_storage(), attachment_id)
                content_type = att.content_type
        except DomainError as exc:
            return Response(status_code=exc.status)
        return Response(data, media_type=content_type, headers={"Cache-Control": "private"})

    ui.page("/work")(_work_page)
    ui.page("/cases/new")(_new_case_page)

    @ui.page("/cases/{case_id}")
    def case_page(case_id: int) -> None:
        _case_page(case_id)

    ui.page("/admin/dispatch-rules")(_rules_page)

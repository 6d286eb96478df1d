"""Console pages of the evaluators in the field.

* ``/review`` and ``/review/{assignment id}`` for third-party reviewers (第三方考评员): the closed
  cases drawn for them (reporter's name and phone masked by the service) and the rating form —
  满意 / 基本满意 / 不满意 with a comment, an optional photo and, for 不满意, the choice to send
  the case back to 核查 (重新核查). Another reviewer's assignment is "not found".
* ``/evaluation/tasks`` and ``/evaluation/tasks/{task id}`` for comprehensive-evaluation
  evaluators (综合评价考评员): their tasks and the site inspection (实地考察) record form —
  indicator, region, score, note, photo and location.

The logic is :mod:`cityops.evaluation.review` and :mod:`cityops.evaluation.comprehensive`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from nicegui import events, ui
from sqlalchemy.orm import Session

from cityops.cases import queries
from cityops.cases.storage import default_storage
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import local_time, tid, write_session
from cityops.core.db import get_db
from cityops.core.errors import DomainError, Forbidden, NotFound
from cityops.core.security import Principal
from cityops.evaluation import comprehensive as ce
from cityops.evaluation import review

REVIEW_ROLES = ("reviewer",)
TASK_ROLES = ("evaluator", "leader", "admin")


def local(ts: str | datetime | None) -> str:
    return local_time(ts)


def _photo(p: Principal, holder: dict[str, Any], marker: str) -> ui.upload:
    """One photo, stored at once as an unbound upload of ``p``; its id goes to ``holder``."""

    async def received(e: events.UploadEventArguments) -> None:
        data = await e.file.read()
        try:
            with write_session() as s:
                info = queries.upload(
                    s, p, default_storage(), e.file.name, e.file.content_type, data
                )
        except DomainError as exc:
            ui.notify(str(exc), type="negative")
            return
        holder["attachment_id"] = int(info["id"])
        if info.get("exif_lon") is not None and info.get("exif_lat") is not None:
            holder["exif"] = (info["exif_lon"], info["exif_lat"])
        ui.notify(t(f"已上传 {e.file.name}", f"Uploaded {e.file.name}"), type="positive")

    return tid(
        ui.upload(label=t("照片（可选）", "Photo (optional)"), auto_upload=True, on_upload=received)
        .props('accept="image/*"')
        .classes("w-72"),
        marker,
    )


def _field(label: str, value: Any, marker: str | None = None) -> None:
    with ui.row().classes("w-full gap-2 no-wrap"):
        ui.label(label).classes("w-24 text-grey-7")
        v = ui.label("—" if value in (None, "") else str(value)).classes("col")
        if marker:
            tid(v, marker)


# --------------------------------------------------------------------------- reviewers


def _case_card(a: dict[str, Any]) -> None:
    c = a["case"]
    _field(t("案件编号", "Case"), c["number"], f"case-number-{a['id']}")
    _field(t("类别", "Category"), c["category"])
    _field(t("地址", "Address"), c["address"])
    _field(t("问题描述", "Description"), c["description"])
    _field(t("主办单位", "Lead unit"), c["lead_unit"])
    _field(t("上报时间", "Reported"), local(c["reported_at"]))
    _field(t("结案时间", "Closed"), local(c["closed_at"]))
    _field(t("当前阶段", "Stage"), c["stage_label"])
    rep = c["reporter"]
    _field(
        t("上报人", "Reporter"),
        f"{rep.get('name') or '—'} {rep.get('phone') or ''}".strip(),
        f"reporter-{a['id']}",
    )


def _review_list_page() -> None:
    p = auth.require(*REVIEW_ROLES)
    if p is None:
        return
    with frame(t("第三方考评", "Third-party review"), p):
        with get_db().session() as s:
            try:
                rows = review.my_assignments(s, p)
            except Forbidden as exc:
                tid(ui.label(str(exc)).classes("text-negative"), "not-registered")
                return
        todo = [a for a in rows if a["rated_at"] is None]
        ui.label(
            t(f"待评价 {len(todo)} 件，共 {len(rows)} 件", f"{len(todo)} to rate of {len(rows)}")
        ).classes("text-subtitle1")
        if not rows:
            tid(ui.label(t("暂无分配的案件", "No cases assigned")).classes("text-grey-6"), "none")
        for a in rows:
            with tid(ui.card().classes("w-full max-w-3xl"), f"assignment-{a['id']}"):
                with ui.row().classes("items-center gap-3 w-full"):
                    tid(
                        ui.link(
                            f"{a['case']['number']} · {a['case']['category'] or ''}",
                            f"/review/{a['id']}",
                        ),
                        f"assignment-link-{a['id']}",
                    )
                    ui.label(a["round"] or "").classes("text-caption text-grey-7")
                    ui.space()
                    tid(
                        ui.label(a["rating"] or t("待评价", "To rate")).classes(
                            "text-positive" if a["rating"] else "text-orange"
                        ),
                        f"assignment-rating-{a['id']}",
                    )
                ui.label(
                    f"{a['case']['address'] or ''} · {a['case']['description'] or ''}"
                ).classes("text-body2")
                rep = a["case"]["reporter"]
                tid(
                    ui.label(
                        f"{t('上报人', 'Reporter')} {rep.get('name') or '—'} {rep.get('phone') or ''}"
                    ).classes("text-caption text-grey-8"),
                    f"reporter-{a['id']}",
                )


def _review_page(assignment_id: int) -> None:
    p = auth.require(*REVIEW_ROLES)
    if p is None:
        return
    with frame(t("案件评价", "Rate a case"), p):
        content = ui.column().classes("w-full max-w-3xl gap-3")

    def render() -> None:
        content.clear()
        with get_db().session() as s:
            try:
                a = review.my_assignment(s, p, assignment_id)
            except (NotFound, Forbidden):
                a = None
        with content:
            if a is None:
                tid(ui.label(t("没有这项考评任务", "No such review assignment")), "not-found")
                return
            with ui.card().classes("w-full"):
                _case_card(a)
                photos = a.get("photos") or []
                if photos:
                    ui.label(t(f"处置照片 {len(photos)} 张", f"{len(photos)} photos")).classes(
                        "text-caption"
                    )
            if a["rated_at"] is not None:
                with tid(ui.card().classes("w-full"), "rated"):
                    _field(t("评价", "Rating"), a["rating"], "rated-rating")
                    _field(t("意见", "Comment"), a["comment"])
                    _field(t("评价时间", "Rated"), local(a["rated_at"]))
                    if a["reopened"]:
                        tid(
                            ui.label(t("已退回重新核查", "Sent back for checking")),
                            "rated-reopened",
                        )
                    if a.get("reopen_error"):
                        ui.label(a["reopen_error"]).classes("text-negative")
                return
            _rating_form(a)

    def _rating_form(a: dict[str, Any]) -> None:
        holder: dict[str, Any] = {}
        with tid(ui.card().classes("w-full"), "rating-form"):
            ui.label(t("评价", "Your rating")).classes("text-subtitle1")
            rating = tid(
                ui.radio(list(review.RATINGS), value="满意").props("inline"), "rating-choice"
            )
            comment = tid(
                ui.textarea(t("意见（不满意须填写）", "Comment (needed for 不满意)")).props(
                    "outlined autogrow"
                ),
                "rating-comment",
            )
            reopen = tid(
                ui.checkbox(t("退回重新核查", "Send the case back for checking")), "rating-reopen"
            )
            reopen.bind_visibility_from(rating, "value", value="不满意")
            _photo(p, holder, "rating-photo")
            error = tid(ui.label("").classes("text-negative"), "rating-error")
            error.visible = False

            def submit() -> None:
                try:
                    with write_session() as s:
                        review.rate(
                            s,
                            p,
                            assignment_id,
                            str(rating.value),
                            comment.value or None,
                            holder.get("attachment_id"),
                            bool(reopen.value) and rating.value == "不满意",
                        )
                except DomainError as exc:
                    error.text = str(exc)
                    error.visible = True
                    ui.notify(str(exc), type="negative")
                    return
                ui.notify(t("评价已提交", "Rating saved"), type="positive")
                render()

            tid(ui.button(t("提交评价", "Submit"), on_click=submit).props("color=primary"), "rate")

    render()


# --------------------------------------------------------------------------- evaluators


def _tasks_page() -> None:
    p = auth.require(*TASK_ROLES)
    if p is None:
        return
    with frame(t("综合评价任务", "Evaluation tasks"), p):
        with get_db().session() as s:
            tasks = ce.list_tasks(s, p)
        if not tasks:
            tid(ui.label(t("暂无评价任务", "No evaluation tasks")).classes("text-grey-6"), "none")
        for task in tasks:
            with tid(ui.card().classes("w-full max-w-3xl"), f"task-{task['id']}"):
                with ui.row().classes("items-center gap-3 w-full"):
                    tid(
                        ui.link(task["name"], f"/evaluation/tasks/{task['id']}"),
                        f"task-link-{task['id']}",
                    )
                    ui.space()
                    ui.label(
                        t("进行中", "Open") if task["status"] == "open" else t("已结束", "Closed")
                    )
                ui.label(
                    f"{task['period_start']} – {task['period_end']} · "
                    + "、".join(r["name"] or r["code"] for r in task["regions"])
                ).classes("text-body2")
                tid(
                    ui.label(f"{t('记录', 'Records')} {task['records']}").classes("text-caption"),
                    f"task-records-{task['id']}",
                )


def _site_leaves(session: Session) -> dict[str, str]:
    tree = ce.load_tree(session)
    return {
        n.code: f"{n.code} {n.name}"
        for n, _ in tree.walk()
        if n.source == "site_inspection" and not tree.kids(n.id)
    }


def _task_page(task_id: int) -> None:
    p = auth.require(*TASK_ROLES)
    if p is None:
        return
    with frame(t("实地考察记录", "Site inspections"), p):
        content = ui.column().classes("w-full max-w-3xl gap-3")

    def render() -> None:
        content.clear()
        with get_db().session() as s:
            try:
                task = ce.task_out(s, ce.task_for(s, p, task_id))
                records = ce.list_records(s, p, task_id)
            except NotFound:
                task = None
                records = []
            leaves = _site_leaves(s)
        with content:
            if task is None:
                tid(ui.label(t("没有这个评价任务", "No such evaluation task")), "not-found")
                return
            ui.label(task["name"]).classes("text-h6")
            ui.label(f"{task['period_start']} – {task['period_end']}").classes("text-caption")
            if task["status"] == "open" and (p.has_role("evaluator") or p.is_admin):
                _inspection_form(task, leaves)
            with tid(ui.card().classes("w-full"), "records"):
                ui.label(t("已录入的记录", "Records")).classes("text-subtitle1")
                if not records:
                    ui.label(t("暂无记录", "No records")).classes("text-grey-6")
                for r in records:
                    if r["source"] != "site_inspection":
                        continue
                    tid(
                        ui.label(
                            f"{r['indicator_code']} {leaves.get(r['indicator_code'], '')} · "
                            f"{r['region_code']} · {r['score']:g} · {r['note'] or ''}"
                            + (f" · {t('网格', 'grid')} {r['grid_code']}" if r["grid_code"] else "")
                        ).classes("text-body2"),
                        f"record-{r['id']}",
                    )

    def _inspection_form(task: dict[str, Any], leaves: dict[str, str]) -> None:
        holder: dict[str, Any] = {}
        regions = {r["code"]: f"{r['name'] or ''} {r['code']}" for r in task["regions"]}
        with tid(ui.card().classes("w-full"), "inspection-form"):
            ui.label(t("新增实地考察记录", "New site inspection")).classes("text-subtitle1")
            with ui.row().classes("items-end gap-2 w-full"):
                indicator = tid(
                    ui.select(leaves, label=t("指标", "Indicator")).classes("w-64"),
                    "inspection-indicator",
                )
                region = tid(
                    ui.select(
                        regions,
                        label=t("区域", "Region"),
                        value=next(iter(regions), None),
                    ).classes("w-48"),
                    "inspection-region",
                )
                score = tid(
                    ui.number(t("得分 (0–100)", "Score (0–100)"), min=0, max=100).classes("w-32"),
                    "inspection-score",
                )
            note = tid(
                ui.textarea(t("说明", "Note")).props("outlined autogrow").classes("w-full"),
                "inspection-note",
            )
            with ui.row().classes("items-end gap-2"):
                lon = tid(ui.number(t("经度", "Longitude"), format="%.6f"), "inspection-lon")
                lat = tid(ui.number(t("纬度", "Latitude"), format="%.6f"), "inspection-lat")
            _photo(p, holder, "inspection-photo")
            error = tid(ui.label("").classes("text-negative"), "inspection-error")
            error.visible = False

            def submit() -> None:
                if indicator.value is None or score.value is None:
                    error.text = t("请选择指标并填写得分", "Choose an indicator and give a score")
                    error.visible = True
                    return
                x, y = lon.value, lat.value
                if x is None and y is None and holder.get("exif"):
                    x, y = holder["exif"]
                data = {
                    "indicator_code": indicator.value,
                    "region_code": region.value,
                    "score": float(score.value),
                    "note": (note.value or "").strip() or None,
                    "attachment_id": holder.get("attachment_id"),
                    "lon": x,
                    "lat": y,
                }
                try:
                    with write_session() as s:
                        ce.add_site_inspection(s, p, task_id, data)
                except DomainError as exc:
                    error.text = str(exc)
                    error.visible = True
                    ui.notify(str(exc), type="negative")
                    return
                ui.notify(t("记录已保存", "Record saved"), type="positive")
                render()

            tid(
                ui.button(t("保存记录", "Save"), on_click=submit).props("color=primary"),
                "inspection-save",
            )

    render()


def register() -> None:
    nav_item("/review", "第三方考评", "Third-party review", "rate_review", *REVIEW_ROLES)
    nav_item("/evaluation/tasks", "综合评价任务", "Evaluation tasks", "fact_check", *TASK_ROLES)
    ui.page("/review")(_review_list_page)
    ui.page("/evaluation/tasks")(_tasks_page)

    @ui.page("/review/{assignment_id}")
    def review_page(assignment_id: int) -> None:
        _review_page(assignment_id)

    @ui.page("/evaluation/tasks/{task_id}")
    def task_page(task_id: int) -> None:
        _task_page(task_id)

"""Console administration of the city model: units (/admin/units), categories and their time
limits (/admin/categories) and the import wizard (/admin/import).

The wizard validates an uploaded GeoJSON/CSV with :func:`cityops.geo.importer.import_file`
in a transaction that is rolled back (the report lists row, field, value and message), and
imports it only when the admin confirms a clean file (the same function, committed).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from nicegui import events, ui

from cityops.cases.ui import show_error, write_session
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.core.security import ensure_city_wide
from cityops.core.settings import get_settings
from cityops.geo import admin
from cityops.geo.importer import KINDS, ImportReport, import_file
from cityops.geo.models import UNIT_TYPES, URGENCIES
from cityops.worktime.models import LIMIT_UNITS, STAGE_LABELS, STAGES, UNIT_LABELS

KIND_LABELS = {
    "regions": "行政区划",
    "units": "部门/单位",
    "categories": "案件类别",
    "grids": "单元网格",
    "components": "城市部件",
}


# --------------------------------------------------------------------------- units


def _units_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("部门/单位", "Units"), p):
        state: dict[str, Any] = {"q": ""}
        with ui.row().classes("items-end gap-2"):
            search = tid(
                ui.input(t("搜索名称或编码", "Search")).props("dense clearable"), "unit-search"
            )

            def go() -> None:
                state["q"] = (search.value or "").strip()
                units.refresh()

            search.on("keydown.enter", go)
            tid(ui.button(t("查询", "Search"), on_click=go), "unit-search-go")

        def toggle(code: str, active: bool) -> None:
            try:
                with write_session() as s:
                    admin.update_unit(s, p, code, {"active": not active})
            except DomainError as exc:
                show_error(exc)
                return
            units.refresh()

        @ui.refreshable
        def units() -> None:
            with get_db().session() as s:
                rows, total = admin.list_units(s, q=state["q"] or None, page_size=200)
            ui.label(t(f"共 {total} 个单位", f"{total} units")).classes("text-grey-7")
            for u in rows:
                with tid(ui.row().classes("items-center gap-3 w-full"), f"unit-row-{u['code']}"):
                    ui.label(u["code"]).classes("w-40 text-caption")
                    ui.label(u["name"]).classes("w-64 text-weight-medium")
                    ui.label(u["unit_type"]).classes("w-24")
                    ui.label(u["parent_code"] or "").classes("w-32 text-caption")
                    ui.label("、".join(u["region_codes"])).classes("text-caption")
                    if not u["active"]:
                        ui.badge(t("已停用", "inactive"), color="grey")
                    ui.space()
                    tid(
                        ui.button(
                            t("停用", "Disable") if u["active"] else t("启用", "Enable"),
                            on_click=lambda c=u["code"], a=u["active"]: toggle(c, a),
                        ).props("flat dense"),
                        f"unit-toggle-{u['code']}",
                    )

        with ui.card().classes("w-full"):
            ui.label(t("新建单位", "New unit")).classes("text-subtitle1")
            with ui.row().classes("items-end gap-2"):
                code = tid(ui.input(t("编码", "Code")), "new-unit-code")
                name = tid(ui.input(t("名称", "Name")).classes("w-64"), "new-unit-name")
                utype = tid(
                    ui.select(list(UNIT_TYPES), label=t("类型", "Type")).classes("w-32"),
                    "new-unit-type",
                )
                parent = tid(ui.input(t("上级单位编码", "Parent code")), "new-unit-parent")
                regions = tid(
                    ui.input(t("负责区域编码（;分隔）", "Region codes (;)")), "new-unit-regions"
                )
            error = tid(ui.label("").classes("text-negative"), "new-unit-error")
            error.visible = False

            def create() -> None:
                data = {
                    "code": (code.value or "").strip(),
                    "name": name.value,
                    "unit_type": utype.value,
                    "parent_code": (parent.value or "").strip() or None,
                    "region_codes": [
                        c.strip() for c in (regions.value or "").split(";") if c.strip()
                    ],
                }
                try:
                    with write_session() as s:
                        admin.create_unit(s, p, data)
                except DomainError as exc:
                    show_error(exc, error)
                    return
                error.visible = False
                ui.notify(t("单位已创建", "Unit created"), type="positive")
                units.refresh()

            tid(
                ui.button(t("创建", "Create"), on_click=create).props("color=primary"),
                "new-unit-create",
            )
        units()


# --------------------------------------------------------------------------- categories


def _limit_key(stage: str, urgency: str | None) -> str:
    return f"{stage}-{urgency or 'all'}"


def _categories_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("案件类别与时限", "Categories and time limits"), p):
        state: dict[str, Any] = {"q": "", "selected": None}
        with ui.row().classes("items-end gap-2"):
            search = tid(
                ui.input(t("按名称或编码搜索", "Search name or code")).props("dense clearable"),
                "cat-search",
            )

            def go() -> None:
                state["q"] = (search.value or "").strip()
                cats.refresh()

            search.on("keydown.enter", go)
            tid(ui.button(t("查询", "Search"), on_click=go), "cat-search-go")

        def pick(cat_id: int) -> None:
            state["selected"] = cat_id
            editor.refresh()

        @ui.refreshable
        def cats() -> None:
            with get_db().session() as s:
                rows = admin.list_categories(s, q=state["q"] or None)
            ui.label(
                t(f"共 {len(rows)} 个类别（显示前 50 个）", f"{len(rows)} categories (first 50)")
            ).classes("text-grey-7")
            for c in rows[:50]:
                limits = "；".join(
                    f"{STAGE_LABELS.get(x['stage'], x['stage'])}{'/' + x['urgency'] if x['urgency'] else ''}"
                    f" {x['amount']:g}{UNIT_LABELS.get(x['unit'], x['unit'])}"
                    for x in c["time_limits"]
                )
                with tid(ui.row().classes("items-center gap-3 w-full"), f"cat-row-{c['code']}"):
                    ui.label(c["code"]).classes("w-16")
                    ui.label(c["name"]).classes("w-48 text-weight-medium")
                    ui.label(c["big_class_name"]).classes("w-32 text-caption")
                    ui.label(limits or t("默认时限", "default limits")).classes("text-caption")
                    ui.space()
                    tid(
                        ui.button(t("时限", "Limits"), on_click=lambda i=c["id"]: pick(i)).props(
                            "flat dense"
                        ),
                        f"cat-edit-{c['code']}",
                    )

        @ui.refreshable
        def editor() -> None:
            if state["selected"] is None:
                return
            with get_db().session() as s:
                cat = admin.categories_out(s, [admin.get_category(s, state["selected"])])[0]
            rows: list[dict[str, Any]] = [dict(x) for x in cat["time_limits"]]
            inputs: list[tuple[dict[str, Any], Any, Any]] = []
            with tid(ui.card().classes("w-full"), "limit-editor"):
                ui.label(
                    t(f"{cat['code']} {cat['name']} 的时限", f"Time limits of {cat['code']}")
                ).classes("text-subtitle1")
                for row in rows:
                    key = _limit_key(row["stage"], row["urgency"])
                    with ui.row().classes("items-end gap-2"):
                        ui.label(
                            STAGE_LABELS.get(row["stage"], row["stage"])
                            + (f" / {row['urgency']}" if row["urgency"] else "")
                        ).classes("w-32")
                        amount = tid(
                            ui.number(t("时长", "Amount"), value=row["amount"], min=0),
                            f"limit-{key}-amount",
                        )
                        unit = tid(
                            ui.select({u: UNIT_LABELS[u] for u in LIMIT_UNITS}, value=row["unit"]),
                            f"limit-{key}-unit",
                        )
                        remove = tid(ui.checkbox(t("删除", "Remove")), f"limit-{key}-remove")
                        inputs.append((row, amount, unit))
                        row["_remove"] = remove
                ui.label(t("新增一条时限", "Add a limit")).classes("text-caption")
                with ui.row().classes("items-end gap-2"):
                    n_stage = tid(
                        ui.select(
                            {s_: STAGE_LABELS[s_] for s_ in STAGES}, label=t("阶段", "Stage")
                        ),
                        "limit-new-stage",
                    ).classes("w-28")
                    n_urg = tid(
                        ui.select(list(URGENCIES), label=t("紧急程度", "Urgency"), clearable=True),
                        "limit-new-urgency",
                    ).classes("w-28")
                    n_amount = tid(ui.number(t("时长", "Amount"), min=0), "limit-new-amount")
                    n_unit = tid(
                        ui.select({u: UNIT_LABELS[u] for u in LIMIT_UNITS}, value="working_hours"),
                        "limit-new-unit",
                    ).classes("w-28")
                error = tid(ui.label("").classes("text-negative"), "limit-error")
                error.visible = False

                def save() -> None:
                    limits = [
                        {
                            "stage": row["stage"],
                            "urgency": row["urgency"],
                            "amount": amount.value,
                            "unit": unit.value,
                        }
                        for row, amount, unit in inputs
                        if not row["_remove"].value
                    ]
                    if n_stage.value and n_amount.value is not None:
                        limits.append(
                            {
                                "stage": n_stage.value,
                                "urgency": n_urg.value or None,
                                "amount": n_amount.value,
                                "unit": n_unit.value,
                            }
                        )
                    bad = [x for x in limits if x["amount"] is None or x["amount"] <= 0]
                    if bad:
                        error.text = t("时长必须大于 0", "Amounts must be greater than 0")
                        error.visible = True
                        return
                    try:
                        with write_session() as s:
                            admin.set_time_limits(s, p, cat["id"], limits)
                    except DomainError as exc:
                        show_error(exc, error)
                        return
                    ui.notify(t("时限已保存", "Limits saved"), type="positive")
                    editor.refresh()
                    cats.refresh()

                tid(
                    ui.button(t("保存时限", "Save limits"), on_click=save).props("color=primary"),
                    "limit-save",
                )

        editor()
        cats()


# --------------------------------------------------------------------------- import wizard


def _report_view(report: ImportReport) -> None:
    unit = t("要素", "feature") if report.fmt == "geojson" else t("行", "row")
    if report.error_count:
        tid(
            ui.label(
                t(
                    f"{report.file}：读取 {report.total} {unit}，发现 {report.error_count} 个错误"
                    f"（{report.invalid_rows} {unit}）。未导入任何数据，请修改文件后重新上传。",
                    f"{report.file}: {report.total} {unit}(s), {report.error_count} error(s): "
                    "nothing imported; fix the file and upload it again.",
                )
            ).classes("text-negative"),
            "import-summary",
        )
        with tid(ui.column().classes("gap-0"), "import-errors"):
            with ui.row().classes("text-weight-medium gap-3"):
                for h in (
                    t(unit, unit),
                    t("字段", "Field"),
                    t("值", "Value"),
                    t("问题", "Problem"),
                ):
                    ui.label(h).classes("w-24")
            for i, issue in enumerate(report.errors):
                with tid(ui.row().classes("gap-3"), f"import-error-{i}"):
                    ui.label(str(issue.row) if issue.row else t("全文件", "file")).classes("w-24")
                    ui.label(issue.field).classes("w-24")
                    ui.label("" if issue.value is None else str(issue.value)).classes("w-24")
                    ui.label(issue.message)
            if report.error_count > len(report.errors):
                ui.label(t(f"…… 另有 {report.error_count - len(report.errors)} 个错误", "…"))
    else:
        tid(
            ui.label(
                t(
                    f"{report.file}：{report.total} {unit}全部通过校验，可以导入。",
                    f"{report.file}: all {report.total} {unit}(s) are valid.",
                )
            ).classes("text-positive"),
            "import-summary",
        )
    for note in report.notes:
        ui.label(note).classes("text-caption text-grey-7")


def _import_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("数据导入", "Data import"), p):
        ui.label(
            t(
                "第 1 步：选择数据类型并上传 GeoJSON 或 CSV 文件；第 2 步：查看校验报告；"
                "第 3 步：确认导入（有任何错误时不会导入）。",
                "1: choose the kind and upload a GeoJSON or CSV file; 2: read the validation "
                "report; 3: confirm (nothing is imported while there are errors).",
            )
        ).classes("text-grey-8")
        state: dict[str, Any] = {"path": None, "report": None}
        kind = tid(
            ui.select(
                {k: f"{KIND_LABELS.get(k, k)}（{k}）" for k in KINDS},
                value="units",
                label=t("数据类型", "Kind"),
            ).classes("w-64"),
            "import-kind",
        )
        folder = get_settings().var_dir / "imports"

        @ui.refreshable
        def result() -> None:
            report: ImportReport | None = state["report"]
            if report is None:
                return
            _report_view(report)
            if report.ok and report.total:
                tid(
                    ui.button(
                        t(f"确认导入 {report.total} 条", f"Import {report.total}"), on_click=confirm
                    ).props("color=primary"),
                    "import-confirm",
                )

        def validate(path: Path) -> ImportReport:
            s = get_db().sessionmaker()
            try:
                return import_file(s, kind.value, path)
            finally:
                s.rollback()  # a dry run: nothing of it stays
                s.close()

        async def received(e: events.UploadEventArguments) -> None:
            try:
                ensure_city_wide(p, "import")
            except DomainError as exc:
                show_error(exc)
                return
            folder.mkdir(parents=True, exist_ok=True)
            name = Path(e.file.name).name or "upload.csv"
            path = folder / f"{secrets.token_hex(6)}-{name}"
            await e.file.save(path)
            old = state["path"]
            if old is not None:
                Path(old).unlink(missing_ok=True)
            state["path"] = path
            try:
                state["report"] = validate(path)
            except DomainError as exc:
                show_error(exc)
                return
            result.refresh()

        def confirm() -> None:
            path = state["path"]
            if path is None:
                return
            try:
                with write_session() as s:
                    report = import_file(s, kind.value, path)
                    if not report.ok:  # the database changed since the check
                        s.rollback()
            except DomainError as exc:
                show_error(exc)
                return
            state["report"] = None
            result.refresh()
            if report.ok:
                Path(path).unlink(missing_ok=True)
                state["path"] = None
                with done:
                    done.clear()
                    tid(
                        ui.label(
                            t(
                                f"已导入 {report.written} 条（{KIND_LABELS.get(report.kind, report.kind)}）",
                                f"Imported {report.written} {report.kind}",
                            )
                        ).classes("text-positive text-h6"),
                        "import-done",
                    )
                ui.notify(
                    t(f"已导入 {report.written} 条", f"Imported {report.written}"), type="positive"
                )
            else:
                state["report"] = report
                result.refresh()

        def new_kind() -> None:
            state["report"] = None
            result.refresh()

        kind.on_value_change(new_kind)
        tid(
            ui.upload(
                label=t("上传文件（.geojson/.json/.csv）", "Upload file"),
                auto_upload=True,
                on_upload=received,
            )
            .props('accept=".geojson,.json,.csv"')
            .classes("w-96"),
            "import-upload",
        )
        result()
        done = ui.column()


def register() -> None:
    nav_item("/admin/units", "部门/单位", "Units", "apartment", "admin")
    nav_item("/admin/categories", "类别与时限", "Categories", "category", "admin")
    nav_item("/admin/import", "数据导入", "Data import", "upload_file", "admin")
    ui.page("/admin/units")(_units_page)
    ui.page("/admin/categories")(_categories_page)
    ui.page("/admin/import")(_import_page)

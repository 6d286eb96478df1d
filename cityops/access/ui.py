"""Console administration: the /admin landing page and users and roles (/admin/users).

Every change goes through :mod:`cityops.access.service` with the admin's Principal, so the
same checks as the API apply (an admin limited to a district only sees and grants inside it;
nobody removes their own admin role or disables their own account).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from nicegui import ui
from sqlalchemy import select

from cityops.access import service as access
from cityops.access.models import ROLE_NAMES_ZH, ROLES, User
from cityops.cases.ui import show_error, write_session
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.geo.models import Unit

#: The admin pages (path, zh, en, icon), in the order of the landing page.
ADMIN_PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("/admin/users", "用户与角色", "Users and roles", "people"),
    ("/admin/units", "部门/单位", "Units", "apartment"),
    ("/admin/categories", "案件类别与时限", "Categories and time limits", "category"),
    ("/admin/calendar", "工作日历", "Work calendar", "event"),
    ("/admin/dispatch-rules", "派遣规则", "Dispatch rules", "alt_route"),
    ("/admin/weights", "考核权重", "Evaluation weights", "tune"),
    ("/evaluation/rankings", "考核排名", "Rankings", "leaderboard"),
    ("/admin/import", "数据导入", "Data import", "upload_file"),
)


def _role_options() -> dict[str, str]:
    return {r: f"{ROLE_NAMES_ZH.get(r, r)}（{r}）" for r in ROLES}


def _locked(u: User) -> bool:
    return u.locked_until is not None and u.locked_until > datetime.now(UTC)


def _admin_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("系统管理", "Administration"), p), ui.row().classes("gap-4"):
        for path, zh, en, icon in ADMIN_PAGES:
            with (
                tid(
                    ui.card()
                    .classes("w-60 cursor-pointer")
                    .on("click", lambda path=path: ui.navigate.to(path)),
                    f"admin-card-{path}",
                ),
                ui.row().classes("items-center no-wrap"),
            ):
                ui.icon(icon).classes("text-h5 text-primary")
                tid(ui.link(t(zh, en), path), f"link-{path}")


def _users_page() -> None:
    p = auth.require("admin")
    if p is None:
        return
    with frame(t("用户与角色", "Users and roles"), p):
        with get_db().session() as s:
            units = {
                code: f"{code} {name}"
                for code, name in s.execute(select(Unit.code, Unit.name).order_by(Unit.code))
            }
            unit_code_of = dict(s.execute(select(Unit.id, Unit.code)).all())
        state: dict[str, Any] = {"q": "", "page": 1}

        with ui.dialog() as dialog, ui.card().classes("w-[32rem]"):
            edit_title = ui.label("").classes("text-subtitle1")
            e_name = tid(ui.input(t("姓名", "Name")).classes("w-full"), "edit-name")
            e_roles = tid(
                ui.select(_role_options(), label=t("角色", "Roles"), multiple=True).classes(
                    "w-full"
                ),
                "edit-roles",
            )
            e_unit = tid(
                ui.select(units, label=t("单位", "Unit"), with_input=True, clearable=True).classes(
                    "w-full"
                ),
                "edit-unit",
            )
            e_scope = tid(
                ui.input(t("数据范围（区域编码，空=全市）", "Scope (region code, empty = city)")),
                "edit-scope",
            ).classes("w-full")
            e_unit_only = tid(
                ui.checkbox(t("只看本单位案件", "Own unit's cases only")), "edit-unit-only"
            )
            e_password = tid(
                ui.input(t("新密码（可选）", "New password (optional)"), password=True),
                "edit-password",
            ).classes("w-full")
            e_error = tid(ui.label("").classes("text-negative"), "edit-error")
            e_error.visible = False
            editing: dict[str, int] = {}

            def save() -> None:
                changes: dict[str, Any] = {
                    "display_name": e_name.value,
                    "roles": list(e_roles.value or []),
                    "unit_code": e_unit.value or None,
                    "scope_region_code": (e_scope.value or "").strip() or None,
                    "scope_unit_only": bool(e_unit_only.value),
                }
                if e_password.value:
                    changes["password"] = e_password.value
                try:
                    with write_session() as s:
                        access.update_user(s, p, editing["id"], changes)
                except DomainError as exc:
                    show_error(exc, e_error)
                    return
                ui.notify(t("已保存", "Saved"), type="positive")
                dialog.close()
                users.refresh()

            with ui.row():
                tid(ui.button(t("保存", "Save"), on_click=save).props("color=primary"), "edit-save")
                ui.button(t("取消", "Cancel"), on_click=dialog.close).props("flat")

        def edit(user_id: int) -> None:
            with get_db().session() as s:
                u = access.get_user(s, p, user_id)
                editing["id"] = u.id
                edit_title.text = t(f"编辑 {u.username}", f"Edit {u.username}")
                e_name.value = u.display_name
                e_roles.value = sorted(u.roles)
                e_unit.value = unit_code_of.get(u.unit_id) if u.unit_id else None
                e_scope.value = u.scope_region_code or ""
                e_unit_only.value = u.scope_unit_only
                e_password.value = ""
            e_error.visible = False
            dialog.open()

        def change(user_id: int, what: str) -> None:
            try:
                with write_session() as s:
                    if what == "unlock":
                        access.unlock_user(s, p, user_id)
                    else:
                        access.update_user(s, p, user_id, {"active": what == "activate"})
            except DomainError as exc:
                show_error(exc)
                return
            ui.notify(t("已更新", "Updated"), type="positive")
            users.refresh()

        with ui.row().classes("items-end gap-2"):
            search = tid(
                ui.input(t("搜索用户名或姓名", "Search")).props("dense clearable"), "user-search"
            )

            def do_search() -> None:
                state["q"], state["page"] = (search.value or "").strip(), 1
                users.refresh()

            search.on("keydown.enter", do_search)
            tid(ui.button(t("查询", "Search"), on_click=do_search), "user-search-go")

        @ui.refreshable
        def users() -> None:
            with get_db().session() as s:
                rows, total = access.list_users(s, p, q=state["q"] or None, page=state["page"])
                data = [
                    (
                        u.id,
                        u.username,
                        u.display_name,
                        "、".join(ROLE_NAMES_ZH.get(r, r) for r in sorted(u.roles)),
                        unit_code_of.get(u.unit_id) if u.unit_id else None,
                        u.scope_region_code,
                        u.active,
                        _locked(u) or u.failed_logins > 0,
                    )
                    for u in rows
                ]
            ui.label(t(f"共 {total} 个用户", f"{total} users")).classes("text-grey-7")
            for uid, username, name, roles, unit, scope, active, locked in data:
                with tid(ui.row().classes("items-center gap-3 w-full"), f"user-row-{username}"):
                    ui.label(username).classes("w-32 text-weight-medium")
                    ui.label(name).classes("w-24")
                    ui.label(roles).classes("w-40")
                    ui.label(units.get(unit or "", "—")).classes("w-56 text-caption")
                    ui.label(scope or t("全市", "city")).classes("w-24 text-caption")
                    if not active:
                        ui.badge(t("已停用", "disabled"), color="grey")
                    if locked:
                        ui.badge(t("已锁定/有失败登录", "locked"), color="red")
                    ui.space()
                    tid(
                        ui.button(t("编辑", "Edit"), on_click=lambda uid=uid: edit(uid)).props(
                            "flat dense"
                        ),
                        f"edit-{username}",
                    )
                    if locked:
                        tid(
                            ui.button(
                                t("解锁", "Unlock"), on_click=lambda uid=uid: change(uid, "unlock")
                            ).props("flat dense"),
                            f"unlock-{username}",
                        )
                    tid(
                        ui.button(
                            t("停用", "Disable") if active else t("启用", "Enable"),
                            on_click=lambda uid=uid, a=active: change(
                                uid, "deactivate" if a else "activate"
                            ),
                        ).props("flat dense"),
                        f"toggle-{username}",
                    )
            with ui.row():
                prev = ui.button(t("上一页", "Previous"), on_click=lambda: turn(-1))
                prev.enabled = state["page"] > 1
                nxt = ui.button(t("下一页", "Next"), on_click=lambda: turn(1))
                nxt.enabled = state["page"] * 50 < total

        def turn(d: int) -> None:
            state["page"] = max(1, state["page"] + d)
            users.refresh()

        with ui.card().classes("w-full"):
            ui.label(t("新建用户", "New user")).classes("text-subtitle1")
            with ui.row().classes("items-end gap-2"):
                n_user = tid(ui.input(t("用户名", "Username")), "new-user-username")
                n_name = tid(ui.input(t("姓名", "Name")), "new-user-name")
                n_pass = tid(
                    ui.input(t("初始密码", "Password"), password=True), "new-user-password"
                )
                n_roles = tid(
                    ui.select(_role_options(), label=t("角色", "Roles"), multiple=True).classes(
                        "w-64"
                    ),
                    "new-user-roles",
                )
                n_unit = tid(
                    ui.select(
                        units, label=t("单位", "Unit"), with_input=True, clearable=True
                    ).classes("w-64"),
                    "new-user-unit",
                )
                n_scope = tid(
                    ui.input(t("数据范围（区域编码）", "Scope region code")), "new-user-scope"
                )
                n_unit_only = tid(ui.checkbox(t("只看本单位", "Unit only")), "new-user-unit-only")
            n_error = tid(ui.label("").classes("text-negative"), "new-user-error")
            n_error.visible = False

            def create() -> None:
                try:
                    with write_session() as s:
                        u = access.create_user(
                            s,
                            p,
                            username=n_user.value or "",
                            display_name=n_name.value or "",
                            password=n_pass.value or "",
                            roles=list(n_roles.value or []),
                            unit_code=n_unit.value or None,
                            scope_region_code=(n_scope.value or "").strip() or None,
                            scope_unit_only=bool(n_unit_only.value),
                        )
                        username = u.username
                except DomainError as exc:
                    show_error(exc, n_error)
                    return
                n_error.visible = False
                ui.notify(t(f"已创建用户 {username}", f"User {username} created"), type="positive")
                for el in (n_user, n_name, n_pass, n_scope):
                    el.value = ""
                users.refresh()

            tid(
                ui.button(t("创建", "Create"), on_click=create).props("color=primary"),
                "new-user-create",
            )
        users()


def register() -> None:
    nav_item("/admin", "系统管理", "Administration", "admin_panel_settings", "admin")
    nav_item("/admin/users", "用户与角色", "Users and roles", "people", "admin")
    ui.page("/admin")(_admin_page)
    ui.page("/admin/users")(_users_page)

"""Console pages that belong to no single context: login and the landing redirect."""

from __future__ import annotations

from fastapi import Request
from nicegui import app, ui

from cityops.console import auth
from cityops.console.i18n import lang, set_lang, t
from cityops.console.widgets import tid
from cityops.core.errors import DomainError


def register() -> None:
    @ui.page("/")
    def index() -> None:
        p = auth.current()
        ui.navigate.to(auth.home_of(p) if p else "/login")

    @ui.page("/login", title="登录 · CityOps")
    def login_page(request: Request) -> None:
        ip = request.client.host if request.client else None

        def submit() -> None:
            try:
                p = auth.log_in(username.value or "", password.value or "", ip)
            except DomainError as exc:
                message.text = str(exc)
                message.visible = True
                password.value = ""
                return
            target = app.storage.user.pop("after_login", None) or auth.home_of(p)
            ui.navigate.to(target if target != "/login" else auth.home_of(p))

        def switch() -> None:
            set_lang("en" if lang() == "zh" else "zh")
            ui.navigate.reload()

        with ui.column().classes("absolute-center items-stretch w-80 gap-3"):
            ui.label(t("城市运行管理服务平台", "City Operations Platform")).classes(
                "text-h5 text-center"
            )
            ui.label(t("请登录", "Please log in")).classes("text-subtitle1 text-center")
            username = tid(
                ui.input(t("用户名", "Username")).props("outlined autofocus"), "username"
            )
            password = tid(
                ui.input(t("密码", "Password"), password=True, password_toggle_button=True).props(
                    "outlined"
                ),
                "password",
            )
            password.on("keydown.enter", submit)
            message = tid(ui.label("").classes("text-negative"), "login-error")
            message.visible = False
            tid(ui.button(t("登录", "Log in"), on_click=submit).props("color=primary"), "login")
            ui.button("English" if lang() == "zh" else "中文", on_click=switch).props("flat dense")

    @ui.page("/account")
    def account_page() -> None:
        from cityops.access.models import ROLE_NAMES_ZH
        from cityops.console.layout import frame

        p = auth.require()
        if p is None:
            return
        with frame(t("我的账户", "My account"), p), ui.card().classes("w-full max-w-xl"):
            rows = [
                (t("用户名", "Username"), p.username),
                (t("姓名", "Name"), p.display_name),
                (
                    t("角色", "Roles"),
                    "、".join(ROLE_NAMES_ZH.get(r, r) for r in sorted(p.roles)),
                ),
                (t("数据范围", "Data scope"), p.scope_region_code or t("全市", "Whole city")),
            ]
            for label, value in rows:
                with ui.row().classes("w-full"):
                    ui.label(label).classes("w-32 text-grey-7")
                    tid(ui.label(value), f"account-{label}")

"""The console frame: header (title, language, user, logout) and role-aware navigation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from nicegui import ui

from cityops.access.models import ROLE_NAMES_ZH
from cityops.console import auth
from cityops.console.i18n import lang, set_lang, t
from cityops.console.widgets import tid
from cityops.core.security import Principal


@dataclass(frozen=True)
class NavItem:
    path: str
    zh: str
    en: str
    icon: str
    roles: frozenset[str]  # empty: everyone logged in


_NAV: list[NavItem] = []


def nav_item(path: str, zh: str, en: str, icon: str, *roles: str) -> None:
    """Add a navigation entry (pages register theirs when they are registered)."""
    if any(i.path == path for i in _NAV):
        return
    _NAV.append(NavItem(path, zh, en, icon, frozenset(roles)))


def nav_for(principal: Principal) -> list[NavItem]:
    return [
        i
        for i in _NAV
        if not i.roles or principal.is_admin or principal.roles.intersection(i.roles)
    ]


def reset_nav() -> None:
    _NAV.clear()


def _switch_lang() -> None:
    set_lang("en" if lang() == "zh" else "zh")
    ui.navigate.reload()


def _logout() -> None:
    auth.log_out()
    ui.navigate.to("/login")


@contextmanager
def frame(title: str, principal: Principal, *, mobile: bool = False) -> Iterator[ui.column]:
    """Build the page frame and yield its content column."""
    ui.page_title(f"{title} · CityOps")
    with ui.header(elevated=True).classes("items-center q-px-md q-py-xs bg-primary"):
        if not mobile:
            drawer_btn = ui.button(icon="menu").props("flat round dense color=white")
        ui.label(t("城市运行管理服务平台", "City Operations Platform")).classes(
            "text-h6 text-white"
        )
        tid(ui.label(title).classes("text-subtitle1 text-white q-ml-md"), "title")
        ui.space()
        roles = "、".join(ROLE_NAMES_ZH.get(r, r) for r in sorted(principal.roles))
        ui.label(f"{principal.display_name} · {roles}").classes("text-white text-caption")
        tid(
            ui.button("EN" if lang() == "zh" else "中文", on_click=_switch_lang).props(
                "flat dense color=white"
            ),
            "lang",
        )
        tid(
            ui.button(t("退出", "Log out"), on_click=_logout).props("flat dense color=white"),
            "logout",
        )
    if not mobile:
        drawer = ui.left_drawer(value=True, bordered=True).classes("q-pa-none")
        with drawer, ui.list().props("dense"):
            for item in nav_for(principal):
                with tid(
                    ui.item(on_click=lambda p=item.path: ui.navigate.to(p))
                    .props("clickable")
                    .classes("q-py-sm"),
                    f"nav-{item.path}",
                ):
                    with ui.item_section().props("avatar"):
                        ui.icon(item.icon)
                    with ui.item_section():
                        ui.item_label(t(item.zh, item.en))
        drawer_btn.on_click(drawer.toggle)
    with ui.column().classes("w-full q-pa-md gap-3") as content:
        yield content

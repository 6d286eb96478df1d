"""Small console helpers shared by the pages."""

from __future__ import annotations

from typing import TypeVar

from nicegui import ui

E = TypeVar("E", bound=ui.element)


def tid(element: E, name: str) -> E:
    """Name an element for tests: a NiceGUI marker (user simulation) and ``data-testid``
    (real browser), e.g. ``tid(ui.button("登录"), "login")``."""
    element.mark(name)
    element.props(f'data-testid="{name}"')
    return element

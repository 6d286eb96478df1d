"""Small console helpers shared by the pages."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar
from zoneinfo import ZoneInfo

from nicegui import ui
from sqlalchemy.orm import Session

from cityops.core.db import get_db
from cityops.core.security import lock_for_write

SHANGHAI = ZoneInfo("Asia/Shanghai")

E = TypeVar("E", bound=ui.element)


def tid(element: E, name: str) -> E:
    """Name an element for tests: a NiceGUI marker (user simulation) and ``data-testid``
    (real browser), e.g. ``tid(ui.button("登录"), "login")``."""
    element.mark(name)
    element.props(f'data-testid="{name}"')
    return element


@contextmanager
def write_session() -> Iterator[Session]:
    """A unit of work that writes (SQLite's write lock taken first, as the API does)."""
    with get_db().session() as s:
        lock_for_write(s)
        yield s


def local_time(ts: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC time (datetime or ISO text) as Asia/Shanghai wall time; "—" for none."""
    if ts is None:
        return "—"
    d = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    return d.astimezone(SHANGHAI).strftime(fmt)

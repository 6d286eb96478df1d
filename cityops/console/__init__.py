"""The web console (NiceGUI), mounted in the FastAPI app.

Pages live with their bounded context (``cityops/<context>/ui.py``, each with a
``register()`` that declares its pages with ``@ui.page``); :func:`register_pages` calls them
all. Shared pieces: :mod:`.auth` (login, the current user, role checks), :mod:`.layout` (the
frame and navigation), :mod:`.i18n` (zh-CN first, English switch).

The console keeps per-browser state in its process, so it is served by one process (or
behind sticky sessions); API-only worker processes run with ``CITYOPS_CONSOLE=off``.
"""

from __future__ import annotations

import importlib
import logging

from fastapi import FastAPI

log = logging.getLogger("cityops.console")

#: Modules whose ``register()`` declares console pages, in navigation order.
PAGE_MODULES: tuple[str, ...] = (
    "cityops.console.pages",
    "cityops.console.command",
    "cityops.cases.ui",
    "cityops.cases.ui_mobile",
    "cityops.geo.ui",
    "cityops.evaluation.ui",
    "cityops.evaluation.ui_review",
    "cityops.monitoring.ui",
    "cityops.flood.ui",
    "cityops.access.ui",
    "cityops.worktime.ui",
    "cityops.public.ui",
)

_mounted = False


def register_pages() -> None:
    """Declare every console page (call after NiceGUI's globals are reset, e.g. in tests)."""
    from cityops.console.layout import reset_nav

    reset_nav()
    for name in PAGE_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register()


def mount(app: FastAPI) -> None:
    """Mount the console pages on ``app`` (once per process; off with CITYOPS_CONSOLE=off)."""
    global _mounted
    from cityops.core.settings import get_settings

    st = get_settings()
    if not st.console:
        return
    if _mounted:
        log.warning("the console is mounted once per process; this app serves the API only")
        return
    from nicegui import ui
    from nicegui.storage import Storage

    # per-browser console state (language, login token) lives with the other runtime files
    Storage.path = (st.var_dir / "nicegui").resolve()
    register_pages()
    ui.run_with(
        app,
        mount_path="/",
        title="CityOps 城市运行管理服务平台",
        language="zh-CN",
        favicon="🏙️",
        storage_secret=st.resolved_console_secret(),
        show_welcome_message=False,
        reconnect_timeout=10.0,
    )
    _mounted = True

"""Drive the console in NiceGUI's user simulation (no browser): pages, clicks, refusals."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from nicegui import core, ui
from nicegui.testing.general import nicegui_reset_globals, prepare_simulation
from nicegui.testing.user import User

from cityops.core import db as dbmod

PASSWORD = "demo-pass-2026"


@asynccontextmanager
async def console_user(database: dbmod.Database) -> AsyncIterator[User]:
    """A simulated browser on the console served from ``database``."""
    from nicegui.functions.download import download
    from nicegui.functions.navigate import Navigate
    from nicegui.functions.notify import notify

    from cityops.console import register_pages

    previous = dbmod._db
    dbmod.set_db(database)
    with nicegui_reset_globals():
        os.environ["NICEGUI_USER_SIMULATION"] = "true"
        try:
            prepare_simulation()
            register_pages()
            ui.run(storage_secret="console test secret")
            async with (
                core.app.router.lifespan_context(core.app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(core.app), base_url="http://test"
                ) as client,
            ):
                yield User(client)
        finally:
            os.environ.pop("NICEGUI_USER_SIMULATION", None)
            ui.navigate = Navigate()
            ui.notify = notify
            ui.download = download
            dbmod._db = previous


async def log_in(user: User, username: str, password: str = PASSWORD) -> None:
    """Log in through the login page (lands on the user's home page)."""
    await user.open("/login")
    user.find(marker="username").type(username)
    user.find(marker="password").type(password)
    user.find(marker="login").click()

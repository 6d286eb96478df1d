"""Cases for the console tests, made through the case service (as the API would)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from cityops.cases import queries, service
from cityops.cases.models import Case
from cityops.cases.storage import default_storage
from cityops.core import db as dbmod
from cityops.geo.models import Unit
from tests.factories import (
    grid_of_inspector,
    matter_category,
    photo,
    point_in,
    principal,
    report_data,
)


def report(database: dbmod.Database, who: str = "inspector1", **kw: Any) -> int:
    """A new case (待受理) reported by ``who`` in inspector1's first grid; returns its id."""
    with database.session() as s:
        rep = principal(s, who)
        lon, lat = point_in(grid_of_inspector(s, "inspector1"))
        att = queries.upload(s, rep, default_storage(), "p.jpg", "image/jpeg", photo())
        data = report_data(matter_category(s), lon, lat, attachment_ids=[att["id"]], **kw)
        return service.create_case(s, rep, data).case.id


def act(database: dbmod.Database, who: str, case_id: int, action: str, **payload: Any) -> None:
    with database.session() as s:
        service.perform(s, principal(s, who), case_id, action, payload)


def to_dispatch(database: dbmod.Database, **kw: Any) -> int:
    """A case waiting in 待派遣 (accepted, filed without the automatic dispatch)."""
    cid = report(database, **kw)
    act(database, "operator1", cid, "accept")
    act(database, "shift1", cid, "file", auto_dispatch=False)
    return cid


def stage_of(database: dbmod.Database, case_id: int) -> Case:
    with database.session() as s:
        case = s.get(Case, case_id)
        assert case is not None
        s.expunge(case)
        return case


def unit_named(database: dbmod.Database, unit_id: int) -> str:
    with database.session() as s:
        return str(s.scalar(select(Unit.name).where(Unit.id == unit_id)))


def username_of_handler(database: dbmod.Database, unit_id: int) -> str:
    from tests.factories import handler_of

    with database.session() as s:
        return handler_of(s, unit_id).username


async def enter(user: Any, username: str) -> None:
    """Log in and wait until the browser has left the login page (the redirect to the
    user's home page is asynchronous)."""
    import asyncio

    from tests.console_support import log_in

    await log_in(user, username)
    login_client = user.client
    for _ in range(100):
        if user.client is not login_client:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{username} did not get past the login page")


async def eventually(check: Any, tries: int = 40) -> None:
    """Wait until ``check()`` is true (page handlers finish asynchronously)."""
    import asyncio

    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.05)
    assert check()

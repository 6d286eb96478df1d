"""Closed cases in chosen streets of the small demo city, driven through the real workflow
(shared by tests/test_evaluation_review.py and tests/test_comprehensive_evaluation.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.access.models import AuthSession, User
from cityops.cases import queries, service
from cityops.cases.models import Case
from cityops.cases.storage import Storage
from cityops.core.db import Database, utcnow
from cityops.core.security import new_token
from cityops.geo.models import Grid, grid_inspectors
from tests.factories import handler_of, matter_category, photo, point_in, principal, report_data

PW = "demo-pass-2026"
# Tuesday 2026-11-17 09:00 Asia/Shanghai: every case below closes on that local day.
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def inspected_grid(s: Session, prefix: str) -> tuple[Grid, str]:
    """The first grid (by code) under ``prefix`` that has an inspector, and the inspector."""
    row = s.execute(
        select(Grid, User.username)
        .join(grid_inspectors, grid_inspectors.c.grid_id == Grid.id)
        .join(User, User.id == grid_inspectors.c.user_id)
        .where(Grid.code.startswith(prefix))
        .order_by(Grid.code, User.username)
    ).first()
    assert row is not None, f"no inspected grid under {prefix}"
    return row[0], row[1]


def _pic(s: Session, who: Any, store: Storage) -> list[int]:
    return [int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo())["id"])]


def make_case(
    s: Session, store: Storage, prefix: str, m: float, *, close: bool = True, reporter: bool = False
) -> Case:
    """A case reported by the grid's inspector at ``at(m)`` in the first inspected grid under
    ``prefix``, filed (auto-dispatched), handled, checked and — if ``close`` — closed at
    ``at(m + 9)``; otherwise it stays 待结案 (filed, not closed)."""
    grid, insp_name = inspected_grid(s, prefix)
    insp = principal(s, insp_name)
    op, shift = principal(s, "operator1"), principal(s, "shift1")
    lon, lat = point_in(grid)
    extra: dict[str, Any] = {}
    if reporter:
        extra = {"reporter_name": "张三丰", "reporter_phone": "13812345678"}
    data = report_data(matter_category(s), lon, lat, description=f"case {prefix} {m}")
    c = service.create_case(s, insp, data, at(m)).case
    if reporter:
        c.reporter_name = extra["reporter_name"]
        c.reporter_phone = extra["reporter_phone"]
    if c.stage == "accept":
        service.perform(s, op, c.id, "accept", {}, None, at(m + 1))
    if c.stage == "file":
        service.perform(s, shift, c.id, "file", {}, None, at(m + 2))
    assert c.stage == "sign", c.stage
    h = handler_of(s, c.lead_unit_id or 0)
    service.perform(s, h, c.id, "sign", {}, None, at(m + 3))
    service.perform(
        s,
        h,
        c.id,
        "handle",
        {"note": "ok", "attachment_ids": _pic(s, h, store), "inspector_id": insp.user_id},
        None,
        at(m + 5),
    )
    service.perform(
        s,
        insp,
        c.id,
        "check",
        {"passed": True, "attachment_ids": _pic(s, insp, store)},
        None,
        at(m + 7),
    )
    if close:
        service.perform(s, shift, c.id, "close", {}, None, at(m + 9))
        assert c.stage == "closed"
    s.flush()
    return c


def login(client: TestClient, username: str, password: str = PW) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def bearer(db: Database, username: str) -> dict[str, str]:
    """A login session made directly (no password hashing: login itself is tested in
    tests/test_auth.py), as the Authorization header of that user."""
    token, token_hash = new_token()
    with db.session() as s:
        uid = s.scalars(select(User.id).where(User.username == username)).one()
        s.add(
            AuthSession(
                token_hash=token_hash,
                user_id=uid,
                kind="api",
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
    return {"Authorization": f"Bearer {token}"}


def app_client(db: Database, *routers: Any) -> TestClient:
    """A TestClient over the app with extra routers (as tests/conftest.py ``_client``)."""
    from cityops.app import create_app

    app = create_app(db)
    for r in routers:
        app.include_router(r)
    return TestClient(app, raise_server_exceptions=True)

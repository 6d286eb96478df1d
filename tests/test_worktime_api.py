"""Working-time API: calendar year view and edits, working hours, time limits, deadlines.

Reads need any logged-in user, writes the admin role and a city-wide account. Dates and
expected values: see tests/test_worktime.py (2026 National Day: Oct 1–7 off, Sep 20 and
Oct 10 make-up working days; 2027 has no package data).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from cityops.access.models import AuthSession, User, UserRole
from cityops.core.audit import AuditLog
from cityops.core.db import Database
from cityops.core.security import new_token
from cityops.worktime.models import STAGES

API = "/api/v1"


def _make_user(db: Database, username: str, roles: list[str], scope: str | None = None) -> str:
    """A user with a live API token (no password login needed)."""
    token, token_hash = new_token()
    with db.session() as s:
        u = User(
            username=username,
            display_name=username,
            password_hash="!",
            scope_region_code=scope,
        )
        s.add(u)
        s.flush()
        for r in roles:
            s.add(UserRole(user_id=u.id, role=r))
        s.add(
            AuthSession(
                token_hash=token_hash,
                user_id=u.id,
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    return token


@pytest.fixture
def api(db: Database) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    from cityops.app import create_app
    from cityops.worktime.api import router

    app = create_app(db)
    if not any(getattr(r, "path", "") == f"{API}/calendar/{{year}}" for r in app.routes):
        app.include_router(router)  # until cityops/app.py registers it
    headers = {
        name: {"Authorization": f"Bearer {_make_user(db, name, roles, scope)}"}
        for name, roles, scope in [
            ("wt_admin", ["admin"], None),
            ("wt_inspector", ["inspector"], None),
            ("wt_district_admin", ["admin"], "110101"),
        ]
    }
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c, headers


def test_calendar_read_needs_login(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, h = api
    assert c.get(f"{API}/calendar/2026").status_code == 401
    r = c.get(f"{API}/calendar/2026", headers=h["wt_inspector"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["confirmed"] is True and body["source"] == "chinese_calendar"
    assert len(body["days"]) == 365 and body["working_days"] == 248
    by_date = {d["date"]: d for d in body["days"]}
    assert by_date["2026-10-10"]["kind"] == "makeup" and by_date["2026-10-10"]["is_workday"]
    assert by_date["2026-10-01"]["kind_label"] == "法定节假日"
    assert by_date["2026-10-01"]["name"] == "国庆节"
    assert by_date["2026-10-08"] == {
        "date": "2026-10-08",
        "weekday": 4,
        "is_workday": True,
        "kind": "workday",
        "kind_label": "工作日",
        "name": None,
        "source": "default",
    }
    summary = c.get(f"{API}/calendar/2026?days=false", headers=h["wt_inspector"]).json()
    assert summary["days"] == [] and summary["holidays"] == body["holidays"]
    assert c.get(f"{API}/calendar/1999", headers=h["wt_inspector"]).status_code == 422
    day = c.get(f"{API}/calendar/days/2026-09-20", headers=h["wt_inspector"]).json()
    assert day["kind"] == "makeup" and day["weekday"] == 7


def test_enter_and_confirm_2027(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, h = api
    calc = {"start": "2027-09-30T16:00:00+08:00", "amount": 3, "unit": "working_days"}
    r = c.post(f"{API}/worktime/deadline", json=calc, headers=h["wt_inspector"])
    assert r.status_code == 200, r.text
    assert r.json()["due_at"] == "2027-10-05T16:00:00+08:00"
    assert r.json()["calendar_confirmed"] is False
    assert c.get(f"{API}/calendar/2027", headers=h["wt_inspector"]).json()["confirmed"] is False

    put = {"is_workday": False, "name": "国庆节"}
    assert c.put(f"{API}/calendar/days/2027-10-01", json=put).status_code == 401
    assert (
        c.put(f"{API}/calendar/days/2027-10-01", json=put, headers=h["wt_inspector"]).status_code
        == 403
    )
    assert (
        c.put(
            f"{API}/calendar/days/2027-10-01", json=put, headers=h["wt_district_admin"]
        ).status_code
        == 403
    )
    r = c.put(f"{API}/calendar/days/2027-10-01", json=put, headers=h["wt_admin"])
    assert r.status_code == 200, r.text
    assert r.json()["year_confirmed"] is False and r.json()["day"]["kind"] == "holiday"

    r = c.post(f"{API}/worktime/deadline", json=calc, headers=h["wt_inspector"]).json()
    assert r["due_at"] == "2027-10-06T16:00:00+08:00" and r["calendar_confirmed"] is False

    assert c.post(f"{API}/calendar/2027/confirm", headers=h["wt_inspector"]).status_code == 403
    r = c.post(f"{API}/calendar/2027/confirm", headers=h["wt_admin"])
    assert r.status_code == 200, r.text
    assert r.json()["confirmed"] is True and r.json()["confirmed_by"] == "wt_admin"
    assert r.json()["source"] == "admin" and r.json()["holidays"] == 1

    r = c.post(f"{API}/worktime/deadline", json=calc, headers=h["wt_inspector"]).json()
    assert r["due_at"] == "2027-10-06T16:00:00+08:00" and r["calendar_confirmed"] is True
    # 80% of 1440 = 1152 min: Thu 120, Mon 480, Tue 480 → 1080, then 72 min on Wed → 09:12
    assert r["warn_at"] == "2027-10-06T09:12:00+08:00"

    # take it back
    r = c.post(f"{API}/calendar/2027/confirm", json={"confirmed": False}, headers=h["wt_admin"])
    assert r.json()["confirmed"] is False

    with_audit = c.app.state.db  # type: ignore[attr-defined]
    with with_audit.session() as s:
        rows = s.execute(
            select(AuditLog.action, AuditLog.entity, AuditLog.actor_name).where(
                AuditLog.entity.in_(["calendar_days", "calendar_years"])
            )
        ).all()
    assert ("create", "calendar_days", "wt_admin") in rows
    assert ("update", "calendar_years", "wt_admin") in rows


def test_working_hours_api(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, h = api
    r = c.get(f"{API}/working-hours", headers=h["wt_inspector"])
    assert r.status_code == 200
    assert r.json() == [
        {
            "valid_from": "2000-01-01",
            "periods": [{"start": "08:00", "end": "12:00"}, {"start": "14:00", "end": "18:00"}],
            "note": "default 08:00–12:00, 14:00–18:00",
            "minutes_per_day": 480,
        }
    ]
    summer = [
        *r.json(),
        {
            "valid_from": "2026-05-01",
            "periods": [{"start": "08:00", "end": "12:00"}, {"start": "14:30", "end": "18:30"}],
            "note": "夏季作息",
        },
    ]
    assert c.put(f"{API}/working-hours", json=summer, headers=h["wt_inspector"]).status_code == 403
    bad = [{**summer[1], "periods": [{"start": "14:30", "end": "12:00"}]}]
    r = c.put(f"{API}/working-hours", json=bad, headers=h["wt_admin"])
    assert r.status_code == 422 and r.json()["error"] == "invalid"
    r = c.put(f"{API}/working-hours", json=summer, headers=h["wt_admin"])
    assert r.status_code == 200, r.text
    assert [x["valid_from"] for x in r.json()] == ["2000-01-01", "2026-05-01"]
    # Wed 2026-05-06 11:30 + 4 working hours: 30 min, then 14:30 + 210 min → 18:00
    calc = {"start": "2026-05-06T11:30:00+08:00", "amount": 4, "unit": "working_hours"}
    r = c.post(f"{API}/worktime/deadline", json=calc, headers=h["wt_inspector"]).json()
    assert r["due_at"] == "2026-05-06T18:00:00+08:00" and r["calendar_confirmed"] is True


def test_time_limits_api(api: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, h = api
    r = c.get(f"{API}/time-limits/defaults", headers=h["wt_inspector"])
    assert r.status_code == 200
    limits = r.json()
    assert {x["stage"] for x in limits} == set(STAGES)
    assert limits[0] == {
        "stage": "accept",
        "urgency": None,
        "amount": 0.5,
        "unit": "working_days",
        "stage_label": "受理",
        "unit_label": "工作日",
    }
    r = c.get(
        f"{API}/time-limits/resolve",
        params={"stage": "handle", "urgency": "特急"},
        headers=h["wt_inspector"],
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "stage": "handle",
        "stage_label": "处置",
        "category_id": None,
        "urgency": "特急",
        "amount": 2.0,
        "unit": "natural_hours",
        "unit_label": "自然小时",
        "source": "default_urgency",
    }
    r = c.get(f"{API}/time-limits/resolve", params={"stage": "fix"}, headers=h["wt_inspector"])
    assert r.status_code == 422 and r.json()["details"] == {"field": "stage", "value": "fix"}
    r = c.get(
        f"{API}/time-limits/resolve",
        params={"stage": "handle", "category_id": 424242},
        headers=h["wt_inspector"],
    )
    assert r.status_code == 404

    items = [
        {k: x[k] for k in ("stage", "urgency", "amount", "unit")}
        for x in limits
        if not (x["stage"] == "handle" and x["urgency"] == "特急")
    ]
    assert (
        c.put(f"{API}/time-limits/defaults", json=items, headers=h["wt_inspector"]).status_code
        == 403
    )
    missing = [x for x in items if x["stage"] != "close"]
    r = c.put(f"{API}/time-limits/defaults", json=missing, headers=h["wt_admin"])
    assert r.status_code == 422 and r.json()["details"]["value"] == ["close"]
    r = c.put(f"{API}/time-limits/defaults", json=items, headers=h["wt_admin"])
    assert r.status_code == 200, r.text
    assert len(r.json()) == len(limits) - 1
    r = c.get(
        f"{API}/time-limits/resolve",
        params={"stage": "handle", "urgency": "特急"},
        headers=h["wt_inspector"],
    ).json()
    assert (r["source"], r["amount"], r["unit"]) == ("default", 4.0, "working_hours")

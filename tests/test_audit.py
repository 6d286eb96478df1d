"""Every write endpoint leaves audit rows (actor, action, entity, before/after) and the
audit log is append-only."""

# The mini-city fixtures are imported from test_scope: pytest injects them by name.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from cityops.core import db as dbmod
from cityops.core.audit import AuditLog
from tests.test_scope import (  # noqa: F401
    A1,
    DA,
    PW,
    fast_argon2,
    grid_centre,
    login,
    mini,
    mini_client,
    mini_template,
)


class Audit:
    """Reads the audit rows written since the last mark."""

    def __init__(self, d: dbmod.Database) -> None:
        self.d = d
        self.mark = self._max()

    def _max(self) -> int:
        with self.d.session() as s:
            return int(s.scalar(select(func.max(AuditLog.id))) or 0)

    def new(self) -> list[AuditLog]:
        with self.d.session() as s:
            rows = list(
                s.scalars(select(AuditLog).where(AuditLog.id > self.mark).order_by(AuditLog.id))
            )
            s.expunge_all()
        self.mark = max([self.mark, *(r.id for r in rows)])
        return rows


def _one(rows: list[AuditLog], action: str, entity: str) -> AuditLog:
    hits = [r for r in rows if r.action == action and r.entity == entity]
    assert hits, f"no {action} {entity} row in {[(r.action, r.entity) for r in rows]}"
    return hits[0]


def test_every_write_endpoint_is_audited(mini_client: TestClient, mini: dbmod.Database) -> None:
    c = mini_client
    audit = Audit(mini)
    secrets_seen: list[str] = [PW]

    def call(method: str, url: str, h: dict[str, str], body: Any = None, status: int = 200) -> Any:
        r = c.request(method, url, headers=h, json=body)
        assert r.status_code == status, (url, r.text)
        return r.json()

    # --- auth
    r = c.post("/api/v1/auth/login", json={"username": "admin", "password": PW})
    token = r.json()["token"]
    secrets_seen.append(token)
    c.cookies.clear()
    h = {"Authorization": f"Bearer {token}"}
    row = _one(audit.new(), "login", "users")
    assert row.actor_name == "admin" and row.ip == "testclient"
    assert row.after is not None and row.after["username"] == "admin"

    checks: list[tuple[str, Callable[[], Any], str, str, Callable[[AuditLog], bool]]] = []

    def expect(
        label: str, do: Callable[[], Any], action: str, entity: str, ok: Callable[[AuditLog], bool]
    ) -> None:
        checks.append((label, do, action, entity, ok))

    user_body = {
        "username": "auditee",
        "display_name": "被审计者",
        "password": "first-long-pass",
        "roles": ["operator"],
        "scope_region_code": DA,
    }
    secrets_seen += ["first-long-pass", "second-long-pass", "third-long-pass"]
    state: dict[str, Any] = {}

    def create_user() -> None:
        state["uid"] = call("POST", "/api/v1/users", h, user_body, 201)["id"]

    expect(
        "POST /users",
        create_user,
        "create",
        "users",
        lambda r: (
            r.before is None
            and r.after is not None
            and r.after["username"] == "auditee"
            and r.after["password_hash"] == "***"
        ),
    )
    expect(
        "PATCH /users/{id}",
        lambda: call(
            "PATCH",
            f"/api/v1/users/{state['uid']}",
            h,
            {"display_name": "改名", "password": "second-long-pass"},
        ),
        "update",
        "users",
        lambda r: (
            r.before is not None
            and r.after is not None
            and r.before["display_name"] == "被审计者"
            and r.after["display_name"] == "改名"
            and r.after["password_hash"] == "***"
            and r.before["password_hash"] == "***"
        ),
    )
    expect(
        "PATCH /users/{id} roles",
        lambda: call("PATCH", f"/api/v1/users/{state['uid']}", h, {"roles": ["dispatcher"]}),
        "delete",
        "user_roles",
        lambda r: r.before == {"user_id": state["uid"], "role": "operator"} and r.after is None,
    )
    expect(
        "POST /users/{id}/unlock",
        lambda: call("POST", f"/api/v1/users/{state['uid']}/unlock", h),
        "unlock",
        "users",
        lambda r: r.before is not None and "failed_logins" in r.before and r.after is not None,
    )

    def password_change() -> None:
        hu = login(c, "auditee", "second-long-pass")
        secrets_seen.append(hu["Authorization"].split()[1])
        call(
            "POST",
            "/api/v1/auth/password",
            hu,
            {"old_password": "second-long-pass", "new_password": "third-long-pass"},
        )
        state["hu"] = hu

    expect(
        "POST /auth/password",
        password_change,
        "password_change",
        "users",
        lambda r: r.actor_name == "auditee" and r.after is not None,
    )
    expect(
        "POST /auth/logout",
        lambda: call("POST", "/api/v1/auth/logout", state["hu"]),
        "logout",
        "users",
        lambda r: r.actor_name == "auditee",
    )
    expect(
        "POST /units",
        lambda: call(
            "POST",
            "/api/v1/units",
            h,
            {"code": "U-N", "name": "新单位", "unit_type": "处置单位", "region_codes": [DA]},
            201,
        ),
        "create",
        "units",
        lambda r: r.after is not None and r.after["code"] == "U-N",
    )
    expect(
        "PATCH /units/{code}",
        lambda: call("PATCH", "/api/v1/units/U-N", h, {"name": "新单位二", "phone": "110"}),
        "update",
        "units",
        lambda r: (
            r.before == {"name": "新单位", "phone": None}
            and r.after == {"name": "新单位二", "phone": "110"}
        ),
    )
    gcode = DA + "001001001"
    expect(
        "PATCH /grids/{code}",
        lambda: call(
            "PATCH",
            f"/api/v1/grids/{gcode}",
            h,
            {"management_level": "二级", "inspectors": ["inspector1"]},
        ),
        "update",
        "grids",
        lambda r: (
            r.before == {"management_level": None} and r.after == {"management_level": "二级"}
        ),
    )
    expect(
        "PATCH /grids/{code} inspectors",
        lambda: call("PATCH", f"/api/v1/grids/{gcode}", h, {"inspectors": []}),
        "update",
        "grids",
        lambda r: r.before == {"inspectors": ["inspector1"]} and r.after == {"inspectors": []},
    )
    lon, lat = grid_centre(gcode)
    expect(
        "POST /components",
        lambda: call(
            "POST",
            "/api/v1/components",
            h,
            {"code": "99010101003000001", "lon": lon, "lat": lat},
            201,
        ),
        "create",
        "components",
        lambda r: (
            r.before is None and r.after is not None and r.after["code"] == "99010101003000001"
        ),
    )
    expect(
        "PATCH /components/{code}",
        lambda: call("PATCH", f"/api/v1/components/{A1}", h, {"status": "丢失"}),
        "update",
        "components",
        lambda r: (
            r.before is not None
            and r.after is not None
            and r.before["status"] == "完好"
            and r.after["status"] == "丢失"
        ),
    )

    def cat_id() -> int:
        r = c.get("/api/v1/categories", headers=h, params={"kind": "matter", "q": "06001"})
        return int(r.json()[0]["id"])

    expect(
        "PATCH /categories/{id}",
        lambda: call("PATCH", f"/api/v1/categories/{cat_id()}", h, {"default_urgency": "紧急"}),
        "update",
        "categories",
        lambda r: (
            r.before == {"default_urgency": "一般"} and r.after == {"default_urgency": "紧急"}
        ),
    )
    limit = {"stage": "handle", "urgency": None, "amount": 4, "unit": "working_hours"}
    expect(
        "PUT /categories/{id}/time-limits (add)",
        lambda: call("PUT", f"/api/v1/categories/{cat_id()}/time-limits", h, [limit]),
        "create",
        "category_time_limits",
        lambda r: r.after is not None and r.after["amount"] == 4,
    )
    expect(
        "PUT /categories/{id}/time-limits (change)",
        lambda: call(
            "PUT", f"/api/v1/categories/{cat_id()}/time-limits", h, [{**limit, "amount": 2}]
        ),
        "update",
        "category_time_limits",
        lambda r: r.before == {"amount": 4.0} and r.after == {"amount": 2.0},
    )
    expect(
        "PUT /categories/{id}/time-limits (remove)",
        lambda: call("PUT", f"/api/v1/categories/{cat_id()}/time-limits", h, []),
        "delete",
        "category_time_limits",
        lambda r: r.before is not None and r.after is None,
    )
    expect(
        "POST /categories",
        lambda: call(
            "POST",
            "/api/v1/categories",
            h,
            {"code": "06998", "name": "地方事项", "kind": "matter"},
            201,
        ),
        "create",
        "categories",
        lambda r: r.after is not None and r.after["standard"] == "local",
    )
    expect(
        "PUT /settings/category-standard",
        lambda: call("PUT", "/api/v1/settings/category-standard", h, {"standard": "gbt30428"}),
        "update",
        "city_settings",
        lambda r: r.before == {"value": "gbt47678"} and r.after == {"value": "gbt30428"},
    )

    for label, do, action, entity, ok in checks:
        do()
        rows = audit.new()
        row = _one(rows, action, entity)
        assert row.actor_id is not None, label
        if entity != "users" or action not in ("password_change", "logout"):
            assert row.actor_name == "admin", label
        assert row.ip == "testclient", label
        assert row.entity_id, label
        assert ok(row), (label, row.before, row.after)

    # No password, hash or token anywhere in the log.
    with mini.session() as s:
        dump = json.dumps(
            [[r.before, r.after, r.actor_name] for r in s.scalars(select(AuditLog))],
            ensure_ascii=False,
        )
    assert "$argon2" not in dump
    for secret in secrets_seen:
        assert secret not in dump


def test_create_rows_name_their_entity(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "admin")
    audit = Audit(mini)
    r = mini_client.post(
        "/api/v1/units", headers=h, json={"code": "U-N", "name": "新单位", "unit_type": "处置单位"}
    )
    row = _one(audit.new(), "create", "units")
    assert row.entity_id == str(r.json()["id"])


def test_failed_login_audit_has_no_password(mini_client: TestClient, mini: dbmod.Database) -> None:
    audit = Audit(mini)
    r = mini_client.post("/api/v1/auth/login", json={"username": "admin", "password": "guess-123"})
    assert r.status_code == 401
    rows = audit.new()
    failed = _one(rows, "login_failed", "users")
    assert failed.actor_name == "admin" and failed.after is not None
    assert failed.after["reason"] == "bad_password"
    assert "guess-123" not in json.dumps([(r.before, r.after) for r in rows])


def test_audit_endpoint(mini_client: TestClient) -> None:
    h = login(mini_client, "admin")
    mini_client.patch(f"/api/v1/components/{A1}", headers=h, json={"status": "破损"})
    r = mini_client.get(
        "/api/v1/audit", headers=h, params={"entity": "components", "actor": "admin"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 1
    item = body["items"][0]
    assert item["actor_name"] == "admin" and item["action"] == "update"
    assert item["before"]["status"] == "完好" and item["after"]["status"] == "破损"
    r = mini_client.get(
        "/api/v1/audit",
        headers=h,
        params={"entity": "components", "entity_id": item["entity_id"], "actor": "admin"},
    )
    assert r.json()["total"] == 1
    r = mini_client.get("/api/v1/audit", headers=h, params={"actor": "nobody"})
    assert r.json()["total"] == 0
    r = mini_client.get("/api/v1/audit", headers=h, params={"since": "2999-01-01T00:00:00"})
    assert r.json()["total"] == 0
    r = mini_client.get(
        "/api/v1/audit", headers=h, params={"action": "login", "since": "2000-01-01T00:00:00Z"}
    )
    assert r.json()["total"] == 1
    # Newest first, paged.
    r = mini_client.get("/api/v1/audit", headers=h, params={"page_size": 2})
    ids = [i["id"] for i in r.json()["items"]]
    assert ids == sorted(ids, reverse=True) and len(ids) == 2


@pytest.mark.parametrize(
    "sql",
    ["UPDATE audit_log SET actor_name = 'mallory'", "DELETE FROM audit_log"],
)
def test_audit_log_is_append_only(mini: dbmod.Database, sql: str) -> None:
    with mini.session() as s:
        n = s.scalar(select(func.count()).select_from(AuditLog))
    assert n
    with pytest.raises(DBAPIError, match="append-only"), mini.session() as s:
        s.execute(text(sql))
    with mini.session() as s:
        assert s.scalar(select(func.count()).select_from(AuditLog)) == n
        assert s.scalar(select(func.count()).where(AuditLog.actor_name == "mallory")) == 0

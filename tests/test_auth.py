"""Login, lockout, sessions, passwords and user administration over the API."""

# The mini-city fixtures are imported from test_scope: pytest injects them by name.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from cityops.access.models import AuthSession, User
from cityops.core import db as dbmod
from cityops.core.audit import AuditLog
from cityops.core.security import SESSION_COOKIE, hash_token
from cityops.core.settings import get_settings
from tests.test_scope import DA, DB, PW, fast_argon2, login, mini, mini_client, mini_template  # noqa: F401

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def lockout_after_3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CITYOPS_LOGIN_MAX_FAILURES", "3")
    monkeypatch.setenv("CITYOPS_LOCKOUT_MINUTES", "15")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _post_login(c: TestClient, username: str, password: str) -> Any:
    r = c.post(LOGIN, json={"username": username, "password": password})
    c.cookies.clear()
    return r


def _user(d: dbmod.Database, username: str) -> User:
    with d.session() as s:
        u = s.scalars(select(User).where(User.username == username)).one()
        s.expunge(u)
        return u


def _audit(d: dbmod.Database, action: str) -> list[AuditLog]:
    with d.session() as s:
        rows = list(s.scalars(select(AuditLog).where(AuditLog.action == action)))
        s.expunge_all()
        return rows


def test_login_ok(mini_client: TestClient, mini: dbmod.Database) -> None:
    r = mini_client.post(LOGIN, json={"username": "handler_a", "password": PW})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["token"]) >= 40
    exp = datetime.fromisoformat(body["expires_at"])
    want = datetime.now(UTC) + timedelta(hours=get_settings().token_ttl_hours)
    assert abs((exp - want).total_seconds()) < 60
    u = body["user"]
    assert u["username"] == "handler_a" and u["roles"] == ["handler"]
    assert u["unit"]["code"] == "U-A"
    assert u["scope"] == {
        "region_code": DA,
        "region_name": "东区",
        "region_level": "district",
        "unit_only": True,
    }
    # The cookie for the console: the same token, HttpOnly, SameSite=Lax.
    set_cookie = r.headers["set-cookie"]
    assert f"{SESSION_COOKIE}={body['token']}" in set_cookie
    assert "HttpOnly" in set_cookie and "samesite=lax" in set_cookie.lower()
    # Cookie alone authenticates…
    me = mini_client.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["username"] == "handler_a"
    mini_client.cookies.clear()
    # …and so does the bearer token.
    me = mini_client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["id"] == u["id"]
    # Only the hash of the token is stored.
    with mini.session() as s:
        rows = list(s.scalars(select(AuthSession)))
        assert [a.token_hash for a in rows] == [hash_token(body["token"])]
        assert rows[0].kind == "api"
    assert [a.entity_id for a in _audit(mini, "login")] == [str(u["id"])]


def test_not_logged_in(mini_client: TestClient) -> None:
    r = mini_client.get("/api/v1/auth/me")
    assert r.status_code == 401
    assert "not logged in" in r.json()["message"]
    r = mini_client.get("/api/v1/auth/me", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["message"]
    r = mini_client.get("/api/v1/auth/me", headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and "invalid token" in r.json()["message"]
    assert mini_client.get("/api/v1/regions").status_code == 401


def test_wrong_password_and_unknown_user_look_the_same(
    mini_client: TestClient, mini: dbmod.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cityops.access import service

    calls: list[str] = []
    real = service.verify_password

    def spy(h: str, p: str) -> bool:
        calls.append(h)
        return real(h, p)

    monkeypatch.setattr(service, "verify_password", spy)
    wrong = _post_login(mini_client, "handler_a", "not-the-password")
    unknown = _post_login(mini_client, "nobody-here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["message"] == "invalid username or password"
    # Both paths verified an argon2 hash (the unknown user against a dummy one).
    assert len(calls) == 2 and all(h.startswith("$argon2id$") for h in calls)
    failed = _audit(mini, "login_failed")
    assert {r.after["reason"] for r in failed if r.after} == {"bad_password", "unknown_user"}
    assert all("not-the-password" not in str(r.after) for r in failed)


@pytest.mark.usefixtures("lockout_after_3")
def test_lockout_and_unlock_by_time(mini_client: TestClient, mini: dbmod.Database) -> None:
    for _ in range(2):
        assert _post_login(mini_client, "district1", "wrong-password").status_code == 401
    r = _post_login(mini_client, "district1", "wrong-password")
    assert r.status_code == 423
    assert "locked" in r.json()["message"]
    # Even the right password is refused while locked.
    r = _post_login(mini_client, "district1", PW)
    assert r.status_code == 423
    assert "locked" in r.json()["message"] and "minute" in r.json()["message"]
    u = _user(mini, "district1")
    assert u.failed_logins == 3 and u.locked_until is not None
    assert u.locked_until > datetime.now(UTC) + timedelta(minutes=14)
    assert len(_audit(mini, "lockout")) == 1
    assert len(_audit(mini, "login_refused")) == 1
    # The lock runs out.
    with mini.session() as s:
        s.execute(
            update(User)
            .where(User.username == "district1")
            .values(locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert _post_login(mini_client, "district1", PW).status_code == 200
    u = _user(mini, "district1")
    assert u.failed_logins == 0 and u.locked_until is None


@pytest.mark.usefixtures("lockout_after_3")
def test_success_resets_the_counter(mini_client: TestClient, mini: dbmod.Database) -> None:
    for _ in range(2):
        assert _post_login(mini_client, "district1", "wrong-password").status_code == 401
    assert _post_login(mini_client, "district1", PW).status_code == 200
    assert _user(mini, "district1").failed_logins == 0
    for _ in range(2):
        assert _post_login(mini_client, "district1", "wrong-password").status_code == 401
    assert _post_login(mini_client, "district1", PW).status_code == 200


@pytest.mark.usefixtures("lockout_after_3")
def test_admin_unlock(mini_client: TestClient, mini: dbmod.Database) -> None:
    for _ in range(3):
        _post_login(mini_client, "district1", "wrong-password")
    assert _post_login(mini_client, "district1", PW).status_code == 423
    h = login(mini_client, "admin")
    uid = _user(mini, "district1").id
    r = mini_client.get(f"/api/v1/users/{uid}", headers=h)
    assert r.json()["locked"] is True and r.json()["failed_logins"] == 3
    r = mini_client.post(f"/api/v1/users/{uid}/unlock", headers=h)
    assert r.status_code == 200
    assert r.json()["locked"] is False and r.json()["failed_logins"] == 0
    assert _post_login(mini_client, "district1", PW).status_code == 200
    unlock = _audit(mini, "unlock")
    assert len(unlock) == 1 and unlock[0].actor_name == "admin"
    before = unlock[0].before or {}
    assert before["failed_logins"] == 3 and before["locked_until"] is not None


def test_token_expiry(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "district1")
    assert mini_client.get("/api/v1/auth/me", headers=h).status_code == 200
    with mini.session() as s:
        s.execute(update(AuthSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    r = mini_client.get("/api/v1/auth/me", headers=h)
    assert r.status_code == 401
    assert "expired" in r.json()["message"]


def test_logout_revokes(mini_client: TestClient, mini: dbmod.Database) -> None:
    h1 = login(mini_client, "district1")
    h2 = login(mini_client, "district1")
    r = mini_client.post("/api/v1/auth/logout", headers=h1)
    assert r.status_code == 200
    r = mini_client.get("/api/v1/auth/me", headers=h1)
    assert r.status_code == 401 and "logged out" in r.json()["message"]
    # Other sessions stay.
    assert mini_client.get("/api/v1/auth/me", headers=h2).status_code == 200
    assert len(_audit(mini, "logout")) == 1
    # Logging out by cookie drops the cookie.
    r = mini_client.post(LOGIN, json={"username": "district1", "password": PW})
    token = r.json()["token"]
    r = mini_client.post("/api/v1/auth/logout")
    assert r.status_code == 200
    assert (
        f'{SESSION_COOKIE}=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    )
    mini_client.cookies.clear()
    bearer = {"Authorization": f"Bearer {token}"}
    assert mini_client.get("/api/v1/auth/me", headers=bearer).status_code == 401


def test_cookie_writes_need_same_origin(mini_client: TestClient) -> None:
    mini_client.post(LOGIN, json={"username": "admin", "password": PW})
    r = mini_client.post("/api/v1/auth/logout", headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = mini_client.post("/api/v1/auth/logout", headers={"Origin": "http://testserver"})
    assert r.status_code == 200


def test_password_change(mini_client: TestClient, mini: dbmod.Database) -> None:
    h1 = login(mini_client, "inspector1")
    h2 = login(mini_client, "inspector1")
    url = "/api/v1/auth/password"
    r = mini_client.post(
        url, headers=h1, json={"old_password": "wrong-one!", "new_password": "x" * 12}
    )
    assert r.status_code == 403 and "current password" in r.json()["message"]
    r = mini_client.post(url, headers=h1, json={"old_password": PW, "new_password": "short"})
    assert r.status_code == 422 and "at least" in r.json()["message"]
    r = mini_client.post(url, headers=h1, json={"old_password": PW, "new_password": PW})
    assert r.status_code == 422 and "differ" in r.json()["message"]
    new = "a-brand-new-secret"
    r = mini_client.post(url, headers=h1, json={"old_password": PW, "new_password": new})
    assert r.status_code == 200 and r.json() == {"sessions_revoked": 1}
    assert mini_client.get("/api/v1/auth/me", headers=h1).status_code == 200
    assert mini_client.get("/api/v1/auth/me", headers=h2).status_code == 401
    assert _post_login(mini_client, "inspector1", PW).status_code == 401
    assert _post_login(mini_client, "inspector1", new).status_code == 200
    u = _user(mini, "inspector1")
    assert u.password_hash.startswith("$argon2id$")
    assert new not in u.password_hash
    assert u.password_changed_at is not None
    assert len(_audit(mini, "password_change")) == 1


def test_inactive_user_refused(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "district1")
    ha = login(mini_client, "admin")
    uid = _user(mini, "district1").id
    r = mini_client.patch(f"/api/v1/users/{uid}", headers=ha, json={"active": False})
    assert r.status_code == 200 and r.json()["active"] is False
    # The open session is gone…
    assert mini_client.get("/api/v1/auth/me", headers=h).status_code == 401
    # …and a new login is refused even with the right password.
    r = _post_login(mini_client, "district1", PW)
    assert r.status_code == 401
    assert "disabled" in r.json()["message"]
    # A wrong password still gets the generic answer.
    assert _post_login(mini_client, "district1", "nope-nope")
    assert _post_login(mini_client, "district1", "nope-nope").json()["message"] == (
        "invalid username or password"
    )
    mini_client.patch(f"/api/v1/users/{uid}", headers=ha, json={"active": True})
    assert _post_login(mini_client, "district1", PW).status_code == 200


def test_non_admin_cannot_manage_users(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "district1")
    uid = _user(mini, "handler_a").id
    new = {"username": "x1", "display_name": "X", "password": "long-enough-pw", "roles": ["admin"]}
    for method, url, body in (
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/users", new),
        ("GET", f"/api/v1/users/{uid}", None),
        ("PATCH", f"/api/v1/users/{uid}", {"roles": ["admin"]}),
        ("POST", f"/api/v1/users/{uid}/unlock", None),
        ("GET", "/api/v1/audit", None),
    ):
        r = mini_client.request(method, url, headers=h, json=body)
        assert r.status_code == 403, (method, url)
        assert r.json()["message"] == "this needs the role admin"
        assert r.json()["details"]["required_roles"] == ["admin"]
    assert mini_client.get("/api/v1/users").status_code == 401


def test_admin_user_management(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "admin")
    base = {
        "username": "operator9",
        "display_name": "受理员九",
        "password": "long-enough-pw",
        "roles": ["operator"],
        "unit_code": "U-CENTER",
        "scope_region_code": DB,
        "phone": "13800000000",
    }
    for change, field in (
        ({"roles": ["operator", "boss"]}, "roles"),
        ({"roles": []}, "roles"),
        ({"scope_region_code": "123456"}, "scope_region_code"),
        ({"unit_code": "NOPE"}, "unit_code"),
        ({"password": "short"}, "password"),
        ({"username": "has space"}, "username"),
    ):
        r = mini_client.post("/api/v1/users", headers=h, json={**base, **change})
        assert r.status_code == 422, change
        assert r.json()["details"]["field"] == field
    r = mini_client.post("/api/v1/users", headers=h, json=base)
    assert r.status_code == 201, r.text
    user = r.json()
    assert user["roles"] == ["operator"] and user["scope"]["region_code"] == DB
    assert user["unit"]["code"] == "U-CENTER" and user["active"] is True
    assert "password" not in user and "password_hash" not in user
    assert mini_client.post("/api/v1/users", headers=h, json=base).status_code == 409
    assert _user(mini, "operator9").password_hash.startswith("$argon2id$")
    # Lists and filters.
    r = mini_client.get("/api/v1/users", headers=h, params={"role": "handler"})
    assert {u["username"] for u in r.json()["items"]} == {"handler_a", "handler_b"}
    r = mini_client.get("/api/v1/users", headers=h, params={"unit": "U-CENTER"})
    assert {u["username"] for u in r.json()["items"]} == {"admin", "operator9"}
    r = mini_client.get("/api/v1/users", headers=h, params={"page_size": 3, "page": 2})
    assert r.json()["total"] == 8 and len(r.json()["items"]) == 3
    # Changes.
    uid = user["id"]
    r = mini_client.patch(
        f"/api/v1/users/{uid}",
        headers=h,
        json={
            "roles": ["operator", "shift_leader"],
            "scope_region_code": None,
            "display_name": "九",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["roles"] == ["operator", "shift_leader"]
    assert r.json()["scope"]["region_code"] is None and r.json()["display_name"] == "九"
    assert r.json()["phone"] == "13800000000"
    # Password reset logs the user out.
    h9 = login(mini_client, "operator9", "long-enough-pw")
    r = mini_client.patch(f"/api/v1/users/{uid}", headers=h, json={"password": "another-long-pw"})
    assert r.status_code == 200
    assert mini_client.get("/api/v1/auth/me", headers=h9).status_code == 401
    assert _post_login(mini_client, "operator9", "another-long-pw").status_code == 200
    # An admin cannot lock themselves out.
    me = mini_client.get("/api/v1/auth/me", headers=h).json()["id"]
    r = mini_client.patch(f"/api/v1/users/{me}", headers=h, json={"roles": ["operator"]})
    assert r.status_code == 409
    r = mini_client.patch(f"/api/v1/users/{me}", headers=h, json={"active": False})
    assert r.status_code == 409
    assert mini_client.get("/api/v1/users/999999", headers=h).status_code == 404


def test_scoped_admin_manages_only_its_scope(mini_client: TestClient, mini: dbmod.Database) -> None:
    h = login(mini_client, "dadmin")
    r = mini_client.get("/api/v1/users", headers=h, params={"page_size": 100})
    names = {u["username"] for u in r.json()["items"]}
    assert names == {"dadmin", "district1", "handler_a", "inspector1"}
    other = _user(mini, "district2").id
    assert mini_client.get(f"/api/v1/users/{other}", headers=h).status_code == 404
    body = {
        "username": "op-a",
        "display_name": "A",
        "password": "long-enough-pw",
        "roles": ["operator"],
    }
    r = mini_client.post("/api/v1/users", headers=h, json=body)
    assert r.status_code == 403  # city-wide scope is not theirs to give
    r = mini_client.post("/api/v1/users", headers=h, json={**body, "scope_region_code": DB})
    assert r.status_code == 403
    r = mini_client.post("/api/v1/users", headers=h, json={**body, "scope_region_code": DA + "001"})
    assert r.status_code == 201


def test_demo_users_log_in(request: pytest.FixtureRequest) -> None:
    """With the demo city (cityops.geo.demo), every demo user logs in with demo-pass-2026."""
    pytest.importorskip("cityops.geo.demo")
    c: TestClient = request.getfixturevalue("city_client")
    for username in ("admin", "district1"):
        r = c.post(LOGIN, json={"username": username, "password": "demo-pass-2026"})
        assert r.status_code == 200, (username, r.text)
    c.cookies.clear()
    h = {"Authorization": f"Bearer {r.json()['token']}"}
    scope = r.json()["user"]["scope"]["region_code"]
    assert scope is not None
    regions = c.get("/api/v1/regions", headers=h, params={"page_size": 1000}).json()["items"]
    assert regions and all(x["code"].startswith(scope) for x in regions)


def test_concurrent_logins_and_writes(mini_client: TestClient, mini: dbmod.Database) -> None:
    """Parallel logins (and writes) all succeed, also on SQLite (no 'database is locked')."""
    from concurrent.futures import ThreadPoolExecutor

    h = login(mini_client, "admin")
    names = ["district1", "district2", "handler_a", "handler_b", "inspector1", "dadmin"]

    def do_login(name: str) -> int:
        r = mini_client.post(LOGIN, json={"username": name, "password": PW}, cookies={})
        return r.status_code

    def do_write(i: int) -> int:
        r = mini_client.patch(f"/api/v1/grids/{DA}001001001", headers=h, json={"note": f"note {i}"})
        return r.status_code

    with ThreadPoolExecutor(8) as pool:
        logins = list(pool.map(do_login, names * 2))
        writes = list(pool.map(do_write, range(8)))
    assert logins == [200] * len(logins)
    assert writes == [200] * 8


async def test_concurrent_requests_of_one_token_load_it_once(
    mini_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cached principal of a token is missing (expired, or forgotten after a logout
    elsewhere), many requests with that token at once cost one look-up, not one each; a bad
    token is refused for every waiter."""
    import asyncio
    import time

    from starlette.requests import Request

    from cityops.core import security
    from cityops.core.errors import Unauthorized

    token = login(mini_client, "handler_a")["Authorization"].removeprefix("Bearer ")
    calls: list[str] = []
    real = security._load_uncached

    def slow(request: Request, tok: str, via: str) -> Any:
        calls.append(tok)
        time.sleep(0.05)  # the other requests arrive while this one loads
        return real(request, tok, via)

    monkeypatch.setattr(security, "_load_uncached", slow)

    def request(tok: str, n: int) -> Request:
        headers = [(b"authorization", f"Bearer {tok}".encode())]
        scope = {"type": "http", "app": mini_client.app, "headers": headers,
                 "client": (f"10.0.0.{n}", 1000), "method": "POST", "path": "/api/v1/cases"}  # fmt: skip
        return Request(scope)

    security.forget_principals()
    got = await asyncio.gather(
        *(security.current_principal_cached(request(token, n)) for n in range(8))
    )
    assert calls == [token]
    assert {p.username for p in got} == {"handler_a"}
    assert sorted(p.ip for p in got) == sorted(f"10.0.0.{n}" for n in range(8))  # their own
    calls.clear()
    bad = await asyncio.gather(
        *(security.current_principal_cached(request("x" * 43, n)) for n in range(4)),
        return_exceptions=True,
    )
    assert calls == ["x" * 43] and all(isinstance(e, Unauthorized) for e in bad)

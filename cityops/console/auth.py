"""Console login: the same accounts, passwords, lockout and sessions as the API.

Logging in opens an ``auth_sessions`` row through :func:`cityops.access.service.login`; the
console keeps its token in the browser's server-side storage (``app.storage.user``). Every
page resolves the token again (a revoked or expired session, or a disabled account, logs the
browser out at once) and checks the roles it needs with :func:`require`.
"""

from __future__ import annotations

from nicegui import app, ui

from cityops.access import service as access
from cityops.core import security
from cityops.core.audit import current_actor
from cityops.core.db import get_db
from cityops.core.errors import DomainError, Unauthorized
from cityops.core.security import Principal

#: Where each role lands after login (first match wins, in this order).
HOME_BY_ROLE: tuple[tuple[str, str], ...] = (
    ("admin", "/admin"),
    ("leader", "/map"),
    ("commander", "/flood"),
    ("monitor", "/monitoring"),
    ("operator", "/work"),
    ("shift_leader", "/work"),
    ("dispatcher", "/work"),
    ("handler", "/work"),
    ("inspector", "/m"),
    ("reviewer", "/review"),
    ("evaluator", "/evaluation/tasks"),
)


def home_of(principal: Principal) -> str:
    for role, path in HOME_BY_ROLE:
        if role in principal.roles:
            return path
    return "/work"


def principal_for_token(token: str) -> Principal | None:
    """The user behind a console token, or None when it is unknown, revoked or expired."""
    with get_db().session() as s:
        try:
            return security.principal_for_token(s, token, via="console")[0]
        except Unauthorized:
            return None


def current() -> Principal | None:
    """The logged-in user of this browser (also made the audit actor), or None."""
    token = app.storage.user.get("token")
    if not token:
        return None
    p = principal_for_token(token)
    if p is None:
        app.storage.user.pop("token", None)
        return None
    current_actor.set(p.actor)
    return p


def log_in(username: str, password: str, ip: str | None = None) -> Principal:
    """Check the password (lockout and audit as for the API); raises DomainError."""
    with get_db().session() as s:
        result = access.login(s, username, password, ip)
        token = result.token
    app.storage.user["token"] = token
    p = principal_for_token(token)
    if p is None:  # pragma: no cover - the session was just created
        raise RuntimeError("login session vanished")
    return p


def log_out() -> None:
    p = current()
    if p is not None:
        with get_db().session() as s:
            access.logout(s, p)
    app.storage.user.pop("token", None)


def require(*roles: str) -> Principal | None:
    """The current user if they hold one of ``roles`` (any role when none are given).

    Not logged in → sent to the login page (and back here afterwards); logged in without the
    role → a refusal message on the page. Callers return when this gives None."""
    p = current()
    if p is None:
        try:
            url = ui.context.client.request.url
            path = url.path + (f"?{url.query}" if url.query else "")
        except Exception:  # pragma: no cover - outside a page
            path = "/"
        app.storage.user["after_login"] = path
        ui.navigate.to("/login")
        return None
    if roles and not p.roles.intersection(roles) and not p.is_admin:
        from cityops.console.i18n import t
        from cityops.console.widgets import tid

        tid(
            ui.label(t("无权访问此页面", "You may not open this page")).classes(
                "text-negative text-h6 q-pa-md"
            ),
            "forbidden",
        )
        return None
    return p


def error_text(exc: DomainError) -> str:
    return str(exc)

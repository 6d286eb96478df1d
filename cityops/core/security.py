"""Authentication and authorisation for the API: who is calling, what may they see and change.

* :func:`get_session` / :data:`SessionDep` — one database unit of work per request
  (commit when the endpoint returns, rollback on any exception). It ends **before** the
  response is sent (dependency scope ``"function"``), so a client never sees an answer
  for a write that is not committed yet. On SQLite, requests that may write take the
  write lock first (see :func:`lock_for_write`), so parallel writers wait for each other
  instead of failing with "database is locked".
* :func:`current_principal` / :data:`PrincipalDep` — the logged-in user, from an
  ``Authorization: Bearer <token>`` header or the ``cityops_session`` cookie. Only the
  SHA-256 of a token is stored (``auth_sessions``). It also sets
  :data:`cityops.core.audit.current_actor`, so every ORM write in the request is audited
  under that user.
* :func:`require_roles` — a dependency factory: 403 unless the user holds one of the roles.
* Data scope helpers. A user's scope is a region-code prefix (district 6 digits, street 9,
  community 12) or ``None`` for the whole city. Objects outside the scope are answered as
  **404** (their existence is not revealed); writes that would put something outside the
  scope are **403**.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import ColumnElement, and_, event, select, text, true
from sqlalchemy.orm import Session

from cityops.core.audit import Actor, current_actor
from cityops.core.db import Database
from cityops.core.errors import Forbidden, NotFound, Unauthorized

#: Name of the console's session cookie (same token as the bearer token).
SESSION_COOKIE = "cityops_session"

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a login token: the only form in which tokens are stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A fresh random token and its hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


# --------------------------------------------------------------------------- sessions


def lock_for_write(session: Session) -> None:
    """Make the session's transaction a writer from its first statement (SQLite only).

    SQLite in WAL mode cannot turn a transaction that has already read into a writer once
    another connection has committed: it fails at once with "database is locked" (the busy
    timeout does not apply). Taking the write lock as the *first* statement of the
    transaction makes concurrent writers queue (busy timeout) instead. Call it before any
    read of the transaction; it does nothing on PostgreSQL.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE city_settings SET key = key WHERE 0"))


def _session(request: Request, write_lock: bool) -> Iterator[Session]:
    db: Database = request.app.state.db
    with db.session() as s:
        if write_lock:
            lock_for_write(s)
        yield s


def get_session(request: Request) -> Iterator[Session]:
    """Dependency: a session of the app's database; commit on success, rollback on error.

    Requests that may write (not GET/HEAD/OPTIONS) take SQLite's write lock up front."""
    yield from _session(request, request.method not in _SAFE_METHODS)


def get_session_unlocked(request: Request) -> Iterator[Session]:
    """Like :func:`get_session` without the up-front SQLite write lock, for endpoints that
    do slow reads first (password checks) and call :func:`lock_for_write` themselves."""
    yield from _session(request, False)


#: Use this (never ``Depends(get_session)`` directly) so that every dependency of a request
#: shares one session, and the commit happens before the response is sent.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
UnlockedSessionDep = Annotated[Session, Depends(get_session_unlocked, scope="function")]


# --------------------------------------------------------------------------- principal


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user_id: int
    username: str
    display_name: str
    roles: frozenset[str]
    unit_id: int | None
    scope_region_code: str | None
    scope_unit_only: bool
    #: The ``auth_sessions`` row the caller authenticated with (for logout).
    session_id: int | None = None
    ip: str | None = None
    #: How the token came: ``"bearer"`` or ``"cookie"``.
    via: str = "bearer"

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def city_wide(self) -> bool:
        return self.scope_region_code is None

    @property
    def actor(self) -> Actor:
        return Actor(self.user_id, self.username, self.ip)


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _token_from(request: Request) -> tuple[str | None, str]:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return value.strip(), "bearer"
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie, "cookie"
    return None, "none"


def _check_origin(request: Request) -> None:
    """Cookie-authenticated writes must come from our own origin (CSRF defence in depth;
    the cookie is also ``SameSite=Lax``)."""
    if request.method in _SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1].rstrip("/") != host:
        raise Forbidden("cross-site request refused: use a bearer token for API clients")


def principal_for_token(
    session: Session, token: str, via: str = "bearer", ip: str | None = None
) -> tuple[Principal, datetime]:
    """The principal of a login token and the expiry of its session (401 when not valid:
    unknown, revoked, expired, or the account disabled). Used by the API and the console."""
    from cityops.access.models import AuthSession, User

    row = session.execute(
        select(AuthSession, User)
        .join(User, User.id == AuthSession.user_id)
        .where(AuthSession.token_hash == hash_token(token))
    ).first()
    if row is None:
        raise Unauthorized("invalid token: log in again")
    auth, user = row
    if auth.revoked:
        raise Unauthorized("this session was logged out or revoked: log in again")
    if auth.expires_at <= datetime.now(UTC):
        raise Unauthorized("the session has expired: log in again")
    if not user.active:
        raise Unauthorized("the account is disabled")
    principal = Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        roles=frozenset(user.roles),
        unit_id=user.unit_id,
        scope_region_code=user.scope_region_code,
        scope_unit_only=user.scope_unit_only,
        session_id=auth.id,
        ip=ip,
        via=via,
    )
    return principal, auth.expires_at


def _resolve(
    request: Request, session: Session, token: str, via: str
) -> tuple[Principal, datetime]:
    """The principal of a request's token (cookie logins also pass the origin check)."""
    result = principal_for_token(session, token, via, client_ip(request))
    if via == "cookie":
        _check_origin(request)
    return result


def _no_token() -> Unauthorized:
    return Unauthorized(
        "not logged in: send 'Authorization: Bearer <token>' (POST /api/v1/auth/login)"
    )


def load_principal(request: Request, session: SessionDep) -> Principal:
    """Resolve the token to a user (runs in the thread pool: it reads the database)."""
    token, via = _token_from(request)
    if token is None:
        raise _no_token()
    return _resolve(request, session, token, via)[0]


#: How long a resolved token is reused by :data:`CachedPrincipalDep` without a database read.
#: A logout, revocation or disabled account takes effect there after at most this long
#: (at once in this process when :func:`forget_principals` is called).
PRINCIPAL_CACHE_SECONDS = 5.0
_principal_cache: dict[str, tuple[float, datetime, Principal]] = {}
_principal_cache_lock = threading.Lock()


def forget_principals() -> None:
    """Drop every cached token → principal (call after a logout or a change of roles)."""
    with _principal_cache_lock:
        _principal_cache.clear()


_AUTH_TABLES = frozenset({"auth_sessions", "users", "user_roles"})
_AUTH_DIRTY = "cityops_auth_dirty"


@event.listens_for(Session, "before_flush")
def _note_auth_change(session: Session, _ctx: Any, _instances: Any) -> None:
    """A logout, revocation, role change or disabled account written by this process drops
    the cache at once (and again at its commit); other processes see it within
    :data:`PRINCIPAL_CACHE_SECONDS`."""
    for coll in (session.new, session.dirty, session.deleted):
        if any(getattr(o, "__tablename__", None) in _AUTH_TABLES for o in coll):
            session.info[_AUTH_DIRTY] = True
            forget_principals()
            return


@event.listens_for(Session, "do_orm_execute")
def _note_auth_statement(state: Any) -> None:
    """The same for bulk ``update()``/``delete()`` statements (logout, revocation)."""
    if state.is_update or state.is_delete:
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in _AUTH_TABLES:
            state.session.info[_AUTH_DIRTY] = True
            forget_principals()


@event.listens_for(Session, "after_commit")
def _auth_committed(session: Session) -> None:
    if session.info.pop(_AUTH_DIRTY, False):
        forget_principals()


@event.listens_for(Session, "after_rollback")
def _auth_rolled_back(session: Session) -> None:
    session.info.pop(_AUTH_DIRTY, None)


def _load_uncached(request: Request, token: str, via: str) -> tuple[Principal, datetime]:
    db: Database = request.app.state.db
    with db.session() as s:
        return _resolve(request, s, token, via)


async def current_principal_cached(request: Request) -> Principal:
    """Dependency: like :data:`PrincipalDep`, for hot write endpoints that do not take the
    request session (so no SQLite write lock for the whole request): the token's principal
    is kept for :data:`PRINCIPAL_CACHE_SECONDS`, so a repeat call costs no query and no
    thread hop. Sets the audit actor too."""
    token, via = _token_from(request)
    if token is None:
        raise _no_token()
    key = hash_token(token)
    mono = time.monotonic()
    hit = _principal_cache.get(key)
    if hit is not None and hit[0] > mono and hit[1] > datetime.now(UTC):
        if via == "cookie":
            _check_origin(request)
        principal = replace(hit[2], ip=client_ip(request), via=via)
    else:
        loop = asyncio.get_running_loop()
        flight = (id(loop), key)
        pending = _loading.get(flight)
        if pending is not None:  # another request of this token is loading it: wait for that
            principal = (await asyncio.shield(pending))[0]
            if via == "cookie":
                _check_origin(request)
            principal = replace(principal, ip=client_ip(request), via=via)
        else:
            fut: asyncio.Future[tuple[Principal, datetime]] = loop.create_future()
            _loading[flight] = fut
            try:
                principal, expires = await run_in_threadpool(_load_uncached, request, token, via)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # (retrieved: no warning when nobody was waiting)
                raise
            finally:
                _loading.pop(flight, None)
            fut.set_result((principal, expires))
            with _principal_cache_lock:
                if len(_principal_cache) > 10_000:
                    _principal_cache.clear()
                _principal_cache[key] = (mono + PRINCIPAL_CACHE_SECONDS, expires, principal)
    current_actor.set(principal.actor)
    return principal


#: Token look-ups in progress (event loop, token hash): when a cached principal expires
#: under load, the first request loads it and the others of that token wait for its answer
#: instead of each running the same queries.
_loading: dict[tuple[int, str], asyncio.Future[tuple[Principal, datetime]]] = {}


CachedPrincipalDep = Annotated[Principal, Depends(current_principal_cached)]


async def current_principal(
    principal: Annotated[Principal, Depends(load_principal)],
) -> Principal:
    """Dependency: the logged-in user (401 otherwise); makes them the audit actor.

    This wrapper is ``async`` on purpose: it runs in the request's own task, so the
    context variable it sets is seen by the endpoint and by the session commit (sync
    code runs in worker threads that copy the task's context).
    """
    current_actor.set(principal.actor)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_roles(
    *roles: str,
) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """Dependency factory: the principal, or 403 unless they hold one of ``roles``."""
    if not roles:
        raise ValueError("require_roles needs at least one role")
    wanted = tuple(roles)

    async def dependency(principal: PrincipalDep) -> Principal:
        if not principal.has_role(*wanted):
            raise Forbidden(
                f"this needs the role {' or '.join(wanted)}",
                required_roles=list(wanted),
            )
        return principal

    dependency.__name__ = f"require_{'_or_'.join(wanted)}"
    return dependency


AdminDep = Annotated[Principal, Depends(require_roles("admin"))]


# --------------------------------------------------------------------------- data scope


def region_visible(principal: Principal, code: str | None) -> bool:
    """Whether a region-like code (region, grid, grid code of a component) is in scope."""
    scope = principal.scope_region_code
    if scope is None:
        return True
    return code is not None and code.startswith(scope)


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def prefix_filter(column: Any, prefix: str) -> ColumnElement[bool]:
    """``column LIKE 'prefix%'`` (LIKE wildcards in ``prefix`` escaped).

    For a digit prefix (region and grid codes) the range ``prefix <= column < prefix+1`` is
    added: it has the same meaning and lets a plain B-tree index serve the filter (PostgreSQL
    only uses an index for LIKE under the C collation or with ``*_pattern_ops``; SQLite's
    LIKE is case-insensitive and does not use one either).
    """
    cond: ColumnElement[bool] = column.like(_like_prefix(prefix), escape="\\")
    if prefix.isascii() and prefix.isdigit():
        # Digits only, so that every collation orders the bounds like C does.
        upper = str(int(prefix) + 1).zfill(len(prefix))
        if len(upper) == len(prefix):
            cond = and_(column >= prefix, column < upper, cond)
        else:  # all nines: no upper bound
            cond = and_(column >= prefix, cond)
    return cond


def scope_filter(principal: Principal, column: Any) -> ColumnElement[bool]:
    """SQL condition ``column LIKE 'prefix%'`` for the principal's scope (``true()`` if none).

    See :func:`prefix_filter`."""
    scope = principal.scope_region_code
    if scope is None:
        return true()
    return prefix_filter(column, scope)


def ensure_region(
    principal: Principal, code: str | None, *, write: bool = False, what: str = "region"
) -> None:
    """Raise unless ``code`` is in the principal's scope.

    Reads (and writes to objects the user cannot see) answer :class:`NotFound` so as not to
    reveal that the object exists; ``write=True`` is for writes that would *place*
    something outside the scope (the caller already knows the place) and answers
    :class:`Forbidden`.
    """
    if region_visible(principal, code):
        return
    if write:
        raise Forbidden(
            f"{what} {code} is outside your data scope ({principal.scope_region_code})",
            scope=principal.scope_region_code,
        )
    raise NotFound(f"no {what} {code}")


def ensure_city_wide(principal: Principal, what: str = "city-wide settings") -> None:
    """Raise :class:`Forbidden` for users limited to part of the city."""
    if principal.scope_region_code is not None:
        raise Forbidden(
            f"{what}: only for users without a region scope "
            f"(yours is {principal.scope_region_code})"
        )


def unit_visible(principal: Principal, unit_ids: Iterable[int | None]) -> bool:
    """For unit-scoped users (``scope_unit_only``): whether one of ``unit_ids`` is theirs."""
    if not principal.scope_unit_only:
        return True
    return principal.unit_id is not None and principal.unit_id in set(unit_ids)

"""People and access: login, lockout, sessions, passwords, user administration, audit reads.

Login rules:

* Tokens are ``secrets.token_urlsafe(32)``; only their SHA-256 is stored (``auth_sessions``).
* ``login_max_failures`` wrong passwords in a row lock the account for ``lockout_minutes``
  (423, even with the right password). When a lock has run out the counter starts again
  from zero; a successful login resets it; an admin can unlock at once.
* An unknown username and a wrong password get the same message, and the unknown-user path
  verifies against a dummy argon2 hash so that both take about the same time.
* Every success, failure, refusal, lockout and logout is written to the audit log
  (never a password or token; the attempted username only).

Failed attempts must survive the error answer, so :func:`login` commits before it raises.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from cityops.access.models import ROLES, AuthSession, User, UserRole
from cityops.access.passwords import hash_password, needs_rehash, verify_password
from cityops.core.audit import Actor, AuditLog, current_actor, record
from cityops.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, Unauthorized
from cityops.core.security import (
    Principal,
    hash_token,
    lock_for_write,
    new_token,
    prefix_filter,
    region_visible,
)
from cityops.core.settings import get_settings
from cityops.geo.models import Region, Unit

BAD_CREDENTIALS = "invalid username or password"
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,60}$")

# A real argon2id hash of a random secret: unknown users are checked against it so that
# they cost the same time as known ones.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        import secrets

        _DUMMY_HASH = hash_password(secrets.token_urlsafe(24))
    return _DUMMY_HASH


class Locked(DomainError):
    """The account is locked after too many failed logins."""

    status = 423
    code = "locked"


def _now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Make ``actor`` the audit actor for ORM flushes inside the block."""
    tok = current_actor.set(actor)
    try:
        yield
    finally:
        current_actor.reset(tok)


# --------------------------------------------------------------------------- serialisation


def user_brief(session: Session, user: User) -> dict[str, Any]:
    """What a user sees about themself (login answer, ``/auth/me``)."""
    unit = session.get(Unit, user.unit_id) if user.unit_id else None
    region = (
        session.scalars(select(Region).where(Region.code == user.scope_region_code)).first()
        if user.scope_region_code
        else None
    )
    return {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "roles": sorted(user.roles),
        "unit": {"id": unit.id, "code": unit.code, "name": unit.name} if unit else None,
        "scope": {
            "region_code": user.scope_region_code,
            "region_name": region.name if region else None,
            "region_level": region.level if region else None,
            "unit_only": user.scope_unit_only,
        },
    }


def user_full(session: Session, user: User) -> dict[str, Any]:
    """What an admin sees about a user."""
    locked = user.locked_until is not None and user.locked_until > _now()
    return {
        **user_brief(session, user),
        "phone": user.phone,
        "active": user.active,
        "failed_logins": user.failed_logins,
        "locked": locked,
        "locked_until": user.locked_until if locked else None,
        "password_changed_at": user.password_changed_at,
        "created_at": user.created_at,
    }


# --------------------------------------------------------------------------- login / sessions


@dataclass
class LoginResult:
    token: str
    expires_at: datetime
    user: User


def _fail(session: Session, message: str, exc: type[DomainError] = Unauthorized) -> NoReturn:
    """Keep the failure's bookkeeping (counters, audit rows) and answer with an error."""
    session.commit()
    raise exc(message)


def login(session: Session, username: str, password: str, ip: str | None = None) -> LoginResult:
    """Check a password login and open an API session (see the module docstring).

    The slow password check runs in a read-only transaction; the bookkeeping runs in a
    fresh one that holds the user's row (PostgreSQL ``FOR UPDATE``, SQLite write lock), so
    that parallel attempts cannot lose failure counts."""
    st = get_settings()
    username = username.strip()
    found = session.scalars(select(User).where(User.username == username)).first()
    ok = verify_password(found.password_hash if found else _dummy_hash(), password)
    user_id = found.id if found else None
    session.rollback()
    lock_for_write(session)
    now = _now()
    user = (
        session.scalars(select(User).where(User.id == user_id).with_for_update()).first()
        if user_id is not None
        else None
    )
    if user is None:
        record(
            session,
            "login_failed",
            "users",
            None,
            after={"username": username[:60], "reason": "unknown_user"},
            actor=Actor(None, username[:100] or "?", ip),
        )
        _fail(session, BAD_CREDENTIALS)
    actor = Actor(user.id, user.username, ip)

    if user.locked_until is not None:
        if user.locked_until > now:
            record(
                session,
                "login_refused",
                "users",
                str(user.id),
                after={"username": user.username, "reason": "locked"},
                actor=actor,
            )
            minutes = max(1, int((user.locked_until - now).total_seconds() // 60) + 1)
            _fail(
                session,
                f"the account is locked after {st.login_max_failures} failed logins; "
                f"try again in {minutes} minute(s) or ask an administrator to unlock it",
                Locked,
            )
        # The lock has run out: a fresh start.
        with acting_as(actor):
            user.locked_until = None
            user.failed_logins = 0
            session.flush()

    if not ok:
        with acting_as(actor):
            user.failed_logins += 1
            locked = user.failed_logins >= st.login_max_failures
            if locked:
                user.locked_until = now + timedelta(minutes=st.lockout_minutes)
            session.flush()
        record(
            session,
            "login_failed",
            "users",
            str(user.id),
            after={
                "username": user.username,
                "reason": "bad_password",
                "failures": user.failed_logins,
            },
            actor=actor,
        )
        if locked:
            record(
                session,
                "lockout",
                "users",
                str(user.id),
                after={
                    "username": user.username,
                    "failures": user.failed_logins,
                    "locked_until": user.locked_until,
                },
                actor=actor,
            )
            _fail(
                session,
                f"too many failed logins: the account is locked for {st.lockout_minutes} minutes",
                Locked,
            )
        _fail(session, BAD_CREDENTIALS)

    if not user.active:
        record(
            session,
            "login_refused",
            "users",
            str(user.id),
            after={"username": user.username, "reason": "inactive"},
            actor=actor,
        )
        _fail(session, "the account is disabled: ask an administrator")

    token, token_hash = new_token()
    expires = now + timedelta(hours=st.token_ttl_hours)
    with acting_as(actor):
        if user.failed_logins:
            user.failed_logins = 0
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        session.add(
            AuthSession(token_hash=token_hash, user_id=user.id, kind="api", expires_at=expires)
        )
        session.flush()
    record(
        session,
        "login",
        "users",
        str(user.id),
        after={"username": user.username, "expires_at": expires},
        actor=actor,
    )
    return LoginResult(token, expires, user)


def logout(session: Session, principal: Principal) -> None:
    """Revoke the session the caller authenticated with."""
    if principal.session_id is not None:
        session.execute(
            update(AuthSession).where(AuthSession.id == principal.session_id).values(revoked=True)
        )
    record(
        session,
        "logout",
        "users",
        str(principal.user_id),
        after={"username": principal.username},
        actor=principal.actor,
    )


def session_id_of(session: Session, token: str) -> int | None:
    """Id of the ``auth_sessions`` row of a token, if any."""
    return session.scalar(select(AuthSession.id).where(AuthSession.token_hash == hash_token(token)))


def get_user_by_id(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such user")
    return user


def revoke_sessions(session: Session, user_id: int, except_id: int | None = None) -> int:
    """Revoke the user's open sessions (all, or all but ``except_id``)."""
    q = update(AuthSession).where(AuthSession.user_id == user_id, AuthSession.revoked.is_(False))
    if except_id is not None:
        q = q.where(AuthSession.id != except_id)
    res = session.execute(q.values(revoked=True))
    return int(getattr(res, "rowcount", 0) or 0)


def check_new_password(password: str) -> None:
    n = get_settings().password_min_length
    if len(password) < n:
        raise Invalid(f"the password must have at least {n} characters", field="password")
    if password.strip() != password or not password.strip():
        raise Invalid("the password must not start or end with spaces", field="password")


def change_password(
    session: Session, principal: Principal, old_password: str, new_password: str
) -> int:
    """The caller changes their own password; their other sessions are revoked."""
    user = session.get(User, principal.user_id)
    if user is None:
        raise NotFound("no such user")
    if not verify_password(user.password_hash, old_password):
        # Counts like a failed login: a stolen session must not allow guessing the password.
        st = get_settings()
        user.failed_logins += 1
        locked = user.failed_logins >= st.login_max_failures
        if locked:
            user.locked_until = _now() + timedelta(minutes=st.lockout_minutes)
        session.flush()
        record(
            session,
            "password_change_failed",
            "users",
            str(user.id),
            after={"username": user.username, "reason": "wrong_old_password"},
        )
        if locked:
            revoke_sessions(session, user.id)
            record(
                session,
                "lockout",
                "users",
                str(user.id),
                after={"username": user.username, "failures": user.failed_logins},
            )
        session.commit()
        raise Forbidden("the current password is wrong", field="old_password")
    check_new_password(new_password)
    if new_password == old_password:
        raise Invalid("the new password must differ from the current one", field="new_password")
    user.password_hash = hash_password(new_password)
    user.password_changed_at = _now()
    user.failed_logins = 0
    session.flush()
    n = revoke_sessions(session, user.id, except_id=principal.session_id)
    record(
        session,
        "password_change",
        "users",
        str(user.id),
        after={"username": user.username, "sessions_revoked": n},
    )
    return n


# --------------------------------------------------------------------------- administration


def _region_code(session: Session, code: str | None, field: str) -> str | None:
    if code is None or code == "":
        return None
    if session.scalars(select(Region.id).where(Region.code == code)).first() is None:
        raise Invalid(f"unknown region code {code!r}", field=field, value=code)
    return code


def unit_by_code(session: Session, code: str, field: str = "unit_code") -> Unit:
    unit = session.scalars(select(Unit).where(Unit.code == code)).first()
    if unit is None:
        raise Invalid(f"unknown unit code {code!r}", field=field, value=code)
    return unit


def _check_roles(roles: list[str]) -> list[str]:
    bad = sorted(set(roles) - set(ROLES))
    if bad:
        raise Invalid(
            f"unknown role(s) {', '.join(bad)}: expected some of {', '.join(ROLES)}",
            field="roles",
            value=bad,
        )
    if not roles:
        raise Invalid("a user needs at least one role", field="roles")
    return sorted(set(roles))


def _check_scope_grant(admin: Principal, scope: str | None) -> None:
    """A region-scoped admin can only give scopes inside their own."""
    if admin.scope_region_code is None:
        return
    if scope is None or not scope.startswith(admin.scope_region_code):
        raise Forbidden(
            f"you can only give scopes inside your own ({admin.scope_region_code})",
            field="scope_region_code",
        )


def _visible_user(admin: Principal, user: User | None) -> User:
    if user is None or (
        admin.scope_region_code is not None and not region_visible(admin, user.scope_region_code)
    ):
        raise NotFound("no such user")
    return user


def get_user(session: Session, admin: Principal, user_id: int) -> User:
    return _visible_user(admin, session.get(User, user_id))


def list_users(
    session: Session,
    admin: Principal,
    *,
    role: str | None = None,
    unit_code: str | None = None,
    q: str | None = None,
    active: bool | None = None,
    page: int = 1,
    page_size: int = 50,
) -> tuple[list[User], int]:
    stmt = select(User)
    if admin.scope_region_code is not None:
        stmt = stmt.where(prefix_filter(User.scope_region_code, admin.scope_region_code))
    if role:
        _check_roles([role])
        stmt = stmt.where(User.id.in_(select(UserRole.user_id).where(UserRole.role == role)))
    if unit_code:
        stmt = stmt.where(User.unit_id == unit_by_code(session, unit_code, "unit").id)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(or_(User.username.like(like), User.display_name.like(like)))
    if active is not None:
        stmt = stmt.where(User.active.is_(active))
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(
        stmt.order_by(User.username).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), total


def create_user(
    session: Session,
    admin: Principal | None,
    *,
    username: str,
    display_name: str,
    password: str,
    roles: list[str],
    unit_code: str | None = None,
    scope_region_code: str | None = None,
    scope_unit_only: bool = False,
    phone: str | None = None,
    password_hash: str | None = None,
) -> User:
    """Create a user (``admin=None``: a trusted caller such as the CLI or the demo).

    ``password_hash`` lets trusted callers reuse a precomputed hash (bulk creation)."""
    username = username.strip()
    if not USERNAME_RE.fullmatch(username):
        raise Invalid(
            "the username must be 2–60 letters, digits or . _ @ -", field="username", value=username
        )
    if not display_name.strip():
        raise Invalid("the display name must not be empty", field="display_name")
    roles = _check_roles(roles)
    scope = _region_code(session, scope_region_code, "scope_region_code")
    if admin is not None:
        _check_scope_grant(admin, scope)
    unit = unit_by_code(session, unit_code) if unit_code else None
    if scope_unit_only and unit is None:
        raise Invalid("a unit-scoped user needs a unit", field="scope_unit_only")
    if session.scalars(select(User.id).where(User.username == username)).first() is not None:
        raise Conflict(f"the username {username!r} is taken", field="username")
    if password_hash is None:
        check_new_password(password)
        password_hash = hash_password(password)
    user = User(
        username=username,
        display_name=display_name.strip(),
        password_hash=password_hash,
        phone=phone,
        unit_id=unit.id if unit else None,
        scope_region_code=scope,
        scope_unit_only=scope_unit_only,
        active=True,
        failed_logins=0,
        password_changed_at=_now(),
        role_rows=[UserRole(role=r) for r in roles],
    )
    session.add(user)
    session.flush()
    return user


def update_user(session: Session, admin: Principal, user_id: int, changes: dict[str, Any]) -> User:
    """Apply an admin's changes (only the keys present in ``changes``)."""
    user = get_user(session, admin, user_id)
    revoke = False
    if "display_name" in changes and changes["display_name"] is not None:
        if not str(changes["display_name"]).strip():
            raise Invalid("the display name must not be empty", field="display_name")
        user.display_name = str(changes["display_name"]).strip()
    if "phone" in changes:
        user.phone = changes["phone"]
    if "roles" in changes and changes["roles"] is not None:
        roles = _check_roles(list(changes["roles"]))
        if user.id == admin.user_id and "admin" not in roles:
            raise Conflict("you cannot remove your own admin role", field="roles")
        current = {r.role: r for r in user.role_rows}
        for r in set(current) - set(roles):
            user.role_rows.remove(current[r])
            # Explicitly, not only as an orphan: the audit hook sees session.deleted
            # before the flush, and orphans are only found during it.
            session.delete(current[r])
        for r in sorted(set(roles) - set(current)):
            user.role_rows.append(UserRole(role=r))
    if "unit_code" in changes:
        code = changes["unit_code"]
        user.unit_id = unit_by_code(session, code).id if code else None
    if "scope_region_code" in changes:
        scope = _region_code(session, changes["scope_region_code"], "scope_region_code")
        _check_scope_grant(admin, scope)
        user.scope_region_code = scope
    if "scope_unit_only" in changes and changes["scope_unit_only"] is not None:
        user.scope_unit_only = bool(changes["scope_unit_only"])
    if user.scope_unit_only and user.unit_id is None:
        raise Invalid("a unit-scoped user needs a unit", field="scope_unit_only")
    if "active" in changes and changes["active"] is not None:
        active = bool(changes["active"])
        if user.id == admin.user_id and not active:
            raise Conflict("you cannot disable your own account", field="active")
        if user.active and not active:
            revoke = True
        user.active = active
    if changes.get("password"):
        check_new_password(changes["password"])
        user.password_hash = hash_password(changes["password"])
        user.password_changed_at = _now()
        user.failed_logins = 0
        user.locked_until = None
        revoke = True
    session.flush()
    if revoke:
        revoke_sessions(session, user.id)
    return user


def unlock_user(session: Session, admin: Principal, user_id: int) -> User:
    user = get_user(session, admin, user_id)
    was = {"failed_logins": user.failed_logins, "locked_until": user.locked_until}
    user.failed_logins = 0
    user.locked_until = None
    session.flush()
    record(session, "unlock", "users", str(user.id), before=was, after={"username": user.username})
    return user


# --------------------------------------------------------------------------- audit log


def list_audit(
    session: Session,
    *,
    entity: str | None = None,
    entity_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
    page_size: int = 50,
) -> tuple[list[AuditLog], int]:
    """Audit rows, newest first."""
    stmt = select(AuditLog)
    if entity:
        stmt = stmt.where(AuditLog.entity == entity)
    if entity_id:
        stmt = stmt.where(AuditLog.entity_id == entity_id)
    if actor:
        stmt = stmt.where(AuditLog.actor_name == actor)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    if since is not None:
        stmt = stmt.where(AuditLog.at >= _aware(since))
    if until is not None:
        stmt = stmt.where(AuditLog.at < _aware(until))
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(
        stmt.order_by(AuditLog.id.desc()).offset((page - 1) * page_size).limit(page_size)
    ).all()
    return list(rows), total


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)

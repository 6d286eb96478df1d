"""Auth (login, logout, me, password), user administration and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from cityops.access import service
from cityops.access.schemas import (
    AuditOut,
    LoginIn,
    LoginOut,
    Message,
    Page,
    PasswordChangeIn,
    PasswordChangeOut,
    UserBrief,
    UserCreate,
    UserOut,
    UserPatch,
)
from cityops.core.security import (
    SESSION_COOKIE,
    AdminDep,
    PrincipalDep,
    SessionDep,
    UnlockedSessionDep,
    client_ip,
    ensure_city_wide,
)
from cityops.core.settings import get_settings

router = APIRouter(prefix="/api/v1")

PageNo = Annotated[int, Query(ge=1, description="Page number, from 1")]
PageSize = Annotated[int, Query(ge=1, le=500, description="Rows per page")]


# --------------------------------------------------------------------------- auth


@router.post("/auth/login", response_model=LoginOut, tags=["auth"])
def login(
    body: LoginIn, request: Request, response: Response, session: UnlockedSessionDep
) -> LoginOut:
    """Log in with username and password.

    Answers a bearer token (and sets it as the HttpOnly ``cityops_session`` cookie for the
    web console). 401 for a wrong username or password (the same message for both), 423
    while the account is locked after too many failures."""
    res = service.login(session, body.username, body.password, client_ip(request))
    ttl = get_settings().token_ttl_hours * 3600
    response.set_cookie(
        SESSION_COOKIE,
        res.token,
        max_age=ttl,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    return LoginOut(
        token=res.token,
        expires_at=res.expires_at,
        user=UserBrief.model_validate(service.user_brief(session, res.user)),
    )


@router.post("/auth/logout", response_model=Message, tags=["auth"])
def logout(
    request: Request, response: Response, principal: PrincipalDep, session: SessionDep
) -> Message:
    """Revoke the token used for this request (and drop the cookie if it holds it)."""
    service.logout(session, principal)
    cookie = request.cookies.get(SESSION_COOKIE)
    if principal.via == "cookie" or (
        cookie and service.session_id_of(session, cookie) == principal.session_id
    ):
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return Message(message="logged out")


@router.get("/auth/me", response_model=UserBrief, tags=["auth"])
def me(principal: PrincipalDep, session: SessionDep) -> UserBrief:
    """The logged-in user: roles, unit and data scope."""
    user = service.get_user_by_id(session, principal.user_id)
    return UserBrief.model_validate(service.user_brief(session, user))


@router.post("/auth/password", response_model=PasswordChangeOut, tags=["auth"])
def change_password(
    body: PasswordChangeIn, principal: PrincipalDep, session: SessionDep
) -> PasswordChangeOut:
    """Change your own password. Your other sessions are logged out; this one stays."""
    n = service.change_password(session, principal, body.old_password, body.new_password)
    return PasswordChangeOut(sessions_revoked=n)


# --------------------------------------------------------------------------- users


@router.get("/users", response_model=Page[UserOut], tags=["users"])
def list_users(
    admin: AdminDep,
    session: SessionDep,
    role: Annotated[str | None, Query(description="Only users with this role")] = None,
    unit: Annotated[str | None, Query(description="Only users of this unit (unit code)")] = None,
    q: Annotated[str | None, Query(description="Part of the username or display name")] = None,
    active: Annotated[bool | None, Query(description="Only active (or inactive) users")] = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[UserOut]:
    """Users (admin). A region-scoped admin sees the users inside their scope."""
    rows, total = service.list_users(
        session,
        admin,
        role=role,
        unit_code=unit,
        q=q,
        active=active,
        page=page,
        page_size=page_size,
    )
    return Page[UserOut](
        items=[UserOut.model_validate(service.user_full(session, u)) for u in rows],
        total=total,
        page=page,
        page_size=page_size,
    )


@router.post("/users", response_model=UserOut, status_code=201, tags=["users"])
def create_user(body: UserCreate, admin: AdminDep, session: SessionDep) -> UserOut:
    """Create a user (admin). Roles, unit and scope region are checked."""
    user = service.create_user(
        session,
        admin,
        username=body.username,
        display_name=body.display_name,
        password=body.password,
        roles=body.roles,
        unit_code=body.unit_code,
        scope_region_code=body.scope_region_code,
        scope_unit_only=body.scope_unit_only,
        phone=body.phone,
    )
    return UserOut.model_validate(service.user_full(session, user))


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"])
def get_user(user_id: int, admin: AdminDep, session: SessionDep) -> UserOut:
    """One user (admin)."""
    return UserOut.model_validate(
        service.user_full(session, service.get_user(session, admin, user_id))
    )


@router.patch("/users/{user_id}", response_model=UserOut, tags=["users"])
def update_user(user_id: int, body: UserPatch, admin: AdminDep, session: SessionDep) -> UserOut:
    """Change roles, active flag, unit, scope, display name or phone; reset the password."""
    user = service.update_user(session, admin, user_id, body.model_dump(exclude_unset=True))
    return UserOut.model_validate(service.user_full(session, user))


@router.post("/users/{user_id}/unlock", response_model=UserOut, tags=["users"])
def unlock_user(user_id: int, admin: AdminDep, session: SessionDep) -> UserOut:
    """Lift a lockout after failed logins (admin)."""
    return UserOut.model_validate(
        service.user_full(session, service.unlock_user(session, admin, user_id))
    )


# --------------------------------------------------------------------------- audit


@router.get("/audit", response_model=Page[AuditOut], tags=["audit"])
def audit_log(
    admin: AdminDep,
    session: SessionDep,
    entity: Annotated[str | None, Query(description="Table, e.g. users, grids, components")] = None,
    entity_id: Annotated[str | None, Query(description="Primary key of the row")] = None,
    actor: Annotated[str | None, Query(description="Username of the actor")] = None,
    action: Annotated[str | None, Query(description="create, update, delete, login, …")] = None,
    since: Annotated[datetime | None, Query(description="From this time (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (ISO 8601)")] = None,
    page: PageNo = 1,
    page_size: PageSize = 50,
) -> Page[AuditOut]:
    """The append-only audit log, newest first (admin without a region scope)."""
    ensure_city_wide(admin, "the audit log")
    rows, total = service.list_audit(
        session,
        entity=entity,
        entity_id=entity_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        page=page,
        page_size=page_size,
    )
    return Page[AuditOut](
        items=[AuditOut.model_validate(r) for r in rows],
        total=total,
        page=page,
        page_size=page_size,
    )

"""Request and response bodies of the auth, user and audit endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cityops.access.models import ROLES

T = TypeVar("T")

_ROLE_LIST = Field(
    description="Roles: " + ", ".join(ROLES),
    json_schema_extra={"items": {"type": "string", "enum": list(ROLES)}},
)


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    total: int = Field(description="Number of matching rows over all pages")
    page: int = Field(description="Page number, from 1")
    page_size: int


# --------------------------------------------------------------------------- auth


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=60, description="Login name")
    password: str = Field(min_length=1, max_length=200, repr=False, description="Password")


class UnitRef(BaseModel):
    id: int
    code: str
    name: str


class ScopeOut(BaseModel):
    region_code: str | None = Field(
        description="Region-code prefix of the user's data scope; null = the whole city"
    )
    region_name: str | None = None
    region_level: str | None = None
    unit_only: bool = Field(description="The user sees only their own unit's work")


class UserBrief(BaseModel):
    id: int
    username: str
    display_name: str
    roles: list[str] = Field(description="Roles: " + ", ".join(ROLES))
    unit: UnitRef | None = Field(description="The user's unit (department or company)")
    scope: ScopeOut


class LoginOut(BaseModel):
    token: str = Field(
        description="Send as 'Authorization: Bearer <token>'. The same token is set as the "
        "HttpOnly cookie cityops_session for the web console."
    )
    token_type: str = "bearer"
    expires_at: datetime
    user: UserBrief


class PasswordChangeIn(BaseModel):
    old_password: str = Field(min_length=1, max_length=200, repr=False)
    new_password: str = Field(
        min_length=1,
        max_length=200,
        repr=False,
        description="At least CITYOPS_PASSWORD_MIN_LENGTH characters, different from the old one",
    )


class PasswordChangeOut(BaseModel):
    sessions_revoked: int = Field(description="Other sessions of the user that were logged out")


class Message(BaseModel):
    message: str


# --------------------------------------------------------------------------- users


class UserOut(UserBrief):
    phone: str | None
    active: bool
    failed_logins: int = Field(description="Failed logins in a row")
    locked: bool = Field(description="Locked after too many failed logins")
    locked_until: datetime | None
    password_changed_at: datetime | None
    created_at: datetime


class UserCreate(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "inspector7",
                    "display_name": "张三",
                    "password": "a-long-secret",
                    "roles": ["inspector"],
                    "unit_code": "JDZX-01",
                    "scope_region_code": "341602001",
                }
            ]
        }
    )

    username: str = Field(
        min_length=2, max_length=60, description="Login name: letters, digits, . _ @ -"
    )
    display_name: str = Field(min_length=1, max_length=100, description="Name shown in the UI")
    password: str = Field(min_length=1, max_length=200, repr=False, description="Initial password")
    roles: list[str] = _ROLE_LIST
    unit_code: str | None = Field(None, description="Code of the user's unit")
    scope_region_code: str | None = Field(
        None,
        description="Data scope: a district/street/community code; null = the whole city",
    )
    scope_unit_only: bool = Field(False, description="Only the user's own unit's work")
    phone: str | None = Field(None, max_length=30)


class UserPatch(BaseModel):
    """Only the fields sent are changed; send null to clear unit, scope or phone."""

    display_name: str | None = Field(None, max_length=100)
    phone: str | None = Field(None, max_length=30)
    roles: list[str] | None = Field(None, description="The full new role list")
    active: bool | None = Field(None, description="false disables the account and logs it out")
    unit_code: str | None = None
    scope_region_code: str | None = None
    scope_unit_only: bool | None = None
    password: str | None = Field(
        None, max_length=200, repr=False, description="Reset the password (logs the user out)"
    )


# --------------------------------------------------------------------------- audit


class AuditOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    actor_id: int | None
    actor_name: str
    ip: str | None
    action: str = Field(description="create, update, delete, login, login_failed, lockout, …")
    entity: str = Field(description="Table (or subject) the row is about")
    entity_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

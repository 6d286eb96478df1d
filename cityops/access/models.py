"""Users, roles and login sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cityops.core.db import Base, utcnow
from cityops.core.types import UTCDateTime
from cityops.geo.models import Unit

ROLES = (
    "inspector",  # 监督员
    "operator",  # 受理员
    "shift_leader",  # 值班长
    "dispatcher",  # 派遣员
    "handler",  # 处置人员
    "leader",  # 领导
    "reviewer",  # 第三方考评员
    "evaluator",  # 综合评价考评员 (site inspection / comprehensive evaluation)
    "monitor",  # 监测值班员 (lifeline alarms: 研判)
    "commander",  # 防汛指挥 (flood command)
    "admin",  # 管理员
)
ROLE_NAMES_ZH = {
    "inspector": "监督员",
    "operator": "受理员",
    "shift_leader": "值班长",
    "dispatcher": "派遣员",
    "handler": "处置人员",
    "leader": "领导",
    "reviewer": "第三方考评员",
    "evaluator": "综合评价考评员",
    "monitor": "监测值班员",
    "commander": "防汛指挥",
    "admin": "管理员",
}


class User(Base):
    __tablename__ = "users"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(60), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(100), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    phone: Mapped[str | None] = mapped_column(String(30))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    #: Data scope: a region code prefix (district/street/community), or None for the city.
    scope_region_code: Mapped[str | None] = mapped_column(String(12))
    #: Unit-scoped users (handlers) see only their unit's work.
    scope_unit_only: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    unit: Mapped[Unit | None] = relationship()
    role_rows: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def roles(self) -> set[str]:
        return {r.role for r in self.role_rows}


class UserRole(Base):
    __tablename__ = "user_roles"
    __audited__ = True

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20), primary_key=True)


class AuthSession(Base):
    """A login: an opaque random token (only its SHA-256 is stored) for API or console."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(10), default="api", nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)

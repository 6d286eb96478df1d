"""Tables of the flood context (防汛云调度).

* :class:`WaterloggingPoint` 内涝点/易涝点 (underpasses, low roads) with the codes of its ponding
  gauge and nearest rain gauge (devices of the monitoring context, joined by code only), its
  warn/close depths and its 包保责任人 (:class:`ResponsiblePerson` via ``flood_point_persons``).
* :class:`Team` (防汛排涝队伍) and :class:`Equipment` (pumps, vehicles, sandbags …), with
  current positions.
* :class:`ResponseEvent`: one flood response (应急响应) from its start to its end; its current
  ``level`` 1–4 (Ⅰ 红 … Ⅳ 蓝) and the log of level changes (:class:`LevelChange`).
* :class:`Rule`: the proposal rule table (rainfall windows, ponding depth), data editable by
  the admin; :class:`Proposal`: what the rules proposed, accepted or dismissed by a commander.
* :class:`Order`: a dispatch order (调度指令) to a person or a team, issued → acknowledged →
  en route → arrived → done.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime

#: Response levels: number → (roman numeral, colour name, colour).
LEVELS: dict[int, tuple[str, str, str]] = {
    4: ("Ⅳ", "蓝", "blue"),
    3: ("Ⅲ", "黄", "yellow"),
    2: ("Ⅱ", "橙", "orange"),
    1: ("Ⅰ", "红", "red"),
}

POINT_KINDS = {
    "underpass": "下穿通道",
    "road": "低洼路段",
    "bridge": "桥下",
    "community": "低洼小区",
    "tunnel": "隧道",
    "other": "其他",
}
EQUIPMENT_KINDS = {
    "pump": "排水泵",
    "pump_vehicle": "排水抢险车",
    "vehicle": "车辆",
    "generator": "发电机",
    "sandbag": "沙袋",
    "barrier": "警示围挡",
    "other": "其他",
}
TEAM_STATUSES = {"standby": "待命", "dispatched": "已调度", "on_site": "在现场", "off": "休整"}
EQUIPMENT_STATUSES = {"available": "可用", "in_use": "使用中", "repair": "维修"}
ORDER_STATUSES = {
    "issued": "已下达",
    "acknowledged": "已签收",
    "en_route": "赶赴中",
    "arrived": "已到达",
    "done": "已完成",
    "cancelled": "已撤销",
}
#: Orders in these states still bind the receiver.
OPEN_ORDER_STATUSES = ("issued", "acknowledged", "en_route", "arrived")
PROPOSAL_STATUSES = {
    "pending": "待决策",
    "accepted": "已采纳",
    "dismissed": "已驳回",
    "superseded": "已被替代",
}
LEVEL_ACTIONS = {"start": "启动", "raise": "提级", "lower": "降级", "end": "结束"}

point_persons = Table(
    "flood_point_persons",
    Base.metadata,
    Column("point_id", ForeignKey("flood_points.id", ondelete="CASCADE"), primary_key=True),
    Column("person_id", ForeignKey("flood_persons.id", ondelete="CASCADE"), primary_key=True),
)

order_equipment = Table(
    "flood_order_equipment",
    Base.metadata,
    Column("order_id", ForeignKey("flood_orders.id", ondelete="CASCADE"), primary_key=True),
    Column("equipment_id", ForeignKey("flood_equipment.id"), primary_key=True),
)


class ResponsiblePerson(Base):
    """包保责任人 (and other people who receive orders): name, phone, unit, role."""

    __tablename__ = "flood_persons"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60), nullable=False)
    phone: Mapped[str] = mapped_column(String(30), nullable=False)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    #: e.g. 包保领导, 现场责任人, 巡查员.
    role: Mapped[str] = mapped_column(String(40), nullable=False)
    #: The login that receives and acknowledges this person's orders.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    position_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class WaterloggingPoint(Base):
    """内涝点/易涝点."""

    __tablename__ = "flood_points"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(30), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False, default="underpass")
    address: Mapped[str | None] = mapped_column(String(200))
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"))
    #: 15-digit unit grid code: its prefixes are the community, street and district codes.
    grid_code: Mapped[str] = mapped_column(String(15), nullable=False, index=True)
    depth_device_code: Mapped[str | None] = mapped_column(String(60))
    rain_device_code: Mapped[str | None] = mapped_column(String(60))
    warn_depth_cm: Mapped[float] = mapped_column(Float, nullable=False, default=15.0)
    close_depth_cm: Mapped[float] = mapped_column(Float, nullable=False, default=30.0)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    persons: Mapped[list[ResponsiblePerson]] = relationship(
        secondary=point_persons, order_by="ResponsiblePerson.id"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy convention)


class Team(Base):
    """防汛排涝队伍 (机动应急处置队伍)."""

    __tablename__ = "flood_teams"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    leader_name: Mapped[str] = mapped_column(String(60), nullable=False)
    #: The leader's login: receives and acknowledges the team's orders.
    leader_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    members: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    phone: Mapped[str] = mapped_column(String(30), nullable=False)
    base_lon: Mapped[float] = mapped_column(Float, nullable=False)
    base_lat: Mapped[float] = mapped_column(Float, nullable=False)
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    position_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="standby")


class Equipment(Base):
    """防汛设备/物资: pumps (capacity m³/h), vehicles, sandbags …"""

    __tablename__ = "flood_equipment"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    capacity_m3h: Mapped[float | None] = mapped_column(Float)
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("flood_teams.id"), index=True)
    #: The point it is stationed at (预置), if any.
    point_id: Mapped[int | None] = mapped_column(ForeignKey("flood_points.id"), index=True)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="available")
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    position_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Rule(Base):
    """One row of the proposal rule table.

    ``signal = 'rainfall'``: the rain summed over a rolling ``window_minutes`` at any rain gauge
    reaches ``threshold`` mm. ``signal = 'ponding'``: at least ``min_points`` points have a
    latest depth ≥ their close depth (``relative_to = 'close'``), their warn depth
    (``'warn'``) or ``threshold`` cm (``relative_to`` empty). Proposes ``level`` (1 = Ⅰ).
    """

    __tablename__ = "flood_rules"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    signal: Mapped[str] = mapped_column(String(12), nullable=False)
    window_minutes: Mapped[int | None] = mapped_column(Integer)
    threshold: Mapped[float | None] = mapped_column(Float)
    relative_to: Mapped[str | None] = mapped_column(String(8))
    min_points: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    note: Mapped[str | None] = mapped_column(String(200))


class ResponseEvent(Base):
    """One flood response from its start to its end. At most one is active (``active_key``
    is 1 while active and NULL after, under a unique index)."""

    __tablename__ = "flood_events"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    active_key: Mapped[int | None] = mapped_column(Integer, unique=True)
    peak_level: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    changes: Mapped[list[LevelChange]] = relationship(
        order_by="LevelChange.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy convention)


class LevelChange(Base):
    """Event log of a response: started, raised, lowered, ended — by whom, when, why."""

    __tablename__ = "flood_level_changes"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("flood_events.id", ondelete="CASCADE"), nullable=False, index=True
    )
    action: Mapped[str] = mapped_column(String(8), nullable=False)
    from_level: Mapped[int | None] = mapped_column(Integer)
    to_level: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    by_name: Mapped[str] = mapped_column(String(100), nullable=False)
    proposal_id: Mapped[int | None] = mapped_column(ForeignKey("flood_proposals.id"))


class Proposal(Base):
    """A level proposed by the rules, for a commander to accept or dismiss."""

    __tablename__ = "flood_proposals"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    #: The active event's level when proposed (None: no active response).
    current_level: Mapped[int | None] = mapped_column(Integer)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("flood_events.id"), index=True)
    #: Why: one entry per rule that fired (rule id, signal, gauge/point, value, window …).
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="pending")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_by_name: Mapped[str | None] = mapped_column(String(100))
    decision_note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_flood_proposals_status_created", "status", "created_at"),)


class Order(Base):
    """调度指令 to a responsible person or a team, for a point."""

    __tablename__ = "flood_orders"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("flood_events.id"), index=True)
    point_id: Mapped[int] = mapped_column(ForeignKey("flood_points.id"), nullable=False)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("flood_persons.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("flood_teams.id"), index=True)
    task: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="issued")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    issued_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    issued_by_name: Mapped[str] = mapped_column(String(100), nullable=False)
    #: Acknowledge (签收) by then, or the order is flagged overdue.
    ack_due_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    en_route_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    arrived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    arrival_lon: Mapped[float | None] = mapped_column(Float)
    arrival_lat: Mapped[float | None] = mapped_column(Float)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    note: Mapped[str | None] = mapped_column(Text)
    #: Every step: ``{"status", "at", "by", "by_user_id", "on_behalf"}``.
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    point: Mapped[WaterloggingPoint] = relationship()
    person: Mapped[ResponsiblePerson | None] = relationship()
    team: Mapped[Team | None] = relationship()
    equipment: Mapped[list[Equipment]] = relationship(
        secondary=order_equipment, order_by="Equipment.id"
    )

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy convention)
    __table_args__ = (
        Index("ix_flood_orders_point_status", "point_id", "status"),
        Index("ix_flood_orders_status_due", "status", "ack_due_at"),
    )

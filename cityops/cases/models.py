"""Tables of the closed loop: cases (案卷), their units, history, tasks, approvals, rules.

A case is always in exactly one ``stage`` — the step it waits for (待受理 … 待结案) or an
end state. Flags (临期, 超期, 督办, 延期, 挂账) are columns beside it. ``version`` is an
optimistic lock: every action names the version it saw and loses with 409 if another
action changed the case first.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime

SOURCES = {
    "inspector": "监督员上报",
    "public": "公众举报",
    "hotline": "12345热线",
    "video": "视频智能识别",
    "iot": "物联感知",
    "leader": "领导交办",
    "upper": "上级平台交办",
    "media": "媒体曝光",
    "self": "自行处置",
}
#: Sources whose reports need an inspector's 核实 before filing.
NEEDS_VERIFY = frozenset({"public", "hotline", "video"})
#: Machine sources merged automatically into an open duplicate.
MACHINE_SOURCES = frozenset({"video", "iot"})

STAGES = {
    "accept": "待受理",
    "verify": "待核实",
    "file": "待立案",
    "dispatch": "待派遣",
    "sign": "待签收",
    "handle": "待处置",
    "return_review": "回退待审批",
    "parked": "挂账",
    "check": "待核查",
    "close": "待结案",
    "closed": "已结案",
    "rejected": "不予受理",
    "void": "作废",
    "merged": "已合并",
}
OPEN_STAGES = frozenset(
    {
        "accept",
        "verify",
        "file",
        "dispatch",
        "sign",
        "handle",
        "return_review",
        "parked",
        "check",
        "close",
    }
)
END_STAGES = frozenset({"closed", "rejected", "void", "merged"})
CASE_TYPES = {"component": "部件", "matter": "事项"}
CLOSE_TYPES = ("正常", "超时", "差错", "特殊")

#: Actions that change who did the case's current 受理 / 立案 / 派遣, or when it last entered
#: 待派遣 (立案, or an approved 回退 sending it back): see :func:`track_actors`.
ACTOR_ACTIONS = frozenset({"accept", "file", "dispatch", "decide_return"})


def track_actors(
    target: Any, action: str, at: datetime, actor_id: int | None, data: Any = None
) -> None:
    """Move ``target``'s ``accepted_by_id`` / ``filed_by_id`` / ``dispatched_by_id`` /
    ``dispatch_stage_at`` past one history event (``actor_id`` None: the system).

    The one definition of these four fields, used on the case row (by every writer of
    events) and by the evaluation rollups' replay of a history, so the two agree."""
    if action == "accept":
        target.accepted_by_id = actor_id
    elif action == "file":
        target.filed_by_id, target.dispatch_stage_at = actor_id, at
    elif action == "dispatch":
        target.dispatched_by_id = actor_id
    elif action == "decide_return" and (data or {}).get("approve"):
        target.dispatch_stage_at = at


class CaseSequence(Base):
    """Daily counter behind readable case numbers (YYYYMMDD + 5-digit sequence)."""

    __tablename__ = "case_sequences"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class Case(Base):
    __tablename__ = "cases"
    __audited__ = True

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True, nullable=False)
    #: Public tracking code given to citizens (no personal data behind it).
    tracking_code: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    source: Mapped[str] = mapped_column(String(12), nullable=False)
    case_type: Mapped[str] = mapped_column(String(10), nullable=False)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), nullable=False)
    urgency: Mapped[str] = mapped_column(String(4), nullable=False, default="一般")
    description: Mapped[str] = mapped_column(Text, nullable=False)
    address: Mapped[str | None] = mapped_column(String(300))
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    h3: Mapped[int] = mapped_column(BigInteger, nullable=False)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"))
    #: 15-digit grid code; its prefixes are community (12), street (9), district (6): scope filter.
    grid_code: Mapped[str | None] = mapped_column(String(15))
    component_id: Mapped[int | None] = mapped_column(ForeignKey("components.id"))
    reporter_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reporter_name: Mapped[str | None] = mapped_column(String(100))
    reporter_phone: Mapped[str | None] = mapped_column(String(30))

    stage: Mapped[str] = mapped_column(String(16), nullable=False)
    stage_started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    stage_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: When the 临期 warning is due for the current stage.
    stage_warn_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Inspector assigned to the open 核实/核查 task of the current stage.
    assignee_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lead_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    #: Approval waiting for a decision: return | extend | park (clock paused meanwhile).
    pending_request: Mapped[str | None] = mapped_column(String(10))
    paused_since: Mapped[datetime | None] = mapped_column(UTCDateTime())

    near_due: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # 临期
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # 超期
    supervised: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # 督办
    extended: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # 延期
    parked: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)  # 挂账
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, nullable=False)  # 提级
    extension_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    return_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    rework_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    #: Handling (处置) finished after its deadline at least once.
    handled_late: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    report_count: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    close_type: Mapped[str | None] = mapped_column(String(4))
    end_reason: Mapped[str | None] = mapped_column(Text)

    reported_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    filed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Deadline of 处置 (moved by 延期; used for 按期处置).
    handle_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime())
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: Who did the current 受理 / 立案 / 派遣 (None: the system or not yet) and when the case
    #: last entered 待派遣 — kept by :func:`track_actors`; the evaluation counters of later
    #: acts need them (受理员 核查派发, 派遣员 按时派遣/派遣返工, 值班长 作废). Their value
    #: before a change is kept (active history) so a flush's listener can replay its events.
    #: Copies of ``case_events.actor_id`` (which has the foreign key): no key of their own, so
    #: that adding or dropping them never rebuilds the cases table on SQLite.
    accepted_by_id: Mapped[int | None] = mapped_column(Integer, active_history=True)
    filed_by_id: Mapped[int | None] = mapped_column(Integer, active_history=True)
    dispatched_by_id: Mapped[int | None] = mapped_column(Integer, active_history=True)
    dispatch_stage_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), active_history=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    units: Mapped[list[CaseUnit]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 (SQLAlchemy convention)
    __table_args__ = (
        Index("ix_cases_stage_deadline", "stage", "stage_deadline"),
        Index("ix_cases_grid_code", "grid_code"),
        Index("ix_cases_lead_unit_stage", "lead_unit_id", "stage"),
        Index("ix_cases_reported_at", "reported_at"),
        Index("ix_cases_category_h3", "category_id", "h3"),
        Index("ix_cases_assignee_stage", "assignee_user_id", "stage"),
        Index("ix_cases_closed_at", "closed_at"),
        # 待审批: the few cases waiting for a 回退/延期/挂账 decision
        Index(
            "ix_cases_pending_paused",
            "paused_since",
            sqlite_where=text("pending_request IS NOT NULL"),
            postgresql_where=text("pending_request IS NOT NULL"),
        ),
    )


class CaseUnit(Base):
    """Lead unit (主办) and co-units (协办) of a dispatched case."""

    __tablename__ = "case_units"
    __audited__ = True

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True
    )
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(6), nullable=False)  # lead | co

    __table_args__ = (Index("ix_case_units_unit_case", "unit_id", "case_id"),)


class CaseEvent(Base):
    """Full history of a case: who did what, when, from which stage to which, with a note."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_name: Mapped[str] = mapped_column(String(100), nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str | None] = mapped_column(String(16))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (Index("ix_case_events_case_at", "case_id", "at"),)


class CaseAttachment(Base):
    """Photo or document of a case; files live in :mod:`cityops.cases.storage`."""

    __tablename__ = "case_attachments"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    #: None until the upload is bound to a case (uploads come first, then the report/action).
    case_id: Mapped[int | None] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int | None] = mapped_column(ForeignKey("case_events.id"))
    #: before | after | check | document
    purpose: Mapped[str] = mapped_column(String(10), nullable=False)
    filename: Mapped[str] = mapped_column(String(200), nullable=False)
    content_type: Mapped[str] = mapped_column(String(60), nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    storage_key: Mapped[str] = mapped_column(String(200), nullable=False)
    #: EXIF-free copy shown to the public (photos only).
    public_key: Mapped[str | None] = mapped_column(String(200))
    exif_lon: Mapped[float | None] = mapped_column(Float)
    exif_lat: Mapped[float | None] = mapped_column(Float)
    uploaded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class ApprovalRequest(Base):
    """回退 / 延期 / 挂账 request and its decision."""

    __tablename__ = "case_approvals"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), nullable=False, index=True
    )
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # return | extend | park
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    requested_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    #: 延期: extra time asked for (amount + unit) and the approval tier it needs.
    amount: Mapped[float | None] = mapped_column(Float)
    amount_unit: Mapped[str | None] = mapped_column(String(20))
    required_role: Mapped[str] = mapped_column(String(20), nullable=False)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision: Mapped[str | None] = mapped_column(String(10))  # approved | rejected
    decision_note: Mapped[str | None] = mapped_column(Text)


class DispatchRule(Base):
    """Auto-dispatch rule (一键直达): category × place × component owner × time window → unit.

    Empty criteria match anything; the most specific matching rule wins (then priority).
    """

    __tablename__ = "dispatch_rules"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    priority: Mapped[int] = mapped_column(Integer, default=100, nullable=False)
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    #: Region or grid code prefix (district 6 / street 9 / community 12 / grid 15 digits).
    region_prefix: Mapped[str | None] = mapped_column(String(15))
    #: Match the case's component owner (权属单位) …
    component_owner_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    #: … or send to the component's owner/maintainer itself: owner | maintainer | None.
    to_component: Mapped[str | None] = mapped_column(String(12))
    #: Local time window (HH:MM, end exclusive; may wrap midnight) and ISO weekdays "12345".
    time_from: Mapped[str | None] = mapped_column(String(5))
    time_to: Mapped[str | None] = mapped_column(String(5))
    weekdays: Mapped[str | None] = mapped_column(String(7))
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    co_unit_ids: Mapped[list[int] | None] = mapped_column(JSONType)


class Notification(Base):
    """In-app inbox message for one user."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    #: Unique per (kind, case, stage start): the scheduler can never send one twice.
    dedupe_key: Mapped[str | None] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_notifications_user_read", "user_id", "read_at"),
        UniqueConstraint("user_id", "dedupe_key"),
    )


class Webhook(Base):
    """Outgoing webhook: case events POSTed as JSON, HMAC-SHA256 signed."""

    __tablename__ = "webhooks"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    url: Mapped[str] = mapped_column(String(500), nullable=False)
    secret: Mapped[str] = mapped_column(String(100), nullable=False)
    #: Event kinds to send (e.g. ["case.overdue", "case.near_due"]); empty = all.
    events: Mapped[list[str] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)


class WebhookDelivery(Base):
    """Delivery log and retry queue of webhook calls."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    webhook_id: Mapped[int] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False
    )
    event: Mapped[str] = mapped_column(String(40), nullable=False)
    dedupe_key: Mapped[str] = mapped_column(String(120), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        UniqueConstraint("webhook_id", "dedupe_key"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class SchedulerLease(Base):
    """Leader lease: only the process holding it runs the scheduler's tick."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)

"""Rollup table of the evaluation (以评促管): daily counters per dimension and metric.

One row per (local day, unit, grid code, category, user, metric). Dimensions that do not
apply to a metric hold a sentinel (0 for ids, '' for the grid code) so that the primary key
is total and an upsert can add to it. See :mod:`cityops.evaluation.service` for what each
metric counts and on which day.
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
)
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime


class EvalDailyCount(Base):
    __tablename__ = "eval_daily_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    unit_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    grid_code: Mapped[str] = mapped_column(String(15), primary_key=True)
    category_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    metric: Mapped[str] = mapped_column(String(24), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        Index("ix_eval_daily_counts_metric_day", "metric", "day"),
        Index("ix_eval_daily_counts_unit_day", "unit_id", "day"),
        Index("ix_eval_daily_counts_user_day", "user_id", "day"),
    )


# --------------------------------------------------------------------------- 第三方考评


class Reviewer(Base):
    """Profile of a third-party reviewer (第三方考评员): a user with the role ``reviewer``.

    ``kind`` is npc 人大代表 / cppcc 政协委员 / supervisor 效能监督员 / citizen 市民; ``area`` a
    region-code prefix: the reviewer is given closed cases of that area only."""

    __tablename__ = "review_reviewers"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(12), nullable=False)
    area: Mapped[str] = mapped_column(String(12), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class ReviewRound(Base):
    """A review round: a reproducible random sample (``seed``) of cases closed in
    ``[period_start, period_end)`` (local days), ``sample_size`` per reviewer."""

    __tablename__ = "review_rounds"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    period_start: Mapped[date] = mapped_column(Date, nullable=False)
    period_end: Mapped[date] = mapped_column(Date, nullable=False)
    sample_size: Mapped[int] = mapped_column(Integer, nullable=False)
    seed: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: open | closed (a closed round takes no more draws or ratings)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="open")
    #: Created by the scheduled job (one per period).
    auto: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class ReviewAssignment(Base):
    """One case given to one reviewer in a round, and its rating once given."""

    __tablename__ = "review_assignments"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(
        ForeignKey("review_rounds.id", ondelete="CASCADE"), nullable=False
    )
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("review_reviewers.id"), nullable=False)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), nullable=False)
    #: Lead unit (主办) and grid code of the case when it was drawn (what the score is for).
    unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    region_code: Mapped[str | None] = mapped_column(String(15))
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    #: 满意 | 基本满意 | 不满意 (None until rated)
    rating: Mapped[str | None] = mapped_column(String(4))
    comment: Mapped[str | None] = mapped_column(Text)
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("case_attachments.id"))
    rated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reopened: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    #: Why a 不满意 that asked for 重新核查 could not reopen the case.
    reopen_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("round_id", "case_id"),
        Index("ix_review_assignments_reviewer", "reviewer_id", "round_id"),
        Index("ix_review_assignments_rated_at", "rated_at"),
    )


# --------------------------------------------------------------------------- 综合评价


class CeIndicator(Base):
    """A node of the comprehensive-evaluation indicator tree (城市形象 → 干净 → 道路保洁 …).

    ``weight`` is the percent of its parent (siblings sum to 100). A leaf has a ``source``:
    platform (``platform_metric`` from the evaluation service), site_inspection (optional
    ``check_items`` [{code, name, max}] for deductions) or questionnaire."""

    __tablename__ = "ce_indicators"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("ce_indicators.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    weight: Mapped[float] = mapped_column(Float, nullable=False)
    source: Mapped[str | None] = mapped_column(String(16))
    platform_metric: Mapped[str | None] = mapped_column(String(40))
    check_items: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    sort: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class CeTask(Base):
    """An evaluation task: a period ``[period_start, period_end)`` and target regions."""

    __tablename__ = "ce_tasks"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    period_start: Mapped[date] = mapped_column(Date, nullable=False)
    period_end: Mapped[date] = mapped_column(Date, nullable=False)
    region_codes: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    #: Weight (percent) of the self-evaluation in a blended leaf score; 100 − it: third party.
    self_weight: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[str] = mapped_column(String(8), nullable=False, default="open")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class CeTaskEvaluator(Base):
    __tablename__ = "ce_task_evaluators"

    task_id: Mapped[int] = mapped_column(
        ForeignKey("ce_tasks.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)


class CeRecord(Base):
    """A score of one leaf indicator for one region of a task: a site inspection (实地考察)
    or a questionnaire result (问卷调查); ``origin`` self (自评) or third_party (第三方)."""

    __tablename__ = "ce_records"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(
        ForeignKey("ce_tasks.id", ondelete="CASCADE"), nullable=False
    )
    indicator_id: Mapped[int] = mapped_column(ForeignKey("ce_indicators.id"), nullable=False)
    region_code: Mapped[str] = mapped_column(String(12), nullable=False)
    origin: Mapped[str] = mapped_column(String(12), nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    deductions: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    respondents: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    attachment_id: Mapped[int | None] = mapped_column(ForeignKey("case_attachments.id"))
    lon: Mapped[float | None] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float)
    grid_code: Mapped[str | None] = mapped_column(String(15))
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)

    __table_args__ = (Index("ix_ce_records_task_region", "task_id", "region_code"),)


def _install_listener() -> None:
    # the rollups follow every case transition as soon as the tables are registered
    from cityops.evaluation import rollup

    rollup.install()


_install_listener()

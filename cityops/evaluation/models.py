"""Rollup table of the evaluation (以评促管): daily counters per dimension and metric.

One row per (local day, unit, grid code, category, user, metric). Dimensions that do not
apply to a metric hold a sentinel (0 for ids, '' for the grid code) so that the primary key
is total and an upsert can add to it. See :mod:`cityops.evaluation.service` for what each
metric counts and on which day.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base


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


def _install_listener() -> None:
    # the rollups follow every case transition as soon as the tables are registered
    from cityops.evaluation import rollup

    rollup.install()


_install_listener()

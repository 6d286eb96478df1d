"""Monthly level of the evaluation rollups (``eval_monthly_counts``).

The same counters as ``eval_daily_counts`` (see :mod:`cityops.evaluation.rollup`) summed per
local calendar month, without the category, and with the grid code kept only for the region
metrics (``r_*``; '' for every other family). A ranking of whole months reads a few hundred
rows from here instead of hundreds of thousands of daily rows; periods that are not whole
months, and region-scoped figures of units and positions, read the daily table. Both levels
are written by the same upsert in the same transaction, and rebuilt together.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base


class EvalMonthlyCount(Base):
    __tablename__ = "eval_monthly_counts"

    #: First day of the local month.
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(24), primary_key=True)
    unit_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    grid_code: Mapped[str] = mapped_column(String(15), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)

    __table_args__ = (
        # covering: a ranking of a month reads only this index (no table lookups)
        Index("ix_eval_monthly_counts_cover", "month", "metric", "unit_id", "user_id", "count"),
    )

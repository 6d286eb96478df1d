"""Citizens' ratings (满意度评价) of closed cases: one per case, no personal data."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base, utcnow
from cityops.core.types import UTCDateTime

#: 满意 / 基本满意 / 不满意.
RATINGS = {"satisfied": "满意", "fair": "基本满意", "unsatisfied": "不满意"}


class CitizenRating(Base):
    """A citizen's rating of how a closed case was handled (once per case)."""

    __tablename__ = "citizen_ratings"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("cases.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    )
    rating: Mapped[str] = mapped_column(String(12), nullable=False)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)

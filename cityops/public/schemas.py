"""Request bodies of the public API (no personal data ever goes out)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RatingIn(BaseModel):
    #: satisfied 满意 | fair 基本满意 | unsatisfied 不满意
    rating: str = Field(examples=["satisfied"])
    comment: str | None = Field(default=None, max_length=500)

"""Request bodies of the evaluation API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class WeightsIn(BaseModel):
    """Weights of the composite values (any subset; missing groups keep the GUIDE defaults)."""

    unit: dict[str, float] | None = Field(
        default=None, description="on_time_handle, close, no_rework"
    )
    region: dict[str, float] | None = Field(
        default=None, description="no_public, filed_score, close, on_time_close"
    )
    inspector: dict[str, float] | None = Field(
        default=None, description="valid_report, no_miss, on_time_verify, on_time_check"
    )
    filed_buckets: list[list[Any]] | None = Field(
        default=None, description="立案数分值: [[max filed or null, score], …] ascending"
    )
    grades: list[list[Any]] | None = Field(
        default=None, description="[[min score, grade], …] descending"
    )

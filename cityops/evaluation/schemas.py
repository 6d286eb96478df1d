"""Request bodies of the evaluation API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class WeightsIn(BaseModel):
    """Weights of the composite values (any subset; missing groups keep the GUIDE defaults)."""

    unit: dict[str, float] | None = Field(
        default=None,
        description="on_time_handle, close, no_rework, review (third-party review, default 0)",
    )
    region: dict[str, float] | None = Field(
        default=None, description="no_public, filed_score, close, on_time_close"
    )
    inspector: dict[str, float] | None = Field(
        default=None, description="valid_report, no_miss, on_time_verify, on_time_check"
    )
    operator: dict[str, float] | None = Field(
        default=None, description="受理员: accept_count, verify_sent, check_sent"
    )
    shift_leader: dict[str, float] | None = Field(
        default=None, description="值班长: on_time_file, accurate_file, on_time_close"
    )
    dispatcher: dict[str, float] | None = Field(
        default=None, description="派遣员: dispatch_count, on_time_dispatch, accurate_dispatch"
    )
    accept_buckets: list[list[Any]] | None = Field(
        default=None, description="受理数分值: [[min count, score], …] descending, last min 0"
    )
    dispatch_buckets: list[list[Any]] | None = Field(
        default=None, description="派遣数分值: [[min count, score], …] descending, last min 0"
    )
    filed_buckets: list[list[Any]] | None = Field(
        default=None, description="立案数分值: [[max filed or null, score], …] ascending"
    )
    grades: list[list[Any]] | None = Field(
        default=None, description="[[min score, grade], …] descending"
    )

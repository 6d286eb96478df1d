"""Request bodies of the monitoring API (Pydantic v2)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FacilityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(None, max_length=40)
    name: str | None = Field(None, max_length=200)
    kind: str | None = None
    owner_unit_id: int | None = None
    component_code: str | None = None
    lon: float | None = None
    lat: float | None = None
    address: str | None = Field(None, max_length=300)
    case_category_id: int | None = None
    attrs: dict[str, Any] | None = None
    active: bool | None = None
    version: int | None = None


class DeviceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(None, max_length=60)
    name: str | None = Field(None, max_length=200)
    device_type: str | None = None
    facility_id: int | None = None
    measurands: list[str] | None = None
    lon: float | None = None
    lat: float | None = None
    interval_s: int | None = None
    status: str | None = None
    version: int | None = None


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    device_type: str | None = None
    device_id: int | None = None
    measurand: str | None = None
    comparator: str | None = None
    levels: list[dict[str, Any]] | None = None
    duration_s: int | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0)
    auto_confirm: bool | None = None
    active: bool | None = None
    description: str | None = None


class JudgeIn(BaseModel):
    """研判: confirm the alarm, or reject it as false (误报) with a reason."""

    model_config = ConfigDict(extra="forbid")

    confirm: bool
    reason: str | None = None
    version: int | None = None

"""Request bodies of the case API (responses are the dicts built in ``queries``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class CaseCreate(BaseModel):
    """上报: a new report."""

    source: str | None = Field(
        None, description="inspector, public, hotline, video, iot, leader, upper, media, self"
    )
    category_code: str | None = Field(
        None, description="category code of the city's standard (or local)"
    )
    category_id: int | None = None
    urgency: str | None = Field(None, description="特急, 紧急 or 一般 (default: the category's)")
    description: str = Field(..., min_length=1, max_length=4000)
    address: str | None = Field(None, max_length=300)
    lon: float
    lat: float
    crs: str = Field("wgs84", description="wgs84, cgcs2000, gcj02 (高德/腾讯) or bd09 (百度)")
    component_code: str | None = None
    reporter_name: str | None = Field(None, max_length=100)
    reporter_phone: str | None = Field(None, max_length=30)
    attachment_ids: list[int] = Field(
        default_factory=list, description="ids from POST /api/v1/attachments"
    )


class ActionRequest(BaseModel):
    """One workflow action; further fields depend on the action (see GET /api/v1/cases/actions)."""

    model_config = ConfigDict(extra="allow")

    action: str = Field(
        ..., description="accept, reject, verify, file, void, dispatch, sign, handle, …"
    )
    version: int | None = Field(None, description="the case version you saw (optimistic lock)")

    def payload(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DispatchRuleIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)
    active: bool = True
    priority: int = 100
    category_id: int | None = None
    region_prefix: str | None = Field(None, pattern=r"^\d{6}(\d{3}){0,3}$")
    component_owner_unit_id: int | None = None
    to_component: str | None = Field(None, pattern=r"^(owner|maintainer)$")
    time_from: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    time_to: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    weekdays: str | None = Field(None, pattern=r"^[1-7]{1,7}$")
    unit_id: int | None = None
    co_unit_ids: list[int] = Field(default_factory=list)


class DispatchTest(BaseModel):
    """“Which unit would get this?”"""

    category_code: str
    lon: float
    lat: float
    crs: str = "wgs84"
    component_code: str | None = None
    at: str | None = Field(None, description="ISO time (default now)")

"""Request bodies of the flood API (Pydantic v2). Answers are plain JSON dicts built by
``cityops.flood.service`` (one shape per object, shared by the API, the report and the CLI)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Lon = Field(ge=-180, le=180)
Lat = Field(ge=-90, le=90)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class PointIn(_In):
    code: str = Field(min_length=1, max_length=30)
    name: str = Field(min_length=1, max_length=100)
    kind: str = "underpass"
    address: str | None = Field(default=None, max_length=200)
    lon: float = Lon
    lat: float = Lat
    crs: str = "wgs84"
    depth_device_code: str | None = Field(default=None, max_length=60)
    rain_device_code: str | None = Field(default=None, max_length=60)
    warn_depth_cm: float = Field(default=15.0, gt=0, le=500)
    close_depth_cm: float = Field(default=30.0, gt=0, le=500)
    person_ids: list[int] = Field(default_factory=list)
    active: bool = True
    note: str | None = None


class PointPatch(_In):
    version: int
    name: str | None = Field(default=None, min_length=1, max_length=100)
    kind: str | None = None
    address: str | None = Field(default=None, max_length=200)
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    crs: str = "wgs84"
    depth_device_code: str | None = Field(default=None, max_length=60)
    rain_device_code: str | None = Field(default=None, max_length=60)
    warn_depth_cm: float | None = Field(default=None, gt=0, le=500)
    close_depth_cm: float | None = Field(default=None, gt=0, le=500)
    person_ids: list[int] | None = None
    active: bool | None = None
    note: str | None = None


class PersonIn(_In):
    name: str = Field(min_length=1, max_length=60)
    phone: str = Field(min_length=3, max_length=30)
    unit_id: int | None = None
    role: str = Field(default="包保责任人", min_length=1, max_length=40)
    user_id: int | None = None
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    active: bool = True


class TeamIn(_In):
    name: str = Field(min_length=1, max_length=100)
    unit_id: int | None = None
    leader_name: str = Field(min_length=1, max_length=60)
    leader_user_id: int | None = None
    members: int = Field(default=1, ge=1, le=10_000)
    phone: str = Field(min_length=3, max_length=30)
    base_lon: float = Lon
    base_lat: float = Lat
    status: Literal["standby", "dispatched", "on_site", "off"] = "standby"


class EquipmentIn(_In):
    code: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)
    kind: str = "pump"
    capacity_m3h: float | None = Field(default=None, gt=0)
    quantity: int = Field(default=1, ge=1)
    team_id: int | None = None
    point_id: int | None = None
    status: Literal["available", "in_use", "repair"] = "available"
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)


class PositionIn(_In):
    lon: float = Lon
    lat: float = Lat


class RuleIn(_In):
    signal: Literal["rainfall", "ponding"]
    level: int = Field(ge=1, le=4)
    window_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    threshold: float | None = Field(default=None, gt=0)
    relative_to: Literal["close", "warn"] | None = None
    min_points: int = Field(default=1, ge=1)
    enabled: bool = True
    note: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _complete(self) -> RuleIn:
        if self.signal == "rainfall":
            if self.window_minutes is None or self.threshold is None:
                raise ValueError("a rainfall rule needs window_minutes and threshold (mm)")
            if self.relative_to is not None:
                raise ValueError("relative_to is for ponding rules only")
        elif self.relative_to is None and self.threshold is None:
            raise ValueError("a ponding rule needs relative_to (close/warn) or threshold (cm)")
        return self


class LevelAction(_In):
    action: Literal["start", "raise", "lower", "end"]
    level: int | None = Field(default=None, ge=1, le=4)
    reason: str = Field(min_length=1, max_length=2000)
    version: int | None = None


class ProposalDecision(_In):
    action: Literal["accept", "dismiss"]
    note: str | None = Field(default=None, max_length=2000)


class OrderIn(_In):
    point_id: int
    person_id: int | None = None
    team_id: int | None = None
    task: str = Field(min_length=1, max_length=2000)
    equipment_ids: list[int] = Field(default_factory=list)
    ack_minutes: int = Field(default=10, ge=1, le=24 * 60)

    @model_validator(mode="after")
    def _one_receiver(self) -> OrderIn:
        if (self.person_id is None) == (self.team_id is None):
            raise ValueError("give exactly one receiver: person_id or team_id")
        return self


class OrderAction(_In):
    action: Literal["acknowledge", "en_route", "arrive", "done", "cancel"]
    version: int | None = None
    lon: float | None = Field(default=None, ge=-180, le=180)
    lat: float | None = Field(default=None, ge=-90, le=90)
    note: str | None = Field(default=None, max_length=2000)

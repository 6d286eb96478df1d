"""Request and response bodies of the city-model endpoints.

Coordinates in answers are WGS84/CGCS2000 longitude/latitude; geometry is GeoJSON.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cityops.geo.models import (
    COMPONENT_STATUSES,
    HANDLER_MODES,
    UNIT_TYPES,
    URGENCIES,
)
from cityops.worktime.models import LIMIT_UNITS, STAGES

CrsName = Literal["wgs84", "cgcs2000", "gcj02", "bd09"]


def _enum(values: tuple[str, ...], text: str, default: Any = ...) -> Any:
    return Field(
        default,
        description=f"{text}: {', '.join(values)}",
        json_schema_extra={"enum": list(values)},
    )


class CodeName(BaseModel):
    code: str | None
    name: str | None


class UnitRef(BaseModel):
    id: int
    code: str
    name: str


class UserRef(BaseModel):
    id: int
    username: str
    display_name: str


class Bbox(BaseModel):
    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float


# --------------------------------------------------------------------------- locate


class LonLatCrs(BaseModel):
    lon: float
    lat: float
    crs: str


class LonLat(BaseModel):
    lon: float
    lat: float


class GridBrief(BaseModel):
    id: int
    code: str = Field(description="15-digit unit grid code")
    area_m2: float


class RGridBrief(BaseModel):
    id: int
    code: str
    name: str


class LocateOut(BaseModel):
    """Where a point is: the same JSON as ``cityops locate``."""

    model_config = ConfigDict(extra="allow")

    input: LonLatCrs = Field(description="The point as given")
    wgs84: LonLat = Field(description="The point converted to WGS84/CGCS2000")
    grid: GridBrief = Field(description="Unit grid (单元网格) containing the point")
    responsibility_grid: RGridBrief | None = Field(description="责任网格 of the unit grid")
    community: CodeName
    street: CodeName
    district: CodeName


class NearestComponentOut(BaseModel):
    id: int
    code: str
    category: CodeName
    status: str
    lon: float
    lat: float
    distance_m: float = Field(description="Geodesic distance from the query point, metres")
    grid_code: str | None
    competent_unit: str | None = Field(description="主管部门 name")
    owner_unit: str | None = Field(description="权属单位 name")
    maintainer_unit: str | None = Field(description="养护单位 name")


# --------------------------------------------------------------------------- regions


class RegionOut(BaseModel):
    id: int
    code: str = Field(description="GB/T 2260 district (6), street (9) or community (12) code")
    name: str
    level: str = Field(description="city, district, street or community")
    parent_code: str | None
    area_m2: float | None
    bbox: Bbox | None


class RegionDetail(RegionOut):
    geometry: dict[str, Any] | None = Field(description="GeoJSON geometry (WGS84)")
    children: int = Field(description="Number of direct child regions")
    descendants: dict[str, int] = Field(
        description="Regions below this one by level, and 'grid': number of unit grids"
    )


# --------------------------------------------------------------------------- units


class UnitOut(BaseModel):
    id: int
    code: str
    name: str
    unit_type: str
    parent_code: str | None
    credit_code: str | None = Field(description="统一社会信用代码 (18 characters)")
    phone: str | None
    active: bool
    region_codes: list[str] = Field(description="Regions the unit serves")


class UnitCreate(BaseModel):
    code: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field(min_length=1, max_length=200)
    unit_type: str = _enum(UNIT_TYPES, "Unit type")
    parent_code: str | None = Field(None, description="Code of the parent unit")
    credit_code: str | None = Field(None, description="统一社会信用代码 (18 characters)")
    phone: str | None = Field(None, max_length=40)
    active: bool = True
    region_codes: list[str] = Field(default_factory=list, description="Regions the unit serves")


class UnitPatch(BaseModel):
    """Only the fields sent are changed."""

    name: str | None = Field(None, min_length=1, max_length=200)
    unit_type: str | None = None
    parent_code: str | None = None
    credit_code: str | None = None
    phone: str | None = Field(None, max_length=40)
    active: bool | None = None
    region_codes: list[str] | None = None


# --------------------------------------------------------------------------- grids


class GridOut(BaseModel):
    id: int
    code: str = Field(description="15-digit unit grid code: community (12) + sequence (3)")
    community: CodeName
    area_m2: float
    management_level: str | None
    responsibility_grid: CodeName | None
    owner_unit: UnitRef | None
    bbox: Bbox | None
    geometry: dict[str, Any] | None = Field(None, description="GeoJSON (only when asked for)")


class GridDetail(GridOut):
    street: CodeName
    district: CodeName
    inspectors: list[UserRef] = Field(description="监督员 patrolling this grid")
    components: int = Field(description="Number of components in the grid")
    note: str | None


class GridPatch(BaseModel):
    """Only the fields sent are changed."""

    management_level: str | None = Field(None, max_length=20)
    responsibility_grid_code: str | None = Field(None, description="责任网格 code; null to clear")
    inspectors: list[str] | None = Field(
        None, description="Usernames of the grid's inspectors (the full new list)"
    )
    owner_unit_code: str | None = None
    note: str | None = None


# --------------------------------------------------------------------------- components


class CategoryRef(BaseModel):
    id: int
    code: str
    name: str
    standard: str
    big_class_name: str


class ComponentOut(BaseModel):
    id: int
    code: str = Field(description="16-digit legacy or 17-digit GB/T 47678.5 component code")
    name: str | None
    category: CategoryRef
    status: str
    lon: float
    lat: float
    grid_code: str | None
    competent_unit: UnitRef | None = Field(description="主管部门")
    owner_unit: UnitRef | None = Field(description="权属单位")
    maintainer_unit: UnitRef | None = Field(description="养护单位")
    initial_date: date | None
    change_date: date | None
    data_source: str | None
    note: str | None


class StatusChange(BaseModel):
    old_status: str | None
    new_status: str
    changed_at: datetime
    changed_by: str | None
    note: str | None


class ComponentDetail(ComponentOut):
    history: list[StatusChange] = Field(description="Status changes, oldest first")


class ComponentPage(BaseModel):
    items: list[ComponentOut]
    next_cursor: int | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page"
    )


class ComponentCreate(BaseModel):
    code: str = Field(
        pattern=r"^[0-9]{16,17}$",
        description="6 region + category (2+2 legacy or 2+3 GB/T 47678.5) + 6 serial digits",
    )
    name: str | None = Field(None, max_length=100)
    lon: float
    lat: float
    crs: CrsName = Field("wgs84", description="CRS of lon/lat")
    status: str = _enum(COMPONENT_STATUSES, "Status", "完好")
    competent_unit_code: str | None = None
    owner_unit_code: str | None = None
    maintainer_unit_code: str | None = None
    initial_date: date | None = None
    data_source: str | None = Field(None, max_length=20, description="实测, 地形图, …")
    note: str | None = None


class ComponentPatch(BaseModel):
    """Only the fields sent are changed. Handlers may only send ``status`` and ``status_note``."""

    status: str | None = Field(None, description=f"One of {', '.join(COMPONENT_STATUSES)}")
    status_note: str | None = Field(None, description="Why the status changed (kept in history)")
    name: str | None = Field(None, max_length=100)
    lon: float | None = None
    lat: float | None = None
    crs: CrsName = "wgs84"
    competent_unit_code: str | None = None
    owner_unit_code: str | None = None
    maintainer_unit_code: str | None = None
    data_source: str | None = Field(None, max_length=20)
    note: str | None = None


# --------------------------------------------------------------------------- categories


class TimeLimit(BaseModel):
    stage: str = _enum(STAGES, "Workflow stage")
    urgency: str | None = Field(None, description=f"One of {', '.join(URGENCIES)}; null = all")
    amount: float = Field(gt=0, description="Length of the limit, in `unit`")
    unit: str = _enum(LIMIT_UNITS, "Unit")


class CategoryOut(BaseModel):
    id: int
    standard: str = Field(description="gbt47678, gbt30428 or local")
    kind: str = Field(description="component or matter")
    code: str
    big_class_code: str
    big_class_name: str
    name: str
    is_local: bool
    enabled: bool
    handler_mode: str | None = Field(description=f"One of {', '.join(HANDLER_MODES)}")
    handler_unit_type: str | None
    handler_unit: UnitRef | None
    default_urgency: str
    filing_standard: str | None = Field(description="立案标准")
    closing_standard: str | None = Field(description="结案标准")
    time_limits: list[TimeLimit]


class CategoryPatch(BaseModel):
    """Only the fields sent are changed."""

    name: str | None = Field(None, max_length=100, description="Local classes only")
    handler_mode: str | None = Field(None, description=f"One of {', '.join(HANDLER_MODES)}")
    handler_unit_type: str | None = Field(None, description=f"One of {', '.join(UNIT_TYPES)}")
    handler_unit_code: str | None = None
    default_urgency: str | None = Field(None, description=f"One of {', '.join(URGENCIES)}")
    filing_standard: str | None = None
    closing_standard: str | None = None
    enabled: bool | None = None


class CategoryCreate(BaseModel):
    code: str = Field(
        pattern=r"^[0-9]{4,5}$",
        description="Category code in the chosen standard's form: 2-digit big class + small "
        "class (3 digits for gbt47678, 2 for gbt30428)",
    )
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["component", "matter"]
    big_class_code: str | None = Field(None, pattern=r"^[0-9]{2}$")
    big_class_name: str | None = Field(
        None, max_length=60, description="Needed when the big class is new"
    )


class CategoryStandardIn(BaseModel):
    standard: Literal["gbt47678", "gbt30428"] = Field(
        description="gbt47678 (GB/T 47678.5-2026) or gbt30428 (legacy GB/T 30428.2)"
    )


class CategoryStandardOut(BaseModel):
    standard: str
    added: int = Field(0, description="Categories loaded now (the first time a standard is chosen)")

"""Tables of the city model (城市基础数据).

Geometry is stored without PostGIS: polygons as WKB plus a bounding box, points as
lon/lat (WGS84/CGCS2000) plus an H3 cell id (resolution :data:`H3_RES`) for indexed
neighbourhood queries on both SQLite and PostgreSQL. Region-like codes are hierarchical
(district 6 → street 9 → community 12 → unit grid 15 digits), so a data scope is a code
prefix and scope filters are ``code LIKE 'prefix%'``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime

#: H3 resolution of point columns (res 9: ~0.1 km² cells, ~174 m edge).
H3_RES = 9

REGION_LEVELS = ("city", "district", "street", "community")
REGION_CODE_LENGTH = {"city": 6, "district": 6, "street": 9, "community": 12}
UNIT_TYPES = ("主管部门", "权属单位", "养护单位", "处置单位", "监督中心", "指挥中心")
COMPONENT_STATUSES = ("完好", "破损", "丢失", "废弃", "移除")
CATEGORY_STANDARDS = ("gbt47678", "gbt30428", "local")
CATEGORY_KINDS = ("component", "matter")
URGENCIES = ("特急", "紧急", "一般")
HANDLER_MODES = ("unit_type", "component_owner", "fixed_unit")
POI_KINDS = ("toilet", "park", "parking")


class Bbox:
    """Mixin: bounding box columns for polygon tables (indexed coarse filters)."""

    min_lon: Mapped[float | None] = mapped_column(Float)
    min_lat: Mapped[float | None] = mapped_column(Float)
    max_lon: Mapped[float | None] = mapped_column(Float)
    max_lat: Mapped[float | None] = mapped_column(Float)


class Region(Bbox, Base):
    """Administrative region: city → district (区) → street (街道) → community (社区)."""

    __tablename__ = "regions"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    level: Mapped[str] = mapped_column(String(12), nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id"), index=True)
    geom: Mapped[bytes | None] = mapped_column(LargeBinary)
    area_m2: Mapped[float | None] = mapped_column(Float)

    parent: Mapped[Region | None] = relationship(remote_side="Region.id")


unit_regions = Table(
    "unit_regions",
    Base.metadata,
    Column("unit_id", ForeignKey("units.id", ondelete="CASCADE"), primary_key=True),
    Column("region_id", ForeignKey("regions.id", ondelete="CASCADE"), primary_key=True),
)


class Unit(Base):
    """Department or company (部门/单位): 主管部门, 权属单位, 养护单位, 处置单位, 监督中心, 指挥中心."""

    __tablename__ = "units"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    unit_type: Mapped[str] = mapped_column(String(20), nullable=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"), index=True)
    #: 统一社会信用代码 (18 characters, GB 32100), where known.
    credit_code: Mapped[str | None] = mapped_column(String(18))
    phone: Mapped[str | None] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)

    regions: Mapped[list[Region]] = relationship(secondary=unit_regions)


class ResponsibilityGrid(Base):
    """责任网格: a group of unit grids patrolled by the same inspectors."""

    __tablename__ = "responsibility_grids"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    #: The street (or community) the responsibility grid lies in: used for scope.
    region_code: Mapped[str] = mapped_column(String(12), nullable=False, index=True)


grid_inspectors = Table(
    "grid_inspectors",
    Base.metadata,
    Column("grid_id", ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
)


class Grid(Bbox, Base):
    """单元网格 unit grid: 15-digit code = community (12) + 3-digit sequence."""

    __tablename__ = "grids"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True, nullable=False)
    community_id: Mapped[int] = mapped_column(ForeignKey("regions.id"), nullable=False, index=True)
    responsibility_grid_id: Mapped[int | None] = mapped_column(
        ForeignKey("responsibility_grids.id"), index=True
    )
    geom: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    area_m2: Mapped[float] = mapped_column(Float, nullable=False)
    management_level: Mapped[str | None] = mapped_column(String(20))
    owner_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    note: Mapped[str | None] = mapped_column(Text)

    community: Mapped[Region] = relationship()
    responsibility_grid: Mapped[ResponsibilityGrid | None] = relationship()
    inspectors: Mapped[list[Any]] = relationship("User", secondary=grid_inspectors)


class Category(Base):
    """Problem/component class (大类/小类) of a national or local standard, with its settings."""

    __tablename__ = "categories"
    __audited__ = True
    __table_args__ = (UniqueConstraint("standard", "kind", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    standard: Mapped[str] = mapped_column(String(12), nullable=False)
    kind: Mapped[str] = mapped_column(String(12), nullable=False)
    code: Mapped[str] = mapped_column(String(8), nullable=False)
    big_class_code: Mapped[str] = mapped_column(String(4), nullable=False)
    big_class_name: Mapped[str] = mapped_column(String(60), nullable=False)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    is_local: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # Settings used by the case workflow.
    handler_mode: Mapped[str | None] = mapped_column(String(20))
    handler_unit_type: Mapped[str | None] = mapped_column(String(20))
    handler_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))
    default_urgency: Mapped[str] = mapped_column(String(4), default="一般", nullable=False)
    filing_standard: Mapped[str | None] = mapped_column(Text)  # 立案标准
    closing_standard: Mapped[str | None] = mapped_column(Text)  # 结案标准


class CategoryTimeLimit(Base):
    """Time limit of one stage for a category (and optionally one urgency)."""

    __tablename__ = "category_time_limits"
    __audited__ = True
    __table_args__ = (UniqueConstraint("category_id", "stage", "urgency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(
        ForeignKey("categories.id", ondelete="CASCADE"), nullable=False
    )
    stage: Mapped[str] = mapped_column(String(20), nullable=False)
    #: None = every urgency.
    urgency: Mapped[str | None] = mapped_column(String(4))
    amount: Mapped[float] = mapped_column(Float, nullable=False)
    #: natural_minutes | natural_hours | working_hours | working_days
    unit: Mapped[str] = mapped_column(String(20), nullable=False)


class Component(Base):
    """部件: a coded city component with its owners (主管/权属/养护)."""

    __tablename__ = "components"
    __audited__ = True

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    code: Mapped[str] = mapped_column(String(17), unique=True, nullable=False)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), nullable=False)
    name: Mapped[str | None] = mapped_column(String(100))
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    h3: Mapped[int] = mapped_column(BigInteger, nullable=False)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"))
    #: Denormalised 15-digit grid code: scope filters are a prefix match on it.
    grid_code: Mapped[str | None] = mapped_column(String(15))
    status: Mapped[str] = mapped_column(String(4), default="完好", nullable=False)
    competent_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))  # 主管部门
    owner_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))  # 权属单位
    maintainer_unit_id: Mapped[int | None] = mapped_column(ForeignKey("units.id"))  # 养护单位
    initial_date: Mapped[date | None] = mapped_column(Date)
    change_date: Mapped[date | None] = mapped_column(Date)
    data_source: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(Text)

    category: Mapped[Category] = relationship()

    __table_args__ = (
        Index("ix_components_h3_category", "h3", "category_id"),
        Index("ix_components_grid_code", "grid_code"),
        Index("ix_components_category", "category_id"),
        Index("ix_components_owner", "owner_unit_id"),
    )


class ComponentStatusHistory(Base):
    __tablename__ = "component_status_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), nullable=False, index=True
    )
    old_status: Mapped[str | None] = mapped_column(String(4))
    new_status: Mapped[str] = mapped_column(String(4), nullable=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    changed_by: Mapped[str | None] = mapped_column(String(100))
    note: Mapped[str | None] = mapped_column(Text)


class Poi(Base):
    """Public service point (便民服务): public toilet, park, parking."""

    __tablename__ = "pois"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(12), nullable=False, index=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    address: Mapped[str | None] = mapped_column(String(200))
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    h3: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    attrs: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class GreenSpace(Bbox, Base):
    """Green-space polygon (绿地) for green-space statistics."""

    __tablename__ = "green_spaces"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    kind: Mapped[str] = mapped_column(String(20), nullable=False)
    community_code: Mapped[str | None] = mapped_column(String(12), index=True)
    geom: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    area_m2: Mapped[float] = mapped_column(Float, nullable=False)


class CitySetting(Base):
    """Key/value city configuration (e.g. the chosen category standard, geo version)."""

    __tablename__ = "city_settings"
    __audited__ = True

    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType)


# Grid.inspectors refers to access.models.User: register it whenever these models are used
# on their own (the access models import Unit from here, which is defined by now).
from cityops.access import models as _access_models  # noqa: E402, F401

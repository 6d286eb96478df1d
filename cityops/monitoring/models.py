"""Tables of the monitoring context (城市生命线监测).

* ``monitoring_facilities`` — monitored objects (燃气管段, 调压站, 阀门井, 相邻地下空间, 供水干管,
  排水管道, 泵站, 排口, 桥梁, 综合管廊, 化粪池, 下穿通道/积水点) with their owner unit (权属单位).
* ``monitoring_devices`` — sensors on a facility: code, type, measurands, sampling interval,
  status, credential hash, intake counters (accepted / rejected readings).
* ``monitoring_readings`` — raw readings, key (device, measurand, ts). See
  :mod:`cityops.monitoring.ingest` for the storage layout on each database.
* ``monitoring_rollups_1m`` / ``monitoring_rollups_1h`` — min/max/sum/count per bucket.
* ``monitoring_latest`` — the latest value of every (device, measurand).
* ``monitoring_rules`` / ``monitoring_rule_states`` — thresholds and per-device rule state.
* ``monitoring_alarms`` / ``monitoring_alarm_events`` — the alarm lifecycle and its history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime

_BIGID = BigInteger().with_variant(Integer, "sqlite")


class Facility(Base):
    """A monitored lifeline object (监测对象)."""

    __tablename__ = "monitoring_facilities"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(24), nullable=False)
    owner_unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), nullable=False, index=True)
    component_id: Mapped[int | None] = mapped_column(_BIGID, ForeignKey("components.id"))
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    h3: Mapped[int] = mapped_column(BigInteger, nullable=False)
    #: 15-digit unit grid code of the location: scope filters are a prefix match on it.
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    address: Mapped[str | None] = mapped_column(String(300))
    #: Case category used for its urgent cases; None = the default for the kind.
    case_category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    attrs: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    active: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Device(Base):
    """A sensor (监测设备) on a facility."""

    __tablename__ = "monitoring_devices"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(60), unique=True, nullable=False)
    name: Mapped[str | None] = mapped_column(String(200))
    device_type: Mapped[str] = mapped_column(String(24), nullable=False)
    facility_id: Mapped[int] = mapped_column(
        ForeignKey("monitoring_facilities.id"), nullable=False, index=True
    )
    #: Measurand codes this device reports (see ``cityops.monitoring.catalog.MEASURANDS``).
    measurands: Mapped[list[str]] = mapped_column(JSONType, nullable=False)
    lon: Mapped[float] = mapped_column(Float, nullable=False)
    lat: Mapped[float] = mapped_column(Float, nullable=False)
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    interval_s: Mapped[int] = mapped_column(Integer, nullable=False, default=60)
    #: online | offline | maintenance
    status: Mapped[str] = mapped_column(String(12), nullable=False, default="online")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: SHA-256 of the device's telemetry key (never the key itself).
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    accepted_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    rejected_count: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    last_reject_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_reject_reason: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
    #: Not (status, last_seen_at): an indexed last_seen_at would make every intake update of
    #: the row a non-HOT one on PostgreSQL (migration 0011).
    __table_args__ = (Index("ix_monitoring_devices_status", "status"),)


class Reading(Base):
    """Raw reading. On PostgreSQL the table is range-partitioned by month on ``ts``."""

    __tablename__ = "monitoring_readings"

    device_id: Mapped[int] = mapped_column(Integer, nullable=False)
    measurand: Mapped[str] = mapped_column(String(16), nullable=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (
        PrimaryKeyConstraint("device_id", "measurand", "ts", name="pk_monitoring_readings"),
        {"sqlite_with_rowid": False},
    )


class _Rollup:
    device_id: Mapped[int] = mapped_column(Integer, nullable=False)
    measurand: Mapped[str] = mapped_column(String(16), nullable=False)
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    vmin: Mapped[float] = mapped_column(Float, nullable=False)
    vmax: Mapped[float] = mapped_column(Float, nullable=False)
    vsum: Mapped[float] = mapped_column(Float, nullable=False)
    n: Mapped[int] = mapped_column(Integer, nullable=False)


class Rollup1m(_Rollup, Base):
    __tablename__ = "monitoring_rollups_1m"
    __table_args__ = (
        PrimaryKeyConstraint("device_id", "measurand", "bucket", name="pk_monitoring_rollups_1m"),
        {"sqlite_with_rowid": False},
    )


class Rollup1h(_Rollup, Base):
    __tablename__ = "monitoring_rollups_1h"
    __table_args__ = (
        PrimaryKeyConstraint("device_id", "measurand", "bucket", name="pk_monitoring_rollups_1h"),
        {"sqlite_with_rowid": False},
    )


class Latest(Base):
    """Latest value of each (device, measurand)."""

    __tablename__ = "monitoring_latest"

    device_id: Mapped[int] = mapped_column(Integer, nullable=False)
    measurand: Mapped[str] = mapped_column(String(16), nullable=False)
    ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)

    __table_args__ = (PrimaryKeyConstraint("device_id", "measurand", name="pk_monitoring_latest"),)


class Rule(Base):
    """Alarm rule (报警规则) for a device type or one device.

    ``levels`` is a list of ``{"level": 1, "value": 25.0}`` (or ``{"level": 1, "low": ..,
    "high": ..}`` for ``outside``); level 1 is the most severe (一级 红). A device's own rule
    for a measurand and comparator replaces its type's rule.
    """

    __tablename__ = "monitoring_rules"
    __audited__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    device_type: Mapped[str | None] = mapped_column(String(24), index=True)
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("monitoring_devices.id", ondelete="CASCADE"), index=True
    )
    #: None only for ``offline``.
    measurand: Mapped[str | None] = mapped_column(String(16))
    #: above | below | outside | drop | rise (per minute) | offline
    comparator: Mapped[str] = mapped_column(String(10), nullable=False)
    levels: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, nullable=False)
    #: The condition must hold this long before an alarm is raised ("for N minutes").
    duration_s: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Clearing needs the value this far back inside the least severe threshold.
    hysteresis: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    #: 研判: raised alarms are confirmed automatically (no monitor needed).
    auto_confirm: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class RuleState(Base):
    """Per (device, rule): whether the condition holds and since when."""

    __tablename__ = "monitoring_rule_states"

    device_id: Mapped[int] = mapped_column(
        ForeignKey("monitoring_devices.id", ondelete="CASCADE"), nullable=False
    )
    rule_id: Mapped[int] = mapped_column(
        ForeignKey("monitoring_rules.id", ondelete="CASCADE"), nullable=False
    )
    in_breach: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    breach_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_ts: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_value: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        PrimaryKeyConstraint("device_id", "rule_id", name="pk_monitoring_rule_states"),
    )


ALARM_STATUSES = {
    "pending": "待研判",
    "active": "已预警",
    "rejected": "误报",
    "cleared": "已解除",
}
OPEN_ALARM_STATUSES = ("pending", "active")


class Alarm(Base):
    """One alarm per device and rule while open; repeats are counted on it."""

    __tablename__ = "monitoring_alarms"
    __audited__ = True

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("monitoring_devices.id"), nullable=False)
    rule_id: Mapped[int] = mapped_column(ForeignKey("monitoring_rules.id"), nullable=False)
    facility_id: Mapped[int] = mapped_column(
        ForeignKey("monitoring_facilities.id"), nullable=False, index=True
    )
    grid_code: Mapped[str | None] = mapped_column(String(15), index=True)
    measurand: Mapped[str | None] = mapped_column(String(16))
    #: Worst level seen (1 = 一级 红, the most severe).
    level: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(10), nullable=False, default="pending")
    #: 1 while open, NULL once closed: unique (device, rule, is_open) = one open alarm.
    is_open: Mapped[int | None] = mapped_column(Integer, default=1)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    trigger_ts: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    trigger_value: Mapped[float | None] = mapped_column(Float)
    #: The reading of the latest event (raise, repeat, level, normal); live values are in
    #: ``monitoring_latest`` (so that readings do not bump the version a monitor judges).
    last_ts: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_value: Mapped[float | None] = mapped_column(Float)
    repeat_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: Readings are back to normal (past the hysteresis band).
    normal: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    normal_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    judged_by: Mapped[str | None] = mapped_column(String(100))
    judged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    judgement_note: Mapped[str | None] = mapped_column(Text)
    warning_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    case_id: Mapped[int | None] = mapped_column(_BIGID, ForeignKey("cases.id"), index=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    previous_alarm_id: Mapped[int | None] = mapped_column(
        _BIGID, ForeignKey("monitoring_alarms.id")
    )
    #: Device, facility, rule and readings at the moment it was raised.
    snapshot: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012
    __table_args__ = (
        Index(
            "ux_monitoring_alarms_open",
            "device_id",
            "rule_id",
            unique=True,
            sqlite_where=text("is_open = 1"),
            postgresql_where=text("is_open = 1"),
        ),
        Index("ix_monitoring_alarms_status_raised", "status", "raised_at"),
        Index("ix_monitoring_alarms_device_rule", "device_id", "rule_id"),
    )


class AlarmEvent(Base):
    """History of an alarm: raised, repeat, level, confirm/reject, warning, case, normal, clear."""

    __tablename__ = "monitoring_alarm_events"

    id: Mapped[int] = mapped_column(_BIGID, primary_key=True)
    alarm_id: Mapped[int] = mapped_column(
        _BIGID,
        ForeignKey("monitoring_alarms.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    actor_name: Mapped[str] = mapped_column(String(100), nullable=False)
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

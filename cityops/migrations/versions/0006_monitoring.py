"""lifeline monitoring (城市生命线): facilities, devices, readings, rules, alarms

Raw readings: on PostgreSQL ``monitoring_readings`` is range-partitioned by month on ``ts``
(a DEFAULT partition catches anything outside the created months; the ``monitoring.partitions``
job creates months ahead); on SQLite it is one WITHOUT ROWID table keyed
(device_id, measurand, ts). The default alarm rules (GUIDE §7) are inserted as data.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 18:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import cityops.core.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("device_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("measurand", sa.String(length=16), nullable=False),
        sa.Column("bucket", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=False),
        sa.Column("vmax", sa.Float(), nullable=False),
        sa.Column("vsum", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "measurand", "bucket", name=op.f(f"pk_{name}")),
        sqlite_with_rowid=False,
    )


def _month(y: int, m: int) -> tuple[int, int]:
    return (y + 1, 1) if m == 12 else (y, m + 1)


def upgrade() -> None:
    op.create_table(
        "monitoring_facilities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("owner_unit_id", sa.Integer(), nullable=False),
        sa.Column("component_id", BIGID, nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("h3", sa.BigInteger(), nullable=False),
        sa.Column("grid_code", sa.String(length=15), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("case_category_id", sa.Integer(), nullable=True),
        sa.Column("attrs", JSON, nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_unit_id"],
            ["units.id"],
            name=op.f("fk_monitoring_facilities_owner_unit_id_units"),
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_monitoring_facilities_component_id_components"),
        ),
        sa.ForeignKeyConstraint(
            ["case_category_id"],
            ["categories.id"],
            name=op.f("fk_monitoring_facilities_case_category_id_categories"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_facilities")),
        sa.UniqueConstraint("code", name=op.f("uq_monitoring_facilities_code")),
    )
    op.create_index(
        op.f("ix_monitoring_facilities_owner_unit_id"), "monitoring_facilities", ["owner_unit_id"]
    )
    op.create_index(
        op.f("ix_monitoring_facilities_grid_code"), "monitoring_facilities", ["grid_code"]
    )
    op.create_table(
        "monitoring_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=60), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("device_type", sa.String(length=24), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("measurands", JSON, nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("grid_code", sa.String(length=15), nullable=True),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("last_seen_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("accepted_count", sa.BigInteger(), nullable=False),
        sa.Column("rejected_count", sa.BigInteger(), nullable=False),
        sa.Column("last_reject_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("last_reject_reason", sa.String(length=300), nullable=True),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["monitoring_facilities.id"],
            name=op.f("fk_monitoring_devices_facility_id_monitoring_facilities"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_devices")),
        sa.UniqueConstraint("code", name=op.f("uq_monitoring_devices_code")),
    )
    op.create_index(
        op.f("ix_monitoring_devices_facility_id"), "monitoring_devices", ["facility_id"]
    )
    op.create_index(op.f("ix_monitoring_devices_grid_code"), "monitoring_devices", ["grid_code"])
    op.create_index(
        "ix_monitoring_devices_status_seen", "monitoring_devices", ["status", "last_seen_at"]
    )

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(
            "CREATE TABLE monitoring_readings ("
            " device_id integer NOT NULL,"
            " measurand varchar(16) NOT NULL,"
            " ts timestamp without time zone NOT NULL,"
            " value double precision NOT NULL,"
            " CONSTRAINT pk_monitoring_readings PRIMARY KEY (device_id, measurand, ts)"
            ") PARTITION BY RANGE (ts)"
        )
        op.execute(
            "CREATE TABLE monitoring_readings_default PARTITION OF monitoring_readings DEFAULT"
        )
        now = datetime.now(UTC)
        y, m = now.year, now.month
        for _ in range(3):
            ny, nm = _month(y, m)
            op.execute(
                f"CREATE TABLE monitoring_readings_y{y:04d}m{m:02d} PARTITION OF "
                f"monitoring_readings FOR VALUES FROM ('{y:04d}-{m:02d}-01') "
                f"TO ('{ny:04d}-{nm:02d}-01')"
            )
            y, m = ny, nm
    else:
        op.create_table(
            "monitoring_readings",
            sa.Column("device_id", sa.Integer(), autoincrement=False, nullable=False),
            sa.Column("measurand", sa.String(length=16), nullable=False),
            sa.Column("ts", cityops.core.types.UTCDateTime(), nullable=False),
            sa.Column("value", sa.Float(), nullable=False),
            sa.PrimaryKeyConstraint(
                "device_id", "measurand", "ts", name=op.f("pk_monitoring_readings")
            ),
            sqlite_with_rowid=False,
        )
    _rollup("monitoring_rollups_1m")
    _rollup("monitoring_rollups_1h")
    op.create_table(
        "monitoring_latest",
        sa.Column("device_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("measurand", sa.String(length=16), nullable=False),
        sa.Column("ts", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "measurand", name=op.f("pk_monitoring_latest")),
    )
    rules = op.create_table(
        "monitoring_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("device_type", sa.String(length=24), nullable=True),
        sa.Column("device_id", sa.Integer(), nullable=True),
        sa.Column("measurand", sa.String(length=16), nullable=True),
        sa.Column("comparator", sa.String(length=10), nullable=False),
        sa.Column("levels", JSON, nullable=False),
        sa.Column("duration_s", sa.Integer(), nullable=False),
        sa.Column("hysteresis", sa.Float(), nullable=False),
        sa.Column("auto_confirm", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["monitoring_devices.id"],
            name=op.f("fk_monitoring_rules_device_id_monitoring_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_rules")),
    )
    op.create_index(op.f("ix_monitoring_rules_device_type"), "monitoring_rules", ["device_type"])
    op.create_index(op.f("ix_monitoring_rules_device_id"), "monitoring_rules", ["device_id"])
    op.create_table(
        "monitoring_rule_states",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("in_breach", sa.Boolean(), nullable=False),
        sa.Column("breach_since", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("last_ts", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["monitoring_devices.id"],
            name=op.f("fk_monitoring_rule_states_device_id_monitoring_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["monitoring_rules.id"],
            name=op.f("fk_monitoring_rule_states_rule_id_monitoring_rules"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "rule_id", name=op.f("pk_monitoring_rule_states")),
    )
    op.create_table(
        "monitoring_alarms",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.Integer(), nullable=False),
        sa.Column("facility_id", sa.Integer(), nullable=False),
        sa.Column("grid_code", sa.String(length=15), nullable=True),
        sa.Column("measurand", sa.String(length=16), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("is_open", sa.Integer(), nullable=True),
        sa.Column("raised_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("trigger_ts", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("trigger_value", sa.Float(), nullable=True),
        sa.Column("last_ts", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("repeat_count", sa.Integer(), nullable=False),
        sa.Column("normal", sa.Boolean(), nullable=False),
        sa.Column("normal_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("judged_by", sa.String(length=100), nullable=True),
        sa.Column("judged_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("judgement_note", sa.Text(), nullable=True),
        sa.Column("warning_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("case_id", BIGID, nullable=True),
        sa.Column("escalated_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("cleared_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("previous_alarm_id", BIGID, nullable=True),
        sa.Column("snapshot", JSON, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["monitoring_devices.id"],
            name=op.f("fk_monitoring_alarms_device_id_monitoring_devices"),
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"],
            ["monitoring_rules.id"],
            name=op.f("fk_monitoring_alarms_rule_id_monitoring_rules"),
        ),
        sa.ForeignKeyConstraint(
            ["facility_id"],
            ["monitoring_facilities.id"],
            name=op.f("fk_monitoring_alarms_facility_id_monitoring_facilities"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"], ["cases.id"], name=op.f("fk_monitoring_alarms_case_id_cases")
        ),
        sa.ForeignKeyConstraint(
            ["previous_alarm_id"],
            ["monitoring_alarms.id"],
            name=op.f("fk_monitoring_alarms_previous_alarm_id_monitoring_alarms"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_alarms")),
    )
    op.create_index(op.f("ix_monitoring_alarms_facility_id"), "monitoring_alarms", ["facility_id"])
    op.create_index(op.f("ix_monitoring_alarms_grid_code"), "monitoring_alarms", ["grid_code"])
    op.create_index(op.f("ix_monitoring_alarms_case_id"), "monitoring_alarms", ["case_id"])
    op.create_index(
        "ux_monitoring_alarms_open",
        "monitoring_alarms",
        ["device_id", "rule_id"],
        unique=True,
        sqlite_where=sa.text("is_open = 1"),
        postgresql_where=sa.text("is_open = 1"),
    )
    op.create_index(
        "ix_monitoring_alarms_status_raised", "monitoring_alarms", ["status", "raised_at"]
    )
    op.create_index(
        "ix_monitoring_alarms_device_rule", "monitoring_alarms", ["device_id", "rule_id"]
    )
    op.create_table(
        "monitoring_alarm_events",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("alarm_id", BIGID, nullable=False),
        sa.Column("at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("actor_name", sa.String(length=100), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("data", JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["alarm_id"],
            ["monitoring_alarms.id"],
            name=op.f("fk_monitoring_alarm_events_alarm_id_monitoring_alarms"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_monitoring_alarm_events")),
    )
    op.create_index(
        op.f("ix_monitoring_alarm_events_alarm_id"), "monitoring_alarm_events", ["alarm_id"]
    )

    from cityops.monitoring.catalog import DEFAULT_RULES

    op.bulk_insert(
        rules,
        [
            {
                **r,
                "device_id": None,
                "active": True,
                "version": 1,
            }
            for r in DEFAULT_RULES
        ],
    )


def downgrade() -> None:
    op.drop_table("monitoring_alarm_events")
    op.drop_table("monitoring_alarms")
    op.drop_table("monitoring_rule_states")
    op.drop_table("monitoring_rules")
    op.drop_table("monitoring_latest")
    op.drop_table("monitoring_rollups_1h")
    op.drop_table("monitoring_rollups_1m")
    op.drop_table("monitoring_readings")
    op.drop_table("monitoring_devices")
    op.drop_table("monitoring_facilities")

"""flood command (防汛): waterlogging points, responders, response levels, orders

Creates the ``flood_*`` tables (see ``cityops.flood.models``) and the default proposal rules:
rainstorm signals (GUIDE §7: 蓝 12 h ≥ 50 mm, 黄 6 h ≥ 50 mm, 橙 3 h ≥ 50 mm, 红 3 h ≥ 100 mm)
and "a point at its close depth proposes at least Ⅱ 橙".

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import cityops.core.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The default rule table (id, signal, window_minutes, threshold, relative_to, min_points, level,
#: note). Level 4 = Ⅳ 蓝 … 1 = Ⅰ 红.
DEFAULT_RULES = [
    (1, "rainfall", 720, 50.0, None, 1, 4, "暴雨蓝色信号: 12小时降雨量≥50毫米"),
    (2, "rainfall", 360, 50.0, None, 1, 3, "暴雨黄色信号: 6小时降雨量≥50毫米"),
    (3, "rainfall", 180, 50.0, None, 1, 2, "暴雨橙色信号: 3小时降雨量≥50毫米"),
    (4, "rainfall", 180, 100.0, None, 1, 1, "暴雨红色信号: 3小时降雨量≥100毫米"),
    (5, "ponding", None, None, "close", 1, 2, "任一易涝点积水达到封闭深度: 至少Ⅱ级(橙)"),
]


def upgrade() -> None:
    op.create_table(
        "flood_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("started_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("ended_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("active_key", sa.Integer(), nullable=True),
        sa.Column("peak_level", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_events")),
        sa.UniqueConstraint("active_key", name=op.f("uq_flood_events_active_key")),
    )
    op.create_table(
        "flood_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signal", sa.String(length=12), nullable=False),
        sa.Column("window_minutes", sa.Integer(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("relative_to", sa.String(length=8), nullable=True),
        sa.Column("min_points", sa.Integer(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_rules")),
    )
    op.create_table(
        "flood_persons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("phone", sa.String(length=30), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("position_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name=op.f("fk_flood_persons_unit_id_units")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_flood_persons_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_persons")),
    )
    op.create_index(op.f("ix_flood_persons_unit_id"), "flood_persons", ["unit_id"], unique=False)
    op.create_index(op.f("ix_flood_persons_user_id"), "flood_persons", ["user_id"], unique=False)
    op.create_table(
        "flood_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=30), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("address", sa.String(length=200), nullable=True),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("grid_id", sa.Integer(), nullable=True),
        sa.Column("grid_code", sa.String(length=15), nullable=False),
        sa.Column("depth_device_code", sa.String(length=60), nullable=True),
        sa.Column("rain_device_code", sa.String(length=60), nullable=True),
        sa.Column("warn_depth_cm", sa.Float(), nullable=False),
        sa.Column("close_depth_cm", sa.Float(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grid_id"], ["grids.id"], name=op.f("fk_flood_points_grid_id_grids")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_points")),
        sa.UniqueConstraint("code", name=op.f("uq_flood_points_code")),
    )
    op.create_index(op.f("ix_flood_points_grid_code"), "flood_points", ["grid_code"], unique=False)
    op.create_table(
        "flood_proposals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("current_level", sa.Integer(), nullable=True),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column(
            "reasons",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("decided_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("decided_by_user_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_name", sa.String(length=100), nullable=True),
        sa.Column("decision_note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decided_by_user_id"],
            ["users.id"],
            name=op.f("fk_flood_proposals_decided_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["flood_events.id"], name=op.f("fk_flood_proposals_event_id_flood_events")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_proposals")),
    )
    op.create_index(
        op.f("ix_flood_proposals_event_id"), "flood_proposals", ["event_id"], unique=False
    )
    op.create_index(
        "ix_flood_proposals_status_created",
        "flood_proposals",
        ["status", "created_at"],
        unique=False,
    )
    op.create_table(
        "flood_teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("leader_name", sa.String(length=60), nullable=False),
        sa.Column("leader_user_id", sa.Integer(), nullable=True),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=30), nullable=False),
        sa.Column("base_lon", sa.Float(), nullable=False),
        sa.Column("base_lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("position_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(
            ["leader_user_id"], ["users.id"], name=op.f("fk_flood_teams_leader_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name=op.f("fk_flood_teams_unit_id_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_teams")),
        sa.UniqueConstraint("name", name=op.f("uq_flood_teams_name")),
    )
    op.create_index(
        op.f("ix_flood_teams_leader_user_id"), "flood_teams", ["leader_user_id"], unique=False
    )
    op.create_table(
        "flood_equipment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("capacity_m3h", sa.Float(), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("point_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("position_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["point_id"], ["flood_points.id"], name=op.f("fk_flood_equipment_point_id_flood_points")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["flood_teams.id"], name=op.f("fk_flood_equipment_team_id_flood_teams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_equipment")),
        sa.UniqueConstraint("code", name=op.f("uq_flood_equipment_code")),
    )
    op.create_index(
        op.f("ix_flood_equipment_point_id"), "flood_equipment", ["point_id"], unique=False
    )
    op.create_index(
        op.f("ix_flood_equipment_team_id"), "flood_equipment", ["team_id"], unique=False
    )
    op.create_table(
        "flood_level_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("from_level", sa.Integer(), nullable=True),
        sa.Column("to_level", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("by_user_id", sa.Integer(), nullable=True),
        sa.Column("by_name", sa.String(length=100), nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["by_user_id"], ["users.id"], name=op.f("fk_flood_level_changes_by_user_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["flood_events.id"],
            name=op.f("fk_flood_level_changes_event_id_flood_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["proposal_id"],
            ["flood_proposals.id"],
            name=op.f("fk_flood_level_changes_proposal_id_flood_proposals"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_level_changes")),
    )
    op.create_index(
        op.f("ix_flood_level_changes_event_id"), "flood_level_changes", ["event_id"], unique=False
    )
    op.create_table(
        "flood_orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("issued_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("issued_by_user_id", sa.Integer(), nullable=True),
        sa.Column("issued_by_name", sa.String(length=100), nullable=False),
        sa.Column("ack_due_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("acknowledged_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("en_route_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("arrived_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("arrival_lon", sa.Float(), nullable=True),
        sa.Column("arrival_lat", sa.Float(), nullable=True),
        sa.Column("done_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "history",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["flood_events.id"], name=op.f("fk_flood_orders_event_id_flood_events")
        ),
        sa.ForeignKeyConstraint(
            ["issued_by_user_id"],
            ["users.id"],
            name=op.f("fk_flood_orders_issued_by_user_id_users"),
        ),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["flood_persons.id"],
            name=op.f("fk_flood_orders_person_id_flood_persons"),
        ),
        sa.ForeignKeyConstraint(
            ["point_id"], ["flood_points.id"], name=op.f("fk_flood_orders_point_id_flood_points")
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["flood_teams.id"], name=op.f("fk_flood_orders_team_id_flood_teams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flood_orders")),
    )
    op.create_index(op.f("ix_flood_orders_event_id"), "flood_orders", ["event_id"], unique=False)
    op.create_index(op.f("ix_flood_orders_person_id"), "flood_orders", ["person_id"], unique=False)
    op.create_index(
        "ix_flood_orders_point_status", "flood_orders", ["point_id", "status"], unique=False
    )
    op.create_index(
        "ix_flood_orders_status_due", "flood_orders", ["status", "ack_due_at"], unique=False
    )
    op.create_index(op.f("ix_flood_orders_team_id"), "flood_orders", ["team_id"], unique=False)
    op.create_table(
        "flood_point_persons",
        sa.Column("point_id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"],
            ["flood_persons.id"],
            name=op.f("fk_flood_point_persons_person_id_flood_persons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["point_id"],
            ["flood_points.id"],
            name=op.f("fk_flood_point_persons_point_id_flood_points"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("point_id", "person_id", name=op.f("pk_flood_point_persons")),
    )
    op.create_table(
        "flood_order_equipment",
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("equipment_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["equipment_id"],
            ["flood_equipment.id"],
            name=op.f("fk_flood_order_equipment_equipment_id_flood_equipment"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["flood_orders.id"],
            name=op.f("fk_flood_order_equipment_order_id_flood_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "equipment_id", name=op.f("pk_flood_order_equipment")),
    )

    rules = sa.table(
        "flood_rules",
        sa.column("id", sa.Integer()),
        sa.column("signal", sa.String()),
        sa.column("window_minutes", sa.Integer()),
        sa.column("threshold", sa.Float()),
        sa.column("relative_to", sa.String()),
        sa.column("min_points", sa.Integer()),
        sa.column("level", sa.Integer()),
        sa.column("enabled", sa.Boolean()),
        sa.column("note", sa.String()),
    )
    op.bulk_insert(
        rules,
        [
            {
                "id": i,
                "signal": sig,
                "window_minutes": win,
                "threshold": thr,
                "relative_to": rel,
                "min_points": mp,
                "level": lvl,
                "enabled": True,
                "note": note,
            }
            for i, sig, win, thr, rel, mp, lvl, note in DEFAULT_RULES
        ],
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('flood_rules', 'id'), "
            "(SELECT MAX(id) FROM flood_rules))"
        )


def downgrade() -> None:
    op.drop_table("flood_order_equipment")
    op.drop_table("flood_point_persons")
    op.drop_index(op.f("ix_flood_orders_team_id"), table_name="flood_orders")
    op.drop_index("ix_flood_orders_status_due", table_name="flood_orders")
    op.drop_index("ix_flood_orders_point_status", table_name="flood_orders")
    op.drop_index(op.f("ix_flood_orders_person_id"), table_name="flood_orders")
    op.drop_index(op.f("ix_flood_orders_event_id"), table_name="flood_orders")
    op.drop_table("flood_orders")
    op.drop_index(op.f("ix_flood_level_changes_event_id"), table_name="flood_level_changes")
    op.drop_table("flood_level_changes")
    op.drop_index(op.f("ix_flood_equipment_team_id"), table_name="flood_equipment")
    op.drop_index(op.f("ix_flood_equipment_point_id"), table_name="flood_equipment")
    op.drop_table("flood_equipment")
    op.drop_index(op.f("ix_flood_teams_leader_user_id"), table_name="flood_teams")
    op.drop_table("flood_teams")
    op.drop_index("ix_flood_proposals_status_created", table_name="flood_proposals")
    op.drop_index(op.f("ix_flood_proposals_event_id"), table_name="flood_proposals")
    op.drop_table("flood_proposals")
    op.drop_index(op.f("ix_flood_points_grid_code"), table_name="flood_points")
    op.drop_table("flood_points")
    op.drop_index(op.f("ix_flood_persons_user_id"), table_name="flood_persons")
    op.drop_index(op.f("ix_flood_persons_unit_id"), table_name="flood_persons")
    op.drop_table("flood_persons")
    op.drop_table("flood_rules")
    op.drop_table("flood_events")

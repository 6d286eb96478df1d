"""evaluation rollups: daily counters per unit / grid / category / user and metric

Creates ``eval_daily_counts`` (see ``cityops.evaluation.rollup``). The weights of the composite
values live in ``city_settings`` (key ``evaluation_weights``; GUIDE §6 defaults in code). A
database that already holds cases needs ``cityops evaluation rebuild`` once after upgrading.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 17:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "eval_daily_counts",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("unit_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("grid_code", sa.String(length=15), nullable=False),
        sa.Column("category_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "day",
            "unit_id",
            "grid_code",
            "category_id",
            "user_id",
            "metric",
            name=op.f("pk_eval_daily_counts"),
        ),
    )
    with op.batch_alter_table("eval_daily_counts", schema=None) as batch_op:
        batch_op.create_index("ix_eval_daily_counts_metric_day", ["metric", "day"], unique=False)
        batch_op.create_index("ix_eval_daily_counts_unit_day", ["unit_id", "day"], unique=False)
        batch_op.create_index("ix_eval_daily_counts_user_day", ["user_id", "day"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("eval_daily_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_eval_daily_counts_user_day")
        batch_op.drop_index("ix_eval_daily_counts_unit_day")
        batch_op.drop_index("ix_eval_daily_counts_metric_day")
    op.drop_table("eval_daily_counts")

"""evaluation extras: monthly rollup level (rankings of whole months), position indicators

Creates ``eval_monthly_counts`` (see ``cityops.evaluation.schedule_models``). The position
metrics (受理员 ``o_*``, 值班长 ``s_*``, 派遣员 ``d_*``, 漏报 ``i_grid_filed``/``i_missed``) live
in the existing ``eval_daily_counts``; a database that already holds cases needs
``cityops evaluation rebuild`` once after upgrading (it fills both levels). Scheduled reports
are archived as files (``<var_dir>/reports``): no table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "eval_monthly_counts",
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(length=24), nullable=False),
        sa.Column("unit_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("grid_code", sa.String(length=15), nullable=False),
        sa.Column("user_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "month",
            "metric",
            "unit_id",
            "grid_code",
            "user_id",
            name=op.f("pk_eval_monthly_counts"),
        ),
    )
    with op.batch_alter_table("eval_monthly_counts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_eval_monthly_counts_cover",
            ["month", "metric", "unit_id", "user_id", "count"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("eval_monthly_counts", schema=None) as batch_op:
        batch_op.drop_index("ix_eval_monthly_counts_cover")
    op.drop_table("eval_monthly_counts")

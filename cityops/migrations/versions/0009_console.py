"""console and public-service extras: citizen ratings, indexes for the command centre's KPIs

Creates ``citizen_ratings`` (满意度评价 of closed cases, one per case; see
``cityops.public.models``) and indexes the console needs on millions of cases:
``ix_cases_closed_at`` (today's closures on the command-centre map),
``ix_cases_pending_paused`` (partial: cases with a request waiting for approval, the
待审批 worklist) and ``ix_case_units_unit_case`` (a unit's cases: handlers' lists).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cityops.core.types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "citizen_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rating", sa.String(length=12), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_citizen_ratings_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_citizen_ratings")),
        sa.UniqueConstraint("case_id", name=op.f("uq_citizen_ratings_case_id")),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index("ix_cases_closed_at", ["closed_at"], unique=False)
        # the approvals list (回退/延期/挂账 waiting): a few rows among millions
        batch_op.create_index(
            "ix_cases_pending_paused",
            ["paused_since"],
            unique=False,
            sqlite_where=sa.text("pending_request IS NOT NULL"),
            postgresql_where=sa.text("pending_request IS NOT NULL"),
        )
    with op.batch_alter_table("case_units", schema=None) as batch_op:
        # a unit's cases (unit-scoped handlers' lists and worklists)
        batch_op.create_index("ix_case_units_unit_case", ["unit_id", "case_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("case_units", schema=None) as batch_op:
        batch_op.drop_index("ix_case_units_unit_case")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index("ix_cases_pending_paused")
        batch_op.drop_index("ix_cases_closed_at")
    op.drop_table("citizen_ratings")

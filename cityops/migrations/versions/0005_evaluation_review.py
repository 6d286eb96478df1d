"""third-party review (第三方考评) and comprehensive evaluation (综合评价)

Tables of :mod:`cityops.evaluation.review` (reviewers, rounds, assignments with ratings) and
:mod:`cityops.evaluation.comprehensive` (indicator tree, tasks, evaluators, site inspection
and questionnaire records). Seeds the default indicator tree (GUIDE §6: 城市形象 / 城市管理保底线
/ 群众满意度 → 干净 / 整洁 / 有序 / 安全 / 满意度调查 → leaves); a city edits it afterwards.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 18:00:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import cityops.core.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (code, parent code, name, weight %, source, platform metric, check items) — frozen here:
# the tree a fresh installation starts with (admin-editable afterwards).
_ITEMS = [
    {"code": "1", "name": "无暴露垃圾、积存渣土", "max": 40},
    {"code": "2", "name": "路面无污渍、无积水", "max": 30},
    {"code": "3", "name": "果皮箱、垃圾桶整洁无满溢", "max": 30},
]
DEFAULT_TREE: list[tuple[str, str | None, str, float, str | None, str | None, Any]] = [
    ("A", None, "城市形象", 30, None, None, None),
    ("A1", "A", "干净", 50, None, None, None),
    ("A1.1", "A1", "道路及公共场所保洁", 40, "site_inspection", None, _ITEMS),
    ("A1.2", "A1", "垃圾收运及公厕保洁", 30, "site_inspection", None, None),
    ("A1.3", "A1", "水域保洁", 30, "site_inspection", None, None),
    ("A2", "A", "整洁", 50, None, None, None),
    ("A2.1", "A2", "立面及户外广告招牌", 50, "site_inspection", None, None),
    ("A2.2", "A2", "园林绿化养护", 50, "site_inspection", None, None),
    ("B", None, "城市管理保底线", 40, None, None, None),
    ("B1", "B", "有序", 50, None, None, None),
    ("B1.1", "B1", "结案率", 30, "platform", "结案率", None),
    ("B1.2", "B1", "按期结案率", 40, "platform", "按期结案率", None),
    ("B1.3", "B1", "占道经营及停车秩序", 30, "site_inspection", None, None),
    ("B2", "B", "安全", 50, None, None, None),
    ("B2.1", "B2", "井盖等市政设施完好", 50, "site_inspection", None, None),
    ("B2.2", "B2", "群众监督举报 (100 − 监督举报率)", 50, "platform", "监督举报率", None),
    ("C", None, "群众满意度", 30, None, None, None),
    ("C1", "C", "满意度调查", 100, None, None, None),
    ("C1.1", "C1", "市容环境满意度", 50, "questionnaire", None, None),
    ("C1.2", "C1", "投诉处理满意度", 50, "questionnaire", None, None),
]


def _seed_tree() -> None:
    table = sa.table(
        "ce_indicators",
        sa.column("id", sa.Integer()),
        sa.column("parent_id", sa.Integer()),
        sa.column("code", sa.String()),
        sa.column("name", sa.String()),
        sa.column("weight", sa.Float()),
        sa.column("source", sa.String()),
        sa.column("platform_metric", sa.String()),
        sa.column("check_items", sa.JSON()),
        sa.column("sort", sa.Integer()),
    )
    ids = {code: i for i, (code, *_rest) in enumerate(DEFAULT_TREE, 1)}
    rows = [
        {
            "id": ids[code],
            "parent_id": ids[parent] if parent else None,
            "code": code,
            "name": name,
            "weight": float(weight),
            "source": source,
            "platform_metric": metric,
            "check_items": items,
            "sort": ids[code],
        }
        for code, parent, name, weight, source, metric, items in DEFAULT_TREE
    ]
    op.bulk_insert(table, rows)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "SELECT setval(pg_get_serial_sequence('ce_indicators', 'id'), "
            "(SELECT MAX(id) FROM ce_indicators))"
        )


def upgrade() -> None:
    op.create_table(
        "ce_indicators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=True),
        sa.Column("platform_metric", sa.String(length=40), nullable=True),
        sa.Column(
            "check_items",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("sort", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["ce_indicators.id"],
            name=op.f("fk_ce_indicators_parent_id_ce_indicators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ce_indicators")),
        sa.UniqueConstraint("code", name=op.f("uq_ce_indicators_code")),
    )
    with op.batch_alter_table("ce_indicators", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ce_indicators_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "ce_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column(
            "region_codes",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("self_weight", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_ce_tasks_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ce_tasks")),
    )
    op.create_table(
        "review_reviewers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("area", sa.String(length=12), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_review_reviewers_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_reviewers")),
        sa.UniqueConstraint("user_id", name=op.f("uq_review_reviewers_user_id")),
    )
    op.create_table(
        "review_rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("auto", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_review_rounds_created_by_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_rounds")),
    )
    op.create_table(
        "ce_task_evaluators",
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["ce_tasks.id"],
            name=op.f("fk_ce_task_evaluators_task_id_ce_tasks"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_ce_task_evaluators_user_id_users")
        ),
        sa.PrimaryKeyConstraint("task_id", "user_id", name=op.f("pk_ce_task_evaluators")),
    )
    op.create_table(
        "ce_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("indicator_id", sa.Integer(), nullable=False),
        sa.Column("region_code", sa.String(length=12), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column(
            "deductions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("respondents", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("attachment_id", sa.Integer(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("grid_code", sa.String(length=15), nullable=True),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.Column("recorded_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["attachment_id"],
            ["case_attachments.id"],
            name=op.f("fk_ce_records_attachment_id_case_attachments"),
        ),
        sa.ForeignKeyConstraint(
            ["indicator_id"],
            ["ce_indicators.id"],
            name=op.f("fk_ce_records_indicator_id_ce_indicators"),
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["users.id"], name=op.f("fk_ce_records_recorded_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["ce_tasks.id"],
            name=op.f("fk_ce_records_task_id_ce_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ce_records")),
    )
    with op.batch_alter_table("ce_records", schema=None) as batch_op:
        batch_op.create_index("ix_ce_records_task_region", ["task_id", "region_code"], unique=False)

    op.create_table(
        "review_assignments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("round_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("region_code", sa.String(length=15), nullable=True),
        sa.Column("assigned_at", cityops.core.types.UTCDateTime(), nullable=False),
        sa.Column("rating", sa.String(length=4), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("attachment_id", sa.Integer(), nullable=True),
        sa.Column("rated_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("reopened", sa.Boolean(), nullable=False),
        sa.Column("reopen_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attachment_id"],
            ["case_attachments.id"],
            name=op.f("fk_review_assignments_attachment_id_case_attachments"),
        ),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["cases.id"],
            name=op.f("fk_review_assignments_case_id_cases"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reviewer_id"],
            ["review_reviewers.id"],
            name=op.f("fk_review_assignments_reviewer_id_review_reviewers"),
        ),
        sa.ForeignKeyConstraint(
            ["round_id"],
            ["review_rounds.id"],
            name=op.f("fk_review_assignments_round_id_review_rounds"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["unit_id"], ["units.id"], name=op.f("fk_review_assignments_unit_id_units")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_assignments")),
        sa.UniqueConstraint("round_id", "case_id", name=op.f("uq_review_assignments_round_id")),
    )
    with op.batch_alter_table("review_assignments", schema=None) as batch_op:
        batch_op.create_index("ix_review_assignments_rated_at", ["rated_at"], unique=False)
        batch_op.create_index(
            "ix_review_assignments_reviewer", ["reviewer_id", "round_id"], unique=False
        )

    _seed_tree()


def downgrade() -> None:
    with op.batch_alter_table("review_assignments", schema=None) as batch_op:
        batch_op.drop_index("ix_review_assignments_reviewer")
        batch_op.drop_index("ix_review_assignments_rated_at")

    op.drop_table("review_assignments")
    with op.batch_alter_table("ce_records", schema=None) as batch_op:
        batch_op.drop_index("ix_ce_records_task_region")

    op.drop_table("ce_records")
    op.drop_table("ce_task_evaluators")
    op.drop_table("review_rounds")
    op.drop_table("review_reviewers")
    op.drop_table("ce_tasks")
    with op.batch_alter_table("ce_indicators", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ce_indicators_parent_id"))

    op.drop_table("ce_indicators")

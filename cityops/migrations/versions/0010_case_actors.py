"""cases carry who did their current 受理/立案/派遣 and when they last entered 待派遣

Adds ``accepted_by_id``, ``filed_by_id``, ``dispatched_by_id`` (users) and
``dispatch_stage_at`` to ``cases`` (see ``cityops.cases.models.track_actors``). The
evaluation rollups' listener read them back from the case history with one query per
派遣/处置反馈/回退/作废 event; on the case row they cost nothing. Existing cases are filled
from their history: the last 受理/立案/派遣 event's actor, and the time of the last 立案 or
approved 回退 (the same rule as ``track_actors``, written out here so that this migration
keeps meaning what it meant when the application code moves on).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cityops.core.types import UTCDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_USERS = (("accepted_by_id", "accept"), ("filed_by_id", "file"), ("dispatched_by_id", "dispatch"))


def upgrade() -> None:
    # plain ADD COLUMN (no batch, no foreign key): never a copy of the cases table on SQLite
    for col, _action in _USERS:
        op.add_column("cases", sa.Column(col, sa.Integer(), nullable=True))
    op.add_column("cases", sa.Column("dispatch_stage_at", UTCDateTime()))
    approved = (
        "(e.data ->> 'approve') = 'true'"
        if op.get_bind().dialect.name == "postgresql"
        else "json_extract(e.data, '$.approve') = 1"
    )

    def last(what: str, where: str) -> str:
        return (
            f"(SELECT e.{what} FROM case_events e WHERE e.case_id = cases.id AND ({where})"
            " ORDER BY e.id DESC LIMIT 1)"
        )

    sets = [col + " = " + last("actor_id", f"e.action = '{a}'") for col, a in _USERS]
    sets.append(
        "dispatch_stage_at = "
        + last("at", f"e.action = 'file' OR (e.action = 'decide_return' AND {approved})")
    )
    op.execute(
        f"UPDATE cases SET {', '.join(sets)} WHERE EXISTS (SELECT 1 FROM case_events e"
        " WHERE e.case_id = cases.id AND e.action IN ('accept', 'file', 'dispatch'))"
    )


def downgrade() -> None:
    op.drop_column("cases", "dispatch_stage_at")
    for col, _action in reversed(_USERS):
        op.drop_column("cases", col)

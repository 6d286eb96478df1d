"""working-time clock: calendar, working hours, default time limits

Creates the tables of ``cityops.worktime`` and seeds them: the calendar of the installed
``chinesecalendar`` package (2004–2026 in version 1.11: holidays and make-up working days,
years confirmed), the default working hours (08:00–12:00, 14:00–18:00) and the city-wide
default time limits (``cityops.worktime.models.DEFAULT_TIME_LIMITS``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import cityops.core.types

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "calendar_years",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("confirmed_at", cityops.core.types.UTCDateTime(), nullable=True),
        sa.Column("confirmed_by", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_calendar_years")),
    )
    op.create_table(
        "calendar_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("is_workday", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_calendar_days")),
    )
    op.create_table(
        "working_hours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("periods", _JSON, nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_working_hours")),
        sa.UniqueConstraint("valid_from", name=op.f("uq_working_hours_valid_from")),
    )
    op.create_table(
        "time_limit_defaults",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=20), nullable=False),
        sa.Column("urgency", sa.String(length=4), nullable=True),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_time_limit_defaults")),
    )
    # A NULL urgency means "any urgency" and must be unique per stage as well.
    op.create_index(
        "uq_time_limit_defaults_stage_urgency",
        "time_limit_defaults",
        ["stage", sa.text("coalesce(urgency, '')")],
        unique=True,
    )
    _seed()


def _seed() -> None:
    from importlib.metadata import version

    from cityops.worktime.models import (
        DEFAULT_HOURS_FROM,
        DEFAULT_PERIODS,
        DEFAULT_TIME_LIMITS,
        SOURCE_PACKAGE,
        package_calendar,
    )

    years = sa.table(
        "calendar_years",
        sa.column("year", sa.Integer()),
        sa.column("confirmed", sa.Boolean()),
        sa.column("source", sa.String()),
        sa.column("confirmed_at", cityops.core.types.UTCDateTime()),
        sa.column("confirmed_by", sa.String()),
        sa.column("note", sa.Text()),
    )
    days = sa.table(
        "calendar_days",
        sa.column("day", sa.Date()),
        sa.column("is_workday", sa.Boolean()),
        sa.column("name", sa.String()),
        sa.column("source", sa.String()),
    )
    hours = sa.table(
        "working_hours",
        sa.column("valid_from", sa.Date()),
        sa.column("periods", _JSON),
        sa.column("note", sa.String()),
    )
    limits = sa.table(
        "time_limit_defaults",
        sa.column("stage", sa.String()),
        sa.column("urgency", sa.String()),
        sa.column("amount", sa.Float()),
        sa.column("unit", sa.String()),
    )
    now = datetime.now(UTC)
    note = f"from chinesecalendar {version('chinesecalendar')}"
    cal = package_calendar()
    op.bulk_insert(
        years,
        [
            {
                "year": y,
                "confirmed": True,
                "source": SOURCE_PACKAGE,
                "confirmed_at": now,
                "confirmed_by": "system",
                "note": note,
            }
            for y in sorted(cal)
        ],
    )
    op.bulk_insert(
        days,
        [
            {"day": d, "is_workday": w, "name": name, "source": SOURCE_PACKAGE}
            for y in sorted(cal)
            for d, (w, name) in sorted(cal[y].items())
        ],
    )
    op.bulk_insert(
        hours,
        [
            {
                "valid_from": DEFAULT_HOURS_FROM,
                "periods": [list(p) for p in DEFAULT_PERIODS],
                "note": "default 08:00–12:00, 14:00–18:00",
            }
        ],
    )
    op.bulk_insert(
        limits,
        [
            {"stage": s, "urgency": u, "amount": float(a), "unit": unit}
            for s, u, a, unit in DEFAULT_TIME_LIMITS
        ],
    )


def downgrade() -> None:
    op.drop_index("uq_time_limit_defaults_stage_urgency", table_name="time_limit_defaults")
    op.drop_table("time_limit_defaults")
    op.drop_table("working_hours")
    op.drop_table("calendar_days")
    op.drop_table("calendar_years")

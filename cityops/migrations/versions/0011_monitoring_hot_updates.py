"""monitoring: let the per-batch intake updates be HOT on PostgreSQL

Every intake batch updates one row per device (``monitoring_devices``: ``last_seen_at``,
``accepted_count``), per series (``monitoring_latest``, ``monitoring_rollups_1m``/``_1h``) and
per device rule (``monitoring_rule_states``). PostgreSQL makes such an update heap-only
(HOT: no new index entries, a fraction of the WAL) only when no indexed column changes and
the page has room for the new row version. So:

* ``ix_monitoring_devices_status_seen`` (status, last_seen_at) becomes
  ``ix_monitoring_devices_status`` (status): the offline job selects by status and compares
  ``last_seen_at`` row by row, and with ``last_seen_at`` indexed no device update was HOT;
* on PostgreSQL, a fillfactor leaves room on each page: 50 for the tables whose every row is
  rewritten by every batch (devices, latest values, rule states), 70 for the rollups (a
  bucket is rewritten while it is current). It applies to pages written from now on.

SQLite has no HOT and no fillfactor: there only the index changes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILLFACTOR = {
    "monitoring_devices": 50,
    "monitoring_latest": 50,
    "monitoring_rule_states": 50,
    "monitoring_rollups_1m": 70,
    "monitoring_rollups_1h": 70,
}


def upgrade() -> None:
    op.drop_index("ix_monitoring_devices_status_seen", table_name="monitoring_devices")
    op.create_index("ix_monitoring_devices_status", "monitoring_devices", ["status"])
    if op.get_bind().dialect.name == "postgresql":
        for table, ff in _FILLFACTOR.items():
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {ff})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _FILLFACTOR:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.drop_index("ix_monitoring_devices_status", table_name="monitoring_devices")
    op.create_index(
        "ix_monitoring_devices_status_seen", "monitoring_devices", ["status", "last_seen_at"]
    )

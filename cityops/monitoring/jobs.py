"""Periodic jobs of the monitoring context (registered with cityops.core.jobs)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from cityops.core.jobs import register
from cityops.monitoring import ingest, service


def offline(session: Session, now: datetime) -> dict[str, Any]:
    """Devices silent for 3× their interval → offline + alarm."""
    return {"raised": service.detect_offline(session, now)}


def escalate(session: Session, now: datetime) -> dict[str, Any]:
    """Alarms not judged in time → escalated."""
    return {"escalated": service.escalate_unjudged(session, now)}


def clear(session: Session, now: datetime) -> dict[str, Any]:
    """Alarms with normal readings whose case is closed → cleared."""
    return {"cleared": service.check_clearances(session, now)}


def partitions(session: Session, now: datetime) -> dict[str, Any]:
    """PostgreSQL: monthly partitions of the raw readings, three months ahead."""
    return {"created": ingest.ensure_partitions(session, now)}


def retention(session: Session, now: datetime) -> dict[str, Any]:
    """Raw readings older than CITYOPS_MONITORING_RETENTION_DAYS are removed (rollups stay)."""
    return {"deleted": ingest.enforce_retention(session, now)}


register("monitoring.offline", timedelta(minutes=1), offline)
register("monitoring.escalate", timedelta(minutes=1), escalate)
register("monitoring.clear", timedelta(seconds=30), clear)
register("monitoring.partitions", timedelta(hours=6), partitions)
register("monitoring.retention", timedelta(hours=6), retention)

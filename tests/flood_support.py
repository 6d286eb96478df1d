"""Helpers for the flood tests: an in-memory stand-in for the gauge adapter
(``cityops.flood.gauges``) so that board/report logic is tested without the monitoring
context, and places/people of the demo city's flood data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.flood import gauges
from cityops.flood.models import ResponsiblePerson, Team, WaterloggingPoint


class FakeGauges:
    """Readings by (device code, measurand); same answers as the adapter's functions."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[tuple[datetime, float]]] = {}

    def add(self, code: str, measurand: str, *readings: tuple[datetime, float]) -> None:
        self.rows.setdefault((code, measurand), []).extend(readings)
        self.rows[(code, measurand)].sort()

    def latest(
        self, session: Session, codes: Sequence[str], measurand: str
    ) -> dict[str, tuple[datetime, float]]:
        out = {}
        for c in codes:
            rows = self.rows.get((c, measurand))
            if rows:
                out[c] = rows[-1]
        return out

    def series_many(
        self, session: Session, codes: Sequence[str], measurand: str, start: datetime, end: datetime
    ) -> dict[str, list[tuple[datetime, float]]]:
        out = {}
        for c in codes:
            rows = [r for r in self.rows.get((c, measurand), []) if start <= r[0] <= end]
            if rows:
                out[c] = rows
        return out


@pytest.fixture(name="fake_gauges")
def fake_gauges_fixture(monkeypatch: pytest.MonkeyPatch) -> FakeGauges:
    fake = FakeGauges()
    monkeypatch.setattr(gauges, "latest", fake.latest)
    monkeypatch.setattr(gauges, "series_many", fake.series_many)
    monkeypatch.setattr(gauges, "available", lambda: True)
    return fake


def point(session: Session, code: str) -> WaterloggingPoint:
    return session.scalars(select(WaterloggingPoint).where(WaterloggingPoint.code == code)).one()


def points_of_district(session: Session, district: str) -> list[WaterloggingPoint]:
    return list(
        session.scalars(
            select(WaterloggingPoint)
            .where(WaterloggingPoint.grid_code.startswith(district))
            .order_by(WaterloggingPoint.code)
        )
    )


def field_person(session: Session, p: WaterloggingPoint) -> ResponsiblePerson:
    """The point's 现场责任人 (has a login)."""
    return next(x for x in p.persons if x.user_id is not None)


def username_of(session: Session, user_id: int | None) -> str:
    from cityops.access.models import User

    u = session.get(User, user_id)
    assert u is not None
    return u.username


def team(session: Session, name_part: str) -> Team:
    return session.scalars(select(Team).where(Team.name.contains(name_part))).one()


def json_rows(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [tuple(r[k] for k in keys) for r in rows]

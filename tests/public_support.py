"""Helpers for the public-service and console tests: run a case around the closed loop."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.cases import queries, service
from cityops.cases.models import Case
from cityops.cases.storage import Storage
from tests.factories import handler_of, photo, principal


def user_name(s: Session, user_id: int | None) -> str:
    u = s.get(User, user_id)
    assert u is not None
    return u.username


def _photo_id(s: Session, who: Any, store: Storage, color: str) -> int:
    return int(
        queries.upload(s, who, store, "p.jpg", "image/jpeg", photo(117.4, 33.9, color))["id"]
    )


def advance(
    s: Session, store: Storage, case_id: int, until: str, now: datetime | None = None
) -> Case:
    """Drive the case with the right staff for each stage until it reaches ``until``."""
    for _ in range(12):
        c = s.get(Case, case_id)
        assert c is not None
        if c.stage == until:
            return c
        stage = c.stage
        if stage == "accept":
            service.perform(s, principal(s, "operator1"), case_id, "accept", {}, None, now)
        elif stage == "verify":
            who = principal(s, user_name(s, c.assignee_user_id))
            service.perform(s, who, case_id, "verify", {"confirmed": True}, None, now)
        elif stage == "file":
            service.perform(s, principal(s, "shift1"), case_id, "file", {}, None, now)
        elif stage == "dispatch":
            unit = s.scalars(
                select(User.unit_id).where(
                    User.unit_id.is_not(None), User.username.like("handler%")
                )
            ).first()
            service.perform(
                s, principal(s, "dispatcher1"), case_id, "dispatch", {"unit_id": unit}, None, now
            )
        elif stage == "sign":
            assert c.lead_unit_id is not None
            service.perform(s, handler_of(s, c.lead_unit_id), case_id, "sign", {}, None, now)
        elif stage == "handle":
            assert c.lead_unit_id is not None
            h = handler_of(s, c.lead_unit_id)
            pid = _photo_id(s, h, store, "green")
            service.perform(
                s, h, case_id, "handle", {"note": "已清理", "attachment_ids": [pid]}, None, now
            )
        elif stage == "check":
            who = principal(s, user_name(s, c.assignee_user_id))
            pid = _photo_id(s, who, store, "blue")
            service.perform(
                s, who, case_id, "check", {"passed": True, "attachment_ids": [pid]}, None, now
            )
        elif stage == "close":
            service.perform(s, principal(s, "shift1"), case_id, "close", {}, None, now)
        else:
            raise AssertionError(f"cannot advance from {stage}")
        s.flush()
    raise AssertionError("did not reach the stage")

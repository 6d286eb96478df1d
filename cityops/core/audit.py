"""Append-only audit log (审计日志) of every write.

Two ways rows get written, both in the same transaction as the change itself:

* ORM changes to models marked ``__audited__ = True`` are captured automatically by a
  session ``after_flush`` hook (before/after values of every changed column);
* bulk writes that bypass the ORM (imports, demo generation) call :func:`record` once
  with a summary.

The table is protected by database triggers against UPDATE and DELETE (see migrations).
The acting user comes from :data:`current_actor`, set by the API's auth dependency and by
the CLI.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, event, insert, inspect
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.attributes import get_history

from cityops.core.db import Base, utcnow
from cityops.core.types import JSONType, UTCDateTime


@dataclass(frozen=True)
class Actor:
    user_id: int | None
    name: str
    ip: str | None = None


SYSTEM = Actor(None, "system")
current_actor: contextvars.ContextVar[Actor] = contextvars.ContextVar(
    "cityops_actor", default=SYSTEM
)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor_name: Mapped[str] = mapped_column(String(100), nullable=False)
    ip: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    entity: Mapped[str] = mapped_column(String(60), nullable=False)
    entity_id: Mapped[str | None] = mapped_column(String(80))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        Index("ix_audit_entity", "entity", "entity_id"),
        Index("ix_audit_at", "at"),
    )


#: Column values that must never be copied into the audit log.
REDACTED = {"password_hash", "token_hash", "secret"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _columns(obj: Any) -> list[str]:
    return [a.key for a in inspect(obj).mapper.column_attrs]


def snapshot(obj: Any) -> dict[str, Any]:
    return {
        k: ("***" if k in REDACTED else _jsonable(getattr(obj, k, None))) for k in _columns(obj)
    }


def _entity_id(obj: Any) -> str | None:
    state = inspect(obj)
    key = state.mapper.primary_key_from_instance(obj)
    if any(k is None for k in key):
        return None
    return ",".join(str(k) for k in key)


def record(
    session: Session,
    action: str,
    entity: str,
    entity_id: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor: Actor | None = None,
) -> None:
    """Write one audit row in the session's current transaction."""
    a = actor or current_actor.get()
    session.execute(
        insert(AuditLog).values(
            at=utcnow(),
            actor_id=a.user_id,
            actor_name=a.name,
            ip=a.ip,
            action=action,
            entity=entity,
            entity_id=entity_id,
            before=_jsonable(before) if before is not None else None,
            after=_jsonable(after) if after is not None else None,
        )
    )


_PENDING_KEY = "cityops_audit_pending"


@event.listens_for(Session, "before_flush")
def _collect_before(session: Session, _ctx: Any, _instances: Any) -> None:
    pending = session.info.setdefault(_PENDING_KEY, [])
    for obj in session.dirty:
        if not getattr(obj, "__audited__", False) or not session.is_modified(obj):
            continue
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for key in _columns(obj):
            hist = get_history(obj, key)
            if hist.has_changes():
                old = hist.deleted[0] if hist.deleted else None
                new = hist.added[0] if hist.added else None
                hidden = key in REDACTED
                before[key] = "***" if hidden else _jsonable(old)
                after[key] = "***" if hidden else _jsonable(new)
        if after:
            pending.append(("update", obj, before, after, _entity_id(obj)))
    for obj in session.deleted:
        if getattr(obj, "__audited__", False):
            pending.append(("delete", obj, snapshot(obj), None, _entity_id(obj)))
    for obj in session.new:
        if getattr(obj, "__audited__", False):
            pending.append(("create", obj, None, None, None))


@event.listens_for(Session, "after_flush")
def _write_after(session: Session, _ctx: Any) -> None:
    pending = session.info.pop(_PENDING_KEY, [])
    if not pending:
        return
    a = current_actor.get()
    rows = []
    for action, obj, before, after, eid in pending:
        if action == "create":
            after = snapshot(obj)
            eid = _entity_id(obj)
        rows.append(
            {
                "at": utcnow(),
                "actor_id": a.user_id,
                "actor_name": a.name,
                "ip": a.ip,
                "action": action,
                "entity": obj.__tablename__,
                "entity_id": eid,
                "before": before,
                "after": after,
            }
        )
    session.connection().execute(insert(AuditLog), rows)

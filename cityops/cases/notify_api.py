"""In-app inbox (站内消息) and webhook administration.

* ``GET /api/v1/notifications?unread=`` — the caller's notifications, newest first
  (``before_id`` pages further back); ``GET /api/v1/notifications/unread-count``;
  ``POST /api/v1/notifications/{id}/read``; ``POST /api/v1/notifications/read-all``.
* Admin: ``GET/POST /api/v1/webhooks``, ``GET/PUT/DELETE /api/v1/webhooks/{id}``,
  ``GET /api/v1/webhooks/{id}/deliveries`` (the delivery log) and
  ``POST /api/v1/webhooks/{id}/deliveries/{delivery_id}/retry``.

A webhook's secret is shown once, in the answer that created (or rotated) it; afterwards
only its last four characters.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cityops.cases import webhooks
from cityops.cases.models import Notification, Webhook, WebhookDelivery
from cityops.core.db import utcnow
from cityops.core.errors import Conflict, NotFound
from cityops.core.security import AdminDep, PrincipalDep, SessionDep

router = APIRouter(prefix="/api/v1")


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


# --------------------------------------------------------------------------- inbox


def _notification_out(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "case_id": n.case_id,
        "title": n.title,
        "body": n.body,
        "created_at": _iso(n.created_at),
        "read": n.read_at is not None,
        "read_at": _iso(n.read_at),
    }


@router.get("/notifications", tags=["notifications"])
def list_notifications(
    principal: PrincipalDep,
    session: SessionDep,
    unread: bool = False,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """The caller's notifications, newest first; ``unread=true`` for the unread ones."""
    q = select(Notification).where(Notification.user_id == principal.user_id)
    if unread:
        q = q.where(Notification.read_at.is_(None))
    if before_id is not None:
        q = q.where(Notification.id < before_id)
    rows = session.scalars(q.order_by(Notification.id.desc()).limit(limit)).all()
    return [_notification_out(n) for n in rows]


@router.get("/notifications/unread-count", tags=["notifications"])
def unread_count(principal: PrincipalDep, session: SessionDep) -> dict[str, int]:
    n = session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == principal.user_id, Notification.read_at.is_(None))
    )
    return {"unread": int(n or 0)}


@router.post("/notifications/read-all", tags=["notifications"])
def read_all(principal: PrincipalDep, session: SessionDep) -> dict[str, int]:
    res = session.execute(
        update(Notification)
        .where(Notification.user_id == principal.user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return {"updated": int(res.rowcount or 0)}  # type: ignore[attr-defined]


@router.post("/notifications/{notification_id}/read", tags=["notifications"])
def mark_read(notification_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Mark one of the caller's notifications read (again: no change); others' are 404."""
    n = session.get(Notification, notification_id)
    if n is None or n.user_id != principal.user_id:
        raise NotFound(f"no notification {notification_id}", notification_id=notification_id)
    if n.read_at is None:
        n.read_at = utcnow()
        session.flush()
    return _notification_out(n)


# --------------------------------------------------------------------------- webhooks


def _check_url(v: str) -> str:
    v = v.strip()
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an absolute http:// or https:// URL")
    return v


def _check_events(v: list[str] | None) -> list[str] | None:
    if v is None:
        return None
    unknown = [e for e in v if e not in webhooks.EVENTS]
    if unknown:
        raise ValueError(f"unknown events {unknown}: use {', '.join(webhooks.EVENTS)}")
    return list(dict.fromkeys(v))


class WebhookIn(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)
    url: str = Field(..., max_length=500)
    secret: str | None = Field(
        None, min_length=16, max_length=100, description="HMAC key; generated when omitted"
    )
    events: list[str] | None = Field(
        None, description=f"events to send ({', '.join(webhooks.EVENTS)}); empty or null = all"
    )
    active: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str] | None) -> list[str] | None:
        return _check_events(v)


class WebhookUpdate(BaseModel):
    """Only the fields given change."""

    name: str | None = Field(None, min_length=1, max_length=100)
    url: str | None = Field(None, max_length=500)
    secret: str | None = Field(None, min_length=16, max_length=100)
    rotate_secret: bool = Field(False, description="generate a new secret (shown in the answer)")
    events: list[str] | None = None
    active: bool | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v)

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str] | None) -> list[str] | None:
        return _check_events(v)


def _stats(session: Session, ids: list[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {i: dict.fromkeys(webhooks.STATUSES, 0) for i in ids}
    if ids:
        rows = session.execute(
            select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.webhook_id.in_(ids))
            .group_by(WebhookDelivery.webhook_id, WebhookDelivery.status)
        ).all()
        for wid, status, n in rows:
            out[wid][status] = int(n)
    return out


def _webhook_out(
    w: Webhook, stats: dict[str, int] | None = None, show_secret: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": w.id,
        "name": w.name,
        "url": w.url,
        "events": w.events or [],
        "active": w.active,
        "secret_hint": "…" + w.secret[-4:],
    }
    if show_secret:
        out["secret"] = w.secret
    if stats is not None:
        out["deliveries"] = stats
    return out


def _get_webhook(session: Session, webhook_id: int) -> Webhook:
    w = session.get(Webhook, webhook_id)
    if w is None:
        raise NotFound(f"no webhook {webhook_id}", webhook_id=webhook_id)
    return w


def _delivery_out(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "webhook_id": d.webhook_id,
        "event": d.event,
        "dedupe_key": d.dedupe_key,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": _iso(d.next_attempt_at) if d.status in ("pending", "sending") else None,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "delivered_at": _iso(d.delivered_at),
        "payload": d.payload,
    }


@router.get("/webhooks", tags=["webhooks"])
def list_webhooks(principal: AdminDep, session: SessionDep) -> list[dict[str, Any]]:
    rows = session.scalars(select(Webhook).order_by(Webhook.id)).all()
    stats = _stats(session, [w.id for w in rows])
    return [_webhook_out(w, stats[w.id]) for w in rows]


@router.post("/webhooks", status_code=201, tags=["webhooks"])
def create_webhook(body: WebhookIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Register a receiver; the answer holds the secret (the only time it is shown)."""
    w = Webhook(
        name=body.name.strip(),
        url=body.url,
        secret=body.secret or secrets.token_hex(32),
        events=body.events or None,
        active=body.active,
    )
    session.add(w)
    session.flush()
    return _webhook_out(w, show_secret=True)


@router.get("/webhooks/{webhook_id}", tags=["webhooks"])
def get_webhook(webhook_id: int, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    w = _get_webhook(session, webhook_id)
    return _webhook_out(w, _stats(session, [w.id])[w.id])


@router.put("/webhooks/{webhook_id}", tags=["webhooks"])
def update_webhook(
    webhook_id: int, body: WebhookUpdate, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    w = _get_webhook(session, webhook_id)
    given = body.model_fields_set
    if body.name is not None:
        w.name = body.name.strip()
    if body.url is not None:
        w.url = body.url
    if "events" in given:
        w.events = body.events or None
    if body.active is not None:
        w.active = body.active
    new_secret = body.secret or (secrets.token_hex(32) if body.rotate_secret else None)
    if new_secret:
        w.secret = new_secret
    session.flush()
    return _webhook_out(w, _stats(session, [w.id])[w.id], show_secret=bool(new_secret))


@router.delete("/webhooks/{webhook_id}", status_code=204, tags=["webhooks"])
def delete_webhook(webhook_id: int, principal: AdminDep, session: SessionDep) -> Response:
    """Delete the webhook and its delivery log (deactivate it instead to keep the log)."""
    w = _get_webhook(session, webhook_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == w.id))
    session.delete(w)
    session.flush()
    return Response(status_code=204)


@router.get("/webhooks/{webhook_id}/deliveries", tags=["webhooks"])
def list_deliveries(
    webhook_id: int,
    principal: AdminDep,
    session: SessionDep,
    status: str | None = None,
    event: str | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """The delivery log, newest first (``status``: pending, sending, delivered, failed)."""
    _get_webhook(session, webhook_id)
    q = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status:
        q = q.where(WebhookDelivery.status == status)
    if event:
        q = q.where(WebhookDelivery.event == event)
    if before_id is not None:
        q = q.where(WebhookDelivery.id < before_id)
    rows = session.scalars(q.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    return [_delivery_out(d) for d in rows]


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/retry", tags=["webhooks"])
def retry_delivery(
    webhook_id: int, delivery_id: int, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    """Send a failed (or delivered) delivery again, with fresh attempts."""
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.webhook_id != webhook_id:
        raise NotFound(
            f"no delivery {delivery_id} of webhook {webhook_id}", delivery_id=delivery_id
        )
    if d.status in ("pending", "sending"):
        raise Conflict(f"delivery {delivery_id} is {d.status} already")
    webhooks.redeliver(session, d)
    session.flush()
    return _delivery_out(d)

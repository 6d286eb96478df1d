"""Outgoing webhooks: a durable outbox, HMAC-signed delivery, retries with backoff.

Producing: :func:`enqueue` writes one ``webhook_deliveries`` row per active webhook that
subscribes to the event, **in the caller's transaction** — the delivery exists exactly when
the change that caused it is committed, so nothing is lost and a rolled-back change sends
nothing. The unique ``(webhook_id, dedupe_key)`` makes a repeat impossible (the insert is
``ON CONFLICT DO NOTHING``).

Delivering: :class:`Deliverer` (run by the scheduler, see :mod:`cityops.cases.jobs`) claims
due rows with a conditional UPDATE ``pending → sending`` that also counts the attempt and
sets a claim expiry (kept in ``next_attempt_at``), so two workers never send the same row at
the same time; a claim left behind by a crashed worker expires and is taken again. The POST
happens outside any transaction (no database lock is held while waiting for a receiver).
2xx → ``delivered``; anything else → ``pending`` again after ``30 s × 2^(attempts-1)``
(capped at one hour) and ``failed`` after :data:`MAX_ATTEMPTS`. Delivery is *at least once*:
a worker that dies between the receiver's answer and its own commit sends again later, with
the same ``X-CityOps-Delivery`` id, by which receivers can drop repeats.

Request: ``POST`` of a JSON body (UTF-8, keys sorted) with the headers

* ``X-CityOps-Event`` — e.g. ``case.overdue``
* ``X-CityOps-Delivery`` — the delivery id (stable across retries)
* ``X-CityOps-Timestamp`` — Unix seconds of the attempt
* ``X-CityOps-Signature`` — ``sha256=<hex HMAC-SHA256 of "{timestamp}.{body}" keyed with the
  webhook's secret>``; check it with :func:`verify_signature`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cityops import __version__
from cityops.cases.models import STAGES, Case, Webhook, WebhookDelivery
from cityops.core.db import Database, utcnow
from cityops.core.security import lock_for_write

log = logging.getLogger("cityops.webhooks")

#: Event kinds a webhook can subscribe to (an empty subscription list means all of them).
EVENTS: dict[str, str] = {
    "case.near_due": "临期",
    "case.overdue": "超期",
    "case.escalated": "提级督办",
    "case.dispatched": "派遣",
    "case.closed": "结案",
}
SIGNATURE_PREFIX = "sha256="
#: Attempts before a delivery is given up (status ``failed``).
MAX_ATTEMPTS = 10
BASE_DELAY = timedelta(seconds=30)
MAX_DELAY = timedelta(hours=1)
#: How long a claimed (``sending``) row belongs to its worker; must exceed the HTTP timeout.
CLAIM_TTL = timedelta(minutes=2)
HTTP_TIMEOUT = 5.0
#: Deliveries claimed per round.
BATCH = 20

STATUSES = ("pending", "sending", "delivered", "failed")


# --------------------------------------------------------------------------- keys, signing


def stamp(t: datetime) -> str:
    """Compact UTC instant for dedupe keys: ``20261117T010000Z`` (microseconds if any)."""
    u = t.astimezone(UTC)
    s = u.strftime("%Y%m%dT%H%M%S")
    if u.microsecond:
        s += f".{u.microsecond:06d}"
    return s + "Z"


def dedupe_key(kind: str, case_id: int, *parts: datetime | int | str | None) -> str:
    """``kind:case_id:part:…`` with instants as :func:`stamp` (at most 120 characters)."""
    items = [kind, str(case_id)]
    for p in parts:
        items.append(stamp(p) if isinstance(p, datetime) else "-" if p is None else str(p))
    key = ":".join(items)
    if len(key) > 120:
        raise ValueError(f"dedupe key longer than 120 characters: {key}")
    return key


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes that are POSTed (and signed)."""
    return json.dumps(
        payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str
    ).encode("utf-8")


def _raw(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, timestamp: str | int, body: bytes | str) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``"{timestamp}.{body}"`` keyed with ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + _raw(body), hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes | str,
    header: str | None,
    *,
    tolerance: float | None = 300.0,
    now: float | None = None,
) -> bool:
    """For receivers: is ``header`` (``X-CityOps-Signature``) valid for this body and time?

    ``body`` must be the raw request body as received. With ``tolerance`` (seconds), a
    timestamp further than that from ``now`` (default: the current time) is refused, which
    stops replays of old requests.
    """
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    try:
        ts = int(str(timestamp))
    except ValueError:
        return False
    if tolerance is not None:
        current = time.time() if now is None else now
        if abs(current - ts) > tolerance:
            return False
    return hmac.compare_digest(sign(secret, str(timestamp), body), header.strip())


def backoff(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failed attempt: 30 s, 60 s, 120 s, … at most 1 h."""
    n = max(attempts, 1) - 1
    if n >= 20:
        return MAX_DELAY
    return min(BASE_DELAY * (2**n), MAX_DELAY)


def subscribed(events: Sequence[str] | None, event: str) -> bool:
    return not events or event in events


# --------------------------------------------------------------------------- producing


def _insert(session: Session, model: Any) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise RuntimeError(f"unsupported database {name}")  # pragma: no cover


def active_hooks(session: Session) -> list[tuple[int, list[str] | None]]:
    """(id, events) of the active webhooks."""
    rows = session.execute(
        select(Webhook.id, Webhook.events).where(Webhook.active.is_(True)).order_by(Webhook.id)
    ).all()
    return [(i, list(ev) if ev else None) for i, ev in rows]


def enqueue(
    session: Session,
    event: str,
    payload: dict[str, Any],
    dedupe_key: str,
    *,
    now: datetime | None = None,
    hooks: Iterable[tuple[int, Sequence[str] | None]] | None = None,
) -> int:
    """Queue ``event`` for every active webhook subscribed to it, in the caller's transaction.

    The body sent is ``{"event", "key", "occurred_at", **payload}``. ``dedupe_key`` must
    identify the occurrence (see :func:`dedupe_key`): queuing the same key again is a no-op.
    Returns the number of deliveries created.
    """
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}: one of {', '.join(EVENTS)}")
    t = now or utcnow()
    targets = [
        hid
        for hid, evs in (active_hooks(session) if hooks is None else hooks)
        if subscribed(evs, event)
    ]
    if not targets:
        return 0
    body = {"event": event, "key": dedupe_key, "occurred_at": t.isoformat(), **payload}
    body = json.loads(encode_body(body))  # plain JSON types only
    rows = [
        {
            "webhook_id": hid,
            "event": event,
            "dedupe_key": dedupe_key,
            "payload": body,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": t,
        }
        for hid in targets
    ]
    stmt = (
        _insert(session, WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["webhook_id", "dedupe_key"])
        .returning(WebhookDelivery.id)
    )
    return len(session.execute(stmt).all())


def case_summary(case: Case) -> dict[str, Any]:
    """What a webhook learns about a case (no personal data of the reporter)."""

    def iso(t: datetime | None) -> str | None:
        return t.isoformat() if t else None

    return {
        "id": case.id,
        "number": case.number,
        "source": case.source,
        "category_id": case.category_id,
        "urgency": case.urgency,
        "address": case.address,
        "lon": case.lon,
        "lat": case.lat,
        "grid_code": case.grid_code,
        "stage": case.stage,
        "stage_label": STAGES.get(case.stage, case.stage),
        "stage_started_at": iso(case.stage_started_at),
        "stage_deadline": iso(case.stage_deadline),
        "stage_warn_at": iso(case.stage_warn_at),
        "lead_unit_id": case.lead_unit_id,
        "near_due": case.near_due,
        "overdue": case.overdue,
        "supervised": case.supervised,
        "escalation_level": case.escalation_level,
        "close_type": case.close_type,
    }


# --------------------------------------------------------------------------- delivering


@dataclass
class DeliveryReport:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    #: Results whose row had been claimed again meanwhile (our claim had expired).
    lost_claims: int = 0
    ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Claim:
    id: int
    attempt: int
    url: str
    secret: str
    event: str
    payload: dict[str, Any]


class Deliverer:
    """Sends due deliveries of one database (thread-safe per instance use: one caller)."""

    def __init__(
        self,
        db: Database,
        *,
        transport: httpx.BaseTransport | None = None,
        client: httpx.Client | None = None,
        timeout: float = HTTP_TIMEOUT,
        claim_ttl: timedelta = CLAIM_TTL,
        max_attempts: int = MAX_ATTEMPTS,
        batch: int = BATCH,
    ) -> None:
        self.db = db
        self._own_client = client is None
        self.client = client or httpx.Client(
            timeout=timeout, transport=transport, follow_redirects=False
        )
        self.claim_ttl = claim_ttl
        self.max_attempts = max_attempts
        self.batch = batch

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self) -> Deliverer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- steps

    def claim(self, now: datetime, limit: int | None = None) -> list[_Claim]:
        """Atomically take up to ``limit`` due deliveries (pending, or claims that expired)."""
        W = WebhookDelivery
        with self.db.session() as s:
            lock_for_write(s)
            rows = s.execute(
                select(W.id, W.status, W.attempts)
                .join(Webhook, Webhook.id == W.webhook_id)
                .where(
                    Webhook.active.is_(True),
                    W.status.in_(("pending", "sending")),
                    W.next_attempt_at <= now,
                )
                .order_by(W.next_attempt_at, W.id)
                .limit(limit or self.batch)
            ).all()
            taken: dict[int, int] = {}
            for did, status, attempts in rows:
                res = s.execute(
                    update(W)
                    .where(
                        W.id == did,
                        W.status == status,
                        W.attempts == attempts,
                        W.next_attempt_at <= now,
                    )
                    .values(
                        status="sending",
                        attempts=attempts + 1,
                        next_attempt_at=now + self.claim_ttl,
                    )
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    taken[did] = attempts + 1
            if not taken:
                return []
            details = s.execute(
                select(W.id, W.event, W.payload, Webhook.url, Webhook.secret)
                .join(Webhook, Webhook.id == W.webhook_id)
                .where(W.id.in_(list(taken)))
                .order_by(W.id)
            ).all()
        return [
            _Claim(did, taken[did], url, secret, event, dict(payload))
            for did, event, payload, url, secret in details
        ]

    def send(self, claim: _Claim, now: datetime) -> tuple[int | None, str | None]:
        """POST one delivery; (status code or None, error text or None when 2xx)."""
        body = encode_body(claim.payload)
        ts = str(int(now.timestamp()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": f"CityOps-Webhooks/{__version__}",
            "X-CityOps-Event": claim.event,
            "X-CityOps-Delivery": str(claim.id),
            "X-CityOps-Timestamp": ts,
            "X-CityOps-Signature": sign(claim.secret, ts, body),
        }
        try:
            resp = self.client.post(claim.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        except Exception as exc:  # a bad URL and the like: a failed attempt, not a crash
            return None, f"{type(exc).__name__}: {exc}"[:500]
        if 200 <= resp.status_code < 300:
            return resp.status_code, None
        text = resp.text[:300] if resp.content else ""
        return resp.status_code, f"HTTP {resp.status_code}" + (f": {text}" if text else "")

    def finish(
        self,
        claim: _Claim,
        code: int | None,
        error: str | None,
        now: datetime,
        report: DeliveryReport,
    ) -> None:
        W = WebhookDelivery
        values: dict[str, Any] = {"last_status_code": code, "last_error": error}
        if error is None:
            values.update(status="delivered", delivered_at=now)
        elif claim.attempt >= self.max_attempts:
            values.update(status="failed")
        else:
            values.update(status="pending", next_attempt_at=now + backoff(claim.attempt))
        with self.db.session() as s:
            lock_for_write(s)
            res = s.execute(
                update(W)
                .where(W.id == claim.id, W.status == "sending", W.attempts == claim.attempt)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                report.lost_claims += 1
                return
        if error is None:
            report.delivered += 1
        elif values["status"] == "failed":
            report.failed += 1
            log.warning("webhook delivery %s failed for good: %s", claim.id, error)
        else:
            report.retrying += 1

    def run_due(self, now: datetime | None = None, limit: int | None = None) -> DeliveryReport:
        """Claim and send the due deliveries once; returns what happened."""
        t = now or utcnow()
        report = DeliveryReport()
        claims = self.claim(t, limit)
        report.claimed = len(claims)
        for c in claims:
            code, error = self.send(c, t)
            self.finish(c, code, error, t, report)
            report.ids.append(c.id)
        return report


def deliver_due(
    db: Database,
    now: datetime | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    limit: int | None = None,
    **options: Any,
) -> DeliveryReport:
    """One delivery round with a throw-away :class:`Deliverer`."""
    with Deliverer(db, transport=transport, **options) as d:
        return d.run_due(now, limit)


def redeliver(session: Session, delivery: WebhookDelivery, now: datetime | None = None) -> None:
    """Queue a delivered or failed delivery again (attempts start over)."""
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = now or utcnow()
    delivery.delivered_at = None

"""Outgoing webhooks: signing, delivery to a real local HTTP receiver, retries with
backoff, atomic claims, the outbox the scheduler writes, and the admin API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from cityops.cases import jobs, service, webhooks
from cityops.cases.models import Webhook, WebhookDelivery
from cityops.core.db import Database
from tests.factories import handler_of
from tests.test_scheduler import _client, add_webhook, at, dispatched, login

SECRET = "whsec-0123456789abcdef"
SEC = timedelta(seconds=1)


class LocalReceiver:
    """A real HTTP server on a free local port; answers with the given statuses, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    status = outer.statuses.pop(0) if outer.statuses else 200
                reply = b"ok" if status < 300 else b"receiver broken"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cityops-hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def local_receiver() -> Iterator[Callable[[list[int]], LocalReceiver]]:
    made: list[LocalReceiver] = []

    def make(statuses: list[int]) -> LocalReceiver:
        r = LocalReceiver(statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def env(monkeypatch) -> Iterator[Callable[[str, str], None]]:
    """Set an environment variable for the test (and re-read the cached settings)."""
    from cityops.core.settings import get_settings

    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


def delivery(db: Database, did: int | None = None) -> WebhookDelivery:
    with db.session() as s:
        q = select(WebhookDelivery).order_by(WebhookDelivery.id)
        if did is not None:
            q = q.where(WebhookDelivery.id == did)
        d = s.scalars(q).first()
        assert d is not None
        s.expunge(d)
        return d


def enqueue(
    db: Database, event: str = "case.closed", key: str = "closed:7:x", **payload: Any
) -> int:
    with db.session() as s:
        return webhooks.enqueue(s, event, payload or {"case": {"id": 7}}, key, now=at(0))


def ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


# --------------------------------------------------------------------------- signing


def test_signature_round_trip_and_refusals() -> None:
    body = webhooks.encode_body({"event": "case.overdue", "note": "超期"})
    ts = str(int(time.time()))
    sig = webhooks.sign(SECRET, ts, body)
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert sig == f"sha256={mac}"
    verify = webhooks.verify_signature
    assert verify(SECRET, ts, body, sig)
    assert verify(SECRET, int(ts), body.decode(), sig)  # str body and int timestamp work too
    assert not verify("another-secret-value", ts, body, sig)
    assert not verify(SECRET, ts, body + b" ", sig)  # body changed
    assert not verify(SECRET, str(int(ts) + 1), body, sig)  # timestamp changed
    assert not verify(SECRET, ts, body, sig.replace("sha256=", "sha1="))
    assert not verify(SECRET, ts, body, None)
    assert not verify(SECRET, "yesterday", body, sig)
    old = str(int(time.time()) - 3600)  # a replayed old request
    assert not verify(SECRET, old, body, webhooks.sign(SECRET, old, body))
    assert verify(SECRET, old, body, webhooks.sign(SECRET, old, body), tolerance=None)
    assert verify(SECRET, old, body, webhooks.sign(SECRET, old, body), now=int(old) + 10)


def test_backoff_schedule() -> None:
    waits = [webhooks.backoff(n).total_seconds() for n in range(1, 11)]
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]
    assert webhooks.backoff(500) == timedelta(hours=1)


# --------------------------------------------------------------------------- delivering


def test_a_failing_receiver_gets_the_delivery_again_after_the_backoff(db, local_receiver) -> None:
    rec = local_receiver([500, 200])
    hid = add_webhook(db, url=rec.url, secret=SECRET)
    assert enqueue(db) == 1
    r = webhooks.deliver_due(db, at(0))
    assert (r.claimed, r.delivered, r.retrying) == (1, 0, 1)
    d = delivery(db)
    assert d.webhook_id == hid and d.status == "pending" and d.attempts == 1
    assert d.last_status_code == 500 and d.last_error == "HTTP 500: receiver broken"
    assert d.next_attempt_at == at(0) + 30 * SEC
    assert webhooks.deliver_due(db, at(0) + 29 * SEC).claimed == 0  # not due yet
    r = webhooks.deliver_due(db, at(0) + 30 * SEC)
    assert (r.claimed, r.delivered) == (1, 1)
    d = delivery(db)
    assert d.status == "delivered" and d.attempts == 2 and d.last_status_code == 200
    assert d.last_error is None and d.delivered_at == at(0) + 30 * SEC
    assert webhooks.deliver_due(db, at(60)).claimed == 0  # delivered stays delivered
    # the receiver saw the same delivery twice, signed each time
    assert len(rec.requests) == 2
    stamps = []
    for headers, body in rec.requests:
        assert headers["x-cityops-event"] == "case.closed"
        assert headers["x-cityops-delivery"] == str(d.id)
        assert headers["content-type"].startswith("application/json")
        ts = headers["x-cityops-timestamp"]
        assert webhooks.verify_signature(
            SECRET, ts, body, headers["x-cityops-signature"], tolerance=None
        )
        assert json.loads(body) == {
            "event": "case.closed",
            "key": "closed:7:x",
            "occurred_at": at(0).isoformat(),
            "case": {"id": 7},
        }
        stamps.append(int(ts))
    assert stamps[1] - stamps[0] == 30


def test_retries_end_in_failed_after_max_attempts(db) -> None:
    add_webhook(db)
    enqueue(db)
    calls: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    t = at(0)
    with webhooks.Deliverer(db, transport=httpx.MockTransport(refuse)) as w:
        for attempt in range(1, webhooks.MAX_ATTEMPTS + 1):
            assert w.run_due(t - SEC).claimed == 0
            assert w.run_due(t).claimed == 1
            d = delivery(db)
            assert d.attempts == attempt and d.last_status_code is None
            assert d.last_error is not None and "ConnectError" in d.last_error
            if attempt < webhooks.MAX_ATTEMPTS:
                assert d.status == "pending" and d.next_attempt_at == t + webhooks.backoff(attempt)
                t = d.next_attempt_at
        assert d.status == "failed"
        assert w.run_due(t + timedelta(days=30)).claimed == 0
    assert len(calls) == webhooks.MAX_ATTEMPTS


def test_deliveries_follow_subscriptions_and_are_queued_once(db) -> None:
    every = add_webhook(db)
    only_overdue = add_webhook(db, events=["case.overdue"])
    add_webhook(db, active=False)
    assert enqueue(db, "case.near_due", "near_due:1:a") == 1
    assert enqueue(db, "case.overdue", "overdue:1:a") == 2
    assert enqueue(db, "case.overdue", "overdue:1:a") == 0  # the same occurrence again: nothing
    with pytest.raises(ValueError, match="unknown webhook event"), db.session() as s:
        webhooks.enqueue(s, "case.reopened", {}, "x")
    with db.session() as s:
        rows = s.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.event)).all()
    assert sorted(rows) == sorted(
        [(every, "case.near_due"), (every, "case.overdue"), (only_overdue, "case.overdue")]
    )
    # a deactivated webhook keeps its queue but is not called until it is active again
    with db.session() as s:
        s.get(Webhook, only_overdue).active = False  # type: ignore[union-attr]
    assert webhooks.deliver_due(db, at(1), transport=httpx.MockTransport(ok)).delivered == 2
    with db.session() as s:
        s.get(Webhook, only_overdue).active = True  # type: ignore[union-attr]
    assert webhooks.deliver_due(db, at(2), transport=httpx.MockTransport(ok)).delivered == 1


def test_two_workers_never_send_the_same_delivery(db) -> None:
    add_webhook(db)
    for i in range(30):
        enqueue(db, key=f"closed:{i}:x", n=i)
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def slow_ok(request: httpx.Request) -> httpx.Response:
        with lock:
            seen[request.headers["X-CityOps-Delivery"]] += 1
        time.sleep(0.002)
        return httpx.Response(204)

    dbs = [Database(db.url) for _ in range(3)]
    barrier = threading.Barrier(len(dbs))
    errors: list[BaseException] = []

    def worker(d: Database) -> None:
        try:
            barrier.wait()
            with webhooks.Deliverer(d, transport=httpx.MockTransport(slow_ok), batch=4) as w:
                while w.run_due(at(0)).claimed:
                    pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in dbs:
        d.dispose()
    assert not errors
    assert len(seen) == 30 and set(seen.values()) == {1}
    with db.session() as s:
        assert set(s.scalars(select(WebhookDelivery.status))) == {"delivered"}
        assert set(s.scalars(select(WebhookDelivery.attempts))) == {1}


def test_a_claim_left_by_a_crashed_worker_is_taken_again_after_it_expires(db) -> None:
    add_webhook(db)
    enqueue(db)
    dead = webhooks.Deliverer(db, transport=httpx.MockTransport(ok))
    (claim,) = dead.claim(at(0))  # … and the worker dies before sending
    d = delivery(db)
    assert d.status == "sending" and d.attempts == 1
    expiry = at(0) + webhooks.CLAIM_TTL
    assert webhooks.deliver_due(db, expiry - SEC).claimed == 0  # still claimed
    r = webhooks.deliver_due(db, expiry, transport=httpx.MockTransport(ok))
    assert r.delivered == 1
    assert delivery(db).attempts == 2
    # the dead worker's late answer cannot overwrite the newer result
    late = webhooks.DeliveryReport()
    dead.finish(claim, 500, "HTTP 500", expiry + SEC, late)
    dead.close()
    assert late.lost_claims == 1
    assert delivery(db).status == "delivered"


def test_an_unreachable_url_is_a_failed_attempt_not_a_crash(db) -> None:
    add_webhook(db, url="http://127.0.0.1:9/nothing-listens-here")
    enqueue(db)
    r = webhooks.deliver_due(db, at(0), timeout=1.0)
    assert r.retrying == 1
    d = delivery(db)
    assert d.status == "pending" and d.last_error and d.last_status_code is None


# --------------------------------------------------------------------------- from the scheduler


def test_scheduler_events_reach_a_local_receiver_signed_and_paused_cases_stay_quiet(
    city, local_receiver
) -> None:
    rec = local_receiver([])
    add_webhook(city, url=rec.url, secret=SECRET)
    with city.session() as s:
        live = dispatched(s, 0)
        paused = dispatched(s, 1)
        h = handler_of(s, paused.lead_unit_id)
        service.perform(s, h, paused.id, "request_return", {"reason": "不属于本单位"}, None, at(10))
        live_id, paused_id = live.id, paused.id
    r = jobs.tick(city, at(70))
    assert r.near_due == [live_id] and r.overdue == [live_id] and r.deliveries == 3
    assert webhooks.deliver_due(city, at(70)).delivered == 3
    assert webhooks.deliver_due(city, at(71)).claimed == 0
    got = []
    for headers, body in rec.requests:
        assert webhooks.verify_signature(
            SECRET,
            headers["x-cityops-timestamp"],
            body,
            headers["x-cityops-signature"],
            now=at(70).timestamp(),
        )
        payload = json.loads(body)
        assert payload["event"] == headers["x-cityops-event"]
        assert payload["case"]["id"] == live_id != paused_id
        assert "reporter_name" not in payload["case"] and "reporter_phone" not in payload["case"]
        got.append(payload["event"])
    assert sorted(got) == ["case.escalated", "case.near_due", "case.overdue"]
    escalated = next(json.loads(b) for _, b in rec.requests if b"case.escalated" in b)
    assert escalated["level"] == 1 and escalated["case"]["escalation_level"] == 1
    assert escalated["case"]["supervised"] is True and escalated["case"]["stage"] == "sign"


# --------------------------------------------------------------------------- admin API


def test_webhook_admin_api(city, env) -> None:
    with _client(city, env) as c:
        admin, op = login(c, "admin"), login(c, "operator1")
        assert c.get("/api/v1/webhooks", headers=op).status_code == 403
        body = {"name": "值班系统", "url": "https://example.org/hook", "events": ["case.overdue"]}
        assert c.post("/api/v1/webhooks", headers=op, json=body).status_code == 403
        r = c.post("/api/v1/webhooks", headers=admin, json=body)
        assert r.status_code == 201, r.text
        w = r.json()
        assert len(w["secret"]) == 64 and w["secret_hint"] == "…" + w["secret"][-4:]
        assert w["events"] == ["case.overdue"] and w["active"] is True
        wid = w["id"]
        bad = [
            {**body, "url": "ftp://example.org/x"},
            {**body, "url": "not a url"},
            {**body, "events": ["case.bogus"]},
            {**body, "secret": "short"},
        ]
        for b in bad:
            assert c.post("/api/v1/webhooks", headers=admin, json=b).status_code == 422, b
        listed = c.get("/api/v1/webhooks", headers=admin).json()
        assert [x["id"] for x in listed] == [wid] and "secret" not in listed[0]
        assert listed[0]["deliveries"] == {"pending": 0, "sending": 0, "delivered": 0, "failed": 0}
        r = c.put(f"/api/v1/webhooks/{wid}", headers=admin, json={"events": [], "active": False})
        assert r.status_code == 200 and r.json()["events"] == [] and not r.json()["active"]
        assert "secret" not in r.json()
        r = c.put(
            f"/api/v1/webhooks/{wid}", headers=admin, json={"rotate_secret": True, "active": True}
        )
        assert r.json()["secret"] != w["secret"]
        with city.session() as s:
            webhooks.enqueue(s, "case.near_due", {"case": {"id": 1}}, "near_due:1:x", now=at(0))
        log = c.get(f"/api/v1/webhooks/{wid}/deliveries", headers=admin).json()
        assert [(x["event"], x["status"], x["attempts"]) for x in log] == [
            ("case.near_due", "pending", 0)
        ]
        did = log[0]["id"]
        assert (
            c.post(f"/api/v1/webhooks/{wid}/deliveries/{did}/retry", headers=admin).status_code
            == 409
        )
        with city.session() as s:
            row = s.get(WebhookDelivery, did)
            assert row is not None
            row.status, row.attempts, row.last_error = "failed", 10, "HTTP 500"
        r = c.post(f"/api/v1/webhooks/{wid}/deliveries/{did}/retry", headers=admin)
        assert (
            r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
        )
        assert (
            c.get(
                f"/api/v1/webhooks/{wid}/deliveries", headers=admin, params={"status": "failed"}
            ).json()
            == []
        )
        assert c.get(f"/api/v1/webhooks/{wid}", headers=admin).json()["deliveries"]["pending"] == 1
        assert c.delete(f"/api/v1/webhooks/{wid}", headers=admin).status_code == 204
        assert c.get(f"/api/v1/webhooks/{wid}", headers=admin).status_code == 404
        assert c.get(f"/api/v1/webhooks/{wid}/deliveries", headers=admin).status_code == 404
        with city.session() as s:
            assert s.get(WebhookDelivery, did) is None

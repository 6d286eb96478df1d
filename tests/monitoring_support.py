"""Helpers of the monitoring tests: the real Mosquitto broker, publishing, polling, closing an
alarm's case through the workflow."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.cases import queries
from cityops.cases import service as cases
from cityops.cases.models import Case
from cityops.cases.storage import LocalStorage
from cityops.core.db import Database
from cityops.monitoring.ingest import IngestResult, ingest_readings
from cityops.monitoring.models import Alarm, Device, Facility
from cityops.monitoring.mqtt import BrokerAddress, Subscriber
from tests.factories import handler_of, photo, principal

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
#: A Tuesday morning (Asia/Shanghai 09:00 = 01:00 UTC): service-level tests run at T0 + x.
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)

T = TypeVar("T")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def require_broker(host: str = BROKER_HOST, port: int = BROKER_PORT) -> None:
    """Fail (never skip) when the broker is not reachable."""
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        pytest.fail(f"Mosquitto at {host}:{port} is unreachable: {exc}")


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``fn`` every 20 ms until it returns something truthy."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def publisher(port: int = BROKER_PORT, client_id: str | None = None) -> paho.Client:
    c = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=client_id or unique("pub"),
        clean_session=True,
    )
    c.connect(BROKER_HOST, port, keepalive=30)
    c.loop_start()
    return c


def publish(topic: str, payload: str | bytes, port: int = BROKER_PORT, qos: int = 1) -> None:
    c = publisher(port)
    try:
        info = c.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        c.loop_stop()
        c.disconnect()


@contextmanager
def running_subscriber(
    db: Database, root: str, port: int = BROKER_PORT, client_id: str | None = None, **kw: Any
) -> Iterator[Subscriber]:
    sub = Subscriber(
        db, BrokerAddress(BROKER_HOST, port), client_id or unique("cityops-test"), root, **kw
    ).start()
    try:
        wait_for(sub.connected.is_set, 10, "the subscriber to connect")
        yield sub
    finally:
        sub.stop()


def ingest(db: Database, rows: list[dict[str, Any]], now: datetime) -> IngestResult:
    with db.session() as s:
        return ingest_readings(s, rows, now)


def reading(code: str, measurand: str, t: datetime, value: Any, **kw: Any) -> dict[str, Any]:
    return {"device_code": code, "measurand": measurand, "ts": t, "value": value, **kw}


def device(s: Session, code: str) -> Device:
    return s.scalars(select(Device).where(Device.code == code)).one()


def facility_of(s: Session, code: str) -> Facility:
    d = device(s, code)
    f = s.get(Facility, d.facility_id)
    assert f is not None
    return f


def open_alarm(s: Session, code: str) -> Alarm | None:
    d = device(s, code)
    return s.scalars(select(Alarm).where(Alarm.device_id == d.id, Alarm.is_open == 1)).first()


def alarms_of(s: Session, code: str) -> list[Alarm]:
    d = device(s, code)
    return list(s.scalars(select(Alarm).where(Alarm.device_id == d.id).order_by(Alarm.id)))


def close_case(s: Session, case_id: int, store: LocalStorage, t: datetime) -> Case:
    """Walk an urgent case from 待签收 to 已结案 through the workflow, as the people would."""
    case = s.get(Case, case_id)
    assert case is not None and case.lead_unit_id is not None
    h = handler_of(s, case.lead_unit_id)

    def up(who: Any) -> int:
        return int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo())["id"])

    cases.perform(s, h, case.id, "sign", {}, None, t)
    cases.perform(s, h, case.id, "handle", {"note": "已处置", "attachment_ids": [up(h)]}, None, t)
    if case.stage == "check":
        checker = (
            principal(s, s.get(User, case.assignee_user_id).username)  # type: ignore[union-attr]
            if case.assignee_user_id
            else principal(s, "shift1")
        )
        cases.perform(
            s,
            checker,
            case.id,
            "check",
            {"passed": True, "attachment_ids": [up(checker)]},
            None,
            t,
        )
    cases.perform(s, principal(s, "shift1"), case.id, "close", {}, None, t)
    assert case.stage == "closed"
    return case

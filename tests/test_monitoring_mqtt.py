"""Telemetry over MQTT against real Mosquitto brokers: the shared one at 127.0.0.1:1883 (each
test on its own topic root and client ids) and, for the restart test, a private broker with
persistence started on a free port."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from sqlalchemy import func, select

from cityops.cases.models import Case
from cityops.cases.storage import LocalStorage
from cityops.core.db import Database, utcnow
from cityops.monitoring import service
from cityops.monitoring.models import Alarm, Device, Latest, Reading
from cityops.monitoring.mqtt import Subscriber
from tests.monitoring_support import (
    BROKER_HOST,
    close_case,
    device,
    facility_of,
    open_alarm,
    publish,
    publisher,
    require_broker,
    running_subscriber,
    unique,
    wait_for,
)

MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.fixture
def store(tmp_path) -> LocalStorage:  # type: ignore[no-untyped-def]
    return LocalStorage(tmp_path / "att")


def _msg(measurand: str, value: object, seconds_ago: float = 0.0, **kw: object) -> str:
    ts = (utcnow() - timedelta(seconds=seconds_ago)).isoformat()
    return json.dumps({"measurand": measurand, "ts": ts, "value": value, **kw})


def test_publish_to_alarm_to_case_to_clear(city: Database, store: LocalStorage) -> None:
    require_broker()
    root = unique("cityops-test") + "/telemetry"
    code = "GAS-VW-002-CH4"
    with running_subscriber(city, root) as sub:
        publish(f"{root}/{code}", _msg("ch4", 0.2, 5, unit="%LEL"))
        publish(f"{root}/{code}", _msg("ch4", 27.5, 1, unit="%LEL"))

        def alarm_with_case() -> Alarm | None:
            with city.session() as s:
                a = open_alarm(s, code)
                return a if a is not None and a.case_id is not None else None

        a = wait_for(alarm_with_case, 10, "the alarm and its case")
        with city.session() as s:
            case = s.get(Case, a.case_id)
            assert case is not None
            assert (a.level, a.status) == (1, "active")  # 25 %LEL = 一级
            assert (case.source, case.urgency, case.stage) == ("iot", "特急", "sign")
            assert case.lead_unit_id == facility_of(s, code).owner_unit_id
            assert s.scalar(select(func.count()).select_from(Reading)) == 2
            close_case(s, case.id, store, utcnow())
        # a malformed message is refused and counted on the device; nothing else changes
        publish(f"{root}/{code}", b"{not json")
        publish(f"{root}/{code}", _msg("ch4", 0.1))

        def cleared() -> bool:
            with city.session() as s:
                x = s.get(Alarm, a.id)
                return x is not None and x.status == "cleared"

        wait_for(cleared, 10, "the alarm to clear")
        with city.session() as s:
            d = device(s, code)
            assert d.rejected_count == 1
            assert d.last_reject_reason == "payload is not valid JSON"
            assert service.latest_values(s, [code], "ch4")[code][1] == 0.1
        assert sub.stats.errors == 0


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind((BROKER_HOST, 0))
        return int(sk.getsockname()[1])


class Broker:
    """A private Mosquitto with persistence, which the test can stop and start again."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        data = tmp / "mosq"
        data.mkdir()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} {BROKER_HOST}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "autosave_interval 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                with socket.create_connection((BROKER_HOST, self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 10, "the private broker")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto writes its persistence file
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    assert Path(MOSQUITTO).exists(), f"{MOSQUITTO} is needed for this test"
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


def test_nothing_is_lost_across_broker_and_subscriber_restarts(
    city: Database, broker: Broker
) -> None:
    root = unique("cityops-test") + "/telemetry"
    code = "WL-YLD-003"
    client_id = unique("cityops-ingest")
    pub = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=unique("device"), clean_session=False
    )
    pub.reconnect_delay_set(min_delay=1, max_delay=1)
    pub.connect(BROKER_HOST, broker.port, keepalive=10)
    pub.loop_start()
    try:
        with running_subscriber(city, root, broker.port, client_id) as sub:
            publish(f"{root}/{code}", _msg("ponding", 1.0, 60), broker.port)
            wait_for(lambda: sub.stats.stored >= 1, 10, "the first reading")
            broker.stop()
            wait_for(lambda: not sub.connected.is_set(), 10, "the subscriber to notice")
            # the device keeps publishing with QoS 1 while the broker is down: its client queues
            for i in range(10):
                pub.publish(f"{root}/{code}", _msg("ponding", 2.0 + i, 50 - i), qos=1)
            broker.start()
            wait_for(lambda: sub.stats.stored >= 11, 20, "the queued readings")
        # the subscriber is down now: the broker keeps its session's messages
        for i in range(5):
            publish(f"{root}/{code}", _msg("ponding", 20.0 + i, 30 - i), broker.port)
        with running_subscriber(city, root, broker.port, client_id) as sub2:
            wait_for(lambda: sub2.stats.stored >= 5, 20, "the readings sent while it was down")
    finally:
        pub.loop_stop()
        pub.disconnect()
    with city.session() as s:
        d = device(s, code)
        values = sorted(
            v for (v,) in s.execute(select(Reading.value).where(Reading.device_id == d.id))
        )
        assert values == [1.0] + [2.0 + i for i in range(10)] + [20.0 + i for i in range(5)]
        # 20 cm ≥ 15 cm: the waterlogging warning was raised from the late readings too
        a = open_alarm(s, code)
        assert a is not None and a.level == 3
    time.sleep(0)  # nothing else to wait for


def test_simulator_command_publishes_the_demo_devices(
    city: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from cityops.core.settings import get_settings
    from cityops.monitoring.cli import app

    require_broker()
    root = unique("cityops-test") + "/telemetry"
    monkeypatch.setenv("CITYOPS_DATABASE_URL", city.url)
    get_settings.cache_clear()
    try:
        with running_subscriber(city, root) as sub:
            r = CliRunner().invoke(
                app,
                ["sensors", "--minutes", "0.01", "--topic-root", root, "--incidents", "none"],
            )
            assert r.exit_code == 0, r.output
            with city.session() as s:
                n_dev = s.scalar(select(func.count()).select_from(Device))
                n_meas = sum(len(d.measurands) for d in s.scalars(select(Device)))
            assert f"sent {n_meas} readings from {n_dev} devices" in r.output
            wait_for(lambda: sub.stats.stored >= n_meas, 10, "every simulated reading")
        assert sub.stats.rejected == 0
        with city.session() as s:
            # one latest value per (device, measurand), no alarm from normal readings
            assert s.scalar(select(func.count()).select_from(Latest)) == n_meas
            assert s.scalar(select(func.count()).select_from(Alarm)) == 0
    finally:
        monkeypatch.delenv("CITYOPS_DATABASE_URL")
        get_settings.cache_clear()


def _held_subscriber(
    sub: Subscriber, entered: threading.Event | None = None
) -> tuple[threading.Event, list[int]]:
    """Make the subscriber's intake wait for a gate (the database is slow) and record the
    number of readings of every batch; ``entered`` is set once an intake is waiting."""
    gate = threading.Event()
    sizes: list[int] = []
    ingest = sub._ingest

    def held(rows: list[dict[str, object]]) -> tuple[int, int, list[int]]:
        if entered is not None:
            entered.set()
        gate.wait(20)
        sizes.append(len(rows))
        return ingest(rows)

    sub._ingest = held  # type: ignore[method-assign]
    return gate, sizes


def test_messages_waiting_during_a_slow_batch_are_taken_together(city: Database) -> None:
    """MQTT 5 Receive Maximum: the broker sends far more than Mosquitto's default window of
    20 unacknowledged messages, so what arrived while a batch was being stored is one batch."""
    require_broker()
    root = unique("cityops-test") + "/telemetry"
    code = "WL-YLD-003"
    with running_subscriber(city, root) as sub:
        gate, sizes = _held_subscriber(sub)
        pub = publisher()
        try:
            infos = [
                pub.publish(f"{root}/{code}", _msg("ponding", 1.0 + i % 5, 200 - i), qos=1)
                for i in range(150)
            ]
            for info in infos:
                info.wait_for_publish(10)
            time.sleep(1.0)  # the broker delivers what its window allows
            gate.set()
            wait_for(lambda: sub.stats.stored >= 150, 20, "every reading")
        finally:
            pub.loop_stop()
            pub.disconnect()
    assert sum(sizes) == 150 and sub.stats.errors == 0
    assert max(sizes) > 100, sizes  # with a window of 20 no batch could exceed 20
    with city.session() as s:
        d = device(s, code)
        assert s.scalar(select(func.count()).where(Reading.device_id == d.id)) == 150


def test_a_batch_is_capped_in_readings(city: Database) -> None:
    require_broker()
    root = unique("cityops-test") + "/telemetry"
    code = "WL-YLD-003"
    with running_subscriber(city, root, max_readings=50) as sub:
        gate, sizes = _held_subscriber(sub)
        pub = publisher()
        try:
            for i in range(30):  # 30 messages of 10 readings
                rows = [
                    json.loads(_msg("ponding", 2.0, 400 - 10 * i - k, unit="cm")) for k in range(10)
                ]
                pub.publish(f"{root}/{code}", json.dumps(rows), qos=1).wait_for_publish(10)
            time.sleep(1.0)
            gate.set()
            wait_for(lambda: sub.stats.stored >= 300, 20, "every reading")
        finally:
            pub.loop_stop()
            pub.disconnect()
    assert sum(sizes) == 300
    # a batch stops taking messages once it holds 50 readings
    assert max(sizes) <= 50 and len(sizes) >= 6, sizes


def test_readings_that_may_alarm_are_stored_ahead_of_the_batch(city: Database) -> None:
    """A methane reading past the warning threshold arrives behind a pile of normal ponding
    readings: its device's messages go first, in their own transaction, so its alarm and
    urgent case do not wait for the pile."""
    require_broker()
    root = unique("cityops-test") + "/telemetry"
    hot, calm = "GAS-VW-002-CH4", "WL-YLD-003"
    with running_subscriber(city, root) as sub:
        entered = threading.Event()
        gate, sizes = _held_subscriber(sub, entered)
        order: list[set[str]] = []
        held = sub._ingest

        def spy(rows: list[dict[str, object]]) -> tuple[int, int, list[int]]:
            order.append({str(r["device_code"]) for r in rows})
            return held(rows)

        sub._ingest = spy  # type: ignore[method-assign]
        pub = publisher()
        try:
            # a first message keeps the intake busy
            pub.publish(f"{root}/{calm}", _msg("ponding", 1.0, 120), qos=1).wait_for_publish(10)
            assert entered.wait(10)
            msgs = [(calm, _msg("ponding", 1.0, 100 - i)) for i in range(40)]
            msgs.insert(20, (hot, _msg("ch4", 0.2, 30)))  # the same device's earlier reading
            msgs.append((hot, _msg("ch4", 12.0, 1)))
            for code, body in msgs:
                pub.publish(f"{root}/{code}", body, qos=1).wait_for_publish(10)
            time.sleep(1.0)
            gate.set()
            wait_for(lambda: sub.stats.stored >= 43, 20, "every reading")
        finally:
            pub.loop_stop()
            pub.disconnect()
    # behind the busy intake: the methane device's two messages, in order, ahead of the 40
    # ponding ones waiting with them
    assert sizes == [1, 2, 40] and order[1:] == [{hot}, {calm}], (order, sizes)
    assert len(sub.stats.alarms) == 1
    with city.session() as s:
        a = open_alarm(s, hot)
        assert a is not None and a.level == 2 and a.case_id is not None  # 10 ≤ 12 < 25
        # both methane readings were evaluated in order: the rule saw 0.2 then 12.0
        assert service.latest_values(s, [hot], "ch4")[hot][1] == 12.0

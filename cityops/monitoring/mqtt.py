"""MQTT telemetry subscriber (topic ``cityops/telemetry/{device_code}``), started with the server.

Configuration (environment, read here): ``CITYOPS_MQTT_URL`` (``mqtt://[user:pass@]host:port``;
unset = no subscriber), ``CITYOPS_MQTT_CLIENT_ID`` (default ``cityops-ingest``),
``CITYOPS_MQTT_TOPIC`` (topic root, default ``cityops/telemetry``) and
``CITYOPS_MQTT_INFLIGHT`` (the in-flight window below, default 2,000 messages).

Delivery: MQTT 5, QoS 1 with a persistent session (clean start off, a session that never
expires, a fixed client id), so the broker keeps what devices publish while the subscriber
is down and delivers it on reconnect. Messages are acknowledged (PUBACK) only **after** the
batch holding them is committed (paho's manual ack), so a crash between receipt and commit
loses nothing either: the broker redelivers, and intake is idempotent. Run one subscriber
per client id (a second process with the same id would take the session over).

In-flight window: the broker sends at most *Receive Maximum* unacknowledged QoS 1 messages
(MQTT 3.1.1 clients get the broker's ``max_inflight_messages``, 20 with Mosquitto). As
messages are acknowledged a batch at a time, that window bounds the batch: the subscriber
announces ``CITYOPS_MQTT_INFLIGHT`` (default 2,000 messages) so that a batch can hold what
arrived while the previous one was being stored. A batch is capped at ``max_readings``
readings (default 20,000), so that no message — an alarm among them — waits behind a
batch of unbounded size. Within a batch, the messages of devices with a reading that may
reach an alarm level (:class:`HotReadings`) are stored first, in a transaction of their
own, and acknowledged; the rest follows.

Payload: JSON, one reading ``{"measurand": "ch4", "ts": "2026-…+08:00", "value": 3.2,
"unit": "%LEL"}``, a list of them, or ``{"readings": [...]}``; the device code is the last
topic level. The asyncio client runs in its own thread; messages waiting in its queue are
taken together as one intake batch (JSON parsed with orjson; payloads it refuses, such as
``NaN`` literals, are parsed again by :mod:`json` so that they are refused the same way).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import aiomqtt
import orjson
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cityops.core.db import Database, utcnow

log = logging.getLogger("cityops.monitoring.mqtt")

URL_ENV = "CITYOPS_MQTT_URL"
CLIENT_ID_ENV = "CITYOPS_MQTT_CLIENT_ID"
TOPIC_ENV = "CITYOPS_MQTT_TOPIC"
INFLIGHT_ENV = "CITYOPS_MQTT_INFLIGHT"
DEFAULT_TOPIC_ROOT = "cityops/telemetry"
DEFAULT_INFLIGHT = 2000
#: MQTT 5 Session Expiry Interval meaning "never": the session outlives any outage.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_url(url: str) -> BrokerAddress:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "tcp", "") or not u.hostname:
        raise ValueError(f"{URL_ENV} must look like mqtt://host:1883, not {url!r}")
    return BrokerAddress(
        u.hostname,
        u.port or 1883,
        unquote(u.username) if u.username else None,
        unquote(u.password) if u.password else None,
    )


def payload_rows(device_code: str, payload: bytes) -> list[dict[str, Any]]:
    """Readings of one message (the device code from the topic)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but json reads (NaN, huge integers) is judged per reading
            doc = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return [{"device_code": device_code, "_error": "payload is not valid JSON"}]
    if isinstance(doc, dict) and isinstance(doc.get("readings"), list):
        doc = doc["readings"]
    items = doc if isinstance(doc, list) else [doc]
    rows: list[dict[str, Any]] = []
    for it in items:
        if isinstance(it, dict):
            rows.append({**it, "device_code": device_code})
        else:
            rows.append({"device_code": device_code, "_error": "a reading must be an object"})
    return rows


class HotReadings:
    """Readings that may reach an alarm level, told apart without the database: per
    measurand, the least severe threshold of every active value rule (``above``, ``below``,
    ``outside``; of any device or type), reloaded every :attr:`REFRESH_S` seconds.

    A batch is split so that the messages of devices with such a reading are stored (and
    their alarm and urgent case committed) in a transaction of their own, ahead of the rest:
    an alarm does not wait behind thousands of normal readings. All messages of a device
    stay in the same part, in order. Over-approximating is harmless (the threshold of some
    other device's rule, a device in maintenance): only the order changes."""

    REFRESH_S = 10.0

    def __init__(self) -> None:
        self.loaded_at: float | None = None
        #: measurand → (comparator kind, reach low, reach high)
        self.tests: dict[str, list[tuple[str, float, float]]] = {}

    def stale(self) -> bool:
        return self.loaded_at is None or time.monotonic() - self.loaded_at > self.REFRESH_S

    def refresh(self, db: Database) -> None:
        from sqlalchemy import select

        from cityops.monitoring.models import Rule
        from cityops.monitoring.rules import reach

        tests: dict[str, list[tuple[str, float, float]]] = {}
        try:
            with db.session() as s:
                for m, comp, levels in s.execute(
                    select(Rule.measurand, Rule.comparator, Rule.levels).where(
                        Rule.active.is_(True), Rule.comparator.in_(("above", "below", "outside"))
                    )
                ):
                    if m and levels:
                        tests.setdefault(m, []).append((comp, *reach(comp, levels)))
        except Exception as exc:  # no priority this time; intake itself will tell
            log.warning("alarm thresholds not loaded (%s)", exc)
        self.tests = tests
        self.loaded_at = time.monotonic()

    def any(self, rows: list[dict[str, Any]]) -> bool:
        tests = self.tests
        for r in rows:
            m = r.get("measurand")
            ts = tests.get(m) if m.__class__ is str else None
            if ts is None:
                continue
            v = r.get("value")
            if v.__class__ is not float and v.__class__ is not int:
                try:
                    v = float(v)  # type: ignore[arg-type]
                except (TypeError, ValueError, OverflowError):
                    continue
            for comp, lo, hi in ts:
                if comp == "above":
                    if v >= lo:
                        return True
                elif comp == "below":
                    if v <= hi:
                        return True
                elif v < lo or v > hi:
                    return True
        return False

    def split(self, parsed: list[list[dict[str, Any]]]) -> list[list[int]]:
        """Message indexes: those of devices with a hot reading first, then the others (one
        part when either is empty)."""
        hot_codes = {rs[0].get("device_code") for rs in parsed if rs and self.any(rs)}
        if not hot_codes:
            return [list(range(len(parsed)))]
        first = [i for i, rs in enumerate(parsed) if rs and rs[0].get("device_code") in hot_codes]
        if len(first) == len(parsed):
            return [first]
        taken = set(first)
        return [first, [i for i in range(len(parsed)) if i not in taken]]


@dataclass
class Stats:
    messages: int = 0
    batches: int = 0
    stored: int = 0
    rejected: int = 0
    errors: int = 0
    connects: int = 0
    last_error: str | None = None
    alarms: list[int] = field(default_factory=list)


class Subscriber:
    """The telemetry subscriber: an asyncio MQTT client in its own thread."""

    def __init__(
        self,
        db: Database,
        address: BrokerAddress,
        client_id: str = "cityops-ingest",
        topic_root: str = DEFAULT_TOPIC_ROOT,
        max_batch: int = 5000,
        reconnect_s: float = 0.5,
        max_readings: int = 20_000,
        inflight: int = DEFAULT_INFLIGHT,
    ) -> None:
        self.db = db
        self.address = address
        self.client_id = client_id
        self.topic_root = topic_root.rstrip("/")
        self.max_batch = max_batch
        self.max_readings = max_readings
        #: Receive Maximum announced to the broker (unacknowledged QoS 1 messages).
        self.inflight = max(1, min(inflight, 65535))
        self.reconnect_s = reconnect_s
        self.stats = Stats()
        #: Set while connected and subscribed.
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-ingest")
        #: Which readings may raise an alarm: their devices' messages are stored first.
        self.hot = HotReadings()

    # -- lifecycle

    def start(self) -> Subscriber:
        # the first alarm would otherwise pay for importing the case workflow (and what it
        # imports) while a reading waits: do it now, on the intake thread
        self._pool.submit(_warm_up)
        self._thread = threading.Thread(target=self._run, name="mqtt-subscriber", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=True)
        self.connected.clear()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._main())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    def _client(self) -> aiomqtt.Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
        props.ReceiveMaximum = self.inflight
        return aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,  # never: the session (and what it holds) is kept
            properties=props,
            keepalive=30,
            timeout=5,
        )

    async def _main(self) -> None:
        while not self._stop.is_set():
            client = self._client()
            # PUBACK only after the batch is committed (paho's manual ack)
            client._client.manual_ack_set(True)
            try:
                async with client:
                    await client.subscribe(f"{self.topic_root}/+", qos=1)
                    self.stats.connects += 1
                    self.connected.set()
                    await self._consume(client)
            except aiomqtt.MqttError as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("MQTT connection lost (%s); reconnecting", exc)
            except _IngestFailed as exc:
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.error("MQTT batch not stored (%s); reconnecting for redelivery", exc)
            finally:
                self.connected.clear()
            if not self._stop.is_set():
                await asyncio.sleep(self.reconnect_s)

    async def _consume(self, client: aiomqtt.Client) -> None:
        it = client.messages.__aiter__()
        loop = asyncio.get_running_loop()
        while True:
            first = await it.__anext__()
            batch = [first]
            parsed = [self._rows(first)]
            n = len(parsed[0])
            while (
                len(batch) < self.max_batch and n < self.max_readings and len(client.messages) > 0
            ):
                m = await it.__anext__()
                batch.append(m)
                parsed.append(self._rows(m))
                n += len(parsed[-1])
            if self.hot.stale():
                await loop.run_in_executor(self._pool, self.hot.refresh, self.db)
            for part in self.hot.split(parsed):
                await self._store(client, loop, [batch[i] for i in part], [parsed[i] for i in part])

    async def _store(
        self,
        client: aiomqtt.Client,
        loop: asyncio.AbstractEventLoop,
        batch: list[aiomqtt.Message],
        parsed: list[list[dict[str, Any]]],
    ) -> None:
        """Ingest the messages' readings in one transaction, then acknowledge them."""
        rows = [r for rs in parsed for r in rs]
        try:
            res = await loop.run_in_executor(self._pool, self._ingest, rows)
        except Exception as exc:  # the database refused: do not ack, reconnect
            raise _IngestFailed(f"{type(exc).__name__}: {exc}") from exc
        for m in batch:
            if m.qos > 0:
                client._client.ack(m.mid, m.qos)
        self.stats.messages += len(batch)
        self.stats.batches += 1
        self.stats.stored += res[0]
        self.stats.rejected += res[1]
        self.stats.alarms.extend(res[2])

    @staticmethod
    def _rows(m: aiomqtt.Message) -> list[dict[str, Any]]:
        code = str(m.topic).rsplit("/", 1)[-1]
        raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
        return payload_rows(code, raw)

    def _ingest(self, rows: list[dict[str, Any]]) -> tuple[int, int, list[int]]:
        from cityops.monitoring.ingest import ingest_readings

        with self.db.session() as s:
            r = ingest_readings(s, rows, utcnow())
        return r.stored, len(r.rejected), r.alarms_raised


class _IngestFailed(Exception):
    pass


def _warm_up() -> None:
    """Import what intake and the alarm path (alarm → urgent case) use."""
    import cityops.cases.service
    import cityops.monitoring.ingest
    import cityops.monitoring.rules
    import cityops.monitoring.service  # noqa: F401


def start(
    db: Database,
    url: str,
    client_id: str = "cityops-ingest",
    topic_root: str = DEFAULT_TOPIC_ROOT,
    inflight: int = DEFAULT_INFLIGHT,
) -> Subscriber:
    return Subscriber(db, parse_url(url), client_id, topic_root, inflight=inflight).start()


def start_from_env(db: Database) -> Stoppable | None:
    """Start the subscriber when ``CITYOPS_MQTT_URL`` is configured; None otherwise."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        return None
    try:
        inflight = int(os.environ.get(INFLIGHT_ENV, DEFAULT_INFLIGHT))
    except ValueError:
        inflight = DEFAULT_INFLIGHT
    return start(
        db,
        url,
        os.environ.get(CLIENT_ID_ENV, "cityops-ingest"),
        os.environ.get(TOPIC_ENV, DEFAULT_TOPIC_ROOT),
        inflight,
    )

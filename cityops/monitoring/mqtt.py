"""MQTT telemetry subscriber (topic ``cityops/telemetry/{device_code}``), started with the server.

Configuration (environment, read here): ``CITYOPS_MQTT_URL`` (``mqtt://[user:pass@]host:port``;
unset = no subscriber), ``CITYOPS_MQTT_CLIENT_ID`` (default ``cityops-ingest``) and
``CITYOPS_MQTT_TOPIC`` (topic root, default ``cityops/telemetry``).

Delivery: QoS 1 with a persistent session (``clean_session=False`` and a fixed client id),
so the broker keeps what devices publish while the subscriber is down and delivers it on
reconnect. Messages are acknowledged (PUBACK) only **after** the batch holding them is
committed (paho's manual ack), so a crash between receipt and commit loses nothing either:
the broker redelivers, and intake is idempotent. Run one subscriber per client id (a second
process with the same id would take the session over).

Payload: JSON, one reading ``{"measurand": "ch4", "ts": "2026-…+08:00", "value": 3.2,
"unit": "%LEL"}``, a list of them, or ``{"readings": [...]}``; the device code is the last
topic level. The asyncio client runs in its own thread; messages waiting in its queue are
taken together as one intake batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import aiomqtt

from cityops.core.db import Database, utcnow

log = logging.getLogger("cityops.monitoring.mqtt")

URL_ENV = "CITYOPS_MQTT_URL"
CLIENT_ID_ENV = "CITYOPS_MQTT_CLIENT_ID"
TOPIC_ENV = "CITYOPS_MQTT_TOPIC"
DEFAULT_TOPIC_ROOT = "cityops/telemetry"


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
    ) -> None:
        self.db = db
        self.address = address
        self.client_id = client_id
        self.topic_root = topic_root.rstrip("/")
        self.max_batch = max_batch
        self.reconnect_s = reconnect_s
        self.stats = Stats()
        #: Set while connected and subscribed.
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mqtt-ingest")

    # -- lifecycle

    def start(self) -> Subscriber:
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

    async def _main(self) -> None:
        while not self._stop.is_set():
            client = aiomqtt.Client(
                self.address.host,
                self.address.port,
                username=self.address.username,
                password=self.address.password,
                identifier=self.client_id,
                clean_session=False,
                keepalive=30,
                timeout=5,
            )
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
            while len(batch) < self.max_batch and len(client.messages) > 0:
                batch.append(await it.__anext__())
            rows: list[dict[str, Any]] = []
            for m in batch:
                code = str(m.topic).rsplit("/", 1)[-1]
                raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                rows.extend(payload_rows(code, raw))
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

    def _ingest(self, rows: list[dict[str, Any]]) -> tuple[int, int, list[int]]:
        from cityops.monitoring.ingest import ingest_readings

        with self.db.session() as s:
            r = ingest_readings(s, rows, utcnow())
        return r.stored, len(r.rejected), r.alarms_raised


class _IngestFailed(Exception):
    pass


def start(
    db: Database, url: str, client_id: str = "cityops-ingest", topic_root: str = DEFAULT_TOPIC_ROOT
) -> Subscriber:
    return Subscriber(db, parse_url(url), client_id, topic_root).start()


def start_from_env(db: Database) -> Stoppable | None:
    """Start the subscriber when ``CITYOPS_MQTT_URL`` is configured; None otherwise."""
    url = os.environ.get(URL_ENV, "").strip()
    if not url:
        return None
    return start(
        db,
        url,
        os.environ.get(CLIENT_ID_ENV, "cityops-ingest"),
        os.environ.get(TOPIC_ENV, DEFAULT_TOPIC_ROOT),
    )

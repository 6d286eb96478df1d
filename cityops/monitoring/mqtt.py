"""MQTT telemetry subscriber (topic ``cityops/telemetry/{device_code}``), started with the server."""

from __future__ import annotations

from typing import Protocol

from cityops.core.db import Database


class Stoppable(Protocol):
    def stop(self) -> None: ...


def start_from_env(db: Database) -> Stoppable | None:
    """Start the subscriber when ``CITYOPS_MQTT_URL`` is configured; None otherwise."""
    return None

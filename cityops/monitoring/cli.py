"""Command line of the monitoring context.

Mount either the command (``simulate_app.command("sensors")(simulate_sensors)`` gives
``cityops simulate sensors``) or the group (:data:`app`, e.g. as ``cityops monitoring``).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Annotated

import numpy as np
import typer

app = typer.Typer(help="城市生命线监测: sensor simulator.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """城市生命线监测 (lifeline monitoring) commands."""


@app.command("sensors")
def simulate_sensors(
    minutes: Annotated[float, typer.Option(help="how long to run (real time)")] = 10.0,
    via: Annotated[str, typer.Option(help="mqtt | http")] = "mqtt",
    mqtt_url: Annotated[
        str, typer.Option(envvar="CITYOPS_MQTT_URL", help="broker, e.g. mqtt://127.0.0.1:1883")
    ] = "mqtt://127.0.0.1:1883",
    topic_root: Annotated[str, typer.Option(envvar="CITYOPS_MQTT_TOPIC")] = "cityops/telemetry",
    api: Annotated[str, typer.Option(help="server for --via http")] = "http://127.0.0.1:8000",
    user: Annotated[str, typer.Option(help="user for --via http (role monitor)")] = "monitor1",
    password: Annotated[str, typer.Option(help="password for --via http")] = "demo-pass-2026",
    incidents: Annotated[
        str, typer.Option(help="comma list of methane,burst,bridge,rainstorm (or none)")
    ] = "methane,burst,bridge,rainstorm",
    start_after: Annotated[float, typer.Option(help="seconds before incidents start")] = 60.0,
    ramp: Annotated[float, typer.Option(help="seconds an incident takes to peak")] = 180.0,
    speedup: Annotated[
        float, typer.Option(help="divide every device's sampling interval by this")
    ] = 1.0,
    seed: Annotated[int, typer.Option()] = 7,
) -> None:
    """Publish realistic readings for the demo city's devices, with injected incidents."""
    from sqlalchemy import select

    from cityops.cli.common import cli_db
    from cityops.core.db import utcnow
    from cityops.monitoring.models import Device
    from cityops.monitoring.simulate import SimDevice, plan_incidents, readings

    if via not in ("mqtt", "http"):
        raise typer.BadParameter("--via must be mqtt or http")
    db = cli_db()
    with db.session() as s:
        devices = [
            SimDevice(d.code, d.device_type, list(d.measurands), d.interval_s)
            for d in s.scalars(
                select(Device).where(Device.status != "maintenance").order_by(Device.code)
            )
        ]
    if not devices:
        typer.echo("no devices: run `cityops demo` first", err=True)
        raise typer.Exit(1)
    kinds = [k.strip() for k in incidents.split(",") if k.strip() and k.strip() != "none"]
    plan = plan_incidents(devices, kinds, start_after, ramp)
    for inc in plan:
        typer.echo(f"incident {inc.kind} on {', '.join(inc.devices)} at +{inc.start_s:.0f}s")
    rng = np.random.default_rng(seed)
    send = (
        _mqtt_sender(mqtt_url, topic_root) if via == "mqtt" else _http_sender(api, user, password)
    )
    begin = time.monotonic()
    next_due = {d.code: 0.0 for d in devices}
    sent = 0
    try:
        while (elapsed := time.monotonic() - begin) < minutes * 60:
            due = {c for c, t in next_due.items() if t <= elapsed}
            for d in devices:
                if d.code in due:
                    next_due[d.code] = elapsed + max(1.0, d.interval_s / speedup)
            if due:
                batch = readings(
                    devices, utcnow() - timedelta(seconds=0.5), elapsed, plan, rng, due
                )
                sent += send(batch)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    typer.echo(f"sent {sent} readings from {len(devices)} devices")


def _mqtt_sender(url: str, root: str):  # type: ignore[no-untyped-def]
    import paho.mqtt.client as paho

    from cityops.monitoring.mqtt import parse_url

    addr = parse_url(url)
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cityops-simulator")
    if addr.username:
        c.username_pw_set(addr.username, addr.password)
    c.connect(addr.host, addr.port, keepalive=30)
    c.loop_start()

    def send(batch: dict[str, list[dict[str, object]]]) -> int:
        n = 0
        for code, rows in batch.items():
            c.publish(f"{root.rstrip('/')}/{code}", json.dumps({"readings": rows}), qos=1)
            n += len(rows)
        return n

    return send


def _http_sender(api: str, user: str, password: str):  # type: ignore[no-untyped-def]
    import httpx

    client = httpx.Client(base_url=api, timeout=30)
    r = client.post("/api/v1/auth/login", json={"username": user, "password": password})
    r.raise_for_status()
    headers = {"Authorization": f"Bearer {r.json()['token']}"}

    def send(batch: dict[str, list[dict[str, object]]]) -> int:
        rows = [{**x, "device_code": code} for code, xs in batch.items() for x in xs]
        client.post("/api/v1/monitoring/telemetry", json=rows, headers=headers).raise_for_status()
        return len(rows)

    return send

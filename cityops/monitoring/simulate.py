"""Sensor simulator (``cityops simulate sensors``): realistic readings for the demo city's
devices, with injected incidents.

Normal behaviour per measurand: methane near 0 %LEL, network pressure 0.35–0.45 MPa with a
daily swing, flow following demand, levels and ponding near their dry values, strain and
deflection with traffic noise, and so on. Incidents (each on the first device of its kind,
starting ``start_s`` seconds into the run and ramping over ``ramp_s``):

* ``methane`` — a leak into a valve well: methane ramps from 0 to 35 %LEL (一级 at 25);
* ``burst`` — a burst water main: pressure falls 0.40 → 0.12 MPa within a minute;
* ``bridge`` — a bridge overload: strain ramps to 650 με (二级 at ±500);
* ``rainstorm`` — rain gauges report heavy rain and ponding rises at several underpasses
  past 15 cm (waterlogged) towards 35 cm (closure at 30).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

INCIDENTS = ("methane", "burst", "bridge", "rainstorm")


@dataclass
class SimDevice:
    code: str
    device_type: str
    measurands: list[str]
    interval_s: int


@dataclass
class Incident:
    kind: str
    devices: list[str]
    start_s: float
    ramp_s: float


def plan_incidents(
    devices: list[SimDevice], kinds: list[str], start_s: float, ramp_s: float
) -> list[Incident]:
    def first(pred: Any, n: int = 1) -> list[str]:
        return [d.code for d in devices if pred(d)][:n]

    out = []
    for k in kinds:
        if k == "methane":
            codes = first(lambda d: d.device_type == "methane_detector" and "-VW-" in d.code)
        elif k == "burst":
            codes = first(lambda d: d.device_type == "pressure_gauge" and d.code.startswith("WAT"))
        elif k == "bridge":
            codes = first(lambda d: d.device_type == "strain_gauge")
        elif k == "rainstorm":
            # rising ponding at several points and heavy rain at their gauges
            codes = first(lambda d: d.device_type == "ponding_gauge", 4) + first(
                lambda d: d.device_type == "rain_gauge", 2
            )
        else:
            raise ValueError(f"unknown incident {k!r}: one of {', '.join(INCIDENTS)}")
        if codes:
            out.append(Incident(k, codes, start_s, ramp_s))
    return out


def _ramp(elapsed: float, inc: Incident) -> float:
    """0 before the incident, rising linearly to 1 over its ramp."""
    if elapsed < inc.start_s:
        return 0.0
    return min(1.0, (elapsed - inc.start_s) / max(inc.ramp_s, 1.0))


def value(
    d: SimDevice,
    m: str,
    t: datetime,
    elapsed: float,
    incidents: list[Incident],
    rng: np.random.Generator,
) -> float:
    hour = t.hour + t.minute / 60.0
    daily = math.sin((hour - 6.0) / 24.0 * 2 * math.pi)
    f = 0.0
    kind = None
    for inc in incidents:
        if d.code in inc.devices:
            f, kind = _ramp(elapsed, inc), inc.kind
    noise = float(rng.normal())
    if m == "ch4":
        base = max(0.0, 0.3 + 0.15 * noise)
        return round(base + (35.0 * f if kind == "methane" else 0.0), 2)
    if m == "pressure":
        base = 0.40 + 0.03 * daily + 0.003 * noise
        if kind == "burst":
            base -= 0.28 * f
        return round(max(0.0, base), 4)
    if m == "flow":
        return round(max(0.0, 180 + 60 * daily + 5 * noise), 1)
    if m == "level":
        return round(max(0.0, 1.2 + 0.05 * noise), 3)
    if m == "ponding":
        return round(max(0.0, (38.0 * f if kind == "rainstorm" else 0.0) + 0.2 * abs(noise)), 1)
    if m == "rainfall":
        return round(max(0.0, (6.0 * f if kind == "rainstorm" else 0.0) + 0.05 * abs(noise)), 1)
    if m == "strain":
        return round(120 + 40 * noise + (530.0 * f if kind == "bridge" else 0.0), 1)
    if m == "deflection":
        return round(5 + 2 * noise, 2)
    if m == "accel":
        return round(0.05 * noise, 4)
    if m == "tilt":
        return round(0.02 * noise, 3)
    if m == "crack":
        return round(max(0.0, 0.20 + 0.01 * noise), 3)
    if m == "temp":
        return round(16 + 6 * daily + 0.3 * noise, 1)
    if m == "cover":
        return 0.0
    return 0.0


def readings(
    devices: list[SimDevice],
    t: datetime,
    elapsed: float,
    incidents: list[Incident],
    rng: np.random.Generator,
    due: set[str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """One reading per measurand of every (due) device at ``t``, grouped by device code."""
    out: dict[str, list[dict[str, Any]]] = {}
    stamp = t.isoformat()
    for d in devices:
        if due is not None and d.code not in due:
            continue
        out[d.code] = [
            {"measurand": m, "ts": stamp, "value": value(d, m, t, elapsed, incidents, rng)}
            for m in d.measurands
        ]
    return out

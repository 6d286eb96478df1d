"""The one place where flood command reads gauges of the monitoring context.

Every call into ``cityops.monitoring`` lives here, so the flood context depends on three
functions only (imported when called, so flood works — with empty readings — while the
monitoring context is absent):

* ``monitoring.service.latest_values(session, device_codes, measurand)``
  → ``{code: (ts, value)}``
* ``monitoring.service.series(session, device_code, measurand, start, end)``
  → ``[(ts, value), …]``
* ``monitoring.ingest.ingest_readings(session, rows)`` with rows
  ``{device_code, measurand, ts, value}``

Measurands: ``ponding_depth`` (cm) and ``rainfall`` (mm per reading interval). The monitoring
catalog names the depth ``ponding``; :func:`measurand` maps the agreed name to the one the
catalog knows, so either spelling works.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from types import ModuleType
from typing import Any

from sqlalchemy.orm import Session

PONDING = "ponding_depth"
RAINFALL = "rainfall"


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise


#: Agreed measurand name → other spellings a monitoring catalog may use.
ALIASES: dict[str, tuple[str, ...]] = {PONDING: ("ponding",), RAINFALL: ("rain",)}


def measurand(name: str) -> str:
    """The monitoring catalog's code for the measurand ``name``."""
    catalog = _module("cityops.monitoring.catalog")
    known = getattr(catalog, "MEASURANDS", None) if catalog is not None else None
    if known is None or name in known:
        return name
    return next((a for a in ALIASES.get(name, ()) if a in known), name)


def _service() -> ModuleType | None:
    mod = _module("cityops.monitoring.service")
    if mod is None or not hasattr(mod, "latest_values"):
        return None
    return mod


def available() -> bool:
    """Whether the monitoring context offers the functions flood needs."""
    return _service() is not None


def latest(session: Session, codes: Sequence[str], kind: str) -> dict[str, tuple[datetime, float]]:
    """Latest reading of each device (devices without one are absent)."""
    wanted = sorted({c for c in codes if c})
    svc = _service()
    if not wanted or svc is None:
        return {}
    out: dict[str, tuple[datetime, float]] = svc.latest_values(session, wanted, measurand(kind))
    return {k: (ts, float(v)) for k, (ts, v) in out.items()}


def series_many(
    session: Session, codes: Sequence[str], kind: str, start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, float]]]:
    """Readings of several devices in ``[start, end]``, each sorted by time.

    Uses ``monitoring.service.series_many`` (one query) when monitoring offers it, else one
    ``series`` call per device.
    """
    wanted = sorted({c for c in codes if c})
    svc = _service()
    if not wanted or svc is None:
        return {}
    m = measurand(kind)
    bulk = getattr(svc, "series_many", None)
    if bulk is not None:
        got: dict[str, list[tuple[datetime, float]]] = bulk(session, wanted, m, start, end)
    else:
        got = {c: svc.series(session, c, m, start, end) for c in wanted}
    return {c: sorted((ts, float(v)) for ts, v in rows) for c, rows in got.items() if rows}


def ingest(session: Session, rows: list[dict[str, Any]]) -> Any:
    """Store readings through the monitoring context (tests and the demo)."""
    mod = _module("cityops.monitoring.ingest")
    if mod is None or not hasattr(mod, "ingest_readings"):
        raise RuntimeError("the monitoring context (cityops.monitoring.ingest) is not available")
    return mod.ingest_readings(
        session, [{**r, "measurand": measurand(str(r["measurand"]))} for r in rows]
    )

"""Flood command on real gauges: readings stored through the monitoring context's
``ingest_readings`` → the board's depth, trend and status → the rule proposal job.

The flood demo names its devices ``WL-<point code>`` (ponding depth) and ``RG-<n>`` (rain).
If the monitoring demo has not seeded them, the test registers them through the monitoring
service first."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.core.db import utcnow
from cityops.flood import gauges, service
from cityops.flood.models import Proposal, WaterloggingPoint
from tests.factories import principal


def _ensure_devices(s: Session, p: WaterloggingPoint) -> None:
    from cityops.geo.models import Unit
    from cityops.monitoring import service as mon
    from cityops.monitoring.models import Device, Facility

    have = set(s.scalars(select(Device.code)))
    if {p.depth_device_code, p.rain_device_code} <= have:
        return
    owner = s.scalars(select(Unit.id).where(Unit.code.like("%-DRAIN"))).first()
    fac = s.scalars(select(Facility).where(Facility.code == f"FLD-{p.code}")).first()
    if fac is None:
        fac = mon.save_facility(
            s,
            None,
            {
                "code": f"FLD-{p.code}",
                "name": p.name,
                "kind": "underpass",
                "owner_unit_id": owner,
                "lon": p.lon,
                "lat": p.lat,
            },
        )
    for code, dtype in ((p.depth_device_code, "ponding_gauge"), (p.rain_device_code, "rain_gauge")):
        if code not in have:
            mon.save_device(s, None, {"code": code, "device_type": dtype, "facility_id": fac.id})


def test_gauge_readings_reach_the_board_and_the_proposal(city) -> None:
    now = utcnow().replace(microsecond=0)
    with city.session() as s:
        p = s.scalars(select(WaterloggingPoint).where(WaterloggingPoint.code == "YLD-001")).one()
        assert (p.depth_device_code, p.rain_device_code) == ("WL-YLD-001", "RG-1")
        _ensure_devices(s, p)
        depth = [(20, 10.0), (10, 20.0), (2, 32.0)]  # minutes ago, cm
        rain = [(10 * k + 1, 2.8) for k in range(18)]  # 18 × 2.8 = 50.4 mm in 3 h
        rows = [
            {
                "device_code": p.depth_device_code,
                "measurand": gauges.PONDING,
                "ts": now - timedelta(minutes=ago),
                "value": v,
            }
            for ago, v in depth
        ] + [
            {
                "device_code": p.rain_device_code,
                "measurand": gauges.RAINFALL,
                "ts": now - timedelta(minutes=ago),
                "value": v,
            }
            for ago, v in rain
        ]
        result = gauges.ingest(s, rows)
        assert getattr(result, "rejected", []) == []

    with city.session() as s:
        b = service.board(s, principal(s, "commander1"), now)
        row = next(r for r in b["points"] if r["code"] == "YLD-001")
        assert row["depth_cm"] == 32.0
        assert row["trend"] == "rising" and row["status"] == "closed"
        out = service.run_proposals(s, now)
        assert out["level"] == 2
        prop = s.get(Proposal, out["proposal_id"])
        assert prop is not None and prop.status == "pending"
        signals = {(r["signal"], r["rule_id"]) for r in prop.reasons}
        # 3-hour rain ≥ 50 mm (orange), 6 h and 12 h (yellow, blue), YLD-001 ≥ 30 cm (orange)
        assert signals == {("rainfall", 3), ("rainfall", 2), ("rainfall", 1), ("ponding", 5)}
        rain_reason = next(r for r in prop.reasons if r["rule_id"] == 3)
        assert rain_reason["gauge"] == "RG-1" and rain_reason["rain_mm"] == 50.4

"""The column-wise intake path: validation fast path vs the per-reading one, batches that mix
new and already-stored readings, and the column-wise rule screening compared, reading for
reading, with evaluating every reading one by one."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, insert, select

from cityops.core.db import Database, utcnow
from cityops.monitoring import rules as rules_mod
from cityops.monitoring.ingest import Batch, ingest_readings, rollup, validate
from cityops.monitoring.models import (
    Alarm,
    Device,
    Facility,
    Latest,
    Reading,
    Rollup1h,
    Rollup1m,
    RuleState,
)
from tests.monitoring_support import T0, at, device, ingest, reading

CH4 = "GAS-VW-001-CH4"
PONDING = "WL-YLD-001"
PRESSURE = "WAT-WM-001-P"


# --------------------------------------------------------------------------- validation


def _messy(now: Any) -> list[Any]:
    return [
        reading(CH4, "ch4", at(1), 0.4, unit="%LEL"),
        reading(CH4, "ch4", at(2), "1.5"),  # text that is a number: kept
        reading(CH4, "ch4", at(3), " 2.5 ", unit="LEL%"),
        reading(CH4, "ch4", at(4), True),  # a boolean is not a number
        reading(CH4, "ch4", at(5), 10**400),  # too big for a float
        reading(CH4, "ch4", at(6).isoformat(), 0.6),
        reading(CH4, "ch4", at(7).timestamp(), 0.7),  # epoch seconds
        reading(CH4, "ch4", at(1), 9.9),  # the key of the first reading again: a duplicate
        {"device_code": CH4, "_error": "payload is not valid JSON"},
        reading(CH4, "ch4", "yesterday", 0.4),
        reading(CH4, "ch4", at(8), 50.0, unit=["%LEL"]),  # an unhashable unit
        reading(PONDING, "ponding", at(2), 3.0),
        reading("WL-YLD-002", "ponding", at(2), 600.0),  # > 500 cm
        reading(CH4, "cover", at(1), 1.0),
        reading("GAS-VW-001-COVER", "cover", at(1), 0.5),  # 0/1 only
        reading("GAS-VW-001-COVER", "cover", at(2), 1.0),
    ]


def _validated(city: Database, rows: list[Any], now: Any) -> tuple[Batch, Any]:
    from cityops.monitoring.ingest import IngestResult, load_devices

    result = IngestResult(received=len(rows))
    with city.session() as s:
        devices = load_devices(s, [r.get("device_code") for r in rows if isinstance(r, dict)])
    return validate(rows, devices, now, result), result


def test_fast_and_per_reading_validation_agree(city: Database) -> None:
    """A batch with a non-object in it goes through the per-reading validator only; the same
    readings without it take the column-wise path: same readings kept, same refusals."""
    now = at(10)
    rows = _messy(now)
    fast, r_fast = _validated(city, rows, now)
    slow, r_slow = _validated(city, [*rows, "not an object"], now)
    assert [x.to_dict() for x in r_slow.rejected[:-1]] == [x.to_dict() for x in r_fast.rejected]
    assert r_slow.rejected[-1].reason == "a reading must be an object"
    assert fast.series == slow.series
    assert fast.t.tolist() == slow.t.tolist() and fast.v.tolist() == slow.v.tolist()
    assert r_fast.duplicates == r_slow.duplicates == 1
    reasons = {x.index: x.reason for x in r_fast.rejected}
    assert sorted(reasons) == [3, 4, 8, 9, 10, 12, 13, 14]
    assert "non-numeric value True" in reasons[3]
    assert "non-numeric" in reasons[4]
    assert reasons[8] == "payload is not valid JSON"
    assert "time zone" in reasons[9]
    assert "unknown unit" in reasons[10]
    assert "physically impossible" in reasons[12] and "physically impossible" in reasons[14]
    assert "unknown measurand 'cover'" in reasons[13]
    # kept, in key order: the first of the duplicated key wins
    with city.session() as s:
        ch4 = device(s, CH4).id
    got = [(d, m) for d, m in fast.series]
    assert (ch4, "ch4") in got
    s_ch4 = got.index((ch4, "ch4"))
    a, b = int(fast.bounds[s_ch4]), int(fast.bounds[s_ch4 + 1])
    assert fast.v[a:b].tolist() == [0.4, 1.5, 2.5, 0.6, 0.7]
    assert np.all(np.diff(fast.t[a:b]) > 0)


def test_rollup_of_a_batch() -> None:
    base = 1_700_000_000_000_000 - 1_700_000_000_000_000 % 3_600_000_000
    t = np.array([base, base + 30_000_000, base + 61_000_000, base], np.int64)
    b = Batch.of(
        [(1, "ponding"), (2, "ponding")],
        np.array([0, 0, 0, 1], np.int64),
        t,
        np.array([1.0, 3.0, 2.0, 5.0]),
    )
    m = rollup(b, 60_000_000)
    assert m.sid.tolist() == [0, 0, 1]
    assert m.bucket.tolist() == [base, base + 60_000_000, base]
    assert (m.vmin.tolist(), m.vmax.tolist(), m.vsum.tolist(), m.n.tolist()) == (
        [1.0, 2.0, 5.0],
        [3.0, 2.0, 5.0],
        [4.0, 2.0, 5.0],
        [2, 1, 1],
    )
    assert b.last().tolist() == [2, 3]


# --------------------------------------------------------------------------- storage


def test_batch_mixing_stored_and_new_readings(city: Database) -> None:
    """Readings stored before are skipped (the careful path) while the new ones of the same
    batch are stored, rolled up and counted once."""
    first = [reading(PONDING, "ponding", at(0) + timedelta(seconds=10 * i), 1.0) for i in range(3)]
    r1 = ingest(city, first, at(1))
    assert (r1.stored, r1.duplicates) == (3, 0)
    mixed = [
        *first[1:],  # stored before
        reading(PONDING, "ponding", at(0) + timedelta(seconds=40), 2.0),
        reading(PONDING, "ponding", at(2), 4.0),
        reading("WL-YLD-002", "ponding", at(2), 7.0),
    ]
    r2 = ingest(city, mixed, at(3))
    assert (r2.accepted, r2.stored, r2.duplicates) == (5, 3, 2)
    with city.session() as s:
        d = device(s, PONDING)
        assert d.accepted_count == 5
        assert s.scalar(select(func.count()).select_from(Reading)) == 6
        m1 = {
            r.bucket: (r.vmin, r.vmax, r.vsum, r.n)
            for r in s.scalars(select(Rollup1m).where(Rollup1m.device_id == d.id))
        }
        assert m1 == {at(0): (1.0, 2.0, 5.0, 4), at(2): (4.0, 4.0, 4.0, 1)}
        h1 = s.scalars(select(Rollup1h).where(Rollup1h.device_id == d.id)).one()
        assert (h1.n, h1.vsum) == (5, 9.0)
        latest = s.scalars(select(Latest).where(Latest.device_id == d.id)).one()
        assert (latest.ts, latest.value) == (at(2), 4.0)
        other = device(s, "WL-YLD-002")
        assert other.accepted_count == 1
        # the rule saw every new reading: its state is at the newest one
        st = s.scalars(select(RuleState).where(RuleState.device_id == d.id)).one()
        assert (st.last_ts, st.last_value) == (at(2), 4.0)


def test_a_big_batch_of_many_series(city: Database) -> None:
    """Thousands of readings of every demo device in one batch: stored, rolled up per series
    and minute, latest values, no alarm from normal values."""
    with city.session() as s:
        devs = [(d.code, list(d.measurands)) for d in s.scalars(select(Device))]
    normal = {"ch4": 0.2, "pressure": 0.4, "ponding": 1.0, "strain": 50.0, "cover": 0.0}
    rows = [
        reading(code, m, at(0) + timedelta(seconds=15 * k), normal.get(m, 1.0))
        for k in range(8)
        for code, ms in devs
        for m in ms
    ]
    r = ingest(city, rows, at(3))
    assert (r.stored, r.rejected, r.alarms_raised) == (len(rows), [], [])
    n_series = sum(len(ms) for _, ms in devs)
    with city.session() as s:
        assert s.scalar(select(func.count()).select_from(Latest)) == n_series
        assert s.scalar(select(func.count()).select_from(Rollup1m)) == 2 * n_series
        assert s.scalar(select(func.sum(Rollup1h.n))) == len(rows)


# --------------------------------------------------------------------------- rules


TWINS = (
    # device type, measurand, normal value, spread, excursion
    ("pressure_gauge", "pressure", 0.40, 0.01, (0.05, 0.12, 0.25)),
    ("strain_gauge", "strain", 0.0, 60.0, (-900.0, 450.0, 650.0)),
    ("level_gauge", "level", 1.5, 0.2, (3.2, 4.5, 2.9)),
    ("deflection_sensor", "deflection", 5.0, 2.0, (25.0, 45.0, 19.0)),
)


def _twins(city: Database, n: int) -> list[tuple[str, str, str]]:
    """``n`` pairs of new devices per type (same place, same rules)."""
    now = utcnow()
    out, rows = [], []
    with city.session() as s:
        fac = s.scalars(select(Facility).order_by(Facility.id)).first()
        assert fac is not None
        for dtype, m, *_ in TWINS:
            for k in range(n):
                pair = [f"TWIN-{dtype}-{k}-{side}" for side in ("A", "B")]
                rows += [
                    {
                        "code": code,
                        "name": code,
                        "device_type": dtype,
                        "facility_id": fac.id,
                        "measurands": [m],
                        "lon": fac.lon,
                        "lat": fac.lat,
                        "grid_code": fac.grid_code,
                        "interval_s": 60,
                        "status": "online",
                        "accepted_count": 0,
                        "rejected_count": 0,
                        "created_at": now,
                        "version": 1,
                    }
                    for code in pair
                ]
                out.append((m, pair[0], pair[1]))
        s.execute(insert(Device), rows)
    return out


def _series(
    rng: np.random.Generator, normal: float, spread: float, excursion: tuple[float, ...]
) -> list[tuple[float, float]]:
    """(seconds from T0, value): irregular sampling, noise, episodes away from normal (held,
    dipping back, recovering through the hysteresis band), some readings late."""
    t, out = 0.0, []
    episode = 0
    for _ in range(90):
        t += float(rng.choice([1.0, 5.0, 12.0, 29.0, 30.0, 31.0, 45.0, 90.0]))
        if episode == 0 and rng.random() < 0.08:
            episode = int(rng.integers(2, 9))
        if episode:
            episode -= 1
            v = float(rng.choice(excursion)) + float(rng.normal(0, spread))
        else:
            v = normal + float(rng.normal(0, spread))
        out.append((t, round(v, 4)))
    late = rng.choice(len(out), 6, replace=False)
    for i in late.tolist():
        out.append((out[i][0] - 0.5, out[i][1]))  # out of order, between two readings
    return out


@pytest.mark.parametrize("seed", [3, 11])
def test_screening_matches_reading_by_reading(
    city: Database, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twin devices get the same readings in the same batches: device A through the
    column-wise screening, device B with every reading evaluated one by one. Their rule
    states and alarms must end up the same."""
    rng = np.random.default_rng(seed)
    twins = _twins(city, 2)
    spec = {m: (normal, spread, exc) for _, m, normal, spread, exc in TWINS}
    data = {a: _series(rng, *spec[m]) for m, a, _ in twins}
    # batches: consecutive slices of every series' arrival order, of random sizes
    cuts = sorted(set(rng.integers(1, 96, 12).tolist()))
    bounds = [0, *cuts, 96]
    for lo, hi in pairwise(bounds):
        now = T0 + timedelta(hours=3)
        for side in (0, 1):
            rows = [
                reading((a, b)[side], m, T0 + timedelta(seconds=t), v)
                for m, a, b in twins
                for t, v in data[a][lo:hi]
            ]
            if not rows:
                continue
            monkeypatch.setattr(rules_mod, "SCREEN", side == 0)
            with city.session() as s:
                r = ingest_readings(s, rows, now)
            assert not r.rejected
    monkeypatch.setattr(rules_mod, "SCREEN", True)

    def snapshot(code: str) -> tuple[Any, ...]:
        with city.session() as s:
            d = device(s, code)
            states = sorted(
                (x.rule_id, x.in_breach, x.breach_since, x.last_ts, x.last_value)
                for x in s.scalars(select(RuleState).where(RuleState.device_id == d.id))
            )
            alarms = [
                (
                    a.rule_id,
                    a.level,
                    a.status,
                    a.trigger_ts,
                    a.trigger_value,
                    a.last_ts,
                    a.last_value,
                    a.repeat_count,
                    a.normal,
                    a.normal_at,
                )
                for a in s.scalars(select(Alarm).where(Alarm.device_id == d.id).order_by(Alarm.id))
            ]
            return states, alarms

    raised = 0
    for _, a, b in twins:
        sa, sb = snapshot(a), snapshot(b)
        assert sa == sb, (a, b)
        assert sa[0], a  # every twin has rule states
        raised += len(sa[1])
    assert raised >= 3  # the episodes did raise alarms (the comparison is not vacuous)


def test_hot_readings_split_a_batch_by_device(city: Database) -> None:
    """The MQTT priority: messages of devices with a reading past the least severe threshold
    of some value rule go first (all of that device's messages, in order)."""
    from cityops.monitoring.mqtt import HotReadings

    hot = HotReadings()
    assert hot.stale()
    hot.refresh(city)
    assert not hot.stale()
    assert {"ch4", "ponding", "pressure", "strain"} <= set(hot.tests)

    def msg(code: str, m: Any, v: Any) -> list[dict[str, Any]]:
        return [{"device_code": code, "measurand": m, "value": v, "ts": "x"}]

    assert hot.any(msg(CH4, "ch4", 1.0)) and not hot.any(msg(CH4, "ch4", 0.99))
    assert hot.any(msg(PRESSURE, "pressure", "0.1"))  # below 0.15 MPa, as text
    assert hot.any(msg("BRG-001-S1", "strain", -301.0))  # outside ±300
    assert not hot.any(msg(CH4, ["ch4"], 50.0)) and not hot.any(msg(CH4, "ch4", "abc"))
    parsed = [
        msg(PONDING, "ponding", 3.0),
        msg(CH4, "ch4", 0.2),
        msg(PONDING, "ponding", 4.0),
        msg(CH4, "ch4", 30.0),
        [],
    ]
    assert hot.split(parsed) == [[1, 3], [0, 2, 4]]
    assert hot.split(parsed[:3]) == [[0, 1, 2]]
    assert hot.split(parsed[1:2] + parsed[3:4]) == [[0, 1]]

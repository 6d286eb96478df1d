"""Lifeline monitoring at the service level: intake validation, idempotency, rollups, rules
(levels, duration, hysteresis, rate of change, offline), the alarm lifecycle with its urgent
case, and the flood-command helpers."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text

from cityops.cases.models import Case, CaseEvent, Notification
from cityops.cases.storage import LocalStorage
from cityops.core.db import Database
from cityops.core.errors import Forbidden, Invalid
from cityops.monitoring import service
from cityops.monitoring.ingest import enforce_retention
from cityops.monitoring.models import (
    Alarm,
    AlarmEvent,
    Latest,
    Reading,
    Rollup1h,
    Rollup1m,
    Rule,
)
from tests.factories import principal
from tests.monitoring_support import (
    T0,
    alarms_of,
    at,
    close_case,
    device,
    facility_of,
    ingest,
    open_alarm,
    reading,
)

CH4 = "GAS-VW-001-CH4"
PONDING = "WL-YLD-001"
PRESSURE = "WAT-WM-001-P"
STRAIN = "BRG-001-S1"


@pytest.fixture
def store(tmp_path) -> LocalStorage:  # type: ignore[no-untyped-def]
    return LocalStorage(tmp_path / "att")


def _rule(s: Any, name: str) -> Rule:
    return s.scalars(select(Rule).where(Rule.name == name)).one()


# --------------------------------------------------------------------------- intake


def test_bad_readings_are_refused_one_by_one_and_good_ones_kept(city: Database) -> None:
    now = at(10)
    rows = [
        reading(CH4, "ch4", at(1), 0.4, unit="%LEL"),  # good
        reading("NO-SUCH-DEVICE", "ch4", at(1), 0.4),
        reading(CH4, "pressure", at(1), 0.3),  # the methane detector has no pressure
        reading(CH4, "humidity", at(1), 0.3),
        reading(CH4, "ch4", at(2), 0.4, unit="ppm"),
        reading(CH4, "ch4", at(3), "abc"),
        reading(CH4, "ch4", at(4), None),
        reading(CH4, "ch4", at(5), math.nan),
        reading(CH4, "ch4", at(6), math.inf),
        reading(CH4, "ch4", at(7), 140.0),  # > 100 %LEL is impossible
        reading(CH4, "ch4", at(7), -1.0),
        reading(CH4, "ch4", now + timedelta(minutes=6), 0.4),  # > 5 min in the future
        reading(CH4, "ch4", "2026-11-17T01:08:00", 0.4),  # no time zone
        reading(CH4, "temp", at(2), 18.5, unit="°C"),  # good
        reading(CH4, "ch4", now + timedelta(minutes=4), 0.5),  # 4 min ahead: still fine
    ]
    r = ingest(city, rows, now)
    assert (r.received, r.accepted, r.stored, r.duplicates) == (15, 3, 3, 0)
    reasons = {x.index: x.reason for x in r.rejected}
    assert sorted(reasons) == list(range(1, 13))
    assert "unknown device" in reasons[1]
    assert "unknown measurand 'pressure'" in reasons[2]
    assert "unknown measurand 'humidity'" in reasons[3]
    assert "unknown unit 'ppm'" in reasons[4]
    assert "non-numeric" in reasons[5] and "non-numeric" in reasons[6]
    assert "NaN or infinite" in reasons[7] and "NaN or infinite" in reasons[8]
    assert "physically impossible" in reasons[9] and "physically impossible" in reasons[10]
    assert "5 min ahead" in reasons[11]
    assert "time zone" in reasons[12]
    with city.session() as s:
        d = device(s, CH4)
        # 11 refusals counted on the device (the unknown device has no row to count on)
        assert d.rejected_count == 11 and d.accepted_count == 3
        assert d.last_reject_reason is not None and "time zone" in d.last_reject_reason
        stored = s.execute(
            select(Reading.measurand, Reading.value)
            .where(Reading.device_id == d.id)
            .order_by(Reading.ts)
        ).all()
        assert [(m, v) for m, v in stored] == [("ch4", 0.4), ("temp", 18.5), ("ch4", 0.5)]


def test_duplicates_are_stored_once_and_rolled_up_once(city: Database) -> None:
    rows = [
        reading(PRESSURE, "pressure", at(0) + timedelta(seconds=10), 0.40),
        reading(PRESSURE, "pressure", at(0) + timedelta(seconds=40), 0.42),
        reading(PRESSURE, "pressure", at(1) + timedelta(seconds=5), 0.38),
        # the same key twice in one batch
        reading(PRESSURE, "pressure", at(1) + timedelta(seconds=5), 0.38),
    ]
    r1 = ingest(city, rows, at(2))
    assert (r1.accepted, r1.stored, r1.duplicates) == (4, 3, 1)
    # the whole batch again, the same instants written another way (text, +08:00)
    again = [
        {**x, "ts": x["ts"].astimezone(service.utcnow().tzinfo).isoformat()} for x in rows[:2]
    ] + [reading(PRESSURE, "pressure", "2026-11-17T09:01:05+08:00", 0.38)]
    r2 = ingest(city, again, at(3))
    assert (r2.accepted, r2.stored, r2.duplicates) == (3, 0, 3)
    with city.session() as s:
        d = device(s, PRESSURE)
        assert s.scalar(select(func.count()).select_from(Reading)) == 3
        m1 = {
            r.bucket: (r.vmin, r.vmax, round(r.vsum, 6), r.n)
            for r in s.scalars(select(Rollup1m).where(Rollup1m.device_id == d.id))
        }
        assert m1 == {at(0): (0.40, 0.42, 0.82, 2), at(1): (0.38, 0.38, 0.38, 1)}
        h1 = s.scalars(select(Rollup1h).where(Rollup1h.device_id == d.id)).one()
        assert (h1.bucket, h1.vmin, h1.vmax, h1.n) == (T0, 0.38, 0.42, 3)
        assert abs(h1.vsum / h1.n - 0.4) < 1e-9
        latest = s.scalars(select(Latest).where(Latest.device_id == d.id)).one()
        assert (latest.ts, latest.value) == (at(1) + timedelta(seconds=5), 0.38)
        assert d.accepted_count == 3


def test_latest_values_and_series_for_flood_command(city: Database) -> None:
    ingest(
        city,
        [
            reading(PONDING, "ponding", at(0), 2.0),
            reading(PONDING, "ponding", at(5), 6.0),
            reading("WL-YLD-002", "ponding", at(3), 1.0),
            # a late reading: stored, but not the latest
            reading(PONDING, "ponding", at(2), 4.0),
        ],
        at(6),
    )
    with city.session() as s:
        got = service.latest_values(s, [PONDING, "WL-YLD-002", "WL-YLD-003"], "ponding")
        assert got == {PONDING: (at(5), 6.0), "WL-YLD-002": (at(3), 1.0)}
        assert service.series(s, PONDING, "ponding", at(1), at(5)) == [
            (at(2), 4.0),
            (at(5), 6.0),
        ]


def test_retention_deletes_old_raw_readings_and_keeps_rollups(city: Database) -> None:
    old = T0 - timedelta(days=400)
    ingest(
        city,
        [reading(PONDING, "ponding", old, 3.0), reading(PONDING, "ponding", at(0), 4.0)],
        at(1),
    )
    with city.session() as s:
        assert enforce_retention(s, at(1), days=180) == 1
    with city.session() as s:
        assert [r.value for r in s.scalars(select(Reading))] == [4.0]
        assert s.scalar(select(func.count()).select_from(Rollup1m)) == 2
        # the old minute is still there as a rollup average
        assert service.series(s, PONDING, "ponding", old - timedelta(minutes=1), at(0)) == [
            (old, 3.0),
            (at(0), 4.0),
        ]


# --------------------------------------------------------------------------- alarms


def test_methane_alarm_to_urgent_case_and_clearing(city: Database, store: LocalStorage) -> None:
    """auto-confirmed rule: 报警 → 预警 → 特急 case dispatched to the owner → cleared only when
    the readings are normal AND the case is closed."""
    r = ingest(
        city,
        [reading(CH4, "ch4", at(0), 0.3), reading(CH4, "ch4", at(1), 6.0)],
        at(1),
    )
    assert len(r.alarms_raised) == 1
    with city.session() as s:
        fac = facility_of(s, CH4)
        a = open_alarm(s, CH4)
        assert a is not None
        assert (a.status, a.level, a.trigger_value) == ("active", 3, 6.0)  # 5 ≤ 6 < 10: 三级
        case = s.get(Case, a.case_id)
        assert case is not None
        assert (case.source, case.urgency, case.stage) == ("iot", "特急", "sign")
        assert case.lead_unit_id == fac.owner_unit_id
        assert fac.name in case.description and CH4 in case.description
        ev = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case.id, CaseEvent.action == "iot_alarm")
        ).one()
        assert ev.data is not None and ev.data["alarm_id"] == a.id
        assert ev.data["readings"][-1][1] == 6.0
        # 预警 reached the owner unit's people and the monitors
        notified = set(
            s.scalars(
                select(Notification.user_id).where(
                    Notification.case_id == case.id, Notification.kind == "iot_warning"
                )
            )
        )
        assert principal(s, "monitor1").user_id in notified
        assert any(
            principal(s, u).unit_id == fac.owner_unit_id
            for u in s.scalars(select(service.User.username).where(service.User.id.in_(notified)))
        )
        case_id = case.id

    # worse again while open: the level rises, no second alarm, no second case
    r = ingest(city, [reading(CH4, "ch4", at(2), 30.0)], at(2))
    assert r.alarms_raised == []
    with city.session() as s:
        a = open_alarm(s, CH4)
        assert a is not None and a.level == 1 and a.case_id == case_id
        assert s.scalar(select(func.count()).select_from(Case)) == 1

    # 0.8 %LEL is below the 1 %LEL warning but inside the 0.5 hysteresis band: not normal yet
    ingest(city, [reading(CH4, "ch4", at(3), 0.8)], at(3))
    with city.session() as s:
        a = open_alarm(s, CH4)
        assert a is not None and a.normal is False
    ingest(city, [reading(CH4, "ch4", at(4), 0.2)], at(4))
    with city.session() as s:
        a = open_alarm(s, CH4)
        # normal readings, but the case is still open: the alarm stays
        assert a is not None and a.normal is True and a.status == "active"
        assert service.check_clearances(s, at(5)) == []
    with city.session() as s:
        close_case(s, case_id, store, at(30))
    with city.session() as s:
        assert service.check_clearances(s, at(31)) == [a.id]
    with city.session() as s:
        a2 = s.get(Alarm, a.id)
        assert a2 is not None and a2.status == "cleared" and a2.is_open is None
        actions = list(
            s.scalars(
                select(AlarmEvent.action).where(AlarmEvent.alarm_id == a.id).order_by(AlarmEvent.id)
            )
        )
        assert actions == [
            "raised",
            "confirmed",
            "warning",
            "case",
            "level_up",
            "normal",
            "cleared",
        ]

    # recurrence after clearing: a new alarm linked to the old one, and a new case
    ingest(city, [reading(CH4, "ch4", at(40), 12.0)], at(40))
    with city.session() as s:
        new = open_alarm(s, CH4)
        assert new is not None and new.id != a.id
        assert new.previous_alarm_id == a.id and new.level == 2
        assert new.case_id is not None and new.case_id != case_id


def test_alarm_clears_at_once_when_readings_recover_after_the_case_closed(
    city: Database, store: LocalStorage
) -> None:
    ingest(city, [reading(PONDING, "ponding", at(0), 31.0)], at(0))
    with city.session() as s:
        a = open_alarm(s, PONDING)
        assert a is not None and a.level == 1 and a.status == "active"  # 30 cm: close it
        assert a.case_id is not None
        close_case(s, a.case_id, store, at(20))
    with city.session() as s:
        assert service.check_clearances(s, at(21)) == []  # still flooded
    ingest(city, [reading(PONDING, "ponding", at(25), 12.9)], at(25))  # < 15 - 2
    with city.session() as s:
        a2 = s.get(Alarm, a.id)
        assert a2 is not None and a2.status == "cleared" and a2.cleared_at == at(25)


def test_duration_and_hysteresis(city: Database) -> None:
    with city.session() as s:
        rule = _rule(s, "积水深度超限")
        service.save_rule(s, rule.id, {"duration_s": 300})
    seq = [
        (0, 16.0),  # breach starts
        (2, 17.0),
        (3, 14.0),  # under 15 but within the 2 cm hysteresis: the condition still holds
        (4, 16.0),
    ]
    r = ingest(city, [reading(PONDING, "ponding", at(m), v) for m, v in seq], at(4))
    assert r.alarms_raised == []  # held 4 minutes only
    r = ingest(city, [reading(PONDING, "ponding", at(5), 16.0)], at(5))
    assert len(r.alarms_raised) == 1  # 5 minutes
    with city.session() as s:
        a = open_alarm(s, PONDING)
        assert a is not None and a.trigger_ts == at(5) and a.level == 3
    # a dip past the band resets the duration for the next episode
    other = "WL-YLD-002"
    seq2 = [(0, 20.0), (2, 12.0), (3, 20.0), (7, 20.0)]
    r = ingest(city, [reading(other, "ponding", at(m), v) for m, v in seq2], at(7))
    assert r.alarms_raised == []
    r = ingest(city, [reading(other, "ponding", at(8), 20.0)], at(8))
    assert len(r.alarms_raised) == 1


def test_rate_of_change_burst_main_needs_judgement(city: Database) -> None:
    r = ingest(
        city,
        [
            reading(PRESSURE, "pressure", at(0), 0.40),
            reading(PRESSURE, "pressure", at(1), 0.39),  # 0.01/min: normal
            reading(PRESSURE, "pressure", at(2), 0.36),  # 0.03/min: normal
        ],
        at(2),
    )
    assert r.alarms_raised == []
    r = ingest(city, [reading(PRESSURE, "pressure", at(2.5), 0.30)], at(3))  # 0.12/min
    assert len(r.alarms_raised) == 1
    with city.session() as s:
        a = open_alarm(s, PRESSURE)
        assert a is not None
        assert (a.level, a.status, a.case_id) == (1, "pending", None)  # waits for 研判
        assert s.get(Rule, a.rule_id).name == "管网压力骤降(爆管)"  # type: ignore[union-attr]
        snap_levels = a.snapshot["rule"]["levels"]  # type: ignore[index]
        assert snap_levels == [{"level": 2, "value": 0.05}, {"level": 1, "value": 0.1}]
        # a monitor confirms it: 预警 + case
        service.judge(s, principal(s, "monitor1"), a.id, True, "现场确认爆管", now=at(4))
        assert a.status == "active" and a.case_id is not None
        c = s.get(Case, a.case_id)
        assert c is not None and c.lead_unit_id == facility_of(s, PRESSURE).owner_unit_id


def test_false_alarm_rejection_and_escalation(city: Database) -> None:
    ingest(city, [reading(STRAIN, "strain", at(0), 560.0)], at(0))  # outside ±500: 二级
    with city.session() as s:
        a = open_alarm(s, STRAIN)
        assert a is not None and (a.level, a.status) == (2, "pending")
        with pytest.raises(Forbidden):
            service.judge(s, principal(s, "operator1"), a.id, False, "x", now=at(1))
        with pytest.raises(Invalid):
            service.judge(s, principal(s, "monitor1"), a.id, False, "  ", now=at(1))
        # not judged within 10 minutes: escalated once
        assert service.escalate_unjudged(s, at(9)) == []
        assert service.escalate_unjudged(s, at(11)) == [a.id]
        assert service.escalate_unjudged(s, at(12)) == []
        service.judge(
            s, principal(s, "monitor1"), a.id, False, "车辆荷载瞬时冲击, 误报", now=at(13)
        )
        assert (a.status, a.is_open, a.case_id) == ("rejected", None, None)
        assert a.judgement_note == "车辆荷载瞬时冲击, 误报"
    ingest(city, [reading(STRAIN, "strain", at(14), 100.0)], at(14))
    ingest(city, [reading(STRAIN, "strain", at(20), -820.0)], at(20))
    with city.session() as s:
        old, new = alarms_of(s, STRAIN)
        assert new.previous_alarm_id == old.id and new.level == 1 and new.status == "pending"
        assert s.scalar(select(func.count()).select_from(Case)) == 0


def test_offline_detection_and_recovery(city: Database) -> None:
    silent, alive = "DRN-PS-001-L", "DRN-DP-001-L"  # intervals 60 s and 300 s
    ingest(
        city,
        [reading(silent, "level", at(0), 1.2), reading(alive, "level", at(0), 0.8)],
        at(0),
    )
    with city.session() as s:
        assert service.detect_offline(s, at(2.9)) == []
        raised = service.detect_offline(s, at(3.1))  # 3 × 60 s without data
        ids = {s.get(Alarm, i).device_id for i in raised}  # type: ignore[union-attr]
        assert device(s, silent).id in ids and device(s, alive).id not in ids
        assert device(s, silent).status == "offline"
        assert device(s, alive).status == "online"
        # already offline: no second alarm; the 300 s device is still within 3 × 300 s
        assert service.detect_offline(s, at(4)) == []
    ingest(city, [reading(silent, "level", at(5), 1.3)], at(5))
    with city.session() as s:
        d = device(s, silent)
        assert d.status == "online"
        a = s.scalars(
            select(Alarm).where(Alarm.device_id == d.id).order_by(Alarm.id.desc())
        ).first()
        assert a is not None and a.normal is True and a.status == "pending"
        assert s.get(Rule, a.rule_id).comparator == "offline"  # type: ignore[union-attr]


def test_maintenance_devices_store_but_do_not_alarm(city: Database) -> None:
    with city.session() as s:
        d = device(s, CH4)
        service.save_device(s, d.id, {"status": "maintenance"})
    r = ingest(city, [reading(CH4, "ch4", at(0), 40.0)], at(0))
    assert r.stored == 1 and r.alarms_raised == []


def test_simulated_incidents_raise_their_alarms(city: Database) -> None:
    import numpy as np

    from cityops.monitoring.models import Device as Dev
    from cityops.monitoring.simulate import SimDevice, plan_incidents, readings

    with city.session() as s:
        devs = [
            SimDevice(d.code, d.device_type, list(d.measurands), d.interval_s)
            for d in s.scalars(select(Dev).order_by(Dev.code))
        ]
    plan = plan_incidents(devs, ["methane", "burst", "bridge", "rainstorm"], 60, 120)
    assert {p.kind for p in plan} == {"methane", "burst", "bridge", "rainstorm"}
    rng = np.random.default_rng(1)
    before = readings(devs, at(0), 0.0, plan, rng)  # everything normal
    after = readings(devs, at(3), 180.0, plan, rng)  # every incident at its peak

    def rows(batch: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [{**x, "device_code": c} for c, xs in batch.items() for x in xs]

    r0 = ingest(city, rows(before), at(0))
    assert r0.rejected == [] and r0.alarms_raised == []
    r1 = ingest(city, rows(after), at(3))
    assert r1.rejected == []
    with city.session() as s:
        got = {
            (s.get(Dev, a.device_id).code, a.level)  # type: ignore[union-attr]
            for a in s.scalars(select(Alarm).where(Alarm.id.in_(r1.alarms_raised)))
        }
    burst = next(p for p in plan if p.kind == "burst").devices[0]
    methane = next(p for p in plan if p.kind == "methane").devices[0]
    strain = next(p for p in plan if p.kind == "bridge").devices[0]
    assert (methane, 1) in got  # 35 %LEL
    # the burst takes 0.28 MPa off in the 3 minutes between the readings: ≈ 0.093 MPa/min,
    # past the 0.05 二级 drop rate but short of the 0.1 一级 one
    assert (burst, 2) in got
    assert (strain, 2) in got  # ~650 με
    ponding = sorted(c for c, lvl in got if c.startswith("WL-") and lvl == 1)
    # the storm hits four ponding gauges (and two rain gauges): each at ~38 cm
    # (≥ 30: 一级)
    storm = next(p for p in plan if p.kind == "rainstorm").devices
    expected = sorted(c for c in storm if c.startswith("WL-"))
    assert len(expected) >= 3
    assert ponding == expected


def test_alarm_stands_when_its_case_cannot_be_filed(city: Database) -> None:
    with city.session() as s:
        d = device(s, CH4)
        d.lon, d.lat = 100.0, 10.0  # moved outside every unit grid: create_case refuses
    r = ingest(city, [reading(CH4, "ch4", at(0), 30.0)], at(0))
    assert len(r.alarms_raised) == 1 and r.stored == 1
    with city.session() as s:
        a = open_alarm(s, CH4)
        assert a is not None and (a.status, a.case_id) == ("active", None)
        events = {
            e.action: e.note
            for e in s.scalars(select(AlarmEvent).where(AlarmEvent.alarm_id == a.id))
        }
        assert "outside every unit grid" in (events["case_failed"] or "")
        assert "warning" in events
        assert s.scalar(select(func.count()).select_from(Case)) == 0


def test_monthly_partitions(city: Database) -> None:
    from datetime import UTC, datetime

    from cityops.monitoring.ingest import ensure_partitions

    old = datetime(2026, 1, 15, tzinfo=UTC)  # before the migration's months: default partition
    ingest(city, [reading(PONDING, "ponding", old, 3.0)], at(0))
    with city.session() as s:
        created = ensure_partitions(s, old, months_ahead=1)
        again = ensure_partitions(s, old, months_ahead=1)
    with city.session() as s:
        assert [r.value for r in s.scalars(select(Reading))] == [3.0]
        if city.is_sqlite:
            assert created == [] and again == []
        else:
            assert created == ["monitoring_readings_y2026m01", "monitoring_readings_y2026m02"]
            assert again == []
            n = s.execute(text("SELECT count(*) FROM monitoring_readings_y2026m01")).scalar_one()
            assert n == 1  # moved out of the default partition

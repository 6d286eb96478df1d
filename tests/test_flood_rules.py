"""Pure proposal rules of flood command: rolling rain windows at each signal boundary, the
ponding rule, depth trend/status and the overdue flag. No database, no devices."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cityops.flood.rules import (
    PointDepth,
    RuleSpec,
    ack_overdue,
    average,
    point_status,
    propose_level,
    rolling_max,
    trend,
)

T0 = datetime(2026, 7, 5, 0, 0, tzinfo=UTC)

#: The GUIDE §7 defaults (same rows as migration 0007).
DEFAULTS = [
    RuleSpec(1, "rainfall", 4, window_minutes=720, threshold=50.0),
    RuleSpec(2, "rainfall", 3, window_minutes=360, threshold=50.0),
    RuleSpec(3, "rainfall", 2, window_minutes=180, threshold=50.0),
    RuleSpec(4, "rainfall", 1, window_minutes=180, threshold=100.0),
    RuleSpec(5, "ponding", 2, relative_to="close"),
]


def every(minutes: int, values: list[float], start: datetime = T0) -> list[tuple[datetime, float]]:
    return [(start + timedelta(minutes=minutes * (i + 1)), v) for i, v in enumerate(values)]


def level(rain: dict[str, list[tuple[datetime, float]]], depths: list[PointDepth] | None = None):  # type: ignore[no-untyped-def]
    return propose_level(DEFAULTS, rain, depths or []).level


def test_three_hours_49_9_mm_is_no_signal_but_50_mm_is_orange() -> None:
    # 18 ten-minute readings = 3 h: 17 × 2.8 = 47.6 mm plus 2.3 → 49.9 mm; plus 2.4 → 50.0 mm
    below = every(10, [2.8] * 17 + [2.3])
    at = every(10, [2.8] * 17 + [2.4])
    assert rolling_max(below, timedelta(hours=3))[0] == 49.9
    assert level({"RG-1": below}) is None  # 49.9 mm in 3, 6 and 12 h: no rule fires
    got = propose_level(DEFAULTS, {"RG-1": at}, [])
    assert got.level == 2  # Ⅱ 橙
    # the 3-, 6- and 12-hour 50 mm rules all fire; the 100 mm red rule does not
    assert [r["rule_id"] for r in got.reasons] == [3, 2, 1]
    assert got.reasons[0]["rain_mm"] == 50.0
    assert got.reasons[0]["window_end"] == (T0 + timedelta(hours=3)).isoformat()
    assert got.reasons[0]["gauge"] == "RG-1"


def test_three_hours_99_9_mm_is_orange_100_mm_is_red() -> None:
    assert level({"RG-1": every(60, [40.0, 40.0, 19.9])}) == 2
    assert level({"RG-1": every(60, [40.0, 40.0, 20.0])}) == 1


def test_windows_are_half_open_so_a_reading_w_ago_falls_out() -> None:
    # 30 mm at 01:00 and 20 mm at 04:00: the 3-hour window ending 04:00 is (01:00, 04:00]
    series = [(T0 + timedelta(hours=1), 30.0), (T0 + timedelta(hours=4), 20.0)]
    assert rolling_max(series, timedelta(hours=3)) == (30.0, T0 + timedelta(hours=1))
    assert rolling_max(series, timedelta(hours=6)) == (50.0, T0 + timedelta(hours=4))
    assert level({"RG-1": series}) == 3  # Ⅲ 黄 (6 h ≥ 50), not Ⅱ
    # one minute later the second reading is inside the same 3-hour window
    series[1] = (T0 + timedelta(hours=3, minutes=59), 20.0)
    assert level({"RG-1": series}) == 2


def test_rolling_window_finds_the_wettest_three_hours_in_a_longer_series() -> None:
    # hourly 10, 20, 20, 10, 5, 15: 3-hour sums 10, 30, 50, 50, 35, 30 → first 50 ends at 03:00
    series = every(60, [10.0, 20.0, 20.0, 10.0, 5.0, 15.0])
    assert rolling_max(series, timedelta(hours=3)) == (50.0, T0 + timedelta(hours=3))
    assert rolling_max(list(reversed(series)), timedelta(hours=3))[0] == 50.0  # order-free


def test_twelve_hours_blue_and_six_hours_yellow_boundaries() -> None:
    # 12 hourly readings of 4.2 mm = 50.4 mm in 12 h, 25.2 in 6 h, 12.6 in 3 h → Ⅳ 蓝
    assert level({"RG-1": every(60, [4.2] * 12)}) == 4
    assert level({"RG-1": every(60, [4.1] * 12)}) is None  # 49.2 mm
    # 6 hourly readings of 8.4 = 50.4 mm in 6 h (25.2 in 3 h) → Ⅲ 黄
    assert level({"RG-1": every(60, [8.4] * 6)}) == 3
    assert level({"RG-1": every(60, [8.3] * 6)}) is None  # 49.8 mm


def test_since_ignores_windows_that_ended_earlier() -> None:
    storm = every(60, [40.0, 40.0, 20.0])  # 100 mm ending 03:00
    later = [(T0 + timedelta(hours=10), 1.0)]
    series = storm + later
    assert propose_level(DEFAULTS, {"RG-1": series}, []).level == 1
    # evaluating from 09:30 on: the 12-hour window ending 10:00 still holds 101 mm (Ⅳ),
    # the 3- and 6-hour windows ending then hold 1 mm
    got = propose_level(DEFAULTS, {"RG-1": series}, [], since=T0 + timedelta(hours=9, minutes=30))
    assert got.level == 4
    assert got.reasons[0]["rain_mm"] == 101.0


def test_the_wettest_gauge_is_reported() -> None:
    got = propose_level(
        DEFAULTS, {"RG-1": every(60, [20.0, 20.0, 10.0]), "RG-2": every(60, [30.0, 30.0])}, []
    )
    assert got.level == 2
    assert got.reasons[0]["gauge"] == "RG-2" and got.reasons[0]["rain_mm"] == 60.0


def test_ponding_at_close_depth_proposes_at_least_orange() -> None:
    at = T0 + timedelta(hours=1)
    a = PointDepth("YLD-001", 29.9, at)
    assert level({}, [a]) is None
    b = PointDepth("YLD-001", 30.0, at)
    got = propose_level(DEFAULTS, {}, [b, PointDepth("YLD-002", 12.0, at)])
    assert got.level == 2
    assert got.reasons[0]["points"] == [{"point": "YLD-001", "depth_cm": 30.0, "limit_cm": 30.0}]
    # relative to each point's own close depth: 35 cm at a point closed at 40 cm is not enough
    assert level({}, [PointDepth("YLD-006", 35.0, at, warn_cm=20.0, close_cm=40.0)]) is None
    # heavy rain (red) and ponding (orange): the higher level wins
    assert level({"RG-1": every(60, [50.0, 50.0])}, [b]) == 1


def test_editable_ponding_rule_with_absolute_depth_and_several_points() -> None:
    rules = [RuleSpec(9, "ponding", 1, threshold=50.0, min_points=2)]
    at = T0
    one = [PointDepth("A", 55.0, at), PointDepth("B", 49.0, at)]
    two = [PointDepth("A", 55.0, at), PointDepth("B", 50.0, at)]
    assert propose_level(rules, {}, one).level is None
    assert propose_level(rules, {}, two).level == 1
    disabled = [RuleSpec(9, "ponding", 1, threshold=50.0, min_points=2, enabled=False)]
    assert propose_level(disabled, {}, two).level is None


def test_trend_status_overdue_average() -> None:
    assert trend([(T0, 10.0), (T0 + timedelta(minutes=5), 12.5)]) == "rising"
    assert trend([(T0, 10.0), (T0 + timedelta(minutes=5), 9.0)]) == "falling"
    assert trend([(T0, 10.0), (T0 + timedelta(minutes=5), 10.5)]) == "steady"
    assert trend([(T0, 10.0)]) is None
    assert point_status(14.9, 15.0, 30.0) == "normal"
    assert point_status(15.0, 15.0, 30.0) == "warning"
    assert point_status(30.0, 15.0, 30.0) == "closed"
    assert point_status(None, 15.0, 30.0) == "unknown"
    due = T0 + timedelta(minutes=10)
    assert not ack_overdue(due, T0 + timedelta(minutes=10), T0 + timedelta(hours=1))
    assert ack_overdue(due, T0 + timedelta(minutes=11), T0 + timedelta(hours=1))
    assert not ack_overdue(due, None, T0 + timedelta(minutes=9))
    assert ack_overdue(due, None, T0 + timedelta(minutes=10, seconds=1))
    assert average([120.0, None, 600.0]) == 360.0
    assert average([None]) is None

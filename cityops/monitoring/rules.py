"""Alarm rules (报警规则), evaluated once per intake batch.

A rule applies to a device type or to one device (a device's own rule for a measurand and
comparator replaces its type's). Comparators: ``above`` / ``below`` a threshold, ``outside``
a band, ``drop`` / ``rise`` per minute (rate of change against the previous reading at least
30 s older, e.g. the
pressure drop of a burst main), and ``offline`` (no data for N× the sampling interval, checked
by a job). Each rule has one threshold per level (1 = 一级 红, the most severe); a reading's
level is the most severe one it reaches.

Per (device, rule) a state row remembers whether the condition holds and since when:
the condition must hold for ``duration_s`` before an alarm is raised ("for N minutes");
it ends only when the value is back inside the least severe threshold by ``hysteresis``
(values in between keep the condition and its duration running). Evaluation is batched:
rules, states and open alarms of the batch's devices are read with one query each and the
states written back with one statement.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cityops.monitoring.models import Alarm, Rule, RuleState

if TYPE_CHECKING:
    from cityops.monitoring.ingest import DeviceInfo, IngestResult

RATE = frozenset({"drop", "rise"})
#: A rate of change is measured against a reference reading at least this much older
#: (high-frequency sampling noise is not a burst).
RATE_WINDOW_S = 30.0


@dataclass
class _S:
    """Working copy of a rule state (naive UTC times)."""

    in_breach: bool
    breach_since: datetime | None
    last_ts: datetime | None
    last_value: float | None


def level_of(rule: Rule, x: float | None) -> int | None:
    """The most severe level ``x`` (value, or rate per minute) reaches; None if none."""
    if x is None:
        return None
    comp = rule.comparator
    best: int | None = None
    for lv in rule.levels:
        if comp == "outside":
            hit = x < float(lv["low"]) or x > float(lv["high"])
        elif comp == "below":
            hit = x <= float(lv["value"])
        else:  # above, drop, rise
            hit = x >= float(lv["value"])
        if hit and (best is None or int(lv["level"]) < best):
            best = int(lv["level"])
    return best


def is_clear(rule: Rule, x: float | None) -> bool:
    """Whether ``x`` is back to normal: inside the least severe threshold by the hysteresis."""
    if x is None:
        return False
    h = rule.hysteresis or 0.0
    comp = rule.comparator
    if comp == "outside":
        low = max(float(lv["low"]) for lv in rule.levels)
        high = min(float(lv["high"]) for lv in rule.levels)
        return low + h < x < high - h
    if comp == "below":
        return x > max(float(lv["value"]) for lv in rule.levels) + h
    return x < min(float(lv["value"]) for lv in rule.levels) - h


class Compiled:
    """A rule's thresholds as plain tuples, most severe level first (fast per reading)."""

    __slots__ = ("clear_high", "clear_low", "comparator", "duration_s", "id", "levels", "rule")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.id = rule.id
        self.comparator = rule.comparator
        self.duration_s = float(rule.duration_s or 0)
        lv = sorted(rule.levels, key=lambda x: int(x["level"]))
        h = rule.hysteresis or 0.0
        if self.comparator == "outside":
            self.levels = tuple((int(x["level"]), float(x["low"]), float(x["high"])) for x in lv)
            self.clear_low = max(float(x["low"]) for x in lv) + h
            self.clear_high = min(float(x["high"]) for x in lv) - h
        else:
            self.levels = tuple((int(x["level"]), float(x["value"]), 0.0) for x in lv)
            vals = [float(x["value"]) for x in lv]
            self.clear_low = max(vals) + h  # below: clear above this
            self.clear_high = min(vals) - h  # above/drop/rise: clear below this

    def level(self, x: float | None) -> int | None:
        if x is None:
            return None
        c = self.comparator
        if c == "outside":
            for lvl, low, high in self.levels:
                if x < low or x > high:
                    return lvl
        elif c == "below":
            for lvl, t, _ in self.levels:
                if x <= t:
                    return lvl
        else:
            for lvl, t, _ in self.levels:
                if x >= t:
                    return lvl
        return None

    def never(self, pts: list[tuple[datetime, float]]) -> bool:
        """Whether none of the values reaches any level (for the fast path)."""
        c = self.comparator
        if c == "outside":
            lo, hi = min(v for _, v in pts), max(v for _, v in pts)
            return all(low <= lo and hi <= high for _, low, high in self.levels)
        if c == "below":
            return min(v for _, v in pts) > max(t for _, t, _ in self.levels)
        return max(v for _, v in pts) < min(t for _, t, _ in self.levels)

    def clear(self, x: float | None) -> bool:
        if x is None:
            return False
        c = self.comparator
        if c == "outside":
            return self.clear_low < x < self.clear_high
        if c == "below":
            return x > self.clear_low
        return x < self.clear_high


def rules_for(
    session: Session, devices: list[DeviceInfo], measurands: set[str]
) -> dict[int, list[Rule]]:
    """Active value rules of each device (device rules replace type rules of the same
    measurand and comparator)."""
    if not devices:
        return {}
    ids = [d.id for d in devices]
    types = sorted({d.device_type for d in devices})
    rows = session.scalars(
        select(Rule).where(
            Rule.active.is_(True),
            Rule.comparator != "offline",
            Rule.measurand.in_(sorted(measurands)),
            or_(Rule.device_id.in_(ids), Rule.device_type.in_(types) & Rule.device_id.is_(None)),
        )
    ).all()
    by_type: dict[str, list[Rule]] = defaultdict(list)
    by_dev: dict[int, list[Rule]] = defaultdict(list)
    for r in rows:
        if r.device_id is not None:
            by_dev[r.device_id].append(r)
        elif r.device_type is not None:
            by_type[r.device_type].append(r)
    out: dict[int, list[Rule]] = {}
    for d in devices:
        own = by_dev.get(d.id, [])
        keys = {(r.measurand, r.comparator) for r in own}
        out[d.id] = own + [
            r for r in by_type.get(d.device_type, []) if (r.measurand, r.comparator) not in keys
        ]
    return out


def evaluate_batch(
    session: Session,
    devices: dict[int, DeviceInfo],
    good: dict[tuple[int, str, datetime], float],
    now: datetime,
    result: IngestResult,
) -> None:
    """Evaluate the rules on a batch of valid readings (naive-UTC keyed)."""
    from cityops.monitoring import service

    series: dict[tuple[int, str], list[tuple[datetime, float]]] = defaultdict(list)
    for (d, m, ts), v in good.items():
        series[(d, m)].append((ts, v))
    active = [
        devices[d]
        for d in {d for d, _ in series}
        if d in devices and devices[d].status != "maintenance"
    ]
    # devices coming back: their offline alarm's readings are normal again
    back = [d.id for d in active if d.status == "offline"]
    if back:
        service.offline_recovered(session, back, now, result)
    rules = rules_for(session, active, {m for _, m in series})
    if not any(rules.values()):
        return
    ids = [d for d, rs in rules.items() if rs]
    states: dict[tuple[int, int], _S] = {}
    st_t = RuleState.__table__.c
    for i in range(0, len(ids), 500):
        for row in session.execute(
            select(
                st_t.device_id,
                st_t.rule_id,
                st_t.in_breach,
                st_t.breach_since,
                st_t.last_ts,
                st_t.last_value,
            ).where(st_t.device_id.in_(ids[i : i + 500]))
        ):
            states[(row.device_id, row.rule_id)] = _S(
                bool(row.in_breach), _naive(row.breach_since), _naive(row.last_ts), row.last_value
            )
    open_alarms: dict[tuple[int, int], Alarm] = {}
    for i in range(0, len(ids), 500):
        for a in session.scalars(
            select(Alarm).where(Alarm.device_id.in_(ids[i : i + 500]), Alarm.is_open == 1)
        ):
            open_alarms[(a.device_id, a.rule_id)] = a
    compiled: dict[int, Compiled] = {}
    changed: dict[tuple[int, int], _S] = {}
    for dev_id in ids:
        dev = devices[dev_id]
        for rule_obj in rules[dev_id]:
            rule = compiled.get(rule_obj.id)
            if rule is None:
                rule = compiled[rule_obj.id] = Compiled(rule_obj)
            pts = series.get((dev_id, rule_obj.measurand or ""))
            if not pts:
                continue
            s = states.get((dev_id, rule.id)) or _S(False, None, None, None)
            if not s.in_breach and rule.comparator not in RATE and rule.never(pts):
                # fast path, the usual case: no reading of the batch comes near a threshold
                last = max(pts)
                if s.last_ts is None or last[0] > s.last_ts:
                    s.last_ts, s.last_value = last
                    changed[(dev_id, rule.id)] = s
                continue
            touched = False
            for ts, v in sorted(pts):
                last_ts = s.last_ts
                if last_ts is not None and ts <= last_ts:
                    continue  # late or already evaluated
                x: float | None = v
                if rule.comparator in RATE:
                    if last_ts is None or s.last_value is None:
                        x = None
                    else:
                        secs = (ts - last_ts).total_seconds()
                        if secs < RATE_WINDOW_S:
                            continue  # too close to the reference reading to be a rate
                        minutes = secs / 60.0
                        delta = v - s.last_value
                        x = (-delta if rule.comparator == "drop" else delta) / minutes
                s.last_ts, s.last_value = ts, v
                touched = True
                lvl = rule.level(x)
                key = (dev_id, rule.id)
                if lvl is not None or (s.in_breach and not rule.clear(x)):
                    if not s.in_breach or s.breach_since is None:
                        s.in_breach, s.breach_since = True, ts
                    held = (ts - s.breach_since).total_seconds()
                    if lvl is not None and held >= rule.duration_s:
                        alarm = open_alarms.get(key)
                        aware = ts.replace(tzinfo=UTC)
                        if alarm is None:
                            alarm = service.raise_alarm(session, dev, rule.rule, lvl, aware, v, now)
                            open_alarms[key] = alarm
                            result.alarms_raised.append(alarm.id)
                        elif (
                            service.alarm_repeat(session, alarm, lvl, aware, v, now)
                            and alarm.id not in result.alarms_updated
                        ):
                            result.alarms_updated.append(alarm.id)
                elif s.in_breach:
                    s.in_breach, s.breach_since = False, None
                    alarm = open_alarms.get(key)
                    if alarm is not None:
                        service.alarm_normal(session, alarm, ts.replace(tzinfo=UTC), v, now)
                        if alarm.is_open != 1:
                            open_alarms.pop(key, None)
                        if alarm.id not in result.alarms_updated:
                            result.alarms_updated.append(alarm.id)
            if touched:
                changed[(dev_id, rule.id)] = s
    if changed:
        _save_states(session, changed)


def _naive(d: datetime | None) -> datetime | None:
    return None if d is None else d.astimezone(UTC).replace(tzinfo=None)


def _save_states(session: Session, changed: dict[tuple[int, int], _S]) -> None:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO monitoring_rule_states (device_id, rule_id, in_breach, breach_since,"
            " last_ts, last_value) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (device_id,"
            " rule_id) DO UPDATE SET in_breach = excluded.in_breach, breach_since ="
            " excluded.breach_since, last_ts = excluded.last_ts, last_value = excluded.last_value",
            [
                (d, r, s.in_breach, s.breach_since, s.last_ts, s.last_value)
                for (d, r), s in changed.items()
            ],
        )
        return
    from cityops.monitoring.ingest import sqlite_ts

    memo: dict[datetime, str] = {}

    def fmt(t: datetime | None) -> str | None:
        if t is None:
            return None
        x = memo.get(t)
        if x is None:
            x = memo[t] = sqlite_ts(t)
        return x

    conn.exec_driver_sql(
        "INSERT INTO monitoring_rule_states (device_id, rule_id, in_breach, breach_since,"
        " last_ts, last_value) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, rule_id)"
        " DO UPDATE SET in_breach = excluded.in_breach, breach_since = excluded.breach_since,"
        " last_ts = excluded.last_ts, last_value = excluded.last_value",
        [
            (d, r, int(s.in_breach), fmt(s.breach_since), fmt(s.last_ts), s.last_value)
            for (d, r), s in changed.items()
        ],
    )

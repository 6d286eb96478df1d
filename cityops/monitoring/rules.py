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
(values in between keep the condition and its duration running).

Evaluation is batched and column-wise (numpy, over the :class:`~cityops.monitoring.ingest.Batch`
arrays): the rules of the batch's devices are read with one query, the states of every
(device, rule) with one joined query, and a screening decides per (device, rule) whether any
new reading can reach a level — the extremes of the new readings against the least severe
threshold, or for rates the chain of reference readings and the rates between them. Where
none can and the state is not in breach (the usual case) only the state's last reading
moves; the others are evaluated reading by reading (:func:`_evaluate_series`), which is what
raises, repeats and ends alarms (open alarms are read only for those). The states are
written back with one statement, in key order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cityops.monitoring.ingest import Batch, datetimes, fetch_all, from_us, to_us
from cityops.monitoring.models import Alarm, Rule

if TYPE_CHECKING:
    from cityops.monitoring.ingest import DeviceInfo, IngestResult

RATE = frozenset({"drop", "rise"})
#: A rate of change is measured against a reference reading at least this much older
#: (high-frequency sampling noise is not a burst).
RATE_WINDOW_S = 30.0
#: Column-wise screening of the batch (off only in tests, to compare it with evaluating every
#: reading one by one).
SCREEN = True
#: :data:`RATE_WINDOW_S` in microseconds.
RATE_WINDOW_US = int(RATE_WINDOW_S * 1_000_000)


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


def reach(comparator: str, levels: list[dict[str, Any]]) -> tuple[float, float]:
    """The least severe thresholds of a rule: a value (or rate) reaches some level iff it is
    ≥ low (above, drop, rise), ≤ high (below), or < low or > high (outside)."""
    inf = float("inf")
    if comparator == "outside":
        return max(float(x["low"]) for x in levels), min(float(x["high"]) for x in levels)
    vals = [float(x["value"]) for x in levels]
    if comparator == "below":
        return -inf, max(vals)
    return min(vals), inf


_ABOVE, _BELOW, _OUTSIDE, _DROP, _RISE = range(5)
_KIND = {"above": _ABOVE, "below": _BELOW, "outside": _OUTSIDE, "drop": _DROP, "rise": _RISE}


class Compiled:
    """A rule's thresholds as plain tuples, most severe level first (fast per reading)."""

    __slots__ = (
        "clear_high",
        "clear_low",
        "comparator",
        "duration_s",
        "id",
        "kind",
        "levels",
        "measurand",
        "reach_high",
        "reach_low",
        "rule",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.id = rule.id
        self.comparator = rule.comparator
        self.measurand = rule.measurand or ""
        self.kind = _KIND.get(self.comparator, _ABOVE)
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
        self.reach_low, self.reach_high = reach(self.comparator, rule.levels)

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
    # a device's own rules are few: with many devices, fetch them all rather than bind
    # thousands of ids
    own = Rule.device_id.in_(ids) if len(ids) <= 200 else Rule.device_id.is_not(None)
    rows = session.scalars(
        select(Rule).where(
            Rule.active.is_(True),
            Rule.comparator != "offline",
            Rule.measurand.in_(sorted(measurands)),
            or_(own, Rule.device_type.in_(types) & Rule.device_id.is_(None)),
        )
    ).all()
    by_type: dict[str, list[Rule]] = defaultdict(list)
    by_dev: dict[int, list[Rule]] = defaultdict(list)
    for r in rows:
        if r.device_id is not None:
            by_dev[r.device_id].append(r)
        elif r.device_type is not None:
            by_type[r.device_type].append(r)
    key = {id(r): (r.measurand, r.comparator) for r in rows}
    out: dict[int, list[Rule]] = {}
    none: list[Rule] = []
    for d in devices:
        mine = by_dev.get(d.id)
        if not mine:  # the usual case: the type's list itself, shared
            out[d.id] = by_type.get(d.device_type, none)
            continue
        keys = {key[id(r)] for r in mine}
        out[d.id] = mine + [r for r in by_type.get(d.device_type, []) if key[id(r)] not in keys]
    return out


class _Search:
    """First reading of a series at or after a time, for many series at once: one
    ``searchsorted`` over the batch keyed (series, time)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        t = batch.t
        self.t0 = int(t.min()) - 1 if len(t) else 0
        self.span = int(t.max()) - self.t0 + 2 if len(t) else 2
        self.flat = len(batch.series) * self.span < 2**62
        if self.flat:
            self.key = batch.sid * self.span + (t - self.t0)

    def __call__(self, sid: np.ndarray, at: np.ndarray, after: bool = False) -> np.ndarray:
        """Index of the first reading of series ``sid`` with t ≥ ``at`` (t > ``at`` if
        ``after``); the series' end when none."""
        side: Literal["left", "right"] = "right" if after else "left"
        if self.flat:
            q = sid * self.span + np.clip(at - self.t0, 0, self.span - 1)
            return np.searchsorted(self.key, q, side=side).astype(np.int64)
        b = self.batch.bounds
        out = np.empty(len(sid), np.int64)
        for k, (s, x) in enumerate(zip(sid.tolist(), at.tolist(), strict=True)):
            lo = int(b[s])
            out[k] = lo + int(np.searchsorted(self.batch.t[lo : int(b[s + 1])], x, side=side))
        return out


def evaluate_batch(
    session: Session,
    devices: dict[int, DeviceInfo],
    batch: Batch,
    now: datetime,
    result: IngestResult,
) -> None:
    """Evaluate the rules on a batch of valid readings.

    Screening is column-wise: for every (device, rule) the readings newer than its state are
    found with one search, their extremes (or, for rates, the chain of readings at least
    :data:`RATE_WINDOW_S` apart and the rates between them) compared with the rule's least
    severe threshold. Where nothing comes near a threshold and the state was not in breach
    — the usual case — only the state's last reading moves. The others go reading by
    reading through :func:`_evaluate_series`, which raises, repeats and ends alarms."""
    from cityops.monitoring import service

    present = sorted({d for d, _ in batch.series})
    active = [devices[d] for d in present if d in devices and devices[d].status != "maintenance"]
    # devices coming back: their offline alarm's readings are normal again
    back = [d.id for d in active if d.status == "offline"]
    if back:
        service.offline_recovered(session, back, now, result)
    rules = rules_for(session, active, {m for _, m in batch.series})
    if not any(rules.values()):
        return
    series_of = {k: s for s, k in enumerate(batch.series)}
    compiled: dict[int, Compiled] = {}
    of_list: dict[int, list[Compiled]] = {}  # lists of rules are shared by a device type
    of_device: dict[int, list[Compiled]] = {}
    for dev_id, rs in rules.items():
        cs = of_list.get(id(rs))
        if cs is None:
            cs = of_list[id(rs)] = []
            for rule in rs:
                c = compiled.get(id(rule))
                if c is None:
                    c = compiled[id(rule)] = Compiled(rule)
                cs.append(c)
        of_device[dev_id] = cs
    inst_dev: list[DeviceInfo] = []
    inst_rule: list[Compiled] = []
    inst_sid: list[int] = []
    for dev in active:
        for c in of_device.get(dev.id, ()):
            s = series_of.get((dev.id, c.measurand))
            if s is not None:
                inst_dev.append(dev)
                inst_rule.append(c)
                inst_sid.append(s)
    n = len(inst_sid)
    if not n:
        return
    dev_ids = np.fromiter((d.id for d in inst_dev), np.int64, n)
    rule_ids = np.fromiter((c.id for c in inst_rule), np.int64, n)
    in_breach, since, has_last, last_us, last_v = _load_states(session, dev_ids, rule_ids)
    sid = np.array(inst_sid, np.int64)
    kind = np.fromiter((c.kind for c in inst_rule), np.int64, n)
    # least severe thresholds: a reading reaches some level iff it passes them
    lo_thr = np.fromiter((c.reach_low for c in inst_rule), np.float64, n)
    hi_thr = np.fromiter((c.reach_high for c in inst_rule), np.float64, n)
    b = batch.bounds
    hi = b[sid + 1]
    search = _Search(batch)
    first_new = np.where(has_last, search(sid, last_us, after=True), b[sid])
    rate = (kind == _DROP) | (kind == _RISE)
    # SCREEN off: every (device, rule) reading by reading (the reference the tests compare with)
    slow = in_breach.copy() if SCREEN else np.ones(n, bool)
    touched = np.zeros(n, bool)
    new_t = last_us.copy()
    new_v = last_v.copy()
    # value rules: extremes of the new readings
    m = ~rate & ~slow & (first_new < hi)
    if m.any():
        idx = np.empty(2 * int(m.sum()), np.int64)
        idx[0::2] = first_new[m]
        idx[1::2] = hi[m]
        v_ext = np.append(batch.v, 0.0)
        vmin = np.minimum.reduceat(v_ext, idx)[0::2]
        vmax = np.maximum.reduceat(v_ext, idx)[0::2]
        k = kind[m]
        hit = np.where(
            k == _ABOVE,
            vmax >= lo_thr[m],
            np.where(k == _BELOW, vmin <= hi_thr[m], (vmin < lo_thr[m]) | (vmax > hi_thr[m])),
        )
        slow[np.flatnonzero(m)[hit]] = True
        ok = np.flatnonzero(m)[~hit]
        touched[ok] = True
        new_t[ok] = batch.t[hi[ok] - 1]
        new_v[ok] = batch.v[hi[ok] - 1]
    # rate rules: walk the chain of reference readings, all series at once
    r_idx = np.flatnonzero(rate & ~slow)
    if len(r_idx):
        r_sid = sid[r_idx]
        rhi = hi[r_idx]
        ref_t = last_us[r_idx].copy()
        ref_v = last_v[r_idx].copy()
        sign = np.where(kind[r_idx] == _DROP, -1.0, 1.0)
        thr = lo_thr[r_idx]
        r_touched = np.zeros(len(r_idx), bool)
        r_hit = np.zeros(len(r_idx), bool)
        # no reference yet: the first new reading becomes it (no rate)
        fresh = ~has_last[r_idx] | np.isnan(ref_v)
        pos = np.where(fresh, first_new[r_idx], 0)
        if (~fresh).any():
            w = ~fresh
            pos[w] = search(r_sid[w], ref_t[w] + RATE_WINDOW_US)
        f = fresh & (pos < rhi)
        if f.any():
            ref_t[f] = batch.t[pos[f]]
            ref_v[f] = batch.v[pos[f]]
            r_touched[f] = True
            pos[f] = search(r_sid[f], ref_t[f] + RATE_WINDOW_US)
        while True:
            a = np.flatnonzero(pos < rhi)
            if not len(a):
                break
            p = pos[a]
            minutes = ((batch.t[p] - ref_t[a]) / 1e6) / 60.0
            x = (sign[a] * (batch.v[p] - ref_v[a])) / minutes
            r_hit[a] |= x >= thr[a]
            ref_t[a] = batch.t[p]
            ref_v[a] = batch.v[p]
            r_touched[a] = True
            pos[a] = search(r_sid[a], ref_t[a] + RATE_WINDOW_US)
        slow[r_idx[r_hit]] = True
        ok = r_idx[~r_hit & r_touched]
        touched[ok] = True
        new_t[ok] = ref_t[~r_hit & r_touched]
        new_v[ok] = ref_v[~r_hit & r_touched]
    quiet = np.flatnonzero(touched & ~slow)
    out_j = quiet.tolist()
    out_since = [since[j] for j in out_j]
    out_breach = [False] * len(out_j)
    out_t = new_t[quiet].tolist()
    out_v = new_v[quiet].tolist()
    loud = np.flatnonzero(slow).tolist()
    if loud:
        open_alarms: dict[tuple[int, int], Alarm] = {}
        for alarm in session.scalars(
            select(Alarm).where(
                Alarm.device_id.in_(sorted({inst_dev[j].id for j in loud})), Alarm.is_open == 1
            )
        ):
            open_alarms[(alarm.device_id, alarm.rule_id)] = alarm
        for j in loud:
            state = _S(
                bool(in_breach[j]),
                since[j],
                from_us(int(last_us[j])) if has_last[j] else None,
                None if np.isnan(last_v[j]) else float(last_v[j]),
            )
            pts = batch.points(inst_sid[j])
            if _evaluate_series(
                session, inst_dev[j], inst_rule[j], state, pts, open_alarms, now, result
            ):
                assert state.last_ts is not None and state.last_value is not None
                out_j.append(j)
                out_breach.append(state.in_breach)
                out_since.append(state.breach_since)
                out_t.append(to_us(state.last_ts))
                out_v.append(state.last_value)
    if out_j:
        _save_states(
            session,
            dev_ids[out_j],
            rule_ids[out_j],
            np.array(out_breach, bool),
            out_since,
            np.array(out_t, np.int64),
            np.array(out_v, np.float64),
        )


def _evaluate_series(
    session: Session,
    dev: DeviceInfo,
    rule: Compiled,
    s: _S,
    pts: list[tuple[datetime, float]],
    open_alarms: dict[tuple[int, int], Alarm],
    now: datetime,
    result: IngestResult,
) -> bool:
    """One (device, rule) reading by reading: state, duration, hysteresis, alarms. Returns
    whether the state changed."""
    from cityops.monitoring import service

    touched = False
    key = (dev.id, rule.id)
    for ts, v in pts:
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
    return touched


def _naive(d: datetime | None) -> datetime | None:
    return None if d is None else d.astimezone(UTC).replace(tzinfo=None)


def _load_states(
    session: Session, dev: np.ndarray, rule: np.ndarray
) -> tuple[np.ndarray, list[datetime | None], np.ndarray, np.ndarray, np.ndarray]:
    """The state of each (dev[j], rule[j]), read with one query joined in that order:
    in breach, breach since (naive UTC), whether a last reading is known, its time (µs)
    and its value (NaN: none)."""
    n = len(dev)
    if session.get_bind().dialect.name == "postgresql":
        rows = fetch_all(
            session,
            "SELECT s.in_breach, s.breach_since,"
            " (EXTRACT(EPOCH FROM s.last_ts) * 1000000)::int8, s.last_value"
            " FROM unnest(%(d)b::int4[], %(r)b::int4[]) WITH ORDINALITY AS k(d, r, i)"
            " LEFT JOIN monitoring_rule_states s ON s.device_id = k.d AND s.rule_id = k.r"
            " ORDER BY k.i",
            {"d": dev.tolist(), "r": rule.tolist()},
        )
        breach, since, last, value = (
            (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
        )
    else:
        rows = fetch_all(
            session,
            "SELECT s.in_breach, s.breach_since, s.last_ts, s.last_value FROM json_each(?) k"
            " LEFT JOIN monitoring_rule_states s ON s.device_id = k.value ->> 0"
            " AND s.rule_id = k.value ->> 1 ORDER BY k.key",
            (orjson.dumps(np.stack((dev, rule), axis=1).tolist()).decode(),),
        )
        breach, since_t, last_t, value = (
            (list(c) for c in zip(*rows, strict=True)) if rows else ([], [], [], [])
        )
        memo: dict[str, datetime] = {}

        def parse(x: str | None) -> datetime | None:
            if x is None:
                return None
            d = memo.get(x)
            if d is None:
                d = memo[x] = datetime.fromisoformat(x)
            return d

        since = [parse(x) for x in since_t]
        us_of: dict[str, int] = {}
        last = []
        for x in last_t:
            if x is None:
                last.append(None)
                continue
            u = us_of.get(x)
            if u is None:
                u = us_of[x] = to_us(datetime.fromisoformat(x))
            last.append(u)
    assert len(breach) == n
    in_breach = np.array([bool(x) for x in breach], bool).reshape(n)
    has_last = np.array([x is not None for x in last], bool).reshape(n)
    last_us = np.array([0 if x is None else x for x in last], np.int64).reshape(n)
    last_v = np.array([np.nan if x is None else x for x in value], np.float64).reshape(n)
    return in_breach, since, has_last, last_us, last_v


def _save_states(
    session: Session,
    dev: np.ndarray,
    rule: np.ndarray,
    in_breach: np.ndarray,
    since: list[datetime | None],
    last_us: np.ndarray,
    last_v: np.ndarray,
) -> None:
    """Upsert rule states (one per row of the arrays), in key order."""
    from cityops.monitoring.ingest import sqlite_texts, sqlite_ts

    order = np.lexsort((rule, dev))
    since = [since[k] for k in order.tolist()]
    dev, rule, in_breach, last_us, last_v = (
        dev[order],
        rule[order],
        in_breach[order],
        last_us[order],
        last_v[order],
    )
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "INSERT INTO monitoring_rule_states (device_id, rule_id, in_breach, breach_since,"
            " last_ts, last_value) SELECT * FROM unnest(%(d)b::int4[], %(r)b::int4[],"
            " %(b)b::bool[], %(s)b::timestamp[], %(t)b::timestamp[], %(v)b::float8[])"
            " ON CONFLICT (device_id, rule_id) DO UPDATE SET in_breach = excluded.in_breach,"
            " breach_since = excluded.breach_since, last_ts = excluded.last_ts,"
            " last_value = excluded.last_value",
            {
                "d": dev.tolist(),
                "r": rule.tolist(),
                "b": in_breach.tolist(),
                "s": since,
                "t": datetimes(last_us),
                "v": last_v.tolist(),
            },
        )
        return
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
        list(
            zip(
                dev.tolist(),
                rule.tolist(),
                in_breach.astype(np.int64).tolist(),
                [fmt(x) for x in since],
                sqlite_texts(last_us),
                last_v.tolist(),
                strict=True,
            )
        ),
    )

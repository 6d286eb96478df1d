"""Pure logic of flood command: rolling rainfall windows, level proposals, depth trend and
status, overdue acknowledgement. No database, no devices: plain values in, plain values out.

Response levels are numbers: 4 = Ⅳ 蓝 (lowest) … 1 = Ⅰ 红 (highest), so "higher level" means
a *smaller* number.

A rain gauge reading is the rain (mm) of its reading interval ending at its timestamp. The
rain of a window ending at ``t`` of length ``W`` is the sum of the readings with
``t - W < ts <= t``. Its maximum over all window ends is reached at a reading's timestamp, so
:func:`rolling_max` only looks there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: A reading series: (timestamp, value), in any order.
Series = Sequence[tuple[datetime, float]]

#: Float tolerance for thresholds: 49.99999999 (sum of 0.1 mm steps) still counts as 50.
EPS = 1e-9

#: Depth change (cm) over the trend window that counts as rising/falling.
TREND_DELTA_CM = 1.0


@dataclass(frozen=True)
class RuleSpec:
    """One row of the rule table (see :class:`cityops.flood.models.Rule`)."""

    id: int
    signal: str  # "rainfall" | "ponding"
    level: int
    window_minutes: int | None = None
    threshold: float | None = None
    relative_to: str | None = None  # "close" | "warn" | None (absolute cm)
    min_points: int = 1
    enabled: bool = True
    note: str | None = None


@dataclass(frozen=True)
class PointDepth:
    """The latest ponding depth of one point with its own warn/close depths."""

    code: str
    depth_cm: float
    at: datetime
    warn_cm: float = 15.0
    close_cm: float = 30.0


@dataclass
class LevelProposal:
    """The highest level any rule proposes (``None``: no rule fired) and every firing rule."""

    level: int | None
    reasons: list[dict[str, Any]] = field(default_factory=list)


def rolling_max(
    series: Series, window: timedelta, since: datetime | None = None
) -> tuple[float, datetime | None]:
    """The largest rain sum of a window of length ``window`` ending at a reading at or after
    ``since`` (all windows when ``since`` is None), and where that window ends.

    Readings before ``since`` still count inside windows that end after it. Ties keep the
    earliest window end. Returns ``(0.0, None)`` for no window.
    """
    pts = sorted(series, key=lambda p: p[0])
    best = 0.0
    best_end: datetime | None = None
    total = 0.0
    lo = 0
    for t, v in pts:
        total += v
        while pts[lo][0] <= t - window:
            total -= pts[lo][1]
            lo += 1
        if since is not None and t < since:
            continue
        if best_end is None or total > best + EPS:
            best, best_end = total, t
    # repeated subtraction drifts: recompute the winning window exactly
    if best_end is not None:
        best = sum(v for t, v in pts if best_end - window < t <= best_end)
    return round(best, 6), best_end


def _ponding_limit(rule: RuleSpec, p: PointDepth) -> float | None:
    if rule.relative_to == "close":
        return p.close_cm
    if rule.relative_to == "warn":
        return p.warn_cm
    return rule.threshold


def propose_level(
    rules: Iterable[RuleSpec],
    rain: Mapping[str, Series],
    depths: Iterable[PointDepth],
    since: datetime | None = None,
) -> LevelProposal:
    """Evaluate the rule table on rain gauge series (code → readings) and latest point depths.

    A rainfall rule fires when some gauge's rolling-window sum (window ending at or after
    ``since``) is ≥ its threshold; a ponding rule when at least ``min_points`` points are at
    or above their limit. The proposal is the highest level of the rules that fired.
    """
    out = LevelProposal(level=None)
    depth_list = list(depths)
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.signal == "rainfall":
            if rule.window_minutes is None or rule.threshold is None:
                continue
            window = timedelta(minutes=rule.window_minutes)
            best: tuple[float, datetime | None, str] | None = None
            for code in sorted(rain):
                mm, end = rolling_max(rain[code], window, since)
                hit = end is not None and mm >= rule.threshold - EPS
                if hit and (best is None or mm > best[0]):
                    best = (mm, end, code)
            if best is not None:
                out.reasons.append(
                    {
                        "rule_id": rule.id,
                        "signal": "rainfall",
                        "level": rule.level,
                        "gauge": best[2],
                        "window_minutes": rule.window_minutes,
                        "rain_mm": best[0],
                        "threshold": rule.threshold,
                        "window_end": best[1].isoformat() if best[1] else None,
                        "note": rule.note,
                    }
                )
        elif rule.signal == "ponding":
            hits = []
            for p in depth_list:
                limit = _ponding_limit(rule, p)
                if limit is not None and p.depth_cm >= limit - EPS:
                    hits.append({"point": p.code, "depth_cm": p.depth_cm, "limit_cm": limit})
            if hits and len(hits) >= max(rule.min_points, 1):
                out.reasons.append(
                    {
                        "rule_id": rule.id,
                        "signal": "ponding",
                        "level": rule.level,
                        "relative_to": rule.relative_to,
                        "threshold": rule.threshold,
                        "min_points": rule.min_points,
                        "points": sorted(hits, key=lambda h: (-h["depth_cm"], h["point"])),
                        "note": rule.note,
                    }
                )
    if out.reasons:
        out.level = min(r["level"] for r in out.reasons)
        out.reasons.sort(key=lambda r: (r["level"], r["rule_id"]))
    return out


def trend(readings: Series, delta_cm: float = TREND_DELTA_CM) -> str | None:
    """``rising`` / ``falling`` / ``steady`` from the first to the last of recent readings
    (``None`` with fewer than two)."""
    pts = sorted(readings, key=lambda p: p[0])
    if len(pts) < 2:
        return None
    change = pts[-1][1] - pts[0][1]
    if change >= delta_cm - EPS:
        return "rising"
    if change <= -delta_cm + EPS:
        return "falling"
    return "steady"


def point_status(depth_cm: float | None, warn_cm: float, close_cm: float) -> str:
    """``closed`` at or above the close depth, ``warning`` at or above the warn depth,
    ``normal`` below (and when there is no reading: ``unknown``)."""
    if depth_cm is None:
        return "unknown"
    if depth_cm >= close_cm - EPS:
        return "closed"
    if depth_cm >= warn_cm - EPS:
        return "warning"
    return "normal"


def ack_overdue(ack_due_at: datetime, acknowledged_at: datetime | None, now: datetime) -> bool:
    """Whether an order's acknowledgement is late: not acknowledged by its due time (or
    acknowledged after it)."""
    return (acknowledged_at or now) > ack_due_at


def seconds_between(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return (b - a).total_seconds()


def average(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return round(sum(vs) / len(vs), 1) if vs else None

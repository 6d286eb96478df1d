"""Indicators, composite values, rankings and drill-down of the evaluation (以评促管).

Every figure of :func:`indicators` and :func:`ranking` is a ``SUM(count) … GROUP BY`` over the
rollup table ``eval_daily_counts`` for a period ``[start, end)`` of local days — never a scan
of the cases. What each counter means is in :mod:`cityops.evaluation.rollup`. Drill-down
(:func:`drilldown`) replays the history of the candidate cases with the same definitions
and answers the case ids behind one figure.

Rates (GUIDE §6), in percent rounded to 2 decimals (``None`` when the denominator is 0):

* 处置率 = 处置数 / 应处置数; 按期处置率 = 按期处置数 / 应处置数; 返工率 = 返工数 / 处置数;
  结案率 = 结案数 / 应结案数; 按期结案率 = 按期结案数 / 应结案数; 延期率 = 延期数 / 应处置数
  (units: 应结案数 = 应处置数 − 回退数 − 挂账数; regions: 应结案数 = 立案数 =
  立案 − 挂账 − 立案后作废/合并)
* 监督举报率 = 监督举报核实数 / 立案数
* 监督员 inspector: 有效上报率 = 有效上报数 / 上报数; 漏报率 = 漏报数 / 网格立案数 (cases filed in
  the inspector's grids); 按时核实率 = 按时核实数 / 应核实数; 按时核查率 = 按时核查数 / 应核查数
* 受理员 operator: 受理数 (→ 受理数分值 by ``accept_buckets``); 核实按时派发率 = 核实按时派发数 /
  核实派发数; 核查按时派发率 = 核查按时派发数 / 核查派发数
* 值班长 shift_leader: 按时立案率 = 按时立案数 / 立案数; 准确立案率 = (立案数 − 作废数) / 立案数;
  按时结案率 = 按时结案数 / 结案数
* 派遣员 dispatcher: 派遣数 (→ 派遣数分值 by ``dispatch_buckets``); 按时派遣率 = 按时派遣数 /
  应派遣数; 准确派遣率 = (应派遣数 − 派遣返工数) / 应派遣数 (派遣返工 = an approved 回退)

Composite values use the weights in city setting ``evaluation_weights`` (GUIDE defaults; the
score buckets and grade bands are there too). A rate is its own 0–100 score; a rate without
data (denominator 0) scores full marks in a composite; an entity without any activity in the
period has no composite (``None``). The unit composite can blend in the third-party review
score (weight ``unit.review``, default 0: the GUIDE formula); a unit without reviews in the
period has that term left out (the other weights renormalised).

Sums over whole calendar months read the monthly rollup level (``eval_monthly_counts``), other
periods the daily one; both hold the same counters.
"""

from __future__ import annotations

import calendar
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from cityops.access.models import User, UserRole
from cityops.cases.models import Case, CaseEvent
from cityops.core.errors import Invalid
from cityops.core.security import prefix_filter
from cityops.evaluation.models import EvalDailyCount
from cityops.evaluation.rollup import METRICS, TZ, replay
from cityops.evaluation.schedule_models import EvalMonthlyCount
from cityops.geo.models import CitySetting, Grid, Region, Unit, grid_inspectors

#: Positions (岗位) evaluated per person, with the role a person needs to be ranked.
POSITIONS = {
    "inspector": "inspector",
    "operator": "operator",
    "shift_leader": "shift_leader",
    "dispatcher": "dispatcher",
}
POSITION_NAMES = {
    "inspector": "监督员",
    "operator": "受理员",
    "shift_leader": "值班长",
    "dispatcher": "派遣员",
}
ENTITIES = ("unit", "region", *POSITIONS)
WEIGHTS_KEY = "evaluation_weights"
#: [min count, score] descending: the first band whose minimum is reached gives the score.
_COUNT_BUCKETS = [[2001, 100], [1201, 90], [501, 75], [301, 60], [0, 0]]
DEFAULT_WEIGHTS: dict[str, Any] = {
    "unit": {"on_time_handle": 60, "close": 30, "no_rework": 10, "review": 0},
    "region": {"no_public": 10, "filed_score": 20, "close": 30, "on_time_close": 40},
    "inspector": {"valid_report": 40, "no_miss": 20, "on_time_verify": 20, "on_time_check": 20},
    "operator": {"accept_count": 25, "verify_sent": 40, "check_sent": 35},
    "shift_leader": {"on_time_file": 25, "accurate_file": 40, "on_time_close": 35},
    "dispatcher": {"dispatch_count": 20, "on_time_dispatch": 40, "accurate_dispatch": 40},
    #: 立案数分值 per grid and period: [max filed, score] … (above the last → the last score)
    "filed_buckets": [[0, 100], [2, 90], [4, 75], [6, 60], [8, 40], [None, 0]],
    #: 受理数分值 (GUIDE: >2000 → 100; 1201–2000 → 90; 501–1200 → 75; 301–500 → 60; else 0)
    "accept_buckets": _COUNT_BUCKETS,
    #: 派遣数分值 (the GUIDE gives no bands: the 受理数 ones by default)
    "dispatch_buckets": _COUNT_BUCKETS,
    "grades": [[90, "A"], [75, "B"], [60, "C"], [40, "D"], [0, "E"]],
}
WEIGHT_GROUPS = ("unit", "region", "inspector", "operator", "shift_leader", "dispatcher")


# --------------------------------------------------------------------------- periods


@dataclass(frozen=True)
class Period:
    start: date
    end: date  # exclusive

    def previous(self) -> Period:
        """The period of the same kind just before (months and years by calendar)."""
        s, e = self.start, self.end
        if s.day == 1 and e.day == 1:
            months = (e.year - s.year) * 12 + e.month - s.month
            y, m = s.year, s.month - months
            while m < 1:
                m += 12
                y -= 1
            return Period(date(y, m, 1), s)
        return Period(s - (e - s), s)


def parse_period(text: str) -> Period:
    """``2026-11-17`` day, ``2026-W47`` ISO week, ``2026-11`` month, ``2026-Q4``, ``2026``."""
    t = text.strip()
    try:
        if m := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", t):
            d = date(int(m[1]), int(m[2]), int(m[3]))
            return Period(d, d + timedelta(days=1))
        if m := re.fullmatch(r"(\d{4})-W(\d{1,2})", t):
            d = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            return Period(d, d + timedelta(days=7))
        if m := re.fullmatch(r"(\d{4})-(\d{1,2})", t):
            y, mo = int(m[1]), int(m[2])
            return Period(date(y, mo, 1), date(y, mo, calendar.monthrange(y, mo)[1]) + _DAY)
        if m := re.fullmatch(r"(\d{4})-Q([1-4])", t):
            y, q = int(m[1]), int(m[2])
            s = date(y, 3 * q - 2, 1)
            e = date(y + 1, 1, 1) if q == 4 else date(y, 3 * q + 1, 1)
            return Period(s, e)
        if re.fullmatch(r"\d{4}", t):
            return Period(date(int(t), 1, 1), date(int(t) + 1, 1, 1))
    except ValueError:
        pass
    raise Invalid(f"bad period {text!r}", field="period", value=text)


_DAY = timedelta(days=1)


# --------------------------------------------------------------------------- config


def get_weights(session: Session) -> dict[str, Any]:
    row = session.get(CitySetting, WEIGHTS_KEY)
    out: dict[str, Any] = {
        k: (dict(v) if isinstance(v, dict) else list(v)) for k, v in DEFAULT_WEIGHTS.items()
    }
    if row is not None and isinstance(row.value, dict):
        for k, v in row.value.items():
            if k in out and isinstance(out[k], dict) and isinstance(v, dict):
                out[k].update(v)
            elif k in out:
                out[k] = v
    return out


def set_weights(session: Session, value: dict[str, Any]) -> dict[str, Any]:
    unknown = [k for k in value if k not in DEFAULT_WEIGHTS]
    if unknown:
        raise Invalid(f"unknown weight group {unknown[0]!r}", field=unknown[0])
    for group in WEIGHT_GROUPS:
        if group in value:
            v = value[group]
            if not isinstance(v, dict) or set(v) - set(DEFAULT_WEIGHTS[group]):
                raise Invalid(
                    f"weights of {group}: keys {sorted(DEFAULT_WEIGHTS[group])}",
                    field=group,
                    value=v,
                )
            if not all(
                isinstance(x, int | float) and not isinstance(x, bool) and x >= 0
                for x in v.values()
            ):
                raise Invalid(f"weights of {group} must be numbers ≥ 0", field=group, value=v)
            merged = {**DEFAULT_WEIGHTS[group], **v}
            if group != "unit" and not any(merged.values()):
                raise Invalid(f"weights of {group} may not all be 0", field=group, value=v)
    for key in ("accept_buckets", "dispatch_buckets"):
        if key in value:
            _check_bands(key, value[key], descending=True)
    if "filed_buckets" in value:
        _check_filed_buckets(value["filed_buckets"])
    if "grades" in value:
        _check_bands("grades", value["grades"], descending=True, labels=True)
    row = session.get(CitySetting, WEIGHTS_KEY)
    if row is None:
        session.add(CitySetting(key=WEIGHTS_KEY, value=value))
    else:
        row.value = value
    session.flush()
    return get_weights(session)


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_bands(key: str, bands: Any, descending: bool, labels: bool = False) -> None:
    """[[min, score or grade], …] with strictly descending minimums, the last one 0."""
    ok = (
        isinstance(bands, list)
        and bands
        and all(isinstance(b, list) and len(b) == 2 for b in bands)
    )
    if ok:
        mins = [b[0] for b in bands]
        ok = all(_num(m) and m >= 0 for m in mins) and all(a > b for a, b in pairwise(mins))
        ok = ok and mins[-1] == 0
        if labels:
            ok = ok and all(isinstance(b[1], str) and b[1] for b in bands)
        else:
            ok = ok and all(_num(b[1]) and 0 <= b[1] <= 100 for b in bands)
    if not ok:
        what = "grade" if labels else "score 0–100"
        raise Invalid(
            f"{key}: [[min, {what}], …] with descending minimums ending at 0",
            field=key,
            value=bands,
        )


def _check_filed_buckets(bands: Any) -> None:
    ok = (
        isinstance(bands, list)
        and bands
        and all(isinstance(b, list) and len(b) == 2 for b in bands)
    )
    if ok:
        tops = [b[0] for b in bands]
        ok = tops[-1] is None and all(_num(t) and t >= 0 for t in tops[:-1])
        ok = ok and all(a < b for a, b in pairwise(tops[:-1]))
        ok = ok and all(_num(b[1]) and 0 <= b[1] <= 100 for b in bands)
    if not ok:
        raise Invalid(
            "filed_buckets: [[max filed, score 0–100], …] ascending, the last [null, score]",
            field="filed_buckets",
            value=bands,
        )


def count_score(n: int, bands: list[list[Any]]) -> float:
    """Score of a count by [[min, score], …] bands (descending minimums)."""
    for floor, score in bands:
        if n >= floor:
            return float(score)
    return 0.0


# --------------------------------------------------------------------------- figures


def pct(num: int, den: int) -> float | None:
    """num / den in percent, rounded half-up to 2 decimals (None when den is 0)."""
    if den <= 0:
        return None
    if num >= 0:  # exact half-up in integers (the common case, and much faster)
        return ((20000 * num + den) // (2 * den)) / 100
    q = Decimal(num * 100) / Decimal(den)
    return float(q.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _exact(num: int, den: int) -> Fraction | None:
    return Fraction(num * 100, den) if den > 0 else None


def _r2(x: Fraction | float) -> float:
    return float(Decimal(str(float(x))).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def grade(
    session: Session | None, score: float | None, weights: dict[str, Any] | None = None
) -> str | None:
    if score is None:
        return None
    grades = (weights or DEFAULT_WEIGHTS)["grades"]
    for floor, g in grades:
        if score >= floor:
            return str(g)
    return str(grades[-1][1])


def filed_score(n: int, weights: dict[str, Any]) -> int:
    for top, score in weights["filed_buckets"]:
        if top is None or n <= top:
            return int(score)
    return 0


def _full(x: Fraction | None) -> Fraction:
    return Fraction(100) if x is None else x


def unit_figures(
    c: dict[str, int], weights: dict[str, Any], review: float | None = None
) -> dict[str, Any]:
    """Figures of a 专业部门; ``review`` is its third-party review score (0–100) if any."""
    due = c.get("u_dispatched", 0)
    handled = c.get("u_handled", 0)
    should_close = due - c.get("u_returned", 0) - c.get("u_parked", 0)
    counts = {
        "应处置数": due,
        "处置数": handled,
        "按期处置数": c.get("u_handled_on_time", 0),
        "超期处置数": c.get("u_handled_late", 0),
        "返工数": c.get("u_rework", 0),
        "回退数": c.get("u_returned", 0),
        "延期数": c.get("u_extended", 0),
        "挂账数": c.get("u_parked", 0),
        "应结案数": should_close,
        "结案数": c.get("u_closed", 0),
        "按期结案数": c.get("u_closed_on_time", 0),
    }
    on_time = _exact(counts["按期处置数"], due)
    close = _exact(counts["结案数"], should_close)
    rework = _exact(counts["返工数"], handled)
    rates = {
        "处置率": pct(handled, due),
        "按期处置率": pct(counts["按期处置数"], due),
        "返工率": pct(counts["返工数"], handled),
        "结案率": pct(counts["结案数"], should_close),
        "按期结案率": pct(counts["按期结案数"], should_close),
        "延期率": pct(counts["延期数"], due),
    }
    w = weights["unit"]
    w_review = Fraction(w.get("review", 0) or 0)
    if w_review:
        rates["第三方考评"] = _r2(review) if review is not None else None
    composite: float | None = None
    if due or any(counts.values()):
        total = Fraction(w["on_time_handle"] + w["close"] + w["no_rework"]) / 100
        value = (
            _full(on_time) * Fraction(w["on_time_handle"]) / 100
            + _full(close) * Fraction(w["close"]) / 100
            + (100 - (rework if rework is not None else Fraction(0)))
            * Fraction(w["no_rework"])
            / 100
        )
        if w_review and review is not None:
            total += w_review / 100
            value += Fraction(review) * w_review / 100
        composite = _r2(value / total) if total else None
    return {"counts": counts, "rates": rates, "composite": composite}


def region_figures(
    c: dict[str, int],
    per_grid_filed: dict[str, int],
    grid_codes: list[str],
    weights: dict[str, Any],
) -> dict[str, Any]:
    filed = c.get("r_filed", 0) - c.get("r_parked", 0) - c.get("r_dropped", 0)
    counts = {
        "立案(含挂账)": c.get("r_filed", 0),
        "挂账数": c.get("r_parked", 0),
        "立案后作废/合并": c.get("r_dropped", 0),
        "立案数": filed,
        "应结案数": filed,
        "结案数": c.get("r_closed", 0),
        "按期结案数": c.get("r_closed_on_time", 0),
        "监督举报核实数": c.get("r_public_ok", 0),
    }
    scores = [filed_score(per_grid_filed.get(g, 0), weights) for g in grid_codes] or [
        filed_score(filed, weights)
    ]
    grid_score = Fraction(sum(scores), len(scores))
    public = _exact(counts["监督举报核实数"], filed)
    close = _exact(counts["结案数"], filed)
    on_time = _exact(counts["按期结案数"], filed)
    rates = {
        "监督举报率": pct(counts["监督举报核实数"], filed),
        "结案率": pct(counts["结案数"], filed),
        "按期结案率": pct(counts["按期结案数"], filed),
        "立案数分值": _r2(grid_score),
    }
    w = weights["region"]
    total = Fraction(sum(w.values())) / 100
    value = (
        (100 - min(Fraction(100), public if public is not None else Fraction(0)))
        * Fraction(w["no_public"])
        / 100
        + grid_score * Fraction(w["filed_score"]) / 100
        + _full(close) * Fraction(w["close"]) / 100
        + _full(on_time) * Fraction(w["on_time_close"]) / 100
    )
    composite = _r2(value / total) if total else None
    return {"counts": counts, "rates": rates, "composite": composite}


def inspector_figures(c: dict[str, int], weights: dict[str, Any]) -> dict[str, Any]:
    counts = {
        "上报数": c.get("i_reported", 0),
        "有效上报数": c.get("i_valid", 0),
        "应核实数": c.get("i_verify_due", 0),
        "按时核实数": c.get("i_verify_on_time", 0),
        "应核查数": c.get("i_check_due", 0),
        "按时核查数": c.get("i_check_on_time", 0),
        "自行处置数": c.get("i_self_handled", 0),
        "网格立案数": c.get("i_grid_filed", 0),
        "漏报数": c.get("i_missed", 0),
    }
    valid = _exact(counts["有效上报数"], counts["上报数"])
    missed = _exact(counts["漏报数"], counts["网格立案数"])
    verify = _exact(counts["按时核实数"], counts["应核实数"])
    check = _exact(counts["按时核查数"], counts["应核查数"])
    rates = {
        "有效上报率": pct(counts["有效上报数"], counts["上报数"]),
        "漏报率": pct(counts["漏报数"], counts["网格立案数"]),
        "按时核实率": pct(counts["按时核实数"], counts["应核实数"]),
        "按时核查率": pct(counts["按时核查数"], counts["应核查数"]),
    }
    w = weights["inspector"]
    composite: float | None = None
    if any(counts.values()):
        total = Fraction(sum(w.values())) / 100
        value = (
            _full(valid) * Fraction(w["valid_report"]) / 100
            + (100 - (missed if missed is not None else Fraction(0))) * Fraction(w["no_miss"]) / 100
            + _full(verify) * Fraction(w["on_time_verify"]) / 100
            + _full(check) * Fraction(w["on_time_check"]) / 100
        )
        composite = _r2(value / total) if total else None
    return {"counts": counts, "rates": rates, "composite": composite}


def _rate(num: int, den: int) -> tuple[float | None, Fraction | None]:
    return pct(num, den), _exact(num, den)


def _weighted(w: dict[str, Any], terms: dict[str, Fraction | None]) -> float | None:
    total = Fraction(sum(Fraction(w[k]) for k in terms)) / 100
    if not total:
        return None
    value = sum((_full(x) * Fraction(w[k]) / 100 for k, x in terms.items()), Fraction(0))
    return _r2(value / total)


def operator_figures(c: dict[str, int], weights: dict[str, Any]) -> dict[str, Any]:
    """受理员: 受理数分值 25 % + 核实按时派发率 40 % + 核查按时派发率 35 %."""
    counts = {
        "受理数": c.get("o_accepted", 0),
        "核实派发数": c.get("o_verify_sent", 0),
        "核实按时派发数": c.get("o_verify_sent_on_time", 0),
        "核查派发数": c.get("o_check_sent", 0),
        "核查按时派发数": c.get("o_check_sent_on_time", 0),
    }
    score = count_score(counts["受理数"], weights["accept_buckets"])
    verify, verify_x = _rate(counts["核实按时派发数"], counts["核实派发数"])
    check, check_x = _rate(counts["核查按时派发数"], counts["核查派发数"])
    rates = {"受理数分值": score, "核实按时派发率": verify, "核查按时派发率": check}
    composite = None
    if any(counts.values()):
        composite = _weighted(
            weights["operator"],
            {"accept_count": Fraction(score), "verify_sent": verify_x, "check_sent": check_x},
        )
    return {"counts": counts, "rates": rates, "composite": composite}


def shift_leader_figures(c: dict[str, int], weights: dict[str, Any]) -> dict[str, Any]:
    """值班长: 按时立案率 25 % + 准确立案率 40 % + 按时结案率 35 %."""
    filed = c.get("s_filed", 0)
    counts = {
        "立案数": filed,
        "按时立案数": c.get("s_filed_on_time", 0),
        "作废数": c.get("s_voided", 0),
        "结案数": c.get("s_closed", 0),
        "按时结案数": c.get("s_closed_on_time", 0),
    }
    on_time, on_time_x = _rate(counts["按时立案数"], filed)
    accurate, accurate_x = _rate(filed - counts["作废数"], filed)
    close, close_x = _rate(counts["按时结案数"], counts["结案数"])
    rates = {"按时立案率": on_time, "准确立案率": accurate, "按时结案率": close}
    composite = None
    if any(counts.values()):
        composite = _weighted(
            weights["shift_leader"],
            {"on_time_file": on_time_x, "accurate_file": accurate_x, "on_time_close": close_x},
        )
    return {"counts": counts, "rates": rates, "composite": composite}


def dispatcher_figures(c: dict[str, int], weights: dict[str, Any]) -> dict[str, Any]:
    """派遣员: 派遣数分值 20 % + 按时派遣率 40 % + 准确派遣率 40 %."""
    due = c.get("d_dispatched", 0)
    counts = {
        "派遣数": due,
        "应派遣数": due,
        "按时派遣数": c.get("d_dispatched_on_time", 0),
        "派遣返工数": c.get("d_returned", 0),
    }
    score = count_score(due, weights["dispatch_buckets"])
    on_time, on_time_x = _rate(counts["按时派遣数"], due)
    accurate, accurate_x = _rate(due - counts["派遣返工数"], due)
    rates = {"派遣数分值": score, "按时派遣率": on_time, "准确派遣率": accurate}
    composite = None
    if any(counts.values()):
        composite = _weighted(
            weights["dispatcher"],
            {
                "dispatch_count": Fraction(score),
                "on_time_dispatch": on_time_x,
                "accurate_dispatch": accurate_x,
            },
        )
    return {"counts": counts, "rates": rates, "composite": composite}


_FIGURES_OF: dict[str, Any] = {
    "inspector": inspector_figures,
    "operator": operator_figures,
    "shift_leader": shift_leader_figures,
    "dispatcher": dispatcher_figures,
}

_PREFIX = {
    "unit": "u_",
    "region": "r_",
    "inspector": "i_",
    "operator": "o_",
    "shift_leader": "s_",
    "dispatcher": "d_",
}


def metrics_of(entity: str) -> list[str]:
    return [m for m in METRICS if m.startswith(_PREFIX[entity])]


def _monthly(period: Period, entity: str, scope: str | None) -> bool:
    """Whole calendar months, and no region scope on a family without grid codes there."""
    return period.start.day == 1 and period.end.day == 1 and (not scope or entity == "region")


def _months(period: Period) -> list[date]:
    out, d = [], period.start
    while d < period.end:
        out.append(d)
        d = (d + timedelta(days=32)).replace(day=1)
    return out


def _table(period: Period, entity: str, scope: str | None) -> tuple[Any, Any]:
    """(table, period condition) of the rollup level that answers this sum. Months are
    listed one by one (``month IN …``): with the metric list that is an exact index lookup."""
    if _monthly(period, entity, scope):
        return EvalMonthlyCount, EvalMonthlyCount.month.in_(_months(period))
    return EvalDailyCount, and_(EvalDailyCount.day >= period.start, EvalDailyCount.day < period.end)


def _entity_filter(t: Any, entity: str, key: str) -> Any:
    if entity == "unit":
        return t.unit_id == int(key)
    if entity in POSITIONS:
        return t.user_id == int(key)
    if entity == "region":
        return prefix_filter(t.grid_code, key)
    raise Invalid(f"entity must be one of {', '.join(ENTITIES)}", field="entity", value=entity)


def sums(
    session: Session,
    entity: str,
    key: str,
    period: Period,
    by_grid: bool = False,
    scope: str | None = None,
) -> Any:
    t, in_period = _table(period, entity, scope)
    cols: list[Any] = [t.metric]
    if by_grid:
        cols.insert(0, t.grid_code)
    q = (
        select(*cols, func.sum(t.count))
        .where(
            in_period,
            t.metric.in_(metrics_of(entity)),
            _entity_filter(t, entity, key),
        )
        .group_by(*cols)
    )
    if scope:
        q = q.where(prefix_filter(t.grid_code, scope))
    return session.execute(q).all()


def review_scores(session: Session, period: Period, weights: dict[str, Any]) -> dict[int, float]:
    """Third-party review score per unit (only asked for when its weight is not 0)."""
    if not weights["unit"].get("review"):
        return {}
    from cityops.evaluation.review import unit_review_scores

    return {
        uid: float(r.score)
        for uid, r in unit_review_scores(session, period.start, period.end).items()
        if r.count
    }


def _grids_under(session: Session, prefix: str) -> list[str]:
    return list(session.scalars(select(Grid.code).where(prefix_filter(Grid.code, prefix))))


def indicators(
    session: Session,
    entity: str,
    key: str,
    period: Period,
    weights: dict[str, Any] | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """Counts, rates, composite value and grade of one entity for ``[start, end)``.

    ``scope`` (a region code prefix) keeps only the counters of cases in that region."""
    if entity not in ENTITIES:
        raise Invalid(f"entity must be one of {', '.join(ENTITIES)}", field="entity", value=entity)
    w = weights or get_weights(session)
    if entity == "region":
        per_grid: dict[str, int] = defaultdict(int)
        c: dict[str, int] = defaultdict(int)
        for g, m, n in sums(session, entity, key, period, by_grid=True, scope=scope):
            c[m] += int(n)
            if m == "r_filed":
                per_grid[g] += int(n)
            elif m in ("r_parked", "r_dropped"):
                per_grid[g] -= int(n)
        out = region_figures(c, per_grid, _grids_under(session, key), w)
    else:
        c = {m: int(n) for m, n in sums(session, entity, key, period, scope=scope)}
        if entity == "unit":
            out = unit_figures(c, w, review_scores(session, period, w).get(int(key)))
        else:
            out = _FIGURES_OF[entity](c, w)
    out.update(
        entity=entity,
        key=key,
        start=period.start.isoformat(),
        end=period.end.isoformat(),
        grade=grade(None, out["composite"], w),
    )
    return out


# --------------------------------------------------------------------------- rankings

RANK_ENTITIES = ("unit", "street", "community", *POSITIONS)


def _active_units(session: Session) -> list[Any]:
    return list(
        session.execute(select(Unit.id, Unit.name).where(Unit.active.is_(True)).order_by(Unit.id))
    )


def _composites(
    session: Session,
    entity: str,
    period: Period,
    w: dict[str, Any],
    scope: str | None,
    units: list[Any] | None = None,
) -> dict[str, Any]:
    fam = "region" if entity in ("street", "community") else entity
    t, in_period = _table(period, fam, scope)
    base = select(t.metric, func.sum(t.count)).where(in_period, t.metric.in_(metrics_of(fam)))
    if scope:
        base = base.where(prefix_filter(t.grid_code, scope))
    out: dict[str, Any] = {}
    if entity == "unit" or entity in POSITIONS:
        col = t.unit_id if entity == "unit" else t.user_id
        counts: dict[int, dict[str, int]] = defaultdict(dict)
        for m, n, k in session.execute(base.add_columns(col).group_by(t.metric, col)):
            counts[k][m] = int(n)
        if entity == "unit":
            if units is None:
                units = _active_units(session)
            reviews = review_scores(session, period, w)
            for uid, name in units:
                f = unit_figures(counts.get(uid, {}), w, reviews.get(uid))
                out[str(uid)] = {"id": uid, "name": name, **f}
            return out
        users = session.execute(
            select(User.id, User.display_name, User.username)
            .join(UserRole, UserRole.user_id == User.id)
            .where(UserRole.role == POSITIONS[entity], User.active.is_(True))
            .order_by(User.id)
        ).all()
        for uid, name, username in users:
            f = _FIGURES_OF[entity](counts.get(uid, {}), w)
            out[str(uid)] = {"id": uid, "name": name, "username": username, **f}
        return out
    length = 9 if entity == "street" else 12
    regions = session.execute(
        select(Region.code, Region.name).where(func.length(Region.code) == length)
    ).all()
    grids_of: dict[str, list[str]] = defaultdict(list)
    for (g,) in session.execute(select(Grid.code)):
        grids_of[g[:length]].append(g)
    per_region: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_grid: dict[str, int] = defaultdict(int)
    q = base.add_columns(t.grid_code).group_by(t.metric, t.grid_code)
    for m, n, g in session.execute(q):
        per_region[g[:length]][m] += int(n)
        if m == "r_filed":
            per_grid[g] += int(n)
        elif m in ("r_parked", "r_dropped"):
            per_grid[g] -= int(n)
    for code, name in regions:
        f = region_figures(per_region.get(code, {}), per_grid, grids_of.get(code, []), w)
        out[code] = {"code": code, "name": name, **f}
    return out


def ranking(
    session: Session, entity: str, period: Period, top: int = 5, scope_prefix: str | None = None
) -> dict[str, Any]:
    """All entities by composite value (best first), change against the previous period and
    the 红黑榜 (top / bottom ``top``). Entities without a composite are listed last.

    ``entity``: unit, street, community, or a position (inspector, operator, shift_leader,
    dispatcher: every active user with that role); rows carry counts and rates."""
    if entity not in RANK_ENTITIES:
        raise Invalid(f"entity must be one of {', '.join(RANK_ENTITIES)}", field="entity")
    w = get_weights(session)
    units = _active_units(session) if entity == "unit" else None
    cur = _composites(session, entity, period, w, scope_prefix, units)
    prev = _composites(session, entity, period.previous(), w, scope_prefix, units)
    if scope_prefix and entity != "unit":
        cur = {k: v for k, v in cur.items() if k.startswith(scope_prefix)}
    rows = []
    for k, v in cur.items():
        p = prev.get(k, {}).get("composite")
        rows.append(
            {
                **{x: v[x] for x in ("id", "code", "name", "username") if x in v},
                "composite": v["composite"],
                "grade": grade(None, v["composite"], w),
                "previous": p,
                "change": _r2(v["composite"] - p)
                if v["composite"] is not None and p is not None
                else None,
                "rates": v["rates"],
                "counts": v["counts"],
            }
        )
    rows.sort(
        key=lambda r: (
            r["composite"] is None,
            -(r["composite"] or 0),
            str(r.get("code") or r.get("id")),
        )
    )
    rank = 0
    last: float | None = None
    for i, r in enumerate(rows, 1):
        if r["composite"] != last:
            rank, last = i, r["composite"]
        r["rank"] = rank if r["composite"] is not None else None
    scored = [r for r in rows if r["composite"] is not None]
    return {
        "entity": entity,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "previous_start": period.previous().start.isoformat(),
        "rows": rows,
        "red": scored[:top],
        "black": list(reversed(scored[-top:])) if scored else [],
    }


# --------------------------------------------------------------------------- drill-down

#: Figure name (as shown) → the counters behind it, with their sign.
FIGURES: dict[str, dict[str, dict[str, int]]] = {
    "unit": {
        "应处置数": {"u_dispatched": 1},
        "处置数": {"u_handled": 1},
        "按期处置数": {"u_handled_on_time": 1},
        "超期处置数": {"u_handled_late": 1},
        "返工数": {"u_rework": 1},
        "回退数": {"u_returned": 1},
        "延期数": {"u_extended": 1},
        "挂账数": {"u_parked": 1},
        "应结案数": {"u_dispatched": 1, "u_returned": -1, "u_parked": -1},
        "结案数": {"u_closed": 1},
        "按期结案数": {"u_closed_on_time": 1},
    },
    "region": {
        "立案数": {"r_filed": 1, "r_parked": -1, "r_dropped": -1},
        "应结案数": {"r_filed": 1, "r_parked": -1, "r_dropped": -1},
        "挂账数": {"r_parked": 1},
        "结案数": {"r_closed": 1},
        "按期结案数": {"r_closed_on_time": 1},
        "监督举报核实数": {"r_public_ok": 1},
    },
    "inspector": {
        "上报数": {"i_reported": 1},
        "有效上报数": {"i_valid": 1},
        "应核实数": {"i_verify_due": 1},
        "按时核实数": {"i_verify_on_time": 1},
        "应核查数": {"i_check_due": 1},
        "按时核查数": {"i_check_on_time": 1},
        "自行处置数": {"i_self_handled": 1},
        "网格立案数": {"i_grid_filed": 1},
        "漏报数": {"i_missed": 1},
    },
    "operator": {
        "受理数": {"o_accepted": 1},
        "核实派发数": {"o_verify_sent": 1},
        "核实按时派发数": {"o_verify_sent_on_time": 1},
        "核查派发数": {"o_check_sent": 1},
        "核查按时派发数": {"o_check_sent_on_time": 1},
    },
    "shift_leader": {
        "立案数": {"s_filed": 1},
        "按时立案数": {"s_filed_on_time": 1},
        "作废数": {"s_voided": 1},
        "结案数": {"s_closed": 1},
        "按时结案数": {"s_closed_on_time": 1},
    },
    "dispatcher": {
        "派遣数": {"d_dispatched": 1},
        "应派遣数": {"d_dispatched": 1},
        "按时派遣数": {"d_dispatched_on_time": 1},
        "派遣返工数": {"d_returned": 1},
    },
}


def _candidate_cases(session: Session, entity: str, key: str, period: Period) -> list[int]:
    end = datetime(period.end.year, period.end.month, period.end.day, tzinfo=TZ)
    q = select(Case.id).where(Case.reported_at < end)
    if entity == "region":
        q = q.where(prefix_filter(Case.grid_code, key))
    elif entity == "unit":
        q = q.where(
            Case.id.in_(
                select(CaseEvent.case_id).where(
                    CaseEvent.action == "dispatch", CaseEvent.unit_id == int(key)
                )
            )
        )
    else:
        uid = int(key)
        mine = [
            Case.reporter_user_id == uid,
            Case.id.in_(select(CaseEvent.case_id).where(CaseEvent.actor_id == uid)),
        ]
        if entity == "inspector":  # 漏报: cases of the inspector's grids
            mine.append(
                Case.grid_id.in_(
                    select(grid_inspectors.c.grid_id).where(grid_inspectors.c.user_id == uid)
                )
            )
        q = q.where(or_(*mine))
    return list(session.scalars(q))


def drilldown(
    session: Session,
    entity: str,
    key: str,
    figure: str,
    period: Period,
    scope: str | None = None,
) -> dict[str, Any]:
    """The cases behind one figure: replays the candidate cases' history (same definitions as
    the rollups). ``figure`` is a figure name (e.g. 结案数) or a counter name (u_closed).
    ``cases`` maps case id → its contribution (a case can count more than once, e.g. 返工)."""
    if entity not in ENTITIES:
        raise Invalid(f"entity must be one of {', '.join(ENTITIES)}", field="entity")
    parts = FIGURES[entity].get(figure)
    if parts is None and figure in METRICS and figure.startswith(_PREFIX[entity]):
        parts = {figure: 1}
    if parts is None:
        names = ", ".join(FIGURES[entity])
        raise Invalid(f"unknown figure {figure!r} for {entity}: one of {names}", field="metric")
    per_case: dict[int, int] = defaultdict(int)
    for f in replay(session, _candidate_cases(session, entity, key, period)):
        if f.metric not in parts or not (period.start <= f.day < period.end):
            continue
        if entity == "unit" and f.unit_id != int(key):
            continue
        if entity in POSITIONS and f.user_id != int(key):
            continue
        if entity == "region" and not f.grid_code.startswith(key):
            continue
        if scope and not f.grid_code.startswith(scope):
            continue
        per_case[f.case_id] += f.n * parts[f.metric]
    cases = {cid: n for cid, n in sorted(per_case.items()) if n}
    numbers = dict(
        session.execute(select(Case.id, Case.number).where(Case.id.in_(list(cases)))).all()
    )
    return {
        "entity": entity,
        "key": key,
        "figure": figure,
        "start": period.start.isoformat(),
        "end": period.end.isoformat(),
        "total": sum(cases.values()),
        "case_ids": list(cases),
        "cases": [{"id": cid, "number": numbers.get(cid), "count": n} for cid, n in cases.items()],
    }


def period_from(start: date | None, end: date | None, period: str | None) -> Period:
    if period:
        return parse_period(period)
    if start is None or end is None:
        raise Invalid("give either period or both start and end", field="period")
    if end <= start:
        raise Invalid("end must be after start (end is exclusive)", field="end")
    return Period(start, end)


def all_counts(session: Session) -> dict[tuple[Any, ...], int]:
    """Every non-zero counter (for comparisons)."""
    return {
        (r.day, r.unit_id, r.grid_code, r.category_id, r.user_id, r.metric): r.count
        for r in session.scalars(select(EvalDailyCount))
        if r.count != 0
    }


__all__ = [
    "DEFAULT_WEIGHTS",
    "Period",
    "drilldown",
    "get_weights",
    "indicators",
    "parse_period",
    "ranking",
    "set_weights",
]

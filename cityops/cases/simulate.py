"""Simulated case history (``cityops simulate cases``): realistic 案卷 for demos, tests, benchmarks.

``simulate_cases(db, days, per_day, seed, start=None, mode="service")`` generates ``per_day``
reports for each of ``days`` local days starting at ``start`` (default: ``days`` days before
today, so that the history ends now) in a city that already holds grids, categories, units
and users (the demo city: ``cityops demo``).

What is simulated (both modes draw the same per-case plan from the seed):

* **sources** — 监督员上报 57 %, 自行处置 3 %, 12345热线 15 %, 公众举报 10 %, 视频智能识别
  8 %, 物联感知 3 %, 上级/领导/媒体 4 %; report times follow each channel's day curve
  (inspectors in working hours, the public from morning to late evening, machines all day);
* **categories** — matters weighted to the common ones (暴露垃圾, 占道经营, 乱堆杂物, 道路不洁,
  店外经营, 非法小广告, 乱停放 …, a thin tail of the rest) and, for about a quarter of the
  reports, components (井盖, 路灯 … weighted by how many exist): the point is then within
  3 m of a real component of that category;
* **places** — random points inside random unit grids (each grid has a hot-spot weight
  drawn from the seed; points by rejection sampling inside the grid polygon);
* **durations** — 受理 minutes, 核实 ~20 min, 立案/派遣 minutes, 签收 ~15 min, 处置 a share
  of the time left to the category's handling deadline on the working-time clock (about
  10 % beyond it → ``handled_late`` and 超时 结案), 核查 ~25 min, 结案 ~20 min; the centre
  works 07:00–22:00 and inspectors 08:00–18:00, every day;
* **side flows** — 不予受理 (5 % of public reports), 核实不属实 → 作废 (10 %), 作废 instead of
  立案 (1 %), 回退 → 改派 (4 %, 80 % approved), 延期 (5 %, 75 % approved; sometimes a second
  one, approved by a leader), 挂账 → 恢复处置 days later (1.5 %), 核查不通过 → 返工 (6 %),
  督办 of late cases, repeated public reports merged (合并) into the open case (or
  不予受理 when it is already finished), repeated video detections merged automatically,
  自行处置. With ``per_day >= 40`` every day has at least one of each side flow.

Channels configured to be filed at intake (:func:`cityops.cases.service.auto_file_sources`,
物联感知 by default) skip 受理/核实/立案 as the workflow does. Cases still running when the
period ends are left where they are (待处置, 挂账 …) — unless ``finish=True`` (service mode),
which runs every case to its end.

临期/超期 come from the real deadline scheduler (:func:`cityops.cases.jobs.tick`, with its
automatic 督办/提级, events and notifications): service mode runs it every ``tick_minutes``
of simulated time and once at the end; bulk mode runs it once, at the end, for the cases
still open then.

Modes
=====

``service`` (default)
    Every report and action goes through :func:`cityops.cases.service.create_case` and
    :func:`cityops.cases.service.perform` with simulated ``now`` values, acted by the demo
    users (operator*, shift*, dispatcher*, the grid's inspector*, a handler* of the lead
    unit, leader*) — a discrete-event simulation in which each report's life is a generator
    of its next step's time. Everything the workflow writes is there: history, approvals,
    notifications, audit rows (under the acting user), attachments — a tiny generated JPEG
    where an action needs a photo, stored once per run through
    :func:`cityops.cases.queries.upload`; later photos are further attachment rows pointing
    at that stored file (``photos="upload"`` uploads every one). One transaction per
    simulated day. Deterministic for a seed on the same database (except the random public
    tracking codes). Use it for demo data, UI work and whatever must be exactly what the
    workflow produces. Speed: a few dozen cases per second.

``bulk`` (millions of cases: benchmarks, statistics, performance work)
    **Bypasses the workflow.** Complete ``cases`` rows with their ``case_events`` (one per
    action: the same actions, stages, actors, notes and data the service writes),
    ``case_units`` and ``case_approvals`` are computed with numpy, one vectorised step per
    workflow action (:class:`_Batch`), and written with bulk inserts (SQLite
    ``executemany``, PostgreSQL ``COPY``) in batches of ``batch_cases`` cases, one
    transaction each; with ``parallel`` (POSIX) the next batch is computed in a forked
    process while this one writes. A load at least as large as the table (and of at least
    :data:`DEFER_CHECKS_FROM` cases) drops the secondary indexes of ``cases`` and
    ``case_events`` (and on PostgreSQL the foreign keys of the case tables) and restores
    them once at the end (:func:`drop_checks` / :func:`restore_checks`; every run first
    restores whatever an interrupted one left missing). Stages, timestamps, deadlines and
    临期 instants (the service's working-time arithmetic, vectorised in
    :class:`VectorClock`), lead units (dispatch rules and category defaults, as
    :func:`~cityops.cases.service.match_rule`), grid codes, counts, ``handled_late`` and
    close types are exactly what the workflow computes: replaying a bulk history through
    ``service.perform`` gives the same case row (``tests/test_simulate.py``). Not written:
    notifications, attachments and per-row audit rows (one :func:`cityops.core.audit.record`
    summary per run). Differences from service mode: at most one 返工 per case; no
    scheduler history for cases that were late at some point but finished before the end;
    repeated reports look for their case within the same batch; a repeated video detection
    whose case is already finished is dropped (service mode opens a new case); the
    inspector of a 核实/核查 task is one of the grid's inspectors (not the least busy one).
    Never run it against a database that live users are working in.
"""

from __future__ import annotations

import heapq
import io
import json
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, TextIO

import h3.api.basic_int as h3i
import numpy as np
import shapely
from numpy.typing import NDArray
from PIL import Image
from scipy.special import ndtri
from sqlalchemy import Connection, ForeignKeyConstraint, Index, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.schema import AddConstraint

import cityops.models  # noqa: F401  (every mapper configured)
from cityops.access.models import User, UserRole
from cityops.cases import queries, service
from cityops.cases.models import (
    NEEDS_VERIFY,
    OPEN_STAGES,
    ApprovalRequest,
    Case,
    CaseAttachment,
    CaseEvent,
    CaseSequence,
    CaseUnit,
    DispatchRule,
)
from cityops.cases.storage import Storage, default_storage
from cityops.core import audit
from cityops.core.audit import Actor, current_actor
from cityops.core.db import Database
from cityops.core.errors import Conflict, DomainError, Invalid
from cityops.core.security import Principal, lock_for_write
from cityops.data import demo_names
from cityops.geo.index import GridIndex, indexes_for
from cityops.geo.models import (
    H3_RES,
    URGENCIES,
    Category,
    CategoryTimeLimit,
    Component,
    Region,
    Unit,
    grid_inspectors,
    unit_regions,
)
from cityops.geo.service import chosen_standard
from cityops.worktime import service as wt
from cityops.worktime.models import MAX_YEAR, MIN_YEAR

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
B = NDArray[np.bool_]
Arr = NDArray[Any]

# --------------------------------------------------------------------------- time

US = 1_000_000
MINUTE = 60 * US
HOUR = 60 * MINUTE
DAY = 24 * HOUR
#: Asia/Shanghai is UTC+8 all year (no daylight saving since 1991).
LOCAL_OFFSET = 8 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: "No time" in int64 time arrays.
NONE_T = int(np.iinfo(np.int64).min)
FAR_T = int(np.iinfo(np.int64).max)


def to_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def to_us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def local_midnight(d: date) -> int:
    """UTC microseconds of the local (Asia/Shanghai) midnight that starts ``d``."""
    return (d - date(1970, 1, 1)).days * DAY - LOCAL_OFFSET


def local_date(us: int) -> date:
    return date(1970, 1, 1) + timedelta(days=(int(us) + LOCAL_OFFSET) // DAY)


#: Limit units by index (arrays carry the index); the first two are natural time.
UNITS = ("natural_minutes", "natural_hours", "working_hours", "working_days")
UNIT_INDEX = {u: i for i, u in enumerate(UNITS)}
_UNIT_US = np.array([MINUTE, HOUR, HOUR, 0], dtype=np.int64)
_WORKING_DAYS = UNIT_INDEX["working_days"]


class VectorClock:
    """:class:`cityops.worktime.service.WorkClock`, vectorised over numpy arrays.

    Built from the clock's public calendar API (the working periods and day length of every
    day 2000–2099). Instants are int64 UTC microseconds; ``pos``/``at`` map them to working
    positions and back with the clock's arithmetic and rounding, so deadlines equal the
    service's to the microsecond.
    """

    _cache: ClassVar[dict[str, VectorClock]] = {}

    def __init__(self, clock: wt.WorkClock) -> None:
        first, last = date(MIN_YEAR, 1, 1), date(MAX_YEAR, 12, 31)
        n = (last - first).days + 1
        self.base_day = (first - date(1970, 1, 1)).days
        parsed: dict[tuple[tuple[str, str], ...], tuple[list[int], list[int]]] = {}
        per_day: list[tuple[list[int], list[int]]] = []
        day_len = np.zeros(n, dtype=np.int64)
        for k in range(n):
            d = first + timedelta(days=k)
            key = tuple(clock.periods_on(d))
            got = parsed.get(key)
            if got is None:
                got = parsed[key] = (
                    [wt.parse_hhmm(a) * MINUTE for a, _ in key],
                    [wt.parse_hhmm(b) * MINUTE for _, b in key],
                )
            per_day.append(got)
            day_len[k] = round(clock.minutes_per_day(d) * MINUTE)
        width = max(1, max(len(s) for s, _ in per_day))
        ps = np.zeros((n, width), dtype=np.int64)
        ln = np.zeros((n, width), dtype=np.int64)
        for k, (s, e) in enumerate(per_day):
            if s:
                ps[k, : len(s)] = s
                ln[k, : len(s)] = np.subtract(e, s)
        self.ps, self.ln = ps, ln
        self.cl = np.cumsum(ln, axis=1)
        self.cum = np.concatenate([[0], np.cumsum(self.cl[:, -1])]).astype(np.int64)
        self.day_len = day_len
        self.n = n

    @classmethod
    def of(cls, session: Session) -> VectorClock:
        clock = wt.get_clock(session)
        vc = cls._cache.get(clock.version)
        if vc is None:
            vc = cls._cache[clock.version] = cls(clock)
        return vc

    def _day(self, t: I64) -> tuple[I64, I64]:
        loc = t + LOCAL_OFFSET
        day = loc // DAY
        i = day - self.base_day
        if i.size and (i.min() < 0 or i.max() >= self.n):
            raise Invalid(f"a time lies outside the working-time calendar ({MIN_YEAR}–{MAX_YEAR})")
        return i, loc - day * DAY

    def pos(self, t: I64) -> I64:
        """Working position (working microseconds since 2000-01-01 local) of each instant."""
        i, us = self._day(np.asarray(t, dtype=np.int64))
        return self.cum[i] + np.clip(us[:, None] - self.ps[i], 0, self.ln[i]).sum(axis=1)

    def at(self, target: I64) -> I64:
        """Earliest instant whose working position is ``target`` (> 0)."""
        target = np.asarray(target, dtype=np.int64)
        if target.size and target.max() > self.cum[-1]:
            raise Invalid(f"a deadline falls after {MAX_YEAR}: outside the working-time calendar")
        i = np.maximum(np.searchsorted(self.cum, target, side="left") - 1, 0)
        rem = target - self.cum[i]
        cl = self.cl[i]
        p = np.minimum((rem[:, None] > cl).sum(axis=1), cl.shape[1] - 1)
        rows = np.arange(len(target))
        prev = np.where(p > 0, cl[rows, np.maximum(p - 1, 0)], 0)
        us = self.ps[i, p] + rem - prev
        return (i + self.base_day) * DAY + us - LOCAL_OFFSET

    def scale(self, t: I64, unit: I64) -> I64:
        """Microseconds of one ``unit`` (a working day: the day length on ``t``'s date)."""
        out = _UNIT_US[unit]
        days = unit == _WORKING_DAYS
        if days.any():
            i, _ = self._day(t[days])
            out[days] = self.day_len[i]
        return out

    def add(self, t: I64, amount: F64, unit: I64) -> I64:
        """``WorkClock.add`` (= ``deadline`` without pauses) for each element."""
        t = np.asarray(t, dtype=np.int64)
        unit = np.asarray(unit, dtype=np.int64)
        x = np.rint(np.asarray(amount, dtype=np.float64) * self.scale(t, unit)).astype(np.int64)
        out = t + x
        work = (unit >= 2) & (x != 0)
        if work.any():
            out[work] = self.at(self.pos(t[work]) + x[work])
        out[(unit >= 2) & (x == 0)] = t[(unit >= 2) & (x == 0)]
        return out

    def elapsed(self, a: I64, b: I64, unit: I64) -> F64:
        """``WorkClock.elapsed(a, b, unit=…)`` (0 where b <= a)."""
        a = np.asarray(a, dtype=np.int64)
        b = np.asarray(b, dtype=np.int64)
        unit = np.asarray(unit, dtype=np.int64)
        out = np.zeros(len(a), dtype=np.float64)
        m = b > a
        if not m.any():
            return out
        am, bm, um = a[m], b[m], unit[m]
        diff = (bm - am).astype(np.float64)
        work = um >= 2
        if work.any():
            diff[work] = (self.pos(bm[work]) - self.pos(am[work])).astype(np.float64)
        out[m] = diff / self.scale(am, um)
        return out

    def warn_before(self, due: I64, now: I64, amount: F64, unit: I64) -> I64:
        """临期 instant of the handling stage (``service._warn_before``)."""
        remaining = amount * (1 - service.WARN_FRACTION)
        left = self.elapsed(now, due, unit)
        out = np.asarray(now, dtype=np.int64).copy()
        m = left > remaining
        if m.any():
            out[m] = self.add(now[m], (left - remaining)[m], unit[m])
        return out

    def shift(self, x: I64, paused: I64, now: I64, unit: I64) -> I64:
        """``x`` moved by the time the clock stood still (``service._shift_for_pause``)."""
        out = np.asarray(x, dtype=np.int64).copy()
        m = out != NONE_T
        if m.any():
            out[m] = self.add(out[m], self.elapsed(paused[m], now[m], unit[m]), unit[m])
        return out


class LimitTable:
    """``worktime.resolve_limit`` for many cases at once (category limits read once)."""

    def __init__(self, session: Session) -> None:
        q = select(
            CategoryTimeLimit.category_id,
            CategoryTimeLimit.stage,
            CategoryTimeLimit.urgency,
            CategoryTimeLimit.amount,
            CategoryTimeLimit.unit,
        )
        self.by_cat = {(c, st, u): (float(a), un) for c, st, u, a, un in session.execute(q)}
        clock = wt.get_clock(session)
        self.defaults = {k: (v.amount, v.unit) for k, v in clock.default_limits.items()}

    def get(self, stage: str, category_id: int, urgency: str | None) -> tuple[float, str]:
        if urgency is not None and (category_id, stage, urgency) in self.by_cat:
            return self.by_cat[(category_id, stage, urgency)]
        if (category_id, stage, None) in self.by_cat:
            return self.by_cat[(category_id, stage, None)]
        if urgency is not None and (stage, urgency) in self.defaults:
            return self.defaults[(stage, urgency)]
        if (stage, None) in self.defaults:
            return self.defaults[(stage, None)]
        raise Invalid(f"no time limit for stage {stage}", field="stage", value=stage)

    def arrays(self, stage: str, cats: I64, urg: I64) -> tuple[F64, I64]:
        """(amount, unit index) per case; ``urg`` indexes :data:`URGENCIES`."""
        key = np.asarray(cats, dtype=np.int64) * 4 + urg
        uniq, inv = np.unique(key, return_inverse=True)
        amt = np.empty(len(uniq), dtype=np.float64)
        unit = np.empty(len(uniq), dtype=np.int64)
        for k, v in enumerate(uniq.tolist()):
            a, u = self.get(stage, v // 4, URGENCIES[v % 4])
            amt[k], unit[k] = a, UNIT_INDEX[u]
        return amt[inv], unit[inv]


def within_hours(t: I64, start_h: float, end_h: float, jitter: F64, jitter_min: float = 30) -> I64:
    """``t`` if its local time is within [start_h, end_h), else the next start (+ jitter)."""
    loc = np.asarray(t, dtype=np.int64) + LOCAL_OFFSET
    tod = loc % DAY
    midnight = loc - tod
    s, e = int(start_h * HOUR), int(end_h * HOUR)
    j = (np.asarray(jitter) * jitter_min * MINUTE).astype(np.int64)
    out = np.where(tod < s, midnight + s + j, np.where(tod >= e, midnight + DAY + s + j, loc))
    return out - LOCAL_OFFSET


def lognormal_us(u: F64, median_min: float, sigma: float, lo: float = 1.0, hi: float = 1e9) -> I64:
    """A log-normal delay in microseconds (minutes ``median_min``, clipped) from uniform draws."""
    z = ndtri(np.clip(u, 1e-9, 1 - 1e-9))
    minutes = np.clip(median_min * np.exp(sigma * z), lo, hi)
    return (minutes * MINUTE).astype(np.int64)


#: Bulk loads of at least this many cases (and at least the table's size) build the
#: secondary indexes (and on PostgreSQL check the foreign keys) once at the end instead of
#: row by row: see :func:`drop_checks`.
DEFER_CHECKS_FROM = 50_000

CENTRE_HOURS = (7.0, 22.0)
INSPECTOR_HOURS = (8.0, 18.0)
HANDLER_HOURS = (7.0, 20.0)


# --------------------------------------------------------------------------- the plan

SOURCE_LIST = ("inspector", "self", "hotline", "public", "video", "iot", "upper", "leader", "media")
SOURCE_P = np.array([0.57, 0.03, 0.15, 0.10, 0.08, 0.03, 0.02, 0.01, 0.01])
S_IDX = {s: i for i, s in enumerate(SOURCE_LIST)}
_VERIFY_SRC = np.array([s in NEEDS_VERIFY for s in SOURCE_LIST])
_REJECTABLE_SRC = np.array([s in ("public", "hotline", "media") for s in SOURCE_LIST])
_PUBLIC = [S_IDX["public"], S_IDX["hotline"]]
_FIELD = [S_IDX["inspector"], S_IDX["self"]]

#: Hourly report intensity (local time) per channel.
_H_INSPECTOR = [0.0] * 8 + [1.0, 1.4, 1.5, 1.2, 0.3, 0.5, 1.3, 1.4, 1.3, 0.9] + [0.0] * 6
_H_PUBLIC = [0.1, 0.05, 0.03, 0.03, 0.03, 0.05, 0.2, 0.6, 1.2, 1.6, 1.6, 1.3, 0.8, 0.9, 1.3,
             1.4, 1.3, 1.1, 1.0, 1.0, 0.9, 0.6, 0.3, 0.15]  # fmt: skip
_H_MACHINE = [0.3] * 6 + [0.6] + [1.0] * 14 + [0.6] * 3
_HOURS = {"inspector": _H_INSPECTOR, "self": _H_INSPECTOR, "video": _H_MACHINE, "iot": _H_MACHINE}

#: Weights of matter categories by (GB/T 47678) code; the others get :data:`MATTER_TAIL`.
MATTER_WEIGHTS: dict[str, float] = {
    "06010": 20, "09006": 10, "06036": 8, "06012": 8, "09005": 8, "07001": 7, "09009": 6,
    "09010": 5, "09011": 4, "06011": 4, "06042": 4, "09001": 3, "06017": 3, "08006": 3,
    "06013": 2, "06007": 2, "06029": 2, "08005": 2, "06014": 1.5, "07003": 1.5, "08004": 1.5,
    "06001": 1, "06035": 1, "06034": 0.5, "07002": 1, "06041": 1, "09012": 0.5,
}  # fmt: skip
MATTER_TAIL = 0.03
#: What the cameras recognise.
VIDEO_CODES = ("06010", "09006", "09005", "09009", "09010", "06036", "06012", "09011", "06042")
#: Share of reports about components (部件), by channel.
COMPONENT_SHARE = {"inspector": 0.3, "self": 0.2, "hotline": 0.25, "public": 0.25, "iot": 0.8}
_COMPONENT_PROBLEMS = ("破损", "缺失", "移位", "松动", "损坏")
_CHANNEL_TEXT = {"leader": "领导交办", "upper": "上级平台交办", "media": "媒体曝光"}


@dataclass(frozen=True)
class Rates:
    """Probabilities of the side flows (per case that reaches the step)."""

    reject: float = 0.05  # 不予受理 (public, hotline, media)
    verify_false: float = 0.10  # 核实不属实 → 作废
    void: float = 0.01  # 作废 instead of 立案
    ret: float = 0.04  # 回退
    ret_ok: float = 0.8
    extend: float = 0.05  # 延期
    extend_ok: float = 0.75
    second_extend: float = 0.15  # of approved extensions: another one (a leader decides)
    park: float = 0.015  # 挂账
    park_ok: float = 0.8
    late: float = 0.10  # 处置 after the deadline
    supervise: float = 0.35  # 督办 of late cases
    rework: float = 0.06  # 核查不通过 → 返工
    co_unit: float = 0.08  # a 协办 unit on a manual dispatch
    dup: float = 0.04  # a public/hotline report repeating a recent case
    repeat: float = 0.30  # a video detection repeating a recent case
    urgent: float = 0.05  # hotline/leader/media reports raised to 紧急


RATES = Rates()

# Columns of the per-case uniform draws (U_*: amounts and choices, F_*: side-flow flags).
(U_REPORTER, U_ACCEPT, U_VERIFY, U_FILE, U_DISPATCH, U_SIGN, U_RET_REQ, U_RET_DEC,
 U_REDISP, U_EXT_REQ, U_EXT_DEC, U_EXT_AMT, U_PARK_REQ, U_PARK_DEC, U_RESUME,
 U_HANDLE, U_CHECK, U_HANDLE2, U_CHECK2, U_CLOSE, U_ACTOR, U_UNIT, U_CO, U_TEXT, U_JIT,
 U_TARGET, U_HANDLER, F_REJECT, F_VFALSE, F_VOID, F_RETURN, F_RET_OK, F_EXT, F_EXT_OK,
 F_EXT2, F_PARK, F_PARK_OK, F_LATE, F_SUP, F_REWORK, F_COUNIT, F_DUP, F_URGENT,
 NU) = range(44)  # fmt: skip

REJECT_REASONS = ("不属于城市管理范围", "信息不全，无法定位", "已由其他部门处理")
VOID_REASONS = ("不属于城管职责范围", "重复立案", "问题描述不实")
RETURN_REASONS = ("不属于本单位职责", "权属不清，请重新派遣", "派遣单位有误")
EXTEND_REASONS = ("需调度专业车辆", "需协调权属单位", "材料采购中", "天气原因无法施工")
PARK_REASONS = ("需列入年度维修计划", "涉及拆迁，暂缓处置", "需专项资金")
HANDLE_NOTES = ("已处置完毕", "已清理", "已整改到位", "已修复", "现场已规范")
DUP_REJECT = "重复上报，原问题已处置"
AUTO_ACCEPT = "自动受理"
NO_INSPECTOR = "无法核实：网格无监督员"
MERGE_NOTE = "重复上报，合并"
SUPERVISE_NOTE = "请加快处置"
RESUME_NOTE = "恢复处置"
REWORK_NOTE = "现场问题未解决，返工"
CHECK_NOTE = "已整改"
VFALSE_NOTE = "现场未发现该问题"
DUP_TEXT = "市民再次反映："
REPEAT_TEXT = "视频再次识别："


def _pick(seq: Sequence[Any], u: float) -> Any:
    return seq[min(int(u * len(seq)), len(seq) - 1)]


def _pick_text(options: Sequence[str], u: F64) -> Arr:
    idx = np.minimum((np.asarray(u) * len(options)).astype(np.int64), len(options) - 1)
    return np.array(options, dtype=object)[idx]


def handle_fraction(u: F64, late: B) -> F64:
    """Share of the time left to the deadline used for 处置: 0.15–0.95, or 1 + Exp(0.8) late."""
    u = np.asarray(u, dtype=np.float64)
    ontime = 0.15 + 0.8 * u
    return np.where(late, 1.0 - 0.8 * np.log1p(-np.clip(u, 0, 1 - 1e-9)), ontime)


def handle_time(vc: VectorClock, base: I64, due: I64, natural: B, f: F64) -> I64:
    """When 处置 is reported: ``f`` of the (working or natural) time from ``base`` to ``due``."""
    base = np.asarray(base, dtype=np.int64)
    due = np.asarray(due, dtype=np.int64)
    out = base + 30 * MINUTE
    ok = due > base
    nat = ok & natural
    out[nat] = base[nat] + ((due[nat] - base[nat]) * f[nat]).astype(np.int64)
    work = np.flatnonzero(ok & ~natural)
    if work.size:
        p0 = vc.pos(base[work])
        step = np.rint((vc.pos(due[work]) - p0) * f[work]).astype(np.int64)
        moved = step > 0
        res = base[work].copy()
        res[moved] = vc.at(p0[moved] + step[moved])
        out[work] = res
    out = np.where(ok & (f > 1), np.maximum(out, due + 10 * MINUTE), out)
    return np.maximum(out, base + 10 * MINUTE)


# --------------------------------------------------------------------------- the city


@dataclass
class World:
    """What the simulation needs to know about the city (loaded once per run)."""

    gindex: GridIndex
    grid_cum: F64  # cumulative hot-spot weights, grid index order
    grid_addr: list[str]
    insp_ptr: I64  # CSR: inspectors of grid index g are insp_ids[insp_ptr[g]:insp_ptr[g+1]]
    insp_ids: I64
    principals: dict[int, Principal]
    name_arr: Arr  # user id → username
    operators: list[int]
    shifts: list[int]
    dispatchers: list[int]
    leaders: list[int]  # leaders without a scope (approve what needs a leader)
    handlers: dict[int, list[int]]  # unit id → handler user ids
    cats: dict[int, Category]
    matter_ids: I64
    matter_cum: F64
    video_ids: I64
    video_cum: F64
    comp_ids: I64  # components of the usable categories, sorted by (category, id)
    comp_cat: I64
    comp_lon: F64
    comp_lat: F64
    comp_owner: I64
    comp_maint: I64
    comp_cat_ptr: I64  # CSR over comp_* per entry of comp_cat_cum
    comp_cat_cum: F64
    district_unit: dict[tuple[str, str], int]  # (district, unit type) → first active unit
    candidates: dict[tuple[str, str], list[int]]  # (district, 处置单位|养护单位|*) → units
    any_handling: list[int]
    rules: list[DispatchRule]
    limits: LimitTable
    vclock: VectorClock

    @property
    def has_components(self) -> bool:
        return len(self.comp_cat_cum) > 0


def _principal(u: User, roles: set[str]) -> Principal:
    return Principal(
        user_id=u.id,
        username=u.username,
        display_name=u.display_name,
        roles=frozenset(roles),
        unit_id=u.unit_id,
        scope_region_code=u.scope_region_code,
        scope_unit_only=u.scope_unit_only,
    )


def load_world(session: Session, seed: int) -> World:
    """Grids, users, categories, components and units of the city; refuses an empty city."""
    gidx = indexes_for(session).grids(session)
    if len(gidx) == 0:
        raise Invalid("the city has no unit grids: load a city first (cityops demo)")
    weights = np.random.default_rng([seed, 1]).lognormal(0.0, 1.0, len(gidx))
    names = gidx.region_names
    addr = [
        f"{names.get(c[:6], '')}{names.get(c[:9], '')}{names.get(c[:12], '')}{c[-3:]}号网格"
        for c in gidx.codes
    ]
    roles: dict[int, set[str]] = {}
    for uid, role in session.execute(select(UserRole.user_id, UserRole.role)):
        roles.setdefault(uid, set()).add(role)
    users = list(session.scalars(select(User).where(User.active.is_(True)).order_by(User.id)))
    principals = {u.id: _principal(u, roles.get(u.id, set())) for u in users}

    def with_role(role: str, unscoped: bool = False) -> list[int]:
        return [
            u.id
            for u in users
            if role in roles.get(u.id, set()) and not (unscoped and u.scope_region_code)
        ]

    operators, shifts = with_role("operator"), with_role("shift_leader")
    if not operators or not shifts:
        raise Invalid("the city needs active operator and shift_leader users (cityops demo)")
    handlers: dict[int, list[int]] = {}
    for u in users:
        if "handler" in roles.get(u.id, set()) and u.unit_id is not None:
            handlers.setdefault(u.unit_id, []).append(u.id)
    by_grid: dict[int, list[int]] = {}
    q = select(grid_inspectors.c.grid_id, grid_inspectors.c.user_id).order_by(
        grid_inspectors.c.grid_id, grid_inspectors.c.user_id
    )
    for gid, uid in session.execute(q):
        if uid in principals and "inspector" in principals[uid].roles:
            by_grid.setdefault(int(gid), []).append(int(uid))
    grid_list = gidx.ids.tolist()
    counts = np.array([len(by_grid.get(g, [])) for g in grid_list], dtype=np.int64)
    insp_ids = np.array([u for g in grid_list for u in by_grid.get(g, [])], dtype=np.int64)
    name_arr = np.full(max(principals, default=0) + 1, None, dtype=object)
    for uid, p in principals.items():
        name_arr[uid] = p.username
    # categories
    std = chosen_standard(session)
    cats = {c.id: c for c in session.scalars(select(Category))}
    usable = sorted(
        (c for c in cats.values() if c.enabled and c.standard in (std, "local")), key=lambda c: c.id
    )
    matters = [c for c in usable if c.kind == "matter"]
    if not matters:
        raise Invalid("the city has no enabled matter categories")
    video = [c for c in matters if c.code in VIDEO_CODES] or matters

    def cum(cs: list[Category]) -> F64:
        w = np.array([MATTER_WEIGHTS.get(c.code, MATTER_TAIL) for c in cs])
        return np.cumsum(w / w.sum())

    # components of the usable component categories, sorted by category
    comp_cats = {c.id for c in usable if c.kind == "component"}
    rows = [
        r
        for r in session.execute(
            select(
                Component.id,
                Component.category_id,
                Component.lon,
                Component.lat,
                Component.owner_unit_id,
                Component.maintainer_unit_id,
            ).order_by(Component.category_id, Component.id)
        )
        if r[1] in comp_cats
    ]
    comp = np.array([(r[0], r[1], r[4] or -1, r[5] or -1) for r in rows], dtype=np.int64)
    comp = comp.reshape(-1, 4)
    lonlat = np.array([(r[2], r[3]) for r in rows], dtype=np.float64).reshape(-1, 2)
    ccat, start, cnt = np.unique(comp[:, 1], return_index=True, return_counts=True)

    def boost(cid: int) -> float:
        name = cats[cid].name
        return 3.0 if ("井盖" in name or "箅子" in name) else 2.0 if "路灯" in name else 1.0

    cw = cnt * np.array([boost(int(c)) for c in ccat.tolist()])
    # units: the defaults of match_rule and what a dispatcher picks by hand
    q1 = select(Region.id, Region.code).where(Region.level == "district")
    districts: dict[int, str] = {rid: code for rid, code in session.execute(q1)}
    units = {u.id: u for u in session.scalars(select(Unit).where(Unit.active.is_(True)))}
    district_unit: dict[tuple[str, str], int] = {}
    unit_districts: dict[int, set[str]] = {}
    q2 = select(unit_regions.c.unit_id, unit_regions.c.region_id).order_by(unit_regions.c.unit_id)
    for uid, rid in session.execute(q2):
        if uid in units and rid in districts:
            unit_districts.setdefault(uid, set()).add(districts[rid])
            district_unit.setdefault((districts[rid], units[uid].unit_type), uid)
    candidates: dict[tuple[str, str], list[int]] = {}
    for uid in sorted(units):
        if uid not in handlers:
            continue
        t = units[uid].unit_type
        pref = {"养护单位": "养护单位", "权属单位": "养护单位", "处置单位": "处置单位"}.get(t)
        for d in sorted(unit_districts.get(uid, ())):
            if pref:
                candidates.setdefault((d, pref), []).append(uid)
            candidates.setdefault((d, "*"), []).append(uid)
    any_handling = sorted(u for u in units if u in handlers)
    if not any_handling:
        raise Invalid("no unit has an active handler: load the demo users (cityops demo)")
    rules = list(
        session.scalars(
            select(DispatchRule).where(DispatchRule.active.is_(True)).order_by(DispatchRule.id)
        )
    )
    return World(
        gindex=gidx,
        grid_cum=np.cumsum(weights / weights.sum()),
        grid_addr=addr,
        insp_ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        insp_ids=insp_ids,
        principals=principals,
        name_arr=name_arr,
        operators=operators,
        shifts=shifts,
        dispatchers=with_role("dispatcher") or shifts,
        leaders=with_role("leader", unscoped=True),
        handlers=handlers,
        cats=cats,
        matter_ids=np.array([c.id for c in matters], dtype=np.int64),
        matter_cum=cum(matters),
        video_ids=np.array([c.id for c in video], dtype=np.int64),
        video_cum=cum(video),
        comp_ids=comp[:, 0].copy(),
        comp_cat=comp[:, 1].copy(),
        comp_lon=lonlat[:, 0].copy(),
        comp_lat=lonlat[:, 1].copy(),
        comp_owner=comp[:, 2].copy(),
        comp_maint=comp[:, 3].copy(),
        comp_cat_ptr=np.concatenate([start, [len(comp)]]).astype(np.int64),
        comp_cat_cum=np.cumsum(cw / cw.sum()) if len(cw) else np.empty(0),
        district_unit=district_unit,
        candidates=candidates,
        any_handling=any_handling,
        rules=rules,
        limits=LimitTable(session),
        vclock=VectorClock.of(session),
    )


def plan_rng(seed: int) -> np.random.Generator:
    """The stream the reports are drawn from, day by day (the same in both modes)."""
    return np.random.default_rng([seed, 2])


def _choose(cum: F64, u: F64) -> I64:
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1).astype(np.int64)


def sample_in_grids(world: World, which: I64, rng: np.random.Generator) -> tuple[F64, F64]:
    """Uniform random points inside the given grids (rejection sampling in their bboxes)."""
    geoms = world.gindex.geoms[which]
    b = shapely.bounds(geoms)
    lon = np.empty(len(which))
    lat = np.empty(len(which))
    todo = np.arange(len(which))
    for _ in range(30):
        if not todo.size:
            break
        x = b[todo, 0] + rng.random(todo.size) * (b[todo, 2] - b[todo, 0])
        y = b[todo, 1] + rng.random(todo.size) * (b[todo, 3] - b[todo, 1])
        ok = shapely.contains_xy(geoms[todo], x, y)
        lon[todo[ok]], lat[todo[ok]] = x[ok], y[ok]
        todo = todo[~ok]
    if todo.size:
        p = shapely.point_on_surface(geoms[todo])
        lon[todo], lat[todo] = shapely.get_x(p), shapely.get_y(p)
    return lon, lat


def jitter(lon: F64, lat: F64, metres: F64, u: F64) -> tuple[F64, F64]:
    """Points ``metres`` away in direction ``u`` × 360°."""
    ang = np.asarray(u) * 2 * np.pi
    dy = metres * np.sin(ang) / 111_320.0
    dx = metres * np.cos(ang) / (111_320.0 * np.cos(np.radians(lat)))
    return lon + dx, lat + dy


@dataclass
class Reports:
    """Planned reports (struct of arrays), sorted by report time."""

    t: I64
    src: I64
    cat: I64
    comp: I64  # row into World.comp_* or -1
    urg: I64  # index into URGENCIES
    grid: I64  # grid index (GridIndex order)
    lon: F64
    lat: F64
    reporter: I64
    desc: list[str]
    citizen: list[str | None]
    phone: list[str | None]
    U: F64  # (n, NU) uniform draws
    kind: I64  # 0 ordinary, 1 repeats a recent case (public), 2 video repeat

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def concat(parts: Sequence[Reports]) -> Reports:
        out: dict[str, Any] = {}
        for k, v in parts[0].__dict__.items():
            vals = [getattr(p, k) for p in parts]
            out[k] = [x for vs in vals for x in vs] if isinstance(v, list) else np.concatenate(vals)
        return Reports(**out)

    def take(self, idx: I64) -> Reports:
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = [v[i] for i in idx.tolist()] if isinstance(v, list) else v[idx]
        return Reports(**out)


def _citizens(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    sn, gn = demo_names.SURNAMES, demo_names.GIVEN_NAMES
    a = rng.integers(0, len(sn), n).tolist()
    b = rng.integers(0, len(gn), n).tolist()
    pre = ("138", "139", "158", "186", "187", "135", "152")
    c = rng.integers(0, len(pre), n).tolist()
    d = rng.integers(0, 10**8, n).tolist()
    names = [sn[i] + gn[j] for i, j in zip(a, b, strict=True)]
    return names, [f"{pre[i]}{x:08d}" for i, x in zip(c, d, strict=True)]


def describe(world: World, src: int, cat_id: int, addr: str, u: float) -> str:
    c = world.cats[cat_id]
    what = c.name + (_pick(_COMPONENT_PROBLEMS, u) if c.kind == "component" else "")
    s = SOURCE_LIST[src]
    if s == "inspector":
        return f"巡查发现：{addr}{what}"
    if s == "self":
        return f"{addr}{what}，已自行处置"
    if s in ("public", "hotline"):
        return f"市民反映{addr}{what}，请尽快处理"
    if s == "video":
        return f"视频智能识别：{addr}疑似{what}"
    if s == "iot":
        return f"物联感知告警：{addr}{what}"
    return f"{_CHANNEL_TEXT[s]}：{addr}{what}"


def sample_reports(
    world: World, rng: np.random.Generator, day_starts: Sequence[int], per_day: int, rates: Rates
) -> Reports:
    """``per_day`` planned reports for each local day starting at ``day_starts`` (UTC µs)."""
    nd = len(day_starts)
    n = nd * per_day
    day = np.repeat(np.asarray(day_starts, dtype=np.int64), per_day)
    src = _choose(np.cumsum(SOURCE_P / SOURCE_P.sum()), rng.random(n))
    U = rng.random((n, NU))
    hour = np.zeros(n, dtype=np.int64)
    for s_idx, s in enumerate(SOURCE_LIST):
        m = src == s_idx
        if m.any():
            w = np.asarray(_HOURS.get(s, _H_PUBLIC), dtype=np.float64)
            hour[m] = _choose(np.cumsum(w / w.sum()), rng.random(int(m.sum())))
    t = day + hour * HOUR + (rng.random(n) * HOUR).astype(np.int64)
    if per_day >= 40:
        _ensure_flows(src, U, t, nd, per_day, rates, rng)
    # categories and places
    share = np.array([COMPONENT_SHARE.get(s, 0.0) for s in SOURCE_LIST])[src]
    is_comp = (rng.random(n) < share) & world.has_components
    cat = np.zeros(n, dtype=np.int64)
    comp = np.full(n, -1, dtype=np.int64)
    video = (src == S_IDX["video"]) & ~is_comp
    mat = ~is_comp & ~video
    cat[mat] = world.matter_ids[_choose(world.matter_cum, rng.random(int(mat.sum())))]
    cat[video] = world.video_ids[_choose(world.video_cum, rng.random(int(video.sum())))]
    grid = _choose(world.grid_cum, rng.random(n))
    lon, lat = np.zeros(n), np.zeros(n)
    m_idx = np.flatnonzero(~is_comp)
    lon[m_idx], lat[m_idx] = sample_in_grids(world, grid[m_idx], rng)
    c_idx = np.flatnonzero(is_comp)
    if c_idx.size:
        k = _choose(world.comp_cat_cum, rng.random(c_idx.size))
        lo, hi = world.comp_cat_ptr[k], world.comp_cat_ptr[k + 1]
        row = lo + np.minimum((rng.random(c_idx.size) * (hi - lo)).astype(np.int64), hi - lo - 1)
        comp[c_idx] = row
        cat[c_idx] = world.comp_cat[row]
        lon[c_idx], lat[c_idx] = jitter(
            world.comp_lon[row],
            world.comp_lat[row],
            rng.random(c_idx.size) * 3.0,
            rng.random(c_idx.size),
        )
        found = world.gindex.locate_many(lon[c_idx], lat[c_idx])
        # a component point that ended up outside every grid stays at the component
        out = found < 0
        lon[c_idx[out]], lat[c_idx[out]] = world.comp_lon[row[out]], world.comp_lat[row[out]]
        found[out] = world.gindex.locate_many(lon[c_idx[out]], lat[c_idx[out]])
        keep = found >= 0
        grid[c_idx[keep]] = found[keep]
    urg_of = {cid: URGENCIES.index(c.default_urgency or "一般") for cid, c in world.cats.items()}
    urg = np.array([urg_of[c] for c in cat.tolist()], dtype=np.int64)
    up = np.isin(src, [S_IDX["hotline"], S_IDX["leader"], S_IDX["media"]])
    up &= (U[:, F_URGENT] < rates.urgent) & (urg == URGENCIES.index("一般"))
    urg[up] = URGENCIES.index("紧急")
    # reporters: an inspector of the grid, else an operator (no inspector: a hotline call)
    cnt = world.insp_ptr[grid + 1] - world.insp_ptr[grid]
    field_ = np.isin(src, _FIELD)
    src[field_ & (cnt == 0)] = S_IDX["hotline"]
    field_ &= cnt > 0
    pick = world.insp_ptr[grid] + np.minimum((U[:, U_REPORTER] * cnt).astype(np.int64), cnt - 1)
    reporter = np.zeros(n, dtype=np.int64)
    reporter[field_] = world.insp_ids[pick[field_]]
    ops = np.asarray(world.operators, dtype=np.int64)
    k_op = np.minimum((U[:, U_REPORTER] * len(ops)).astype(np.int64), len(ops) - 1)
    reporter[~field_] = ops[k_op[~field_]]
    kind = np.zeros(n, dtype=np.int64)
    kind[np.isin(src, _PUBLIC) & (U[:, F_DUP] < rates.dup)] = 1
    kind[(src == S_IDX["video"]) & (U[:, F_DUP] < rates.repeat)] = 2
    names, phones = _citizens(rng, n)
    public = np.isin(src, _PUBLIC).tolist()
    desc = [
        describe(world, s, c, world.grid_addr[g], u)
        for s, c, g, u in zip(
            src.tolist(), cat.tolist(), grid.tolist(), U[:, U_TEXT].tolist(), strict=True
        )
    ]
    r = Reports(
        t=t,
        src=src,
        cat=cat,
        comp=comp,
        urg=urg,
        grid=grid,
        lon=lon,
        lat=lat,
        reporter=reporter,
        desc=desc,
        citizen=[c if p else None for c, p in zip(names, public, strict=True)],
        phone=[c if p else None for c, p in zip(phones, public, strict=True)],
        U=U,
        kind=kind,
    )
    return r.take(np.argsort(t, kind="stable"))


def _ensure_flows(
    src: I64, U: F64, t: I64, nd: int, per_day: int, rates: Rates, rng: np.random.Generator
) -> None:
    """At least one of each side flow per day, on distinct ordinary reports."""
    for d in range(nd):
        lo, hi = d * per_day, (d + 1) * per_day
        s, u, tt = src[lo:hi], U[lo:hi], t[lo:hi]
        if not (s == S_IDX["self"]).any():
            cand = np.flatnonzero(s == S_IDX["inspector"])
            if cand.size:
                s[cand[np.argmax(tt[cand])]] = S_IDX["self"]
        pub = np.flatnonzero(np.isin(s, _PUBLIC))
        if pub.size < 4:
            extra = np.flatnonzero(s == S_IDX["inspector"])
            extra = extra[np.argsort(tt[extra])][: 4 - pub.size]
            s[extra] = S_IDX["hotline"]
            pub = np.flatnonzero(np.isin(s, _PUBLIC))
        pub = pub[np.argsort(tt[pub], kind="stable")]
        # the day's last public report repeats the case reported just before it
        if not (u[pub, F_DUP] < rates.dup).any():
            u[pub[-1], F_DUP] = 0.0
            u[pub[-1], U_TARGET] = 0.999
        normal = pub[u[pub, F_DUP] >= rates.dup]
        if normal.size and not (u[normal, F_REJECT] < rates.reject).any():
            u[normal[0], F_REJECT] = 0.0
        ver = normal[u[normal, F_REJECT] >= rates.reject]
        if ver.size and not (u[ver, F_VFALSE] < rates.verify_false).any():
            u[ver[0], F_VFALSE] = 0.0
        # ordinary inspector reports of the first part of the day carry the handling flows
        ordinary = np.flatnonzero(s == S_IDX["inspector"])
        ordinary = ordinary[np.argsort(tt[ordinary], kind="stable")]
        ordinary = ordinary[: max(1, int(len(ordinary) * 0.6))]
        taken: set[int] = set()
        for flag, ok, rate in (
            (F_RETURN, F_RET_OK, rates.ret),
            (F_EXT, F_EXT_OK, rates.extend),
            (F_PARK, F_PARK_OK, rates.park),
            (F_REWORK, -1, rates.rework),
            (F_LATE, F_SUP, rates.late),
            (F_VOID, -1, rates.void),
        ):
            if (u[ordinary, flag] < rate).any():
                continue
            free = [int(i) for i in ordinary if int(i) not in taken]
            if not free:
                break
            i = free[int(rng.integers(len(free)))]
            taken.add(i)
            u[i, flag] = 0.0
            if ok >= 0:
                u[i, ok] = 0.0


# --------------------------------------------------------------------------- dispatch


def manual_units(
    world: World, cat_id: int, grid_code: str, u: float, u_co: float, co: bool
) -> tuple[int, list[int]]:
    """The lead unit (and maybe a 协办 unit) a dispatcher picks when no rule decides:
    facility problems (big classes 01–05) to a 养护单位 of the district, the rest to a
    处置单位."""
    d = grid_code[:6]
    pref = (
        "养护单位"
        if world.cats[cat_id].big_class_code in ("01", "02", "03", "04", "05")
        else "处置单位"
    )
    cands = world.candidates.get((d, pref)) or world.candidates.get((d, "*")) or world.any_handling
    lead = int(_pick(cands, u))
    others = [x for x in world.candidates.get((d, "*"), []) if x != lead]
    return lead, ([int(_pick(others, u_co))] if co and others else [])


def reassign_unit(world: World, grid_code: str, current: int | None, u: float) -> int:
    """改派 after an approved 回退: another unit of the district."""
    pool = [x for x in (world.candidates.get((grid_code[:6], "*")) or []) if x != current]
    pool = pool or [x for x in world.any_handling if x != current] or world.any_handling
    return int(_pick(pool, u))


# --------------------------------------------------------------------------- summary


@dataclass
class SimSummary:
    mode: str
    seed: int
    days: int
    per_day: int
    start: str
    end: str
    reports: int = 0
    cases: int = 0
    first_case_id: int | None = None
    last_case_id: int | None = None
    stages: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    events: int = 0
    approvals: int = 0
    attachments: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "seed": self.seed,
            "days": self.days,
            "per_day": self.per_day,
            "start": self.start,
            "end": self.end,
            "reports": self.reports,
            "cases": self.cases,
            "case_ids": [self.first_case_id, self.last_case_id],
            "stages": self.stages,
            "counts": self.counts,
            "events": self.events,
            "approvals": self.approvals,
            "attachments": self.attachments,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "cases_per_s": round(self.cases_per_s, 1),
        }


def _summarise(session: Session, summary: SimSummary) -> None:
    """Counts of the run's cases (ids first_case_id … last_case_id), read from the database."""
    lo, hi = summary.first_case_id, summary.last_case_id
    if lo is None or hi is None:
        return
    ids = (Case.id >= lo, Case.id <= hi)

    def count(*conds: Any) -> int:
        return int(session.scalar(select(func.count()).select_from(Case).where(*ids, *conds)) or 0)

    summary.cases = count()
    q = select(Case.stage, func.count()).where(*ids).group_by(Case.stage).order_by(Case.stage)
    summary.stages = {s: int(n) for s, n in session.execute(q)}
    counts = {
        "closed_on_time": count(Case.stage == "closed", Case.close_type == "正常"),
        "closed_late": count(Case.stage == "closed", Case.close_type == "超时"),
        "self_handled": count(Case.source == "self"),
        "handled_late": count(Case.handled_late.is_(True)),
        "overdue_open": count(Case.overdue.is_(True)),
        "near_due_open": count(Case.near_due.is_(True)),
        "returned": count(Case.return_count > 0),
        "extended": count(Case.extension_count > 0),
        "reworked": count(Case.rework_count > 0),
        "supervised": count(Case.supervised.is_(True)),
        "merged": count(Case.stage == "merged"),
        "with_repeats": count(Case.report_count > 1),
    }
    counts = {**summary.counts, **counts}
    aq = (
        select(ApprovalRequest.kind, ApprovalRequest.decision, func.count())
        .where(ApprovalRequest.case_id >= lo, ApprovalRequest.case_id <= hi)
        .group_by(ApprovalRequest.kind, ApprovalRequest.decision)
    )
    for kind, decision, n in session.execute(aq):
        key = f"{kind}_{decision or 'pending'}"
        counts[key] = counts.get(key, 0) + int(n)
        summary.approvals += int(n)
    summary.counts = counts
    eq = select(func.count()).select_from(CaseEvent)
    summary.events = int(
        session.scalar(eq.where(CaseEvent.case_id >= lo, CaseEvent.case_id <= hi)) or 0
    )
    aq2 = select(func.count()).select_from(CaseAttachment)
    aq2 = aq2.where(CaseAttachment.case_id >= lo, CaseAttachment.case_id <= hi)
    summary.attachments = int(session.scalar(aq2) or 0)


# --------------------------------------------------------------------------- service mode


def tiny_jpeg(color: tuple[int, int, int] = (120, 140, 90)) -> bytes:
    """A 32 × 24 JPEG (the simulated site photo)."""
    out = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(out, format="JPEG", quality=70)
    return out.getvalue()


@dataclass
class _Snap:
    """A case after an action, as plain values (safe across sessions)."""

    stage: str
    assignee: int | None
    lead: int | None
    handle_deadline: int | None


class _Stuck(Exception):
    """The case cannot go on (its unit has no handler): it stays where it is."""


class _ServiceSim:
    """Discrete-event simulation: each report's life is a generator yielding its next time."""

    def __init__(
        self,
        db: Database,
        world: World,
        rates: Rates,
        seed: int,
        storage: Storage,
        photos: str,
        summary: SimSummary,
        out: TextIO | None,
    ) -> None:
        self.db, self.w, self.rates = db, world, rates
        self.rng = plan_rng(seed)
        self.storage, self.photos = storage, photos
        self.summary, self.out = summary, out
        self.s: Session | None = None
        self.heap: list[tuple[int, int, Iterator[int]]] = []
        self.seq = 0
        self.template: dict[str, Any] | None = None
        self.jpeg = tiny_jpeg()
        #: ordinary cases created: (report time, category, lon, lat, urgency index)
        self.recent: list[tuple[int, int, float, float, int]] = []
        self.actions = 0
        self.live = 0

    @property
    def session(self) -> Session:
        assert self.s is not None
        return self.s

    def _error(self, what: str) -> None:
        self.summary.errors[what] = self.summary.errors.get(what, 0) + 1

    def act(self, who: int, case_id: int, action: str, payload: dict[str, Any], t: int) -> _Snap:
        p = self.w.principals[who]
        token = current_actor.set(Actor(p.user_id, p.username))
        try:
            c = service.perform(self.session, p, case_id, action, payload, None, to_dt(t))
        finally:
            current_actor.reset(token)
        self.actions += 1
        hd = to_us(c.handle_deadline) if c.handle_deadline else None
        return _Snap(c.stage, c.assignee_user_id, c.lead_unit_id, hd)

    def photo(self, who: int, t: int) -> int:
        """An uploaded photo of ``who`` (not yet bound to a case)."""
        s = self.session
        p = self.w.principals[who]
        if self.photos == "upload" or self.template is None:
            res = queries.upload(s, p, self.storage, "photo.jpg", "image/jpeg", self.jpeg)
            att = s.get(CaseAttachment, res["id"])
            assert att is not None
            att.uploaded_at = to_dt(t)
            keys = ("filename", "content_type", "size", "sha256", "storage_key", "public_key")
            self.template = {k: getattr(att, k) for k in keys}
            return int(res["id"])
        att = CaseAttachment(
            case_id=None,
            purpose="before",
            uploaded_by=p.user_id,
            uploaded_at=to_dt(t),
            **self.template,
        )
        s.add(att)
        s.flush()
        return att.id

    @staticmethod
    def _hours(t: int, u: float, hours: tuple[float, float]) -> int:
        return int(within_hours(np.array([t]), *hours, np.array([u]))[0])

    @staticmethod
    def _delay(u: float, median: float, sigma: float, lo: float, hi: float) -> int:
        return int(lognormal_us(np.array([u]), median, sigma, lo, hi)[0])

    def _handler(self, unit: int | None, u: float) -> int:
        hs = self.w.handlers.get(unit or -1)
        if not hs:
            raise _Stuck(f"unit {unit} has no handler")
        return int(_pick(hs, u))

    def _handle_at(self, cat: int, urg: int, base: int, due: int, f: float) -> int:
        _, unit = self.w.limits.get("handle", cat, URGENCIES[urg])
        nat = np.array([UNIT_INDEX[unit] < 2])
        return int(
            handle_time(self.w.vclock, np.array([base]), np.array([due]), nat, np.array([f]))[0]
        )

    def life(self, r: Reports, i: int) -> Iterator[int]:
        """One report, from 上报 to 结案 (or wherever it ends); yields the time of each step."""
        w, rates, U = self.w, self.rates, r.U[i]
        t = int(r.t[i])
        src = SOURCE_LIST[int(r.src[i])]
        cat, urg, kind = int(r.cat[i]), int(r.urg[i]), int(r.kind[i])
        lon, lat, desc = float(r.lon[i]), float(r.lat[i]), r.desc[i]
        reporter = int(r.reporter[i])
        if kind:
            window = 48 * HOUR if kind == 1 else 6 * HOUR
            recent = [x for x in self.recent if t - window <= x[0] < t]
            if recent:
                _, cat, lon0, lat0, urg = _pick(recent, U[U_TARGET])
                jl, ja = jitter(
                    np.array([lon0]),
                    np.array([lat0]),
                    np.array([2 + 10 * U[U_JIT]]),
                    np.array([U[U_TEXT]]),
                )
                lon, lat = float(jl[0]), float(ja[0])
                desc = (DUP_TEXT if kind == 1 else REPEAT_TEXT) + w.cats[cat].name
            else:
                kind = 0
        data: dict[str, Any] = {
            "source": src,
            "category_id": cat,
            "description": desc,
            "lon": lon,
            "lat": lat,
            "address": w.grid_addr[int(r.grid[i])],
            "urgency": URGENCIES[urg],
        }
        if r.citizen[i]:
            data["reporter_name"], data["reporter_phone"] = r.citizen[i], r.phone[i]
        s = self.session
        if src in ("inspector", "self"):
            data["attachment_ids"] = [self.photo(reporter, t)]
        p = w.principals[reporter]
        token = current_actor.set(Actor(p.user_id, p.username))
        sp = s.begin_nested()
        try:
            intake = service.create_case(s, p, data, to_dt(t))
            sp.commit()
        except DomainError as exc:
            sp.rollback()
            self._error(f"report: {exc.message}"[:100])
            return
        finally:
            current_actor.reset(token)
        self.actions += 1
        if intake.merged:
            self.summary.counts["repeats_merged"] = self.summary.counts.get("repeats_merged", 0) + 1
            return
        cid = intake.case.id
        grid_code = intake.case.grid_code or ""
        if self.summary.first_case_id is None:
            self.summary.first_case_id = cid
        self.summary.last_case_id = cid
        if src == "self":
            return
        if kind == 0:
            self.recent.append((t, cat, intake.case.lon, intake.case.lat, urg))
            if len(self.recent) > 20_000:
                self.recent = [x for x in self.recent if x[0] >= t - 48 * HOUR]
        dups = [c.id for c in intake.duplicates] if kind == 1 else []
        op = _pick(w.operators, U[U_ACTOR])
        shift = _pick(w.shifts, U[U_ACTOR])
        dispatcher = _pick(w.dispatchers, U[U_ACTOR])
        hd = intake.case.handle_deadline
        c = _Snap(intake.case.stage, intake.case.assignee_user_id, intake.case.lead_unit_id,
                  to_us(hd) if hd else None)  # fmt: skip
        # 受理 (合并 a repeated report, 不予受理); configured channels are filed at intake
        if c.stage == "accept":
            t = self._hours(t + self._delay(U[U_ACCEPT], 4, 0.8, 0.5, 240), U[U_JIT], CENTRE_HOURS)
            yield t
            if kind == 1:
                try:
                    self.act(op, cid, "merge", {"into_case_id": dups[0], "note": MERGE_NOTE}, t)
                except (DomainError, IndexError):
                    self.act(op, cid, "reject", {"reason": DUP_REJECT}, t)
                return
            if _REJECTABLE_SRC[S_IDX[src]] and U[F_REJECT] < rates.reject:
                self.act(op, cid, "reject", {"reason": _pick(REJECT_REASONS, U[U_TEXT])}, t)
                return
            try:
                c = self.act(op, cid, "accept", {}, t)
            except Conflict:  # nobody can verify it
                self.act(op, cid, "reject", {"reason": NO_INSPECTOR}, t)
                return
        # 核实
        if c.stage == "verify":
            t = self._hours(
                t + self._delay(U[U_VERIFY], 20, 0.6, 3, 600), U[U_JIT], INSPECTOR_HOURS
            )
            yield t
            who = c.assignee or shift
            ok = bool(U[F_VFALSE] >= rates.verify_false)
            payload: dict[str, Any] = {"confirmed": ok, "note": "属实" if ok else VFALSE_NOTE}
            if c.assignee:
                payload["attachment_ids"] = [self.photo(who, t)]
            c = self.act(who, cid, "verify", payload, t)
            if not ok:
                return
        # 立案 (or 作废)
        if c.stage == "file":
            t = self._hours(t + self._delay(U[U_FILE], 6, 0.7, 1, 120), U[U_JIT], CENTRE_HOURS)
            yield t
            if U[F_VOID] < rates.void:
                self.act(shift, cid, "void", {"reason": _pick(VOID_REASONS, U[U_TEXT])}, t)
                return
            c = self.act(shift, cid, "file", {}, t)
        # 派遣 when no rule decided
        if c.stage == "dispatch":
            t = self._hours(t + self._delay(U[U_DISPATCH], 8, 0.7, 1, 180), U[U_JIT], CENTRE_HOURS)
            yield t
            co = bool(U[F_COUNIT] < rates.co_unit)
            lead, cos = manual_units(w, cat, grid_code, U[U_UNIT], U[U_CO], co)
            payload = {"unit_id": lead, "co_unit_ids": cos, "note": "派遣"}
            c = self.act(dispatcher, cid, "dispatch", payload, t)
        if c.stage != "sign":
            raise _Stuck(f"unexpected stage {c.stage} before 签收")
        # 回退 → 改派
        if U[F_RETURN] < rates.ret:
            t = self._hours(t + self._delay(U[U_RET_REQ], 20, 0.8, 2, 600), U[U_JIT], HANDLER_HOURS)
            yield t
            h = self._handler(c.lead, U[U_HANDLER])
            self.act(h, cid, "request_return", {"reason": _pick(RETURN_REASONS, U[U_TEXT])}, t)
            t = self._hours(t + self._delay(U[U_RET_DEC], 40, 0.8, 5, 1200), U[U_JIT], CENTRE_HOURS)
            yield t
            ok = bool(U[F_RET_OK] < rates.ret_ok)
            old = c.lead
            note = "同意改派" if ok else "请继续处置"
            c = self.act(shift, cid, "decide_return", {"approve": ok, "note": note}, t)
            if ok:
                t = self._hours(
                    t + self._delay(U[U_REDISP], 10, 0.7, 1, 240), U[U_JIT], CENTRE_HOURS
                )
                yield t
                lead = reassign_unit(w, grid_code, old, U[U_UNIT])
                c = self.act(dispatcher, cid, "dispatch", {"unit_id": lead, "note": "改派"}, t)
        # 签收
        t = self._hours(t + self._delay(U[U_SIGN], 15, 0.8, 1, 180), U[U_JIT], HANDLER_HOURS)
        yield t
        h = self._handler(c.lead, U[U_HANDLER])
        c = self.act(h, cid, "sign", {}, t)
        due = c.handle_deadline or t
        late = bool(U[F_LATE] < rates.late)
        # 延期 (a second request needs a leader)
        if U[F_EXT] < rates.extend:
            for n in range(2):
                wait = max(MINUTE, int((due - t) * (0.3 + 0.4 * U[U_EXT_REQ])))
                t = self._hours(t + wait, U[U_JIT], HANDLER_HOURS)
                yield t
                amount = 1 + int(U[U_EXT_AMT] * 3)
                reason = _pick(EXTEND_REASONS, U[U_TEXT])
                payload = {"reason": reason, "amount": amount, "unit": "working_days"}
                self.act(h, cid, "request_extension", payload, t)
                role = self.session.scalars(
                    select(ApprovalRequest.required_role).where(
                        ApprovalRequest.case_id == cid, ApprovalRequest.decision.is_(None)
                    )
                ).first()
                t = self._hours(
                    t + self._delay(U[U_EXT_DEC], 30, 0.8, 5, 1200), U[U_JIT], CENTRE_HOURS
                )
                yield t
                by_leader = role == "leader"
                approver = _pick(w.leaders, U[U_ACTOR]) if by_leader and w.leaders else shift
                ok = bool(U[F_EXT_OK] < rates.extend_ok)
                note = "同意" if ok else "不同意延期"
                c = self.act(approver, cid, "decide_extension", {"approve": ok, "note": note}, t)
                due = c.handle_deadline or due
                late = late and not ok
                if not ok or n == 1 or U[F_EXT2] >= rates.second_extend:
                    break
        # 挂账 → 恢复处置
        if U[F_PARK] < rates.park:
            t = self._hours(
                t + max(MINUTE, int((due - t) * 0.2 * U[U_PARK_REQ])), U[U_JIT], HANDLER_HOURS
            )
            yield t
            self.act(h, cid, "request_park", {"reason": _pick(PARK_REASONS, U[U_TEXT])}, t)
            t = self._hours(
                t + self._delay(U[U_PARK_DEC], 60, 0.8, 5, 1440), U[U_JIT], CENTRE_HOURS
            )
            yield t
            ok = bool(U[F_PARK_OK] < rates.park_ok)
            c = self.act(shift, cid, "decide_park", {"approve": ok}, t)
            if ok:
                wait = self._delay(U[U_RESUME], 5 * 1440, 0.6, 1440, 30 * 1440)
                t = self._hours(t + wait, U[U_JIT], CENTRE_HOURS)
                yield t
                c = self.act(shift, cid, "resume", {"note": RESUME_NOTE}, t)
                late = False
            due = c.handle_deadline or due
        # 处置, with 督办 when it runs late
        f = float(handle_fraction(np.array([U[U_HANDLE]]), np.array([late]))[0])
        th = self._handle_at(cat, urg, t, due, f)
        ts = due + int(min(th - due, 4 * HOUR) * 0.5)
        if th > due and U[F_SUP] < rates.supervise and w.leaders and t < ts < th:
            yield ts
            self.act(_pick(w.leaders, U[U_ACTOR]), cid, "supervise", {"note": SUPERVISE_NOTE}, ts)
        t = max(t, th)
        yield t
        payload = {"note": _pick(HANDLE_NOTES, U[U_TEXT]), "attachment_ids": [self.photo(h, t)]}
        c = self.act(h, cid, "handle", payload, t)
        # 核查 (one 返工 when planned)
        rework = bool(U[F_REWORK] < rates.rework)
        for n in range(2):
            wait = self._delay(U[U_CHECK if n == 0 else U_CHECK2], 25, 0.7, 3, 600)
            t = self._hours(t + wait, U[U_JIT], INSPECTOR_HOURS)
            yield t
            who = c.assignee or shift
            passed = not (rework and n == 0)
            payload = {
                "passed": passed,
                "note": CHECK_NOTE if passed else REWORK_NOTE,
                "attachment_ids": [self.photo(who, t)],
            }
            c = self.act(who, cid, "check", payload, t)
            if passed:
                break
            due = c.handle_deadline or t
            f = float(handle_fraction(np.array([U[U_HANDLE2]]), np.array([False]))[0])
            t = max(t + 10 * MINUTE, self._handle_at(cat, urg, t, due, f))
            yield t
            h = self._handler(c.lead, U[U_HANDLER])
            payload = {"note": _pick(HANDLE_NOTES, U[U_TEXT]), "attachment_ids": [self.photo(h, t)]}
            c = self.act(h, cid, "handle", payload, t)
        # 结案
        t = self._hours(t + self._delay(U[U_CLOSE], 20, 0.8, 1, 600), U[U_JIT], CENTRE_HOURS)
        yield t
        self.act(shift, cid, "close", {}, t)

    def _push(self, t: int, life: Iterator[int]) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, life))

    def _step(self, t: int, life: Iterator[int]) -> None:
        try:
            nxt = next(life)
        except StopIteration:
            self.live -= 1
            return
        except _Stuck as exc:
            self._error(f"stuck: {exc}")
            self.live -= 1
            return
        except DomainError as exc:
            self._error(f"{type(exc).__name__}: {exc.message}"[:100])
            self.live -= 1
            return
        self._push(max(nxt, t), life)

    def scheduler(self, t: int, interval: int) -> Iterator[int]:
        """The deadline scheduler (:func:`cityops.cases.jobs.tick`) on the simulated clock."""
        from cityops.cases import jobs

        while True:
            t += interval
            yield t
            jobs.tick(self.session, to_dt(t), limit=100_000)
            self.actions += 1

    def run(self, start: int, days: int, per_day: int, finish: bool, tick_minutes: float) -> None:
        end = start + days * DAY
        day = start
        t0 = time.perf_counter()
        if tick_minutes > 0:
            self._push(start, self.scheduler(start, int(tick_minutes * MINUTE)))
        while day < end or (finish and self.live > 0 and day < end + 400 * DAY):
            with self.db.session() as s:
                self.s = s
                lock_for_write(s)
                if day < end:
                    r = sample_reports(self.w, self.rng, [day], per_day, self.rates)
                    self.summary.reports += len(r)
                    for i in range(len(r)):
                        self._push(int(r.t[i]), self.life(r, i))
                        self.live += 1
                while self.heap and self.heap[0][0] < day + DAY:
                    t, _, life = heapq.heappop(self.heap)
                    self._step(t, life)
                if day + DAY >= end and not finish and tick_minutes > 0:
                    from cityops.cases import jobs

                    jobs.tick(s, to_dt(end), limit=100_000)  # the flags as of the end
                self.s = None
            if self.out is not None:
                el = time.perf_counter() - t0
                first, last = self.summary.first_case_id, self.summary.last_case_id
                n = last - first + 1 if first is not None and last is not None else 0
                print(
                    f"[simulate service] {local_date(day)}: {self.summary.reports} reports,"
                    f" {n} cases, {self.actions} actions, {el:.1f} s"
                    f" ({n / el if el else 0:.0f} cases/s)",
                    file=self.out,
                    flush=True,
                )
            day += DAY


# --------------------------------------------------------------------------- bulk mode

STAGE_LIST = (
    "accept", "verify", "file", "dispatch", "sign", "handle", "return_review", "parked",
    "check", "close", "closed", "rejected", "void", "merged",
)  # fmt: skip
ST = {s: i for i, s in enumerate(STAGE_LIST)}
_OPEN_CODES = np.array(sorted(ST[s] for s in OPEN_STAGES), dtype=np.int8)
_STAGE_ARR = np.array(STAGE_LIST, dtype=object)
_MOVES_HD = [ST["handle"], ST["return_review"], ST["parked"], ST["sign"]]


_DIGITS = np.arange(48, 58, dtype=np.uint8)
#: Separator of the values of a text column in transit (never part of generated text).
SEP = "\x1f"


def _ts_chars(t: I64) -> NDArray[np.uint8]:
    """(n, 27) ASCII matrix: 'YYYY-MM-DD HH:MM:SS.ffffff' + SEP per instant (UTC µs)."""
    t = np.asarray(t, dtype=np.int64)
    n = len(t)
    day = t // DAY
    d0 = int(day.min())
    days = np.arange(d0, int(day.max()) + 1).astype("datetime64[D]")
    table = np.frombuffer(
        "".join(np.datetime_as_string(days).tolist()).encode("ascii"), dtype=np.uint8
    ).reshape(-1, 10)
    us = t - day * DAY
    out = np.empty((n, 27), dtype=np.uint8)
    out[:, :10] = table[day - d0]
    out[:, 10] = ord(" ")
    out[:, 13] = out[:, 16] = ord(":")
    out[:, 19] = ord(".")
    out[:, 26] = ord(SEP)
    for col, value in ((11, us // HOUR), (14, us // MINUTE % 60), (17, us // US % 60)):
        out[:, col] = _DIGITS[value // 10]
        out[:, col + 1] = _DIGITS[value % 10]
    frac = us % US
    for k in range(6):
        out[:, 20 + k] = _DIGITS[frac // 10 ** (5 - k) % 10]
    return out


# --------------------------------------------------------------------------- columns
#
# A batch's rows travel as encoded columns: numbers as numpy arrays, text as one string
# (values joined by SEP), so that neither the producer nor a pipe pays per value; the
# writer decodes them with C-speed ``tolist`` and ``str.split``.

Col = tuple[Any, ...]


def c_int(a: Any) -> Col:
    return ("i", np.ascontiguousarray(a, dtype=np.int64))


def c_int_null(a: Any) -> Col:
    """Integers where -1 means NULL (ids)."""
    return ("in", np.ascontiguousarray(a, dtype=np.int64))


def c_float(a: Any) -> Col:
    return ("f", np.ascontiguousarray(a, dtype=np.float64))


def c_bool(a: Any) -> Col:
    return ("b", np.ascontiguousarray(a, dtype=bool))


def c_const(value: Any, n: int) -> Col:
    return ("c", value, n)


def c_text(values: Sequence[str | None] | Arr) -> Col:
    """Strings (None = NULL)."""
    arr = values if isinstance(values, np.ndarray) and values.dtype == object else None
    if arr is None:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    null = np.asarray(arr == None, dtype=bool)  # noqa: E711  (element-wise on objects)
    has_null = bool(null.any())
    keep: list[Any] = arr[~null].tolist() if has_null else arr.tolist()
    joined = SEP.join(keep)
    if joined.count(SEP) != max(len(keep) - 1, 0) or (len(keep) == 1 and keep[0] == ""):
        return ("l", arr.tolist())  # a value holds the separator (or is one empty string)
    return ("s", joined, len(keep), null if has_null else None)


def c_time(t: I64) -> Col:
    """UTC µs instants (NONE_T = NULL) as SQLAlchemy stores them."""
    t = np.asarray(t, dtype=np.int64)
    null = t == NONE_T
    keep = t[~null] if null.any() else t
    text = _ts_chars(keep).tobytes().decode("ascii")[:-1] if len(keep) else ""
    return ("s", text, len(keep), null if null.any() else None)


def decode(col: Col) -> list[Any]:
    """An encoded column as a list of plain values (None for NULL)."""
    kind = col[0]
    if kind in ("i", "f", "b"):
        return col[1].tolist()
    if kind == "in":
        a = col[1]
        out = a.astype(object)
        out[a == -1] = None
        return out.tolist()
    if kind == "c":
        return [col[1]] * col[2]
    if kind == "l":
        return list(col[1])
    _, text, k, null = col
    parts = text.split(SEP) if k else []
    if null is None:
        return parts
    res = np.full(len(null), None, dtype=object)
    tmp = np.empty(k, dtype=object)
    tmp[:] = parts
    res[~null] = tmp
    return res.tolist()


def col_len(col: Col) -> int:
    kind = col[0]
    if kind == "c":
        return int(col[2])
    if kind in ("i", "in", "f", "b", "l"):
        return len(col[1])
    return len(col[3]) if col[3] is not None else int(col[2])


def ts_strings(t: I64) -> list[str | None]:
    """UTC instants as SQLAlchemy stores them ('YYYY-MM-DD HH:MM:SS.ffffff'; NONE_T → None)."""
    return decode(c_time(t))


def ints_or_none(a: I64, none: int = -1) -> list[int | None]:
    a = np.asarray(a)
    out = a.astype(object)
    out[a == none] = None
    return out.tolist()


_NEEDS_ESCAPE = ("\\", "\t", "\n", "\r")


def _copy_escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _copy_text(col: Sequence[Any]) -> list[str]:
    """One column in PostgreSQL COPY text format (NULL ``\\N``, booleans t/f, escapes)."""
    types = set(map(type, col))
    nulls = type(None) in types
    types.discard(type(None))
    if types <= {bool}:
        return ["\\N" if v is None else ("t" if v else "f") for v in col]
    if types <= {int}:
        return ["\\N" if v is None else str(v) for v in col] if nulls else list(map(str, col))
    if types <= {float, int}:
        return ["\\N" if v is None else repr(v) for v in col] if nulls else list(map(repr, col))
    if types <= {str}:
        vals = [v for v in col if v is not None] if nulls else col
        joined = "\x00".join(vals)
        if any(ch in joined for ch in _NEEDS_ESCAPE):
            col = [None if v is None else _copy_escape(v) for v in col]
        return ["\\N" if v is None else v for v in col] if nulls else list(col)
    raise TypeError(f"cannot COPY values of types {types}")


class BulkWriter:
    """Plain-value inserts on the session's connection (its transaction): SQLite
    ``executemany``, PostgreSQL ``COPY … FROM STDIN`` (psycopg 3). Columns hold str, int,
    float, bool or None; times as :func:`ts_strings` text, JSON as text."""

    def __init__(self, session: Session) -> None:
        self.conn = session.connection()
        self.dialect = self.conn.dialect.name
        self.raw: Any = self.conn.connection.driver_connection
        self.copy = self.dialect == "postgresql" and hasattr(self.raw, "cursor")

    def write(
        self, table: str, columns: Sequence[str], cols: Sequence[Any], chunk: int = 50_000
    ) -> int:
        """Insert rows given as columns: encoded (:data:`Col`) or lists of plain values."""
        if not cols:
            return 0
        if self.copy:
            text = copy_block(cols)
            if text:
                self.write_text(table, columns, text)
            return text.count("\n")
        plain = [decode(c) if isinstance(c, tuple) else list(c) for c in cols]
        n = len(plain[0])
        if n == 0:
            return 0
        mark = "?" if self.conn.dialect.paramstyle == "qmark" else "%s"
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        cur = self.raw.cursor()
        try:
            cur.executemany(sql, zip(*plain, strict=True))
        finally:
            cur.close()
        return n

    def write_text(self, table: str, columns: Sequence[str], text: str) -> None:
        """PostgreSQL: COPY rows already in COPY text format (see :func:`copy_block`)."""
        with (
            self.raw.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp,
        ):
            cp.write(text)

    def next_id(self, table: str) -> int:
        sql = f"SELECT COALESCE(MAX(id), 0) FROM {table}"
        return int(self.conn.exec_driver_sql(sql).scalar_one()) + 1

    def sync_sequence(self, table: str) -> None:
        """After explicit ids on PostgreSQL: move the table's id sequence past them."""
        if self.dialect == "postgresql":
            self.conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )


EVENT_COLUMNS = (
    "case_id", "at", "actor_id", "actor_name", "action", "from_stage", "to_stage", "unit_id",
    "note", "data",
)  # fmt: skip


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _decision_data(ok: B, ids: I64) -> list[str]:
    return [
        f'{{"approve": {"true" if a else "false"}, "request_id": {b}}}'
        for a, b in zip(np.asarray(ok).tolist(), ids.tolist(), strict=True)
    ]


class EventLog:
    """History rows collected action by action, as aligned columns."""

    def __init__(self) -> None:
        self.parts: list[dict[str, Arr]] = []

    def add(
        self,
        idx: I64,
        slot: int,
        at: I64,
        action: str,
        from_stage: Arr | str | None,
        to_stage: Arr | str,
        actor: I64 | int,
        unit: I64 | int = -1,
        note: Arr | str | None = None,
        data: Arr | list[str] | str | None = None,
    ) -> None:
        m = len(idx)
        if m == 0:
            return

        def col(v: Any, dtype: Any = object) -> Arr:
            if isinstance(v, np.ndarray):
                return v.astype(dtype, copy=False)
            if isinstance(v, list):
                return np.array(v, dtype=dtype)
            return np.full(m, v, dtype=dtype)

        self.parts.append(
            {
                "case": np.asarray(idx, dtype=np.int64),
                "slot": np.full(m, slot, dtype=np.int64),
                "at": np.asarray(at, dtype=np.int64),
                "actor": col(actor, np.int64),
                "action": np.full(m, action, dtype=object),
                "from": col(from_stage),
                "to": col(to_stage),
                "unit": col(unit, np.int64),
                "note": col(note),
                "data": col(data),
            }
        )

    def columns(self) -> dict[str, Arr]:
        """All rows ordered by case, time, action order."""
        if not self.parts:
            return {}
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        order = np.lexsort((cols["slot"], cols["at"], cols["case"]))
        return {k: v[order] for k, v in cols.items()}


def actor_columns(cols: dict[str, Arr], n: int) -> dict[str, Col]:
    """The case rows' ``accepted_by_id`` / ``filed_by_id`` / ``dispatched_by_id`` /
    ``dispatch_stage_at`` from their history (``cols`` of :meth:`EventLog.columns`): what
    :func:`cityops.cases.models.track_actors` leaves after each case's events, i.e. the
    last 受理/立案/派遣 of each case and its last 立案 or approved 回退."""
    out = {k: np.full(n, -1, dtype=np.int64) for k in ("accept", "file", "dispatch")}
    stage_at = np.full(n, NONE_T, dtype=np.int64)
    if cols:
        case, action = cols["case"], cols["action"]

        def last(m: B) -> I64:  # the last matching event of each case (rows ordered by case)
            idx = np.flatnonzero(m)
            c = case[idx]
            return idx[np.r_[c[1:] != c[:-1], True]] if len(idx) else idx

        for name, arr in out.items():
            i = last(action == name)
            arr[case[i]] = cols["actor"][i]
        ret = action == "decide_return"
        ret[ret] = [bool(d) and '"approve": true' in d for d in cols["data"][ret].tolist()]
        i = last((action == "file") | ret)
        stage_at[case[i]] = cols["at"][i]
    return {
        "accepted_by_id": c_int_null(out["accept"]),
        "filed_by_id": c_int_null(out["file"]),
        "dispatched_by_id": c_int_null(out["dispatch"]),
        "dispatch_stage_at": c_time(stage_at),
    }


def tracking_codes(n: int) -> list[str]:
    """Random public tracking codes (unguessable: never derived from the seed), distinct."""
    alphabet = np.frombuffer(service._TRACK_ALPHABET.encode("ascii"), dtype=np.uint8)
    rng = np.random.default_rng(secrets.randbits(128))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        k = n - len(out)
        m = np.empty((k, 11), dtype=np.uint8)
        m[:, :10] = alphabet[rng.integers(0, len(alphabet), (k, 10))]
        m[:, 10] = ord(SEP)
        codes = m.tobytes().decode("ascii").split(SEP)[:-1]
        fresh = [c for c in dict.fromkeys(codes) if c not in seen]
        seen.update(fresh)
        out.extend(fresh)
    return out[:n]


#: (table, columns, encoded columns)
TableRows = tuple[str, list[str], list[Col]]


@dataclass
class BatchResult:
    """One computed batch: the rows to write and what they hold."""

    tables: list[TableRows]
    first_case_id: int
    cases: int
    events: int
    approvals: int
    repeats_merged: int
    next_approval_id: int
    #: last sequence number per local day after this batch (case numbers)
    sequences: dict[date, int]
    reports: int
    last_day: date | None = None
    #: PostgreSQL COPY text per table, when encoded by the producer process
    copy_text: dict[str, str] | None = None


class _Batch:
    """Vectorised lives of one batch of reports (see the module docstring, bulk mode).

    Every action is a *slot*: its time is computed for all cases, it happens for the cases
    that reach it (``valid``) no later than the end of the period, and then changes the
    state arrays exactly as the service action would. Cases whose next slot lies after the
    end stay in the state they reached."""

    NSLOT = 24

    def __init__(self, world: World, rates: Rates, end: int, auto_file: frozenset[str]) -> None:
        self.w, self.rates, self.end, self.auto_file = world, rates, end, auto_file
        self.vc = world.vclock

    # -- actors

    def pick_users(self, ids: Sequence[int], u: F64) -> I64:
        a = np.asarray(ids, dtype=np.int64)
        if not len(a):
            return np.full(len(u), -1, dtype=np.int64)
        return a[np.minimum((u * len(a)).astype(np.int64), len(a) - 1)]

    def handlers_of(self, units: I64, u: F64) -> I64:
        out = np.full(len(units), -1, dtype=np.int64)
        for unit in np.unique(units).tolist():
            m = units == unit
            out[m] = self.pick_users(self.w.handlers.get(int(unit), []), u[m])
        return out

    def inspectors_of(self, grid: I64, u: F64) -> I64:
        ptr, ids = self.w.insp_ptr, self.w.insp_ids
        cnt = ptr[grid + 1] - ptr[grid]
        if not len(ids):
            return np.full(len(grid), -1, dtype=np.int64)
        k = ptr[grid] + np.minimum((u * cnt).astype(np.int64), np.maximum(cnt - 1, 0))
        return np.where(cnt > 0, ids[np.minimum(k, len(ids) - 1)], -1)

    def names(self, ids: I64) -> Arr:
        out = np.full(len(ids), "system", dtype=object)
        m = ids >= 0
        out[m] = self.w.name_arr[ids[m]]
        return out

    # -- dispatch rules and category defaults (service.match_rule, vectorised)

    def auto_units(self, cat: I64, comp: I64, gcode: Arr, t_file: I64) -> tuple[I64, Arr, Arr]:
        n, w = len(cat), self.w
        lead = np.full(n, -1, dtype=np.int64)
        why = np.full(n, None, dtype=object)
        co = np.full(n, None, dtype=object)
        has_comp = comp >= 0
        cidx = np.maximum(comp, 0)
        owner = np.where(has_comp, w.comp_owner[cidx] if len(w.comp_owner) else -1, -1)
        maint = np.where(has_comp, w.comp_maint[cidx] if len(w.comp_maint) else -1, -1)
        district = gcode.astype("U6")
        if w.rules:
            loc = t_file + LOCAL_OFFSET
            hm = (loc % DAY) // MINUTE
            wd = ((loc // DAY) + 3) % 7 + 1  # ISO weekday (1970-01-01 was a Thursday)
            gstr = gcode.astype(str)
            best = np.full((n, 3), np.iinfo(np.int64).max, dtype=np.int64)
            best_rule = np.full(n, -1, dtype=np.int64)
            for k, r in enumerate(w.rules):
                m = np.ones(n, dtype=bool)
                if r.category_id is not None:
                    m &= cat == r.category_id
                if r.region_prefix:
                    m &= np.char.startswith(gstr, r.region_prefix)
                if r.component_owner_unit_id is not None:
                    m &= owner == r.component_owner_unit_id
                if r.weekdays:
                    m &= np.isin(wd, [int(c) for c in r.weekdays if c.isdigit()])
                if r.time_from and r.time_to:
                    a, b = wt.parse_hhmm(r.time_from), wt.parse_hhmm(r.time_to)
                    m &= ((hm >= a) & (hm < b)) if a <= b else ((hm >= a) | (hm < b))
                if r.to_component:
                    m &= has_comp
                crit = (
                    r.category_id,
                    r.region_prefix,
                    r.component_owner_unit_id,
                    r.time_from,
                    r.weekdays,
                )
                spec = sum(x is not None and x != "" for x in crit)
                key = np.array([-spec, r.priority, r.id], dtype=np.int64)
                lt = (key[0] < best[:, 0]) | (
                    (key[0] == best[:, 0])
                    & ((key[1] < best[:, 1]) | ((key[1] == best[:, 1]) & (key[2] < best[:, 2])))
                )
                better = m & lt
                best[better] = key
                best_rule[better] = k
            for k, r in enumerate(w.rules):
                m = best_rule == k
                if not m.any():
                    continue
                unit = np.full(n, r.unit_id if r.unit_id is not None else -1, dtype=np.int64)
                if r.to_component == "owner":
                    unit = np.where(has_comp, owner, unit)
                elif r.to_component == "maintainer":
                    unit = np.where(has_comp, np.where(maint >= 0, maint, owner), unit)
                m &= unit >= 0
                lead[m] = unit[m]
                for i in np.flatnonzero(m).tolist():
                    co[i] = [u for u in (r.co_unit_ids or []) if u != lead[i]]
                why[m] = f"rule {r.id} {r.name}"
        for cid in np.unique(cat[lead < 0]).tolist():
            c = w.cats[int(cid)]
            m = (cat == cid) & (lead < 0)
            if c.handler_mode == "fixed_unit" and c.handler_unit_id:
                lead[m] = c.handler_unit_id
                why[m] = f"category {c.code} fixed unit"
            elif c.handler_mode == "component_owner":
                unit = np.where(maint >= 0, maint, owner)
                mm = m & has_comp & (unit >= 0)
                lead[mm] = unit[mm]
                why[mm] = f"category {c.code}: component maintainer/owner"
            elif c.handler_mode == "unit_type" and c.handler_unit_type:
                for d in np.unique(district[m]).tolist():
                    u = w.district_unit.get((d, c.handler_unit_type))
                    if u is not None:
                        mm = m & (district == d)
                        lead[mm] = u
                        why[mm] = f"category {c.code}: {c.handler_unit_type} of the district"
        return lead, co, why

    # -- targets of repeated reports

    @staticmethod
    def targets(r: Reports) -> tuple[I64, I64]:
        """Final kinds and targets (report indices) of repeated reports.

        Targets are earlier ordinary reports (not self-handled, not repeats themselves)
        within 48 h (public) or 6 h (video); a repeat without one becomes ordinary."""
        kind = r.kind.copy()
        target = np.full(len(r), -1, dtype=np.int64)
        eligible = np.flatnonzero((kind == 0) & (r.src != S_IDX["self"]))
        et = r.t[eligible]
        for k, window in ((1, 48 * HOUR), (2, 6 * HOUR)):
            idx = np.flatnonzero(kind == k)
            if not idx.size:
                continue
            hi = np.searchsorted(et, r.t[idx], side="left")
            lo = np.searchsorted(et, r.t[idx] - window, side="left")
            ok = hi > lo
            pos = lo + np.minimum(
                (r.U[idx, U_TARGET] * (hi - lo)).astype(np.int64), np.maximum(hi - lo - 1, 0)
            )
            target[idx[ok]] = eligible[np.minimum(pos[ok], max(len(eligible) - 1, 0))]
            kind[idx[~ok]] = 0
        return kind, target

    # -- the batch

    def run(
        self, r: Reports, case_id0: int, approval_id0: int, seq_last: dict[date, int]
    ) -> BatchResult:
        """Compute one batch (no database access): rows of every table to write."""
        w, vc, rates, end = self.w, self.vc, self.rates, self.end
        kind_all, target_all = self.targets(r)
        is_case = kind_all != 2
        case_pos = np.cumsum(is_case) - 1
        cr = r.take(np.flatnonzero(is_case))
        ck = kind_all[is_case]
        ctarget = np.where(ck == 1, case_pos[np.maximum(target_all[is_case], 0)], -1)
        n = len(cr)
        U, src, cat, urg = cr.U, cr.src, cr.cat, cr.urg
        # a repeated public report is about the same problem at (almost) the same place
        dup = np.flatnonzero(ck == 1)
        if dup.size:
            j = ctarget[dup]
            cat[dup], urg[dup], cr.comp[dup] = cat[j], urg[j], cr.comp[j]
            cr.lon[dup], cr.lat[dup] = jitter(
                cr.lon[j], cr.lat[j], 2 + 10 * U[dup, U_JIT], U[dup, U_TEXT]
            )
            for a, b in zip(dup.tolist(), j.tolist(), strict=True):
                cr.desc[a] = DUP_TEXT + w.cats[int(cat[b])].name
        ids = case_id0 + np.arange(n, dtype=np.int64)
        gidx = w.gindex
        gi = gidx.locate_many(cr.lon, cr.lat)
        lost = np.flatnonzero(gi < 0)
        if lost.size:  # a jittered point left the city: take the original report's grid
            gi[lost] = cr.grid[lost]
            p = shapely.point_on_surface(gidx.geoms[gi[lost]])
            cr.lon[lost], cr.lat[lost] = shapely.get_x(p), shapely.get_y(p)
        grid_id = gidx.ids[gi]
        gcode = np.array(gidx.codes, dtype=object)[gi]
        lon8, lat8 = np.round(cr.lon, 8), np.round(cr.lat, 8)
        comp = cr.comp
        lim = {stg: w.limits.arrays(stg, cat, urg) for stg in wt.STAGES}
        numbers, batch_seq = self._numbers(cr.t, seq_last)

        # ------------------------------------------------------------ state (service columns)
        T = np.full((n, self.NSLOT), FAR_T, dtype=np.int64)  # times of the actions that happened
        STG = np.full((n, self.NSLOT), -1, dtype=np.int8)  # stage after each of them
        ev = EventLog()
        stage = np.full(n, ST["accept"], dtype=np.int8)
        stage_start = cr.t.copy()
        sd = vc.add(cr.t, *lim["accept"])
        warn = vc.add(cr.t, lim["accept"][0] * service.WARN_FRACTION, lim["accept"][1])
        hd = np.full(n, NONE_T, dtype=np.int64)
        paused = np.full(n, NONE_T, dtype=np.int64)
        pending = np.full(n, None, dtype=object)
        parked = np.zeros(n, dtype=bool)
        extended = np.zeros(n, dtype=bool)
        ext_count = np.zeros(n, dtype=np.int64)
        ret_count = np.zeros(n, dtype=np.int64)
        rework_count = np.zeros(n, dtype=np.int64)
        late_flag = np.zeros(n, dtype=bool)
        supervised = np.zeros(n, dtype=bool)
        lead = np.full(n, -1, dtype=np.int64)
        co: Arr = np.full(n, None, dtype=object)
        assignee = np.full(n, -1, dtype=np.int64)
        stamp_names = ("accepted_at", "verified_at", "filed_at", "dispatched_at", "signed_at",
                       "handled_at", "checked_at", "closed_at")  # fmt: skip
        stamps = {k: np.full(n, NONE_T, dtype=np.int64) for k in stamp_names}
        close_type = np.full(n, None, dtype=object)
        end_reason = np.full(n, None, dtype=object)
        dup_of = np.full(n, -1, dtype=np.int64)
        report_count = np.ones(n, dtype=np.int64)
        last_seen = cr.t.copy()
        updated = cr.t.copy()
        version = np.ones(n, dtype=np.int64)
        appr: list[dict[str, Any]] = []
        appr_next = [approval_id0]
        op = self.pick_users(w.operators, U[:, U_ACTOR])
        shift = self.pick_users(w.shifts, U[:, U_ACTOR])
        disp = self.pick_users(w.dispatchers, U[:, U_ACTOR])
        leader = self.pick_users(w.leaders, U[:, U_ACTOR])
        text_u = U[:, U_TEXT]
        desc = np.array(cr.desc, dtype=object)

        def happens(valid: B, t: I64, k: int) -> I64:
            """Cases where action slot ``k`` happens (valid and not after the end)."""
            m = np.flatnonzero(valid & (t <= end))
            T[m, k] = t[m]
            version[m] += 1
            updated[m] = np.maximum(updated[m], t[m])
            return m

        def done(m: I64, k: int) -> None:
            STG[m, k] = stage[m]

        def now_stage(m: I64) -> Arr:
            return _STAGE_ARR[stage[m]]

        def start_stage(m: I64, name: str, t: I64) -> None:  # service._start_stage
            stage[m] = ST[name]
            stage_start[m] = t
            paused[m] = NONE_T
            clk = service.CLOCK_STAGE.get(name)
            if clk is None:
                sd[m] = NONE_T
                warn[m] = NONE_T
                return
            a, u = lim[clk][0][m], lim[clk][1][m]
            sd[m] = vc.add(t, a, u)
            warn[m] = vc.add(t, a * service.WARN_FRACTION, u)
            if clk == "handle":
                h = hd[m] != NONE_T
                mh = m[h]
                sd[mh] = hd[mh]
                warn[mh] = vc.warn_before(hd[mh], t[h], lim["handle"][0][mh], lim["handle"][1][mh])

        def shift_pause(m: I64, t: I64) -> None:  # service._shift_for_pause
            if not m.size:
                return
            unit = np.empty(len(m), dtype=np.int64)
            for s_code in np.unique(stage[m]).tolist():
                sel = stage[m] == s_code
                clk = service.CLOCK_STAGE.get(STAGE_LIST[s_code], "handle")
                unit[sel] = lim[clk][1][m[sel]]
            p = paused[m]
            moves = np.isin(stage[m], _MOVES_HD) & (hd[m] != NONE_T)
            hd[m[moves]] = vc.shift(hd[m[moves]], p[moves], t[moves], unit[moves])
            sd[m] = vc.shift(sd[m], p, t, unit)
            warn[m] = vc.shift(warn[m], p, t, unit)
            paused[m] = NONE_T

        def request(
            m: I64, t: I64, kind: str, by: I64, reason: Arr, amount: F64 | None, role: Arr
        ) -> I64:
            rid = appr_next[0] + np.arange(len(m), dtype=np.int64)
            appr_next[0] += len(m)
            appr.append({"id": rid, "case": m, "kind": kind, "unit": lead[m], "by": by, "at": t,
                         "reason": reason, "amount": amount, "role": role})  # fmt: skip
            return rid

        def decide(rid: I64, t: I64, by: I64, ok: B, note: Arr | None) -> None:
            appr.append({"decide": rid, "at": t, "by": by, "ok": ok, "note": note})

        # ------------------------------------------------------------ 0, 1: 上报, 自行处置
        every = np.ones(n, dtype=bool)
        m = happens(every, cr.t, 0)
        src_data = np.array([_j({"source": s}) for s in SOURCE_LIST], dtype=object)
        ev.add(
            m,
            0,
            cr.t[m],
            "report",
            None,
            "accept",
            cr.reporter[m],
            note=desc[m],
            data=src_data[src[m]],
        )
        done(m, 0)
        self_ = src == S_IDX["self"]
        m = happens(self_, cr.t, 1)
        for k in ("accepted_at", "filed_at", "handled_at", "checked_at", "closed_at"):
            stamps[k][m] = cr.t[m]
        close_type[m] = "正常"
        start_stage(m, "closed", cr.t[m])
        ev.add(m, 1, cr.t[m], "self_handle", "accept", "closed", cr.reporter[m], note=desc[m])
        done(m, 1)
        # ------------------------------------------------------------ 2: 受理 / 不予受理
        # channels filed at intake (service.auto_file_sources): 受理 + 立案 by the system
        autof = np.isin(src, [S_IDX[x] for x in self.auto_file if x in S_IDX])
        autof &= ~self_
        ck[autof & (ck == 1)] = 0  # such a repeated report goes on as an ordinary case
        alive = ~self_ & (ck == 0)
        t_acc = within_hours(
            cr.t + lognormal_us(U[:, U_ACCEPT], 4, 0.8, 0.5, 240), *CENTRE_HOURS, U[:, U_JIT]
        )
        t_acc[autof] = cr.t[autof]
        verify = _VERIFY_SRC[src] & ~autof
        insp = self.inspectors_of(gi, U[:, U_REPORTER])
        rej = alive & ~autof & _REJECTABLE_SRC[src] & (U[:, F_REJECT] < rates.reject)
        no_insp = alive & ~rej & verify & (insp < 0)
        reasons = np.where(no_insp, NO_INSPECTOR, _pick_text(REJECT_REASONS, text_u)).astype(object)
        m = happens(rej | no_insp, t_acc, 2)
        end_reason[m] = reasons[m]
        start_stage(m, "rejected", t_acc[m])
        ev.add(m, 2, t_acc[m], "reject", "accept", "rejected", op[m], note=reasons[m])
        done(m, 2)
        alive &= ~(rej | no_insp)
        m = happens(alive & autof, t_acc, 2)
        stamps["accepted_at"][m] = t_acc[m]
        ev.add(m, 2, t_acc[m], "accept", "accept", "accept", -1, note=AUTO_ACCEPT)
        done(m, 2)
        m = happens(alive & ~autof, t_acc, 2)
        stamps["accepted_at"][m] = t_acc[m]
        mv = m[verify[m]]
        assignee[mv] = insp[mv]
        start_stage(mv, "verify", t_acc[mv])
        mf = m[~verify[m]]
        start_stage(mf, "file", t_acc[mf])
        ev.add(m, 2, t_acc[m], "accept", "accept", now_stage(m), op[m])
        done(m, 2)
        # ------------------------------------------------------------ 3: 核实
        t_ver = within_hours(
            t_acc + lognormal_us(U[:, U_VERIFY], 20, 0.6, 3, 600), *INSPECTOR_HOURS, U[:, U_JIT]
        )
        v = alive & verify
        ok = U[:, F_VFALSE] >= rates.verify_false
        m = happens(v, t_ver, 3)
        stamps["verified_at"][m] = t_ver[m]
        who = np.where(assignee[m] >= 0, assignee[m], shift[m])
        assignee[m] = -1
        start_stage(m[ok[m]], "file", t_ver[m[ok[m]]])
        bad = m[~ok[m]]
        end_reason[bad] = VFALSE_NOTE
        start_stage(bad, "void", t_ver[bad])
        ev.add(m, 3, t_ver[m], "verify", "verify", now_stage(m), who,
               note=np.where(ok[m], "属实", VFALSE_NOTE).astype(object),
               data=np.where(ok[m], _j({"confirmed": True}), _j({"confirmed": False})).astype(object))  # fmt: skip
        done(m, 3)
        alive &= ~(v & ~ok)
        # ------------------------------------------------------------ 4: 立案 / 作废
        t_prev = np.where(v, t_ver, t_acc)
        t_file = within_hours(
            t_prev + lognormal_us(U[:, U_FILE], 6, 0.7, 1, 120), *CENTRE_HOURS, U[:, U_JIT]
        )
        t_file[autof] = cr.t[autof]
        void = alive & ~autof & (U[:, F_VOID] < rates.void)
        m = happens(void, t_file, 4)
        vr = _pick_text(VOID_REASONS, text_u)
        end_reason[m] = vr[m]
        start_stage(m, "void", t_file[m])
        ev.add(m, 4, t_file[m], "void", "file", "void", shift[m], note=vr[m])
        done(m, 4)
        alive &= ~void
        m = happens(alive, t_file, 4)
        stamps["filed_at"][m] = t_file[m]
        start_stage(m, "dispatch", t_file[m])
        ev.add(m, 4, t_file[m], "file", "file", "dispatch", np.where(autof[m], -1, shift[m]))
        done(m, 4)
        # ------------------------------------------------------------ 5: 派遣 (automatic or manual)
        auto_lead, auto_co, why = self.auto_units(cat, comp, gcode, t_file)
        auto = auto_lead >= 0
        t_manual = within_hours(
            t_file + lognormal_us(U[:, U_DISPATCH], 8, 0.7, 1, 180), *CENTRE_HOURS, U[:, U_JIT]
        )
        t_dis = np.where(auto, t_file, t_manual)
        new_lead, new_co = auto_lead.copy(), auto_co.copy()
        for i in np.flatnonzero(alive & ~auto).tolist():
            new_lead[i], new_co[i] = manual_units(
                w, int(cat[i]), str(gcode[i]), float(U[i, U_UNIT]), float(U[i, U_CO]),
                bool(U[i, F_COUNIT] < rates.co_unit),
            )  # fmt: skip
        dnote = np.full(n, "派遣", dtype=object)
        dnote[auto] = np.char.add("自动派遣: ", why[auto].astype(str)).astype(object)
        dactor = np.where(auto, -1, disp)

        def dispatch(m: I64, t: I64, units: I64, cos: Arr, actor: I64, note: Arr, k: int) -> None:
            before = now_stage(m)
            lead[m] = units[m]
            co[m] = cos[m]
            stamps["dispatched_at"][m] = t[m]
            hd[m] = vc.add(t[m], lim["handle"][0][m], lim["handle"][1][m])
            start_stage(m, "sign", t[m])
            data = [
                f'{{"lead_unit_id": {a}, "co_unit_ids": [{", ".join(map(str, c or []))}]}}'
                for a, c in zip(units[m].tolist(), cos[m].tolist(), strict=True)
            ]
            ev.add(
                m,
                k,
                t[m],
                "dispatch",
                before,
                "sign",
                actor[m],
                unit=units[m],
                note=note[m],
                data=data,
            )
            done(m, k)

        m = happens(alive, t_dis, 5)
        dispatch(m, t_dis, new_lead, new_co, dactor, dnote, 5)
        h_actor = self.handlers_of(lead, U[:, U_HANDLER])
        alive &= (h_actor >= 0) | (t_dis > end)  # a unit without handlers: the case waits
        # ------------------------------------------------------------ 6–8: 回退 → 改派
        ret = alive & (U[:, F_RETURN] < rates.ret)
        t_rr = within_hours(
            t_dis + lognormal_us(U[:, U_RET_REQ], 20, 0.8, 2, 600), *HANDLER_HOURS, U[:, U_JIT]
        )
        rr = _pick_text(RETURN_REASONS, text_u)
        m = happens(ret, t_rr, 6)
        ret_ids = np.full(n, -1, dtype=np.int64)
        ret_ids[m] = request(
            m,
            t_rr[m],
            "return",
            h_actor[m],
            rr[m],
            None,
            np.full(len(m), "shift_leader", dtype=object),
        )
        pending[m] = "return"
        paused[m] = t_rr[m]
        before = now_stage(m)
        stage[m] = ST["return_review"]
        no_amount = _j({"amount": None, "unit": None, "approver_role": "shift_leader"})
        ev.add(
            m,
            6,
            t_rr[m],
            "request_return",
            before,
            "return_review",
            h_actor[m],
            unit=lead[m],
            note=rr[m],
            data=no_amount,
        )
        done(m, 6)
        t_rd = within_hours(
            t_rr + lognormal_us(U[:, U_RET_DEC], 40, 0.8, 5, 1200), *CENTRE_HOURS, U[:, U_JIT]
        )
        rok = U[:, F_RET_OK] < rates.ret_ok
        m = happens(ret, t_rd, 7)
        rnote = np.where(rok, "同意改派", "请继续处置").astype(object)
        decide(ret_ids[m], t_rd[m], shift[m], rok[m], rnote[m])
        pending[m] = None
        old_lead = lead.copy()
        ma, mj = m[rok[m]], m[~rok[m]]
        ret_count[ma] += 1
        lead[ma] = -1
        co[ma] = None
        hd[ma] = NONE_T
        start_stage(ma, "dispatch", t_rd[ma])
        stage[mj] = ST["sign"]
        shift_pause(mj, t_rd[mj])
        ev.add(m, 7, t_rd[m], "decide_return", "return_review", now_stage(m), shift[m], note=rnote[m],
               data=_decision_data(rok[m], ret_ids[m]))  # fmt: skip
        done(m, 7)
        redo = ret & rok
        t_re = within_hours(
            t_rd + lognormal_us(U[:, U_REDISP], 10, 0.7, 1, 240), *CENTRE_HOURS, U[:, U_JIT]
        )
        re_lead = np.full(n, -1, dtype=np.int64)
        for i in np.flatnonzero(redo).tolist():
            re_lead[i] = reassign_unit(w, str(gcode[i]), int(old_lead[i]), float(U[i, U_UNIT]))
        re_co = np.empty(n, dtype=object)
        m = happens(redo, t_re, 8)
        dispatch(m, t_re, re_lead, re_co, disp, np.full(n, "改派", dtype=object), 8)
        h_actor = np.where(
            redo, self.handlers_of(np.where(redo, lead, -1), U[:, U_HANDLER]), h_actor
        )
        alive &= (h_actor >= 0) | (t_re > end) | ~redo
        t = np.where(ret, np.where(rok, t_re, t_rd), t_dis)
        # ------------------------------------------------------------ 9: 签收
        t_sign = within_hours(
            t + lognormal_us(U[:, U_SIGN], 15, 0.8, 1, 180), *HANDLER_HOURS, U[:, U_JIT]
        )
        m = happens(alive, t_sign, 9)
        stamps["signed_at"][m] = t_sign[m]
        start_stage(m, "handle", t_sign[m])
        ev.add(m, 9, t_sign[m], "sign", "sign", "handle", h_actor[m], unit=lead[m])
        done(m, 9)
        t = t_sign
        late = U[:, F_LATE] < rates.late
        # ------------------------------------------------------------ 10–13: 延期 (up to two)
        want = alive & (U[:, F_EXT] < rates.extend)
        amount = (1 + (U[:, U_EXT_AMT] * 3).astype(np.int64)).astype(np.float64)
        er = _pick_text(EXTEND_REASONS, text_u)
        days_unit = np.full(n, _WORKING_DAYS, dtype=np.int64)
        for rnd in range(2):
            k0 = 10 + 2 * rnd
            due = np.where(hd != NONE_T, hd, t)
            wait = np.maximum(MINUTE, ((due - t) * (0.3 + 0.4 * U[:, U_EXT_REQ])).astype(np.int64))
            t_er = within_hours(t + wait, *HANDLER_HOURS, U[:, U_JIT])
            m = happens(want, t_er, k0)
            role = np.where(ext_count[m] >= 1, "leader", "shift_leader").astype(object)
            eids = np.full(n, -1, dtype=np.int64)
            eids[m] = request(m, t_er[m], "extend", h_actor[m], er[m], amount[m], role)
            pending[m] = "extend"
            paused[m] = t_er[m]
            edata = [
                f'{{"amount": {a}, "unit": "working_days", "approver_role": "{b}"}}'
                for a, b in zip(amount[m].tolist(), role.tolist(), strict=True)
            ]
            ev.add(
                m,
                k0,
                t_er[m],
                "request_extend",
                "handle",
                "handle",
                h_actor[m],
                unit=lead[m],
                note=er[m],
                data=edata,
            )
            done(m, k0)
            t_ed = within_hours(
                t_er + lognormal_us(U[:, U_EXT_DEC], 30, 0.8, 5, 1200), *CENTRE_HOURS, U[:, U_JIT]
            )
            m = happens(want, t_ed, k0 + 1)
            by_leader = (ext_count[m] >= 1) & (leader[m] >= 0)
            approver = np.where(by_leader, leader[m], shift[m])
            eok = U[m, F_EXT_OK] < rates.extend_ok
            enote = np.where(eok, "同意", "不同意延期").astype(object)
            decide(eids[m], t_ed[m], approver, eok, enote)
            pending[m] = None
            shift_pause(m, t_ed[m])
            ma = m[eok]
            hd[ma] = vc.add(hd[ma], amount[ma], days_unit[ma])
            sd[ma] = hd[ma]
            warn[ma] = vc.warn_before(hd[ma], t_ed[ma], lim["handle"][0][ma], lim["handle"][1][ma])
            extended[ma] = True
            ext_count[ma] += 1
            late[ma] = False
            ev.add(m, k0 + 1, t_ed[m], "decide_extend", "handle", "handle", approver, note=enote,
                   data=_decision_data(eok, eids[m]))  # fmt: skip
            done(m, k0 + 1)
            t = np.where(want, t_ed, t)
            approved = np.zeros(n, dtype=bool)
            approved[ma] = True
            want = want & approved & (U[:, F_EXT2] < rates.second_extend) & (rnd == 0)
        # ------------------------------------------------------------ 14–16: 挂账 → 恢复处置
        park = alive & (U[:, F_PARK] < rates.park)
        due = np.where(hd != NONE_T, hd, t)
        wait = np.maximum(MINUTE, ((due - t) * 0.2 * U[:, U_PARK_REQ]).astype(np.int64))
        t_pr = within_hours(t + wait, *HANDLER_HOURS, U[:, U_JIT])
        pr = _pick_text(PARK_REASONS, text_u)
        m = happens(park, t_pr, 14)
        pids = np.full(n, -1, dtype=np.int64)
        pids[m] = request(
            m,
            t_pr[m],
            "park",
            h_actor[m],
            pr[m],
            None,
            np.full(len(m), "shift_leader", dtype=object),
        )
        pending[m] = "park"
        paused[m] = t_pr[m]
        ev.add(
            m,
            14,
            t_pr[m],
            "request_park",
            "handle",
            "handle",
            h_actor[m],
            unit=lead[m],
            note=pr[m],
            data=no_amount,
        )
        done(m, 14)
        t_pd = within_hours(
            t_pr + lognormal_us(U[:, U_PARK_DEC], 60, 0.8, 5, 1440), *CENTRE_HOURS, U[:, U_JIT]
        )
        pok = U[:, F_PARK_OK] < rates.park_ok
        m = happens(park, t_pd, 15)
        decide(pids[m], t_pd[m], shift[m], pok[m], None)
        pending[m] = None
        ma, mj = m[pok[m]], m[~pok[m]]
        parked[ma] = True
        stage[ma] = ST["parked"]
        shift_pause(mj, t_pd[mj])
        ev.add(
            m,
            15,
            t_pd[m],
            "decide_park",
            "handle",
            now_stage(m),
            shift[m],
            data=_decision_data(pok[m], pids[m]),
        )
        done(m, 15)
        resume = park & pok
        t_rs = within_hours(
            t_pd + lognormal_us(U[:, U_RESUME], 5 * 1440, 0.6, 1440, 30 * 1440),
            *CENTRE_HOURS,
            U[:, U_JIT],
        )
        m = happens(resume, t_rs, 16)
        stage[m] = ST["handle"]
        parked[m] = False
        shift_pause(m, t_rs[m])
        ev.add(m, 16, t_rs[m], "resume", "parked", "handle", shift[m], note=RESUME_NOTE)
        done(m, 16)
        late[resume] = False
        t = np.where(park, np.where(pok, t_rs, t_pd), t)
        # ------------------------------------------------------------ 17, 18: 督办, 处置
        natural = lim["handle"][1] < 2
        due = np.where(hd != NONE_T, hd, t)
        th = handle_time(vc, t, due, natural, handle_fraction(U[:, U_HANDLE], late))
        ts = due + (np.minimum(th - due, 4 * HOUR) * 0.5).astype(np.int64)
        sup = (
            alive
            & (th > due)
            & (U[:, F_SUP] < rates.supervise)
            & (ts > t)
            & (ts < th)
            & (leader >= 0)
        )
        m = happens(sup, ts, 17)
        supervised[m] = True
        ev.add(
            m, 17, ts[m], "supervise", now_stage(m), now_stage(m), leader[m], note=SUPERVISE_NOTE
        )
        done(m, 17)
        t_h = np.maximum(t, th)
        hn = _pick_text(HANDLE_NOTES, text_u)

        def handle(m: I64, t_: I64, k: int) -> None:
            stamps["handled_at"][m] = t_[m]
            late_flag[m] |= (hd[m] != NONE_T) & (t_[m] > hd[m])
            assignee[m] = self.inspectors_of(gi[m], U[m, U_REPORTER])
            start_stage(m, "check", t_[m])
            ev.add(m, k, t_[m], "handle", "handle", "check", h_actor[m], unit=lead[m], note=hn[m])
            done(m, k)

        m = happens(alive, t_h, 18)
        handle(m, t_h, 18)
        # ------------------------------------------------------------ 19–21: 核查 (one 返工)
        rework = U[:, F_REWORK] < rates.rework
        t_c1 = within_hours(
            t_h + lognormal_us(U[:, U_CHECK], 25, 0.7, 3, 600), *INSPECTOR_HOURS, U[:, U_JIT]
        )
        m = happens(alive, t_c1, 19)
        who = np.where(assignee >= 0, assignee, shift)
        assignee[m] = -1
        mf, mp = m[rework[m]], m[~rework[m]]
        rework_count[mf] += 1
        hd[mf] = vc.add(t_c1[mf], lim["handle"][0][mf], lim["handle"][1][mf])
        start_stage(mf, "handle", t_c1[mf])
        stamps["checked_at"][mp] = t_c1[mp]
        start_stage(mp, "close", t_c1[mp])
        ev.add(
            mp,
            19,
            t_c1[mp],
            "check",
            "check",
            "close",
            who[mp],
            note=CHECK_NOTE,
            data=_j({"passed": True}),
        )
        ev.add(
            mf,
            19,
            t_c1[mf],
            "rework",
            "check",
            "handle",
            who[mf],
            note=REWORK_NOTE,
            data=_j({"passed": False}),
        )
        done(m, 19)
        f2 = handle_fraction(U[:, U_HANDLE2], np.zeros(n, dtype=bool))
        th2 = handle_time(vc, t_c1, np.where(hd != NONE_T, hd, t_c1), natural, f2)
        t_h2 = np.maximum(t_c1 + 10 * MINUTE, th2)
        m = happens(alive & rework, t_h2, 20)
        handle(m, t_h2, 20)
        t_c2 = within_hours(
            t_h2 + lognormal_us(U[:, U_CHECK2], 25, 0.7, 3, 600), *INSPECTOR_HOURS, U[:, U_JIT]
        )
        m = happens(alive & rework, t_c2, 21)
        who = np.where(assignee >= 0, assignee, shift)
        assignee[m] = -1
        stamps["checked_at"][m] = t_c2[m]
        start_stage(m, "close", t_c2[m])
        ev.add(
            m,
            21,
            t_c2[m],
            "check",
            "check",
            "close",
            who[m],
            note=CHECK_NOTE,
            data=_j({"passed": True}),
        )
        done(m, 21)
        # ------------------------------------------------------------ 22: 结案
        t_chk = np.where(rework, t_c2, t_c1)
        t_cl = within_hours(
            t_chk + lognormal_us(U[:, U_CLOSE], 20, 0.8, 1, 600), *CENTRE_HOURS, U[:, U_JIT]
        )
        m = happens(alive, t_cl, 22)
        close_type[m] = np.where(late_flag[m], "超时", "正常").astype(object)
        stamps["closed_at"][m] = t_cl[m]
        start_stage(m, "closed", t_cl[m])
        cdata = np.where(
            late_flag[m], _j({"close_type": "超时"}), _j({"close_type": "正常"})
        ).astype(object)
        ev.add(m, 22, t_cl[m], "close", "close", "closed", shift[m], data=cdata)
        done(m, 22)

        # ------------------------------------------------------------ 合并 and repeats
        def stage_at(j: I64, tq: I64) -> NDArray[np.int8]:
            """Stage of cases ``j`` at instants ``tq``."""
            le = (T[j] <= tq[:, None]) & (STG[j] >= 0)
            k = np.where(le, np.arange(self.NSLOT), -1).max(axis=1)
            return np.where(k >= 0, STG[j, np.maximum(k, 0)], -1).astype(np.int8)

        dup = np.flatnonzero((ck == 1) & (t_acc <= end))
        if dup.size:
            j, tm = ctarget[dup], t_acc[dup]
            sj = stage_at(j, tm)
            opn = np.isin(sj, _OPEN_CODES)
            dm, tg, ta = dup[opn], j[opn], tm[opn]
            version[dm] += 1
            updated[dm] = ta
            dup_of[dm] = ids[tg]
            np.add.at(report_count, tg, 1)
            np.maximum.at(last_seen, tg, ta)
            np.maximum.at(updated, tg, ta)
            np.add.at(version, tg, 1)
            start_stage(dm, "merged", ta)
            ev.add(dm, 2, ta, "merge", "accept", "merged", op[dm], note=MERGE_NOTE,
                   data=[_j({"into": numbers[x]}) for x in tg.tolist()])  # fmt: skip
            s_open = _STAGE_ARR[sj[opn]]
            ev.add(
                tg,
                23,
                ta,
                "merged_in",
                s_open,
                s_open,
                op[dm],
                data=[_j({"from": numbers[x]}) for x in dm.tolist()],
            )
            c2, tc = dup[~opn], tm[~opn]
            version[c2] += 1
            updated[c2] = tc
            end_reason[c2] = DUP_REJECT
            start_stage(c2, "rejected", tc)
            ev.add(c2, 2, tc, "reject", "accept", "rejected", op[c2], note=DUP_REJECT)
        rep = np.flatnonzero(kind_all == 2)
        repeats = 0
        if rep.size:
            j, tr = case_pos[target_all[rep]], r.t[rep]
            sj = stage_at(j, tr)
            opn = np.isin(sj, _OPEN_CODES)
            rep, j, tr, sj = rep[opn], j[opn], tr[opn], sj[opn]
            repeats = int(rep.size)
            np.add.at(report_count, j, 1)
            np.maximum.at(last_seen, j, tr)
            np.maximum.at(updated, j, tr)
            np.add.at(version, j, 1)
            rl, ra = jitter(cr.lon[j], cr.lat[j], 2 + 10 * r.U[rep, U_JIT], r.U[rep, U_TEXT])
            rl, ra = np.round(rl, 8), np.round(ra, 8)
            note = np.array(
                [REPEAT_TEXT + w.cats[int(c)].name for c in cat[j].tolist()], dtype=object
            )
            rdata = [
                _j({"source": "video", "lon": x, "lat": y})
                for x, y in zip(rl.tolist(), ra.tolist(), strict=True)
            ]
            s_now = _STAGE_ARR[sj]
            ev.add(j, 23, tr, "repeat", s_now, s_now, r.reporter[rep], note=note, data=rdata)
        # ------------------------------------------------------------ write
        is_field = np.isin(src, _FIELD)
        reporter_name = np.array(cr.citizen, dtype=object)
        display = np.array(
            [w.principals[int(u)].display_name for u in cr.reporter.tolist()], dtype=object
        )
        reporter_name[is_field] = display[is_field]
        comp_id = np.where(
            comp >= 0, w.comp_ids[np.maximum(comp, 0)] if len(w.comp_ids) else -1, -1
        )
        h3s = np.fromiter(
            (
                h3i.latlng_to_cell(y, x, H3_RES)
                for x, y in zip(lon8.tolist(), lat8.tolist(), strict=True)
            ),
            dtype=np.int64,
            count=n,
        )
        kinds = np.array(
            ["component" if w.cats[int(c)].kind == "component" else "matter" for c in cat.tolist()],
            dtype=object,
        )
        cols = ev.columns()
        case_cols: dict[str, Col] = {
            "id": c_int(ids),
            "number": c_text(numbers),
            "tracking_code": c_text(tracking_codes(n)),
            "source": c_text(np.array(SOURCE_LIST, dtype=object)[src]),
            "case_type": c_text(kinds),
            "category_id": c_int(cat),
            "urgency": c_text(np.array(URGENCIES, dtype=object)[urg]),
            "description": c_text(desc),
            "address": c_text(np.array(w.grid_addr, dtype=object)[gi]),
            "lon": c_float(lon8),
            "lat": c_float(lat8),
            "h3": c_int(h3s),
            "grid_id": c_int(grid_id),
            "grid_code": c_text(gcode),
            "component_id": c_int_null(comp_id),
            "reporter_user_id": c_int(cr.reporter),
            "reporter_name": c_text(reporter_name),
            "reporter_phone": c_text(cr.phone),
            "stage": c_text(_STAGE_ARR[stage]),
            "stage_started_at": c_time(stage_start),
            "stage_deadline": c_time(sd),
            "stage_warn_at": c_time(warn),
            "assignee_user_id": c_int_null(assignee),
            "lead_unit_id": c_int_null(lead),
            "pending_request": c_text(pending),
            "paused_since": c_time(paused),
            "near_due": c_const(False, n),  # set by the scheduler (one tick at the end)
            "overdue": c_const(False, n),
            "supervised": c_bool(supervised),
            "extended": c_bool(extended),
            "parked": c_bool(parked),
            "escalation_level": c_const(0, n),
            "extension_count": c_int(ext_count),
            "return_count": c_int(ret_count),
            "rework_count": c_int(rework_count),
            "handled_late": c_bool(late_flag),
            "duplicate_of_id": c_int_null(dup_of),
            "report_count": c_int(report_count),
            "last_seen_at": c_time(last_seen),
            "close_type": c_text(close_type),
            "end_reason": c_text(end_reason),
            "reported_at": c_time(cr.t),
            **{k: c_time(v) for k, v in stamps.items()},
            "handle_deadline": c_time(hd),
            **actor_columns(cols, n),
            "updated_at": c_time(updated),
            "version": c_int(version),
        }
        tables: list[TableRows] = [("cases", list(case_cols), list(case_cols.values()))]
        with_lead = np.flatnonzero(lead >= 0)
        cu_case, cu_unit = ids[with_lead].tolist(), lead[with_lead].tolist()
        cu_role = ["lead"] * len(with_lead)
        has_co = np.fromiter((bool(c) for c in co.tolist()), dtype=bool, count=n)
        for i in np.flatnonzero((lead >= 0) & has_co).tolist():
            for u in dict.fromkeys(co[i]):
                if u != lead[i]:
                    cu_case.append(int(ids[i]))
                    cu_unit.append(int(u))
                    cu_role.append("co")
        unit_cols = [c_int(cu_case), c_int(cu_unit), c_text(cu_role)]
        tables.append(("case_units", ["case_id", "unit_id", "role"], unit_cols))
        approvals = self._approval_rows(appr, ids)
        tables.append(approvals)
        n_ev = 0
        if cols:
            n_ev = len(cols["case"])
            values = [
                c_int(ids[cols["case"]]),
                c_time(cols["at"]),
                c_int_null(cols["actor"]),
                c_text(self.names(cols["actor"])),
                c_text(cols["action"]),
                c_text(cols["from"]),
                c_text(cols["to"]),
                c_int_null(cols["unit"]),
                c_text(cols["note"]),
                c_text(cols["data"]),
            ]
            tables.append(("case_events", list(EVENT_COLUMNS), values))
        return BatchResult(
            tables=tables,
            first_case_id=case_id0,
            cases=n,
            events=n_ev,
            approvals=col_len(approvals[2][0]) if approvals[2] else 0,
            repeats_merged=repeats,
            next_approval_id=appr_next[0],
            sequences=batch_seq,
            reports=len(r),
        )

    @staticmethod
    def _numbers(t: I64, seq_last: dict[date, int]) -> tuple[list[str], dict[date, int]]:
        """Case numbers: local date + 5-digit daily sequence, continuing ``seq_last`` (which
        is updated); also the last number of each day of the batch."""
        n = len(t)
        day_no = (t + LOCAL_OFFSET) // DAY
        uniq, first = np.unique(day_no, return_index=True)
        counts = np.diff(np.concatenate([first, [n]]))
        rank = np.arange(n) - np.repeat(first, counts)
        days = [date(1970, 1, 1) + timedelta(days=int(d)) for d in uniq.tolist()]
        base = np.array([seq_last.get(d, 0) for d in days], dtype=np.int64)
        seq = np.repeat(base, counts) + rank + 1
        if n and seq.max() > 99_999:
            raise Invalid("more than 99,999 cases on one day: case numbers have 5 sequence digits")
        for d, b, c in zip(days, base.tolist(), counts.tolist(), strict=True):
            seq_last[d] = b + c
        prefix = np.repeat(np.array([d.strftime("%Y%m%d") for d in days], dtype=object), counts)
        numbers = [f"{p}{q:05d}" for p, q in zip(prefix.tolist(), seq.tolist(), strict=True)]
        return numbers, {d: seq_last[d] for d in days}

    @staticmethod
    def _approval_rows(appr: list[dict[str, Any]], ids: I64) -> TableRows:
        """Rows of case_approvals: every request with its decision (if taken by the end)."""
        reqs = [a for a in appr if "decide" not in a]
        decs = [a for a in appr if "decide" in a]
        names = ["id", "case_id", "kind", "unit_id", "requested_by", "requested_at", "reason",
                 "amount", "amount_unit", "required_role", "decided_by", "decided_at", "decision",
                 "decision_note"]  # fmt: skip
        if not reqs:
            return ("case_approvals", names, [])
        rid = np.concatenate([a["id"] for a in reqs])
        m = len(rid)

        def cat(key: str, default: Any = None) -> Arr:
            parts = []
            for a in reqs:
                v = a[key]
                parts.append(np.asarray(v) if v is not None else np.full(len(a["id"]), default))
            return np.concatenate(parts)

        amount = np.concatenate(
            [np.asarray(a["amount"], dtype=object) if a["amount"] is not None else np.full(len(a["id"]), None, dtype=object) for a in reqs]
        )  # fmt: skip
        d_by = np.full(m, -1, dtype=np.int64)
        d_at = np.full(m, NONE_T, dtype=np.int64)
        decision = np.full(m, None, dtype=object)
        d_note = np.full(m, None, dtype=object)
        pos = {r: k for k, r in enumerate(rid.tolist())}
        for a in decs:
            k = np.array([pos[r] for r in a["decide"].tolist()], dtype=np.int64)
            if not k.size:
                continue
            d_by[k] = a["by"]
            d_at[k] = a["at"]
            decision[k] = np.where(np.asarray(a["ok"]), "approved", "rejected")
            note = a["note"]
            d_note[k] = (
                note if isinstance(note, np.ndarray) else np.full(len(k), note, dtype=object)
            )
        cols = [
            c_int(rid),
            c_int(ids[cat("case")]),
            c_text(np.concatenate([np.full(len(a["id"]), a["kind"], dtype=object) for a in reqs])),
            c_int_null(cat("unit")),
            c_int_null(cat("by")),
            c_time(cat("at")),
            c_text(np.concatenate([np.asarray(a["reason"], dtype=object) for a in reqs])),
            ("l", [None if v is None else float(v) for v in amount.tolist()]),
            c_text(["working_days" if v is not None else None for v in amount.tolist()]),
            c_text(np.concatenate([np.asarray(a["role"], dtype=object) for a in reqs])),
            c_int_null(d_by),
            c_time(d_at),
            c_text(decision),
            c_text(d_note),
        ]
        return ("case_approvals", names, cols)


def deferrable_indexes() -> list[Index]:
    """Secondary indexes of cases and case_events: built once after a large bulk load."""
    tables = (Case.__table__, CaseEvent.__table__)
    return [ix for t in tables for ix in t.indexes if not ix.unique]  # type: ignore[attr-defined]


def deferrable_foreign_keys() -> list[ForeignKeyConstraint]:
    """Foreign keys of the case tables: on PostgreSQL checked once (ADD CONSTRAINT) after a
    large bulk load instead of by a trigger per row."""
    tables = (Case.__table__, CaseEvent.__table__, CaseUnit.__table__, ApprovalRequest.__table__)
    fks = [fk for t in tables for fk in t.foreign_key_constraints]  # type: ignore[attr-defined]
    return sorted(fks, key=lambda fk: str(fk.name))


def drop_checks(conn: Connection) -> None:
    """Drop :func:`deferrable_indexes` (and on PostgreSQL :func:`deferrable_foreign_keys`)."""
    for ix in deferrable_indexes():
        ix.drop(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        for fk in deferrable_foreign_keys():
            assert fk.table is not None
            conn.exec_driver_sql(
                f'ALTER TABLE {fk.table.name} DROP CONSTRAINT IF EXISTS "{fk.name}"'
            )


def restore_checks(conn: Connection) -> None:
    """Create whichever of the deferrable indexes and foreign keys is missing (after a bulk
    load, or to repair an interrupted one). Adding a foreign key validates every row."""
    for ix in deferrable_indexes():
        ix.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        have = set(
            conn.exec_driver_sql(
                "SELECT conname FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY("
                "ARRAY['cases', 'case_events', 'case_units', 'case_approvals']::regclass[])"
            ).scalars()
        )
        for fk in deferrable_foreign_keys():
            if fk.name not in have:
                conn.execute(AddConstraint(fk))


@dataclass
class _Plan:
    """What the producer of bulk batches needs (all of it read before it starts)."""

    world: World
    rates: Rates
    seed: int
    start: int
    days: int
    per_day: int
    batch_days: int
    first_case_id: int
    first_approval_id: int
    sequences: dict[date, int]
    auto_file: frozenset[str]
    copy_text: bool


def _batches(plan: _Plan) -> Iterator[BatchResult]:
    """Compute the batches one after the other (no database access)."""
    end = plan.start + plan.days * DAY
    rng = plan_rng(plan.seed)
    case_id, appr_id = plan.first_case_id, plan.first_approval_id
    seq = dict(plan.sequences)
    for d0 in range(0, plan.days, plan.batch_days):
        day_starts = [
            plan.start + (d0 + k) * DAY for k in range(min(plan.batch_days, plan.days - d0))
        ]
        parts = [sample_reports(plan.world, rng, [d], plan.per_day, plan.rates) for d in day_starts]
        batch = _Batch(plan.world, plan.rates, end, plan.auto_file)
        res = batch.run(Reports.concat(parts), case_id, appr_id, seq)
        res.last_day = local_date(day_starts[-1])
        if plan.copy_text:
            res.copy_text = {name: copy_block(cols) for name, _, cols in res.tables if cols}
            res.tables = [(name, columns, []) for name, columns, _ in res.tables]
        case_id += res.cases
        appr_id = res.next_approval_id
        yield res


def _produce(conn: Any, plan: _Plan) -> None:
    """Producer process: send each computed batch, then None (or the error text)."""
    try:
        for res in _batches(plan):
            conn.send(res)
        conn.send(None)
    except BaseException:  # pragma: no cover - reported by the parent
        import traceback

        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _parallel(plan: _Plan) -> Iterator[BatchResult]:
    """The batches, computed in a forked process while this one writes (POSIX), else here."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        yield from _batches(plan)
        return
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_produce, args=(send, plan), daemon=True)
    proc.start()
    send.close()
    try:
        while True:
            msg = recv.recv()
            if msg is None:
                break
            if isinstance(msg, tuple):
                raise RuntimeError(f"bulk simulation producer failed:\n{msg[1]}")
            yield msg
    finally:
        recv.close()
        proc.join(timeout=5)
        if proc.is_alive():  # pragma: no cover
            proc.terminate()


def copy_block(cols: Sequence[Any]) -> str:
    """Rows (encoded or plain columns) in PostgreSQL COPY text format."""
    plain = [_copy_text(decode(c) if isinstance(c, tuple) else c) for c in cols]
    if not plain or not plain[0]:
        return ""
    return "\n".join(map("\t".join, zip(*plain, strict=True))) + "\n"


@contextmanager
def _write_session(db: Database, unchecked: bool) -> Iterator[Session]:
    """A unit of work for one bulk batch. ``unchecked`` (SQLite, during a deferred load):
    without per-row foreign key checks — every id written was read from the database at the
    start of the run or assigned by it; the connection gets its checks back afterwards."""
    if not (unchecked and db.engine.dialect.name == "sqlite"):
        with db.session() as s:
            yield s
        return
    conn = db.engine.connect()
    raw: Any = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")  # before BEGIN, else SQLite ignores it
    try:
        s = Session(bind=conn)
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
        conn.close()


def _bulk_run(
    db: Database,
    world: World,
    rates: Rates,
    seed: int,
    start: int,
    days: int,
    per_day: int,
    summary: SimSummary,
    out: TextIO | None,
    batch_cases: int,
    final_tick: bool,
    parallel: bool,
) -> None:
    end = start + days * DAY
    t0 = time.perf_counter()
    with db.session() as s:
        restore_checks(s.connection())
        existing = int(s.scalar(select(func.count()).select_from(Case)) or 0)
        wr = BulkWriter(s)
        q = select(CaseSequence.day, CaseSequence.last).where(
            CaseSequence.day >= local_date(start), CaseSequence.day < local_date(end)
        )
        plan = _Plan(
            world=world,
            rates=rates,
            seed=seed,
            start=start,
            days=days,
            per_day=per_day,
            batch_days=max(1, batch_cases // max(per_day, 1)),
            first_case_id=wr.next_id("cases"),
            first_approval_id=wr.next_id("case_approvals"),
            sequences={d: int(v) for d, v in s.execute(q)},
            auto_file=service.auto_file_sources(s),
            copy_text=wr.copy,
        )
    # a load at least as big as the table: indexes and foreign keys once, at the end
    defer = days * per_day >= max(DEFER_CHECKS_FROM, existing)
    total = 0
    try:
        if defer:
            with db.session() as s:
                drop_checks(s.connection())
        for res in _parallel(plan) if parallel else _batches(plan):
            with _write_session(db, defer) as s:
                lock_for_write(s)
                wr = BulkWriter(s)
                if wr.next_id("cases") != res.first_case_id:
                    raise Conflict("cases were added while the bulk simulation ran: stopped")
                for name, columns, cols in res.tables:
                    if res.copy_text is not None:
                        if name in res.copy_text:
                            wr.write_text(name, columns, res.copy_text[name])
                    else:
                        wr.write(name, columns, cols)
                have = {
                    d: v
                    for d, v in s.execute(
                        select(CaseSequence.day, CaseSequence.last).where(
                            CaseSequence.day.in_(list(res.sequences))
                        )
                    )
                }
                for d, v in sorted(res.sequences.items()):
                    if d not in have:
                        s.execute(insert(CaseSequence).values(day=d, last=v))
                    elif v > have[d]:
                        s.execute(update(CaseSequence).where(CaseSequence.day == d).values(last=v))
                wr.sync_sequence("cases")
                wr.sync_sequence("case_approvals")
            summary.reports += res.reports
            if res.cases:
                if summary.first_case_id is None:
                    summary.first_case_id = res.first_case_id
                summary.last_case_id = res.first_case_id + res.cases - 1
            rm = summary.counts.get("repeats_merged", 0) + res.repeats_merged
            summary.counts["repeats_merged"] = rm
            total += res.cases
            if out is not None:
                el = time.perf_counter() - t0
                print(
                    f"[simulate bulk] {res.last_day}: {total} cases, {el:.1f} s"
                    f" ({total / el if el else 0:.0f} cases/s)",
                    file=out,
                    flush=True,
                )
    finally:
        if defer:
            t1 = time.perf_counter()
            with db.session() as s:
                restore_checks(s.connection())
            if out is not None:
                el = time.perf_counter() - t1
                print(
                    f"[simulate bulk] indexes and checks restored in {el:.1f} s",
                    file=out,
                    flush=True,
                )
    if summary.first_case_id is None:
        return
    with db.session() as s:
        after = {
            "mode": "bulk",
            "seed": seed,
            "days": days,
            "per_day": per_day,
            "case_ids": [summary.first_case_id, summary.last_case_id],
        }
        audit.record(s, "simulate", "cases", after=after)
    summary.counts["load_seconds"] = round(time.perf_counter() - t0)
    if final_tick:
        from cityops.cases import jobs

        # the flags of the cases still open at the end: one tick of the real scheduler
        t1 = time.perf_counter()
        rep = jobs.tick(db, to_dt(end), limit=10_000_000)
        summary.counts["scheduler_near_due"] = len(rep.near_due)
        summary.counts["scheduler_overdue"] = len(rep.overdue)
        if out is not None:
            el = time.perf_counter() - t1
            print(
                f"[simulate bulk] scheduler tick at the end: {len(rep.overdue)} overdue, {el:.1f} s",
                file=out,
                flush=True,
            )


# --------------------------------------------------------------------------- entry point


def simulate_cases(
    db: Database,
    days: int,
    per_day: int,
    seed: int = 7,
    start: date | None = None,
    mode: str = "service",
    *,
    finish: bool = False,
    rates: Rates = RATES,
    storage: Storage | None = None,
    photos: str = "reuse",
    progress: TextIO | None = sys.stderr,
    batch_cases: int = 25_000,
    tick_minutes: float = 15,
    final_tick: bool = True,
    parallel: bool = True,
) -> SimSummary:
    """Generate ``days`` × ``per_day`` reports of case history (see the module docstring).

    ``start`` is the first local day (default: ``days`` days before today). ``finish`` runs
    every case to its end (service mode). ``tick_minutes``: how often the deadline scheduler
    (:func:`cityops.cases.jobs.tick`) runs on the simulated clock in service mode (0: never;
    bulk mode runs it once, at the end). Progress lines go to ``progress`` (None: quiet).
    Returns counts read back from the database for the cases of this run.
    """
    if mode not in ("service", "bulk"):
        raise Invalid(f"mode must be service or bulk, not {mode!r}", field="mode", value=mode)
    if days < 1 or per_day < 1:
        raise Invalid("days and per_day must be at least 1", field="days", value=[days, per_day])
    if photos not in ("reuse", "upload"):
        raise Invalid("photos must be reuse or upload", field="photos", value=photos)
    if start is None:
        start = local_date(to_us(datetime.now(UTC))) - timedelta(days=days)
    t_start = local_midnight(start)
    summary = SimSummary(
        mode=mode,
        seed=seed,
        days=days,
        per_day=per_day,
        start=start.isoformat(),
        end=(start + timedelta(days=days)).isoformat(),
    )
    t0 = time.perf_counter()
    with db.session() as s:
        world = load_world(s, seed)
    if mode == "service":
        sim = _ServiceSim(
            db, world, rates, seed, storage or default_storage(), photos, summary, progress
        )
        sim.run(t_start, days, per_day, finish, tick_minutes)
    else:
        _bulk_run(
            db,
            world,
            rates,
            seed,
            t_start,
            days,
            per_day,
            summary,
            progress,
            batch_cases,
            final_tick,
            parallel,
        )
    summary.seconds = time.perf_counter() - t0
    with db.session() as s:
        _summarise(s, summary)
    return summary

"""Rollup upkeep: case history events → daily counters (``eval_daily_counts``).

Every counter is derived by :func:`facts_of` from ONE case event plus a small context of the
case *at the time of that event* (:class:`Ctx`). The same function feeds

* the ``after_flush`` listener (context read from the Case object in the session, so the
  counters change in the same transaction as the event row), and
* :func:`rebuild` / drill-down (context replayed from the case's earlier events in order),

so the incremental counters and a rebuild agree by construction.

Days are Asia/Shanghai local dates. Three families of metrics, each anchored on a day:

Units (``unit_id`` = the lead unit; day = the local day of the case's current 派遣 — a
cohort: "of the cases dispatched to the unit in the period, how many …"):

* ``u_dispatched`` 应处置数: +1 per ``dispatch`` event (re-dispatch after 回退 counts for the
  new unit).
* ``u_handled`` 处置数 / ``u_handled_on_time`` 按期处置数 / ``u_handled_late`` 超期处置数: +1 on
  the ``check`` event that passes 核查 (the accepted handling); on time when the last 处置反馈
  (``handled_at``) is on or before ``handle_deadline`` (after 延期 and pauses).
* ``u_rework`` 返工数: +1 per ``rework`` event (核查 failed).
* ``u_returned`` 回退数: +1 per approved ``decide_return`` (unit = the requesting unit).
* ``u_extended`` 延期数: +1 per approved ``decide_extend``.
* ``u_parked`` 挂账 (net): +1 per approved ``decide_park``, −1 per ``resume``.
* ``u_closed`` 结案数 / ``u_closed_on_time`` 按期结案数: +1 on ``close``; on time when the
  结案 type is 正常.
* 应结案数 (derived) = u_dispatched − u_returned − u_parked.

Regions (``grid_code``; day = the local day of 立案, cohort; 自行处置 counts as 立案 + 结案):

* ``r_filed`` 立案: +1 per ``file`` and ``self_handle`` event.
* ``r_parked`` 挂账 (net, +1 approved park / −1 resume) and ``r_dropped`` (作废 or 合并 of a
  filed case, i.e. from stage 待派遣): both taken out of 立案数 (立案数 "without 挂账").
* ``r_closed`` / ``r_closed_on_time``: as for units (``close`` and ``self_handle``).
* ``r_public_ok`` 监督举报核实数: +1 per ``verify`` confirming a 公众举报/12345 report (day of
  the 核实).
* 立案数 = 应结案数 (derived) = r_filed − r_parked − r_dropped.

Inspectors (``user_id``):

* ``i_reported`` 上报数: +1 per ``report`` of source 监督员上报/自行处置 (reporter, report day).
* ``i_valid`` 有效上报数: +1 when such a report is filed (``file``/``self_handle``), counted on
  the report day so that 有效上报率 ≤ 100 % within a period.
* ``i_verify_due`` 应核实数 / ``i_verify_on_time`` 按时核实数: +1 per ``verify`` by its actor
  (day of the 核实); on time when done by the 核实 stage's deadline (its time limit counted
  from 受理 on the working-time clock).
* ``i_check_due`` 应核查数 / ``i_check_on_time`` 按时核查数: +1 per ``check`` or ``rework`` by
  its actor; on time when done by the 核查 deadline (limit from the 处置反馈).
* ``i_self_handled`` 自行处置数 (also counted in i_reported, i_valid, r_filed, r_closed).

Positions (岗位, ``user_id`` = the person; day = the day of their act unless said otherwise;
acts of the system — automatic 受理/立案/派遣 — count for nobody):

* 监督员 漏报: ``i_grid_filed`` 网格立案数 +1 for every inspector of the case's grid (active
  members of ``grid_inspectors``) per ``file``/``self_handle``; ``i_missed`` 漏报数 +1 when the
  case was not reported by that inspector (a 公众举报, a video alarm, another inspector …).
  Grid membership is read when the counter is written (a rebuild reads today's membership).
* 受理员: ``o_accepted`` 受理数 +1 per ``accept``; ``o_verify_sent`` 核实派发数 +1 per ``accept``
  that sends a 核实 task (公众举报/12345/视频), ``o_verify_sent_on_time`` when that 受理 was
  within the 受理 time limit counted from the report; ``o_check_sent`` 核查派发数 +1 per
  ``handle`` (the 核查 task goes out at the unit's 处置反馈; credited to the case's 受理员,
  on the day of the 处置反馈), ``o_check_sent_on_time`` when the grid has an inspector to
  take it at once.
* 值班长: ``s_filed`` 立案数 / ``s_filed_on_time`` 按时立案数 (within the 立案 limit from the
  moment the case became fileable: 核实 or 受理); ``s_voided`` 作废数: a case this person filed
  was then voided or merged (from 待派遣), on the 立案 day; ``s_closed`` 结案数 /
  ``s_closed_on_time`` 按时结案数 (within the 结案 limit from the passing 核查).
* 派遣员: ``d_dispatched`` 派遣数 = 应派遣数 / ``d_dispatched_on_time`` 按时派遣数 (within the
  派遣 limit from 立案 or from the approved 回退 that sent the case back to 待派遣);
  ``d_returned`` 派遣返工数: the unit's 回退 of that dispatch was approved (a wrong unit), on
  the dispatch day — 准确派遣率 = (应派遣数 − 派遣返工数) / 应派遣数.

Tasks not yet done are not counted (a 核实 still open is not 应核实 yet).
A ``reopen`` (重新核查, e.g. after a third-party reviewer's 不满意) takes back the counters
of the case being handled and closed (u_handled*, u_closed*, r_closed*, on their original
days); the next passing 核查 and 结案 count them again. The acts themselves (i_check_*,
s_closed*) stay counted.
Cohort figures (anchored on the 派遣/立案/上报 day) keep growing while the cases of that day
progress: a 结案 in December adds to the November 立案 cohort. ``reject``,
``sign``, ``request_*``, ``supervise``, ``merged_in``, ``repeat``, ``split``, ``near_due``,
``overdue`` and ``escalate`` events move no counter. Rows written outside the ORM (bulk
simulation or import loaders) bypass the listener: run :func:`rebuild` after them.

Every counter is also summed per month in ``eval_monthly_counts``
(:mod:`cityops.evaluation.schedule_models`), in the same statement batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case as sql_case
from sqlalchemy import delete, event, func, insert, inspect, select
from sqlalchemy.orm import Session

from cityops.cases.models import (
    ACTOR_ACTIONS,
    NEEDS_VERIFY,
    ApprovalRequest,
    Case,
    CaseEvent,
    track_actors,
)
from cityops.evaluation.models import EvalDailyCount
from cityops.evaluation.schedule_models import EvalMonthlyCount

#: Local time of the days (the working-time clock's zone).
TZ = ZoneInfo("Asia/Shanghai")

INSPECTOR_SOURCES = frozenset({"inspector", "self"})
PUBLIC_SOURCES = frozenset({"public", "hotline"})

METRICS: dict[str, str] = {
    "u_dispatched": "应处置数",
    "u_handled": "处置数",
    "u_handled_on_time": "按期处置数",
    "u_handled_late": "超期处置数",
    "u_rework": "返工数",
    "u_returned": "回退数",
    "u_extended": "延期数",
    "u_parked": "挂账数",
    "u_closed": "结案数",
    "u_closed_on_time": "按期结案数",
    "r_filed": "立案(含挂账)",
    "r_parked": "挂账数",
    "r_dropped": "立案后作废/合并",
    "r_closed": "结案数",
    "r_closed_on_time": "按期结案数",
    "r_public_ok": "监督举报核实数",
    "i_reported": "上报数",
    "i_valid": "有效上报数",
    "i_verify_due": "应核实数",
    "i_verify_on_time": "按时核实数",
    "i_check_due": "应核查数",
    "i_check_on_time": "按时核查数",
    "i_self_handled": "自行处置数",
    "i_grid_filed": "网格立案数",
    "i_missed": "漏报数",
    "o_accepted": "受理数",
    "o_verify_sent": "核实派发数",
    "o_verify_sent_on_time": "核实按时派发数",
    "o_check_sent": "核查派发数",
    "o_check_sent_on_time": "核查按时派发数",
    "s_filed": "立案数",
    "s_filed_on_time": "按时立案数",
    "s_voided": "作废数",
    "s_closed": "结案数",
    "s_closed_on_time": "按时结案数",
    "d_dispatched": "派遣数",
    "d_dispatched_on_time": "按时派遣数",
    "d_returned": "派遣返工数",
}

Key = tuple[date, int, str, int, int, str]


@dataclass(slots=True)
class Ctx:
    """What the metrics of one event need to know about its case at that moment."""

    source: str
    grid_code: str
    grid_id: int | None
    category_id: int
    urgency: str
    reporter_user_id: int | None
    reported_at: datetime
    accepted_at: datetime | None
    filed_at: datetime | None
    dispatched_at: datetime | None
    handled_at: datetime | None
    lead_unit_id: int | None
    #: Final handle deadline of the case: only read on the passing 核查 (after it, it never moves).
    handle_deadline: datetime | None
    verified_at: datetime | None = None
    checked_at: datetime | None = None
    #: Who did the case's current 受理 / 立案 / 派遣 (None: the system or nobody yet).
    accepted_by_id: int | None = None
    filed_by_id: int | None = None
    dispatched_by_id: int | None = None
    #: When the case last entered 待派遣 (立案, or an approved 回退).
    dispatch_stage_at: datetime | None = None
    #: The "case is handled and closed" counters of its last passing 核查 and 结案, taken
    #: back when a 重新核查 (reopen) sends the closed case back to 核查.
    undo: tuple[Fact, ...] = ()


@dataclass(frozen=True, slots=True)
class Fact:
    case_id: int
    metric: str
    day: date
    unit_id: int
    grid_code: str
    category_id: int
    user_id: int
    n: int

    @property
    def key(self) -> Key:
        return (self.day, self.unit_id, self.grid_code, self.category_id, self.user_id, self.metric)


def local_day(t: datetime) -> date:
    return t.astimezone(TZ).date()


_FAR = datetime.max.replace(tzinfo=TZ)


class Deadlines:
    """Stage deadlines on the working-time clock (limits cached per stage/category/urgency)."""

    def __init__(self, session: Session) -> None:
        from cityops.worktime import service as wt  # (imports cityops.models: not at import)

        self.session = session
        self.wt = wt
        self.limits: dict[tuple[str, int, str], Any] = {}

    def due(self, ctx: Ctx, stage: str, start: datetime | None) -> datetime:
        if start is None:
            return _FAR
        k = (stage, ctx.category_id, ctx.urgency)
        lim = self.limits.get(k)
        if lim is None:
            lim = self.limits[k] = self.wt.resolve_limit(
                self.session, stage, ctx.category_id, ctx.urgency
            ).limit
        due = self.wt.get_clock(self.session).deadline(start, lim).due_at
        return due if due is not None else _FAR


GridInspectors = Callable[[int | None], tuple[int, ...]]


#: (database, grid id) → (monotonic time loaded, active inspectors of the grid), for the
#: listener: who patrols a grid changes rarely, so a grid's answer is reused for
#: ``index_refresh_seconds`` (the refresh rule of the spatial index and the clock).
_inspectors_seen: dict[tuple[str, int], tuple[float, tuple[int, ...]]] = {}


def _grid_inspectors_query(session: Session) -> GridInspectors:
    from cityops.access.models import User
    from cityops.core.settings import get_settings
    from cityops.geo.models import grid_inspectors as gi

    db = session.get_bind().engine.url.render_as_string(hide_password=False)
    ttl = get_settings().index_refresh_seconds

    def of(grid_id: int | None) -> tuple[int, ...]:
        if grid_id is None:
            return ()
        now = time.monotonic()
        hit = _inspectors_seen.get((db, grid_id))
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        q = (
            select(gi.c.user_id)
            .join(User, User.id == gi.c.user_id)
            .where(gi.c.grid_id == grid_id, User.active.is_(True))
            .order_by(gi.c.user_id)
        )
        found = tuple(session.scalars(q))
        if len(_inspectors_seen) > 100_000:
            _inspectors_seen.clear()
        _inspectors_seen[(db, grid_id)] = (now, found)
        return found

    return of


def _grid_inspectors_all(session: Session) -> GridInspectors:
    from cityops.access.models import User
    from cityops.geo.models import grid_inspectors as gi

    m: dict[int, list[int]] = {}
    q = (
        select(gi.c.grid_id, gi.c.user_id)
        .join(User, User.id == gi.c.user_id)
        .where(User.active.is_(True))
        .order_by(gi.c.grid_id, gi.c.user_id)
    )
    for g, u in session.execute(q):
        m.setdefault(g, []).append(u)
    frozen = {g: tuple(us) for g, us in m.items()}
    return lambda grid_id: frozen.get(grid_id, ()) if grid_id is not None else ()


def facts_of(
    session: Session,
    ev: Any,
    ctx: Ctx,
    return_unit: int | None = None,
    deadlines: Deadlines | None = None,
    inspectors_of: GridInspectors | None = None,
) -> list[Fact]:
    """The counters one event moves (see the module docstring).

    ``ev`` is a :class:`CaseEvent` or a row with the same attributes."""
    out: list[Fact] = []
    cid = ev.case_id
    a = ev.action
    data = ev.data or {}
    dl = deadlines or Deadlines(session)

    def add(
        metric: str, at: datetime | None, unit: int | None = None, user: int | None = None
    ) -> None:
        if at is None:
            return
        n = -1 if metric.endswith("_parked") and a == "resume" else 1
        out.append(
            Fact(
                cid, metric, local_day(at), unit or 0, ctx.grid_code, ctx.category_id, user or 0, n
            )
        )

    def person(metric: str, at: datetime | None, user: int | None) -> None:
        if user:  # acts of the system count for nobody
            add(metric, at, user=user)

    lead = ctx.lead_unit_id
    insp = ctx.source in INSPECTOR_SOURCES
    if a in ("file", "self_handle"):
        for uid in (inspectors_of or _grid_inspectors_query(session))(ctx.grid_id):
            add("i_grid_filed", ev.at, user=uid)
            if not (insp and ctx.reporter_user_id == uid):
                add("i_missed", ev.at, user=uid)
    if a == "report":
        if insp:
            add("i_reported", ev.at, user=ev.actor_id)
    elif a == "self_handle":
        add("r_filed", ev.at)
        add("r_closed", ev.at)
        add("r_closed_on_time", ev.at)
        add("i_valid", ctx.reported_at, user=ctx.reporter_user_id)
        add("i_self_handled", ev.at, user=ctx.reporter_user_id)
    elif a == "accept":
        if ev.actor_id:
            person("o_accepted", ev.at, ev.actor_id)
            if ctx.source in NEEDS_VERIFY:
                person("o_verify_sent", ev.at, ev.actor_id)
                if ev.at <= dl.due(ctx, "accept", ctx.reported_at):
                    person("o_verify_sent_on_time", ev.at, ev.actor_id)
    elif a == "file":
        add("r_filed", ev.at)
        if insp:
            add("i_valid", ctx.reported_at, user=ctx.reporter_user_id)
        if ev.actor_id:
            person("s_filed", ev.at, ev.actor_id)
            start = ctx.verified_at or ctx.accepted_at
            if ev.at <= dl.due(ctx, "file", start):
                person("s_filed_on_time", ev.at, ev.actor_id)
    elif a == "verify":
        add("i_verify_due", ev.at, user=ev.actor_id)
        if ev.at <= dl.due(ctx, "verify", ctx.accepted_at):
            add("i_verify_on_time", ev.at, user=ev.actor_id)
        if data.get("confirmed") and ctx.source in PUBLIC_SOURCES:
            add("r_public_ok", ev.at)
    elif a == "dispatch":
        add("u_dispatched", ev.at, unit=ev.unit_id)
        if ev.actor_id:
            person("d_dispatched", ev.at, ev.actor_id)
            if ev.at <= dl.due(ctx, "dispatch", ctx.dispatch_stage_at):
                person("d_dispatched_on_time", ev.at, ev.actor_id)
    elif a == "handle":
        if ctx.accepted_by_id:
            person("o_check_sent", ev.at, ctx.accepted_by_id)
            if (inspectors_of or _grid_inspectors_query(session))(ctx.grid_id):
                person("o_check_sent_on_time", ev.at, ctx.accepted_by_id)
    elif a in ("check", "rework"):
        add("i_check_due", ev.at, user=ev.actor_id)
        if ev.at <= dl.due(ctx, "check", ctx.handled_at):
            add("i_check_on_time", ev.at, user=ev.actor_id)
        if a == "rework":
            add("u_rework", ctx.dispatched_at, unit=lead)
        else:
            add("u_handled", ctx.dispatched_at, unit=lead)
            on_time = (
                ctx.handled_at is not None
                and ctx.handle_deadline is not None
                and ctx.handled_at <= ctx.handle_deadline
            )
            add("u_handled_on_time" if on_time else "u_handled_late", ctx.dispatched_at, lead)
    elif a == "close":
        add("u_closed", ctx.dispatched_at, unit=lead)
        add("r_closed", ctx.filed_at)
        if data.get("close_type") == "正常":
            add("u_closed_on_time", ctx.dispatched_at, unit=lead)
            add("r_closed_on_time", ctx.filed_at)
        if ev.actor_id:
            person("s_closed", ev.at, ev.actor_id)
            if ev.at <= dl.due(ctx, "close", ctx.checked_at):
                person("s_closed_on_time", ev.at, ev.actor_id)
    elif a in ("decide_return", "decide_extend", "decide_park") and data.get("approve"):
        if a == "decide_return":
            add("u_returned", ctx.dispatched_at, unit=return_unit)
            person("d_returned", ctx.dispatched_at, ctx.dispatched_by_id)
        elif a == "decide_extend":
            add("u_extended", ctx.dispatched_at, unit=lead)
        else:
            add("u_parked", ctx.dispatched_at, unit=lead)
            add("r_parked", ctx.filed_at)
    elif a == "resume":
        add("u_parked", ctx.dispatched_at, unit=lead)
        add("r_parked", ctx.filed_at)
    elif a in ("void", "merge") and ev.from_stage == "dispatch":
        add("r_dropped", ctx.filed_at)
        person("s_voided", ctx.filed_at, ctx.filed_by_id)
    elif a == "reopen":
        out.extend(replace(f, n=-f.n) for f in ctx.undo)
    return out


#: Counters of a closed case that a reopen takes back (the 结案 and the accepted handling).
_UNDONE = frozenset(
    {
        "u_handled",
        "u_handled_on_time",
        "u_handled_late",
        "u_closed",
        "u_closed_on_time",
        "r_closed",
        "r_closed_on_time",
    }
)


def _undo_of(session: Session, case_id: int, before_id: int) -> tuple[Fact, ...]:
    """What a reopen takes back: the case's history before it replayed (listener side)."""
    cases = {r.id: r for r in session.execute(select(*_CASE_COLS).where(Case.id == case_id))}
    evs = session.execute(
        select(*_EVENT_COLS)
        .where(CaseEvent.case_id == case_id, CaseEvent.id < before_id)
        .order_by(CaseEvent.id)
    )
    last: list[Ctx] = []
    for _ in replay_rows(
        session, cases, evs, Deadlines(session), _grid_inspectors_query(session), last
    ):
        pass
    return last[0].undo if last else ()


_ACTOR_FIELDS = ("accepted_by_id", "filed_by_id", "dispatched_by_id", "dispatch_stage_at")


def _ctx_of_case(c: Case, actors: Any) -> Ctx:
    """The listener's context of an event: the case row as flushed, and the actor fields as
    they were right before the event (``actors``, see :func:`_actors_before_flush`)."""
    return Ctx(
        source=c.source,
        grid_code=c.grid_code or "",
        grid_id=c.grid_id,
        category_id=c.category_id,
        urgency=c.urgency,
        reporter_user_id=c.reporter_user_id,
        reported_at=c.reported_at,
        accepted_at=c.accepted_at,
        filed_at=c.filed_at,
        dispatched_at=c.dispatched_at,
        handled_at=c.handled_at,
        lead_unit_id=c.lead_unit_id,
        handle_deadline=c.handle_deadline,
        verified_at=c.verified_at,
        checked_at=c.checked_at,
        accepted_by_id=actors.accepted_by_id,
        filed_by_id=actors.filed_by_id,
        dispatched_by_id=actors.dispatched_by_id,
        dispatch_stage_at=actors.dispatch_stage_at,
    )


def _actors_before_flush(c: Case) -> SimpleNamespace:
    """The case's actor fields as they were before this flush (attribute history is still
    there in ``after_flush``; the columns keep active history so the old value is known).
    The listener then moves them event by event (:func:`track_actors`), so several events
    of one case in one flush each see the state right before themselves."""
    st = inspect(c)
    out = SimpleNamespace()
    for name in _ACTOR_FIELDS:
        h = st.attrs[name].history
        setattr(out, name, h.deleted[0] if h.deleted else h.unchanged[0] if h.unchanged else None)
    return out


def _return_unit(session: Session, ev: CaseEvent) -> int | None:
    if ev.action != "decide_return" or not (ev.data or {}).get("approve"):
        return None
    req = session.get(ApprovalRequest, (ev.data or {}).get("request_id"))
    return req.unit_id if req is not None else None


# --------------------------------------------------------------------------- upsert


_KEYS = {
    "daily": ("day", "unit_id", "grid_code", "category_id", "user_id", "metric"),
    "monthly": ("month", "metric", "unit_id", "grid_code", "user_id"),
}
_SQL: dict[tuple[str, str], str] = {}


def _add_counts_sql(table: str, source: str) -> str:
    """``INSERT INTO <level> (keys, count) <source> ON CONFLICT (keys) DO UPDATE SET count =
    count + excluded.count``: what every writer of the counters runs."""
    name = (EvalDailyCount if table == "daily" else EvalMonthlyCount).__tablename__
    keys = _KEYS[table]
    return (
        f"INSERT INTO {name} ({', '.join((*keys, 'count'))}) {source}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET count = {name}.count + excluded.count"
    )


def _upsert_sql(dialect: str, table: str) -> str:
    """:func:`_add_counts_sql` with one row of DBAPI parameters, for ``executemany``."""
    sql = _SQL.get((dialect, table))
    if sql is None:
        mark = "?" if dialect == "sqlite" else "%s"
        values = f"VALUES ({', '.join([mark] * (len(_KEYS[table]) + 1))})"
        sql = _SQL[(dialect, table)] = _add_counts_sql(table, values)
    return sql


def _execute_upsert(conn: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    """Add ``rows`` (key columns in :data:`_KEYS` order, then the count; the day or month
    first) to a level, through the DBAPI cursor of the session's connection: the counters are
    written on every flush, and SQLAlchemy's per-row parameter processing cost 4–5× the
    statement itself (66 vs 15 µs for a flush's few rows on SQLite)."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":  # SQLAlchemy's Date on SQLite: ISO text
        rows = [(r[0].isoformat(), *r[1:]) for r in rows]
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.executemany(_upsert_sql(dialect, table), rows)
    finally:
        cur.close()


def month_of(d: date) -> date:
    return d.replace(day=1)


MonthKey = tuple[date, str, int, str, int]


def _month_key(k: Key) -> MonthKey:
    """The monthly level's key of a daily key: month, metric, unit, grid (regions only), user."""
    day, unit, grid, _cat, user, metric = k
    return (month_of(day), metric, unit, grid if metric.startswith("r_") else "", user)


def upsert_sums(session: Session, sums: dict[Key, int]) -> int:
    """Add summed counters to both levels (daily and monthly)."""
    if not sums:
        return 0
    conn = session.connection()
    monthly: dict[MonthKey, int] = {}
    rows = []
    for k, n in sorted(sums.items()):  # one lock order: no deadlock between writers
        rows.append((*k, n))
        mk = _month_key(k)
        monthly[mk] = monthly.get(mk, 0) + n
    mrows = [(*k, n) for k, n in sorted(monthly.items())]
    if conn.dialect.name == "postgresql":
        _upsert_both_pg(conn, rows, mrows)
    else:
        _execute_upsert(conn, "daily", rows)
        _execute_upsert(conn, "monthly", mrows)
    return len(rows)


#: Column types of the two levels' rows, in :data:`_KEYS` order plus the count (arrays).
_PG_TYPES = {
    "daily": ("date", "integer", "text", "integer", "integer", "text", "integer"),
    "monthly": ("date", "text", "integer", "text", "integer", "integer"),
}


def _upsert_both_pg(
    conn: Any, daily: list[tuple[Any, ...]], monthly: list[tuple[Any, ...]]
) -> None:
    """Both levels in one statement and one round trip on PostgreSQL (the listener's upkeep
    is mostly round trips there): the daily upsert as a data-modifying CTE, each level's rows
    passed as one array per column."""
    parts = []
    params: list[list[Any]] = []
    for table, rows in (("daily", daily), ("monthly", monthly)):
        types = _PG_TYPES[table]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        parts.append(_add_counts_sql(table, f"SELECT * FROM unnest({arrays})"))
        params.extend([list(col) for col in zip(*rows, strict=True)] or [[] for _ in types])
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(f"WITH d AS ({parts[0]}) {parts[1]}", params)
    finally:
        cur.close()


def upsert(session: Session, facts: Iterable[Fact]) -> int:
    """Add the facts to the counters (insert … on conflict add, daily and monthly)."""
    sums: dict[Key, int] = {}
    for f in facts:
        sums[f.key] = sums.get(f.key, 0) + f.n
    return upsert_sums(session, sums)


def _after_flush(session: Session, flush_context: Any) -> None:
    new_events = [o for o in session.new if isinstance(o, CaseEvent)]
    if not new_events:
        return
    facts: list[Fact] = []
    dl = Deadlines(session)
    actors: dict[int, SimpleNamespace] = {}
    for ev in sorted(new_events, key=lambda e: e.id or 0):
        case = session.get(Case, ev.case_id)
        if case is None:
            continue
        before = actors.get(case.id)
        if before is None:
            before = actors[case.id] = _actors_before_flush(case)
        ctx = _ctx_of_case(case, before)
        if ev.action == "reopen":
            ctx.undo = _undo_of(session, case.id, ev.id)
        facts.extend(facts_of(session, ev, ctx, _return_unit(session, ev), dl))
        if ev.action in ACTOR_ACTIONS:
            track_actors(before, ev.action, ev.at, ev.actor_id, ev.data)
    upsert(session, facts)


_installed = False


def install() -> None:
    """Keep the rollups up to date on every flush of any session (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Session, "after_flush", _after_flush)
        _installed = True


def uninstall() -> None:
    global _installed
    if _installed:
        event.remove(Session, "after_flush", _after_flush)
        _installed = False


def installed() -> bool:
    return _installed


# --------------------------------------------------------------------------- replay

_CASE_COLS = (
    Case.id,
    Case.source,
    Case.grid_code,
    Case.grid_id,
    Case.category_id,
    Case.urgency,
    Case.reporter_user_id,
    Case.reported_at,
    Case.handle_deadline,
)
_EVENT_COLS = (
    CaseEvent.case_id,
    CaseEvent.id,
    CaseEvent.action,
    CaseEvent.at,
    CaseEvent.actor_id,
    CaseEvent.unit_id,
    CaseEvent.from_stage,
    CaseEvent.data,
)
_CHUNK = 20_000


def replay_rows(
    session: Session,
    cases: dict[int, Any],
    events: Iterable[Any],
    dl: Deadlines,
    inspectors_of: GridInspectors,
    last: list[Ctx] | None = None,
) -> Iterator[Fact]:
    """The rollup facts of ``events`` (ordered by case, then time) of the given cases: what
    the listener counts, for rows written without the ORM (rebuild, the intake writer)."""
    current: int | None = None
    ctx: Ctx | None = None
    handled: tuple[Fact, ...] = ()
    for ev in events:
        case = cases.get(ev.case_id)
        if case is None:
            continue
        if ev.case_id != current:
            current = ev.case_id
            ctx = Ctx(
                source=case.source,
                grid_code=case.grid_code or "",
                grid_id=case.grid_id,
                category_id=case.category_id,
                urgency=case.urgency,
                reporter_user_id=case.reporter_user_id,
                reported_at=case.reported_at,
                accepted_at=None,
                filed_at=None,
                dispatched_at=None,
                handled_at=None,
                lead_unit_id=None,
                handle_deadline=case.handle_deadline,
            )
            if last is not None:
                last[:] = [ctx]
            handled = ()
        assert ctx is not None
        a = ev.action
        # the state the case is in right after this event (what the listener sees)
        if a == "accept":
            ctx.accepted_at = ev.at
        elif a == "file":
            ctx.filed_at = ev.at
        elif a == "self_handle":
            ctx.accepted_at = ctx.filed_at = ctx.handled_at = ctx.checked_at = ev.at
        elif a == "dispatch":
            ctx.dispatched_at, ctx.lead_unit_id = ev.at, ev.unit_id
        elif a == "handle":
            ctx.handled_at = ev.at
        elif a == "verify":
            ctx.verified_at = ev.at
        elif a == "check":
            ctx.checked_at = ev.at
        approved_return = a == "decide_return" and (ev.data or {}).get("approve")
        ret = ctx.lead_unit_id if approved_return else None
        facts = facts_of(session, ev, ctx, ret, dl, inspectors_of)
        yield from facts
        if a == "check":
            handled = tuple(f for f in facts if f.metric in _UNDONE)
        elif a in ("close", "self_handle"):
            ctx.undo = handled + tuple(f for f in facts if f.metric in _UNDONE)
        elif a == "reopen":
            ctx.undo = handled = ()
        if a in ACTOR_ACTIONS:
            track_actors(ctx, a, ev.at, ev.actor_id, ev.data)
        if approved_return:
            ctx.lead_unit_id = None


def replay(session: Session, case_ids: Iterable[int] | None = None) -> Iterator[Fact]:
    """All facts of the cases' history, re-derived from case_events in order (streamed in
    chunks of cases: memory stays flat for millions of cases)."""
    dl = Deadlines(session)
    inspectors_of = _grid_inspectors_all(session)
    if case_ids is not None:
        ids = sorted(set(case_ids))
        for i in range(0, len(ids), _CHUNK):
            part = ids[i : i + _CHUNK]
            cases = {r.id: r for r in session.execute(select(*_CASE_COLS).where(Case.id.in_(part)))}
            evs = session.execute(
                select(*_EVENT_COLS)
                .where(CaseEvent.case_id.in_(part))
                .order_by(CaseEvent.case_id, CaseEvent.id)
            )
            yield from replay_rows(session, cases, evs, dl, inspectors_of)
        return
    lo = session.scalar(select(func.min(Case.id)))
    hi = session.scalar(select(func.max(Case.id)))
    if lo is None or hi is None:
        return
    for a in range(lo, hi + 1, _CHUNK):
        b = a + _CHUNK
        cases = {
            r.id: r for r in session.execute(select(*_CASE_COLS).where(Case.id >= a, Case.id < b))
        }
        evs = session.execute(
            select(*_EVENT_COLS)
            .where(CaseEvent.case_id >= a, CaseEvent.case_id < b)
            .order_by(CaseEvent.case_id, CaseEvent.id)
        )
        yield from replay_rows(session, cases, evs, dl, inspectors_of)


def _month_expr(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.cast(func.date_trunc("month", EvalDailyCount.day), EvalMonthlyCount.month.type)
    return func.date(EvalDailyCount.day, "start of month")


def rebuild_monthly(session: Session, since: date | None = None) -> None:
    """Re-derive the monthly level from the daily one (all months, or from ``since``'s)."""
    d = delete(EvalMonthlyCount)
    if since is not None:
        d = d.where(EvalMonthlyCount.month >= month_of(since))
    session.execute(d)
    month = _month_expr(session)
    g = sql_case(
        (func.substr(EvalDailyCount.metric, 1, 2) == "r_", EvalDailyCount.grid_code), else_=""
    )
    q = select(
        month,
        EvalDailyCount.metric,
        EvalDailyCount.unit_id,
        g,
        EvalDailyCount.user_id,
        func.sum(EvalDailyCount.count),
    ).group_by(month, EvalDailyCount.metric, EvalDailyCount.unit_id, g, EvalDailyCount.user_id)
    if since is not None:
        q = q.where(EvalDailyCount.day >= month_of(since))
    session.execute(
        insert(EvalMonthlyCount).from_select(
            ["month", "metric", "unit_id", "grid_code", "user_id", "count"], q
        )
    )


def rebuild(session: Session, since: date | None = None) -> int:
    """Delete the counters (from ``since`` on, or all) and re-derive them from history.

    Every fact's day is on or before the day of the event behind it, so only cases with an
    event on or after ``since`` can add to days ≥ ``since``: those are replayed in full and
    their facts of days ≥ ``since`` kept. The monthly level is summed on the way (full
    rebuild) or re-summed from the daily one for the months from ``since``'s on.
    """
    d = delete(EvalDailyCount)
    if since is not None:
        d = d.where(EvalDailyCount.day >= since)
    session.execute(d)
    ids: list[int] | None = None
    if since is not None:
        start = datetime(since.year, since.month, since.day, tzinfo=TZ)
        ids = list(
            session.scalars(select(CaseEvent.case_id).where(CaseEvent.at >= start).distinct())
        )
    sums: dict[Key, int] = {}
    # a full rebuild sums the monthly level on the way (small: no GROUP BY over the whole
    # daily table afterwards); a partial one re-sums its months from the daily level
    monthly: dict[MonthKey, int] | None = {} if since is None else None
    n = 0
    conn = session.connection()

    def write(sums: dict[Key, int]) -> None:
        _execute_upsert(conn, "daily", [(*k, c) for k, c in sums.items()])
        if monthly is not None:
            for k, c in sums.items():
                mk = _month_key(k)
                monthly[mk] = monthly.get(mk, 0) + c

    for f in replay(session, ids):
        if since is not None and f.day < since:
            continue
        n += 1
        sums[f.key] = sums.get(f.key, 0) + f.n
        if len(sums) >= 200_000:
            write(sums)
            sums = {}
    write(sums)
    if monthly is None:
        rebuild_monthly(session, since)
    else:
        session.execute(delete(EvalMonthlyCount))
        _execute_upsert(conn, "monthly", [(*k, c) for k, c in sorted(monthly.items())])
    return n

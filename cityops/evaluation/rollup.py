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

Tasks not yet done are not counted (a 核实 still open is not 应核实 yet); 漏报 is not tracked.
Cohort figures (anchored on the 派遣/立案/上报 day) keep growing while the cases of that day
progress: a 结案 in December adds to the November 立案 cohort. ``accept``, ``reject``,
``sign``, ``request_*``, ``supervise``, ``merged_in``, ``repeat``, ``split``, ``near_due``,
``overdue`` and ``escalate`` events move no counter. Rows written outside the ORM (bulk
simulation or import loaders) bypass the listener: run :func:`rebuild` after them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cityops.cases.models import ApprovalRequest, Case, CaseEvent
from cityops.evaluation.models import EvalDailyCount

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
}

Key = tuple[date, int, str, int, int, str]


@dataclass(frozen=True)
class Ctx:
    """What the metrics of one event need to know about its case at that moment."""

    source: str
    grid_code: str
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


@dataclass(frozen=True)
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


def _stage_deadline(session: Session, ctx: Ctx, stage: str, start: datetime | None) -> datetime:
    if start is None:
        return datetime.max.replace(tzinfo=TZ)
    from cityops.worktime import service as wt  # (imports cityops.models: not at import time)

    lim = wt.resolve_limit(session, stage, ctx.category_id, ctx.urgency).limit
    due = wt.get_clock(session).deadline(start, lim).due_at
    return due if due is not None else datetime.max.replace(tzinfo=TZ)


def facts_of(
    session: Session, ev: CaseEvent, ctx: Ctx, return_unit: int | None = None
) -> list[Fact]:
    """The counters one event moves (see the module docstring)."""
    out: list[Fact] = []
    cid = ev.case_id
    a = ev.action
    data = ev.data or {}

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

    lead = ctx.lead_unit_id
    insp = ctx.source in INSPECTOR_SOURCES
    if a == "report":
        if insp:
            add("i_reported", ev.at, user=ev.actor_id)
    elif a == "self_handle":
        add("r_filed", ev.at)
        add("r_closed", ev.at)
        add("r_closed_on_time", ev.at)
        add("i_valid", ctx.reported_at, user=ctx.reporter_user_id)
        add("i_self_handled", ev.at, user=ctx.reporter_user_id)
    elif a == "file":
        add("r_filed", ev.at)
        if insp:
            add("i_valid", ctx.reported_at, user=ctx.reporter_user_id)
    elif a == "verify":
        add("i_verify_due", ev.at, user=ev.actor_id)
        if ev.at <= _stage_deadline(session, ctx, "verify", ctx.accepted_at):
            add("i_verify_on_time", ev.at, user=ev.actor_id)
        if data.get("confirmed") and ctx.source in PUBLIC_SOURCES:
            add("r_public_ok", ev.at)
    elif a == "dispatch":
        add("u_dispatched", ev.at, unit=ev.unit_id)
    elif a in ("check", "rework"):
        add("i_check_due", ev.at, user=ev.actor_id)
        if ev.at <= _stage_deadline(session, ctx, "check", ctx.handled_at):
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
    elif a in ("decide_return", "decide_extend", "decide_park") and data.get("approve"):
        if a == "decide_return":
            add("u_returned", ctx.dispatched_at, unit=return_unit)
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
    return out


def _ctx_of_case(c: Case) -> Ctx:
    return Ctx(
        source=c.source,
        grid_code=c.grid_code or "",
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
    )


def _return_unit(session: Session, ev: CaseEvent) -> int | None:
    if ev.action != "decide_return" or not (ev.data or {}).get("approve"):
        return None
    req = session.get(ApprovalRequest, (ev.data or {}).get("request_id"))
    return req.unit_id if req is not None else None


# --------------------------------------------------------------------------- upsert


_STMTS: dict[str, Any] = {}


def _upsert_stmt(dialect: str) -> Any:
    stmt = _STMTS.get(dialect)
    if stmt is None:
        ins: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(EvalDailyCount)
        stmt = _STMTS[dialect] = ins.on_conflict_do_update(
            index_elements=["day", "unit_id", "grid_code", "category_id", "user_id", "metric"],
            set_={"count": EvalDailyCount.count + ins.excluded.count},
        )
    return stmt


def upsert(session: Session, facts: Iterable[Fact]) -> int:
    """Add the facts to the counters (one statement, insert … on conflict add)."""
    sums: dict[Key, int] = {}
    for f in facts:
        sums[f.key] = sums.get(f.key, 0) + f.n
    if not sums:
        return 0
    conn = session.connection()
    stmt = _upsert_stmt(conn.dialect.name)
    rows = [
        {
            "day": k[0],
            "unit_id": k[1],
            "grid_code": k[2],
            "category_id": k[3],
            "user_id": k[4],
            "metric": k[5],
            "count": n,
        }
        for k, n in sorted(sums.items())  # one lock order: no deadlock between writers
    ]
    conn.execute(stmt, rows)
    return len(rows)


def _after_flush(session: Session, flush_context: Any) -> None:
    new_events = [o for o in session.new if isinstance(o, CaseEvent)]
    if not new_events:
        return
    facts: list[Fact] = []
    for ev in sorted(new_events, key=lambda e: e.id or 0):
        case = session.get(Case, ev.case_id)
        if case is None:
            continue
        facts.extend(facts_of(session, ev, _ctx_of_case(case), _return_unit(session, ev)))
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


def replay(session: Session, case_ids: Iterable[int] | None = None) -> Iterator[Fact]:
    """All facts of the cases' history, re-derived from case_events in order."""
    q = select(Case).order_by(Case.id)
    if case_ids is not None:
        ids = list(case_ids)
        if not ids:
            return
        q = q.where(Case.id.in_(ids))
    cases = {c.id: c for c in session.scalars(q)}
    if not cases:
        return
    eq = select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.id)
    if case_ids is not None:
        eq = eq.where(CaseEvent.case_id.in_(list(cases)))
    current: int | None = None
    ctx: Ctx | None = None
    for ev in session.scalars(eq):
        case = cases.get(ev.case_id)
        if case is None:
            continue
        if ev.case_id != current:
            current = ev.case_id
            ctx = Ctx(
                source=case.source,
                grid_code=case.grid_code or "",
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
        assert ctx is not None
        a = ev.action
        # the state the case is in right after this event (what the listener sees)
        if a == "accept":
            ctx = replace(ctx, accepted_at=ev.at)
        elif a == "file":
            ctx = replace(ctx, filed_at=ev.at)
        elif a == "self_handle":
            ctx = replace(ctx, accepted_at=ev.at, filed_at=ev.at, handled_at=ev.at)
        elif a == "dispatch":
            ctx = replace(ctx, dispatched_at=ev.at, lead_unit_id=ev.unit_id)
        elif a == "handle":
            ctx = replace(ctx, handled_at=ev.at)
        ret = _return_unit(session, ev)
        yield from facts_of(session, ev, ctx, ret)
        if a == "decide_return" and (ev.data or {}).get("approve"):
            ctx = replace(ctx, lead_unit_id=None)


def rebuild(session: Session, since: date | None = None) -> int:
    """Delete the counters (from ``since`` on, or all) and re-derive them from history.

    Every fact's day is on or before the day of the event behind it, so only cases with an
    event on or after ``since`` can add to days ≥ ``since``: those are replayed in full and
    their facts of days ≥ ``since`` kept.
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
    facts = [f for f in replay(session, ids) if since is None or f.day >= since]
    upsert(session, facts)
    return len(facts)

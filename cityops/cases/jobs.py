"""The case scheduler: 临期 and 超期 flags, automatic 督办 and 提级, notifications.

All state is in the database, so the scheduler survives restarts and any number of server
processes can run it:

* :func:`tick` is one pure, idempotent step at an instant ``now``, in one transaction:

  1. 临期 — running cases whose ``stage_warn_at <= now`` and not yet ``near_due``: set the
     flag, write a ``near_due`` case event (actor ``system``), notify the people responsible
     for the stage (inbox) and queue the ``case.near_due`` webhook.
  2. 超期 — running cases whose ``stage_deadline < now`` and not yet ``overdue``: set
     ``overdue``, ``supervised`` (automatic 督办) and raise ``escalation_level`` (提级); an
     ``overdue`` and an ``escalate`` event; the responsible people and the leaders get
     notified; ``case.overdue`` and ``case.escalated`` webhooks.
  3. Further 提级 — every further full stage span overdue (span = deadline − stage start,
     so level 2 at twice the limit, level 3 at three times …, at most
     :data:`MAX_LEVELS_PER_STAGE` per stage) raises the level again and notifies the next
     tier of leaders. A tick that comes late catches up all levels at once.

  "Running" means an open, time-limited stage whose clock is not stopped: cases with
  ``paused_since``, a ``pending_request`` or ``parked`` are skipped.

  Exactly once: each flag change goes through the case's optimistic ``version`` (and, on
  PostgreSQL, ``FOR UPDATE SKIP LOCKED``), inside a savepoint per case — if a user action
  changed the case meanwhile, that case is skipped this tick (nothing half-written) and
  picked up by the next one. Every notification and webhook delivery carries a dedupe key
  (``near_due:{case}:{stage start}:{warn at}``, ``overdue:{case}:{stage start}:{deadline}``,
  ``escalate:{case}:{stage start}:{deadline}:{level}``) and is inserted with ``ON CONFLICT DO
  NOTHING`` against the unique constraints, so even two racing ticks cannot send one twice.
  An extension (延期) gives the stage a new deadline and so a new 临期/超期 episode.

* Leader election: a process runs :func:`tick` only while it holds the ``scheduler_leases``
  row ``case-scheduler`` (renewed each tick, in the tick's own transaction; taken over
  atomically once expired). A crashed holder's lease runs out after ``lease_ttl``; a
  stopped one is released at once.

* :func:`start_scheduler` runs it in background threads: one loop of lease + tick, one loop
  of webhook delivery (:class:`cityops.cases.webhooks.Deliverer`, claims are atomic so every
  process may deliver).

Configuration (environment, until it moves into ``Settings``): ``CITYOPS_SCHEDULER``
(``on``/``off``, default on) and ``CITYOPS_SCHEDULER_INTERVAL`` (seconds, default 15).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from cityops.access.models import User, UserRole
from cityops.cases import webhooks
from cityops.cases.models import STAGES, Case, CaseEvent, Notification, SchedulerLease
from cityops.cases.service import _event
from cityops.core.db import Database, utcnow
from cityops.core.jobs import JobRunner
from cityops.core.security import lock_for_write

log = logging.getLogger("cityops.scheduler")

LEASE_NAME = "case-scheduler"
DEFAULT_INTERVAL = 15.0
DEFAULT_LEASE_TTL = timedelta(seconds=30)
#: Cases handled per step and tick (the rest follow in the next tick).
BATCH = 200
#: 提级 levels one stage can reach (level n at n × the stage's span).
MAX_LEVELS_PER_STAGE = 5
MIN_SPAN = timedelta(minutes=1)

#: Stages whose clock runs (parked / return_review wait for a decision: clock stopped).
CLOCK_STAGES = ("accept", "verify", "file", "dispatch", "sign", "handle", "check", "close")
#: Who of the supervision and command centre acts on a case in these stages.
CENTRE_STAGE_ROLES: dict[str, tuple[str, ...]] = {
    "accept": ("operator", "shift_leader"),
    "file": ("shift_leader",),
    "dispatch": ("dispatcher", "shift_leader"),
    "close": ("shift_leader",),
    # 核实/核查 without an assigned inspector
    "verify": ("shift_leader",),
    "check": ("shift_leader",),
}
_STAFF_ROLES = ("operator", "shift_leader", "dispatcher", "leader")


# --------------------------------------------------------------------------- report


@dataclass
class TickReport:
    now: datetime
    near_due: list[int] = field(default_factory=list)
    overdue: list[int] = field(default_factory=list)
    #: (case id, level within the current stage)
    escalated: list[tuple[int, int]] = field(default_factory=list)
    #: Cases skipped because a user action changed them meanwhile (retried next tick).
    conflicts: list[int] = field(default_factory=list)
    notifications: int = 0
    deliveries: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.near_due or self.overdue or self.escalated)

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now.isoformat(),
            "near_due": self.near_due,
            "overdue": self.overdue,
            "escalated": [list(e) for e in self.escalated],
            "conflicts": self.conflicts,
            "notifications": self.notifications,
            "deliveries": self.deliveries,
        }


# --------------------------------------------------------------------------- recipients


@dataclass(frozen=True)
class _Staff:
    id: int
    roles: frozenset[str]
    scope: str | None
    unit_only: bool
    unit_id: int | None


class _Context:
    """Per-tick caches: staff, unit members, webhooks."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.s = session
        self.now = now
        self._staff: list[_Staff] | None = None
        self._units: dict[int, list[int]] = {}
        self._hooks: list[tuple[int, list[str] | None]] | None = None

    @property
    def hooks(self) -> list[tuple[int, list[str] | None]]:
        if self._hooks is None:
            self._hooks = webhooks.active_hooks(self.s)
        return self._hooks

    def staff(self) -> list[_Staff]:
        if self._staff is None:
            rows = self.s.execute(
                select(
                    User.id,
                    User.scope_region_code,
                    User.scope_unit_only,
                    User.unit_id,
                    UserRole.role,
                )
                .join(UserRole, UserRole.user_id == User.id)
                .where(User.active.is_(True), UserRole.role.in_(_STAFF_ROLES))
            ).all()
            by: dict[int, dict[str, Any]] = {}
            for uid, scope, unit_only, unit_id, role in rows:
                d = by.setdefault(
                    uid, {"scope": scope, "unit_only": unit_only, "unit": unit_id, "roles": set()}
                )
                d["roles"].add(role)
            self._staff = [
                _Staff(uid, frozenset(d["roles"]), d["scope"], bool(d["unit_only"]), d["unit"])
                for uid, d in sorted(by.items())
            ]
        return self._staff

    def unit_users(self, unit_id: int) -> list[int]:
        if unit_id not in self._units:
            self._units[unit_id] = list(
                self.s.scalars(
                    select(User.id)
                    .where(User.unit_id == unit_id, User.active.is_(True))
                    .order_by(User.id)
                )
            )
        return self._units[unit_id]

    @staticmethod
    def covers(p: _Staff, case: Case) -> bool:
        if p.unit_only:
            return p.unit_id is not None and any(u.unit_id == p.unit_id for u in case.units)
        return p.scope is None or (case.grid_code or "").startswith(p.scope)

    def responsible(self, case: Case) -> list[int]:
        """Who must act on the case's current stage."""
        if case.stage in ("sign", "handle") and case.lead_unit_id is not None:
            return self.unit_users(case.lead_unit_id)
        if case.stage in ("verify", "check") and case.assignee_user_id is not None:
            return [case.assignee_user_id]
        roles = CENTRE_STAGE_ROLES.get(case.stage, ("shift_leader",))
        return [p.id for p in self.staff() if p.roles.intersection(roles) and self.covers(p, case)]

    def leader_tiers(self, case: Case) -> list[list[int]]:
        """Leaders whose scope covers the case, grouped from the most local tier upwards
        (unit / community / street / district / city)."""
        tiers: dict[int, list[int]] = defaultdict(list)
        for p in self.staff():
            if "leader" in p.roles and self.covers(p, case):
                rank = 99 if p.unit_only else len(p.scope or "")
                tiers[rank].append(p.id)
        return [tiers[r] for r in sorted(tiers, reverse=True)]

    def leaders(self, case: Case, level: int) -> list[int]:
        """提级: level 1 goes to the most local leaders covering the case, level 2 to the
        tier above, and so on (the top tier keeps receiving the higher levels)."""
        tiers = self.leader_tiers(case)
        if not tiers:
            return []
        return tiers[min(level, len(tiers)) - 1]


def _notify(
    ctx: _Context,
    users: Iterable[int],
    case: Case,
    kind: str,
    title: str,
    body: str | None,
    key: str,
) -> int:
    ids = sorted(set(users))
    if not ids:
        return 0
    rows = [
        {
            "user_id": u,
            "case_id": case.id,
            "kind": kind,
            "title": title[:200],
            "body": body,
            "dedupe_key": key,
            "created_at": ctx.now,
        }
        for u in ids
    ]
    stmt = (
        webhooks._insert(ctx.s, Notification)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["user_id", "dedupe_key"])
        .returning(Notification.id)
    )
    return len(ctx.s.execute(stmt).all())


# --------------------------------------------------------------------------- the tick


def _local(t: datetime | None) -> str:
    from cityops.worktime.service import TZ

    return t.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if t else "-"


def target_level(started: datetime, deadline: datetime, now: datetime, cap: int) -> int:
    """提级 levels due at ``now`` within a stage: level n once ``now > deadline + (n-1)·span``."""
    if now <= deadline:
        return 0
    span = max(deadline - started, MIN_SPAN)
    q, r = divmod(now - deadline, span)
    return min(q + (1 if r else 0), cap)


def _running() -> Any:
    return and_(
        Case.stage.in_(CLOCK_STAGES),
        Case.paused_since.is_(None),
        Case.pending_request.is_(None),
        Case.parked.is_(False),
    )


def _lock(session: Session, q: Any) -> Any:
    q = q.execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(of=Case, skip_locked=True)
    return q


def _mark_near_due(ctx: _Context, case: Case, report: TickReport) -> None:
    s, now = ctx.s, ctx.now
    case.near_due = True
    case.updated_at = now
    s.flush()  # the version check: StaleDataError if a user action came first
    key = webhooks.dedupe_key("near_due", case.id, case.stage_started_at, case.stage_warn_at)
    stage = STAGES.get(case.stage, case.stage)
    late = case.stage_deadline is not None and case.stage_deadline < now
    note = f"{stage}临期：时限 {_local(case.stage_deadline)} 到期"
    _event(
        s,
        case,
        None,
        "near_due",
        now,
        case.stage,
        note=note,
        data={
            "key": key,
            "warn_at": case.stage_warn_at.isoformat() if case.stage_warn_at else None,
            "deadline": case.stage_deadline.isoformat() if case.stage_deadline else None,
            "late": late,
        },
    )
    report.notifications += _notify(
        ctx,
        ctx.responsible(case),
        case,
        "near_due",
        f"临期提醒 {case.number}（{stage}）",
        note,
        key,
    )
    report.deliveries += webhooks.enqueue(
        s, "case.near_due", {"case": webhooks.case_summary(case)}, key, now=now, hooks=ctx.hooks
    )
    report.near_due.append(case.id)


def _escalate(
    ctx: _Context,
    case: Case,
    report: TickReport,
    episode: str,
    done: int,
    target: int,
    start_new: bool,
) -> None:
    """Raise the case from ``done`` to ``target`` 提级 levels within its overdue episode;
    with ``start_new`` the episode itself (超期 + automatic 督办) starts here."""
    s, now = ctx.s, ctx.now
    assert case.stage_deadline is not None
    was_supervised = case.supervised
    base = case.escalation_level
    if start_new:
        case.overdue = True
        case.supervised = True
    case.escalation_level = base + (target - done)
    case.updated_at = now
    s.flush()  # the version check
    stage = STAGES.get(case.stage, case.stage)
    summary = webhooks.case_summary(case)
    if start_new:
        note = f"{stage}超期（时限 {_local(case.stage_deadline)}），自动督办"
        _event(
            s,
            case,
            None,
            "overdue",
            now,
            case.stage,
            note=note,
            data={
                "key": episode,
                "deadline": case.stage_deadline.isoformat(),
                "auto_supervised": not was_supervised,
            },
        )
        report.notifications += _notify(
            ctx,
            ctx.responsible(case),
            case,
            "overdue",
            f"超期督办 {case.number}（{stage}）",
            note,
            episode,
        )
        report.deliveries += webhooks.enqueue(
            s, "case.overdue", {"case": summary}, episode, now=now, hooks=ctx.hooks
        )
        report.overdue.append(case.id)
    for level in range(done + 1, target + 1):
        key = f"escalate:{episode.split(':', 1)[1]}:{level}"
        total = base + (level - done)
        leaders = ctx.leaders(case, level)
        note = f"{stage}超期未办结，提级督办（第{level}级）"
        _event(
            s,
            case,
            None,
            "escalate",
            now,
            case.stage,
            note=note,
            data={
                "episode": episode,
                "level": level,
                "escalation_level": total,
                "leaders": leaders,
            },
        )
        report.notifications += _notify(
            ctx,
            leaders,
            case,
            "escalate",
            f"提级督办（第{level}级）{case.number}（{stage}）",
            note,
            key,
        )
        report.deliveries += webhooks.enqueue(
            s,
            "case.escalated",
            {"case": {**summary, "escalation_level": total}, "level": level},
            key,
            now=now,
            hooks=ctx.hooks,
        )
        report.escalated.append((case.id, level))


def _guarded(
    ctx: _Context, case: Case, report: TickReport, fn: Callable[..., None], *args: Any
) -> None:
    """Run ``fn(ctx, case, sub_report, *args)`` in a savepoint; a version conflict (a user
    action changed the case since it was read) skips just that case, leaving no trace."""
    cid = case.id
    sub = TickReport(report.now)
    sp = ctx.s.begin_nested()
    try:
        fn(ctx, case, sub, *args)
        ctx.s.flush()
    except StaleDataError:
        sp.rollback()
        report.conflicts.append(cid)
        log.info("case %s changed during the tick; it is retried next tick", cid)
        return
    except BaseException:
        sp.rollback()
        raise
    sp.commit()
    report.near_due += sub.near_due
    report.overdue += sub.overdue
    report.escalated += sub.escalated
    report.notifications += sub.notifications
    report.deliveries += sub.deliveries


def _episodes(session: Session, case_ids: list[int]) -> dict[int, tuple[str | None, int]]:
    """For each case: (key of its latest 超期 episode, 提级 levels given in it)."""
    out: dict[int, tuple[str | None, int]] = {}
    for i in range(0, len(case_ids), 500):
        chunk = case_ids[i : i + 500]
        rows = session.execute(
            select(CaseEvent.case_id, CaseEvent.action, CaseEvent.data)
            .where(CaseEvent.case_id.in_(chunk), CaseEvent.action.in_(("overdue", "escalate")))
            .order_by(CaseEvent.case_id, CaseEvent.id)
        ).all()
        for cid, action, data in rows:
            data = data or {}
            if action == "overdue":
                out[cid] = (data.get("key"), 0)
            else:
                key, n = out.get(cid, (None, 0))
                if key is not None and data.get("episode") == key:
                    out[cid] = (key, max(n, int(data.get("level") or 0)))
    return out


def _tick(session: Session, now: datetime, limit: int, max_levels: int) -> TickReport:
    report = TickReport(now)
    ctx = _Context(session, now)

    # 1. 临期
    q = (
        select(Case)
        .where(
            _running(),
            Case.near_due.is_(False),
            Case.stage_warn_at.is_not(None),
            Case.stage_warn_at <= now,
        )
        .order_by(Case.stage_warn_at, Case.id)
        .limit(limit)
    )
    for case in list(session.scalars(_lock(session, q))):
        _guarded(ctx, case, report, _mark_near_due)

    # 2. 超期: automatic 督办 and the first 提级 (plus any levels a late tick owes)
    q = (
        select(Case)
        .where(
            _running(),
            Case.overdue.is_(False),
            Case.stage_deadline.is_not(None),
            Case.stage_deadline < now,
        )
        .order_by(Case.stage_deadline, Case.id)
        .limit(limit)
    )
    started: set[int] = set()
    for case in list(session.scalars(_lock(session, q))):
        assert case.stage_deadline is not None
        episode = webhooks.dedupe_key(
            "overdue", case.id, case.stage_started_at, case.stage_deadline
        )
        target = max(1, target_level(case.stage_started_at, case.stage_deadline, now, max_levels))
        _guarded(ctx, case, report, _escalate, episode, 0, target, True)
        started.add(case.id)

    # 3. further 提级 of cases that stay overdue
    rows = session.execute(
        select(Case.id, Case.stage_started_at, Case.stage_deadline)
        .where(
            _running(),
            Case.overdue.is_(True),
            Case.stage_deadline.is_not(None),
            Case.stage_deadline < now,
        )
        .order_by(Case.stage_deadline, Case.id)
    ).all()
    due: dict[int, int] = {}
    for cid, st, dl in rows:
        if cid not in started and dl is not None:
            n = target_level(st, dl, now, max_levels)
            if n >= 2:
                due[cid] = n
    if due:
        episodes = _episodes(session, sorted(due))
        todo = [cid for cid in sorted(due) if cid in episodes and episodes[cid][1] < due[cid]]
        todo = todo[:limit]
        if todo:
            q = (
                select(Case)
                .where(Case.id.in_(todo), _running(), Case.overdue.is_(True))
                .order_by(Case.id)
            )
            for case in list(session.scalars(_lock(session, q))):
                key, done = episodes[case.id]
                assert key is not None and case.stage_deadline is not None
                prefix = webhooks.dedupe_key("overdue", case.id, case.stage_started_at)
                if not key.startswith(prefix + ":"):
                    continue  # the episode belongs to an earlier stage: nothing to raise
                n = target_level(case.stage_started_at, case.stage_deadline, now, max_levels)
                if done < n:
                    _guarded(ctx, case, report, _escalate, key, done, n, False)
    return report


def tick(
    target: Database | Session,
    now: datetime | None = None,
    *,
    limit: int = BATCH,
    max_levels: int = MAX_LEVELS_PER_STAGE,
) -> TickReport:
    """One scheduler step at ``now`` (see the module docstring). Idempotent.

    With a :class:`Database` the step runs in its own transaction and commits; with a
    ``Session`` it runs in that session's transaction and the caller commits (or rolls back
    — then nothing of the step remains).
    """
    t = now or utcnow()
    if isinstance(target, Session):
        return _tick(target, t, limit, max_levels)
    with target.session() as s:
        lock_for_write(s)
        return _tick(s, t, limit, max_levels)


# --------------------------------------------------------------------------- leader lease


def new_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"[-100:]


def take_lease(
    session: Session,
    holder: str,
    now: datetime,
    ttl: timedelta = DEFAULT_LEASE_TTL,
    name: str = LEASE_NAME,
) -> bool:
    """Renew our lease or take over an expired (or missing) one; False if another holds it.

    Atomic: a conditional UPDATE (ours, or expired) and else an INSERT that does nothing
    when the row exists. In the tick's transaction the lease row stays locked until commit.
    """
    L = SchedulerLease
    res = session.execute(
        update(L)
        .where(L.name == name, or_(L.holder == holder, L.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount == 1:  # type: ignore[attr-defined]
        return True
    stmt = (
        webhooks._insert(session, L)
        .values(name=name, holder=holder, expires_at=now + ttl)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(L.name)
    )
    return session.execute(stmt).first() is not None


def release_lease(session: Session, holder: str, name: str = LEASE_NAME) -> bool:
    res = session.execute(
        delete(SchedulerLease)
        .where(SchedulerLease.name == name, SchedulerLease.holder == holder)
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


def lease_holder(db: Database, now: datetime, name: str = LEASE_NAME) -> str | None:
    """The current, unexpired holder of the lease."""
    with db.session() as s:
        row = s.execute(
            select(SchedulerLease.holder, SchedulerLease.expires_at).where(
                SchedulerLease.name == name
            )
        ).first()
    if row is None or row.expires_at < now:
        return None
    return str(row.holder)


def run_once(
    db: Database,
    holder: str,
    now: datetime | None = None,
    *,
    lease_ttl: timedelta = DEFAULT_LEASE_TTL,
    limit: int = BATCH,
    max_levels: int = MAX_LEVELS_PER_STAGE,
) -> TickReport | None:
    """Lease + tick in one transaction: the report, or None when another process leads."""
    t = now or utcnow()
    current = lease_holder(db, t)  # a cheap read first: followers take no write lock
    if current is not None and current != holder:
        return None
    with db.session() as s:
        lock_for_write(s)
        if not take_lease(s, holder, t, lease_ttl):
            return None
        return _tick(s, t, limit, max_levels)


# --------------------------------------------------------------------------- runner


def scheduler_enabled() -> bool:
    """``CITYOPS_SCHEDULER``: on (default) / off."""
    from cityops.core.settings import get_settings

    return get_settings().scheduler


def scheduler_interval() -> float:
    """``CITYOPS_SCHEDULER_INTERVAL``: seconds between ticks (default 15)."""
    from cityops.core.settings import get_settings

    v = get_settings().scheduler_interval
    return v if v > 0 else DEFAULT_INTERVAL


class SchedulerHandle:
    """A running scheduler: :meth:`stop` it; counters are for monitoring and tests."""

    def __init__(
        self,
        db: Database,
        *,
        interval: float,
        clock: Callable[[], datetime],
        lease_ttl: timedelta,
        holder: str,
        deliverer: webhooks.Deliverer | None,
        delivery_interval: float,
        limit: int,
        max_levels: int,
    ) -> None:
        self.db = db
        self.interval = interval
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.holder = holder
        self.deliverer = deliverer
        self.delivery_interval = delivery_interval
        self.limit = limit
        self.max_levels = max_levels
        #: Rounds of the tick loop and of the delivery loop so far.
        self.rounds = 0
        self.delivery_rounds = 0
        #: Rounds in which this process held the lease and ran the tick.
        self.ticks = 0
        self.is_leader = False
        self.errors = 0
        self.last_error: str | None = None
        self.reports: deque[TickReport] = deque(maxlen=100)
        #: Registered periodic jobs of the other contexts (:mod:`cityops.core.jobs`).
        self.jobs = JobRunner(db)
        self.job_rounds = 0
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []

    # ---- loops

    def _tick_round(self) -> None:
        report = run_once(
            self.db,
            self.holder,
            self.clock(),
            lease_ttl=self.lease_ttl,
            limit=self.limit,
            max_levels=self.max_levels,
        )
        self.is_leader = report is not None
        if report is not None:
            self.ticks += 1
            if report.changed or report.conflicts:
                self.reports.append(report)
                log.info("scheduler tick: %s", report.as_dict())

    def _jobs_round(self) -> None:
        if self.is_leader:
            self.jobs.run_due(self.clock())

    def _delivery_round(self) -> None:
        assert self.deliverer is not None
        while not self._stop.is_set():
            r = self.deliverer.run_due(self.clock())
            if r.claimed < self.deliverer.batch:
                break

    def _loop(self, step: Callable[[], None], wait: float, counter: str) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception as exc:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("scheduler %s failed", counter)
            with self._cond:
                setattr(self, counter, getattr(self, counter) + 1)
                self._cond.notify_all()
            self._stop.wait(wait)

    def start(self) -> SchedulerHandle:
        specs: list[tuple[str, Callable[[], None], float, str]] = [
            ("cityops-scheduler", self._tick_round, self.interval, "rounds"),
            ("cityops-jobs", self._jobs_round, min(self.interval, 5.0), "job_rounds"),
        ]
        if self.deliverer is not None:
            specs.append(
                (
                    "cityops-webhooks",
                    self._delivery_round,
                    self.delivery_interval,
                    "delivery_rounds",
                )
            )
        for name, step, wait, counter in specs:
            t = threading.Thread(
                target=self._loop, args=(step, wait, counter), name=name, daemon=True
            )
            t.start()
            self._threads.append(t)
        return self

    # ---- control

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def wait_rounds(self, n: int = 2, timeout: float = 10.0) -> bool:
        """Wait until both loops completed ``n`` more rounds (a full round that started
        after this call, for n ≥ 2)."""
        with self._cond:
            goal = (self.rounds + n, self.delivery_rounds + n if self.deliverer else 0)
            return self._cond.wait_for(
                lambda: (
                    (self.rounds >= goal[0] and self.delivery_rounds >= goal[1]) or not self.alive
                ),
                timeout,
            )

    def stop(self, timeout: float = 10.0, release: bool = True) -> None:
        """Stop the loops (the current round finishes) and release the lease, so another
        process takes over at once. ``release=False`` behaves like a crash: the lease stays
        until it expires."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        if self.deliverer is not None:
            self.deliverer.close()
        if release:
            try:
                with self.db.session() as s:
                    lock_for_write(s)
                    release_lease(s, self.holder)
            except Exception:
                log.exception("releasing the scheduler lease failed")


def start_scheduler(
    db: Database,
    interval_seconds: float | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
    lease_ttl: timedelta | None = None,
    holder: str | None = None,
    deliver: bool = True,
    transport: httpx.BaseTransport | None = None,
    delivery_interval: float | None = None,
    claim_ttl: timedelta = webhooks.CLAIM_TTL,
    limit: int = BATCH,
    max_levels: int = MAX_LEVELS_PER_STAGE,
) -> SchedulerHandle:
    """Start the scheduler threads for ``db`` and return their handle.

    ``clock`` gives "now" (inject a fake one in tests); ``lease_ttl`` defaults to
    max(30 s, 3 × interval); ``transport`` is passed to the webhook HTTP client;
    ``claim_ttl`` is how long a webhook delivery being sent stays claimed.
    """
    interval = interval_seconds if interval_seconds is not None else scheduler_interval()
    ttl = lease_ttl or max(DEFAULT_LEASE_TTL, timedelta(seconds=3 * interval))
    deliverer = (
        webhooks.Deliverer(db, transport=transport, claim_ttl=claim_ttl) if deliver else None
    )
    handle = SchedulerHandle(
        db,
        interval=interval,
        clock=clock,
        lease_ttl=ttl,
        holder=holder or new_holder(),
        deliverer=deliverer,
        delivery_interval=delivery_interval
        if delivery_interval is not None
        else min(interval, 5.0),
        limit=limit,
        max_levels=max_levels,
    )
    log.info("scheduler %s starting (every %.1f s, lease %s)", handle.holder, interval, ttl)
    return handle.start()


def start_from_env(db: Database) -> SchedulerHandle | None:
    """What the app's lifespan calls: the scheduler unless ``CITYOPS_SCHEDULER=off``."""
    if not scheduler_enabled():
        log.info("scheduler disabled (CITYOPS_SCHEDULER=off)")
        return None
    return start_scheduler(db, scheduler_interval())

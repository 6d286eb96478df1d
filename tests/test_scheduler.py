"""The durable case scheduler: 临期, 超期, automatic 督办 and 提级, exactly once.

Cases are driven through the workflow (``service``) at chosen instants, then the scheduler
ticks at chosen ``now`` values — directly (:func:`jobs.tick`) or through the real runner
threads with an injected clock, restarted and crashed mid-way.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, update

from cityops.access.models import User, UserRole
from cityops.cases import jobs, service
from cityops.cases.models import (
    Case,
    CaseEvent,
    Notification,
    SchedulerLease,
    Webhook,
    WebhookDelivery,
)
from cityops.core.db import Database
from cityops.core.errors import Conflict
from tests.conftest import PG_URL
from tests.factories import (
    grid_of_inspector,
    handler_of,
    matter_category,
    point_in,
    principal,
    report_data,
)

# A Tuesday, 09:00 in Asia/Shanghai.
T0 = datetime(2026, 11, 17, 1, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
US = timedelta(microseconds=1)
PW = "demo-pass-2026"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --------------------------------------------------------------------------- helpers


def dispatched(s: Any, minutes: float = 0.0, text: str | None = None) -> Case:
    """An inspector's report, accepted and filed (auto-dispatched): waiting in 待签收, whose
    limit is 1 natural hour — 临期 after 48 min, 超期 after 60 min."""
    insp = principal(s, "inspector1")
    lon, lat = point_in(grid_of_inspector(s, "inspector1"))
    data = report_data(matter_category(s), lon, lat, description=text or f"垃圾 {minutes}")
    case = service.create_case(s, insp, data, at(minutes)).case
    service.perform(s, principal(s, "operator1"), case.id, "accept", {}, None, at(minutes + 1))
    service.perform(s, principal(s, "shift1"), case.id, "file", {}, None, at(minutes + 2))
    assert case.stage == "sign" and case.lead_unit_id is not None
    assert case.stage_warn_at == at(minutes + 2 + 48)
    assert case.stage_deadline == at(minutes + 2 + 60)
    return case


def make_cases(db: Database, starts: list[float]) -> list[int]:
    with db.session() as s:
        return [dispatched(s, m).id for m in starts]


def events(s: Any, case_id: int, action: str) -> list[CaseEvent]:
    return list(
        s.scalars(
            select(CaseEvent)
            .where(CaseEvent.case_id == case_id, CaseEvent.action == action)
            .order_by(CaseEvent.id)
        )
    )


def counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return {
            "events": s.scalar(select(func.count()).select_from(CaseEvent)) or 0,
            "notifications": s.scalar(select(func.count()).select_from(Notification)) or 0,
            "deliveries": s.scalar(select(func.count()).select_from(WebhookDelivery)) or 0,
            "versions": s.scalar(select(func.sum(Case.version))) or 0,
        }


def unit_users(s: Any, unit_id: int) -> set[int]:
    return set(s.scalars(select(User.id).where(User.unit_id == unit_id, User.active.is_(True))))


def leaders(s: Any, case: Case) -> dict[str | None, set[int]]:
    """Leaders covering the case by scope (None = city-wide)."""
    out: dict[str | None, set[int]] = {}
    rows = s.execute(
        select(User.id, User.scope_region_code)
        .join(UserRole)
        .where(UserRole.role == "leader", User.active.is_(True))
    ).all()
    for uid, scope in rows:
        if scope is None or (case.grid_code or "").startswith(scope):
            out.setdefault(scope, set()).add(uid)
    return out


def expected_keys(db: Database, case_ids: list[int], levels: int) -> set[str]:
    """The dedupe keys a case in 待签收 gets when left alone for ``levels`` spans."""
    keys = set()
    with db.session() as s:
        for cid in case_ids:
            c = s.get(Case, cid)
            assert c is not None and c.stage_deadline is not None and c.stage_warn_at is not None
            st, dl = jobs.webhooks.stamp(c.stage_started_at), jobs.webhooks.stamp(c.stage_deadline)
            keys.add(f"near_due:{cid}:{st}:{jobs.webhooks.stamp(c.stage_warn_at)}")
            keys.add(f"overdue:{cid}:{st}:{dl}")
            keys.update(f"escalate:{cid}:{st}:{dl}:{n}" for n in range(1, levels + 1))
    return keys


def assert_exactly_once(db: Database, case_ids: list[int], levels: int) -> None:
    """Every warning of the cases exists, none twice: events, inbox rows, webhook rows."""
    with db.session() as s:
        for cid in case_ids:
            assert len(events(s, cid, "near_due")) == 1, cid
            assert len(events(s, cid, "overdue")) == 1, cid
            assert [e.data["level"] for e in events(s, cid, "escalate")] == list(
                range(1, levels + 1)
            ), cid
            c = s.get(Case, cid)
            assert c is not None and c.near_due and c.overdue and c.supervised
            assert c.escalation_level == levels
        keys = Counter(
            s.execute(
                select(Notification.dedupe_key, Notification.user_id).where(
                    Notification.case_id.in_(case_ids), Notification.dedupe_key.is_not(None)
                )
            ).all()
        )
        assert all(n == 1 for n in keys.values())  # no (user, key) twice
        assert {k for k, _ in keys} == expected_keys(db, case_ids, levels)
        hooks = s.scalar(select(func.count()).select_from(Webhook)) or 0
        deliveries = Counter(s.scalars(select(WebhookDelivery.dedupe_key)))
        assert set(deliveries) == (expected_keys(db, case_ids, levels) if hooks else set())
        assert all(n == hooks for n in deliveries.values())


class FakeClock:
    """Thread-safe injectable clock."""

    def __init__(self, t: datetime) -> None:
        self._t = t
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._t

    def set(self, t: datetime) -> None:
        with self._lock:
            self._t = t


class Receiver:
    """An httpx mock webhook receiver: records every request, answers 200."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
        return httpx.Response(200, text="ok")

    def keys(self) -> Counter[str]:
        return Counter(json.loads(r.content)["key"] for r in self.requests)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def add_webhook(
    db: Database,
    url: str = "http://receiver.test/hook",
    secret: str = "s3cret-s3cret-s3cret",
    **kw: Any,
) -> int:
    with db.session() as s:
        w = Webhook(name="test", url=url, secret=secret, **kw)
        s.add(w)
        s.flush()
        return w.id


# --------------------------------------------------------------------------- tick


def test_near_due_is_set_exactly_once_at_the_warn_instant(city) -> None:
    (cid,) = make_cases(city, [0])
    r = jobs.tick(city, at(50) - US)
    assert r.near_due == [] and not r.changed
    r = jobs.tick(city, at(50))
    assert r.near_due == [cid] and r.overdue == []
    with city.session() as s:
        c = s.get(Case, cid)
        assert c is not None and c.near_due and not c.overdue and not c.supervised
        (ev,) = events(s, cid, "near_due")
        assert ev.actor_name == "system" and ev.actor_id is None and ev.at == at(50)
        assert ev.from_stage == ev.to_stage == "sign"
        notes = s.scalars(
            select(Notification).where(Notification.case_id == cid, Notification.kind == "near_due")
        ).all()
        # the lead unit's active users, each once, all under the same key
        assert {n.user_id for n in notes} == unit_users(s, c.lead_unit_id) and len(notes) == len(
            unit_users(s, c.lead_unit_id)
        )
        assert {n.dedupe_key for n in notes} == {
            f"near_due:{cid}:20261117T010200Z:20261117T015000Z"
        }
        assert "临期" in notes[0].title and c.number in notes[0].title
    before = counts(city)
    assert not jobs.tick(city, at(50)).changed
    assert not jobs.tick(city, at(55)).changed
    assert counts(city) == before


def test_overdue_supervises_and_escalates_level_by_level(city) -> None:
    (cid,) = make_cases(city, [0])
    jobs.tick(city, at(50))
    assert not jobs.tick(city, at(62)).changed  # the deadline itself is not overdue yet
    r = jobs.tick(city, at(62) + US)
    assert r.overdue == [cid] and r.escalated == [(cid, 1)]
    with city.session() as s:
        c = s.get(Case, cid)
        assert c is not None and c.overdue and c.supervised and c.escalation_level == 1
        assert len(events(s, cid, "overdue")) == 1
        (esc,) = events(s, cid, "escalate")
        tiers = leaders(s, c)
        district = next(v for k, v in tiers.items() if k is not None)
        city_wide = tiers[None]
        # 提级 level 1 goes to the district's leaders, not yet to the city's
        assert set(esc.data["leaders"]) == district
        notified = set(
            s.scalars(select(Notification.user_id).where(Notification.kind == "escalate"))
        )
        assert notified == district
        overdue_to = set(
            s.scalars(select(Notification.user_id).where(Notification.kind == "overdue"))
        )
        assert overdue_to == unit_users(s, c.lead_unit_id)
    # one full span (60 min) later: level 2, to the city's leaders
    assert not jobs.tick(city, at(122)).changed
    r = jobs.tick(city, at(122) + US)
    assert r.escalated == [(cid, 2)] and r.overdue == []
    assert not jobs.tick(city, at(150)).changed
    r = jobs.tick(city, at(183))
    assert r.escalated == [(cid, 3)]
    with city.session() as s:
        c = s.get(Case, cid)
        assert c is not None and c.escalation_level == 3
        lv2 = set(
            s.scalars(
                select(Notification.user_id).where(Notification.dedupe_key.like("escalate:%:2"))
            )
        )
        assert lv2 == city_wide
    assert_exactly_once(city, [cid], 3)
    # at most MAX_LEVELS_PER_STAGE levels, however long it stays overdue
    jobs.tick(city, at(24 * 60))
    with city.session() as s:
        c = s.get(Case, cid)
        assert c is not None and c.escalation_level == jobs.MAX_LEVELS_PER_STAGE


def test_a_late_tick_catches_up_every_warning_once(city) -> None:
    cids = make_cases(city, [0, 10])
    r = jobs.tick(city, at(200))  # scheduler was down: 临期, 超期 and levels 1–3 at once
    assert sorted(r.near_due) == cids and sorted(r.overdue) == cids
    assert sorted(r.escalated) == [(c, n) for c in cids for n in (1, 2, 3)]
    with city.session() as s:
        assert events(s, cids[0], "near_due")[0].data["late"] is True
    before = counts(city)
    assert not jobs.tick(city, at(200)).changed
    assert counts(city) == before
    assert_exactly_once(city, cids, 3)


def test_tick_is_idempotent_even_when_run_twice_at_the_same_instant(city) -> None:
    add_webhook(city)
    make_cases(city, [0, 5, 30])
    for minutes in (55, 70, 130):
        jobs.tick(city, at(minutes))
        before = counts(city)
        again = jobs.tick(city, at(minutes))
        assert not again.changed and again.notifications == 0 and again.deliveries == 0
        assert counts(city) == before


def test_a_rolled_back_tick_leaves_nothing_behind(city) -> None:
    (cid,) = make_cases(city, [0])
    before = counts(city)
    with pytest.raises(RuntimeError), city.session() as s:  # the process dies before commit
        assert jobs.tick(s, at(70)).overdue == [cid]
        raise RuntimeError("crash")
    assert counts(city) == before
    jobs.tick(city, at(70))
    assert_exactly_once(city, [cid], 1)


def test_paused_and_parked_cases_are_skipped(city) -> None:
    with city.session() as s:
        waiting = dispatched(s, 0)
        h = handler_of(s, waiting.lead_unit_id)
        service.perform(s, h, waiting.id, "request_return", {"reason": "不是我们的"}, None, at(10))
        assert waiting.paused_since is not None and waiting.stage == "return_review"
        parked = dispatched(s, 1)
        h2 = handler_of(s, parked.lead_unit_id)
        service.perform(s, h2, parked.id, "sign", {}, None, at(5))
        service.perform(s, h2, parked.id, "request_park", {"reason": "列入维修计划"}, None, at(6))
        service.perform(
            s, principal(s, "shift1"), parked.id, "decide_park", {"approve": True}, None, at(7)
        )
        assert parked.stage == "parked"
        ids = (waiting.id, parked.id)
    r = jobs.tick(city, at(3 * 24 * 60))
    assert not r.changed
    with city.session() as s:
        for cid in ids:
            c = s.get(Case, cid)
            assert c is not None and not (
                c.near_due or c.overdue or c.supervised or c.escalation_level
            )
        assert not s.scalars(select(Notification).where(Notification.dedupe_key.is_not(None))).all()
        # once the return is refused the clock runs again (deadline moved by the pause)
        service.perform(
            s, principal(s, "shift1"), ids[0], "decide_return", {"approve": False}, None, at(40)
        )
        c = s.get(Case, ids[0])
        assert c is not None and c.stage == "sign" and c.stage_deadline == at(62 + 30)
    assert not jobs.tick(city, at(92)).overdue
    assert jobs.tick(city, at(92) + US).overdue == [ids[0]]


def test_an_extension_starts_a_new_episode(city) -> None:
    with city.session() as s:
        case = dispatched(s, 0)
        h = handler_of(s, case.lead_unit_id)
        service.perform(s, h, case.id, "sign", {}, None, at(10))
        assert case.stage == "handle" and case.stage_deadline == at(
            2 + 6 * 60
        )  # 4 working h + lunch
        cid, first = case.id, case.stage_deadline
    assert jobs.tick(city, first + US).overdue == [cid]
    with city.session() as s:
        h = handler_of(s, s.get(Case, cid).lead_unit_id)  # type: ignore[union-attr]
        service.perform(
            s,
            h,
            cid,
            "request_extension",
            {"reason": "需要吊车", "amount": 2, "unit": "working_hours"},
            None,
            first + MIN,
        )
        service.perform(
            s, principal(s, "shift1"), cid, "decide_extension", {"approve": True}, None, first + MIN
        )
        c = s.get(Case, cid)
        assert c is not None and not c.overdue and not c.near_due and c.supervised
        second = c.stage_deadline
        assert second is not None and second > first
    r = jobs.tick(city, second + US)
    assert r.near_due == [cid] and r.overdue == [cid] and r.escalated == [(cid, 1)]
    with city.session() as s:
        assert len(events(s, cid, "overdue")) == 2
        c = s.get(Case, cid)
        assert c is not None and c.escalation_level == 2  # one 提级 per episode
        assert len({e.data["key"] for e in events(s, cid, "overdue")}) == 2


def test_a_case_changed_during_the_tick_is_skipped_and_retried(city, monkeypatch) -> None:
    cids = make_cases(city, [0, 1])
    real = jobs._mark_near_due

    def racing(ctx: Any, case: Case, report: Any) -> None:
        if case.id == cids[0]:  # a user action commits between the tick's read and write
            bump = update(Case).where(Case.id == case.id).values(version=Case.version + 1)
            ctx.s.execute(bump.execution_options(synchronize_session=False))
        real(ctx, case, report)

    monkeypatch.setattr(jobs, "_mark_near_due", racing)
    r = jobs.tick(city, at(55))
    assert r.conflicts == [cids[0]] and r.near_due == [cids[1]]
    with city.session() as s:
        c = s.get(Case, cids[0])
        assert c is not None and not c.near_due
        assert not events(s, cids[0], "near_due")
        assert not s.scalars(
            select(Notification)
            .where(Notification.case_id == cids[0])
            .where(Notification.kind == "near_due")
        ).all()
    monkeypatch.setattr(jobs, "_mark_near_due", real)
    assert jobs.tick(city, at(56)).near_due == [cids[0]]
    jobs.tick(city, at(64))
    assert_exactly_once(city, cids, 1)


def test_the_scheduler_loses_to_a_user_who_acts_at_the_same_time(city) -> None:
    """A user action that saw the case before the tick marked it gets a clean 409."""
    (cid,) = make_cases(city, [0])
    with city.session() as s:
        seen = s.get(Case, cid)
        assert seen is not None
        version = seen.version
    jobs.tick(city, at(55))
    with city.session() as s:
        c = s.get(Case, cid)
        h = handler_of(s, c.lead_unit_id)  # type: ignore[union-attr]
        with pytest.raises(Conflict, match="version"):
            service.perform(s, h, cid, "sign", {}, version, at(56))
        c = service.perform(s, h, cid, "sign", {}, version + 1, at(56))
        assert c.stage == "handle" and not c.near_due  # a new stage, new clock


@pytest.mark.skipif(
    not PG_URL, reason="row locks are a PostgreSQL matter (SQLite serialises writers)"
)
def test_tick_skips_a_case_a_user_is_changing_right_now(city) -> None:
    cids = make_cases(city, [0, 1])
    with city.session() as user:  # a user's action holds the first case's row lock …
        service.load_case(user, principal(user, "admin"), cids[0], for_update=True)
        r = jobs.tick(city, at(55))  # … the tick does not wait for it, nor fail
        assert r.near_due == [cids[1]]
    assert jobs.tick(city, at(55)).near_due == [cids[0]]
    with city.session() as s:
        assert [len(events(s, c, "near_due")) for c in cids] == [1, 1]


# --------------------------------------------------------------------------- lease


def test_only_the_lease_holder_ticks_and_an_expired_lease_is_taken_over(city) -> None:
    make_cases(city, [0])
    ttl = timedelta(seconds=30)
    assert jobs.run_once(city, "a", at(10), lease_ttl=ttl) is not None
    assert jobs.run_once(city, "b", at(10), lease_ttl=ttl) is None
    assert (
        jobs.run_once(city, "a", at(10) + timedelta(seconds=25), lease_ttl=ttl) is not None
    )  # renewed
    assert jobs.run_once(city, "b", at(10) + timedelta(seconds=50), lease_ttl=ttl) is None
    # "a" crashed: its lease runs out 30 s after its last renewal
    assert jobs.run_once(city, "b", at(10) + timedelta(seconds=56), lease_ttl=ttl) is not None
    assert jobs.run_once(city, "a", at(10) + timedelta(seconds=57), lease_ttl=ttl) is None
    assert jobs.lease_holder(city, at(11)) == "b"
    with city.session() as s:
        assert jobs.release_lease(s, "b")
    assert jobs.run_once(city, "a", at(11), lease_ttl=ttl) is not None


def test_two_processes_race_for_the_lease_exactly_one_wins(city) -> None:
    dbs = [Database(city.url) for _ in range(4)]
    barrier = threading.Barrier(len(dbs))
    won: list[str] = []

    def contender(i: int) -> None:
        barrier.wait()
        if jobs.run_once(dbs[i], f"p{i}", at(30)) is not None:
            won.append(f"p{i}")

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(len(dbs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for d in dbs:
        d.dispose()
    assert len(won) == 1
    assert jobs.lease_holder(city, at(30)) == won[0]


def test_two_ticks_racing_without_the_lease_still_send_nothing_twice(city, extra_dbs) -> None:
    """Even if two processes ticked at once (say, clocks far apart), every warning is once."""
    cids = make_cases(city, [0, 3, 6, 9])
    add_webhook(city)
    extra_dbs += [Database(city.url) for _ in range(3)]
    for minutes in (60, 200):
        barrier = threading.Barrier(len(extra_dbs))
        reports: list[jobs.TickReport] = []

        def ticker(d: Database, t: datetime, b: threading.Barrier, out: list[Any]) -> None:
            b.wait()
            out.append(jobs.tick(d, t))

        threads = [
            threading.Thread(target=ticker, args=(d, at(minutes), barrier, reports))
            for d in extra_dbs
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(reports) == len(extra_dbs)
        assert sum(len(r.near_due) for r in reports) == (len(cids) if minutes == 60 else 0)
    assert_exactly_once(city, cids, 3)


# --------------------------------------------------------------------------- runner


@pytest.fixture
def extra_dbs(city) -> Iterator[list[Database]]:
    """Further Database objects on the city's URL (other "server processes")."""
    made: list[Database] = []
    yield made
    for d in made:
        d.dispose()


@pytest.fixture
def runners(extra_dbs) -> Iterator[list[jobs.SchedulerHandle]]:
    """Scheduler handles started by a test; stopped at its end even when it fails."""
    made: list[jobs.SchedulerHandle] = []
    yield made
    for h in made:
        h.stop(timeout=5, release=False)


def _start(
    runners: list[jobs.SchedulerHandle],
    db: Database,
    clock: FakeClock,
    ttl: timedelta,
    receiver: Receiver,
) -> jobs.SchedulerHandle:
    """A runner as a server process starts it: tiny intervals, the fake clock, the receiver.

    The fake clock jumps by many minutes while a webhook may be in flight; in real time a
    send ends (5 s timeout) long before its claim expires, so the claim is made long here
    too — otherwise another runner would rightly take over the "expired" claim mid-send."""
    h = jobs.start_scheduler(
        db,
        0.005,
        clock=clock,
        lease_ttl=ttl,
        transport=receiver.transport(),
        delivery_interval=0.005,
        claim_ttl=timedelta(days=1),
    )
    runners.append(h)
    return h


def _advance(clock: FakeClock, t: datetime, *handles: jobs.SchedulerHandle) -> None:
    clock.set(t)
    for h in handles:
        assert h.wait_rounds(2, timeout=20), h.last_error
        assert h.errors == 0, h.last_error


def test_restart_mid_way_loses_no_warning_and_sends_none_twice(city, extra_dbs, runners) -> None:
    cids = make_cases(city, [0, 20, 40])  # sign stages start at 2, 22, 42 min
    add_webhook(city)
    receiver = Receiver()
    clock = FakeClock(at(0))
    ttl = timedelta(minutes=5)

    def start(db: Database) -> jobs.SchedulerHandle:
        return _start(runners, db, clock, ttl, receiver)

    h1 = start(city)
    _advance(clock, at(55), h1)  # case 1 临期 (50)
    _advance(clock, at(75), h1)  # case 1 超期 + 提级 1 (62), case 2 临期 (70)
    _advance(clock, at(95), h1)  # case 2 超期 (82), case 3 临期 (90)
    assert h1.ticks > 0
    # --- restart: the server stops, its engine goes away, a new process starts
    h1.stop()
    assert not h1.alive
    city.dispose()
    with city.session() as s:  # the state survived in the database
        assert [bool(s.get(Case, c).overdue) for c in cids] == [True, True, False]  # type: ignore[union-attr]
    db2 = Database(city.url)
    extra_dbs.append(db2)
    clock.set(at(96))
    h2 = start(db2)
    assert h2.holder != h1.holder
    _advance(clock, at(115), h2)  # case 3 超期 (102)
    _advance(clock, at(125), h2)  # case 1 提级 2 (122)
    assert h2.ticks > 0
    # --- crash: no clean stop, the lease stays until it expires
    h2.stop(release=False)
    db2.dispose()
    db3 = Database(city.url)
    extra_dbs.append(db3)
    h3 = start(db3)
    _advance(clock, at(126), h3)
    assert h3.ticks == 0 and not h3.is_leader  # the dead holder's lease is still valid
    _advance(clock, at(150), h3)  # expired: taken over; case 2 提级 2 (142)
    assert h3.ticks > 0 and h3.is_leader
    # case 3 提级 2 (162), case 1 提级 3 (182), case 2 提级 3 (202), case 3 提级 3 (222)
    for minutes in (175, 185, 205, 225):
        _advance(clock, at(minutes), h3)
    h3.stop()
    assert_exactly_once(city, cids, 3)
    # every webhook arrived exactly once, signed
    got = receiver.keys()
    assert set(got) == expected_keys(city, cids, 3) and all(n == 1 for n in got.values())
    with city.session() as s:
        assert set(s.scalars(select(WebhookDelivery.status))) == {"delivered"}
    req = receiver.requests[0]
    assert jobs.webhooks.verify_signature(
        "s3cret-s3cret-s3cret",
        req.headers["X-CityOps-Timestamp"],
        req.content,
        req.headers["X-CityOps-Signature"],
        tolerance=None,
    )


def test_two_runners_at_once_only_the_leader_ticks(city, extra_dbs, runners) -> None:
    cids = make_cases(city, [0, 15])
    add_webhook(city)
    receiver = Receiver()
    clock = FakeClock(at(0))
    ttl = timedelta(minutes=30)
    a, b = Database(city.url), Database(city.url)
    extra_dbs += [a, b]
    ha = _start(runners, a, clock, ttl, receiver)
    hb = _start(runners, b, clock, ttl, receiver)
    for minutes in (20, 40, 55, 70, 80, 100):
        _advance(clock, at(minutes), ha, hb)
    leader, follower = (ha, hb) if ha.ticks else (hb, ha)
    assert leader.ticks > 0 and follower.ticks == 0
    assert jobs.lease_holder(city, clock()) == leader.holder
    # the leader dies; after its lease expires the other one carries on
    leader.stop(release=False)
    for minutes in (125, 140, 160, 200):
        _advance(clock, at(minutes), follower)
    assert follower.ticks > 0
    follower.stop()
    assert_exactly_once(city, cids, 3)
    got = receiver.keys()
    assert set(got) == expected_keys(city, cids, 3) and all(n == 1 for n in got.values())


@pytest.fixture
def env(monkeypatch) -> Iterator[Callable[[str, str], None]]:
    """Set an environment variable for the test (and re-read the cached settings)."""
    from cityops.core.settings import get_settings

    def setenv(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield setenv
    monkeypatch.undo()
    get_settings.cache_clear()


def test_start_from_env(city, env, runners) -> None:
    env("CITYOPS_SCHEDULER", "off")
    assert jobs.start_from_env(city) is None
    env("CITYOPS_SCHEDULER", "on")
    env("CITYOPS_SCHEDULER_INTERVAL", "3600")
    assert jobs.scheduler_interval() == 3600
    h = jobs.start_from_env(city)
    assert h is not None
    runners.append(h)
    assert h.interval == 3600 and h.lease_ttl == timedelta(hours=3)
    assert h.wait_rounds(1, timeout=10)
    h.stop()
    assert not h.alive
    with city.session() as s:
        assert s.get(SchedulerLease, jobs.LEASE_NAME) is None  # released on stop


# --------------------------------------------------------------------------- inbox API


def _client(db: Database, env: Any) -> Any:
    """The app, with the notifications/webhooks router; until ``create_app`` registers it,
    an app of just the login and that router."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.routing import NoMatchFound

    from cityops.access.api import router as access_router
    from cityops.app import create_app
    from cityops.cases import notify_api
    from cityops.core.errors import DomainError

    env("CITYOPS_SCHEDULER", "off")
    app = create_app(db)
    try:
        app.url_path_for("unread_count")
    except NoMatchFound:
        app = FastAPI()
        app.state.db = db
        app.add_exception_handler(
            DomainError,
            lambda _r, e: JSONResponse(e.to_dict(), status_code=e.status),  # type: ignore[attr-defined]
        )
        app.include_router(access_router)
        app.include_router(notify_api.router)
    return TestClient(app)


def login(client: Any, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def test_inbox_api(city, env) -> None:
    (cid,) = make_cases(city, [0])
    jobs.tick(city, at(70))
    with city.session() as s:
        c = s.get(Case, cid)
        assert c is not None
        handler = handler_of(s, c.lead_unit_id).username
    with _client(city, env) as client:
        me = login(client, handler)
        items = client.get("/api/v1/notifications", headers=me).json()
        mine = [n for n in items if n["case_id"] == cid]
        assert {n["kind"] for n in mine} == {"dispatch", "near_due", "overdue"}
        assert client.get("/api/v1/notifications/unread-count", headers=me).json()["unread"] == len(
            items
        )
        first = mine[0]["id"]
        r = client.post(f"/api/v1/notifications/{first}/read", headers=me)
        assert r.status_code == 200 and r.json()["read"] is True
        unread = client.get("/api/v1/notifications", params={"unread": "true"}, headers=me).json()
        assert first not in [n["id"] for n in unread] and len(unread) == len(items) - 1
        # somebody else's notification does not exist for me
        other = login(client, "operator1")
        assert client.post(f"/api/v1/notifications/{first}/read", headers=other).status_code == 404
        assert client.post("/api/v1/notifications/read-all", headers=me).json() == {
            "updated": len(items) - 1
        }
        assert client.get("/api/v1/notifications", params={"unread": True}, headers=me).json() == []
        page = client.get(
            "/api/v1/notifications", params={"limit": 1, "before_id": items[0]["id"]}, headers=me
        ).json()
        assert [n["id"] for n in page] == [items[1]["id"]]
        client.cookies.clear()
        assert client.get("/api/v1/notifications").status_code == 401

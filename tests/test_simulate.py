"""Simulated case history (cityops.cases.simulate): service mode, bulk mode, the CLI.

The strongest check of bulk mode is :func:`test_bulk_histories_replay_through_the_service`:
every bulk-generated history is replayed action by action through the real workflow and
must end in exactly the same case row (stages, timestamps, deadlines, counts, units).
"""

from __future__ import annotations

import contextvars
import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cityops.cases import queries, service
from cityops.cases.models import (
    END_STAGES,
    ApprovalRequest,
    Case,
    CaseAttachment,
    CaseEvent,
    CaseSequence,
    CaseUnit,
    Notification,
)
from cityops.cases.simulate import (
    LOCAL_OFFSET,
    MINUTE,
    NONE_T,
    VectorClock,
    c_text,
    c_time,
    decode,
    simulate_cases,
    to_dt,
    to_us,
    ts_strings,
)
from cityops.cases.storage import LocalStorage
from cityops.core.db import Database
from cityops.core.settings import get_settings
from cityops.worktime import service as wt
from tests.factories import photo, principal

STAMPS = (
    ("reported_at", "report"),
    ("accepted_at", "accept"),
    ("verified_at", "verify"),
    ("filed_at", "file"),
    ("dispatched_at", "dispatch"),
    ("signed_at", "sign"),
    ("handled_at", "handle"),
    ("checked_at", "check"),
    ("closed_at", "close"),
)
#: Monday 2026-11-16 (an ordinary working week in the 2026 calendar).
START = date(2026, 11, 16)


# --------------------------------------------------------------------------- invariants


def check_history(
    s: Session, ids: Iterable[int] | None = None, stamp_events: bool = True
) -> list[str]:
    """Problems of the cases (all, or ``ids``): ordering, history, end states, units."""
    q = select(Case).order_by(Case.id)
    if ids is not None:
        q = q.where(Case.id.in_(list(ids)))
    cases = s.scalars(q).all()
    events: dict[int, list[CaseEvent]] = defaultdict(list)
    for e in s.scalars(select(CaseEvent).order_by(CaseEvent.case_id, CaseEvent.at, CaseEvent.id)):
        events[e.case_id].append(e)
    units: dict[int, set[tuple[int, str]]] = defaultdict(set)
    for u in s.scalars(select(CaseUnit)):
        units[u.case_id].add((u.unit_id, u.role))
    problems: list[str] = []
    for c in cases:

        def bad(msg: str, c: Case = c) -> None:
            problems.append(f"case {c.id} {c.number} ({c.source}, {c.stage}): {msg}")

        if c.stage == "closed" and c.checked_at is None and c.source != "self":
            bad("closed without 核查")
        if c.stage == "closed" and (c.close_type is None or c.closed_at is None):
            bad("closed without close type or time")
        if (
            c.stage == "closed"
            and c.close_type in ("正常", "超时")
            and (c.close_type == "超时") != c.handled_late
        ):
            bad("close type does not follow handled_late")
        stamps = [(n, getattr(c, n)) for n, _ in STAMPS if getattr(c, n) is not None]
        for (n1, x), (n2, y) in pairwise(stamps):
            if y < x:
                bad(f"{n2} {y} is before {n1} {x}")
        ev = events[c.id]
        if not ev or ev[0].action != "report" or ev[0].at != c.reported_at:
            bad("history does not start with the report")
            continue
        for a, b in pairwise(ev):
            # the service's automatic 受理 of configured channels is logged accept→accept, file→dispatch
            if b.from_stage != a.to_stage and (a.action, b.action) != ("accept", "file"):
                bad(
                    f"history jumps: {a.action} → {a.to_stage}, then {b.action} from {b.from_stage}"
                )
        if ev[-1].to_stage != c.stage:
            bad(f"last event leads to {ev[-1].to_stage}")
        if stamp_events:
            acts = {(e.action, e.at) for e in ev}
            for name, action in STAMPS:
                t = getattr(c, name)
                if t is None:
                    continue
                if c.source == "self" and name != "reported_at":
                    ok = ("self_handle", t) in acts
                else:
                    ok = (action, t) in acts
                if not ok:
                    bad(f"no {action} event at {name}")
        if c.stage in ("sign", "handle", "check", "close") and c.lead_unit_id is None:
            bad("no lead unit")
        if c.lead_unit_id is not None and (c.lead_unit_id, "lead") not in units[c.id]:
            bad("lead unit missing from case_units")
        if c.stage in END_STAGES and c.stage_deadline is not None:
            bad("finished but still has a deadline")
        if (
            c.stage not in END_STAGES
            and c.stage != "parked"
            and c.pending_request is None
            and c.stage_deadline is None
        ):
            bad("open without a deadline")
        if c.grid_code is None or c.grid_id is None:
            bad("no grid")
        if c.updated_at < ev[-1].at:
            bad("updated_at before the last event")
    return problems


def _run_ids(summary: Any) -> list[int]:
    lo, hi = summary.first_case_id, summary.last_case_id
    assert lo is not None and hi is not None
    return list(range(lo, hi + 1))


def _approvals(s: Session, ids: list[int]) -> dict[tuple[str, str | None], int]:
    q = (
        select(ApprovalRequest.kind, ApprovalRequest.decision, func.count())
        .where(ApprovalRequest.case_id.in_(ids))
        .group_by(ApprovalRequest.kind, ApprovalRequest.decision)
    )
    return {(k, d): int(n) for k, d, n in s.execute(q)}


def _actions(s: Session, ids: list[int]) -> set[str]:
    return set(s.scalars(select(CaseEvent.action).where(CaseEvent.case_id.in_(ids)).distinct()))


# --------------------------------------------------------------------------- service mode


def test_service_mode_mix_side_flows_and_invariants(city: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary = simulate_cases(
        city,
        days=2,
        per_day=40,
        seed=11,
        start=START,
        storage=LocalStorage(tmp_path),
        progress=None,
    )
    assert summary.errors == {}, summary.errors
    assert summary.reports == 80 and summary.cases >= 70
    ids = _run_ids(summary)
    with city.session() as s:
        stages = summary.stages
        assert stages.get("closed", 0) > 20 and any(st not in END_STAGES for st in stages)
        c = summary.counts
        assert c["closed_on_time"] > 0
        assert c["handled_late"] > 0 and c["closed_late"] + c["overdue_open"] > 0  # 超时 / 超期
        assert c["self_handled"] >= 2  # at least one per day
        # every side flow happened at least once (guaranteed with per_day >= 40)
        appr = _approvals(s, ids)
        assert appr.get(("return", "approved"), 0) >= 1
        assert appr.get(("extend", "approved"), 0) >= 1
        assert appr.get(("park", "approved"), 0) >= 1
        acts = _actions(s, ids)
        assert {
            "reject",
            "void",
            "rework",
            "merge",
            "merged_in",
            "supervise",
            "self_handle",
        } <= acts
        assert {"near_due", "overdue"} & acts  # the scheduler ran on the simulated clock
        assert s.scalar(
            select(func.count()).select_from(Case).where(Case.id.in_(ids), Case.return_count > 0)
        )
        # verify-false → 作废 (a 核实 that was not confirmed)
        vf = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id.in_(ids), CaseEvent.action == "verify")
        ).all()
        assert any(e.to_stage == "void" for e in vf) and any(e.to_stage == "file" for e in vf)
        # photos: every 处置 and 核查 carries one, stored once and shared by the rows
        atts = s.scalars(select(CaseAttachment).where(CaseAttachment.case_id.in_(ids))).all()
        handled = s.scalar(
            select(func.count())
            .select_from(CaseEvent)
            .where(CaseEvent.case_id.in_(ids), CaseEvent.action == "handle")
        )
        assert sum(a.purpose == "after" for a in atts) == handled
        assert len({a.storage_key for a in atts}) == 1
        store = LocalStorage(tmp_path)
        assert store.get(atts[0].storage_key)[:2] == b"\xff\xd8"  # a JPEG
        # places: inside the city, reports mostly in working hours, sources mixed
        rows = s.execute(
            select(Case.source, Case.reported_at, Case.grid_code).where(Case.id.in_(ids))
        ).all()
        sources = {r[0] for r in rows}
        assert {"inspector", "hotline", "public", "video", "self"} <= sources
        assert all(r[2] for r in rows)
        assert check_history(s, ids) == []


def test_service_mode_is_deterministic_for_a_seed(city: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Same seed, same plan: both runs (on identical databases) pick the same reports."""
    from cityops.cases.simulate import load_world, plan_rng, sample_reports

    with city.session() as s:
        world = load_world(s, 5)
    from cityops.cases.simulate import RATES, local_midnight

    day = local_midnight(START)
    a = sample_reports(world, plan_rng(5), [day, day + 86_400_000_000], 50, RATES)
    b = sample_reports(world, plan_rng(5), [day, day + 86_400_000_000], 50, RATES)
    assert a.t.tolist() == b.t.tolist() and a.desc == b.desc and a.cat.tolist() == b.cat.tolist()
    c = sample_reports(world, plan_rng(6), [day], 50, RATES)
    assert c.t.tolist() != a.t[:50].tolist()


# --------------------------------------------------------------------------- bulk mode


def test_bulk_mode_mix_and_invariants(city: Database) -> None:
    summary = simulate_cases(
        city, days=3, per_day=60, seed=11, start=START, mode="bulk", progress=None
    )
    assert summary.reports == 180 and summary.cases >= 160
    ids = _run_ids(summary)
    with city.session() as s:
        assert check_history(s, ids) == []
        c = summary.counts
        assert summary.stages.get("closed", 0) > 60
        assert c["handled_late"] > 0 and c["closed_late"] > 0 and c["self_handled"] >= 3
        assert c["returned"] >= 1 and c["extended"] >= 1 and c["reworked"] >= 1
        appr = _approvals(s, ids)
        assert appr.get(("park", "approved"), 0) >= 1 and appr.get(("return", "approved"), 0) >= 1
        assert {
            "reject",
            "void",
            "rework",
            "merge",
            "merged_in",
            "supervise",
            "decide_extend",
        } <= _actions(s, ids)
        # the scheduler flagged the cases open past their deadline at the end
        assert summary.counts.get("scheduler_overdue", 0) > 0
        assert s.scalar(
            select(func.count()).select_from(Case).where(Case.id.in_(ids), Case.overdue.is_(True))
        )
        # deadlines are the workflow's own arithmetic (checked against the clock)
        clock = wt.get_clock(s)
        checked = 0
        for case in s.scalars(
            select(Case).where(Case.id.in_(ids), Case.dispatched_at.is_not(None))
        ):
            if case.return_count or case.extension_count or case.rework_count:
                continue
            if s.scalar(
                select(func.count())
                .select_from(ApprovalRequest)
                .where(ApprovalRequest.case_id == case.id)
            ):
                continue
            lim = wt.resolve_limit(s, "handle", case.category_id, case.urgency).limit
            assert case.dispatched_at is not None
            assert case.handle_deadline == clock.deadline(case.dispatched_at, lim).due_at
            checked += 1
        assert checked > 50
        # case numbers continue the day's counter: a new report gets the next one
        last = s.scalar(select(func.max(Case.number)).where(Case.number.like("20261118%")))
        assert last is not None
        op = principal(s, "operator1")
        cat_id = s.scalar(select(Case.category_id).where(Case.id == ids[0]))
        lon, lat = s.execute(select(Case.lon, Case.lat).where(Case.id == ids[0])).one()
        t = datetime(2026, 11, 18, 8, 0, tzinfo=UTC)
        new = service.create_case(
            s,
            op,
            {
                "source": "hotline",
                "category_id": cat_id,
                "description": "x",
                "lon": lon,
                "lat": lat,
            },
            t,
        ).case
        assert int(new.number) == int(last) + 1


def test_bulk_mode_is_deterministic(templates, city_template) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for label in ("a", "b"):
        url = templates.clone(city_template, f"det{label}")
        d = Database(url)
        try:
            simulate_cases(
                d, 2, 30, seed=3, start=START, mode="bulk", progress=None, final_tick=False
            )
            with d.session() as s:
                cols = (Case.number, Case.stage, Case.source, Case.category_id, Case.reported_at,
                        Case.closed_at, Case.handle_deadline, Case.lead_unit_id)  # fmt: skip
                rows.append(s.execute(select(*cols).order_by(Case.id)).all())
        finally:
            d.dispose()
            templates.drop(url)
    assert rows[0] == rows[1] and len(rows[0]) > 40


def _replay(s: Session, case: dict[str, Any], events: list[dict[str, Any]]) -> int:
    """Replay one bulk history through the workflow; returns the new case's id."""
    store = LocalStorage(get_settings().var_dir / "replay")

    def upload(who: Any) -> int:
        return int(queries.upload(s, who, store, "p.jpg", "image/jpeg", photo())["id"])

    # the inspectors of 核实 / 核查 are passed explicitly (as a centre user may)
    later_assignee = case["assignee_user_id"]
    cid = 0
    for k, e in enumerate(events):
        a, t, note, data = e["action"], e["at"], e["note"], e["data"] or {}
        who = principal(s, e["actor_name"]) if e["actor_id"] else None
        if a == "report":
            payload = {
                "source": case["source"],
                "category_id": case["category_id"],
                "description": case["description"],
                "lon": case["lon"],
                "lat": case["lat"],
                "address": case["address"],
                "urgency": case["urgency"],
                "reporter_name": case["reporter_name"],
                "reporter_phone": case["reporter_phone"],
            }
            assert who is not None
            if case["source"] == "self":
                payload["attachment_ids"] = [upload(who)]
            cid = service.create_case(s, who, payload, t).case.id
            continue
        if who is None:  # the system's own steps (automatic 受理/立案/派遣) happen inside others
            continue
        nxt = [x for x in events[k + 1 :] if x["action"] in ("verify", "check", "rework")]
        insp = nxt[0]["actor_id"] if nxt else later_assignee
        if a in ("check", "rework"):
            p = {"passed": a == "check", "note": note, "attachment_ids": [upload(who)]}
            act = "check"
        elif a == "handle":
            p = {"note": note, "attachment_ids": [upload(who)], "inspector_id": insp}
            act = "handle"
        elif a == "accept":
            p, act = {"inspector_id": insp}, "accept"
        elif a in ("reject", "void"):
            p, act = {"reason": note}, a
        elif a == "verify":
            p, act = {"confirmed": data["confirmed"], "note": note}, "verify"
        elif a == "dispatch":
            p, act = (
                {"unit_id": data["lead_unit_id"], "co_unit_ids": data["co_unit_ids"], "note": note},
                "dispatch",
            )
        elif a.startswith("request_"):
            kind = a.split("_", 1)[1]
            p = {"reason": note}
            if kind == "extend":
                p.update(amount=data["amount"], unit=data["unit"])
            act = {
                "return": "request_return",
                "extend": "request_extension",
                "park": "request_park",
            }[kind]
        elif a.startswith("decide_"):
            kind = a.split("_", 1)[1]
            p = {"approve": data["approve"], "note": note}
            act = {"return": "decide_return", "extend": "decide_extension", "park": "decide_park"}[
                kind
            ]
        elif a in ("file", "sign", "close", "resume", "supervise"):
            p, act = ({"note": note} if note else {}), a
        else:  # scheduler events (near_due, overdue, escalate) are not workflow actions
            continue
        service.perform(s, who, cid, act, p, None, t)
    return cid


COMPARED = (
    "stage", "source", "case_type", "category_id", "urgency", "lon", "lat", "h3", "grid_id", "grid_code",
    "component_id", "reported_at", "accepted_at", "verified_at", "filed_at", "dispatched_at",
    "signed_at", "handled_at", "checked_at", "closed_at", "handle_deadline", "stage_started_at",
    "stage_deadline", "stage_warn_at", "paused_since", "pending_request", "parked", "extended",
    "extension_count", "return_count", "rework_count", "handled_late", "close_type", "end_reason",
    "lead_unit_id", "assignee_user_id", "reporter_name", "description",
    "accepted_by_id", "filed_by_id", "dispatched_by_id", "dispatch_stage_at",
)  # fmt: skip


def test_bulk_histories_replay_through_the_service(city: Database) -> None:
    """Every bulk history, replayed through ``service.create_case``/``perform`` with the same
    times, actors and payloads, ends in the same case row: bulk mode is the workflow's
    arithmetic, not an approximation of it."""
    summary = simulate_cases(
        city, days=2, per_day=45, seed=4, start=START, mode="bulk", progress=None, final_tick=False
    )
    ids = _run_ids(summary)
    with city.session() as s:
        cases = {c.id: {k: getattr(c, k) for k in (*COMPARED, "id", "number", "address", "reporter_phone")}
                 for c in s.scalars(select(Case).where(Case.id.in_(ids)))}  # fmt: skip
        events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for e in s.scalars(
            select(CaseEvent).where(CaseEvent.case_id.in_(ids)).order_by(CaseEvent.at, CaseEvent.id)
        ):
            events[e.case_id].append(
                {
                    k: getattr(e, k)
                    for k in ("action", "at", "actor_id", "actor_name", "note", "data")
                }
            )
        # repeated reports (合并 / video repeats) depend on other cases: replayed cases are
        # the ones that stand alone; machine channels would merge into neighbours
        alone = [
            cid for cid, c in cases.items()
            if c["source"] not in ("video", "iot") and not any(e["action"] in ("merge", "merged_in", "repeat") for e in events[cid])
        ]  # fmt: skip
        assert len(alone) > 60
        # start again from an empty case table, same city
        for model in (Notification, CaseEvent, CaseUnit, ApprovalRequest, CaseAttachment):
            s.execute(delete(model))
        s.execute(update(Case).values(duplicate_of_id=None))
        s.execute(delete(Case))
        s.execute(delete(CaseSequence))
    mismatches: list[str] = []
    with city.session() as s:
        for cid in sorted(alone):
            new = s.get(Case, _replay(s, cases[cid], events[cid]))
            assert new is not None
            for k in COMPARED:
                if getattr(new, k) != cases[cid][k]:
                    mismatches.append(
                        f"{cases[cid]['number']} {k}: bulk {cases[cid][k]!r}, service {getattr(new, k)!r}"
                    )
    assert mismatches == []


def test_large_loads_rebuild_indexes_and_keys_once(
    city: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large load drops the secondary indexes (and on PostgreSQL the foreign keys) and
    restores them; a load interrupted in between is repaired by the next run."""
    from sqlalchemy import inspect as sa_inspect

    from cityops.cases import simulate as sim

    def present(s: Session) -> tuple[set[str], set[str]]:
        insp = sa_inspect(s.connection())
        ixs = {ix["name"] for t in ("cases", "case_events") for ix in insp.get_indexes(t)}
        fks = {
            fk["name"]
            for t in ("cases", "case_events", "case_units", "case_approvals")
            for fk in insp.get_foreign_keys(t)
        }
        return {str(n) for n in ixs}, {str(n) for n in fks}

    wanted_ix = {str(ix.name) for ix in sim.deferrable_indexes()}
    wanted_fk = {str(fk.name) for fk in sim.deferrable_foreign_keys()}
    monkeypatch.setattr(sim, "DEFER_CHECKS_FROM", 10)
    summary = simulate_cases(
        city,
        2,
        40,
        seed=2,
        start=START,
        mode="bulk",
        progress=None,
        final_tick=False,
        batch_cases=30,
    )
    with city.session() as s:
        ixs, fks = present(s)
        assert wanted_ix <= ixs
        if s.get_bind().dialect.name == "postgresql":
            assert wanted_fk <= fks
        else:
            assert s.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert check_history(s, _run_ids(summary)) == []
        sim.drop_checks(s.connection())  # as if a load had been killed half-way
    with city.session() as s:
        assert not wanted_ix & present(s)[0]
    monkeypatch.setattr(sim, "DEFER_CHECKS_FROM", 10**9)
    simulate_cases(
        city, 1, 5, seed=3, start=date(2026, 11, 20), mode="bulk", progress=None, final_tick=False
    )
    with city.session() as s:
        ixs, fks = present(s)
        assert wanted_ix <= ixs
        if s.get_bind().dialect.name == "postgresql":
            assert wanted_fk <= fks


# --------------------------------------------------------------------------- pieces


def test_vector_clock_equals_the_work_clock(city: Database) -> None:
    with city.session() as s:
        clock = wt.get_clock(s)
        vc = VectorClock.of(s)
    rng = np.random.default_rng(1)
    base = to_us(datetime(2026, 1, 1, tzinfo=UTC))
    t = base + rng.integers(0, 400 * 86_400_000_000, 400)
    t[:5] = [to_us(datetime(2026, 11, 17, 4, 0, tzinfo=UTC))] * 5  # 12:00 local: end of a period
    for unit, amounts in (
        ("natural_minutes", [30.0, 10.0]),
        ("natural_hours", [2.0, 1.0]),
        ("working_hours", [4.0, 0.5, 9.0]),
        ("working_days", [0.5, 1.0, 15.0]),
    ):
        from cityops.cases.simulate import UNIT_INDEX

        for amount in amounts:
            u = np.full(len(t), UNIT_INDEX[unit])
            got = vc.add(t, np.full(len(t), amount), u)
            want = [to_us(clock.add(to_dt(x), amount, unit)) for x in t.tolist()]
            assert got.tolist() == want, (unit, amount)
            due = [clock.deadline(to_dt(x), (amount, unit)).due_at for x in t.tolist()]
            assert got.tolist() == [to_us(d) for d in due if d is not None]
            el = vc.elapsed(t, got, u)
            assert np.allclose(
                el,
                [
                    clock.elapsed(to_dt(a), to_dt(b), unit=unit)
                    for a, b in zip(t.tolist(), got.tolist(), strict=True)
                ],
            )


def test_timestamp_text_is_what_sqlalchemy_stores(city: Database) -> None:
    t = np.array(
        [
            to_us(datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC)),
            NONE_T,
            to_us(datetime(2000, 1, 1, tzinfo=UTC)),
        ]
    )
    assert ts_strings(t) == ["2026-01-02 03:04:05.000007", None, "2000-01-01 00:00:00.000000"]
    assert decode(c_time(t)) == ts_strings(t)
    assert decode(c_text(["a", None, "", "b\x1fc"])) == ["a", None, "", "b\x1fc"]
    assert LOCAL_OFFSET == 8 * 60 * MINUTE
    from sqlalchemy import Column, Integer, MetaData, Table, insert

    from cityops.core.types import UTCDateTime

    with city.session() as s:
        conn = s.connection()
        tmp = Table(
            "tmp_sim_ts",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("at", UTCDateTime()),
        )
        tmp.create(conn)
        conn.execute(insert(tmp).values(id=1, at=to_dt(int(t[0]))))
        raw = conn.exec_driver_sql("SELECT CAST(at AS TEXT) FROM tmp_sim_ts").scalar_one()
        tmp.drop(conn)
        if conn.dialect.name == "sqlite":
            assert raw == ts_strings(t)[0]
        else:  # PostgreSQL prints without trailing zeros; the value is what matters
            assert raw == "2026-01-02 03:04:05.000007"


def test_invalid_arguments_are_refused(city: Database, db: Database) -> None:
    from cityops.core.errors import Invalid

    with pytest.raises(Invalid, match="mode"):
        simulate_cases(city, 1, 1, mode="fast", progress=None)
    with pytest.raises(Invalid, match="at least 1"):
        simulate_cases(city, 0, 10, progress=None)
    with pytest.raises(Invalid, match="no unit grids"):
        simulate_cases(db, 1, 5, progress=None)


# --------------------------------------------------------------------------- CLI


def _cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    import typer
    from typer.testing import CliRunner

    from cityops.cases.cli import import_cases_command, simulate_app

    # the registration documented for cityops/cli/main.py
    app = typer.Typer()
    import_app = typer.Typer()
    app.add_typer(import_app, name="import")
    import_app.command("grids")(lambda: None)
    app.add_typer(simulate_app, name="simulate")
    import_app.command("cases")(import_cases_command)
    monkeypatch.setenv("CITYOPS_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        return contextvars.copy_context().run(CliRunner().invoke, app, list(args))
    finally:
        monkeypatch.delenv("CITYOPS_DATABASE_URL")
        get_settings.cache_clear()


def test_cli_simulate_cases(city: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _cli(city.url, monkeypatch, "simulate", "cases", "--days", "1", "--per-day", "12", "--mode", "bulk",
               "--start", "2026-11-16", "--seed", "2")  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["mode"] == "bulk" and out["reports"] == 12 and out["cases"] >= 10
    assert "[simulate bulk]" in res.stderr
    res = _cli(city.url, monkeypatch, "simulate", "cases", "--days", "1", "--per-day", "4",
               "--start", "2026-11-17", "--tick-minutes", "0")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["mode"] == "service"
    res = _cli(city.url, monkeypatch, "simulate", "cases", "--mode", "fast")
    assert res.exit_code == 2 and "--mode must be service or bulk" in res.stderr
    res = _cli(city.url, monkeypatch, "simulate", "cases", "--start", "17.11.2026")
    assert res.exit_code == 2 and "not a date" in res.stderr
    with city.session() as s:
        assert check_history(s) == []
        assert (s.scalar(select(func.count()).select_from(Case)) or 0) >= 14


def test_cli_refuses_an_unmigrated_database(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = _cli(f"sqlite:///{tmp_path / 'none.db'}", monkeypatch, "simulate", "cases", "--days", "1")
    assert res.exit_code == 2 and "cityops migrate" in res.stderr

"""The intake writer (cityops.cases.intake): concurrent HTTP intakes are group-committed,
each gets its own number or its own error, nothing is lost or half-written, and the Core
write path leaves exactly what the ORM path (service.create_case) leaves: history,
units, notifications, deadlines, audit rows and evaluation rollups (== a rebuild)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cityops.cases import intake, service
from cityops.cases.models import Case, CaseEvent, CaseUnit, Notification
from cityops.core.audit import AuditLog
from cityops.core.errors import Forbidden, Invalid, NotFound
from cityops.evaluation import rollup
from cityops.evaluation import service as ev
from tests.factories import matter_category, point_in, principal

PW = "demo-pass-2026"
T0 = datetime(2026, 11, 17, 2, 0, tzinfo=UTC)  # 10:00 local, a Tuesday


def login(client: Any, username: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/login", json={"username": username, "password": PW})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def _spots(city: Any) -> tuple[list[tuple[float, float]], int, str]:
    """Points in different grids (far apart: no duplicates between them), a category."""
    from cityops.geo.models import Grid

    with city.session() as s:
        grids = s.scalars(select(Grid).order_by(Grid.code)).all()
        pts = [point_in(g) for g in grids[::7][:12]]
        cat = matter_category(s)
        service.set_auto_file_sources(s, ["inspector", "iot"])
        return pts, cat.id, cat.code


def _counts(s: Any) -> dict[str, int]:
    return {
        m.__tablename__: int(s.scalar(select(func.count()).select_from(m)))
        for m in (Case, CaseEvent, CaseUnit, Notification)
    }


def test_concurrent_http_intakes_distinct_numbers_own_errors_nothing_lost(
    city: Any, city_client: Any
) -> None:
    pts, cat_id, cat_code = _spots(city)
    insp = login(city_client, "inspector1")
    with city.session() as s:
        before = _counts(s)
        audit_before = s.scalar(select(func.count()).select_from(AuditLog))

    good = [
        {
            "source": "inspector",
            "category_code": cat_code,
            "description": f"巡查发现暴露垃圾 {i}",
            "lon": pts[i % len(pts)][0],
            "lat": pts[i % len(pts)][1],
        }
        for i in range(24)
    ]
    bad = [
        # unknown category → 422 naming the field
        ({**good[0], "category_code": "99999"}, 422, "category_code"),
        # outside every grid → 404
        ({**good[0], "lon": 100.0, "lat": 20.0}, 404, None),
        # an inspector may not report from the hotline channel → 403
        ({**good[0], "source": "hotline"}, 403, None),
        # urgency not in the list → 422
        ({**good[0], "urgency": "马上"}, 422, "urgency"),
    ]
    bodies: list[tuple[dict[str, Any], int, str | None]] = [(b, 201, None) for b in good]
    for i, b in enumerate(bad):
        bodies.insert(3 + i * 6, b)

    def post(item: tuple[dict[str, Any], int, str | None]) -> tuple[Any, int, str | None]:
        body, want, fld = item
        return city_client.post("/api/v1/cases", headers=insp, json=body), want, fld

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, bodies))

    numbers = []
    for r, want, fld in answers:
        assert r.status_code == want, r.text
        if want == 201:
            case = r.json()["case"]
            numbers.append(case["number"])
            # auto-filed (inspector channel) and auto-dispatched: the full detail comes back
            assert case["stage"] in ("sign", "dispatch")
            assert [h["action"] for h in case["history"]][:3] == ["report", "accept", "file"]
        elif fld is not None:
            assert r.json()["details"]["field"] == fld
    assert len(numbers) == 24 and len(set(numbers)) == 24
    day = T0.astimezone(service.TZ)  # numbers are the local date + a 5-digit sequence
    assert all(len(n) == 13 and n.isdigit() for n in numbers)
    seqs = sorted(int(n[8:]) for n in numbers)
    assert seqs == list(range(seqs[0], seqs[0] + 24)), "no gaps on SQLite, no repeats anywhere"
    del day

    # the answer (built from the rows written, not read back) is the case detail of GET
    def same_as_get(answer: dict[str, Any], headers: dict[str, str]) -> None:
        got = city_client.get(f"/api/v1/cases/{answer['id']}", headers=headers).json()
        for d in (answer, got):
            d.pop("minutes_left")
        assert answer == got

    same_as_get(answers[0][0].json()["case"], insp)
    op = login(city_client, "operator1")
    r = city_client.post(
        "/api/v1/cases",
        headers=op,
        json={
            "source": "hotline",
            "category_id": cat_id,
            "description": "市民反映垃圾",
            "lon": pts[1][0],
            "lat": pts[1][1],
            "reporter_name": "王小明",
            "reporter_phone": "13812345678",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["case"]["stage"] == "accept"
    assert r.json()["case"]["reporter"] == {"name": "王小明", "phone": "13812345678"}
    same_as_get(r.json()["case"], op)

    # the intake endpoint caches token → user, but a logout in this process ends it at once
    r = city_client.post("/api/v1/auth/logout", headers=op)
    assert r.status_code in (200, 204), r.text
    r = city_client.post("/api/v1/cases", headers=op, json={**good[0], "source": "hotline"})
    assert r.status_code == 401, r.text

    with city.session() as s:
        after = _counts(s)
        assert after["cases"] == before["cases"] + 25  # nothing of the refused ones
        rows = s.scalars(select(Case).where(Case.number.in_(numbers))).all()
        assert len(rows) == 24
        for c in rows:
            evs = s.scalars(
                select(CaseEvent.action).where(CaseEvent.case_id == c.id).order_by(CaseEvent.id)
            ).all()
            want = ["report", "accept", "file"] + (["dispatch"] if c.lead_unit_id else [])
            assert evs == want
            assert c.stage == ("sign" if c.lead_unit_id else "dispatch")
        # one audit row per case created, by the reporting inspector
        audit = s.execute(
            select(AuditLog.entity_id, AuditLog.actor_name).where(
                AuditLog.entity == "cases", AuditLog.action == "create"
            )
        ).all()
        by_case = {e: a for e, a in audit}
        assert all(by_case.get(str(c.id)) == "inspector1" for c in rows)
        assert s.scalar(select(func.count()).select_from(AuditLog)) > audit_before + 24

        # the rollups kept by the batches equal a rebuild from history
        counts = ev.all_counts(s)
        assert counts, "the intakes moved counters (上报数, 立案, 应处置数)"
        rollup.rebuild(s)
        assert ev.all_counts(s) == counts


def _prepared(s: Any, who: str, lon: float, lat: float, cat: int, t: datetime, **kw: Any) -> Any:
    data = {"category_id": cat, "description": "井盖旁暴露垃圾", "lon": lon, "lat": lat, **kw}
    return intake.prepare(s, principal(s, who), data, t)


def test_core_path_writes_what_the_orm_path_writes(city: Any) -> None:
    """Same report through service.create_case and through prepare + write_core: the same
    case fields, history, units, notifications, and rollup counters."""
    pts, cat_id, _ = _spots(city)
    (x1, y1), (x2, y2) = pts[0], pts[5]
    with city.session() as s:
        p = principal(s, "inspector1")
        orm = service.create_case(
            s, p, {"category_id": cat_id, "description": "井盖旁暴露垃圾", "lon": x1, "lat": y1}, T0
        ).case
        orm_id = orm.id
    with city.session() as s:
        prep = _prepared(s, "inspector1", x2, y2, cat_id, T0)
        s.rollback()
        results: dict[int, intake.Result] = {}
        intake.write_core(s, [prep], results)
        core_id = results[id(prep)].case_id
    with city.session() as s:
        a, b = s.get(Case, orm_id), s.get(Case, core_id)
        assert a is not None and b is not None
        for col in (
            "source",
            "case_type",
            "category_id",
            "urgency",
            "stage",
            "stage_started_at",
            "stage_deadline",
            "stage_warn_at",
            "accepted_at",
            "filed_at",
            "dispatched_at",
            "handle_deadline",
            "lead_unit_id",
            "reporter_user_id",
            "reporter_name",
            "report_count",
        ):
            assert getattr(a, col) == getattr(b, col), col
        assert a.stage == "sign" and a.lead_unit_id is not None  # a rule or default dispatched

        def hist(cid: int) -> list[tuple[Any, ...]]:
            return [
                (
                    e.action,
                    e.actor_id,
                    e.actor_name,
                    e.from_stage,
                    e.to_stage,
                    e.unit_id,
                    e.note,
                    e.data,
                )
                for e in s.scalars(
                    select(CaseEvent).where(CaseEvent.case_id == cid).order_by(CaseEvent.id)
                )
            ]

        assert hist(orm_id) == hist(core_id)
        assert [(u.unit_id, u.role) for u in a.units] == [(u.unit_id, u.role) for u in b.units]

        def notes(c: Case) -> list[tuple[Any, ...]]:
            return sorted(
                (n.user_id, n.kind, n.title.replace(c.number, "N"), n.body)
                for n in s.scalars(select(Notification).where(Notification.case_id == c.id))
            )

        assert notes(a) == notes(b) and notes(a)
        # both cases' facts: the same metrics, on the same days and people
        facts = {
            cid: sorted((f.metric, f.day, f.unit_id, f.user_id) for f in rollup.replay(s, [cid]))
            for cid in (orm_id, core_id)
        }
        assert facts[orm_id] == facts[core_id] and facts[orm_id]
        counts = ev.all_counts(s)
        rollup.rebuild(s)
        assert ev.all_counts(s) == counts


def test_duplicates_and_machine_merge_within_one_batch(city: Any) -> None:
    """Intakes of one batch see each other: a report 10 m from an earlier one of the same
    batch lists it as a duplicate, and an IoT alarm there is merged into it."""
    pts, cat_id, _ = _spots(city)
    x, y = pts[2]
    db = city
    with db.session() as s:
        first = _prepared(s, "inspector1", x, y, cat_id, T0)
        second = _prepared(s, "inspector1", x + 0.0001, y, cat_id, T0)  # ~9 m east
        far = _prepared(s, "inspector1", *pts[8], cat_id, T0)
        alarm = intake.prepare(
            s,
            principal(s, "operator1"),
            {
                "source": "iot",
                "category_id": cat_id,
                "description": "传感器告警",
                "lon": x,
                "lat": y,
            },
            T0,
        )
        assert alarm.orm  # machine channels take the ORM path (merge)
    b = intake.IntakeBatcher(db)
    jobs = [intake._Job(p, intake.Future()) for p in (first, second, far, alarm)]
    b._write_batch(db, jobs)
    r1, r2, r3, r4 = (j.future.result(5) for j in jobs)
    assert r1.duplicates == []
    assert [d["id"] for d in r2.duplicates] == [r1.case_id]
    assert r3.duplicates == []
    assert r4.merged and r4.case_id in (r1.case_id, r2.case_id)
    with db.session() as s:
        target = s.get(Case, r4.case_id)
        assert target is not None and target.report_count == 2
        assert s.scalar(select(func.count()).select_from(Case)) == 3


def test_a_failing_intake_spoils_nothing_else(city: Any) -> None:
    """A write error of one intake (here: a grid that does not exist) rolls back the batch;
    the others are written alone and succeed, the failing one gets its own error and
    leaves no row anywhere."""
    pts, cat_id, _ = _spots(city)
    with city.session() as s:
        ok1 = _prepared(s, "inspector1", *pts[0], cat_id, T0)
        broken = _prepared(s, "inspector1", *pts[3], cat_id, T0)
        ok2 = _prepared(s, "inspector1", *pts[6], cat_id, T0)
        before = _counts(s)
    broken.case["grid_id"] = 987654321  # violates the foreign key at insert
    b = intake.IntakeBatcher(city)
    jobs = [intake._Job(p, intake.Future()) for p in (ok1, broken, ok2)]
    b._write_batch(city, jobs)
    assert isinstance(jobs[1].future.exception(5), IntegrityError)
    r1, r3 = jobs[0].future.result(5), jobs[2].future.result(5)
    with city.session() as s:
        after = _counts(s)
        assert after["cases"] == before["cases"] + 2
        assert after["case_events"] == before["case_events"] + sum(
            len(p.events) for p in (ok1, ok2)
        )
        nums = {s.get(Case, r.case_id).number for r in (r1, r3)}  # type: ignore[union-attr]
        assert len(nums) == 2
        counts = ev.all_counts(s)
        rollup.rebuild(s)
        assert ev.all_counts(s) == counts


def test_refusals_are_raised_before_anything_is_queued(city: Any) -> None:
    pts, cat_id, _ = _spots(city)
    with city.session() as s:
        with pytest.raises(Invalid) as e:
            _prepared(s, "inspector1", *pts[0], 999_999, T0)
        assert e.value.details["field"] == "category_code"
        with pytest.raises(NotFound):
            _prepared(s, "inspector1", 100.0, 20.0, cat_id, T0)
        with pytest.raises(Forbidden):
            _prepared(s, "inspector1", *pts[0], cat_id, T0, source="hotline")


def test_config_snapshot_follows_a_rule_change_at_once(city: Any) -> None:
    """A dispatch rule saved in this process is used by the very next intake."""
    from cityops.cases import dispatch_rules
    from cityops.geo.models import Unit

    pts, cat_id, _ = _spots(city)
    with city.session() as s:
        p1 = _prepared(s, "inspector1", *pts[0], cat_id, T0)
        unit = s.scalars(
            select(Unit.id).where(Unit.active.is_(True), Unit.id != p1.case["lead_unit_id"])
        ).first()
        assert unit is not None
    with city.session() as s:
        dispatch_rules.save_rule(
            s, None, {"name": "测试规则", "category_id": cat_id, "unit_id": unit, "priority": 1}
        )
    with city.session() as s:
        p2 = _prepared(s, "inspector1", *pts[0], cat_id, T0)
        assert p2.case["lead_unit_id"] == unit
        # and the snapshot's choice is the service's choice
        c = Case(category_id=cat_id, grid_code=p2.case["grid_code"], component_id=None)
        m = service.match_rule(s, c, T0)
        assert m is not None and m[0] == unit


def test_duplicates_from_earlier_cases_up_to_50_metres_in_every_direction(city: Any) -> None:
    """An open case of the same category written earlier is listed as a duplicate of new
    reports up to 50 m away east, north or diagonally, not at 56 m nor in another category;
    the batch finds the same as the workflow's own duplicate search."""
    import math

    from cityops.geo.crs import distance_m

    pts, cat_id, _ = _spots(city)
    x, y = pts[3]
    dy = 1 / 111_320  # about one metre north, and east at this latitude
    dx = dy / math.cos(math.radians(y))
    spots = {
        "east 45": (x + 45 * dx, y),
        "north 48": (x, y + 48 * dy),
        "south-west 46": (x - 32.5 * dx, y - 32.5 * dy),
        "east 56": (x + 56 * dx, y),
    }
    for name, (lon, lat) in spots.items():
        assert abs(distance_m(x, y, lon, lat) - int(name.split()[-1])) < 1.5, name
    b = intake.IntakeBatcher(city)
    with city.session() as s:
        base = _prepared(s, "inspector1", x, y, cat_id, T0)
        other_cat = matter_category(s, "占道").id
        assert other_cat != cat_id
    job = intake._Job(base, intake.Future())
    b._write_batch(city, [job])
    first = job.future.result(5).case_id
    with city.session() as s:
        later = [_prepared(s, "inspector1", lon, lat, cat_id, T0) for lon, lat in spots.values()]
        later.append(_prepared(s, "inspector1", x, y, other_cat, T0))
    jobs = [intake._Job(p, intake.Future()) for p in later]
    b._write_batch(city, jobs)
    found = [[d["id"] for d in j.future.result(5).duplicates] for j in jobs]
    assert [first in f for f in found] == [True, True, True, False, False]
    with city.session() as s:  # the workflow's own search agrees
        for name, (lon, lat) in spots.items():
            ids = [c.id for c in service.find_duplicates(s, cat_id, lon, lat, T0)]
            assert (first in ids) == (name != "east 56"), name

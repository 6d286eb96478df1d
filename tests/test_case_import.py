"""Import of legacy cases (cityops.cases.legacy_import): round trips, every kind of bad row
(with file, row, field, value), nothing written on an error, ``--skip-invalid``, the CLI; the
fast paths (CSV splitting, timestamp matrix, batched write, deferred checks) against the
general ones."""

from __future__ import annotations

import contextvars
import csv
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from cityops.cases import legacy_import, service
from cityops.cases import simulate as sim
from cityops.cases.legacy_import import FIELDS, import_cases, parse_times
from cityops.cases.models import Case, CaseEvent, CaseUnit
from cityops.core.audit import AuditLog
from cityops.core.db import Database
from cityops.core.settings import get_settings
from cityops.core.tabular import TabularInput, read_csv
from cityops.geo import crs as crsmod
from cityops.geo.models import Component, Grid, Unit
from cityops.geo.service import locate
from cityops.worktime import service as wt
from cityops.worktime.service import TZ
from tests.factories import point_in, principal
from tests.test_simulate import check_history

Row = dict[str, Any]


def _facts(s: Session) -> dict[str, Any]:
    grids = s.scalars(select(Grid).order_by(Grid.code)).all()
    comp = s.scalars(
        select(Component).where(Component.code.like("%01001%")).order_by(Component.id)
    ).first()
    assert comp is not None
    units = {u.code: u.id for u in s.scalars(select(Unit))}
    return {
        "p1": point_in(grids[3]),
        "p2": point_in(grids[40]),
        "p3": point_in(grids[-5]),
        "component": comp,
        "units": units,
        "grid_codes": [grids[3].code, grids[40].code, grids[-5].code],
    }


def good_rows(s: Session) -> list[Row]:
    """Seven legacy cases, one of each kind (local times, March 2025)."""
    f = _facts(s)
    (x1, y1), (x2, y2), (x3, y3) = f["p1"], f["p2"], f["p3"]
    gx, gy = crsmod.from_wgs84(x3, y3, "gcj02")
    comp = f["component"]
    return [
        {  # 1 closed, complete, 正常
            "number": "2025031700007", "source": "inspector", "category_code": "06010",
            "description": "巡查发现暴露垃圾", "address": "老城区某路", "lon": x1, "lat": y1,
            "stage": "closed", "reported_at": "2025-03-17 09:00:00", "accepted_at": "2025-03-17 09:05:00",
            "filed_at": "2025-03-17 09:10:00", "dispatched_at": "2025-03-17 09:10:00",
            "signed_at": "2025-03-17 09:30:00", "handled_at": "2025-03-17 11:00:00",
            "checked_at": "2025-03-17 11:20:00", "closed_at": "2025-03-17 11:40:00",
            "lead_unit_code": "341602-HWS", "close_type": "正常",
        },
        {  # 2 open 待处置 (Chinese labels), verified, a co-unit
            "number": "HIS-2025-0002", "source": "12345热线", "category_code": "06010",
            "description": "市民反映垃圾", "lon": x2, "lat": y2, "stage": "待处置",
            "reported_at": "2025-03-17T10:00:00+08:00", "accepted_at": "2025-03-17 10:02",
            "verified_at": "2025-03-17 10:30", "filed_at": "2025/03/17 10:40",
            "dispatched_at": "2025-03-17 10:45", "signed_at": "2025-03-17 11:00",
            "lead_unit_code": "341602-HWS", "co_unit_codes": "341602-ZFDD", "reporter_name": "王小明",
            "reporter_phone": "13812345678",
        },
        {  # 3 核实不属实 → 作废
            "number": "HIS-2025-0003", "source": "public", "category_code": "09006",
            "description": "占道经营", "lon": x1, "lat": y1, "stage": "作废",
            "reported_at": "2025-03-17 12:00", "accepted_at": "2025-03-17 12:01",
            "verified_at": "2025-03-17 12:30", "end_reason": "现场未发现",
        },
        {  # 4 不予受理
            "number": "HIS-2025-0004", "source": "hotline", "category_code": "09006",
            "description": "不属于城管", "lon": x2, "lat": y2, "stage": "rejected",
            "reported_at": "2025-03-17 13:00", "ended_at": "2025-03-17 13:05",
        },
        {  # 5 待受理, GCJ-02 coordinates
            "number": "HIS-2025-0005", "source": "inspector", "category_code": "06012",
            "description": "道路不洁", "lon": gx, "lat": gy, "crs": "gcj02", "stage": "accept",
            "reported_at": "2025-03-17 14:00:00Z",
        },
        {  # 6 a component (部件) case at 待核查: category code shared with a matter
            "number": "HIS-2025-0006", "source": "inspector", "case_type": "部件", "category_code": "01001",
            "component_code": comp.code, "description": "井盖破损", "lon": comp.lon, "lat": comp.lat,
            "stage": "check", "reported_at": "2025-03-18 09:00", "accepted_at": "2025-03-18 09:01",
            "filed_at": "2025-03-18 09:02", "dispatched_at": "2025-03-18 09:02",
            "signed_at": "2025-03-18 09:10", "handled_at": "2025-03-18 10:00",
            "lead_unit_code": "341602-SZYH", "rework_count": "1",
        },
        {  # 7 closed after its deadline: handled_late, 超时 by default
            "number": "2025031800003", "source": "inspector", "category_code": "06010",
            "description": "暴露垃圾未及时清理", "lon": x3, "lat": y3, "stage": "已结案",
            "reported_at": "2025-03-18 09:00", "accepted_at": "2025-03-18 09:01",
            "filed_at": "2025-03-18 09:02", "dispatched_at": "2025-03-18 09:02",
            "signed_at": "2025-03-18 09:30", "handle_deadline": "2025-03-18 15:02",
            "handled_at": "2025-03-19 10:00", "checked_at": "2025-03-19 10:30",
            "closed_at": "2025-03-19 11:00", "lead_unit_code": "341602-HWS", "supervised": "true",
        },
    ]  # fmt: skip


COLUMNS = (
    "number", "tracking_code", "source", "case_type", "category_code", "urgency", "description",
    "address", "lon", "lat", "crs", "reporter_name", "reporter_phone", "component_code", "stage",
    "reported_at", "accepted_at", "verified_at", "filed_at", "dispatched_at", "signed_at",
    "handled_at", "checked_at", "closed_at", "ended_at", "handle_deadline", "lead_unit_code",
    "co_unit_codes", "close_type", "handled_late", "supervised", "rework_count", "end_reason",
)  # fmt: skip


def write_file(path: Path, rows: list[Row], columns: tuple[str, ...] = COLUMNS) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), "utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def counts(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return (
            int(s.scalar(select(func.count()).select_from(Case)) or 0),
            int(s.scalar(select(func.count()).select_from(CaseEvent)) or 0),
            int(s.scalar(select(func.count()).select_from(CaseUnit)) or 0),
        )


def _utc(local: str) -> datetime:
    return datetime.fromisoformat(local).replace(tzinfo=TZ).astimezone(UTC)


# --------------------------------------------------------------------------- good files


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_good_file_round_trips(city: Database, tmp_path: Path, suffix: str) -> None:
    with city.session() as s:
        rows = good_rows(s)
        facts = _facts(s)
    path = write_file(tmp_path / f"legacy{suffix}", rows)
    with city.session() as s:
        report = import_cases(s, path)
        assert report.ok, report.to_text()
        assert (report.total, report.written, report.skipped) == (7, 7, 0)
    units = facts["units"]
    with city.session() as s:
        cases = {c.number: c for c in s.scalars(select(Case))}
        assert set(cases) == {r["number"] for r in rows}
        c1 = cases["2025031700007"]
        assert c1.stage == "closed" and c1.close_type == "正常" and not c1.handled_late
        assert c1.reported_at == _utc("2025-03-17 09:00:00") and c1.closed_at == _utc(
            "2025-03-17 11:40:00"
        )
        assert c1.lead_unit_id == units["341602-HWS"]
        assert c1.grid_code == facts["grid_codes"][0] and c1.stage_deadline is None
        history = s.scalars(
            select(CaseEvent).where(CaseEvent.case_id == c1.id).order_by(CaseEvent.at, CaseEvent.id)
        ).all()
        assert [e.action for e in history] == [
            "report",
            "accept",
            "file",
            "dispatch",
            "sign",
            "handle",
            "check",
            "close",
        ]
        assert {e.actor_name for e in history} == {"import"}
        c2 = cases["HIS-2025-0002"]
        assert (
            c2.stage == "handle" and c2.source == "hotline" and c2.reporter_phone == "13812345678"
        )
        assert c2.reported_at == _utc("2025-03-17 10:00:00") and c2.filed_at == _utc(
            "2025-03-17 10:40:00"
        )
        assert {(u.unit_id, u.role) for u in c2.units} == {
            (units["341602-HWS"], "lead"),
            (units["341602-ZFDD"], "co"),
        }
        # the open stage's clock is what the workflow would have set
        clock = wt.get_clock(s)
        lim = wt.resolve_limit(s, "handle", c2.category_id, c2.urgency).limit
        assert c2.dispatched_at and c2.signed_at and c2.handle_deadline
        assert c2.handle_deadline == clock.deadline(c2.dispatched_at, lim).due_at
        assert c2.stage_deadline == c2.handle_deadline
        assert c2.stage_warn_at == service._warn_before(s, c2, c2.handle_deadline, c2.signed_at)
        assert c2.stage_started_at == c2.signed_at and not c2.overdue
        c3 = cases["HIS-2025-0003"]
        assert c3.stage == "void" and c3.end_reason == "现场未发现"
        assert [
            e.to_stage
            for e in s.scalars(
                select(CaseEvent).where(CaseEvent.case_id == c3.id).order_by(CaseEvent.id)
            )
        ][-1] == "void"
        c4 = cases["HIS-2025-0004"]
        assert c4.stage == "rejected" and c4.stage_started_at == _utc("2025-03-17 13:05")
        c5 = cases["HIS-2025-0005"]
        x, y = facts["p3"]
        assert c5.stage == "accept" and abs(c5.lon - x) < 1e-5 and abs(c5.lat - y) < 1e-5
        assert c5.reported_at == datetime(2025, 3, 17, 14, 0, tzinfo=UTC)
        assert c5.stage_deadline is not None and c5.grid_code == facts["grid_codes"][2]
        c6 = cases["HIS-2025-0006"]
        assert c6.case_type == "component" and c6.component_id == facts["component"].id
        assert c6.stage == "check" and c6.rework_count == 1 and c6.assignee_user_id is not None
        c7 = cases["2025031800003"]
        assert c7.handled_late and c7.close_type == "超时" and c7.supervised
        assert check_history(s) == []
        # the numbers' days moved on: the next case of 2025-03-17 is …00008
        op = principal(s, "operator1")
        new = service.create_case(
            s,
            op,
            {
                "source": "hotline",
                "category_id": c1.category_id,
                "description": "x",
                "lon": x,
                "lat": y,
            },
            _utc("2025-03-17 20:00"),
        ).case
        assert new.number == "2025031700008"
        audit = s.scalars(
            select(AuditLog).where(AuditLog.action == "import", AuditLog.entity == "cases")
        ).all()
        assert len(audit) == 1 and audit[0].after is not None and audit[0].after["written"] == 7
        assert locate(s, c1.lon, c1.lat)["grid"]["code"] == c1.grid_code


def test_json_object_with_cases_key_and_native_values(city: Database, tmp_path: Path) -> None:
    with city.session() as s:
        rows = good_rows(s)[:2]
    rows[1]["co_unit_codes"] = ["341602-ZFDD"]
    rows[0]["rework_count"] = 0
    rows[0]["handled_late"] = False
    rows[0]["address"] = None
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"cases": rows, "exported": "2025"}, ensure_ascii=False), "utf-8")
    with city.session() as s:
        report = import_cases(s, path)
        assert report.ok and report.written == 2, report.to_text()
        assert "objects are numbered" not in report.to_text()  # no errors, no numbering note


def test_json_field_names_missing_keys_and_non_objects(city: Database, tmp_path: Path) -> None:
    """Field names are matched case- and space-insensitively, a missing key is no value, an
    entry that is not an object is a bad row (skipped with --skip-invalid)."""
    with city.session() as s:
        rows = good_rows(s)[:3]
    first = {f" {k.upper()} ": v for k, v in rows[0].items()}
    second = dict(rows[1])
    del second["reporter_phone"]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([first, "not a case", second, rows[2]], ensure_ascii=False), "utf-8")
    with city.session() as s:
        report = import_cases(s, path)
        assert [(e.row, e.field, e.message) for e in report.errors] == [
            (2, "(object)", "not a JSON object")
        ] + [(2, f, f"required field {f!r} is empty") for f in legacy_import.REQUIRED]
        assert report.written == 0
        s.rollback()
    with city.session() as s:
        report = import_cases(s, path, skip_invalid=True)
        assert (report.written, report.invalid_rows) == (3, 1)
    with city.session() as s:
        got = {c.number: c for c in s.scalars(select(Case))}
        assert set(got) == {r["number"] for r in rows}
        assert got[rows[0]["number"]].close_type == "正常"
        assert got[rows[1]["number"]].reporter_phone is None
        assert got[rows[1]["number"]].reporter_name == "王小明"


# --------------------------------------------------------------------------- bad rows

Mutation = Callable[[list[Row]], None]


def _set(i: int, **kw: Any) -> Mutation:
    def run(rows: list[Row]) -> None:
        for k, v in kw.items():
            if v is None:
                rows[i].pop(k, None)
            else:
                rows[i][k] = v

    return run


BAD: list[tuple[str, Mutation, int, str, Any, str]] = [
    ("unknown category", _set(2, category_code="99999"), 3, "category_code", "99999", "unknown category code"),
    ("ambiguous category", _set(5, case_type=None), 6, "category_code", "01001", "give case_type"),
    ("unknown unit", _set(0, lead_unit_code="NO-SUCH"), 1, "lead_unit_code", "NO-SUCH", "unknown unit"),
    ("unknown co-unit", _set(1, co_unit_codes="341602-ZFDD;XX"), 2, "co_unit_codes", "XX", "unknown unit"),
    ("duplicate number", _set(2, number="2025031700007"), 3, "number", "2025031700007", "duplicate case number: also in row 1"),
    ("out of order", _set(0, filed_at="2025-03-17 09:01:00"), 1, "filed_at", "2025-03-17 09:01:00", "is before accepted_at 2025-03-17 09:05:00"),
    ("outside the city", _set(3, lon=100.0, lat=30.0), 4, "lon", "100.0, 30.0", "outside every unit grid of the city"),
    ("bad source", _set(0, source="weibo"), 1, "source", "weibo", "unknown source"),
    ("bad stage", _set(0, stage="done"), 1, "stage", "done", "unknown stage"),
    ("parked stage", _set(1, stage="挂账"), 2, "stage", "挂账", "cannot be imported"),
    ("bad urgency", _set(0, urgency="超急"), 1, "urgency", "超急", "must be one of 特急, 紧急, 一般"),
    ("bad close type", _set(0, close_type="完美"), 1, "close_type", "完美", "must be one of"),
    ("close type of an open case", _set(1, close_type="正常"), 2, "close_type", "正常", "only closed cases"),
    ("bad crs", _set(4, crs="utm50"), 5, "crs", "utm50", "must be one of wgs84"),
    ("bad time", _set(0, reported_at="yesterday"), 1, "reported_at", "yesterday", "not a date-time"),
    ("future time", _set(3, reported_at="2099-01-01 00:00", ended_at=None), 4, "reported_at", "2099-01-01 00:00", "lies in the future"),
    ("stage without its timestamp", _set(1, signed_at=None), 2, "signed_at", None, "stage handle (待处置) needs signed_at"),
    ("timestamp of a later step", _set(5, checked_at="2025-03-18 10:30"), 6, "checked_at", "2025-03-18 10:30", "cannot have checked_at yet"),
    ("dispatched without a unit", _set(6, lead_unit_code=None), 7, "lead_unit_code", None, "needs lead_unit_code"),
    ("bad count", _set(5, rework_count="-1"), 6, "rework_count", "-1", "whole number"),
    ("bad flag", _set(6, supervised="maybe"), 7, "supervised", "maybe", "true or false"),
    ("missing description", _set(2, description=None), 3, "description", None, "required field 'description' is empty"),
    ("deadline before dispatch", _set(6, handle_deadline="2025-03-18 09:00"), 7, "handle_deadline", "2025-03-18 09:00", "is before dispatched_at"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "mutate", "row", "field", "value", "message"), BAD, ids=[b[0] for b in BAD]
)
def test_each_bad_row_is_reported_and_nothing_is_written(
    city: Database,
    tmp_path: Path,
    label: str,
    mutate: Mutation,
    row: int,
    field: str,
    value: Any,
    message: str,
) -> None:
    with city.session() as s:
        rows = good_rows(s)
    mutate(rows)
    path = write_file(tmp_path / "bad.csv", rows)
    before = counts(city)
    with city.session() as s:
        report = import_cases(s, path)
    assert not report.ok and report.written == 0
    hits = [e for e in report.errors if e.row == row and e.field == field and message in e.message]
    assert hits, report.to_text()
    assert hits[0].file == "bad.csv"
    if value is not None:
        assert str(hits[0].value) == str(value)
    text = report.to_text()
    assert "NOTHING written" in text and f'bad.csv: row {row}, field "{field}"' in text
    assert counts(city) == before


def test_number_already_in_the_database(city: Database, tmp_path: Path) -> None:
    with city.session() as s:
        rows = good_rows(s)
    with city.session() as s:
        assert import_cases(s, write_file(tmp_path / "a.csv", rows[:2])).ok
    before = counts(city)
    with city.session() as s:
        report = import_cases(s, write_file(tmp_path / "b.csv", rows))
    assert [(e.row, e.field) for e in report.errors] == [(1, "number"), (2, "number")]
    assert "already exists in the database" in report.errors[0].message
    assert counts(city) == before


def test_file_level_problems(city: Database, tmp_path: Path) -> None:
    with city.session() as s:
        rows = good_rows(s)
    no_number = write_file(tmp_path / "cols.csv", rows, tuple(c for c in COLUMNS if c != "number"))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"number": 1,', "utf-8")
    scalar = tmp_path / "scalar.json"
    scalar.write_text('"hello"', "utf-8")
    other = tmp_path / "cases.xlsx"
    other.write_bytes(b"PK")
    with city.session() as s:
        r = import_cases(s, no_number)
        assert r.errors[0].row == 0 and "required column 'number' is missing" in r.errors[0].message
        assert r.invalid_rows == 7
        r = import_cases(s, broken)
        assert r.errors[0].field == "json" and "not valid JSON" in r.errors[0].message
        r = import_cases(s, scalar)
        assert "expected a list of case objects" in r.errors[0].message
        r = import_cases(s, other)
        assert r.errors[0].field == "format" and ".csv or .json" in r.errors[0].message
    extra = write_file(tmp_path / "extra.csv", [{**rows[0], "colour": "red"}], (*COLUMNS, "colour"))
    with city.session() as s:
        r = import_cases(s, extra)
        assert r.ok and any("colour" in n for n in r.notes)
    assert counts(city)[0] == 1


def test_skip_invalid_writes_exactly_the_valid_rows(city: Database, tmp_path: Path) -> None:
    with city.session() as s:
        rows = good_rows(s)
    rows[1]["lead_unit_code"] = "NO-SUCH"
    rows[4]["lon"], rows[4]["lat"] = 100.0, 30.0
    path = write_file(tmp_path / "mixed.csv", rows)
    with city.session() as s:
        report = import_cases(s, path, skip_invalid=True)
    assert (report.written, report.invalid_rows, report.error_count) == (5, 2, 2)
    assert "5 written, 2 error(s), 2 invalid row(s) skipped" in report.to_text()
    with city.session() as s:
        numbers = set(s.scalars(select(Case.number)))
        assert numbers == {r["number"] for k, r in enumerate(rows) if k not in (1, 4)}
        assert check_history(s) == []


def test_parse_times() -> None:
    t, bad = parse_times(["2025-03-17 09:00", None, "2025-03-17T01:00:00Z", "17/03/2025", "2025"])
    assert bad == [3, 4]
    assert t[0] == t[2]  # 09:00 local is 01:00 UTC
    t, bad = parse_times(["2025-03-17 09:00:00.5", "2025-03-17"])
    assert bad == [] and t[0] - t[1] == (9 * 3600 + 0.5) * 1_000_000


def _one_by_one(v: str) -> int | None:
    """UTC µs of one value the slow way (datetime), None when it is not a date-time."""
    d = legacy_import._parse_one(v)
    if d is None:
        return None
    return sim.to_us((d if d.tzinfo else d.replace(tzinfo=TZ)).astimezone(UTC))


def test_parse_times_column_paths_agree_with_one_by_one() -> None:
    """Mixed columns take the character-matrix path for the plain spellings and datetime for
    the rest: every value gets what it gets alone; impossible dates are refused."""
    values: list[str | None] = [
        "2025-03-17 09:00:00",
        "2025/03/17 09:30",  # "/" dates: numpy refuses them, the matrix reads them
        "2025-03-17T09:00:00+08:00",
        "2025-03-17 01:00:00Z",
        None,
        "2024-02-29",  # leap day
        "2025-02-29 10:00",  # no such day
        "2025-02-30 10:00",
        "2025-13-01 10:00",
        "2025-03-17 24:00",
        "2025-03-17 09:60",
        "2025-03-17 09:00:00.250000",
        "2025-03-17x09:00",  # any separator datetime accepts is still accepted, one by one
        "２０２５-03-17 09:00",  # full-width digits: not the matrix's
        "2025-3-7 9:05",  # unpadded (Excel): one by one
        "yesterday",
    ]
    t, bad = parse_times(values)
    for i, v in enumerate(values):
        if v is None:
            assert t[i] == sim.NONE_T and i not in bad
            continue
        want = _one_by_one(v)
        assert (i in bad) == (want is None), v
        if want is not None:
            assert int(t[i]) == want, v
    assert {values[i] for i in bad} >= {"2025-02-29 10:00", "2025-02-30 10:00", "yesterday"}
    # the plain spellings alone (the whole column through numpy or the matrix)
    for column in (values[:2], values[:1] + values[5:6], ["2025/03/17 09:30", "2024-02-29"]):
        t2, bad2 = parse_times(column)
        assert bad2 == [] and [int(x) for x in t2] == [_one_by_one(v) for v in column]


CSV_SHAPES = {
    "plain": "number,source,stage\nA1,inspector,closed\nA2, hotline ,\n",
    "no final newline": "number,source\nA1,x\nA2,y",
    "crlf": "number,source\r\nA1,x\r\nA2,y\r\n",
    "bare cr": "number,source\rA1,x\rA2,y\r",
    "quotes": 'number,description\nA1,"a, b"\nA2,"two\nlines"\n',
    "blank line inside": "number,source\nA1,x\n\nA2,y\n",
    "blank lines at the end": "number,source\nA1,x\n\n , \n,\n",
    "short and long rows": "number,source,stage\nA1,x\nA2,y,z,\nA3,y,z,extra\n",
    "whitespace": "number,source\n  A1  ,\t\n\u3000A2\u3000,\x0bz\n",
    "duplicate header": "number,Number\nA1,x\n",
    "empty": "",
    "header only": "number,source\n",
    "one column": "number\nA1\n\nA2\n\n",
    "nul": "number,source\nA1,x\x00\n",
    "bom and unknown column": "\ufeffnumber,colour\nA1,red\n",
    "blank header": ",\nA1,x\n",
}


@pytest.mark.parametrize("shape", list(CSV_SHAPES))
@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_csv_reading_matches_the_shared_reader(
    tmp_path: Path, shape: str, encoding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shared CSV reader splits plain files itself: same columns, notes and problems as
    through the csv module (its fast path switched off) for every shape of file."""
    from cityops.core import tabular

    path = tmp_path / "shape.csv"
    path.write_bytes(CSV_SHAPES[shape].encode(encoding))
    got = []
    for fast in (False, True):
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(tabular, "plain_columns", lambda _text: None)
            inp = TabularInput(kind="cases", file=path.name, fmt="csv", known=frozenset(FIELDS))
            problems = read_csv(path, inp)
        got.append((problems, inp.n, inp.cols, inp.present, inp.notes, inp.unreadable, inp.geoms))
    assert got[1] == got[0]


def _snapshot(s: Session) -> dict[str, Any]:
    """Everything the import wrote, but the random tracking codes."""
    cases = Case.__table__
    cols = [c for c in cases.c if c.name != "tracking_code"]
    return {
        "cases": s.execute(select(*cols).order_by(cases.c.id)).all(),
        "events": s.execute(select(CaseEvent.__table__).order_by(CaseEvent.id)).all(),
        "units": sorted(s.execute(select(CaseUnit.__table__)).all()),
    }


def test_batches_and_deferred_checks_write_the_same(
    city: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written in batches of 2 with the indexes (and on PostgreSQL the foreign keys) dropped
    and rebuilt, the import leaves exactly what one batch with every check in place does;
    event ids run without gaps in each case's history order."""
    with city.session() as s:
        rows = good_rows(s)
    path = write_file(tmp_path / "legacy.csv", rows)
    with city.session() as s:
        one = import_cases(s, path)
        assert one.ok and one.written == 7, one.to_text()
        expected = _snapshot(s)
        s.rollback()
    calls: list[str] = []
    drop, restore = sim.drop_checks, sim.restore_checks
    monkeypatch.setattr(legacy_import, "BATCH", 2)
    monkeypatch.setattr(sim, "DEFER_CHECKS_FROM", 1)
    monkeypatch.setattr(sim, "drop_checks", lambda c: (calls.append("drop"), drop(c))[1])
    monkeypatch.setattr(sim, "restore_checks", lambda c: (calls.append("restore"), restore(c))[1])
    with city.session() as s:
        batched = import_cases(s, path)
        assert batched.ok and batched.written == 7, batched.to_text()
        assert calls == ["drop", "restore"]
        assert _snapshot(s) == expected
        insp = inspect(s.connection())
        have = {ix["name"] for t in ("cases", "case_events") for ix in insp.get_indexes(t)}
        assert {ix.name for ix in sim.deferrable_indexes()} <= have
        if city.engine.dialect.name == "postgresql":
            fks = {fk["name"] for t in ("cases", "case_events") for fk in insp.get_foreign_keys(t)}
            assert "fk_case_events_case_id_cases" in fks and "fk_cases_grid_id_grids" in fks
        for phase in ("read", "validate", "prepare", "cases", "events", "indexes"):
            assert phase in batched.timings
    events = expected["events"]
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert [(e.case_id, e.at) for e in events] == sorted((e.case_id, e.at) for e in events)
    with city.session() as s:
        assert check_history(s) == []


def _many(s: Session, copies: int) -> list[Row]:
    rows = []
    for k in range(copies):
        for j, r in enumerate(good_rows(s) if k == 0 else rows[:7]):
            rows.append({**r, "number": f"BIG{k:04d}{j}"})
    return rows


def test_a_bad_row_in_a_large_file_is_named_and_nothing_is_written(
    city: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2,100 rows, written in batches of 500: a bad row near the end still names its row,
    field and value; nothing is written; skipping writes exactly the other rows."""
    monkeypatch.setattr(legacy_import, "BATCH", 500)
    with city.session() as s:
        rows = _many(s, 300)
    rows[999]["lead_unit_code"] = "NO-SUCH"  # row 1000
    rows[1999]["reported_at"] = "2025-02-30 10:00"  # row 2000: no such day
    path = write_file(tmp_path / "big.csv", rows)
    before = counts(city)
    with city.session() as s:
        report = import_cases(s, path)
    assert (report.total, report.written, report.error_count, report.invalid_rows) == (
        2100,
        0,
        2,
        2,
    )
    e1, e2 = report.errors
    assert (e1.file, e1.row, e1.field, e1.value) == ("big.csv", 1000, "lead_unit_code", "NO-SUCH")
    assert "unknown unit" in e1.message
    assert (e2.row, e2.field, e2.value) == (2000, "reported_at", "2025-02-30 10:00")
    assert "not a date-time" in e2.message
    text = report.to_text()
    assert "NOTHING written" in text
    assert 'big.csv: row 2000, field "reported_at", value "2025-02-30 10:00"' in text
    assert counts(city) == before
    with city.session() as s:
        report = import_cases(s, path, skip_invalid=True)
    assert (report.written, report.invalid_rows) == (2098, 2)
    with city.session() as s:
        numbers = set(s.scalars(select(Case.number)))
        assert numbers == {r["number"] for k, r in enumerate(rows) if k not in (999, 1999)}
        ids = list(s.scalars(select(CaseEvent.id).order_by(CaseEvent.id)))
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # one history, no gaps
        assert f"{len(ids)} history events written" in report.notes
        assert check_history(s) == []


# --------------------------------------------------------------------------- CLI


def _cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str) -> Any:
    import typer
    from typer.testing import CliRunner

    from cityops.cases.cli import import_cases_command, simulate_app

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


def test_cli_import_cases(city: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with city.session() as s:
        rows = good_rows(s)
    rows[2]["source"] = "weibo"
    path = write_file(tmp_path / "cli.csv", rows)
    res = _cli(city.url, monkeypatch, "import", "cases", str(path))
    assert res.exit_code == 1, res.output
    assert 'cli.csv: row 3, field "source", value "weibo": unknown source' in res.output
    assert "NOTHING written" in res.output and counts(city)[0] == 0
    res = _cli(city.url, monkeypatch, "import", "cases", str(path), "--skip-invalid")
    assert res.exit_code == 0, res.output
    assert "6 written" in res.output and counts(city)[0] == 6
    res = _cli(city.url, monkeypatch, "import", "cases", str(tmp_path / "missing.csv"))
    assert res.exit_code == 2 and "no such file" in res.output

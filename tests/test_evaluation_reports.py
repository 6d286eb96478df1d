"""Reports (晨报 / 周报 / 月报): Excel workbook and printable HTML over the crafted day of
:mod:`tests.test_evaluation`, archived as files, listed and downloaded over the API."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook
from openpyxl.chart import BarChart

from cityops.cases.models import Case
from cityops.core.errors import NotFound
from cityops.core.settings import get_settings
from cityops.evaluation import reports
from cityops.evaluation import service as ev
from tests.test_evaluation import crafted_day, store  # noqa: F401  (fixture)

# 2026-11-18 09:00 Asia/Shanghai: the morning after the crafted day.
NOW = datetime(2026, 11, 18, 1, 0, tzinfo=UTC)
NOV = ev.parse_period("2026-11")


@pytest.fixture
def var_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CITYOPS_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def _pct(cell_value: float | None) -> float | None:
    return None if cell_value is None else round(cell_value * 100, 2)


def test_periods() -> None:
    p, label = reports.report_period("weekly", date(2026, 11, 19))
    assert label == "2026-W47" and (p.start, p.end) == (date(2026, 11, 16), date(2026, 11, 23))
    assert ev.parse_period(label) == p
    p, label = reports.report_period("monthly", date(2026, 11, 17))
    assert label == "2026-11" and p == NOV
    p, label = reports.report_period("morning", date(2026, 11, 17))
    assert label == "2026-11-17" and (p.start, p.end) == (date(2026, 11, 17), date(2026, 11, 18))
    assert reports.default_start("morning", NOW) == date(2026, 11, 17)
    assert reports.default_start("weekly", NOW) == date(2026, 11, 9)
    assert reports.default_start("monthly", NOW) == date(2026, 10, 1)


def test_monthly_report_workbook_html_and_archive(city: Any, store: Any, var_dir: Path) -> None:  # noqa: F811
    with city.session() as s:
        x = crafted_day(s, store)
        ids = x["cases"]
        g = s.get(Case, ids["g"])
        assert g is not None and g.stage == "sign" and g.stage_deadline is not None
        g_number = g.number
        assert g.stage_deadline < NOW  # waiting for 签收 since the 17th
        region = ev.indicators(s, "region", x["grid"][:6], NOV)
        units = ev.ranking(s, "unit", NOV)["rows"]
        streets = ev.ranking(s, "street", NOV)["rows"]
        meta = reports.generate(s, "monthly", date(2026, 11, 5), NOW, "leader1")

    assert meta["kind"] == "monthly" and meta["period"] == "2026-11"
    assert meta["generated_by"] == "leader1"
    assert meta["generated_at"] == NOW.isoformat()
    # every case of the crafted day is in one grid: the city equals that district
    expected = {
        "立案数": 6,
        "应结案数": 6,
        "结案数": 5,
        "按期结案数": 4,
        "结案率": 83.33,
        "按期结案率": 66.67,
        "监督举报率": 16.67,
    }
    assert {k: meta["figures"][k] for k in expected} == expected
    for k, v in expected.items():
        assert v == (region["rates"][k] if k in region["rates"] else region["counts"][k])
    assert meta["figures"]["超期案卷数"] == 1

    folder = var_dir / "reports" / "monthly"
    assert sorted(p.name for p in folder.iterdir()) == [
        "2026-11.html",
        "2026-11.json",
        "2026-11.xlsx",
    ]
    assert json.loads((folder / "2026-11.json").read_text(encoding="utf-8")) == meta

    wb = load_workbook(folder / "2026-11.xlsx")
    assert wb.sheetnames == ["汇总", "单位排名", "街道排名", "超期案卷"]
    # 汇总: bold header, frozen, figures with percent formats
    ws = wb["汇总"]
    assert [ws["A1"].value, ws["B1"].value] == ["项目", "数值"]
    assert ws["A1"].font.bold and ws.freeze_panes == "A2"
    rows = {r[0].value: r[1] for r in ws.iter_rows(min_row=2)}
    assert "2026-11" in rows["报表"].value and "月报" in rows["报表"].value
    assert rows["统计周期"].value == "2026-11-01 至 2026-11-30"
    for k in ("立案数", "应结案数", "结案数", "按期结案数"):
        assert rows[k].value == expected[k]
    for k in ("结案率", "按期结案率", "监督举报率"):
        assert _pct(rows[k].value) == expected[k]
        assert rows[k].number_format == "0.00%"
    assert rows["超期案卷数"].value == 1
    assert ws.column_dimensions["A"].width == 24

    # 单位排名: the evaluation ranking in order, V (100) before U (49.17)
    ws = wb["单位排名"]
    assert [c.value for c in ws[1]] == list(reports.UNIT_HEADERS)
    assert all(c.font.bold for c in ws[1]) and ws.freeze_panes == "A2"
    got = [(r[0].value, r[1].value, r[2].value, r[3].value) for r in ws.iter_rows(min_row=2)]
    assert got == [(u["rank"], u["name"], u["composite"], u["grade"]) for u in units]
    assert got[0][2:] == (100.0, "A") and got[1][2:] == (49.17, "D")
    assert (got[0][0], got[1][0]) == (1, 2)
    u_row = ws[3]
    assert _pct(u_row[4].value) == 33.33 and _pct(u_row[5].value) == 75.0  # 按期处置率, 结案率
    assert _pct(u_row[6].value) == 33.33 and u_row[5].number_format == "0.00%"
    charts = ws._charts
    assert len(charts) == 1 and isinstance(charts[0], BarChart)
    # the chart plots the scored units' composites (rows 2‥3 of column C)
    ref = charts[0].series[0].val.numRef.f
    assert ref == "'单位排名'!$C$2:$C$3"

    # 街道排名: same order as the service
    ws = wb["街道排名"]
    assert [c.value for c in ws[1]] == list(reports.STREET_HEADERS) and ws.freeze_panes == "A2"
    got_s = [(r[1].value, r[3].value) for r in ws.iter_rows(min_row=2)]
    assert got_s == [(r["code"], r["composite"]) for r in streets]
    mine = next(r for r in ws.iter_rows(min_row=2) if r[1].value == x["grid"][:9])
    assert _pct(mine[5].value) == 83.33 and mine[5].number_format == "0.00%"

    # 超期案卷: exactly the open overdue case (G waits for 签收; E is 挂账, the rest closed)
    ws = wb["超期案卷"]
    assert [c.value for c in ws[1]] == list(reports.OVERDUE_HEADERS)
    od = [[c.value for c in r] for r in ws.iter_rows(min_row=2)]
    assert len(od) == 1
    number, _cat, grid, unit_name, stage, deadline, hours = od[0]
    assert number == g_number and grid == x["grid"] and stage == "待签收"
    assert unit_name == next(u["name"] for u in units if u["id"] == x["u"])
    assert isinstance(deadline, datetime) and hours > 0

    # HTML: self-contained, zh-CN, figures and an inline SVG chart
    page = (folder / "2026-11.html").read_text(encoding="utf-8")
    assert '<html lang="zh-CN">' in page and "<svg" in page
    assert "83.33%" in page and "66.67%" in page and g_number in page
    assert "49.17" in page and "100.00" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script" not in page and "<link" not in page

    # the archive lists it; a second generation replaces it
    listed = reports.list_reports()
    assert [(m["kind"], m["period"]) for m in listed] == [("monthly", "2026-11")]
    assert listed[0]["available"] == ["xlsx", "html"]
    assert reports.report_path("monthly", "2026-11", "xlsx") == folder / "2026-11.xlsx"
    with pytest.raises(NotFound):
        reports.report_path("monthly", "2026-10", "xlsx")
    with pytest.raises(NotFound):
        reports.report_path("monthly", "../../etc", "xlsx")


def test_morning_report_of_the_crafted_day(city: Any, store: Any, var_dir: Path) -> None:  # noqa: F811
    with city.session() as s:
        x = crafted_day(s, store)
        data = reports.build_report(s, "morning", date(2026, 11, 17), NOW)
        before = reports.build_report(s, "morning", date(2026, 11, 16), NOW)
        # before G's 签收 deadline nothing is overdue
        g = s.get(Case, x["cases"]["g"])
        assert g is not None and g.stage_deadline is not None
        early = reports.overdue_cases(s, g.stage_deadline)
    assert data.period == "2026-11-17" and data.figures["结案率"] == 83.33
    assert [u["composite"] for u in data.units[:2]] == [100.0, 49.17]
    assert [c["id"] for c in data.overdue] == [x["cases"]["g"]]
    assert before.figures["立案数"] == 0 and before.figures["结案率"] is None
    assert before.overdue == data.overdue  # open work is as of now
    assert early == []
    # an empty period still renders
    reports.write_xlsx(before, var_dir / "empty.xlsx")
    reports.write_html(before, var_dir / "empty.html")
    wb = load_workbook(var_dir / "empty.xlsx")
    assert wb["单位排名"]._charts == []
    assert "本期无单位评价数据" in (var_dir / "empty.html").read_text(encoding="utf-8")


def test_api_generate_list_download_and_roles(city: Any, store: Any, var_dir: Path) -> None:  # noqa: F811
    from fastapi.testclient import TestClient

    from cityops.app import create_app
    from cityops.evaluation.reports_api import router

    with city.session() as s:
        crafted_day(s, store)
    app = create_app(city)
    if not any(getattr(r, "path", "").startswith(router.prefix) for r in app.routes):
        app.include_router(router)
    with TestClient(app) as client:

        def login(u: str) -> dict[str, str]:
            r = client.post(
                "/api/v1/auth/login", json={"username": u, "password": "demo-pass-2026"}
            )
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        base = "/api/v1/evaluation/reports"
        lead, shift, insp = login("leader1"), login("shift1"), login("inspector1")
        body = {"kind": "monthly", "period_start": "2026-11-01"}
        # inspectors (and handlers) may not generate or read reports
        assert client.post(f"{base}/generate", json=body, headers=insp).status_code == 403
        assert client.get(base, headers=insp).status_code == 403

        r = client.post(f"{base}/generate", json=body, headers=lead)
        assert r.status_code == 200, r.text
        meta = r.json()
        assert meta["period"] == "2026-11" and meta["generated_by"] == "leader1"
        assert meta["figures"]["结案率"] == 83.33
        r = client.post(
            f"{base}/generate",
            json={"kind": "morning", "period_start": "2026-11-17"},
            headers=shift,
        )
        assert r.status_code == 200 and r.json()["period"] == "2026-11-17"
        bad = client.post(f"{base}/generate", json={"kind": "daily"}, headers=lead)
        assert bad.status_code == 422

        r = client.get(base, headers=lead)
        assert r.status_code == 200
        listed = [(m["kind"], m["period"]) for m in r.json()["reports"]]
        assert listed == [("morning", "2026-11-17"), ("monthly", "2026-11")]
        r = client.get(base, params={"kind": "monthly"}, headers=lead)
        assert [m["period"] for m in r.json()["reports"]] == ["2026-11"]

        r = client.get(meta["files"]["xlsx"], headers=lead)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
        wb = load_workbook(io.BytesIO(r.content))
        figs = {row[0].value: row[1].value for row in wb["汇总"].iter_rows(min_row=2)}
        assert _pct(figs["结案率"]) == 83.33 and figs["立案数"] == 6
        r = client.get(meta["files"]["html"], headers=lead)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "<svg" in r.text and "83.33%" in r.text
        assert client.get(meta["files"]["html"], headers=insp).status_code == 403
        assert client.get(f"{base}/monthly/2026-10.xlsx", headers=lead).status_code == 404
        assert client.get(f"{base}/weekly/2026-W47.html", headers=lead).status_code == 404
        assert client.get(f"{base}/yearly/2026.html", headers=lead).status_code == 404
        # reports cover the whole city: a district-scoped leader may not use them
        district = login("district1")
        assert client.get(base, headers=district).status_code == 403
        assert client.get(meta["files"]["xlsx"], headers=district).status_code == 403
        assert client.post(f"{base}/generate", json=body, headers=district).status_code == 403
        # admins may; the trailing-slash listing works too
        assert client.get(f"{base}/", headers=login("admin")).status_code == 200

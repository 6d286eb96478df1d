"""Reports (报表): 晨报, 周报, 月报 as a formatted Excel workbook and a printable HTML page.

Every figure comes from the evaluation service (:mod:`cityops.evaluation.service`), so a
report says exactly what the indicators and rankings say for the same period:

* 晨报 (``morning``): one local day (normally yesterday) and the open overdue work at ``now``;
* 周报 (``weekly``): the ISO week holding ``period_start`` (Monday … Sunday);
* 月报 (``monthly``): the calendar month holding ``period_start``.

Key figures of the city are the region figures over every grid (立案数 = 应结案数, 结案数,
按期结案数, 结案率, 按期结案率, …); rankings are :func:`service.ranking` of units and streets;
the overdue list holds the open cases past their stage deadline at ``now`` (flagged 超期 by the
scheduler, or running past the deadline and not paused / waiting for an approval / 挂账).

Generated reports are archived as files (no table): ``<var_dir>/reports/<kind>/<period>.xlsx``,
``.html`` and a ``.json`` sidecar with the metadata; :func:`list_reports` scans that directory.
"""

from __future__ import annotations

import html
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.chart import BarChart, Reference
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from cityops.cases.models import OPEN_STAGES, STAGES, Case
from cityops.core.errors import Invalid, NotFound
from cityops.core.settings import get_settings
from cityops.evaluation import service as ev
from cityops.evaluation.rollup import TZ
from cityops.geo.models import Category, Region, Unit

KINDS = {"morning": "晨报", "weekly": "周报", "monthly": "月报"}
FORMATS = ("xlsx", "html")
#: Key figures of the city, in the order shown; those in RATES are percentages.
FIGURES = ("立案数", "应结案数", "结案数", "按期结案数", "结案率", "按期结案率", "监督举报率")
RATES = frozenset({"结案率", "按期结案率", "监督举报率"})
_PERIOD_RE = re.compile(r"^\d{4}-(\d{2}-\d{2}|W\d{2}|\d{2})$")

UNIT_HEADERS = ("名次", "单位", "综合评价值", "等级", "按期处置率", "结案率", "返工率", "较上期")
STREET_HEADERS = ("名次", "街道代码", "街道", "综合评价值", "等级", "结案率", "按期结案率")
OVERDUE_HEADERS = ("案卷编号", "问题类别", "网格", "主办单位", "当前阶段", "时限", "超期(小时)")


# --------------------------------------------------------------------------- periods


def report_period(kind: str, period_start: date) -> tuple[ev.Period, str]:
    """The period of a report and its label (``2026-11-17``, ``2026-W47``, ``2026-11``)."""
    if kind == "morning":
        return ev.Period(period_start, period_start + timedelta(days=1)), period_start.isoformat()
    if kind == "weekly":
        y, w, _ = period_start.isocalendar()
        monday = date.fromisocalendar(y, w, 1)
        return ev.Period(monday, monday + timedelta(days=7)), f"{y}-W{w:02d}"
    if kind == "monthly":
        label = f"{period_start.year:04d}-{period_start.month:02d}"
        return ev.parse_period(label), label
    raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind", value=kind)


def default_start(kind: str, now: datetime) -> date:
    """The usual period of a report made at ``now``: yesterday, last week, last month."""
    today = now.astimezone(TZ).date()
    if kind == "morning":
        return today - timedelta(days=1)
    if kind == "weekly":
        return today - timedelta(days=today.weekday() + 7)
    if kind == "monthly":
        return (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind", value=kind)


# --------------------------------------------------------------------------- data


@dataclass
class ReportData:
    kind: str
    period: str
    start: date
    end: date  # exclusive
    now: datetime
    city: str
    #: 立案数 … 按期结案率 (rates in percent, None when the denominator is 0).
    figures: dict[str, float | int | None]
    units: list[dict[str, Any]] = field(default_factory=list)
    streets: list[dict[str, Any]] = field(default_factory=list)
    overdue: list[dict[str, Any]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.city}城市运行管理{KINDS[self.kind]}（{self.period}）"

    @property
    def span(self) -> str:
        last = self.end - timedelta(days=1)
        if last == self.start:
            return self.start.isoformat()
        return f"{self.start.isoformat()} 至 {last.isoformat()}"


def _local(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(TZ).replace(tzinfo=None)


def overdue_cases(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Open cases past their stage deadline at ``now`` (most overdue first)."""
    running_late = and_(
        Case.stage_deadline.is_not(None),
        Case.stage_deadline < now,
        Case.paused_since.is_(None),
        Case.pending_request.is_(None),
        Case.parked.is_(False),
    )
    q = (
        select(Case, Category.name, Unit.name)
        .join(Category, Category.id == Case.category_id)
        .outerjoin(Unit, Unit.id == Case.lead_unit_id)
        .where(
            Case.stage.in_(sorted(OPEN_STAGES - {"parked"})),
            or_(Case.overdue.is_(True), running_late),
        )
    )
    rows: list[dict[str, Any]] = []
    for c, cat, unit in session.execute(q):
        deadline = c.stage_deadline
        if deadline is not None and deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=UTC)
        hours = (now - deadline).total_seconds() / 3600 if deadline is not None else None
        rows.append(
            {
                "id": c.id,
                "number": c.number,
                "category": cat,
                "grid": c.grid_code,
                "unit": unit,
                "stage": STAGES.get(c.stage, c.stage),
                "deadline": _local(deadline),
                "hours": round(hours, 1) if hours is not None else None,
            }
        )
    rows.sort(key=lambda r: (-(r["hours"] or 0), r["number"]))
    return rows


def build_report(session: Session, kind: str, period_start: date, now: datetime) -> ReportData:
    """Everything one report shows, from the rollups (figures, rankings) and the open cases."""
    period, label = report_period(kind, period_start)
    city_ind = ev.indicators(session, "region", "", period)
    figures: dict[str, float | int | None] = {}
    for name in FIGURES:
        figures[name] = city_ind["rates"][name] if name in RATES else city_ind["counts"][name]
    city = session.scalars(select(Region.name).where(Region.level == "city")).first() or ""
    units = [
        {
            "rank": r["rank"],
            "id": r["id"],
            "name": r["name"],
            "composite": r["composite"],
            "grade": r["grade"],
            "按期处置率": r["rates"]["按期处置率"],
            "结案率": r["rates"]["结案率"],
            "返工率": r["rates"]["返工率"],
            "change": r["change"],
        }
        for r in ev.ranking(session, "unit", period)["rows"]
    ]
    streets = [
        {
            "rank": r["rank"],
            "code": r["code"],
            "name": r["name"],
            "composite": r["composite"],
            "grade": r["grade"],
            "结案率": r["rates"]["结案率"],
            "按期结案率": r["rates"]["按期结案率"],
        }
        for r in ev.ranking(session, "street", period)["rows"]
    ]
    return ReportData(
        kind=kind,
        period=label,
        start=period.start,
        end=period.end,
        now=now,
        city=city,
        figures=figures,
        units=units,
        streets=streets,
        overdue=overdue_cases(session, now),
    )


# --------------------------------------------------------------------------- Excel

_BOLD = Font(bold=True)
_HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")
_PCT = "0.00%"


def _pct(x: float | None) -> float | None:
    """Percent figure → Excel fraction (shown with a percent format)."""
    return None if x is None else x / 100


def _sheet(wb: Workbook, title: str, headers: tuple[str, ...], widths: tuple[int, ...]) -> Any:
    ws = wb.create_sheet(title)
    ws.append(list(headers))
    for i, w in enumerate(widths, 1):
        cell = ws.cell(row=1, column=i)
        cell.font = _BOLD
        cell.fill = _HEAD_FILL
        cell.alignment = Alignment(horizontal="center")
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.freeze_panes = "A2"
    return ws


def _format_cols(ws: Any, cols: tuple[int, ...], fmt: str) -> None:
    for row in ws.iter_rows(min_row=2):
        for c in cols:
            row[c - 1].number_format = fmt


def write_xlsx(data: ReportData, path: Path) -> None:
    """Sheets 汇总, 单位排名 (with a bar chart of the composites), 街道排名, 超期案卷."""
    wb = Workbook()
    wb.remove(wb.active)

    ws = _sheet(wb, "汇总", ("项目", "数值"), (24, 36))
    ws.append(["报表", data.title])
    ws.append(["统计周期", data.span])
    ws.append(["生成时间", _local(data.now)])
    ws.cell(row=ws.max_row, column=2).number_format = "yyyy-mm-dd hh:mm"
    for name in FIGURES:
        v = data.figures[name]
        ws.append([name, _pct(v) if name in RATES else v])
        if name in RATES:
            ws.cell(row=ws.max_row, column=2).number_format = _PCT
    ws.append(["超期案卷数", len(data.overdue)])
    for row in ws.iter_rows(min_row=2, max_col=1):
        row[0].font = _BOLD

    ws = _sheet(wb, "单位排名", UNIT_HEADERS, (8, 30, 14, 8, 14, 12, 12, 10))
    for u in data.units:
        ws.append(
            [
                u["rank"],
                u["name"],
                u["composite"],
                u["grade"],
                _pct(u["按期处置率"]),
                _pct(u["结案率"]),
                _pct(u["返工率"]),
                u["change"],
            ]
        )
    _format_cols(ws, (3, 8), "0.00")
    _format_cols(ws, (5, 6, 7), _PCT)
    scored = sum(1 for u in data.units if u["composite"] is not None)
    if scored:
        chart = BarChart()
        chart.type = "bar"
        chart.style = 10
        chart.title = "单位综合评价值"
        chart.y_axis.title = "综合评价值"
        chart.y_axis.scaling.min = 0
        chart.y_axis.scaling.max = 100
        chart.legend = None
        values = Reference(ws, min_col=3, min_row=1, max_row=1 + scored)
        names = Reference(ws, min_col=2, min_row=2, max_row=1 + scored)
        chart.add_data(values, titles_from_data=True)
        chart.set_categories(names)
        chart.height = max(7.5, 0.6 * scored + 3)
        chart.width = 18
        ws.add_chart(chart, "J2")

    ws = _sheet(wb, "街道排名", STREET_HEADERS, (8, 14, 24, 14, 8, 12, 12))
    for r in data.streets:
        ws.append(
            [
                r["rank"],
                r["code"],
                r["name"],
                r["composite"],
                r["grade"],
                _pct(r["结案率"]),
                _pct(r["按期结案率"]),
            ]
        )
    _format_cols(ws, (4,), "0.00")
    _format_cols(ws, (6, 7), _PCT)

    ws = _sheet(wb, "超期案卷", OVERDUE_HEADERS, (20, 24, 18, 28, 12, 18, 12))
    for c in data.overdue:
        ws.append(
            [
                c["number"],
                c["category"],
                c["grid"],
                c["unit"],
                c["stage"],
                c["deadline"],
                c["hours"],
            ]
        )
    _format_cols(ws, (6,), "yyyy-mm-dd hh:mm")
    _format_cols(ws, (7,), "0.0")

    wb.properties.title = data.title
    wb.properties.creator = "CityOps"
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


# --------------------------------------------------------------------------- HTML


def _fmt(v: Any, rate: bool = False) -> str:
    if v is None:
        return "—"
    if rate:
        return f"{v:.2f}%"
    if isinstance(v, float):
        return f"{v:.2f}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M")
    return str(v)


def _table(headers: tuple[str, ...], rows: list[list[str]], cls: str = "") -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}" class="none">无</td></tr>'
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def svg_bar_chart(items: list[tuple[str, float]], title: str) -> str:
    """A horizontal bar chart (0–100) as inline SVG."""
    e = html.escape
    bar, gap, left, width = 22, 8, 200, 420
    height = 40 + len(items) * (bar + gap) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{e(title)}" '
        f'width="{left + width + 70}" height="{height}" viewBox="0 0 {left + width + 70} {height}">',
        f'<text x="{left}" y="20" font-size="14" font-weight="bold">{e(title)}</text>',
    ]
    for tick in (0, 25, 50, 75, 100):
        x = left + width * tick / 100
        parts.append(
            f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{height - 20}" stroke="#ccc"/>'
            f'<text x="{x:.1f}" y="{height - 5}" font-size="10" text-anchor="middle">{tick}</text>'
        )
    for i, (name, value) in enumerate(items):
        y = 35 + i * (bar + gap)
        w = width * max(0.0, min(100.0, value)) / 100
        color = "#2e7d32" if value >= 90 else "#1565c0" if value >= 60 else "#c62828"
        parts.append(
            f'<text x="{left - 6}" y="{y + bar * 0.7:.1f}" font-size="12" '
            f'text-anchor="end">{e(name)}</text>'
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="{color}"/>'
            f'<text x="{left + w + 4:.1f}" y="{y + bar * 0.7:.1f}" font-size="12">'
            f"{value:.2f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """
body{font-family:"Microsoft YaHei","PingFang SC","Noto Sans CJK SC",sans-serif;margin:24px;color:#222}
h1{font-size:22px;text-align:center;margin-bottom:4px}
.meta{text-align:center;color:#555;margin-bottom:16px}
h2{font-size:17px;border-left:4px solid #1565c0;padding-left:8px;margin-top:24px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:8px 0}
th,td{border:1px solid #999;padding:4px 6px;text-align:center}
th{background:#ddebf7}
td.none{color:#777}
.figures td:first-child{font-weight:bold;width:40%}
.chart{margin:8px 0}
@media print{body{margin:10mm}h2{page-break-after:avoid}table,svg{page-break-inside:avoid}
thead{display:table-header-group}}
@page{size:A4;margin:12mm}
"""


def render_html(data: ReportData) -> str:
    e = html.escape
    fig_rows = [[n, _fmt(data.figures[n], n in RATES)] for n in FIGURES]
    fig_rows.append(["超期案卷数", str(len(data.overdue))])
    unit_rows = [
        [
            _fmt(u["rank"]),
            u["name"],
            _fmt(u["composite"]),
            _fmt(u["grade"]),
            _fmt(u["按期处置率"], True),
            _fmt(u["结案率"], True),
            _fmt(u["返工率"], True),
            _fmt(u["change"]),
        ]
        for u in data.units
    ]
    street_rows = [
        [
            _fmt(r["rank"]),
            r["code"],
            r["name"],
            _fmt(r["composite"]),
            _fmt(r["grade"]),
            _fmt(r["结案率"], True),
            _fmt(r["按期结案率"], True),
        ]
        for r in data.streets
    ]
    overdue_rows = [
        [
            c["number"],
            c["category"],
            _fmt(c["grid"]),
            _fmt(c["unit"]),
            c["stage"],
            _fmt(c["deadline"]),
            _fmt(c["hours"]),
        ]
        for c in data.overdue
    ]
    scored = [(u["name"], float(u["composite"])) for u in data.units if u["composite"] is not None]
    chart = (
        f'<div class="chart">{svg_bar_chart(scored, "单位综合评价值")}</div>'
        if scored
        else "<p>本期无单位评价数据。</p>"
    )
    generated = _fmt(_local(data.now))
    return f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>{e(data.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{e(data.title)}</h1>
<div class="meta">统计周期：{e(data.span)}　生成时间：{e(generated)}</div>
<h2>一、总体情况</h2>
{_table(("指标", "数值"), fig_rows, "figures")}
<h2>二、单位排名</h2>
{chart}
{_table(UNIT_HEADERS, unit_rows)}
<h2>三、街道排名</h2>
{_table(STREET_HEADERS, street_rows)}
<h2>四、超期案卷</h2>
{_table(OVERDUE_HEADERS, overdue_rows)}
</body>
</html>
"""


def write_html(data: ReportData, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")


# --------------------------------------------------------------------------- archive


def reports_dir() -> Path:
    return get_settings().var_dir / "reports"


def _check(kind: str, period: str) -> None:
    if kind not in KINDS:
        raise NotFound(f"no report kind {kind!r}")
    if not _PERIOD_RE.fullmatch(period):
        raise NotFound(f"no report {kind}/{period}")


def report_path(kind: str, period: str, fmt: str) -> Path:
    """The archived file of one report (NotFound when it was never generated)."""
    _check(kind, period)
    if fmt not in FORMATS:
        raise NotFound(f"no report format {fmt!r}")
    p = reports_dir() / kind / f"{period}.{fmt}"
    if not p.is_file():
        raise NotFound(f"no report {kind}/{period}.{fmt}")
    return p


def _atomic(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _metadata(data: ReportData, user: str | None) -> dict[str, Any]:
    base = f"/api/v1/evaluation/reports/{data.kind}/{data.period}"
    return {
        "kind": data.kind,
        "kind_name": KINDS[data.kind],
        "period": data.period,
        "title": data.title,
        "start": data.start.isoformat(),
        "end": data.end.isoformat(),
        "generated_at": data.now.astimezone(UTC).isoformat(),
        "generated_by": user,
        "figures": {**data.figures, "超期案卷数": len(data.overdue)},
        "files": {fmt: f"{base}.{fmt}" for fmt in FORMATS},
    }


def generate(
    session: Session, kind: str, period_start: date, now: datetime, user: str | None
) -> dict[str, Any]:
    """Build one report, archive its .xlsx, .html and .json sidecar (replacing an earlier
    one of the same kind and period) and answer the metadata."""
    data = build_report(session, kind, period_start, now)
    folder = reports_dir() / kind
    meta = _metadata(data, user)
    _atomic(folder / f"{data.period}.xlsx", lambda p: write_xlsx(data, p))
    _atomic(folder / f"{data.period}.html", lambda p: write_html(data, p))
    _atomic(
        folder / f"{data.period}.json",
        lambda p: p.write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8"),
    )
    return meta


def list_reports(kind: str | None = None) -> list[dict[str, Any]]:
    """Archived reports (newest period first), from the sidecars under ``reports_dir()``."""
    root = reports_dir()
    out: list[dict[str, Any]] = []
    kinds = [kind] if kind else list(KINDS)
    for k in kinds:
        if k not in KINDS:
            raise Invalid(f"kind must be one of {', '.join(KINDS)}", field="kind", value=k)
        folder = root / k
        if not folder.is_dir():
            continue
        for side in folder.glob("*.json"):
            if side.name.startswith(".") or not _PERIOD_RE.fullmatch(side.stem):
                continue
            try:
                meta = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            meta["available"] = [f for f in FORMATS if (folder / f"{side.stem}.{f}").is_file()]
            out.append(meta)
    out.sort(key=lambda m: (m.get("start", ""), m.get("kind", "")), reverse=True)
    return out


__all__ = [
    "KINDS",
    "ReportData",
    "build_report",
    "generate",
    "list_reports",
    "report_path",
    "write_html",
    "write_xlsx",
]

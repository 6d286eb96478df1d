"""Command-centre map 一张图 (``/map``): the city's layers, open cases and a KPI panel.

Everything works offline: the vector layers come from our own tables (regions, unit grids,
components, cases) and the charts are NiceGUI's bundled ECharts. A basemap tile layer is
added only when ``CITYOPS_BASEMAP_URL`` is set (with ``CITYOPS_BASEMAP_ATTRIBUTION``);
without it the map has a plain background.

Layers (each can be switched off):

* 行政区划 districts / streets / communities: simplified polygons, cached per geo version;
* 单元网格 unit grids: from the in-memory grid index, only those in view and only from zoom
  :data:`GRID_MIN_ZOOM`, simplified;
* 部件 components: from the in-memory component index, only in view from zoom
  :data:`COMPONENT_MIN_ZOOM`, coloured by category;
* 案件 open cases: H3 hexagons (resolution by zoom) sized by count, coloured red when a case
  in the cell is 超期 (overdue), orange when 临期 (near due), blue otherwise.

Clicking the map shows what is there (grid, community, street, district, open cases of the
hexagon, nearest component). The KPI panel: today's intake and closures, 结案率 of the month
(from the evaluation rollups), overdue count, intake by source and by category per day,
unit ranking (红黑榜) from :func:`cityops.evaluation.service.ranking`. KPI results are kept
for :data:`KPI_TTL` seconds per data scope: a wall of screens does not re-query per viewer.

Roles: leader, shift_leader, dispatcher, commander, admin. A user scoped to a district sees
only that district's regions, grids, components and cases.
"""

from __future__ import annotations

from typing import Any

from nicegui import events, ui

from cityops.cases.models import SOURCES
from cityops.console import auth
from cityops.console.command_service import (
    COMPONENT_PALETTE,
    GRID_MIN_ZOOM,
    GRID_STYLE,
    REGION_STYLE,
    ROLES,
    STAGE_COLOURS,
    case_hexagons,
    component_layers,
    component_points,
    details_at,
    grid_layer,
    hex_resolution,
    hexagon_layers,
    kpis,
    region_layers,
    scope_centre,
    view_bbox,
)
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.settings import get_settings


def _line(name: str, data: list[int]) -> dict[str, Any]:
    return {"name": name, "type": "line", "stack": "total", "areaStyle": {}, "data": data}


def _kpi_panel(k: dict[str, Any]) -> None:
    with ui.row().classes("w-full gap-2"):
        cards = (
            ("kpi-today-intake", t("今日受理", "Intake today"), k["today_intake"]),
            ("kpi-today-closed", t("今日结案", "Closed today"), k["today_closed"]),
            (
                "kpi-close-rate",
                t("本月结案率", "Close rate (month)"),
                "—" if k["close_rate"] is None else f"{k['close_rate']}%",
            ),
            ("kpi-overdue", t("超期案件", "Overdue"), k["overdue"]),
            ("kpi-open", t("在办案件", "Open cases"), k["open"]),
        )
        for name, label, value in cards:
            with ui.card().classes("q-pa-sm items-center").style("min-width: 7.5rem"):
                ui.label(label).classes("text-caption text-grey-7")
                tid(ui.label(str(value)).classes("text-h5"), name)
    days = [d[5:] for d in k["days"]]
    tid(
        ui.echart(
            {
                "title": {
                    "text": t("按来源受理量", "Intake by source"),
                    "textStyle": {"fontSize": 13},
                },
                "tooltip": {"trigger": "axis"},
                "legend": {"top": 28, "type": "scroll"},
                "grid": {"top": 60, "left": 40, "right": 10, "bottom": 25},
                "xAxis": {"type": "category", "data": days},
                "yAxis": {"type": "value"},
                "series": [_line(SOURCES.get(s, s), v) for s, v in k["intake_by_source"].items()],
            }
        ).classes("w-full h-60"),
        "chart-source",
    )
    tid(
        ui.echart(
            {
                "title": {
                    "text": t("按类别受理量", "Intake by category"),
                    "textStyle": {"fontSize": 13},
                },
                "tooltip": {"trigger": "axis"},
                "legend": {"top": 28, "type": "scroll"},
                "grid": {"top": 60, "left": 40, "right": 10, "bottom": 25},
                "xAxis": {"type": "category", "data": days},
                "yAxis": {"type": "value"},
                "series": [_line(n, v) for n, v in k["intake_by_category"].items()],
            }
        ).classes("w-full h-60"),
        "chart-category",
    )
    with ui.row().classes("w-full no-wrap gap-2"):
        for name, title, rows in (
            ("rank-top", t("红榜（前五）", "Top units"), k["top_units"]),
            ("rank-bottom", t("黑榜（后五）", "Bottom units"), k["bottom_units"]),
        ):
            with tid(ui.card().classes("col q-pa-sm"), name):
                ui.label(title).classes("text-subtitle2")
                if not rows:
                    ui.label(t("暂无数据", "No data")).classes("text-grey-6")
                for r in rows:
                    ui.label(f"{r['rank']}. {r['name']} · {r['composite']}").classes("text-body2")


def register() -> None:
    nav_item("/map", "一张图", "City map", "map", *ROLES)

    @ui.page("/map")
    def map_page() -> None:
        p = auth.require(*ROLES)
        if p is None:
            return
        st = get_settings()
        prefix = p.scope_region_code
        with get_db().session() as s:
            lat, lon, zoom = scope_centre(s, prefix)
            regions = region_layers(s, prefix)
            k = kpis(s, p)
        state: dict[str, Any] = {"zoom": zoom, "center": (lat, lon), "layers": {}}
        with (
            frame(t("一张图", "City map"), p),
            ui.row().classes("w-full no-wrap items-start gap-3"),
        ):
            with ui.column().classes("col-8 gap-2"):
                with ui.row().classes("items-center gap-3"):
                    show = {
                        "regions": tid(
                            ui.checkbox(t("行政区划", "Regions"), value=True), "layer-regions"
                        ),
                        "grids": tid(
                            ui.checkbox(t("单元网格", "Unit grids"), value=True), "layer-grids"
                        ),
                        "components": tid(
                            ui.checkbox(t("部件", "Components"), value=True), "layer-components"
                        ),
                        "cases": tid(ui.checkbox(t("案件", "Cases"), value=True), "layer-cases"),
                    }
                    for state_name, colour in (
                        (t("超期", "Overdue"), STAGE_COLOURS["overdue"]),
                        (t("临期", "Near due"), STAGE_COLOURS["near_due"]),
                        (t("正常", "In time"), STAGE_COLOURS["normal"]),
                    ):
                        ui.label(f"■ {state_name}").style(f"color: {colour}")
                m = tid(
                    ui.leaflet(center=(lat, lon), zoom=zoom, options={"zoomSnap": 1})
                    .classes("w-full")
                    .style("height: 68vh; background: #eef2f5"),
                    "map",
                )
                m.clear_layers()  # no internet tiles unless a basemap is configured
                if st.basemap_url:
                    m.tile_layer(
                        url_template=st.basemap_url,
                        options={"attribution": st.basemap_attribution, "maxZoom": 19},
                    )
                tid(
                    ui.button(
                        t("查看地图中心", "Details at the centre"),
                        on_click=lambda: state["details"](state["center"][1], state["center"][0]),
                    ).props("flat dense icon=place"),
                    "details-centre",
                )
                details = tid(ui.column().classes("w-full gap-1"), "details")
                with details:
                    ui.label(t("点击地图查看详情", "Click the map for details")).classes(
                        "text-grey-6"
                    )
            with ui.column().classes("col-4 gap-2"):
                _kpi_panel(k)

        def put(name: str, layer_type: str, args: list[Any]) -> None:
            old = state["layers"].pop(name, None)
            if old is not None and old in m.layers:
                m.remove_layer(old)
            if args:
                state["layers"][name] = m.generic_layer(name=layer_type, args=args)

        def draw() -> None:
            z = float(state["zoom"])
            c_lat, c_lon = state["center"]
            bbox = view_bbox(c_lat, c_lon, z)
            with get_db().session() as s:
                if show["regions"].value:
                    for level, fc in regions.items():
                        put(f"r-{level}", "geoJSON", [fc, {"style": REGION_STYLE[level]}])
                else:
                    for level in regions:
                        put(f"r-{level}", "geoJSON", [])
                grids = grid_layer(s, prefix, bbox, z) if show["grids"].value else None
                put("grids", "geoJSON", [grids, {"style": GRID_STYLE}] if grids else [])
                comps = component_points(s, prefix, bbox, z) if show["components"].value else []
                for i, fc in enumerate(component_layers(comps)):
                    put(
                        f"components-{i}",
                        "geoJSON",
                        [
                            fc,
                            {
                                "style": {
                                    "color": COMPONENT_PALETTE[i],
                                    "weight": 2,
                                    "fillOpacity": 0.9,
                                }
                            },
                        ]
                        if fc["features"]
                        else [],
                    )
                if show["cases"].value:
                    cells = case_hexagons(s, p, hex_resolution(z))
                    for state_name, fc in hexagon_layers(cells).items():
                        colour = STAGE_COLOURS[state_name]
                        put(
                            f"h-{state_name}",
                            "geoJSON",
                            [fc, {"style": {"color": colour, "weight": 1, "fillOpacity": 0.45}}]
                            if fc["features"]
                            else [],
                        )
                    state["cells"] = len(cells)
                else:
                    for state_name in STAGE_COLOURS:
                        put(f"h-{state_name}", "geoJSON", [])
                    state["cells"] = 0

        def moved(e: events.GenericEventArguments) -> None:
            new_zoom = e.args.get("zoom", state["zoom"])
            changed = (
                hex_resolution(new_zoom) != hex_resolution(state["zoom"])
                or new_zoom >= GRID_MIN_ZOOM
            )
            state["zoom"] = new_zoom
            state["center"] = tuple(e.args.get("center", state["center"]))
            if changed:
                draw()

        def clicked(e: events.GenericEventArguments) -> None:
            ll = e.args.get("latlng") or {}
            show_details(float(ll.get("lng", 0.0)), float(ll.get("lat", 0.0)))

        def show_details(c_lon: float, c_lat: float) -> None:
            with get_db().session() as s:
                d = details_at(s, p, c_lon, c_lat, float(state["zoom"]))
            details.clear()
            with details:
                place = d.get("place")
                if place is None:
                    ui.label(t("此处不在管辖范围内", "Outside your area")).classes("text-grey-7")
                    return
                tid(
                    ui.label(
                        f"{place['district']['name']} · {place['street']['name']} · "
                        f"{place['community']['name']} · {t('网格', 'grid')} {place['grid']['code']}"
                    ).classes("text-subtitle2"),
                    "details-place",
                )
                comp = d.get("component")
                if comp:
                    ui.label(
                        f"{t('部件', 'Component')} {comp['code']} {comp['category']} "
                        f"({comp['status']}, {comp['distance_m']} m)"
                    )
                if not d["cases"]:
                    ui.label(t("此处无在办案件", "No open cases here")).classes("text-grey-7")
                for c in d["cases"]:
                    flag = " 超期" if c["overdue"] else " 临期" if c["near_due"] else ""
                    tid(
                        ui.link(
                            f"{c['number']} {c['category']} · {c['stage']}{flag}",
                            f"/cases/{c['id']}",
                        ),
                        f"details-case-{c['number']}",
                    )

        m.on("map-moveend", moved)
        m.on("map-zoomend", moved)
        m.on("map-click", clicked)
        for cb in show.values():
            cb.on_value_change(lambda _e: draw())
        state["draw"] = draw
        state["details"] = show_details
        draw()

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

Loading (the page should be drawn within a second in a fresh tab): the first layers go out
with the page instead of after the websocket's ``init`` round trip (:class:`_Map`), the static
ones (region outlines, a district's grids) in a script the browser caches; each layer is one
SVG path (:func:`_one_path`); the JavaScript libraries are preloaded
(:func:`_module_preloads`); the charts are drawn without animation, and the category chart,
below the fold, once the page is up.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import threading
from typing import Any

from fastapi import Response
from nicegui import app, events, ui
from nicegui import json as fast_json

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
    lifeline,
    lifeline_near,
    marker_layers,
    region_layers,
    scope_centre,
    view_bbox,
)
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db, utcnow
from cityops.core.settings import get_settings
from cityops.geo.index import read_geo_version

# The static layers of a map page (region outlines; a district's unit grids in its first view)
# change only with the geo version, yet they are most of the page's bytes: instead of being
# serialized and compressed again on every visit, they go out as a small script that the
# browser keeps (immutable, named by its content), loaded with the page itself.
_static_scripts: dict[str, tuple[str | None, bytes]] = {}  # digest → (data scope, script)
_static_digests: dict[tuple[Any, ...], tuple[str, object]] = {}  # key → (digest, anchor)
_static_lock = threading.Lock()


def _static_script(
    key: tuple[Any, ...], anchor: object, scope: str | None, collections: list[Any]
) -> str:
    """The digest of the script defining ``collections``, made once per ``key`` while
    ``anchor`` (the cached object the collections come from) stays the same."""
    with _static_lock:
        hit = _static_digests.get(key)
        if hit is not None and hit[1] is anchor and hit[0] in _static_scripts:
            return hit[0]
    data = fast_json.dumps(collections)
    digest = hashlib.sha256(f"{scope}|{data}".encode()).hexdigest()[:24]
    script = (
        "window.cityopsLayers = window.cityopsLayers || {};\n"
        f"window.cityopsLayers[{json.dumps(digest)}] = JSON.parse({json.dumps(data)});\n"
    )
    with _static_lock:
        if len(_static_scripts) >= 32:  # a few per data scope and geo version
            _static_scripts.clear()
            _static_digests.clear()
        _static_scripts[digest] = (scope, script.encode())
        _static_digests[key] = (digest, anchor)
    return digest


class _Map(ui.leaflet):
    """``ui.leaflet`` whose first layers go out with the page itself.

    A plain ``ui.leaflet`` sends its layers only once the browser has mounted the map, opened
    the websocket and reported ``init`` (which it polls for every 100 ms): a round trip after
    the page has loaded. :meth:`ship_layers` instead puts the layers present while the page is
    built into the page (a JSON block; static ones in a cached script, see
    :func:`_static_script`), and Leaflet creates them together with the map (its ``layers``
    option). On ``init`` only the layers changed since then are sent.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shipped: set[str] | None = None

    def ship_layers(
        self, static: list[Any], key: tuple[Any, ...], anchor: object, scope: str | None
    ) -> None:
        """Put the current layers into the page; the data of the ``static`` ones (geoJSON
        layers that depend on ``key`` and ``anchor`` only) goes into the cached script of
        ``scope``."""
        index = {layer.id: i for i, layer in enumerate(static)}
        digest = _static_script(key, anchor, scope, [layer.args[0] for layer in static])
        specs = []
        for layer in self.layers:
            spec = {"id": layer.id, **layer.to_dict()}
            if layer.id in index:
                spec["data"] = index[layer.id]
                spec["args"] = spec["args"][1:]
            specs.append(spec)
        data = fast_json.dumps(specs)
        for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e")):
            data = data.replace(char, escape)  # nothing in the JSON can close the script block
        block = f"map-layers-{self.id}"
        ui.add_body_html(
            f'<script defer src="/console/map-layers/{digest}.js"></script>\n'
            f'<script type="application/json" id="{block}">{data}</script>'
        )
        # evaluated by leaflet.js when it creates the map (after setting window.L; the deferred
        # script above has run before the page's module script); the block is read once, so a
        # re-mounted map starts empty and gets its layers through ``init`` as usual
        getter = (
            "get layers() {"
            f"const b = document.getElementById({json.dumps(block)}); if (!b) return [];"
            f"b.remove(); const d = (window.cityopsLayers || {{}})[{json.dumps(digest)}] || [];"
            "return JSON.parse(b.textContent).map((s) => {"
            "let f = window.L; for (const p of s.type.split('.')) f = f[p];"
            "const l = 'data' in s ? f(d[s.data] || null, ...s.args) : f(...s.args);"
            "l.id = s.id; return l; });}"
        )
        options = {k: v for k, v in self.props["options"].items() if k != "layers"}
        plain = json.dumps(options)[1:-1]
        self.props[":options"] = "{" + (f"{plain}, " if plain else "") + getter + "}"
        del self.props["options"]
        self._shipped = {layer.id for layer in self.layers}

    def _handle_init(self) -> None:
        # as ``Leaflet._handle_init`` (NiceGUI 3), but without re-sending the shipped layers
        shipped, self._shipped = self._shipped, None
        if shipped is None:
            super()._handle_init()
            return
        self.is_initialized = True
        self._initialized_event.set()
        current = {layer.id for layer in self.layers}
        for layer_id in shipped - current:  # replaced before the websocket was up
            self.run_method("remove_layer", layer_id)
        for layer in self.layers:
            if layer.id not in shipped:
                self.run_method("add_layer", layer.to_dict(), layer.id)


def _metres_per_pixel(lat: float, zoom: float) -> float:
    """Ground metres per screen pixel of the web map at ``zoom`` and latitude ``lat``
    (markers keep their size on screen; a click finds what is within a few pixels)."""
    return 156_543 * math.cos(math.radians(lat)) / 2**zoom


NO_LIFELINE: dict[str, list[Any]] = {"sensors": [], "alarms": [], "ponding": []}
PONDING_STATES_ZH = {"normal": "正常", "warning": "预警", "closed": "封闭", "unknown": "无数据"}


def _one_path(fc: dict[str, Any]) -> dict[str, Any]:
    """A collection of polygons as one multipolygon feature, which Leaflet draws as a single
    SVG path instead of one path (and one layer object) per feature: a district's first view
    holds over a thousand grids. The map uses no per-feature properties (a click is looked up
    on the server by its position), and each collection has a single style."""
    polygons: list[Any] = []
    for feature in fc.get("features") or ():
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Polygon":
            polygons.append(geometry["coordinates"])
        elif geometry.get("type") == "MultiPolygon":
            polygons.extend(geometry["coordinates"])
        else:
            return fc  # something else: keep the collection as it is
    if not polygons:
        return fc
    return {
        "type": "Feature",
        "properties": {},
        "geometry": {"type": "MultiPolygon", "coordinates": polygons},
    }


@functools.cache
def _module_preloads() -> str:
    """``<link rel="modulepreload">`` for the JavaScript libraries of the map and the charts.

    NiceGUI preloads the elements' small wrapper modules only; the libraries behind them (the
    Leaflet bundle, ECharts' entry and its 1.1 MB chunk) are found when a wrapper has been
    parsed, which on a busy main thread is late, and their download and compilation then hold
    up the page's start. Preloaded, the browser fetches and compiles them while it runs the
    page's other scripts.
    """
    import nicegui
    from nicegui.dependencies import esm_modules

    links = []
    for key, module in esm_modules.items():
        if module.name not in ("nicegui-leaflet", "nicegui-echart"):
            continue
        todo, seen = ["index.js"], set()
        while todo:  # the entry module and the chunks it imports statically
            name = todo.pop()
            if name in seen or not (module.path / name).is_file():
                continue
            seen.add(name)
            links.append(f"/_nicegui/{nicegui.__version__}/esm/{key}/{name}")
            text = (module.path / name).read_text(encoding="utf-8", errors="replace")
            todo += re.findall(r'(?:\bfrom|\bimport)\s*"\./([\w.-]+\.js)"', text)
    return "".join(f'<link rel="modulepreload" href="{url}">' for url in links)


def _chart(title: str, days: list[str], series: dict[str, list[int]]) -> dict[str, Any]:
    """A stacked area chart of intake per day. Drawn without animation: an animated chart
    repaints for about a second while the map is being drawn."""
    return {
        "title": {"text": title, "textStyle": {"fontSize": 13}},
        "animation": False,
        "tooltip": {"trigger": "axis"},
        "legend": {"top": 28, "type": "scroll"},
        "grid": {"top": 60, "left": 40, "right": 10, "bottom": 25},
        "xAxis": {"type": "category", "data": days},
        "yAxis": {"type": "value"},
        "series": [
            {"name": name, "type": "line", "stack": "total", "areaStyle": {}, "data": data}
            for name, data in series.items()
        ],
    }


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
    by_source = {SOURCES.get(s, s): v for s, v in k["intake_by_source"].items()}
    tid(
        ui.echart(_chart(t("按来源受理量", "Intake by source"), days, by_source)).classes(
            "w-full h-60"
        ),
        "chart-source",
    )
    # the category chart sits below the fold: it is drawn once the page is up (websocket
    # connected), so that the map and the first chart are not kept waiting for it
    holder = ui.element("div").classes("w-full").style("min-height: 15rem")
    by_category = _chart(t("按类别受理量", "Intake by category"), days, k["intake_by_category"])

    def category_chart() -> None:
        if holder.default_slot.children:
            return  # a reconnect: already there
        with holder:
            tid(ui.echart(by_category).classes("w-full h-60"), "chart-category")

    ui.context.client.on_connect(category_chart)
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

    @app.get("/console/map-layers/{digest}.js", include_in_schema=False)
    def map_layers(digest: str) -> Response:
        """A map page's static layers (:func:`_static_script`), for the scope they were made for."""
        p = auth.current()
        if p is None:
            return Response(status_code=401)
        entry = _static_scripts.get(digest)
        allowed = p.is_admin or bool(p.roles.intersection(ROLES))
        if entry is None or not allowed or entry[0] != p.scope_region_code:
            return Response(status_code=404)
        return Response(
            entry[1],
            media_type="text/javascript",
            headers={"Cache-Control": "private, max-age=31536000, immutable"},
        )

    @ui.page("/map")
    def map_page() -> None:
        p = auth.require(*ROLES)
        if p is None:
            return
        st = get_settings()
        ui.add_head_html(_module_preloads())
        prefix = p.scope_region_code
        with get_db().session() as s:
            lat, lon, zoom = scope_centre(s, prefix)
            regions = region_layers(s, prefix)
            geo_version = read_geo_version(s).get("grids", 0)
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
                        "lifeline": tid(
                            ui.checkbox(t("生命线监测", "Lifeline sensors"), value=True),
                            "layer-lifeline",
                        ),
                        "ponding": tid(
                            ui.checkbox(t("积水点", "Waterlogging"), value=True), "layer-ponding"
                        ),
                    }
                    for state_name, colour in (
                        (t("超期", "Overdue"), STAGE_COLOURS["overdue"]),
                        (t("临期", "Near due"), STAGE_COLOURS["near_due"]),
                        (t("正常", "In time"), STAGE_COLOURS["normal"]),
                    ):
                        ui.label(f"■ {state_name}").style(f"color: {colour}")
                m = tid(
                    _Map(center=(lat, lon), zoom=zoom, options={"zoomSnap": 1})
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
                if layer_type == "geoJSON":
                    args = [_one_path(args[0]), *args[1:]]
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
                # (the flood board behind it is a few queries: only when a layer shows it)
                wanted = show["lifeline"].value or show["ponding"].value
                lines = lifeline(s, p, utcnow()) if wanted else NO_LIFELINE
                state["lifeline"] = lines
            # markers keep a size on screen: metres per pixel at this zoom and latitude
            mpp = _metres_per_pixel(c_lat, z)
            groups = {
                "sensors": marker_layers(lines["sensors"], 9 * mpp)
                if show["lifeline"].value
                else {},
                "alarms": marker_layers(lines["alarms"], 18 * mpp, diamond=True)
                if show["lifeline"].value
                else {},
                "ponding": marker_layers(lines["ponding"], 12 * mpp, diamond=True)
                if show["ponding"].value
                else {},
            }
            for kind, layers in groups.items():
                for name in [n for n in state["layers"] if n.startswith(f"{kind}-")]:
                    if name[len(kind) + 1 :] not in layers:
                        put(name, "geoJSON", [])
                for colour, fc in layers.items():
                    style = {"color": colour, "weight": 2, "fillOpacity": 0.8}
                    put(f"{kind}-{colour}", "geoJSON", [fc, {"style": style}])

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
                mpp = _metres_per_pixel(c_lat, float(state["zoom"]))
                near = lifeline_near(state.get("lifeline") or NO_LIFELINE,
                                     c_lon, c_lat, max(30.0, 12 * mpp))  # fmt: skip
                for it in near[:5]:
                    if it["kind"] == "ponding":
                        depth = "—" if it["depth_cm"] is None else f"{it['depth_cm']:.0f} cm"
                        text = f"{t('积水点', 'Waterlogging')} {it['name']} · {depth} · " + t(
                            PONDING_STATES_ZH.get(it["status"], it["status"]), it["status"]
                        )
                    else:
                        level = it["alarm_level"]
                        alarm = t(f" · {level}级告警", f" · level {level} alarm") if level else ""
                        devices = ", ".join(f"{d['code']} ({d['status']})" for d in it["devices"])
                        text = f"{t('监测设施', 'Facility')} {it['name']}{alarm} · {devices}"
                    tid(ui.label(text).style(f"color: {it['colour']}"), f"details-{it['code']}")
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
        static = [f"r-{level}" for level in regions] + ["grids"]
        m.ship_layers(
            [state["layers"][name] for name in static if name in state["layers"]],
            (prefix, geo_version, zoom),
            regions,
            prefix,
        )

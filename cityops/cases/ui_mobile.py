"""Inspector's phone page 城管通 (``/m``): report, and do my 核实 / 核查 tasks on site.

* 上报 report: a camera photo (its EXIF position is offered), the position from the
  browser's geolocation or picked on the map, category, note → :func:`service.create_case`
  (source 监督员上报; or 自行处置 when the inspector fixed it on the spot, photo required).
* 我的任务 my tasks: the 核实 and 核查 tasks assigned to me, nearest first from my position;
  each is done on site with a photo through :func:`service.perform` (verify / check).

Phone-sized (``frame(..., mobile=True)``); no basemap tiles unless one is configured.
"""

from __future__ import annotations

from typing import Any

from nicegui import events, ui
from sqlalchemy import select
from sqlalchemy.orm import Session

from cityops.cases import queries, service
from cityops.cases.models import STAGES, Case
from cityops.cases.storage import default_storage
from cityops.console import auth
from cityops.console.i18n import t
from cityops.console.layout import frame, nav_item
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.core.security import Principal, lock_for_write
from cityops.core.settings import get_settings
from cityops.geo.crs import distance_m
from cityops.geo.models import Category, Grid, grid_inspectors
from cityops.geo.service import chosen_standard

TASK_STAGES = ("verify", "check")
GEOLOCATE_JS = """
new Promise((resolve) => {
  if (!navigator.geolocation) { resolve(null); return; }
  navigator.geolocation.getCurrentPosition(
    (p) => resolve([p.coords.longitude, p.coords.latitude]),
    () => resolve(null),
    {enableHighAccuracy: true, timeout: 8000, maximumAge: 60000});
})
"""


def my_tasks(
    session: Session, principal: Principal, lon: float | None, lat: float | None
) -> list[dict[str, Any]]:
    """My open 核实 / 核查 tasks, nearest first (by geodesic distance from lon/lat)."""
    rows = session.scalars(
        select(Case).where(Case.assignee_user_id == principal.user_id, Case.stage.in_(TASK_STAGES))
    ).all()
    cats = dict(
        session.execute(
            select(Category.id, Category.name).where(Category.id.in_({c.category_id for c in rows}))
        ).all()
    )
    out = []
    for c in rows:
        d = distance_m(lon, lat, c.lon, c.lat) if lon is not None and lat is not None else None
        out.append(
            {
                "id": c.id,
                "number": c.number,
                "stage": c.stage,
                "stage_name": STAGES[c.stage],
                "category": cats.get(c.category_id),
                "description": c.description,
                "address": c.address,
                "lon": c.lon,
                "lat": c.lat,
                "version": c.version,
                "distance_m": None if d is None else round(d, 1),
                "deadline": c.stage_deadline.isoformat() if c.stage_deadline else None,
            }
        )
    out.sort(key=lambda x: (x["distance_m"] is None, x["distance_m"] or 0.0, x["id"]))
    return out


def home_position(session: Session, principal: Principal) -> tuple[float, float] | None:
    """The centre of the inspector's first grid: the starting position before GPS."""
    import shapely

    gid = session.scalars(
        select(grid_inspectors.c.grid_id)
        .where(grid_inspectors.c.user_id == principal.user_id)
        .order_by(grid_inspectors.c.grid_id)
    ).first()
    grid = session.get(Grid, gid) if gid is not None else None
    if grid is None:
        return None
    p = shapely.point_on_surface(shapely.from_wkb(grid.geom))
    return float(p.x), float(p.y)


def report_categories(session: Session) -> dict[int, str]:
    std = chosen_standard(session)
    rows = session.execute(
        select(Category.id, Category.code, Category.name, Category.kind)
        .where(Category.enabled.is_(True), Category.standard.in_([std, "local"]))
        .order_by(Category.kind.desc(), Category.code)
    ).all()
    return {
        i: f"{'事项' if kind == 'matter' else '部件'} {code} {name}" for i, code, name, kind in rows
    }


async def _store_photo(p: Principal, e: events.UploadEventArguments) -> dict[str, Any] | None:
    """Store an uploaded photo as an attachment of ``p`` (EXIF position read, public copy
    without EXIF); None after telling the user why it was refused."""
    data = await e.file.read()
    try:
        with get_db().session() as s:
            lock_for_write(s)
            res = queries.upload(s, p, default_storage(), e.file.name, e.file.content_type, data)
            s.commit()
    except DomainError as exc:
        ui.notify(str(exc), type="negative")
        return None
    return res


def register() -> None:
    nav_item("/m", "城管通", "Inspector app", "smartphone", "inspector")

    @ui.page("/m")
    def mobile_page() -> None:
        p = auth.require("inspector")
        if p is None:
            return
        with get_db().session() as s:
            start = home_position(s, p)
            cats = report_categories(s)
        pos: dict[str, Any] = {"lon": None, "lat": None, "source": None}
        if start is not None:
            pos.update(lon=start[0], lat=start[1], source="grid")
        photos: dict[str, Any] = {"report": [], "exif": None}

        ui.add_head_html('<meta name="viewport" content="width=device-width, initial-scale=1">')
        with frame(t("城管通", "Inspector app"), p, mobile=True):
            where = tid(ui.label("").classes("text-caption text-grey-8"), "position")
            with ui.row().classes("gap-1"):
                tid(
                    ui.button(t("定位", "Locate me"), on_click=lambda: locate()).props(
                        "dense outline icon=my_location"
                    ),
                    "locate",
                )
            m = tid(
                ui.leaflet(center=(pos["lat"] or 33.9, pos["lon"] or 116.8), zoom=16).style(
                    "height: 30vh; width: 100%; background: #eef2f5"
                ),
                "pick-map",
            )
            m.clear_layers()
            st = get_settings()
            if st.basemap_url:
                m.tile_layer(
                    url_template=st.basemap_url, options={"attribution": st.basemap_attribution}
                )
            with ui.tabs().classes("w-full") as tabs:
                tab_tasks = tid(ui.tab(t("我的任务", "My tasks")), "tab-tasks")
                tab_report = tid(ui.tab(t("上报", "Report")), "tab-report")
            with ui.tab_panels(tabs, value=tab_tasks).classes("w-full"):
                with ui.tab_panel(tab_tasks).classes("q-pa-none"):
                    tasks_box = tid(ui.column().classes("w-full gap-2"), "tasks")
                with ui.tab_panel(tab_report).classes("q-pa-none gap-2"):
                    up = tid(
                        ui.upload(
                            label=t("拍照/选择照片", "Take / choose a photo"),
                            auto_upload=True,
                            max_files=3,
                        )
                        .props('accept="image/*" capture="environment"')
                        .classes("w-full"),
                        "report-photo",
                    )
                    exif_box = tid(ui.row().classes("items-center"), "exif")
                    category = tid(
                        ui.select(cats, label=t("问题类别", "Category"), with_input=True).classes(
                            "w-full"
                        ),
                        "report-category",
                    )
                    note = tid(
                        ui.textarea(t("问题描述", "Description")).classes("w-full"),
                        "report-note",
                    )
                    address = tid(
                        ui.input(t("地址（可选）", "Address (optional)")), "report-address"
                    )
                    self_fix = tid(
                        ui.checkbox(t("自行处置（已当场解决）", "Fixed on the spot (自行处置)")),
                        "report-self",
                    )
                    msg = tid(ui.label("").classes("text-negative"), "report-error")
                    done = tid(ui.label("").classes("text-positive"), "report-done")
                    tid(
                        ui.button(t("提交上报", "Submit"), on_click=lambda: submit()).props(
                            "color=primary"
                        ),
                        "report-submit",
                    )

        marker: dict[str, Any] = {"layer": None}

        def show_position() -> None:
            if pos["lon"] is None:
                where.text = t(
                    "位置未知：请定位或在地图上点选", "Position unknown: locate or tap the map"
                )
                return
            src = {
                "gps": t("定位", "GPS"),
                "map": t("地图点选", "picked on map"),
                "exif": t("照片位置", "photo position"),
                "grid": t("我的网格", "my grid"),
            }.get(pos["source"] or "", "")
            where.text = f"{t('当前位置', 'Position')}: {pos['lon']:.6f}, {pos['lat']:.6f} ({src})"
            if marker["layer"] is not None and marker["layer"] in m.layers:
                m.remove_layer(marker["layer"])
            marker["layer"] = m.marker(latlng=(pos["lat"], pos["lon"]))

        def set_position(lon: float, lat: float, source: str) -> None:
            pos.update(lon=lon, lat=lat, source=source)
            show_position()
            refresh_tasks()

        async def locate() -> None:
            try:
                got = await ui.run_javascript(GEOLOCATE_JS, timeout=10)
            except Exception:  # no browser answer (simulation, timeout)
                got = None
            if isinstance(got, list) and len(got) == 2:
                set_position(float(got[0]), float(got[1]), "gps")
                m.set_center((float(got[1]), float(got[0])))
            else:
                ui.notify(t("无法获取定位，请在地图上点选", "No GPS: tap the map"), type="warning")

        def picked(e: events.GenericEventArguments) -> None:
            ll = e.args.get("latlng") or {}
            if "lat" in ll and "lng" in ll:
                set_position(float(ll["lng"]), float(ll["lat"]), "map")

        m.on("map-click", picked)

        async def photo_uploaded(e: events.UploadEventArguments) -> None:
            res = await _store_photo(p, e)
            if res is None:
                return
            photos["report"].append(int(res["id"]))
            loc = res.get("exif_location")
            exif_box.clear()
            if loc:
                photos["exif"] = (loc["lon"], loc["lat"])
                with exif_box:
                    tid(
                        ui.button(
                            t("使用照片拍摄位置", "Use the photo's position"),
                            on_click=lambda: set_position(loc["lon"], loc["lat"], "exif"),
                        ).props("dense outline icon=photo_camera"),
                        "use-exif",
                    )

        up.on_upload(photo_uploaded)

        def submit() -> None:
            msg.text = ""
            if pos["lon"] is None:
                msg.text = t("请先确定位置", "Set the position first")
                return
            if category.value is None:
                msg.text = t("请选择问题类别", "Choose a category")
                return
            data = {
                "source": "self" if self_fix.value else "inspector",
                "category_id": int(category.value),
                "description": note.value or "",
                "lon": pos["lon"],
                "lat": pos["lat"],
                "address": address.value or None,
                "attachment_ids": list(photos["report"]),
            }
            try:
                with get_db().session() as s:
                    lock_for_write(s)
                    case = service.create_case(s, p, data).case
                    number, stage = case.number, STAGES[case.stage]
                    s.commit()
            except DomainError as exc:
                msg.text = str(exc)
                return
            photos["report"].clear()
            exif_box.clear()
            up.reset()
            note.value = ""
            self_fix.value = False
            ui.notify(f"{t('已上报', 'Reported')} {number} · {stage}", type="positive")
            done.text = f"{t('已上报', 'Reported')} {number} · {stage}"

        def refresh_tasks() -> None:
            with get_db().session() as s:
                tasks = my_tasks(s, p, pos["lon"], pos["lat"])
            tasks_box.clear()
            with tasks_box:
                if not tasks:
                    tid(ui.label(t("暂无任务", "No tasks")).classes("text-grey-6"), "no-tasks")
                for task in tasks:
                    _task_card(task)

        def _task_card(task: dict[str, Any]) -> None:
            ids: list[int] = []
            dist = f"{task['distance_m']:.0f} m" if task["distance_m"] is not None else "—"
            with tid(ui.card().classes("w-full q-pa-sm"), f"task-{task['number']}"):
                ui.label(f"{task['stage_name']} · {task['number']} · {task['category']}").classes(
                    "text-subtitle2"
                )
                tid(ui.label(f"{t('距离', 'Distance')} {dist}"), f"task-distance-{task['number']}")
                ui.label(task["description"]).classes("text-body2")
                if task["address"]:
                    ui.label(task["address"]).classes("text-caption text-grey-7")
                remark = ui.input(t("说明", "Note")).classes("w-full")

                async def got(e: events.UploadEventArguments) -> None:
                    res = await _store_photo(p, e)
                    if res is None:
                        return
                    ids.append(int(res["id"]))
                    count.text = f"{t('已传照片', 'Photos')}: {len(ids)}"

                count = tid(ui.label("").classes("text-caption"), f"task-photos-{task['number']}")
                tid(
                    ui.upload(label=t("现场照片", "Photo on site"), auto_upload=True)
                    .props('accept="image/*" capture="environment"')
                    .classes("w-full")
                    .on_upload(got),
                    f"task-photo-{task['number']}",
                )

                def act(ok: bool) -> None:
                    payload: dict[str, Any] = {
                        "note": remark.value or None,
                        "attachment_ids": list(ids),
                    }
                    if task["stage"] == "verify":
                        action = "verify"
                        payload["confirmed"] = ok
                        if not ok and not remark.value:
                            payload["note"] = "核实不属实"
                    else:
                        action = "check"
                        payload["passed"] = ok
                    try:
                        with get_db().session() as s:
                            lock_for_write(s)
                            service.perform(s, p, task["id"], action, payload, task["version"])
                            s.commit()
                    except DomainError as exc:
                        ui.notify(str(exc), type="negative")
                        return
                    ui.notify(f"{task['number']} {t('已提交', 'done')}", type="positive")
                    refresh_tasks()

                yes, no = (
                    (t("属实", "Confirmed"), t("不属实", "Not found"))
                    if task["stage"] == "verify"
                    else (t("核查通过", "Passed"), t("未通过（返工）", "Failed (rework)"))
                )
                with ui.row().classes("gap-2"):
                    tid(
                        ui.button(yes, on_click=lambda: act(True)).props("color=positive"),
                        f"task-yes-{task['number']}",
                    )
                    tid(
                        ui.button(no, on_click=lambda: act(False)).props("color=negative outline"),
                        f"task-no-{task['number']}",
                    )

        show_position()
        refresh_tasks()

"""Citizens' phone pages (no login): 随手拍 report, progress by tracking code, rating, 便民服务.

* ``/public`` — the start page;
* ``/public/report`` — photo, position (browser geolocation or a tap on the map), category,
  description, optional phone number → the tracking code;
* ``/public/track?code=…`` — progress, the result photo (EXIF removed) once closed, and the
  rating (满意 / 基本满意 / 不满意, once);
* ``/public/services`` — the nearest public toilets, parks and parking with distances.

Everything goes through :mod:`cityops.public.service` (the same checks and rate limits as the
public API); no personal data is shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from nicegui import events, ui

from cityops.cases.storage import default_storage
from cityops.console.i18n import t
from cityops.console.widgets import tid
from cityops.core.db import get_db
from cityops.core.errors import DomainError
from cityops.core.security import lock_for_write
from cityops.core.settings import get_settings
from cityops.public import service
from cityops.public.models import RATINGS

GEOLOCATE_JS = """
new Promise((resolve) => {
  if (!navigator.geolocation) { resolve(null); return; }
  navigator.geolocation.getCurrentPosition(
    (p) => resolve([p.coords.longitude, p.coords.latitude]),
    () => resolve(null), {enableHighAccuracy: true, timeout: 8000, maximumAge: 60000});
})
"""


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _head(title: str) -> None:
    ui.page_title(f"{title} · 城市服务")
    ui.add_head_html('<meta name="viewport" content="width=device-width, initial-scale=1">')
    with ui.header().classes("items-center q-px-md q-py-xs bg-teal-8"):
        ui.link("城市服务", "/public").classes("text-white text-h6 no-underline")
        tid(ui.label(title).classes("text-white text-subtitle1 q-ml-sm"), "title")


def _map(lat: float, lon: float, height: str = "32vh") -> ui.leaflet:
    m = ui.leaflet(center=(lat, lon), zoom=15).style(
        f"height: {height}; width: 100%; background: #eef2f5"
    )
    m.clear_layers()  # no internet tiles unless the city configured a basemap
    st = get_settings()
    if st.basemap_url:
        m.tile_layer(url_template=st.basemap_url, options={"attribution": st.basemap_attribution})
    return m


def _centre() -> tuple[float, float]:
    from cityops.console.command import scope_centre

    with get_db().session() as s:
        lat, lon, _ = scope_centre(s, None)
    return lat, lon


class _Position:
    """The citizen's position: geolocation, a tap on the map, or the photo's EXIF."""

    def __init__(self, m: ui.leaflet, label: ui.label) -> None:
        self.lon: float | None = None
        self.lat: float | None = None
        self.map = m
        self.label = label
        self.marker: Any = None
        self.listeners: list[Any] = []
        m.on("map-click", self._clicked)
        self.show()

    def _clicked(self, e: events.GenericEventArguments) -> None:
        ll = e.args.get("latlng") or {}
        if "lat" in ll and "lng" in ll:
            self.set(float(ll["lng"]), float(ll["lat"]))

    def set(self, lon: float, lat: float) -> None:
        self.lon, self.lat = lon, lat
        if self.marker is not None and self.marker in self.map.layers:
            self.map.remove_layer(self.marker)
        self.marker = self.map.marker(latlng=(lat, lon))
        self.show()
        for fn in self.listeners:
            fn()

    def show(self) -> None:
        if self.lon is None or self.lat is None:
            self.label.text = t("请定位或在地图上点选位置", "Locate me, or tap the map")
        else:
            self.label.text = f"{t('位置', 'Position')}: {self.lon:.5f}, {self.lat:.5f}"

    async def locate(self) -> None:
        try:
            got = await ui.run_javascript(GEOLOCATE_JS, timeout=10)
        except Exception:  # no answer from the browser
            got = None
        if isinstance(got, list) and len(got) == 2:
            self.set(float(got[0]), float(got[1]))
            self.map.set_center((float(got[1]), float(got[0])))
        else:
            ui.notify(t("无法定位，请在地图上点选", "No position: tap the map"), type="warning")


def register() -> None:
    @ui.page("/public")
    def public_home() -> None:
        _head(t("便民服务", "City services"))
        with ui.column().classes("w-full q-pa-md gap-3"):
            for path, zh, en, icon, name in (
                (
                    "/public/report",
                    "随手拍：我要反映问题",
                    "Report a problem",
                    "photo_camera",
                    "go-report",
                ),
                ("/public/track", "查询办理进度", "Track my report", "search", "go-track"),
                (
                    "/public/services",
                    "附近公厕、公园、停车场",
                    "Toilets, parks, parking nearby",
                    "place",
                    "go-services",
                ),
            ):
                tid(
                    ui.button(t(zh, en), icon=icon, on_click=lambda p=path: ui.navigate.to(p))
                    .props("color=teal-8 size=lg")
                    .classes("w-full"),
                    name,
                )

    @ui.page("/public/report")
    def public_report(request: Request) -> None:
        ip = _ip(request)
        lat0, lon0 = _centre()
        with get_db().session() as s:
            cats = {c["code"]: f"{c['name']}（{c['group']}）" for c in service.categories(s)}
        photo: dict[str, Any] = {"file": None, "exif": None}
        pos: _Position
        _head(t("随手拍", "Report a problem"))
        with ui.column().classes("w-full q-pa-md gap-2") as body:
            up = tid(
                ui.upload(label=t("拍照或选择照片", "Take or choose a photo"), auto_upload=True)
                .props('accept="image/*" capture="environment"')
                .classes("w-full"),
                "photo",
            )
            photo_note = tid(ui.label("").classes("text-caption"), "photo-note")
            where = tid(ui.label("").classes("text-caption text-grey-8"), "position")
            with ui.row().classes("gap-2"):
                tid(
                    ui.button(t("定位", "Locate me"), on_click=lambda: pos.locate()).props(
                        "dense outline icon=my_location"
                    ),
                    "locate",
                )
                use_exif = tid(
                    ui.button(
                        t("使用照片位置", "Use the photo's position"),
                        on_click=lambda: pos.set(*photo["exif"]) if photo["exif"] else None,
                    ).props("dense outline icon=photo_camera"),
                    "use-exif",
                )
                use_exif.visible = False
            m = tid(_map(lat0, lon0), "map")
            pos = _Position(m, where)
            category = tid(
                ui.select(cats, label=t("问题类别", "Category"), with_input=True).classes("w-full"),
                "category",
            )
            text = tid(
                ui.textarea(t("问题描述", "What is wrong?")).classes("w-full"), "description"
            )
            address = tid(
                ui.input(t("地址（可选）", "Address (optional)")).classes("w-full"), "address"
            )
            phone = tid(
                ui.input(
                    t("手机号（可选，用于回访）", "Phone (optional, for a call back)")
                ).classes("w-full"),
                "phone",
            )
            error = tid(ui.label("").classes("text-negative"), "error")
            submit_btn = tid(
                ui.button(t("提交", "Send"), on_click=lambda: submit()).props("color=teal-8"),
                "submit",
            )

        async def got_photo(e: events.UploadEventArguments) -> None:
            data = await e.file.read()
            from cityops.cases.storage import prepare

            try:
                prep = prepare(e.file.name, e.file.content_type, data)
            except DomainError as exc:
                error.text = str(exc)
                return
            photo["file"] = (e.file.name, e.file.content_type, data)
            photo_note.text = t("已选择照片", "Photo added")
            if prep.exif_lon is not None and prep.exif_lat is not None:
                photo["exif"] = (prep.exif_lon, prep.exif_lat)
                use_exif.visible = True

        up.on_upload(got_photo)

        def submit() -> None:
            error.text = ""
            if pos.lon is None or pos.lat is None:
                error.text = t("请先确定问题位置", "Set the place first")
                return
            try:
                with get_db().session() as s:
                    lock_for_write(s)
                    out = service.report(
                        s,
                        default_storage(),
                        category_code=category.value or "",
                        description=text.value or "",
                        lon=pos.lon,
                        lat=pos.lat,
                        address=address.value or None,
                        phone=phone.value or None,
                        photo=photo["file"],
                        ip=ip,
                    )
                    s.commit()
            except DomainError as exc:
                error.text = str(exc)
                return
            body.clear()
            with body:
                ui.label(t("提交成功，感谢您的反映！", "Thank you! Your report is in.")).classes(
                    "text-h6"
                )
                ui.label(t("查询码（请保存）", "Your tracking code (keep it)"))
                tid(ui.label(out["tracking_code"]).classes("text-h4 text-teal-9"), "tracking-code")
                tid(
                    ui.button(
                        t("查询进度", "Track it"),
                        on_click=lambda: ui.navigate.to(
                            f"/public/track?code={out['tracking_code']}"
                        ),
                    ).props("color=teal-8"),
                    "track-it",
                )

        _ = submit_btn

    @ui.page("/public/track")
    def public_track(request: Request, code: str = "") -> None:
        ip = _ip(request)
        _head(t("办理进度", "Progress"))
        with ui.column().classes("w-full q-pa-md gap-2"):
            with ui.row().classes("w-full items-center no-wrap"):
                box = tid(ui.input(t("查询码", "Tracking code"), value=code).classes("col"), "code")
                tid(
                    ui.button(t("查询", "Look up"), on_click=lambda: look()).props("color=teal-8"),
                    "look-up",
                )
            result = tid(ui.column().classes("w-full gap-1"), "result")

        def look() -> None:
            result.clear()
            with result:
                try:
                    with get_db().session() as s:
                        service.check_read(ip)
                        st = service.status(s, box.value or "")
                except DomainError as exc:
                    tid(ui.label(str(exc)).classes("text-negative"), "track-error")
                    return
                tid(ui.label(f"{st['stage_name']}").classes("text-h5"), "stage")
                ui.label(f"{st['category'] or ''} {st['address'] or ''}").classes("text-grey-8")
                with ui.timeline(side="right").classes("w-full"):
                    for step in st["steps"]:
                        ui.timeline_entry(title=step["label"], subtitle=_local(step["at"]))
                if st["end_reason"]:
                    ui.label(st["end_reason"])
                for pid in st["result_photo_ids"]:
                    tid(
                        ui.image(
                            f"/api/v1/public/cases/{st['tracking_code']}/photos/{pid}"
                        ).classes("w-full"),
                        "result-photo",
                    )
                if st["rating"]:
                    tid(
                        ui.label(f"{t('您的评价', 'Your rating')}: {st['rating']['label']}"),
                        "rated",
                    )
                if st["can_rate"]:
                    comment = tid(ui.input(t("评价意见（可选）", "Comment (optional)")), "comment")
                    with ui.row().classes("gap-2"):
                        for key, label in RATINGS.items():
                            tid(
                                ui.button(
                                    label,
                                    on_click=lambda k=key: rate(
                                        st["tracking_code"], k, comment.value
                                    ),
                                ).props("color=teal-8 outline"),
                                f"rate-{key}",
                            )

        def rate(tracking: str, rating: str, comment: str | None) -> None:
            try:
                with get_db().session() as s:
                    lock_for_write(s)
                    service.check_read(ip)
                    service.rate(s, tracking, rating, comment or None)
                    s.commit()
            except DomainError as exc:
                ui.notify(str(exc), type="negative")
                return
            ui.notify(t("感谢您的评价", "Thank you for rating"), type="positive")
            look()

        if code:
            look()

    @ui.page("/public/services")
    def public_services(request: Request) -> None:
        ip = _ip(request)
        lat0, lon0 = _centre()
        _head(t("便民服务", "Services nearby"))
        layers: list[Any] = []
        pos: _Position
        with ui.column().classes("w-full q-pa-md gap-2"):
            kind = tid(
                ui.toggle({k: v for k, v in service.POI_NAMES.items()}, value="toilet").props(
                    "color=teal-8"
                ),
                "kind",
            )
            where = tid(ui.label("").classes("text-caption text-grey-8"), "position")
            tid(
                ui.button(t("定位", "Locate me"), on_click=lambda: pos.locate()).props(
                    "dense outline icon=my_location"
                ),
                "locate",
            )
            m = tid(_map(lat0, lon0, "36vh"), "map")
            pos = _Position(m, where)
            listing = tid(ui.column().classes("w-full gap-1"), "pois")

        def refresh() -> None:
            for layer in layers:
                if layer in m.layers:
                    m.remove_layer(layer)
            layers.clear()
            listing.clear()
            with listing:
                if pos.lon is None or pos.lat is None:
                    ui.label(t("请定位或在地图上点选您的位置", "Locate me, or tap the map"))
                    return
                try:
                    with get_db().session() as s:
                        service.check_read(ip)
                        rows = service.nearest_pois(s, kind.value, pos.lon, pos.lat, 5)
                except DomainError as exc:
                    ui.label(str(exc)).classes("text-negative")
                    return
                if not rows:
                    ui.label(t("附近没有找到", "Nothing nearby"))
                for i, r in enumerate(rows, 1):
                    with tid(ui.card().classes("w-full q-pa-sm"), f"poi-{i}"):
                        ui.label(f"{i}. {r['name']}").classes("text-subtitle2")
                        tid(ui.label(f"{r['distance_m']:.0f} 米"), f"poi-distance-{i}")
                        if r["address"]:
                            ui.label(r["address"]).classes("text-caption text-grey-7")
                    layers.append(m.marker(latlng=(r["lat"], r["lon"])))

        pos.listeners.append(refresh)
        kind.on_value_change(lambda _e: refresh())
        pos.set(lon0, lat0)


def _local(iso: str | None) -> str:
    if not iso:
        return ""
    from datetime import datetime

    from cityops.worktime.service import TZ

    return datetime.fromisoformat(iso).astimezone(TZ).strftime("%Y-%m-%d %H:%M")

"""Citizen reporting (随手拍) and public services (便民服务): logic shared by API and pages.

No login: a report is filed by :data:`PUBLIC` (a system principal, source ``public`` 公众举报)
and the citizen gets the case's tracking code. Everything a citizen can read is built here
and holds no personal data (reporter name, phone, inspector or handler names): status by
tracking code, the EXIF-free copy of the result photo once the case is closed, the rating
(满意度评价, once per closed case) and the nearest public toilets, parks and parking.

Abuse control: a small in-process sliding-window limiter per client IP and per phone number
(:class:`SlidingWindow`); limits come from ``CITYOPS_PUBLIC_*`` settings
(:class:`PublicSettings`). A refused call raises :class:`RateLimited` (HTTP 429 with
``Retry-After``). The limiter is per process: several API processes each count on their own.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.cases import service as cases
from cityops.cases.models import STAGES, Case, CaseAttachment
from cityops.cases.queries import upload
from cityops.cases.storage import Storage
from cityops.core.db import utcnow
from cityops.core.errors import Conflict, DomainError, Invalid, NotFound
from cityops.core.security import Principal
from cityops.geo.crs import GEOD
from cityops.geo.models import POI_KINDS, Category, Poi
from cityops.geo.service import chosen_standard
from cityops.public.models import RATINGS, CitizenRating

#: The system principal that files citizens' reports (never a real user; user_id 0).
PUBLIC = Principal(
    user_id=0,
    username="public",
    display_name="公众",
    roles=frozenset({"system"}),
    unit_id=None,
    scope_region_code=None,
    scope_unit_only=False,
)

POI_NAMES = {"toilet": "公共厕所", "park": "公园", "parking": "停车场"}
#: What a citizen sees of a case's progress, in order: (stage timestamp column, label).
MILESTONES = (
    ("reported_at", "已上报"),
    ("accepted_at", "已受理"),
    ("verified_at", "已核实"),
    ("filed_at", "已立案"),
    ("dispatched_at", "已派遣"),
    ("handled_at", "已处置"),
    ("checked_at", "已核查"),
    ("closed_at", "已结案"),
)
_PHONE = re.compile(r"^\+?[0-9][0-9 -]{5,18}[0-9]$")
_CODE = re.compile(r"^[A-Z0-9]{4,16}$")


class PublicSettings(BaseSettings):
    """Limits of the public endpoints (``CITYOPS_PUBLIC_*`` environment variables)."""

    model_config = SettingsConfigDict(env_prefix="CITYOPS_PUBLIC_", extra="ignore")

    #: Reports per client IP per hour, and per phone number per day.
    reports_per_ip_per_hour: int = 10
    reports_per_phone_per_day: int = 5
    #: Other public calls (status, rating, POIs, categories) per client IP per minute.
    reads_per_ip_per_minute: int = 120


@lru_cache(maxsize=1)
def public_settings() -> PublicSettings:
    return PublicSettings()


class RateLimited(DomainError):
    """Too many calls from this client or phone number; retry after ``retry_after`` s."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class SlidingWindow:
    """At most ``limit`` hits per key within the last ``window`` seconds (thread-safe)."""

    def __init__(self, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str, limit: int) -> int | None:
        """Count a hit; None when allowed, else the seconds until the next one is allowed."""
        now = self.clock()
        with self._lock:
            q = self._hits.setdefault(key, deque())
            while q and q[0] <= now - self.window:
                q.popleft()
            if len(q) >= limit:
                return max(1, math.ceil(q[0] + self.window - now))
            q.append(now)
            if len(self._hits) > 100_000:  # forget idle keys now and then
                for k in [k for k, v in self._hits.items() if not v or v[-1] <= now - self.window]:
                    del self._hits[k]
            return None

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()


_reports_by_ip = SlidingWindow(3600.0)
_reports_by_phone = SlidingWindow(86400.0)
_reads_by_ip = SlidingWindow(60.0)


def reset_limits() -> None:
    """Forget every counted hit (tests, or an operator after a false alarm)."""
    for w in (_reports_by_ip, _reports_by_phone, _reads_by_ip):
        w.clear()


def check_read(ip: str | None) -> None:
    wait = _reads_by_ip.hit(ip or "?", public_settings().reads_per_ip_per_minute)
    if wait is not None:
        raise RateLimited(f"请求过于频繁，请 {wait} 秒后再试 (too many requests)", wait)


def _check_report(ip: str | None, phone: str | None) -> None:
    st = public_settings()
    wait = _reports_by_ip.hit(ip or "?", st.reports_per_ip_per_hour)
    if wait is not None:
        raise RateLimited(f"上报过于频繁，请 {wait} 秒后再试 (too many reports)", wait)
    if phone:
        wait = _reports_by_phone.hit(phone, st.reports_per_phone_per_day)
        if wait is not None:
            raise RateLimited(
                f"此手机号今日上报次数已达上限，请 {wait} 秒后再试 (too many reports)", wait
            )


# --------------------------------------------------------------------------- reading helpers


def categories(session: Session) -> list[dict[str, Any]]:
    """Problem categories a citizen can choose from (事项 of the city's chosen standard)."""
    std = chosen_standard(session)
    rows = session.execute(
        select(Category.code, Category.name, Category.big_class_name)
        .where(
            Category.kind == "matter",
            Category.enabled.is_(True),
            Category.standard.in_([std, "local"]),
        )
        .order_by(Category.code)
    ).all()
    return [{"code": c, "name": n, "group": g} for c, n, g in rows]


def _normal_phone(phone: str | None) -> str | None:
    if phone is None or not phone.strip():
        return None
    p = phone.strip()
    if not _PHONE.match(p):
        raise Invalid("手机号格式不正确 (phone number)", field="phone", value="***")
    return re.sub(r"[ -]", "", p)


def report(
    session: Session,
    storage: Storage,
    *,
    category_code: str,
    description: str,
    lon: float,
    lat: float,
    address: str | None = None,
    phone: str | None = None,
    photo: tuple[str, str | None, bytes] | None = None,
    ip: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """随手拍: file a citizen's report (source 公众举报); returns its tracking code.

    Checks the input before counting it against the rate limits, so a typo costs nothing."""
    ph = _normal_phone(phone)
    if not description or not description.strip():
        raise Invalid("请描述问题 (description is required)", field="description")
    if len(description) > 1000:
        raise Invalid("问题描述最多 1000 字", field="description", value=len(description))
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise Invalid("位置无效 (lon/lat)", field="lon/lat")
    codes = {c["code"] for c in categories(session)}
    if category_code not in codes:
        raise Invalid(
            "请选择问题类别 (unknown category)", field="category_code", value=category_code
        )
    _check_report(ip, ph)
    ids: list[int] = []
    if photo is not None:
        up = upload(session, PUBLIC, storage, photo[0], photo[1], photo[2])
        ids.append(int(up["id"]))
    data: dict[str, Any] = {
        "source": "public",
        "category_code": category_code,
        "description": description.strip(),
        "lon": lon,
        "lat": lat,
        "address": (address or "").strip()[:300] or None,
        "reporter_phone": ph,
        "attachment_ids": ids,
    }
    try:
        result = cases.create_case(session, PUBLIC, data, now)
    except NotFound:
        raise Invalid(
            "该位置不在本市服务范围内 (the place is outside the city's grids)", field="lon/lat"
        ) from None
    return {"tracking_code": result.case.tracking_code, "stage_name": STAGES["accept"]}


def _case_by_code(session: Session, code: str) -> Case:
    c = (code or "").strip().upper()
    case = (
        session.scalars(select(Case).where(Case.tracking_code == c)).first()
        if _CODE.match(c)
        else None
    )
    if case is None:
        raise NotFound("查询码不存在 (no such tracking code)", field="code")
    return case


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def status(session: Session, code: str) -> dict[str, Any]:
    """A report's progress as a citizen sees it (no personal data, no staff names)."""
    case = _case_by_code(session, code)
    cat = session.get(Category, case.category_id)
    steps = [
        {"label": label, "at": _iso(getattr(case, col))}
        for col, label in MILESTONES
        if getattr(case, col) is not None
    ]
    photos: list[int] = []
    if case.stage == "closed":
        photos = list(
            session.scalars(
                select(CaseAttachment.id)
                .where(
                    CaseAttachment.case_id == case.id,
                    CaseAttachment.purpose == "after",
                    CaseAttachment.public_key.is_not(None),
                )
                .order_by(CaseAttachment.id)
            )
        )
    rating = session.scalars(select(CitizenRating).where(CitizenRating.case_id == case.id)).first()
    ended = case.stage in ("rejected", "void", "merged")
    return {
        "tracking_code": case.tracking_code,
        "stage": case.stage,
        "stage_name": STAGES.get(case.stage, case.stage),
        "category": cat.name if cat else None,
        "address": case.address,
        "reported_at": _iso(case.reported_at),
        "closed_at": _iso(case.closed_at),
        "steps": steps,
        "end_reason": case.end_reason if ended else None,
        "result_photo_ids": photos,
        "can_rate": case.stage == "closed" and rating is None,
        "rating": None
        if rating is None
        else {"rating": rating.rating, "label": RATINGS[rating.rating], "comment": rating.comment},
    }


def result_photo(session: Session, storage: Storage, code: str, photo_id: int) -> tuple[str, bytes]:
    """The EXIF-free copy of a closed case's handling photo: (content type, bytes)."""
    case = _case_by_code(session, code)
    att = session.get(CaseAttachment, photo_id)
    if (
        case.stage != "closed"
        or att is None
        or att.case_id != case.id
        or att.purpose != "after"
        or att.public_key is None
    ):
        raise NotFound("照片不存在 (no such photo)", field="photo_id")
    return att.content_type, storage.get(att.public_key)


def rate(
    session: Session,
    code: str,
    rating: str,
    comment: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """满意度评价: once per closed case."""
    if rating not in RATINGS:
        raise Invalid(f"rating must be one of {', '.join(RATINGS)}", field="rating", value=rating)
    if comment is not None and len(comment) > 500:
        raise Invalid("评价最多 500 字", field="comment", value=len(comment))
    case = _case_by_code(session, code)
    if case.stage != "closed":
        raise Conflict(
            "案件尚未结案，结案后才能评价 (the case is not closed yet)", stage=case.stage
        )
    exists = session.scalar(select(CitizenRating.id).where(CitizenRating.case_id == case.id))
    if exists is not None:
        raise Conflict("该案件已评价过 (already rated)")
    row = CitizenRating(
        case_id=case.id,
        rating=rating,
        comment=(comment or "").strip() or None,
        created_at=now or utcnow(),
    )
    sp = session.begin_nested()
    try:
        session.add(row)
        session.flush()
    except IntegrityError:
        sp.rollback()
        raise Conflict("该案件已评价过 (already rated)") from None
    sp.commit()
    return {"rating": rating, "label": RATINGS[rating], "comment": row.comment}


def nearest_pois(
    session: Session, kind: str, lon: float, lat: float, limit: int = 5
) -> list[dict[str, Any]]:
    """The ``limit`` nearest public toilets / parks / parking lots, with geodesic distance."""
    if kind not in POI_KINDS:
        raise Invalid(f"kind must be one of {', '.join(POI_KINDS)}", field="kind", value=kind)
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise Invalid("位置无效 (lon/lat)", field="lon/lat")
    if not 1 <= limit <= 50:
        raise Invalid("limit must be between 1 and 50", field="limit", value=limit)
    rows = session.execute(
        select(Poi.id, Poi.name, Poi.address, Poi.lon, Poi.lat).where(Poi.kind == kind)
    ).all()
    if not rows:
        return []
    lons = np.array([r[3] for r in rows], dtype=np.float64)
    lats = np.array([r[4] for r in rows], dtype=np.float64)
    _, _, dist = GEOD.inv(np.full_like(lons, lon), np.full_like(lats, lat), lons, lats)
    order = np.argsort(dist, kind="stable")[:limit]
    return [
        {
            "id": rows[i][0],
            "kind": kind,
            "kind_name": POI_NAMES[kind],
            "name": rows[i][1],
            "address": rows[i][2],
            "lon": rows[i][3],
            "lat": rows[i][4],
            "distance_m": round(float(dist[i]), 1),
        }
        for i in order
    ]

"""Fast intake (上报) for the HTTP API: read-only preparation + a per-process group-commit writer.

:func:`cityops.cases.service.create_case` does everything through the ORM inside the
request's transaction (~25 statements; on SQLite the database write lock is held for the
whole request). Under load that serialises intake at ~100/s. This module splits an intake:

1. :func:`prepare` — in the request's thread, **without** any write lock: validation, role
   check, category, locate (grid → community → street → district), the component, whether
   the channel is filed automatically (自动受理/立案), the dispatch rule (自动派遣) and its
   units, the users to notify, and every stage deadline on the working-time clock. Any
   refusal (401/403/404/422) is raised here, so nothing is written for it. The small
   tables it reads (standard, auto-filed channels, categories, active rules and units,
   grid inspectors) come from :class:`IntakeConfig`, a per-process snapshot that a commit
   touching them in this process drops at once, and that is re-read after
   ``CITYOPS_INDEX_REFRESH_SECONDS`` otherwise (the policy of the spatial indexes and the
   working-time clock, for changes made by other processes).
2. :class:`IntakeBatcher` — one writer thread per process and database. Requests hand it
   prepared intakes and wait; it takes everything queued (up to :data:`MAX_BATCH`) and
   writes it in ONE transaction (group commit): the duplicate check (one query for the
   batch, plus the earlier intakes of the same batch), the case numbers (one counter
   step per day), then bulk inserts of cases, case units, history events, notifications
   and audit rows (SQLite ``executemany``; PostgreSQL ``COPY``, case ids taken from the
   sequence first), and the evaluation rollup counters: the rollup's ORM listener does not
   see these inserts, so the batch's facts are derived by the rollup's own replay code
   (that of a rebuild) over the rows just written, and upserted. After the commit each
   request is woken with its own result. On SQLite the writers of all processes take
   turns on a file lock (see :func:`_writer_turn`).
3. :func:`answer` — the case detail for the response, built from the rows written (the
   same dict as ``queries.case_detail``; a test compares them), so nothing is read back.

Intakes that need the ORM path — 自行处置 (``self``), reports with attachments, and machine
sources (video/iot), which may be merged into an open duplicate — run
:func:`~cityops.cases.service.create_case` in the writer's transaction under a savepoint, after
the rows queued before them are written (so a machine report finds a duplicate created
earlier in the same batch). If the batch's bulk write fails, the transaction is rolled back
and every intake of the batch is retried alone, so each request gets its own error and an
intake is either written completely or not at all.

Audit: one ``create`` row per case (its full row) and per case unit, under the reporting
user — where the ORM path writes a ``create`` row and then ``update`` rows for the same
intake. ``version`` of a new case is 1 (the ORM path's extra flushes leave 2 or 3).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import SimpleNamespace
from typing import Any, cast

import h3
from sqlalchemy import BigInteger, Table, and_, any_, bindparam, event, func, insert, or_, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.cases import service
from cityops.cases.models import (
    MACHINE_SOURCES,
    OPEN_STAGES,
    SOURCES,
    Case,
    CaseEvent,
    CaseUnit,
    DispatchRule,
    Notification,
    track_actors,
)
from cityops.core.audit import AuditLog, current_actor
from cityops.core.db import Database, utcnow
from cityops.core.errors import Invalid
from cityops.core.security import Principal, lock_for_write
from cityops.core.settings import get_settings
from cityops.geo.crs import distance_m
from cityops.geo.index import indexes_for
from cityops.geo.models import (
    H3_RES,
    URGENCIES,
    Category,
    CitySetting,
    Component,
    Grid,
    Region,
    Unit,
    grid_inspectors,
    unit_regions,
)
from cityops.geo.service import locate
from cityops.worktime.service import TZ

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("cityops.intake")

#: Most intakes written in one transaction.
MAX_BATCH = 256
#: Seconds a request waits for the writer before giving up (answering 500).
WRITE_TIMEOUT = 60.0
#: A writer thread with nothing to do for this long ends (a new one starts on demand).
IDLE_SECONDS = 10.0

_CASES: Table = cast(Table, Case.__table__)
_EVENTS: Table = cast(Table, CaseEvent.__table__)
_UNITS: Table = cast(Table, CaseUnit.__table__)
_NOTES: Table = cast(Table, Notification.__table__)
_AUDIT: Table = cast(Table, AuditLog.__table__)


@dataclass
class Prepared:
    """One intake, validated and computed outside the write lock."""

    principal: Principal
    data: dict[str, Any]
    t: datetime
    #: Written by ``service.create_case`` (ORM) in the writer instead of the Core path.
    orm: bool = False
    category_id: int = 0
    lon: float = 0.0
    lat: float = 0.0
    case: dict[str, Any] = field(default_factory=dict)
    #: (action, actor principal or None, from_stage, to_stage, note, unit_id, data)
    events: list[tuple[str, Principal | None, str | None, str, str | None, int | None, Any]] = (
        field(default_factory=list)
    )
    units: list[tuple[int, str]] = field(default_factory=list)
    notify_users: list[int] = field(default_factory=list)


@dataclass
class Result:
    """What the request needs to answer: the case written (or merged into) and duplicates."""

    case_id: int
    merged: bool
    duplicates: list[dict[str, Any]]
    #: Core path: the row written and its units, so the answer needs no re-read of them.
    row: dict[str, Any] | None = None
    units: list[tuple[int, str]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def transient_case(self) -> Case | None:
        """The written case as a plain object with the attributes of a :class:`Case` (an ORM
        instance costs ~0.5 ms to build, for an answer that only reads it), or None (ORM
        path)."""
        if self.row is None:
            return None
        units = [SimpleNamespace(case_id=self.case_id, unit_id=u, role=r) for u, r in self.units]
        return cast(Case, SimpleNamespace(**self.row, units=units))


# --------------------------------------------------------------------------- config cache


@dataclass(frozen=True)
class CatInfo:
    """What intake needs of a category (a plain copy: safe to share between threads)."""

    id: int
    code: str
    name: str
    standard: str
    kind: str
    is_local: bool
    enabled: bool
    default_urgency: str
    handler_mode: str | None
    handler_unit_type: str | None
    handler_unit_id: int | None


@dataclass(frozen=True)
class RuleInfo:
    """An active dispatch rule (plain copy of :class:`DispatchRule`)."""

    id: int
    name: str
    priority: int
    category_id: int | None
    region_prefix: str | None
    component_owner_unit_id: int | None
    to_component: str | None
    time_from: str | None
    time_to: str | None
    weekdays: str | None
    unit_id: int | None
    co_unit_ids: tuple[int, ...]


class IntakeConfig:
    """Snapshot of the small tables every intake reads: the category standard, auto-filed
    channels, categories, active dispatch rules, active units, and (filled lazily) the
    active users of a unit and the unit of a type in a district.

    Kept per database and process; rebuilt when a session of this process commits a change
    to one of those tables (ORM flush hook below) and otherwise after
    ``CITYOPS_INDEX_REFRESH_SECONDS`` (the refresh policy of the spatial indexes and the
    working-time clock), so a change made by another process shows within that time."""

    def __init__(self, session: Session, generation: int) -> None:
        from cityops.geo.service import chosen_standard

        self.generation = generation
        self.loaded_at = time.monotonic()
        self.standard = chosen_standard(session)
        self.auto_file = service.auto_file_sources(session)
        cats = [
            CatInfo(
                r.id,
                r.code,
                r.name,
                r.standard,
                r.kind,
                bool(r.is_local),
                bool(r.enabled),
                r.default_urgency,
                r.handler_mode,
                r.handler_unit_type,
                r.handler_unit_id,
            )
            for r in session.execute(
                select(
                    Category.id,
                    Category.code,
                    Category.name,
                    Category.standard,
                    Category.kind,
                    Category.is_local,
                    Category.enabled,
                    Category.default_urgency,
                    Category.handler_mode,
                    Category.handler_unit_type,
                    Category.handler_unit_id,
                ).order_by(Category.id)
            )
        ]
        self.cats_by_id = {c.id: c for c in cats}
        by_code: dict[str, list[CatInfo]] = {}
        for c in cats:
            if c.standard in (self.standard, "local"):
                by_code.setdefault(c.code, []).append(c)
        # as ``service._category``: the city's standard before local categories
        self.cats_by_code = {k: sorted(v, key=lambda c: c.is_local) for k, v in by_code.items()}
        self.rules = [
            RuleInfo(
                r.id,
                r.name,
                r.priority,
                r.category_id,
                r.region_prefix,
                r.component_owner_unit_id,
                r.to_component,
                r.time_from,
                r.time_to,
                r.weekdays,
                r.unit_id,
                tuple(r.co_unit_ids or ()),
            )
            for r in session.scalars(select(DispatchRule).where(DispatchRule.active.is_(True)))
        ]
        units = session.execute(select(Unit.id, Unit.name, Unit.active)).all()
        self.unit_names: dict[int, str] = {u.id: u.name for u in units}
        self.active_units = frozenset(u.id for u in units if u.active)
        self._lock = threading.Lock()
        self._unit_users: dict[int, tuple[int, ...]] = {}
        self._district_unit: dict[tuple[str, str], int] = {
            (t, code): uid
            for t, code, uid in session.execute(
                select(Unit.unit_type, Region.code, func.min(Unit.id))
                .join(unit_regions, unit_regions.c.unit_id == Unit.id)
                .join(Region, Region.id == unit_regions.c.region_id)
                .where(Unit.active.is_(True))
                .group_by(Unit.unit_type, Region.code)
            )
        }
        self._grid_inspectors: dict[int, tuple[int, ...]] | None = None

    def category(self, data: dict[str, Any]) -> CatInfo:
        """As ``service._category`` (same errors)."""
        cid = data.get("category_id")
        code = data.get("category_code")
        cat: CatInfo | None = None
        if cid is not None:
            cat = self.cats_by_id.get(cid) if isinstance(cid, int) else None
        elif code:
            found = self.cats_by_code.get(code)
            cat = found[0] if found else None
        else:
            raise Invalid("category_code (or category_id) is required", field="category_code")
        if cat is None or not cat.enabled:
            raise Invalid(
                f"unknown or disabled category {code or cid!r}",
                field="category_code",
                value=code or cid,
            )
        return cat

    def unit_users(self, session: Session, unit_id: int) -> tuple[int, ...]:
        got = self._unit_users.get(unit_id)
        if got is None:
            got = tuple(
                session.scalars(
                    select(User.id).where(User.unit_id == unit_id, User.active.is_(True))
                )
            )
            with self._lock:
                self._unit_users[unit_id] = got
        return got

    def grid_inspectors(self, session: Session) -> Callable[[int | None], tuple[int, ...]]:
        """Active inspectors of a grid (as the rollup's ``inspectors_of``): all grids loaded
        once per snapshot."""
        m = self._grid_inspectors
        if m is None:
            acc: dict[int, list[int]] = {}
            q = (
                select(grid_inspectors.c.grid_id, grid_inspectors.c.user_id)
                .join(User, User.id == grid_inspectors.c.user_id)
                .where(User.active.is_(True))
                .order_by(grid_inspectors.c.grid_id, grid_inspectors.c.user_id)
            )
            for g, u in session.execute(q):
                acc.setdefault(g, []).append(u)
            m = self._grid_inspectors = {g: tuple(us) for g, us in acc.items()}
        frozen = m
        return lambda grid_id: frozen.get(grid_id, ()) if grid_id is not None else ()

    def district_unit(self, session: Session, unit_type: str, district: str) -> int | None:
        """The first active unit of a type serving a region (as the service's category
        default); every (type, region) loaded with the snapshot in one query."""
        return self._district_unit.get((unit_type, district))

    def match_rule(
        self,
        session: Session,
        category_id: int,
        grid_code: str | None,
        component_id: int | None,
        now: datetime,
    ) -> tuple[int, list[int], str] | None:
        """As :func:`cityops.cases.service.match_rule` (same choice), from the snapshot."""
        comp = (
            session.execute(
                select(Component.owner_unit_id, Component.maintainer_unit_id).where(
                    Component.id == component_id
                )
            ).first()
            if component_id
            else None
        )
        hit = service.best_rule(self.rules, category_id, grid_code, comp, now.astimezone(TZ))
        if hit is not None:
            return hit
        cat = self.cats_by_id.get(category_id)
        if cat is None or not cat.handler_mode:
            return None
        if cat.handler_mode == "fixed_unit" and cat.handler_unit_id:
            return cat.handler_unit_id, [], f"category {cat.code} fixed unit"
        if cat.handler_mode == "component_owner" and comp is not None:
            unit = comp.maintainer_unit_id or comp.owner_unit_id
            if unit:
                return unit, [], f"category {cat.code}: component maintainer/owner"
        if cat.handler_mode == "unit_type" and cat.handler_unit_type and grid_code:
            unit_id = self.district_unit(session, cat.handler_unit_type, grid_code[:6])
            if unit_id:
                return unit_id, [], f"category {cat.code}: {cat.handler_unit_type} of the district"
        return None


#: Tables whose change makes the intake snapshot stale.
_CONFIG_MODELS: tuple[type, ...] = (
    Category,
    DispatchRule,
    Unit,
    User,
    CitySetting,
    Region,
    Grid,
)
_generation = 0
_configs: dict[str, IntakeConfig] = {}
_configs_lock = threading.Lock()
_DIRTY_KEY = "cityops_intake_config_dirty"


def _touches_config(session: Session) -> bool:
    for coll in (session.new, session.dirty, session.deleted):
        for obj in coll:
            if isinstance(obj, _CONFIG_MODELS):
                return True
    return False


@event.listens_for(Session, "before_flush")
def _note_config_change(session: Session, _ctx: Any, _instances: Any) -> None:
    if _touches_config(session):
        session.info[_DIRTY_KEY] = True
        forget_config()


@event.listens_for(Session, "after_commit")
def _config_committed(session: Session) -> None:
    if session.info.pop(_DIRTY_KEY, False):
        forget_config()


@event.listens_for(Session, "after_rollback")
def _config_rolled_back(session: Session) -> None:
    session.info.pop(_DIRTY_KEY, None)


def forget_config() -> None:
    """Make the next intake of this process reload the snapshot."""
    global _generation
    with _configs_lock:
        _generation += 1
        _configs.clear()


#: One loader at a time per database: when the snapshot is due for its periodic refresh, the
#: first request reloads it and the others go on with the old one meanwhile (under load, all
#: request threads used to rebuild it at the same moment: half the intake's CPU).
_loaders: dict[str, threading.Lock] = {}


def config_for(session: Session) -> IntakeConfig:
    """The current snapshot for this session's database (see :class:`IntakeConfig`)."""
    key = session.get_bind().engine.url.render_as_string(hide_password=False)
    cfg = _configs.get(key)
    if cfg is not None and time.monotonic() - cfg.loaded_at < get_settings().index_refresh_seconds:
        return cfg
    with _configs_lock:
        loader = _loaders.setdefault(key, threading.Lock())
    # a stale snapshot (only its refresh interval is over) is served while another thread
    # reloads it; none at all (first use, or a change committed in this process) is waited for
    if not loader.acquire(blocking=cfg is None):
        return cast(IntakeConfig, cfg)
    try:
        again = _configs.get(key)
        if again is not None and again is not cfg:  # reloaded while this thread waited
            return again
        gen = _generation
        cfg = IntakeConfig(session, gen)
        with _configs_lock:
            if gen == _generation:  # no change committed while loading
                _configs[key] = cfg
        return cfg
    finally:
        loader.release()


def _blank_case(t: datetime) -> Case:
    """A plain object with a Case's attributes, to run the stage/deadline helpers of the
    service on (they only set and read attributes; an ORM instance costs more than them)."""
    c = cast(Case, SimpleNamespace())
    for k in (
        "stage_deadline",
        "stage_warn_at",
        "handle_deadline",
        "paused_since",
        "accepted_at",
        "filed_at",
        "dispatched_at",
        "lead_unit_id",
    ):
        setattr(c, k, None)
    c.reported_at = t
    return c


def prepare(session: Session, principal: Principal, data: dict[str, Any], t: datetime) -> Prepared:
    """Everything of an intake that only reads (see the module docstring); raises on refusal.

    Mirrors ``service._create_case`` step for step; the Core writer then writes exactly the
    rows the ORM path writes for the same report."""
    p = Prepared(principal, data, t)
    source = data.get("source") or ("inspector" if "inspector" in principal.roles else "hotline")
    if source not in SOURCES:
        raise Invalid(
            f"unknown source {source!r}: one of {', '.join(SOURCES)}", field="source", value=source
        )
    service._require(
        principal, service.SOURCE_ROLES[source], f"report from channel {SOURCES[source]}"
    )
    if source == "self" or source in MACHINE_SOURCES or data.get("attachment_ids"):
        # rare channels with merges or attachment binding: the ORM path, in the writer
        p.orm = True
        return p
    cfg = config_for(session)
    cat = cfg.category(data)
    case_type = "component" if cat.kind == "component" else "matter"
    urgency = data.get("urgency") or cat.default_urgency
    if urgency not in URGENCIES:
        raise Invalid(
            f"urgency must be one of {', '.join(URGENCIES)}", field="urgency", value=urgency
        )
    description = service._text(data, "description", "report")
    try:
        lon, lat = float(data["lon"]), float(data["lat"])
    except (KeyError, TypeError, ValueError):
        raise Invalid("lon and lat are required numbers", field="lon/lat") from None
    where = locate(session, lon, lat, data.get("crs") or "wgs84")
    wlon, wlat = where["wgs84"]["lon"], where["wgs84"]["lat"]
    component_id: int | None = None
    if data.get("component_code"):
        component_id = session.scalars(
            select(Component.id).where(Component.code == data["component_code"])
        ).first()
        if component_id is None:
            raise Invalid(
                f"unknown component {data['component_code']}",
                field="component_code",
                value=data["component_code"],
            )
    elif case_type == "component":
        hits = indexes_for(session).components(session).nearest(wlon, wlat, cat.id, 30.0, 1)
        if hits:
            component_id = int(hits[0][0])

    c = _blank_case(t)
    c.source = source
    c.case_type = case_type
    c.category_id = cat.id
    c.urgency = urgency
    c.grid_code = where["grid"]["code"]
    c.grid_id = where["grid"]["id"]
    c.component_id = component_id
    p.category_id, p.lon, p.lat = cat.id, wlon, wlat

    p.events.append(("report", principal, None, "accept", description, None, {"source": source}))
    service._start_stage(session, c, "accept", t)
    if source in cfg.auto_file:
        c.accepted_at = t
        service._start_stage(session, c, "file", t)
        p.events.append(("accept", None, "accept", "file", "自动受理", None, None))
        c.filed_at = t
        service._start_stage(session, c, "dispatch", t)
        p.events.append(("file", service._SYSTEM, "file", "dispatch", None, None, None))
        m = cfg.match_rule(session, cat.id, c.grid_code, component_id, t)
        if m is not None:
            lead, co, why = m
            missing = [u for u in [lead, *co] if u not in cfg.active_units]
            if missing:
                raise Invalid(
                    f"unknown or inactive unit(s) {missing}", field="unit_id", value=missing
                )
            p.units = [(lead, "lead")] + [(u, "co") for u in dict.fromkeys(co) if u != lead]
            c.lead_unit_id = lead
            c.dispatched_at = t
            lim = service._limit(session, c, "handle")
            c.handle_deadline = service.wt.get_clock(session).deadline(t, lim).due_at
            service._start_stage(session, c, "sign", t)
            p.events.append(
                (
                    "dispatch",
                    None,
                    "dispatch",
                    "sign",
                    f"自动派遣: {why}",
                    lead,
                    {"lead_unit_id": lead, "co_unit_ids": co},
                )
            )
            p.notify_users = list(cfg.unit_users(session, lead))
    who = SimpleNamespace(
        accepted_by_id=None, filed_by_id=None, dispatched_by_id=None, dispatch_stage_at=None
    )
    for action, actor, _frm, _to, _note, _unit, edata in p.events:
        track_actors(who, action, t, _actor_cols(actor)[0], edata)
    p.case = {
        "tracking_code": service.new_tracking_code(),
        "source": source,
        "case_type": case_type,
        "category_id": cat.id,
        "urgency": urgency,
        "description": description,
        "address": data.get("address"),
        "lon": wlon,
        "lat": wlat,
        "h3": h3.str_to_int(h3.latlng_to_cell(wlat, wlon, H3_RES)),
        "grid_id": c.grid_id,
        "grid_code": c.grid_code,
        "component_id": component_id,
        "reporter_user_id": principal.user_id if principal.user_id > 0 else None,
        "reporter_name": data.get("reporter_name")
        or (principal.display_name if source in ("inspector", "self") else None),
        "reporter_phone": data.get("reporter_phone"),
        "stage": c.stage,
        "stage_started_at": t,
        "stage_deadline": c.stage_deadline,
        "stage_warn_at": c.stage_warn_at,
        "assignee_user_id": None,
        "lead_unit_id": c.lead_unit_id,
        "pending_request": None,
        "paused_since": None,
        "near_due": False,
        "overdue": False,
        "supervised": False,
        "extended": False,
        "parked": False,
        "escalation_level": 0,
        "extension_count": 0,
        "return_count": 0,
        "rework_count": 0,
        "handled_late": False,
        "duplicate_of_id": None,
        "report_count": 1,
        "last_seen_at": t,
        "close_type": None,
        "end_reason": None,
        "reported_at": t,
        "accepted_at": c.accepted_at,
        "verified_at": None,
        "filed_at": c.filed_at,
        "dispatched_at": c.dispatched_at,
        "signed_at": None,
        "handled_at": None,
        "handle_deadline": c.handle_deadline,
        "checked_at": None,
        "closed_at": None,
        **vars(who),
        "updated_at": t,
        "version": 1,
    }
    for k, v in p.case.items():  # as read back from the database: aware UTC
        if isinstance(v, datetime):
            p.case[k] = v.astimezone(UTC)
    return p


# --------------------------------------------------------------------------- writing


def _disk(p: Prepared) -> list[int]:
    """The H3 cells searched for duplicates of ``p`` (as ``service.find_duplicates``)."""
    k = max(1, int(service.DUPLICATE_RADIUS_M // 150) + 1)
    return [h3.str_to_int(x) for x in h3.grid_disk(h3.latlng_to_cell(p.lat, p.lon, H3_RES), k)]


def _in_list(session: Session, column: Any, values: set[int]) -> list[Any]:
    """``column IN (values)``; on PostgreSQL ``= ANY(array)``: one parameter instead of
    hundreds (psycopg parses a statement with many parameters on every call)."""
    if session.get_bind().dialect.name == "postgresql":
        return [column == any_(bindparam(None, sorted(values), type_=ARRAY(BigInteger)))]
    return [column.in_(values)]


def _find_duplicates(
    session: Session, items: list[Prepared]
) -> list[list[tuple[float, int, str, str]]]:
    """Per item: open cases of its category within 50 m reported within 3 days, nearest
    first — from the database (one query for the batch) and among the earlier items of the
    batch (whose ids must be filled in by the caller: ``id`` is 0 and ``number`` holds the
    batch index as text until then)."""
    disks = [_disk(p) for p in items]
    # one term per item: its category, the cells around it and the box of the duplicate
    # radius (the cells alone reach ~3× farther: most of their cases are too far anyway)
    dlat = (service.DUPLICATE_RADIUS_M + 1) / 111_000
    terms = [
        and_(
            _CASES.c.category_id == p.category_id,
            *_in_list(session, _CASES.c.h3, set(disk)),
            _CASES.c.lat.between(p.lat - dlat, p.lat + dlat),
            _CASES.c.lon.between(
                p.lon - dlat / math.cos(math.radians(p.lat)),
                p.lon + dlat / math.cos(math.radians(p.lat)),
            ),
        )
        for p, disk in zip(items, disks, strict=True)
    ]
    since = min(p.t for p in items) - service.DUPLICATE_WINDOW
    cand: dict[tuple[int, int], list[Any]] = {}
    for r in session.execute(
        select(
            _CASES.c.id,
            _CASES.c.number,
            _CASES.c.description,
            _CASES.c.category_id,
            _CASES.c.h3,
            _CASES.c.lon,
            _CASES.c.lat,
            _CASES.c.reported_at,
            _CASES.c.stage,
        ).where(
            or_(*terms),
            _CASES.c.reported_at >= since,
        )
    ):
        # the stage is tested here: in SQL, SQLite's planner would rather walk every open
        # case by the stage index than take the (category, cell) index once per item
        if r.stage in OPEN_STAGES:
            cand.setdefault((r.category_id, r.h3), []).append(r)
    earlier: dict[tuple[int, int], list[int]] = {}
    out: list[list[tuple[float, int, str, str]]] = []
    for i, (p, disk) in enumerate(zip(items, disks, strict=True)):
        found: list[tuple[float, int, str, str]] = []
        window_start = p.t - service.DUPLICATE_WINDOW
        for cell in disk:
            for r in cand.get((p.category_id, cell), ()):
                if r.reported_at >= window_start:
                    d = distance_m(p.lon, p.lat, r.lon, r.lat)
                    if d <= service.DUPLICATE_RADIUS_M:
                        found.append((d, r.id, r.number, r.description))
            for j in earlier.get((p.category_id, cell), ()):
                q = items[j]
                d = distance_m(p.lon, p.lat, q.lon, q.lat)
                if d <= service.DUPLICATE_RADIUS_M:
                    found.append((d, 0, str(j), q.case["description"]))
        out.append(found)
        earlier.setdefault((p.category_id, p.case["h3"]), []).append(i)
    return out


def _copy_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).replace(tzinfo=None)  # as UTCDateTime stores it
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return v


def _bulk(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert dict rows (all with the same keys): ``COPY`` on PostgreSQL (one round trip,
    no per-row statement on the server), ``executemany`` on SQLite."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    import psycopg

    cols = list(rows[0])
    raw: Any = conn.connection.driver_connection
    stmt = f"COPY {table.name} ({', '.join(cols)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(stmt) as cp:
            for r in rows:
                cp.write_row([_copy_value(r[c]) for c in cols])
    except psycopg.errors.IntegrityError as exc:  # as SQLAlchemy reports it for an INSERT
        raise IntegrityError(stmt, None, exc) from exc


def _actor_cols(p: Principal | None) -> tuple[int | None, str]:
    return (p.user_id if p and p.user_id > 0 else None, p.username if p else "system")


def _facts(
    session: Session,
    cfg: IntakeConfig,
    items: list[Prepared],
    events: list[dict[str, Any]],
    ids: list[int],
) -> list[Any]:
    """The rollup facts of the batch's new cases, from the rows in memory (no query)."""
    from cityops.evaluation import rollup

    try:
        cases = {p.case["id"]: SimpleNamespace(**p.case) for p in items}
        evs = [SimpleNamespace(id=i, **e) for i, e in enumerate(events, 1)]
        return list(
            rollup.replay_rows(
                session, cases, evs, rollup.Deadlines(session), cfg.grid_inspectors(session)
            )
        )
    except (AttributeError, TypeError):  # the rollup's internals changed: its public replay
        return list(rollup.replay(session, ids))


def write_core(session: Session, items: list[Prepared], results: dict[int, Result]) -> None:
    """Write the Core intakes of a batch (already in the caller's transaction)."""
    if not items:
        return
    from cityops.evaluation import rollup

    cfg = config_for(session)

    # numbers: one counter step per local day
    by_day: dict[date, list[Prepared]] = {}
    for p in items:
        by_day.setdefault(p.t.astimezone(TZ).date(), []).append(p)
    for day, ps in by_day.items():
        last = service.reserve_numbers(session, day, len(ps))
        for i, p in enumerate(ps):
            p.case["number"] = f"{day:%Y%m%d}{last - len(ps) + 1 + i:05d}"

    # duplicates: open cases in the database, then the earlier intakes of this batch
    dups = _find_duplicates(session, items)

    conn = session.connection()
    rows = [p.case for p in items]
    if conn.dialect.name == "postgresql":
        # ids from the sequence first, then a plain executemany (pipelined, prepared once):
        # a RETURNING multi-VALUES statement of ~50 columns × the batch is slow to build
        ids = [
            int(i)
            for i in conn.exec_driver_sql(
                "SELECT nextval(pg_get_serial_sequence('cases', 'id')) "
                "FROM generate_series(1, %(n)s)",
                {"n": len(rows)},
            ).scalars()
        ]
        for cid, row in zip(ids, rows, strict=True):
            row["id"] = cid
        _bulk(conn, _CASES, rows)
    else:
        ids = list(
            conn.execute(
                insert(_CASES).returning(_CASES.c.id, sort_by_parameter_order=True), rows
            ).scalars()
        )
    events: list[dict[str, Any]] = []
    units: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []
    now = utcnow()
    for cid, p in zip(ids, items, strict=True):
        p.case["id"] = cid
        for action, actor, frm, to, note, unit_id, data in p.events:
            aid, aname = _actor_cols(actor)
            events.append(
                {
                    "case_id": cid,
                    "at": p.t,
                    "actor_id": aid,
                    "actor_name": aname,
                    "action": action,
                    "from_stage": frm,
                    "to_stage": to,
                    "unit_id": unit_id,
                    "note": note,
                    "data": data,
                }
            )
        for unit_id, role in p.units:
            units.append({"case_id": cid, "unit_id": unit_id, "role": role})
        for uid in p.notify_users:
            notes.append(
                {
                    "user_id": uid,
                    "case_id": cid,
                    "kind": "dispatch",
                    "title": f"新派遣案卷 {p.case['number']}",
                    "body": p.case["description"],
                    "dedupe_key": None,
                    "created_at": p.t,
                    "read_at": None,
                }
            )
        a = p.principal.actor
        base = {"at": now, "actor_id": a.user_id, "actor_name": a.name, "ip": a.ip}
        audit.append(
            base
            | {
                "action": "create",
                "entity": "cases",
                "entity_id": str(cid),
                "before": None,
                "after": {
                    k: v.isoformat() if isinstance(v, datetime) else v for k, v in p.case.items()
                },
            }
        )
        for unit_id, role in p.units:
            audit.append(
                base
                | {
                    "action": "create",
                    "entity": "case_units",
                    "entity_id": f"{cid},{unit_id}",
                    "before": None,
                    "after": {"case_id": cid, "unit_id": unit_id, "role": role},
                }
            )
    _bulk(conn, _EVENTS, events)
    _bulk(conn, _UNITS, units)
    _bulk(conn, _NOTES, notes)
    _bulk(conn, _AUDIT, audit)

    # evaluation rollups: the rollup's listener does not see Core inserts, so the new cases'
    # facts are derived by the rollup's own replay (the code of a rebuild: counters ==
    # rebuild by construction) over the rows just written, kept in memory
    if rollup.installed():
        rollup.upsert(session, _facts(session, cfg, items, events, ids))

    events_of: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        events_of.setdefault(e["case_id"], []).append(e)
    for i, (cid, p) in enumerate(zip(ids, items, strict=True)):
        out = [
            (d, dbid, num, desc)
            if dbid
            else (d, ids[int(num)], items[int(num)].case["number"], desc)
            for d, dbid, num, desc in dups[i]
        ]
        out.sort(key=lambda x: (x[0], x[1]))
        results[id(p)] = Result(
            cid,
            False,
            [{"id": x[1], "number": x[2], "description": x[3]} for x in out],
            p.case,
            p.units,
            events_of.get(cid, []),
        )


def write_orm(session: Session, p: Prepared) -> Result:
    """One intake through the ORM service (in the writer's transaction, under a savepoint)."""
    token = current_actor.set(p.principal.actor)
    try:
        sp = session.begin_nested()
        try:
            intake = service.create_case(session, p.principal, p.data, p.t)
        except BaseException:
            sp.rollback()
            raise
        sp.commit()
        return Result(
            intake.case.id,
            intake.merged,
            [
                {"id": c.id, "number": c.number, "description": c.description}
                for c in intake.duplicates
            ],
        )
    finally:
        current_actor.reset(token)


def answer(
    session: Session, principal: Principal, result: Result, now: datetime
) -> dict[str, Any] | None:
    """The case detail of a Core-written intake without reading it back: the same dict as
    :func:`cityops.cases.queries.case_detail` (tests compare the two), or None when the
    intake went through the ORM path or has a component (then call ``case_detail``)."""
    from cityops.cases import queries

    case = result.transient_case()
    if case is None or case.component_id is not None:
        return None
    cfg = config_for(session)
    cat = cfg.cats_by_id.get(case.category_id)
    names = cfg.unit_names
    return queries.detail_of(
        principal,
        case,
        now,
        cats={cat.id: cat.name} if cat is not None else {},
        units=names,
        component=None,
        history=[
            queries.history_item(
                e["at"],
                e["actor_name"],
                e["action"],
                e["from_stage"],
                e["to_stage"],
                names.get(e["unit_id"]) if e["unit_id"] else None,
                e["note"],
                e["data"],
                [],
            )
            for e in result.events
        ],
        attachments=[],
    )


# --------------------------------------------------------------------------- the batcher


@dataclass
class _Job:
    prepared: Prepared
    future: Future[Result]


class IntakeBatcher:
    """The writer of one process for one database (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self._db = weakref.ref(db)
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Batches written and intakes in them (for tests and the benchmark).
        self.batches = 0
        self.written = 0
        self.largest = 0

    def submit(self, p: Prepared) -> Future[Result]:
        fut: Future[Result] = Future()
        self._queue.put(_Job(p, fut))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="cityops-intake-writer", daemon=True
                )
                self._thread.start()
        return fut

    def write(self, p: Prepared, timeout: float = WRITE_TIMEOUT) -> Result:
        """Submit and wait for the result (raises the intake's own error)."""
        return self.submit(p).result(timeout)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            jobs = [first]
            while len(jobs) < MAX_BATCH:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            db = self._db()
            if db is None:
                for j in jobs:
                    j.future.set_exception(RuntimeError("the database is gone"))
                return
            self._write_batch(db, jobs)
            del db

    def _write_batch(self, db: Database, jobs: list[_Job]) -> None:
        try:
            results = self._attempt(db, jobs)
        except Exception as exc:
            if len(jobs) > 1:
                # one intake spoilt the batch: every intake alone, each with its own result
                for j in jobs:
                    self._write_batch(db, [j])
                return
            jobs[0].future.set_exception(exc)
            return
        self.batches += 1
        self.written += len(jobs)
        self.largest = max(self.largest, len(jobs))
        for j in jobs:
            r = results.get(id(j.prepared))
            if isinstance(r, Result):
                j.future.set_result(r)
            else:
                j.future.set_exception(r if isinstance(r, BaseException) else RuntimeError("lost"))

    def _attempt(self, db: Database, jobs: list[_Job]) -> dict[int, Any]:
        """One transaction for the batch. ORM intakes fail alone (savepoint); a Core failure
        raises (the caller retries the intakes one by one)."""
        with _writer_turn(db):
            return self._attempt_locked(db, jobs)

    def _attempt_locked(self, db: Database, jobs: list[_Job]) -> dict[int, Any]:
        results: dict[int, Any] = {}
        with db.session() as s, s.no_autoflush:
            lock_for_write(s)
            pending: list[Prepared] = []
            for j in jobs:
                p = j.prepared
                if not p.orm:
                    pending.append(p)
                    continue
                write_core(s, pending, results)
                pending = []
                try:
                    results[id(p)] = write_orm(s, p)
                except Exception as exc:
                    if len(jobs) > 1 and not _domain(exc):
                        raise
                    results[id(p)] = exc
            write_core(s, pending, results)
        return results


@contextmanager
def _writer_turn(db: Database) -> Iterator[None]:
    """SQLite file databases: the writers of all processes take turns on an OS file lock
    before asking SQLite for its write lock. SQLite's own busy handler polls with sleeps of
    up to 100 ms, which under load costs far more than the write itself; a blocking
    ``flock`` hands the turn over the moment the previous writer commits."""
    path = _lock_path(db)
    if path is None or fcntl is None:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _lock_path(db: Database) -> str | None:
    if not db.is_sqlite:
        return None
    name = db.engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return f"{name}-intake.lock"


def _domain(exc: BaseException) -> bool:
    from cityops.core.errors import DomainError

    return isinstance(exc, DomainError)


_batchers: weakref.WeakKeyDictionary[Database, IntakeBatcher] = weakref.WeakKeyDictionary()
_batchers_lock = threading.Lock()


def batcher_for(db: Database) -> IntakeBatcher:
    with _batchers_lock:
        b = _batchers.get(db)
        if b is None:
            b = _batchers[db] = IntakeBatcher(db)
        return b


__all__ = [
    "MAX_BATCH",
    "IntakeBatcher",
    "Prepared",
    "Result",
    "batcher_for",
    "prepare",
    "write_core",
    "write_orm",
]

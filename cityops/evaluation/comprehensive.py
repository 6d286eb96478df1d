"""Comprehensive evaluation (综合评价) of regions: indicator tree, tasks, site inspections,
questionnaires, and the scored report.

* **Indicator tree** (:class:`CeIndicator`): e.g. 城市形象 / 城市管理保底线 / 群众满意度 → 干净 /
  整洁 / 有序 / 安全 / 满意度调查 → leaves (a default tree is seeded by migration 0005). Every
  node has a ``weight`` in percent of its parent; the weights of siblings must sum to 100
  (every change is checked; ``sibling_weights`` rebalances the siblings in the same change).
  A leaf has a data ``source``: ``platform`` (a named figure of the evaluation service for the
  task's period and the region, see :data:`PLATFORM_METRICS`), ``site_inspection`` (实地考察:
  a score 0–100 or deductions per check item) or ``questionnaire`` (问卷调查, imported from CSV).
* **Tasks** (:class:`CeTask`): a period ``[period_start, period_end)`` and target regions,
  assigned to evaluators (role ``evaluator``). Evaluators record third-party (第三方) scores;
  a region's own self-evaluation (自评) is recorded by an admin or a leader of that region.
  The two are kept apart and blended per leaf: ``self_weight`` % self + the rest third party
  (only one of them present → that one).
* **Scores**: a leaf's score per origin is the mean of its site inspections or the
  respondent-weighted mean of its questionnaire rows; a node's score is the weighted mean of
  its children's scores (children without any data are left out and the others' weights
  renormalised; they are listed as ``missing``). ``contribution`` = score × the node's
  weight in the whole tree (product of the weights on its path), so when nothing is missing
  the top nodes' contributions add up to the total.
"""

from __future__ import annotations

import functools
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

from openpyxl import Workbook
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from cityops.access.models import User
from cityops.cases.models import CaseAttachment
from cityops.core.errors import Conflict, Forbidden, Invalid, NotFound
from cityops.core.security import Principal, ensure_region, region_visible
from cityops.core.tabular import TabularInput, read_csv
from cityops.evaluation.models import CeIndicator, CeRecord, CeTask, CeTaskEvaluator
from cityops.evaluation.review import sheet
from cityops.geo.models import CitySetting, Region

T = TypeVar("T")

SOURCES = {"platform": "平台数据", "site_inspection": "实地考察", "questionnaire": "问卷调查"}
ORIGINS = {"self": "自评", "third_party": "第三方"}
#: Platform figure → (what to read from ``service.indicators(region)``, inverted?)
PLATFORM_METRICS: dict[str, tuple[str, bool]] = {
    "结案率": ("rates.结案率", False),
    "按期结案率": ("rates.按期结案率", False),
    "监督举报率": ("rates.监督举报率", True),  # scored as 100 − rate
    "立案数分值": ("rates.立案数分值", False),
    "区域综合评价值": ("composite", False),
}
SETTINGS_KEY = "comprehensive_settings"
DEFAULT_SETTINGS: dict[str, Any] = {"self_weight": 30}
QUESTIONNAIRE_COLUMNS = frozenset({"region_code", "indicator_code", "respondents", "score"})
MAX_ERRORS = 50
_EPS = 1e-6


def r2(x: float | None) -> float | None:
    if x is None:
        return None
    return float(Decimal(str(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _num(v: Any, what: str, lo: float = 0, hi: float = 100) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise Invalid(f"{what} must be a number {lo:g}–{hi:g}", field=what, value=v)
    return float(v)


# --------------------------------------------------------------------------- settings


def get_settings(session: Session) -> dict[str, Any]:
    row = session.get(CitySetting, SETTINGS_KEY)
    out = dict(DEFAULT_SETTINGS)
    if row is not None and isinstance(row.value, dict):
        out.update({k: v for k, v in row.value.items() if k in out})
    return out


def set_settings(session: Session, value: dict[str, Any]) -> dict[str, Any]:
    for k in value:
        if k not in DEFAULT_SETTINGS:
            raise Invalid(f"unknown setting {k!r}", field=k)
    if "self_weight" in value:
        _num(value["self_weight"], "self_weight")
    row = session.get(CitySetting, SETTINGS_KEY)
    merged = {**(row.value if row is not None and isinstance(row.value, dict) else {}), **value}
    if row is None:
        session.add(CitySetting(key=SETTINGS_KEY, value=merged))
    else:
        row.value = merged
    session.flush()
    return get_settings(session)


# --------------------------------------------------------------------------- tree


@dataclass
class Tree:
    nodes: list[CeIndicator]
    by_id: dict[int, CeIndicator] = field(default_factory=dict)
    by_code: dict[str, CeIndicator] = field(default_factory=dict)
    children: dict[int | None, list[CeIndicator]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {n.id: n for n in self.nodes}
        self.by_code = {n.code: n for n in self.nodes}
        kids: dict[int | None, list[CeIndicator]] = defaultdict(list)
        for n in sorted(self.nodes, key=lambda n: (n.sort, n.id)):
            kids[n.parent_id].append(n)
        self.children = dict(kids)

    def kids(self, node_id: int | None) -> list[CeIndicator]:
        return self.children.get(node_id, [])

    def walk(self, node_id: int | None = None, depth: int = 1) -> list[tuple[CeIndicator, int]]:
        out: list[tuple[CeIndicator, int]] = []
        for n in self.kids(node_id):
            out.append((n, depth))
            out.extend(self.walk(n.id, depth + 1))
        return out

    def subtree_ids(self, node_id: int) -> list[int]:
        return [node_id, *(n.id for n, _ in self.walk(node_id))]

    def node(self, code: str) -> CeIndicator:
        n = self.by_code.get(code)
        if n is None:
            raise NotFound(f"no indicator {code!r}", field="code", value=code)
        return n


def load_tree(session: Session) -> Tree:
    return Tree(list(session.scalars(select(CeIndicator))))


def node_out(n: CeIndicator) -> dict[str, Any]:
    return {
        "code": n.code,
        "name": n.name,
        "weight": n.weight,
        "source": n.source,
        "source_label": SOURCES.get(n.source or ""),
        "platform_metric": n.platform_metric,
        "check_items": n.check_items,
    }


def tree_out(session: Session) -> list[dict[str, Any]]:
    t = load_tree(session)

    def build(parent: int | None) -> list[dict[str, Any]]:
        return [{**node_out(n), "children": build(n.id)} for n in t.kids(parent)]

    return build(None)


def validate_tree(t: Tree) -> None:
    """Siblings' weights sum to 100; leaves' sources are complete; groups have no source."""
    for parent_id, kids in t.children.items():
        total = sum(k.weight for k in kids)
        if abs(total - 100) > _EPS:
            parent = t.by_id.get(parent_id) if parent_id is not None else None
            where = f"{parent.name} ({parent.code})" if parent else "the top level"
            parts = ", ".join(f"{k.code} {k.name} {k.weight:g}" for k in kids)
            raise Invalid(
                f"the weights of the children of {where} sum to {total:g}, not 100: {parts}",
                field="weight",
                parent=parent.code if parent else None,
                weights={k.code: k.weight for k in kids},
            )
    for n in t.nodes:
        _check_node(n, has_children=bool(t.kids(n.id)))


def _check_node(n: CeIndicator, has_children: bool) -> None:
    if not n.code or len(n.code) > 40:
        raise Invalid("code must be 1–40 characters", field="code", value=n.code)
    if not n.name or not n.name.strip():
        raise Invalid(f"indicator {n.code}: name must not be empty", field="name")
    if not 0 <= n.weight <= 100:
        raise Invalid(f"indicator {n.code}: weight must be 0–100", field="weight", value=n.weight)
    if has_children and n.source:
        raise Invalid(
            f"indicator {n.code} has children, so it takes no data source", field="source"
        )
    if n.source is not None and n.source not in SOURCES:
        raise Invalid(
            f"indicator {n.code}: source must be one of {', '.join(SOURCES)}",
            field="source",
            value=n.source,
        )
    if n.source == "platform" and n.platform_metric not in PLATFORM_METRICS:
        raise Invalid(
            f"indicator {n.code}: platform_metric must be one of {', '.join(PLATFORM_METRICS)}",
            field="platform_metric",
            value=n.platform_metric,
        )
    if n.source != "platform" and n.platform_metric:
        raise Invalid(
            f"indicator {n.code}: platform_metric is only for source platform",
            field="platform_metric",
        )
    if n.check_items is not None:
        if n.source != "site_inspection":
            raise Invalid(
                f"indicator {n.code}: check_items are only for site_inspection",
                field="check_items",
            )
        seen: set[str] = set()
        for it in n.check_items:
            if (
                not isinstance(it, dict)
                or not str(it.get("code") or "").strip()
                or not str(it.get("name") or "").strip()
            ):
                raise Invalid(
                    f"indicator {n.code}: every check item needs a code and a name",
                    field="check_items",
                    value=it,
                )
            if str(it["code"]) in seen:
                raise Invalid(
                    f"indicator {n.code}: check item {it['code']} twice", field="check_items"
                )
            seen.add(str(it["code"]))
            _num(it.get("max", 100), "check_items.max")


def _atomic(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a tree change in a savepoint: a refused change leaves nothing behind."""

    @functools.wraps(fn)
    def run(session: Session, *args: Any, **kwargs: Any) -> T:
        with session.begin_nested():
            return fn(session, *args, **kwargs)

    return run


def _has_records(session: Session, ids: list[int]) -> bool:
    return (
        session.scalars(select(CeRecord.id).where(CeRecord.indicator_id.in_(ids))).first()
        is not None
    )


def _apply_sibling_weights(t: Tree, parent_id: int | None, weights: dict[str, Any] | None) -> None:
    if not weights:
        return
    kids = {k.code: k for k in t.kids(parent_id)}
    for code, w in weights.items():
        if code not in kids:
            raise Invalid(
                f"sibling_weights: {code!r} is not a sibling", field="sibling_weights", value=code
            )
        kids[code].weight = _num(w, f"sibling_weights.{code}")


def _fields(n: CeIndicator, data: dict[str, Any]) -> None:
    if "name" in data and data["name"] is not None:
        n.name = str(data["name"]).strip()
    if "weight" in data and data["weight"] is not None:
        n.weight = _num(data["weight"], "weight")
    for k in ("source", "platform_metric", "check_items"):
        if k in data:
            setattr(n, k, data[k] or None)


@_atomic
def add_node(session: Session, data: dict[str, Any]) -> CeIndicator:
    """Add an indicator under ``parent_code`` (None: top level)."""
    t = load_tree(session)
    parent = t.node(data["parent_code"]) if data.get("parent_code") else None
    code = str(data.get("code") or "").strip()
    if code in t.by_code:
        raise Conflict(f"indicator code {code!r} exists already", field="code", value=code)
    if parent is not None and parent.source:
        raise Invalid(
            f"{parent.code} {parent.name} is a leaf with a data source: clear its source first",
            field="parent_code",
        )
    if parent is not None and _has_records(session, [parent.id]):
        raise Conflict(f"{parent.code} already has scores recorded: it must stay a leaf")
    n = CeIndicator(
        parent_id=parent.id if parent else None,
        code=code,
        name="",
        weight=0.0,
        sort=(max((k.sort for k in t.kids(parent.id if parent else None)), default=0) + 1),
    )
    _fields(n, data)
    session.add(n)
    session.flush()
    t = load_tree(session)
    _apply_sibling_weights(t, n.parent_id, data.get("sibling_weights"))
    validate_tree(t)
    session.flush()
    return n


@_atomic
def update_node(session: Session, code: str, data: dict[str, Any]) -> CeIndicator:
    """Rename, reweight (with ``sibling_weights`` for the others), change the source."""
    t = load_tree(session)
    n = t.node(code)
    changes_source = "source" in data and (data.get("source") or None) != n.source
    if changes_source and _has_records(session, [n.id]):
        raise Conflict(f"{code} has scores recorded: its source cannot change")
    _fields(n, data)
    _apply_sibling_weights(t, n.parent_id, data.get("sibling_weights"))
    validate_tree(t)
    session.flush()
    return n


@_atomic
def delete_node(session: Session, code: str, sibling_weights: dict[str, Any] | None) -> None:
    """Delete an indicator and its subtree (refused when scores were recorded on it)."""
    t = load_tree(session)
    n = t.node(code)
    ids = t.subtree_ids(n.id)
    if _has_records(session, ids):
        raise Conflict(f"{code} {n.name} (or an indicator under it) has scores recorded")
    parent_id = n.parent_id
    remaining = [x for x in t.nodes if x.id not in set(ids)]
    t2 = Tree(remaining)
    _apply_sibling_weights(t2, parent_id, sibling_weights)
    validate_tree(t2)  # before deleting: nothing changes on a bad request
    for nid in reversed(ids):  # pre-order reversed: children before their parent
        session.delete(t.by_id[nid])
        session.flush()


@_atomic
def replace_tree(session: Session, nodes: list[dict[str, Any]]) -> None:
    """Replace the whole tree (nested ``children``); refused once scores were recorded."""
    if session.scalars(select(CeRecord.id)).first() is not None:
        raise Conflict("scores were recorded on the current tree: edit it node by node instead")
    built: list[CeIndicator] = []
    codes: set[str] = set()

    def build(items: Any, parent: str | None) -> None:
        if not isinstance(items, list):
            raise Invalid("children must be a list", field="children")
        for i, d in enumerate(items, 1):
            if not isinstance(d, dict):
                raise Invalid("every node must be an object", field="nodes")
            code = str(d.get("code") or "").strip()
            if code in codes:
                raise Invalid(f"indicator code {code!r} twice", field="code", value=code)
            codes.add(code)
            n = CeIndicator(code=code, name="", weight=0.0, sort=i)
            _fields(n, d)
            n.parent_id = None
            built.append(n)
            parents[code] = parent
            build(d.get("children") or [], code)

    parents: dict[str, str | None] = {}
    build(nodes, None)
    # validate on a detached copy (fake ids), then write
    for k, n in enumerate(built, 1):
        n.id = -k
    ids = {n.code: n.id for n in built}
    for n in built:
        p = parents[n.code]
        n.parent_id = ids[p] if p else None
    validate_tree(Tree(built))
    session.execute(delete(CeIndicator))
    session.flush()
    by_code: dict[str, CeIndicator] = {}
    for n in built:
        p = parents[n.code]
        row = CeIndicator(
            code=n.code,
            name=n.name,
            weight=n.weight,
            source=n.source,
            platform_metric=n.platform_metric,
            check_items=n.check_items,
            sort=n.sort,
            parent_id=by_code[p].id if p else None,
        )
        session.add(row)
        session.flush()
        by_code[n.code] = row


# --------------------------------------------------------------------------- tasks


def _region(session: Session, code: str) -> Region:
    r = session.scalars(select(Region).where(Region.code == code)).first()
    if r is None:
        raise Invalid(f"no region {code!r}", field="region_codes", value=code)
    return r


def _evaluators(session: Session, user_ids: list[int]) -> list[int]:
    for uid in user_ids:
        u = session.get(User, uid)
        if u is None or "evaluator" not in u.roles:
            raise Invalid(
                f"user {uid} is not an evaluator (role evaluator)", field="evaluator_ids", value=uid
            )
    return sorted(set(user_ids))


def create_task(session: Session, principal: Principal | None, data: dict[str, Any]) -> CeTask:
    start, end = data["period_start"], data["period_end"]
    if end <= start:
        raise Invalid("period_end must be after period_start (it is exclusive)", field="period_end")
    codes = list(dict.fromkeys(data.get("region_codes") or []))
    if not codes:
        raise Invalid("give at least one region", field="region_codes")
    for c in codes:
        _region(session, c)
    name = str(data.get("name") or "").strip()
    if not name:
        raise Invalid("the task needs a name", field="name")
    sw = data.get("self_weight")
    task = CeTask(
        name=name,
        period_start=start,
        period_end=end,
        region_codes=codes,
        self_weight=_num(sw, "self_weight")
        if sw is not None
        else float(get_settings(session)["self_weight"]),
        status="open",
        created_by=principal.user_id if principal and principal.user_id > 0 else None,
    )
    session.add(task)
    session.flush()
    for uid in _evaluators(session, list(data.get("evaluator_ids") or [])):
        session.add(CeTaskEvaluator(task_id=task.id, user_id=uid))
    session.flush()
    return task


def update_task(session: Session, task_id: int, data: dict[str, Any]) -> CeTask:
    task = session.get(CeTask, task_id)
    if task is None:
        raise NotFound(f"no evaluation task {task_id}")
    if data.get("status") is not None:
        if data["status"] not in ("open", "closed"):
            raise Invalid("status must be open or closed", field="status", value=data["status"])
        task.status = data["status"]
    if data.get("self_weight") is not None:
        task.self_weight = _num(data["self_weight"], "self_weight")
    if data.get("evaluator_ids") is not None:
        ids = _evaluators(session, list(data["evaluator_ids"]))
        session.execute(delete(CeTaskEvaluator).where(CeTaskEvaluator.task_id == task.id))
        for uid in ids:
            session.add(CeTaskEvaluator(task_id=task.id, user_id=uid))
    session.flush()
    return task


def _evaluator_ids(session: Session, task_id: int) -> list[int]:
    return list(
        session.scalars(
            select(CeTaskEvaluator.user_id)
            .where(CeTaskEvaluator.task_id == task_id)
            .order_by(CeTaskEvaluator.user_id)
        )
    )


def _can_see(session: Session, principal: Principal, task: CeTask) -> bool:
    if principal.is_admin:
        return True
    if principal.has_role("evaluator") and principal.user_id in _evaluator_ids(session, task.id):
        return True
    if principal.has_role("leader"):
        return any(
            region_visible(principal, c) or (principal.scope_region_code or "").startswith(c)
            for c in task.region_codes
        )
    return False


def task_for(session: Session, principal: Principal, task_id: int) -> CeTask:
    """The task if the caller may see it (admin; its evaluators; leaders of its regions)."""
    task = session.get(CeTask, task_id)
    if task is None or not _can_see(session, principal, task):
        raise NotFound(f"no evaluation task {task_id}")
    return task


def task_out(session: Session, task: CeTask) -> dict[str, Any]:
    names = dict(
        session.execute(
            select(Region.code, Region.name).where(Region.code.in_(task.region_codes))
        ).all()
    )
    return {
        "id": task.id,
        "name": task.name,
        "period_start": task.period_start.isoformat(),
        "period_end": task.period_end.isoformat(),
        "regions": [{"code": c, "name": names.get(c)} for c in task.region_codes],
        "self_weight": task.self_weight,
        "status": task.status,
        "evaluator_ids": _evaluator_ids(session, task.id),
        "records": session.scalar(select(func.count()).where(CeRecord.task_id == task.id)),
    }


def list_tasks(session: Session, principal: Principal) -> list[dict[str, Any]]:
    tasks = session.scalars(select(CeTask).order_by(CeTask.id.desc())).all()
    return [task_out(session, t) for t in tasks if _can_see(session, principal, t)]


# --------------------------------------------------------------------------- records


def _origin(session: Session, principal: Principal, task: CeTask, region: str, origin: str) -> str:
    """Who may record what: evaluators of the task third-party scores; admins both; a leader
    the self-evaluation of a region in their scope."""
    if origin not in ORIGINS:
        raise Invalid(f"origin must be one of {', '.join(ORIGINS)}", field="origin", value=origin)
    if task.status != "open":
        raise Conflict(f"evaluation task {task.name} is closed")
    if principal.is_admin:
        return origin
    if origin == "third_party":
        if principal.has_role("evaluator") and principal.user_id in _evaluator_ids(
            session, task.id
        ):
            return origin
        raise Forbidden("third-party scores are recorded by the task's evaluators")
    if principal.has_role("leader"):
        ensure_region(principal, region, write=True)
        return origin
    raise Forbidden("a self-evaluation is recorded by an admin or a leader of the region")


def _leaf(t: Tree, code: str, source: str, fld: str = "indicator_code") -> CeIndicator:
    n = t.by_code.get(code)
    if n is None:
        raise Invalid(f"no indicator {code!r}", field=fld, value=code)
    if t.kids(n.id) or n.source != source:
        raise Invalid(
            f"indicator {code} {n.name} is not a {SOURCES[source]} ({source}) indicator",
            field=fld,
            value=code,
        )
    return n


def _task_region(task: CeTask, code: str, fld: str = "region_code") -> str:
    if code not in task.region_codes:
        raise Invalid(f"region {code!r} is not a target of task {task.name}", field=fld, value=code)
    return code


def add_site_inspection(
    session: Session, principal: Principal, task_id: int, data: dict[str, Any]
) -> CeRecord:
    """Record one site inspection (实地考察): ``score`` 0–100, or ``deductions`` {check item
    code: points} (score = 100 − their sum, at least 0); optional note, photo (an upload of
    the caller), and lon/lat located to a unit grid inside the region."""
    from cityops.geo.service import locate

    task = task_for(session, principal, task_id)
    region = _task_region(task, str(data.get("region_code") or ""))
    origin = _origin(session, principal, task, region, str(data.get("origin") or "third_party"))
    n = _leaf(load_tree(session), str(data.get("indicator_code") or ""), "site_inspection")
    deductions = data.get("deductions")
    if (data.get("score") is None) == (deductions is None):
        raise Invalid("give either score or deductions", field="score")
    if deductions is not None:
        if not isinstance(deductions, dict) or not deductions:
            raise Invalid("deductions: {check item code: points}", field="deductions")
        items = {str(i["code"]): i for i in (n.check_items or [])}
        for code, pts in deductions.items():
            item = items.get(str(code))
            if item is None:
                raise Invalid(
                    f"indicator {n.code} has no check item {code!r}",
                    field="deductions",
                    value=code,
                )
            _num(pts, f"deductions.{code}", 0, float(item.get("max", 100)))
        score = max(0.0, 100.0 - sum(float(v) for v in deductions.values()))
    else:
        score = _num(data["score"], "score")
    lon, lat = data.get("lon"), data.get("lat")
    grid_code = None
    if (lon is None) != (lat is None):
        raise Invalid("give both lon and lat, or neither", field="lon" if lon is None else "lat")
    if lon is not None and lat is not None:
        try:
            grid_code = str(
                locate(session, _num(lon, "lon", -180, 180), _num(lat, "lat", -90, 90))["grid"][
                    "code"
                ]
            )
        except NotFound:
            grid_code = None
        if grid_code is None or not grid_code.startswith(region):
            raise Invalid(
                f"the location ({lon}, {lat}) is not in region {region}",
                field="lon",
                value=[lon, lat],
            )
    att_id = data.get("attachment_id")
    if att_id is not None:
        att = session.get(CaseAttachment, att_id)
        if att is None or att.uploaded_by != principal.user_id or att.case_id is not None:
            raise Invalid(
                f"attachment {att_id} is not an unused upload of yours",
                field="attachment_id",
                value=att_id,
            )
    rec = CeRecord(
        task_id=task.id,
        indicator_id=n.id,
        region_code=region,
        origin=origin,
        source="site_inspection",
        score=score,
        deductions={str(k): float(v) for k, v in deductions.items()} if deductions else None,
        note=data.get("note"),
        attachment_id=att_id,
        lon=float(lon) if lon is not None else None,
        lat=float(lat) if lat is not None else None,
        grid_code=grid_code,
        recorded_by=principal.user_id if principal.user_id > 0 else None,
    )
    session.add(rec)
    session.flush()
    return rec


def record_out(r: CeRecord, code: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "indicator_code": code,
        "region_code": r.region_code,
        "origin": r.origin,
        "source": r.source,
        "score": r.score,
        "deductions": r.deductions,
        "respondents": r.respondents,
        "note": r.note,
        "attachment_id": r.attachment_id,
        "lon": r.lon,
        "lat": r.lat,
        "grid_code": r.grid_code,
        "recorded_by": r.recorded_by,
        "recorded_at": r.recorded_at.isoformat() if r.recorded_at else None,
    }


def list_records(session: Session, principal: Principal, task_id: int) -> list[dict[str, Any]]:
    task = task_for(session, principal, task_id)
    codes = dict(session.execute(select(CeIndicator.id, CeIndicator.code)).all())
    rows = session.scalars(
        select(CeRecord).where(CeRecord.task_id == task.id).order_by(CeRecord.id)
    ).all()
    return [
        record_out(r, codes.get(r.indicator_id, "?"))
        for r in rows
        if principal.is_admin
        or principal.has_role("evaluator")
        or region_visible(principal, r.region_code)
    ]


@dataclass
class QuestionnaireResult:
    rows: int
    written: int
    replaced: int
    notes: list[str]


def import_questionnaire(
    session: Session,
    principal: Principal,
    task_id: int,
    filename: str,
    content: bytes,
    origin: str = "third_party",
) -> QuestionnaireResult:
    """Import questionnaire results (CSV: region_code, indicator_code, respondents, score).

    Every row is checked first; any error → :class:`Invalid` listing each (row = the 1-based
    data row after the header, field, value) and nothing is written. Rows of a (region,
    indicator) replace that pair's earlier questionnaire scores of the same origin."""
    task = task_for(session, principal, task_id)
    if origin not in ORIGINS:
        raise Invalid(f"origin must be one of {', '.join(ORIGINS)}", field="origin", value=origin)
    inp = TabularInput(kind="questionnaire", file=filename, fmt="csv", known=QUESTIONNAIRE_COLUMNS)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.csv"
        path.write_bytes(content)
        problems = read_csv(path, inp)
    errors: list[dict[str, Any]] = []

    def err(row: int, fld: str, value: Any, message: str) -> None:
        errors.append({"row": row, "field": fld, "value": value, "message": message})

    if inp.unreadable:
        err(0, inp.unreadable[0], None, inp.unreadable[1])
    else:
        for k, fld, msg in problems:
            err(k + 1, fld, None, msg)
        for col in sorted(QUESTIONNAIRE_COLUMNS - inp.present):
            err(0, col, None, f"the column {col!r} is missing")
        if inp.n == 0 and not errors:
            err(0, "(file)", None, "the file has no data rows")
    t = load_tree(session)
    good: list[tuple[str, CeIndicator, int, float]] = []
    if not errors:
        regions = inp.col("region_code")
        inds = inp.col("indicator_code")
        resp = inp.col("respondents")
        scores = inp.col("score")
        for i in range(inp.n):
            row = i + 1
            n_err = len(errors)
            region = regions[i] or ""
            if region not in task.region_codes:
                err(row, "region_code", regions[i], f"not a target region of task {task.name}")
            elif (
                origin == "self"
                and not principal.is_admin
                and not region_visible(principal, region)
            ):
                err(row, "region_code", region, "outside your data scope")
            ind = t.by_code.get(inds[i] or "")
            if ind is None:
                err(row, "indicator_code", inds[i], "no such indicator")
            elif ind.source != "questionnaire" or t.kids(ind.id):
                err(row, "indicator_code", inds[i], f"{ind.name} is not a questionnaire indicator")
            try:
                n_resp = int(resp[i] or "")
                if n_resp < 1:
                    raise ValueError
            except ValueError:
                err(row, "respondents", resp[i], "must be a whole number ≥ 1")
                n_resp = 0
            try:
                score = float(scores[i] or "")
                if not 0 <= score <= 100:
                    raise ValueError
            except ValueError:
                err(row, "score", scores[i], "must be a number 0–100")
                score = 0.0
            if len(errors) == n_err and ind is not None:
                good.append((region, ind, n_resp, score))
    if errors:
        first = errors[0]
        where = f"row {first['row']}, " if first["row"] else ""
        raise Invalid(
            f"{filename}: {len(errors)} error(s), nothing imported; first: {where}field "
            f"{first['field']!r}, value {first['value']!r}: {first['message']}",
            errors=errors[:MAX_ERRORS],
            error_count=len(errors),
            numbering="rows are numbered from 1 = the first data row after the header",
        )
    if good:
        _origin(session, principal, task, good[0][0], origin)
    pairs = {(g[0], g[1].id) for g in good}
    replaced = 0
    for region, ind_id in sorted(pairs):
        res = session.execute(
            delete(CeRecord).where(
                CeRecord.task_id == task.id,
                CeRecord.region_code == region,
                CeRecord.indicator_id == ind_id,
                CeRecord.origin == origin,
                CeRecord.source == "questionnaire",
            )
        )
        replaced += int(getattr(res, "rowcount", 0) or 0)
    for region, ind, n_resp, score in good:
        session.add(
            CeRecord(
                task_id=task.id,
                indicator_id=ind.id,
                region_code=region,
                origin=origin,
                source="questionnaire",
                score=score,
                respondents=n_resp,
                recorded_by=principal.user_id if principal.user_id > 0 else None,
            )
        )
    session.flush()
    return QuestionnaireResult(inp.n, len(good), replaced, inp.notes)


# --------------------------------------------------------------------------- scoring


def platform_value(
    session: Session,
    metric: str,
    region: str,
    start: date,
    end: date,
    cache: dict[str, Any] | None = None,
) -> float:
    """A platform figure of ``region`` for ``[start, end)`` mapped to 0–100 (a rate without
    data scores full marks, as in the evaluation composites). ``cache`` keeps the region's
    figures between the leaves of one report."""
    from cityops.evaluation import service

    path, invert = PLATFORM_METRICS[metric]
    figures = cache.get(region) if cache is not None else None
    if figures is None:
        figures = service.indicators(session, "region", region, service.Period(start, end))
        if cache is not None:
            cache[region] = figures
    v: Any = figures
    for part in path.split("."):
        v = v.get(part) if isinstance(v, dict) else None
    if v is None:
        return 100.0
    x = min(100.0, max(0.0, float(v)))
    return 100.0 - x if invert else x


def _weighted(items: Sequence[tuple[float, float | None]]) -> float | None:
    """Weighted mean of (weight, score) over the scored items (weights renormalised)."""
    scored = [(w, s) for w, s in items if s is not None]
    total = sum(w for w, _ in scored)
    if not scored or total <= 0:
        return None
    return sum(w * s for w, s in scored) / total


def _leaf_scores(
    session: Session, task: CeTask, t: Tree
) -> dict[tuple[str, int], dict[str, float | None]]:
    """(region, leaf id) → {self, third_party, score} from records and the platform."""
    agg: dict[tuple[str, int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in session.scalars(select(CeRecord).where(CeRecord.task_id == task.id)):
        weight = float(r.respondents or 1) if r.source == "questionnaire" else 1.0
        agg[(r.region_code, r.indicator_id, r.origin)].append((weight, r.score))
    sw = task.self_weight
    figures: dict[str, Any] = {}
    out: dict[tuple[str, int], dict[str, float | None]] = {}
    for region in task.region_codes:
        for n in t.nodes:
            if t.kids(n.id) or not n.source:
                continue
            if n.source == "platform":
                v = platform_value(
                    session,
                    n.platform_metric or "",
                    region,
                    task.period_start,
                    task.period_end,
                    figures,
                )
                out[(region, n.id)] = {"self": v, "third_party": v, "score": v}
                continue
            vals: dict[str, float | None] = {}
            for origin in ORIGINS:
                rows = agg.get((region, n.id, origin), [])
                vals[origin] = _weighted(rows) if rows else None
            s_, tp = vals["self"], vals["third_party"]
            if s_ is not None and tp is not None:
                final: float | None = (s_ * sw + tp * (100 - sw)) / 100
            else:
                final = s_ if s_ is not None else tp
            out[(region, n.id)] = {"self": s_, "third_party": tp, "score": final}
    return out


def report(session: Session, principal: Principal | None, task_id: int) -> dict[str, Any]:
    """The scored report of a task: per region every node's self / third-party / blended
    score, weight in the tree and contribution; the regions ranked by total. A leader limited
    to a region sees only the rows of their regions (ranked among all)."""
    task = task_for(session, principal, task_id) if principal else session.get(CeTask, task_id)
    if task is None:
        raise NotFound(f"no evaluation task {task_id}")
    t = load_tree(session)
    validate_tree(t)
    leaves = _leaf_scores(session, task, t)
    names = dict(
        session.execute(
            select(Region.code, Region.name).where(Region.code.in_(task.region_codes))
        ).all()
    )
    order = t.walk()
    rows: list[dict[str, Any]] = []
    for region in task.region_codes:
        memo: dict[int, dict[str, float | None]] = {}

        def score_of(
            n: CeIndicator, region: str = region, memo: dict[int, Any] = memo
        ) -> dict[str, float | None]:
            if n.id in memo:
                return memo[n.id]
            kids = t.kids(n.id)
            if not kids:
                v = leaves.get((region, n.id), {"self": None, "third_party": None, "score": None})
            else:
                child = [(k.weight, score_of(k)) for k in kids]
                v = {
                    key: _weighted([(w, c[key]) for w, c in child])
                    for key in ("self", "third_party", "score")
                }
            memo[n.id] = v
            return v

        top = [(n.weight, score_of(n)) for n in t.kids(None)]
        totals = {
            key: _weighted([(w, c[key]) for w, c in top])
            for key in ("self", "third_party", "score")
        }
        nodes_out = []
        missing = []
        gw: dict[int, float] = {}
        for n, depth in order:
            g = (gw[n.parent_id] if n.parent_id is not None else 1.0) * n.weight / 100
            gw[n.id] = g
            v = score_of(n)
            is_leaf = not t.kids(n.id)
            if is_leaf and v["score"] is None:
                missing.append(n.code)
            nodes_out.append(
                {
                    "code": n.code,
                    "name": n.name,
                    "depth": depth,
                    "parent": t.by_id[n.parent_id].code if n.parent_id is not None else None,
                    "leaf": is_leaf,
                    "source": n.source,
                    "weight": n.weight,
                    "global_weight": r2(g * 100),
                    "self": r2(v["self"]),
                    "third_party": r2(v["third_party"]),
                    "score": r2(v["score"]),
                    "contribution": r2(v["score"] * g) if v["score"] is not None else None,
                }
            )
        rows.append(
            {
                "code": region,
                "name": names.get(region),
                "total": r2(totals["score"]),
                "self_total": r2(totals["self"]),
                "third_party_total": r2(totals["third_party"]),
                "complete": not missing,
                "missing": missing,
                "nodes": nodes_out,
            }
        )
    rows.sort(key=lambda r: (r["total"] is None, -(r["total"] or 0), r["code"]))
    rank, last = 0, None
    for i, r in enumerate(rows, 1):
        if r["total"] != last:
            rank, last = i, r["total"]
        r["rank"] = rank if r["total"] is not None else None
    if principal is not None and not principal.is_admin and principal.scope_region_code:
        rows = [r for r in rows if region_visible(principal, r["code"])]
    return {
        "task": task_out(session, task),
        "regions": rows,
        "ranking": [
            {"rank": r["rank"], "code": r["code"], "name": r["name"], "total": r["total"]}
            for r in rows
        ],
    }


def write_xlsx(data: dict[str, Any], path: Path) -> None:
    """Sheets 排名 and one sheet per region with every node's scores."""
    wb = Workbook()
    wb.remove(wb.active)
    ws = sheet(
        wb,
        "排名",
        ["名次", "代码", "区域", "综合得分", "自评", "第三方", "完整"],
        [6, 12, 16, 10, 10, 10, 8],
    )
    for r in data["regions"]:
        ws.append(
            [
                r["rank"],
                r["code"],
                r["name"],
                r["total"],
                r["self_total"],
                r["third_party_total"],
                "是" if r["complete"] else "否",
            ]
        )
    for r in data["regions"]:
        ws = sheet(
            wb,
            f"{r['name'] or r['code']}"[:31],
            ["代码", "指标", "权重%", "全局权重%", "数据来源", "自评", "第三方", "得分", "贡献"],
            [10, 34, 8, 10, 10, 8, 8, 8, 8],
        )
        for n in r["nodes"]:
            ws.append(
                [
                    n["code"],
                    "　" * (n["depth"] - 1) + n["name"],
                    n["weight"],
                    n["global_weight"],
                    SOURCES.get(n["source"] or "", ""),
                    n["self"],
                    n["third_party"],
                    n["score"],
                    n["contribution"],
                ]
            )
        ws.append(
            [
                "",
                "合计",
                100,
                100,
                "",
                r["self_total"],
                r["third_party_total"],
                r["total"],
                r["total"],
            ]
        )
    wb.save(path)

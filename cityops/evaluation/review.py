"""Third-party review (第三方考评): reviewers rate a random sample of closed cases.

* **Reviewers** (第三方考评员): users with the role ``reviewer`` plus a profile (:class:`Reviewer`):
  kind (人大代表 / 政协委员 / 效能监督员 / 市民), area (a region-code prefix) and active.
* **Rounds** (:class:`ReviewRound`): an admin — or the monthly job registered below — draws,
  for every active reviewer, ``sample_size`` cases closed (结案) in ``[period_start,
  period_end)`` (Asia/Shanghai days) inside the reviewer's area. The draw is reproducible: the
  candidates are ordered by case id and sampled with ``random.Random(f"{seed}:{reviewer id}")``;
  reviewers are served most specific area first (then by id); a reviewer never gets a case
  they reported themselves. No case goes to two reviewers of one round (unique constraint),
  and a second draw of the same round only tops reviewers up with cases not in it yet.
* **Ratings**: 满意 / 基本满意 / 不满意 + comment + optional photo (an upload of
  ``POST /api/v1/attachments`` by the reviewer; bound to the case as purpose
  ``review``). 不满意 with ``reopen`` (or the city setting ``auto_reopen``) sends the case back
  to 核查 through the workflow action ``reopen`` (重新核查) performed by the system principal
  ``第三方考评``; the event's data names the round, assignment and reviewer.
* **Scores**: 满意 100, 基本满意 60, 不满意 0 (city setting ``review_settings.scores``), averaged per
  lead unit (主办单位 of the case when drawn) and per region for the local days of the rating
  time. :func:`unit_review_scores` feeds the unit composite of the evaluation.
"""

from __future__ import annotations

import random
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cityops.access.models import User, UserRole
from cityops.cases.models import STAGES, Case, CaseAttachment
from cityops.cases.service import mask_name, mask_phone, perform
from cityops.core.db import utcnow
from cityops.core.errors import Conflict, DomainError, Forbidden, Invalid, NotFound
from cityops.core.security import Principal, prefix_filter
from cityops.evaluation.models import ReviewAssignment, Reviewer, ReviewRound
from cityops.evaluation.rollup import TZ
from cityops.geo.models import Category, CitySetting, Region, Unit

KINDS = {"npc": "人大代表", "cppcc": "政协委员", "supervisor": "效能监督员", "citizen": "市民"}
RATINGS = ("满意", "基本满意", "不满意")
SETTINGS_KEY = "review_settings"
DEFAULT_SETTINGS: dict[str, Any] = {
    "scores": {"满意": 100, "基本满意": 60, "不满意": 0},
    #: 不满意 reopens the case for 核查 even when the reviewer does not ask for it.
    "auto_reopen": False,
    #: The monthly job: a round for last month on the first run of each month.
    "auto_round": {"enabled": False, "sample_size": 5},
}
#: The workflow actor of reopenings caused by a review (holds the 值班长 role the action needs).
SYSTEM_PRINCIPAL = Principal(
    user_id=0,
    username="第三方考评",
    display_name="第三方考评 (system)",
    roles=frozenset({"shift_leader"}),
    unit_id=None,
    scope_region_code=None,
    scope_unit_only=False,
)


@dataclass(frozen=True)
class ReviewScore:
    """Average rating score (0–100, 2 decimals) of ``count`` rated cases."""

    score: float
    count: int


def _r2(x: float) -> float:
    return float(Decimal(str(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def local_bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """``[start, end)`` local (Asia/Shanghai) days as aware datetimes."""
    return datetime.combine(start, time(), TZ), datetime.combine(end, time(), TZ)


# --------------------------------------------------------------------------- settings


def get_settings(session: Session) -> dict[str, Any]:
    out: dict[str, Any] = {
        "scores": dict(DEFAULT_SETTINGS["scores"]),
        "auto_reopen": DEFAULT_SETTINGS["auto_reopen"],
        "auto_round": dict(DEFAULT_SETTINGS["auto_round"]),
    }
    row = session.get(CitySetting, SETTINGS_KEY)
    if row is not None and isinstance(row.value, dict):
        for k, v in row.value.items():
            if isinstance(out.get(k), dict) and isinstance(v, dict):
                out[k].update(v)
            elif k in out:
                out[k] = v
    return out


def set_settings(session: Session, value: dict[str, Any]) -> dict[str, Any]:
    """Change the review settings (any subset of scores / auto_reopen / auto_round)."""
    for k in value:
        if k not in DEFAULT_SETTINGS:
            raise Invalid(f"unknown review setting {k!r}", field=k)
    scores = value.get("scores")
    if scores is not None:
        if not isinstance(scores, dict) or set(scores) - set(RATINGS):
            raise Invalid(f"scores: keys are {', '.join(RATINGS)}", field="scores", value=scores)
        for r, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 100:
                raise Invalid(f"score of {r} must be 0–100", field=f"scores.{r}", value=v)
    if "auto_reopen" in value and not isinstance(value["auto_reopen"], bool):
        raise Invalid("auto_reopen must be true or false", field="auto_reopen")
    auto = value.get("auto_round")
    if auto is not None:
        if not isinstance(auto, dict) or set(auto) - {"enabled", "sample_size"}:
            raise Invalid("auto_round: keys enabled, sample_size", field="auto_round")
        n = auto.get("sample_size", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1000:
            raise Invalid("auto_round.sample_size must be 1–1000", field="auto_round.sample_size")
    row = session.get(CitySetting, SETTINGS_KEY)
    merged = dict(row.value) if row is not None and isinstance(row.value, dict) else {}
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = {**merged[k], **v}
        else:
            merged[k] = v
    if row is None:
        session.add(CitySetting(key=SETTINGS_KEY, value=merged))
    else:
        row.value = merged
    session.flush()
    return get_settings(session)


# --------------------------------------------------------------------------- reviewers


def _kind(value: str) -> str:
    v = value.strip()
    if v in KINDS:
        return v
    for code, label in KINDS.items():
        if v == label:
            return code
    raise Invalid(
        f"kind must be one of {', '.join(f'{c} ({n})' for c, n in KINDS.items())}",
        field="kind",
        value=value,
    )


def _area(session: Session, area: str) -> str:
    a = area.strip()
    if (
        not a.isdigit()
        or session.scalars(select(Region.id).where(Region.code == a)).first() is None
    ):
        raise Invalid(f"area must be the code of a region of the city: {area!r}", field="area")
    return a


def area_prefix(session: Session, area: str) -> str:
    """The grid-code prefix of an area: the region code, or '' (everything) for the city
    itself (a prefecture city's code, e.g. 341600, is not a prefix of its districts')."""
    level = session.scalars(select(Region.level).where(Region.code == area)).first()
    return "" if level == "city" else area


def reviewer_out(session: Session, r: Reviewer) -> dict[str, Any]:
    u = session.get(User, r.user_id)
    return {
        "id": r.id,
        "user_id": r.user_id,
        "username": u.username if u else None,
        "display_name": u.display_name if u else None,
        "kind": r.kind,
        "kind_label": KINDS.get(r.kind),
        "area": r.area,
        "active": r.active,
        "note": r.note,
    }


def register_reviewer(session: Session, admin: Principal | None, data: dict[str, Any]) -> Reviewer:
    """Register a reviewer: an existing user (``user_id``) gets the role ``reviewer`` if
    missing, or a new user is created (``username``, ``display_name``, ``password``)."""
    from cityops.access import service as access

    kind = _kind(str(data.get("kind") or ""))
    area = _area(session, str(data.get("area") or ""))
    if data.get("user_id") is not None:
        user = session.get(User, int(data["user_id"]))
        if user is None:
            raise Invalid(f"no user {data['user_id']}", field="user_id", value=data["user_id"])
        if "reviewer" not in user.roles:
            user.role_rows.append(UserRole(role="reviewer"))
    else:
        for f in ("username", "display_name", "password"):
            if not data.get(f):
                raise Invalid(f"give user_id or a new user's {f}", field=f)
        user = access.create_user(
            session,
            admin,
            username=str(data["username"]),
            display_name=str(data["display_name"]),
            password=str(data["password"]),
            roles=["reviewer"],
            phone=data.get("phone"),
        )
    if session.scalars(select(Reviewer.id).where(Reviewer.user_id == user.id)).first():
        raise Conflict(f"user {user.username} is already a reviewer", field="user_id")
    r = Reviewer(user_id=user.id, kind=kind, area=area, active=True, note=data.get("note"))
    session.add(r)
    session.flush()
    return r


def update_reviewer(session: Session, reviewer_id: int, changes: dict[str, Any]) -> Reviewer:
    r = session.get(Reviewer, reviewer_id)
    if r is None:
        raise NotFound(f"no reviewer {reviewer_id}")
    if changes.get("kind") is not None:
        r.kind = _kind(str(changes["kind"]))
    if changes.get("area") is not None:
        r.area = _area(session, str(changes["area"]))
    if changes.get("active") is not None:
        r.active = bool(changes["active"])
    if "note" in changes:
        r.note = changes["note"]
    session.flush()
    return r


def list_reviewers(session: Session) -> list[dict[str, Any]]:
    return [
        reviewer_out(session, r) for r in session.scalars(select(Reviewer).order_by(Reviewer.id))
    ]


def reviewer_of(session: Session, principal: Principal) -> Reviewer:
    r = session.scalars(select(Reviewer).where(Reviewer.user_id == principal.user_id)).first()
    if r is None or not principal.has_role("reviewer"):
        raise Forbidden("you are not registered as a third-party reviewer")
    return r


# --------------------------------------------------------------------------- rounds


def create_round(
    session: Session,
    principal: Principal | None,
    *,
    name: str,
    period_start: date,
    period_end: date,
    sample_size: int,
    seed: int | None = None,
    auto: bool = False,
) -> ReviewRound:
    if period_end <= period_start:
        raise Invalid("period_end must be after period_start (it is exclusive)", field="period_end")
    if not 1 <= sample_size <= 1000:
        raise Invalid("sample_size must be 1–1000", field="sample_size", value=sample_size)
    if not name.strip():
        raise Invalid("the round needs a name", field="name")
    rnd = ReviewRound(
        name=name.strip(),
        period_start=period_start,
        period_end=period_end,
        sample_size=sample_size,
        seed=seed if seed is not None else secrets.randbelow(2**31),
        status="open",
        auto=auto,
        created_by=principal.user_id if principal and principal.user_id > 0 else None,
    )
    session.add(rnd)
    session.flush()
    return rnd


def get_round(session: Session, round_id: int) -> ReviewRound:
    rnd = session.get(ReviewRound, round_id)
    if rnd is None:
        raise NotFound(f"no review round {round_id}")
    return rnd


def _closed_in(session: Session, rnd: ReviewRound) -> list[tuple[int, int | None, str, int | None]]:
    """(id, lead unit, grid code, reporter user) of every case closed in the round's period,
    by id (one query for all reviewers; each reviewer's area is a prefix of the grid code)."""
    lo, hi = local_bounds(rnd.period_start, rnd.period_end)
    q = (
        select(Case.id, Case.lead_unit_id, Case.grid_code, Case.reporter_user_id)
        .where(
            Case.stage == "closed",
            Case.closed_at >= lo,
            Case.closed_at < hi,
            Case.grid_code.is_not(None),
        )
        .order_by(Case.id)
    )
    return [(int(i), u, str(g), rep) for i, u, g, rep in session.execute(q)]


def draw(session: Session, round_id: int) -> dict[str, Any]:
    """Draw (or top up) the round's sample for every active reviewer; see the module doc."""
    rnd = get_round(session, round_id)
    if rnd.status != "open":
        raise Conflict(f"review round {rnd.id} is closed")
    taken = set(
        session.scalars(select(ReviewAssignment.case_id).where(ReviewAssignment.round_id == rnd.id))
    )
    have: dict[int, int] = dict(
        session.execute(
            select(ReviewAssignment.reviewer_id, func.count())
            .where(ReviewAssignment.round_id == rnd.id)
            .group_by(ReviewAssignment.reviewer_id)
        ).all()
    )
    reviewers = session.scalars(select(Reviewer).where(Reviewer.active.is_(True))).all()
    prefixes = {r.id: area_prefix(session, r.area) for r in reviewers}
    reviewers = sorted(reviewers, key=lambda r: (-len(prefixes[r.id]), r.id))
    closed = _closed_in(session, rnd) if reviewers else []
    drawn: dict[int, list[int]] = {}
    short: list[dict[str, Any]] = []
    for r in reviewers:
        need = rnd.sample_size - have.get(r.id, 0)
        if need <= 0:
            continue
        prefix = prefixes[r.id]
        # never a case the reviewer reported themselves
        pool = [
            c for c in closed if c[0] not in taken and c[2].startswith(prefix) and c[3] != r.user_id
        ]
        rng = random.Random(f"{rnd.seed}:{r.id}")
        pick = rng.sample(pool, min(need, len(pool)))
        for cid, unit, grid, _reporter in sorted(pick):
            taken.add(cid)
            session.add(
                ReviewAssignment(
                    round_id=rnd.id,
                    reviewer_id=r.id,
                    case_id=cid,
                    unit_id=unit,
                    region_code=grid,
                    reopened=False,
                )
            )
        drawn[r.id] = sorted(c[0] for c in pick)
        if len(pick) < need:
            short.append({"reviewer_id": r.id, "wanted": need, "drawn": len(pick)})
    try:
        session.flush()
    except IntegrityError:  # another draw of the same round committed first (unique case)
        raise Conflict(
            f"review round {rnd.id} was drawn by someone else at the same time: draw again"
        ) from None
    return {
        "round_id": rnd.id,
        "seed": rnd.seed,
        "drawn": {str(k): v for k, v in drawn.items()},
        "total": sum(len(v) for v in drawn.values()),
        "short": short,
    }


def round_out(session: Session, rnd: ReviewRound) -> dict[str, Any]:
    counts = session.execute(
        select(func.count(), func.count(ReviewAssignment.rated_at)).where(
            ReviewAssignment.round_id == rnd.id
        )
    ).one()
    return {
        "id": rnd.id,
        "name": rnd.name,
        "period_start": rnd.period_start.isoformat(),
        "period_end": rnd.period_end.isoformat(),
        "sample_size": rnd.sample_size,
        "seed": rnd.seed,
        "status": rnd.status,
        "auto": rnd.auto,
        "assigned": int(counts[0]),
        "rated": int(counts[1]),
    }


def set_round_status(session: Session, round_id: int, status: str) -> ReviewRound:
    if status not in ("open", "closed"):
        raise Invalid("status must be open or closed", field="status", value=status)
    rnd = get_round(session, round_id)
    rnd.status = status
    session.flush()
    return rnd


# --------------------------------------------------------------------------- reviewer's view


def _assignment_for(
    session: Session, principal: Principal, assignment_id: int, for_update: bool = False
) -> ReviewAssignment:
    """The reviewer's own assignment (404 for anybody else's: its existence is not revealed).

    ``for_update`` locks the row (PostgreSQL; SQLite writers are serialised anyway), so two
    ratings of one assignment sent at once are taken one after the other."""
    me = reviewer_of(session, principal)
    a = session.get(ReviewAssignment, assignment_id, with_for_update=for_update or None)
    if a is None or a.reviewer_id != me.id:
        raise NotFound(f"no review assignment {assignment_id}")
    return a


def assignment_out(session: Session, a: ReviewAssignment, detail: bool = False) -> dict[str, Any]:
    """What a reviewer may see: the case's place, category, description, lead unit, dates and
    the handling photos; the reporter's name and phone masked, no tracking code."""
    c = session.get(Case, a.case_id)
    assert c is not None
    cat = session.get(Category, c.category_id)
    unit = session.get(Unit, a.unit_id) if a.unit_id else None
    rnd = session.get(ReviewRound, a.round_id)
    out: dict[str, Any] = {
        "id": a.id,
        "round_id": a.round_id,
        "round": rnd.name if rnd else None,
        "case": {
            "number": c.number,
            "category": cat.name if cat else None,
            "description": c.description,
            "address": c.address,
            "lon": c.lon,
            "lat": c.lat,
            "grid_code": c.grid_code,
            "lead_unit": unit.name if unit else None,
            "stage": c.stage,
            "stage_label": STAGES.get(c.stage),
            "close_type": c.close_type,
            "reported_at": _iso(c.reported_at),
            "closed_at": _iso(c.closed_at),
            "reporter": {"name": mask_name(c.reporter_name), "phone": mask_phone(c.reporter_phone)},
        },
        "rating": a.rating,
        "comment": a.comment,
        "attachment_id": a.attachment_id,
        "rated_at": _iso(a.rated_at),
        "reopened": a.reopened,
        "reopen_error": a.reopen_error,
    }
    if detail:
        out["photos"] = [
            {"id": pid, "purpose": purpose}
            for pid, purpose in session.execute(
                select(CaseAttachment.id, CaseAttachment.purpose)
                .where(
                    CaseAttachment.case_id == c.id,
                    CaseAttachment.content_type.startswith("image/"),
                )
                .order_by(CaseAttachment.id)
            )
        ]
    return out


def my_assignments(
    session: Session, principal: Principal, status: str = "all", round_id: int | None = None
) -> list[dict[str, Any]]:
    me = reviewer_of(session, principal)
    q = select(ReviewAssignment).where(ReviewAssignment.reviewer_id == me.id)
    if round_id is not None:
        q = q.where(ReviewAssignment.round_id == round_id)
    if status == "pending":
        q = q.where(ReviewAssignment.rated_at.is_(None))
    elif status == "rated":
        q = q.where(ReviewAssignment.rated_at.is_not(None))
    elif status != "all":
        raise Invalid("status must be all, pending or rated", field="status", value=status)
    return [assignment_out(session, a) for a in session.scalars(q.order_by(ReviewAssignment.id))]


def my_assignment(session: Session, principal: Principal, assignment_id: int) -> dict[str, Any]:
    return assignment_out(session, _assignment_for(session, principal, assignment_id), True)


def assignment_photo(
    session: Session, principal: Principal, assignment_id: int, attachment_id: int
) -> CaseAttachment:
    """A photo of the assigned case (the caller serves its EXIF-free public copy)."""
    a = _assignment_for(session, principal, assignment_id)
    att = session.get(CaseAttachment, attachment_id)
    if att is None or att.case_id != a.case_id or not att.content_type.startswith("image/"):
        raise NotFound(f"no photo {attachment_id}")
    return att


def rate(
    session: Session,
    principal: Principal,
    assignment_id: int,
    rating: str,
    comment: str | None = None,
    attachment_id: int | None = None,
    reopen: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Rate one assigned case (once). 不满意 + ``reopen`` (or ``auto_reopen``) → 重新核查."""
    t = now or utcnow()
    a = _assignment_for(session, principal, assignment_id, for_update=True)
    rnd = get_round(session, a.round_id)
    if rnd.status != "open":
        raise Conflict(f"review round {rnd.name} is closed")
    if a.rated_at is not None:
        raise Conflict(f"this case was already rated ({a.rating})", rating=a.rating)
    if rating not in RATINGS:
        raise Invalid(f"rating must be one of {', '.join(RATINGS)}", field="rating", value=rating)
    text = (comment or "").strip() or None
    if rating == "不满意" and not text:
        raise Invalid("不满意 needs a comment saying what is wrong", field="comment")
    case = session.get(Case, a.case_id)
    assert case is not None
    att: CaseAttachment | None = None
    if attachment_id is not None:
        att = session.get(CaseAttachment, attachment_id)
        if att is None or att.uploaded_by != principal.user_id or att.case_id is not None:
            raise Invalid(
                f"attachment {attachment_id} is not an unused upload of yours",
                field="attachment_id",
                value=attachment_id,
            )
        if not att.content_type.startswith("image/"):
            raise Invalid("the attachment must be a photo", field="attachment_id")
    settings = get_settings(session)
    wants_reopen = rating == "不满意" and (reopen or bool(settings["auto_reopen"]))
    if wants_reopen:
        reviewer = session.get(Reviewer, a.reviewer_id)
        kind = KINDS.get(reviewer.kind, "") if reviewer else ""
        payload = {
            "note": f"第三方考评不满意（{kind} {principal.display_name}）：{text}",
            "data": {
                "origin": "third_party_review",
                "round_id": a.round_id,
                "assignment_id": a.id,
                "reviewer_user_id": principal.user_id,
                "rating": rating,
            },
        }
        if case.stage != "closed":
            a.reopen_error = f"the case is {STAGES.get(case.stage, case.stage)}, not 已结案"
        else:
            try:
                perform(session, SYSTEM_PRINCIPAL, case.id, "reopen", payload, None, t)
                a.reopened = True
            except DomainError as exc:  # e.g. no inspector for the grid: keep the rating
                a.reopen_error = exc.message
    a.rating = rating
    a.comment = text
    a.rated_at = t
    if att is not None:
        att.case_id = case.id
        att.purpose = "review"
        a.attachment_id = att.id
    session.flush()
    return assignment_out(session, a, True)


# --------------------------------------------------------------------------- scores


def _rated(
    session: Session, start: date, end: date, scope: str | None = None
) -> list[tuple[str, int | None, str | None, int]]:
    lo, hi = local_bounds(start, end)
    q = select(
        ReviewAssignment.rating,
        ReviewAssignment.unit_id,
        ReviewAssignment.region_code,
        ReviewAssignment.reviewer_id,
    ).where(
        ReviewAssignment.rated_at.is_not(None),
        ReviewAssignment.rated_at >= lo,
        ReviewAssignment.rated_at < hi,
    )
    if scope:
        q = q.where(prefix_filter(ReviewAssignment.region_code, scope))
    return [(str(r), u, g, int(v)) for r, u, g, v in session.execute(q)]


def _average(values: list[float]) -> float:
    return _r2(sum(values) / len(values))


def unit_review_scores(session: Session, start: date, end: date) -> dict[int, ReviewScore]:
    """Per lead unit: the average review score (0–100) and the number of ratings given in
    ``[start, end)`` (Asia/Shanghai days of the rating time; ``end`` exclusive, like
    :class:`cityops.evaluation.service.Period`). Units without a rating are absent."""
    scores = get_settings(session)["scores"]
    per: dict[int, list[float]] = defaultdict(list)
    for rating, unit, _grid, _rv in _rated(session, start, end):
        if unit is not None:
            per[unit].append(float(scores[rating]))
    return {u: ReviewScore(_average(v), len(v)) for u, v in sorted(per.items())}


def report(session: Session, start: date, end: date, scope: str | None = None) -> dict[str, Any]:
    """Review report of ``[start, end)``: overall, per unit, per district / street, per kind
    of reviewer, and the 不满意 cases. ``scope`` keeps ratings of cases in that region."""
    if end <= start:
        raise Invalid("end must be after start (end is exclusive)", field="end")
    scores = get_settings(session)["scores"]
    rows = _rated(session, start, end, scope)

    def block(items: list[str]) -> dict[str, Any]:
        vals = [float(scores[r]) for r in items]
        return {
            "count": len(items),
            "score": _average(vals) if vals else None,
            **{r: items.count(r) for r in RATINGS},
        }

    per_unit: dict[int, list[str]] = defaultdict(list)
    per_region: dict[str, list[str]] = defaultdict(list)
    per_kind: dict[str, list[str]] = defaultdict(list)
    kinds = dict(session.execute(select(Reviewer.id, Reviewer.kind)).all())
    for rating, unit, grid, rv in rows:
        if unit is not None:
            per_unit[unit].append(rating)
        if grid:
            per_region[grid[:6]].append(rating)
            per_region[grid[:9]].append(rating)
        per_kind[kinds.get(rv, "")].append(rating)
    unit_names = dict(session.execute(select(Unit.id, Unit.name)).all())
    region_rows = session.execute(
        select(Region.code, Region.name, Region.level).where(Region.code.in_(list(per_region)))
    ).all()
    units = [{"unit_id": u, "name": unit_names.get(u), **block(v)} for u, v in per_unit.items()]
    units.sort(key=lambda x: (-(x["score"] or 0), x["unit_id"]))
    regions = [
        {"code": code, "name": name, "level": level, **block(per_region[code])}
        for code, name, level in region_rows
    ]
    regions.sort(key=lambda x: (len(x["code"]), -(x["score"] or 0), x["code"]))
    for i, x in enumerate(units, 1):
        x["rank"] = i
    lo, hi = local_bounds(start, end)
    q = (
        select(ReviewAssignment, Case.number)
        .join(Case, Case.id == ReviewAssignment.case_id)
        .where(
            ReviewAssignment.rating == "不满意",
            ReviewAssignment.rated_at >= lo,
            ReviewAssignment.rated_at < hi,
        )
        .order_by(ReviewAssignment.rated_at)
    )
    if scope:
        q = q.where(prefix_filter(ReviewAssignment.region_code, scope))
    unsatisfied = [
        {
            "assignment_id": a.id,
            "case_id": a.case_id,
            "number": number,
            "unit": unit_names.get(a.unit_id) if a.unit_id else None,
            "region_code": a.region_code,
            "comment": a.comment,
            "rated_at": _iso(a.rated_at),
            "reopened": a.reopened,
            "reopen_error": a.reopen_error,
        }
        for a, number in session.execute(q)
    ]
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "scope": scope,
        "scores": scores,
        "overall": block([r[0] for r in rows]),
        "units": units,
        "regions": regions,
        "kinds": [
            {"kind": k, "label": KINDS.get(k), **block(v)} for k, v in sorted(per_kind.items())
        ],
        "unsatisfied": unsatisfied,
    }


# --------------------------------------------------------------------------- Excel

BOLD = Font(bold=True)
HEAD_FILL = PatternFill("solid", fgColor="DDEBF7")


def sheet(wb: Workbook, title: str, headers: list[str], widths: list[int]) -> Any:
    """A worksheet with a bold, filled, frozen header row (shared with the comprehensive
    evaluation report)."""
    ws = wb.create_sheet(title)
    ws.append(headers)
    for i, w in enumerate(widths, 1):
        cell = ws.cell(row=1, column=i)
        cell.font = BOLD
        cell.fill = HEAD_FILL
        cell.alignment = Alignment(horizontal="center")
        ws.column_dimensions[get_column_letter(i)].width = w
    ws.freeze_panes = "A2"
    return ws


def write_xlsx(data: dict[str, Any], path: Path) -> None:
    """Sheets 汇总, 单位, 区域, 不满意案卷."""
    wb = Workbook()
    wb.remove(wb.active)
    ws = sheet(wb, "汇总", ["项目", "值"], [20, 30])
    o = data["overall"]
    for k, v in (
        ("期间", f"{data['start']} – {data['end']} (不含)"),
        ("范围", data["scope"] or "全市"),
        ("评价数", o["count"]),
        ("平均得分", o["score"]),
        *((r, o[r]) for r in RATINGS),
    ):
        ws.append([k, v])
    heads = ["评价数", "得分", *RATINGS]
    ws = sheet(wb, "单位", ["名次", "单位", *heads], [6, 30, 8, 8, 8, 10, 8])
    for u in data["units"]:
        ws.append([u["rank"], u["name"], u["count"], u["score"], *(u[r] for r in RATINGS)])
    ws = sheet(wb, "区域", ["代码", "名称", "级别", *heads], [12, 20, 10, 8, 8, 8, 10, 8])
    for g in data["regions"]:
        ws.append(
            [g["code"], g["name"], g["level"], g["count"], g["score"], *(g[r] for r in RATINGS)]
        )
    ws = sheet(
        wb,
        "不满意案卷",
        ["案卷编号", "单位", "网格", "意见", "评价时间", "已重新核查"],
        [16, 24, 18, 40, 24, 10],
    )
    for x in data["unsatisfied"]:
        ws.append(
            [
                x["number"],
                x["unit"],
                x["region_code"],
                x["comment"],
                x["rated_at"],
                "是" if x["reopened"] else "否",
            ]
        )
    wb.save(path)


# --------------------------------------------------------------------------- monthly job


def _last_month(now: datetime) -> tuple[date, date]:
    today = now.astimezone(TZ).date()
    end = today.replace(day=1)
    start = (end - timedelta(days=1)).replace(day=1)
    return start, end


def monthly_round(session: Session, now: datetime) -> dict[str, Any] | None:
    """The scheduled job: when ``auto_round.enabled``, make (once) and draw the round of last
    month. Idempotent: an auto round of that period already there → nothing."""
    cfg = get_settings(session)["auto_round"]
    if not cfg.get("enabled"):
        return None
    start, end = _last_month(now)
    exists = session.scalars(
        select(ReviewRound.id).where(
            ReviewRound.auto.is_(True),
            ReviewRound.period_start == start,
            ReviewRound.period_end == end,
        )
    ).first()
    if exists is not None:
        return None
    rnd = create_round(
        session,
        None,
        name=f"{start:%Y-%m} 第三方考评",
        period_start=start,
        period_end=end,
        sample_size=int(cfg.get("sample_size") or 5),
        auto=True,
    )
    return draw(session, rnd.id)


__all__ = [
    "KINDS",
    "RATINGS",
    "ReviewScore",
    "draw",
    "rate",
    "report",
    "unit_review_scores",
]

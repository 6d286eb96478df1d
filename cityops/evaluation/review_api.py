"""Third-party review API (第三方考评): reviewers, rounds, the reviewer's worklist, the report.

* admin: registers reviewers, makes rounds and draws their samples, changes the settings;
* reviewer (第三方考评员): sees and rates only their own assignments (404 for others);
* leader / admin: the report (a district leader only the ratings of their district).
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from cityops.cases.storage import default_storage
from cityops.core.security import AdminDep, Principal, SessionDep, ensure_region, require_roles
from cityops.evaluation import review
from cityops.evaluation.models import ReviewAssignment, Reviewer, ReviewRound
from cityops.evaluation.service import period_from

router = APIRouter(prefix="/api/v1/evaluation/review", tags=["evaluation-review"])

ReviewerDep = Annotated[Principal, Depends(require_roles("reviewer"))]
ViewerDep = Annotated[Principal, Depends(require_roles("leader", "admin"))]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ReviewerIn(BaseModel):
    kind: str = Field(
        description="npc 人大代表 | cppcc 政协委员 | supervisor 效能监督员 | citizen 市民"
    )
    area: str = Field(description="region code the reviewer covers")
    user_id: int | None = None
    username: str | None = None
    display_name: str | None = None
    password: str | None = None
    phone: str | None = None
    note: str | None = None


class ReviewerPatch(BaseModel):
    kind: str | None = None
    area: str | None = None
    active: bool | None = None
    note: str | None = None


class RoundIn(BaseModel):
    name: str
    period_start: date
    period_end: date = Field(description="exclusive")
    sample_size: int = Field(ge=1, le=1000)
    seed: int | None = Field(default=None, ge=0, le=2**62)
    draw: bool = True


class RoundPatch(BaseModel):
    status: str


class RatingIn(BaseModel):
    rating: str = Field(description="满意 | 基本满意 | 不满意")
    comment: str | None = Field(default=None, max_length=2000)
    attachment_id: int | None = None
    reopen: bool = Field(default=False, description="不满意: send the case back to 核查")


class SettingsIn(BaseModel):
    scores: dict[str, float] | None = None
    auto_reopen: bool | None = None
    auto_round: dict[str, Any] | None = None


# --------------------------------------------------------------------------- admin


@router.get("/reviewers")
def list_reviewers(principal: AdminDep, session: SessionDep) -> list[dict[str, Any]]:
    return review.list_reviewers(session)


@router.post("/reviewers", status_code=201)
def register_reviewer(body: ReviewerIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    r = review.register_reviewer(session, principal, body.model_dump())
    return review.reviewer_out(session, r)


@router.patch("/reviewers/{reviewer_id}")
def update_reviewer(
    reviewer_id: int, body: ReviewerPatch, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    r = review.update_reviewer(session, reviewer_id, body.model_dump(exclude_unset=True))
    return review.reviewer_out(session, r)


@router.get("/settings")
def get_settings(principal: ViewerDep, session: SessionDep) -> dict[str, Any]:
    return review.get_settings(session)


@router.put("/settings")
def put_settings(body: SettingsIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return review.set_settings(session, body.model_dump(exclude_none=True))


@router.get("/rounds")
def list_rounds(principal: AdminDep, session: SessionDep) -> list[dict[str, Any]]:
    rounds = session.scalars(select(ReviewRound).order_by(ReviewRound.id.desc())).all()
    return [review.round_out(session, r) for r in rounds]


@router.post("/rounds", status_code=201)
def create_round(body: RoundIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    rnd = review.create_round(
        session,
        principal,
        name=body.name,
        period_start=body.period_start,
        period_end=body.period_end,
        sample_size=body.sample_size,
        seed=body.seed,
    )
    drawn = review.draw(session, rnd.id) if body.draw else None
    return {**review.round_out(session, rnd), "draw": drawn}


@router.post("/rounds/{round_id}/draw")
def draw(round_id: int, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Draw again: tops every active reviewer up to the sample size with cases not yet in
    the round (e.g. after registering more reviewers)."""
    return review.draw(session, round_id)


@router.patch("/rounds/{round_id}")
def update_round(
    round_id: int, body: RoundPatch, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return review.round_out(session, review.set_round_status(session, round_id, body.status))


@router.get("/rounds/{round_id}/assignments")
def round_assignments(
    round_id: int, principal: AdminDep, session: SessionDep
) -> list[dict[str, Any]]:
    review.get_round(session, round_id)
    rows = session.execute(
        select(ReviewAssignment, Reviewer.user_id)
        .join(Reviewer, Reviewer.id == ReviewAssignment.reviewer_id)
        .where(ReviewAssignment.round_id == round_id)
        .order_by(ReviewAssignment.id)
    ).all()
    return [
        {
            "id": a.id,
            "reviewer_id": a.reviewer_id,
            "reviewer_user_id": uid,
            "case_id": a.case_id,
            "unit_id": a.unit_id,
            "region_code": a.region_code,
            "rating": a.rating,
            "rated_at": a.rated_at.isoformat() if a.rated_at else None,
            "reopened": a.reopened,
        }
        for a, uid in rows
    ]


# --------------------------------------------------------------------------- reviewer


@router.get("/assignments")
def my_assignments(
    principal: ReviewerDep,
    session: SessionDep,
    status: Annotated[str, Query(pattern="^(all|pending|rated)$")] = "all",
    round_id: int | None = None,
) -> list[dict[str, Any]]:
    return review.my_assignments(session, principal, status, round_id)


@router.get("/assignments/{assignment_id}")
def my_assignment(
    assignment_id: int, principal: ReviewerDep, session: SessionDep
) -> dict[str, Any]:
    return review.my_assignment(session, principal, assignment_id)


@router.get("/assignments/{assignment_id}/photos/{attachment_id}")
def assignment_photo(
    assignment_id: int, attachment_id: int, principal: ReviewerDep, session: SessionDep
) -> Response:
    """A photo of the assigned case, without its EXIF data."""
    att = review.assignment_photo(session, principal, assignment_id, attachment_id)
    data = default_storage().get(att.public_key or att.storage_key)
    return Response(data, media_type=att.content_type)


@router.post("/assignments/{assignment_id}/rating")
def rate(
    assignment_id: int, body: RatingIn, principal: ReviewerDep, session: SessionDep
) -> dict[str, Any]:
    return review.rate(
        session,
        principal,
        assignment_id,
        body.rating,
        body.comment,
        body.attachment_id,
        body.reopen,
    )


# --------------------------------------------------------------------------- report


def _report(
    principal: Principal,
    session: Any,
    start: date | None,
    end: date | None,
    period: str | None,
    region: str | None,
) -> dict[str, Any]:
    p = period_from(start, end, period)
    scope = region or principal.scope_region_code
    if region:
        ensure_region(principal, region)
    return review.report(session, p.start, p.end, scope)


@router.get("/report")
def report(
    principal: ViewerDep,
    session: SessionDep,
    start: date | None = None,
    end: date | None = None,
    period: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    """Scores per unit and region for ``[start, end)`` or a ``period`` (2026-11, 2026-Q4 …)
    of the rating time; a region-scoped leader sees their region only."""
    return _report(principal, session, start, end, period, region)


@router.get("/report.xlsx")
def report_xlsx(
    principal: ViewerDep,
    session: SessionDep,
    start: date | None = None,
    end: date | None = None,
    period: str | None = None,
    region: str | None = None,
) -> Response:
    data = _report(principal, session, start, end, period, region)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "review.xlsx"
        review.write_xlsx(data, path)
        content = path.read_bytes()
    name = f"review-{data['start']}-{data['end']}.xlsx"
    return Response(
        content,
        media_type=XLSX_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

"""Case REST API. The paths POST/GET /api/v1/cases, GET /api/v1/cases/{id},
POST /api/v1/cases/{id}/actions and GET /api/v1/worklist are a public contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from cityops.cases import dispatch_rules, intake, queries, service
from cityops.cases.models import Case
from cityops.cases.schemas import ActionRequest, CaseCreate, DispatchRuleIn, DispatchTest
from cityops.cases.storage import default_storage
from cityops.core.db import Database, utcnow
from cityops.core.errors import NotFound
from cityops.core.security import AdminDep, CachedPrincipalDep, PrincipalDep, SessionDep

router = APIRouter(prefix="/api/v1", tags=["cases"])


@router.post("/cases", status_code=201)
def create_case(body: CaseCreate, principal: CachedPrincipalDep, request: Request) -> JSONResponse:
    """上报. Machine reports (video, IoT) near an open case of the same category are merged
    into it (answer 200, ``merged: true``); others get possible duplicates listed.

    The read-only part of the intake runs here without any write lock; the writes go through
    the process's intake writer, which commits many intakes per transaction (see
    :mod:`cityops.cases.intake`). The answer is sent after the commit."""
    db: Database = request.app.state.db
    now = utcnow()
    session = db.sessionmaker()
    try:
        with session.no_autoflush:
            prepared = intake.prepare(session, principal, body.model_dump(), now)
        session.rollback()  # end the read transaction before waiting for the writer
        result = intake.batcher_for(db).write(prepared)
        detail = intake.answer(session, principal, result, now)
        if detail is None:  # ORM path (or a component): read the case back
            case = session.get(Case, result.case_id)
            if case is None:  # pragma: no cover - written and committed just now
                raise NotFound(f"no case {result.case_id}")
            detail = queries.case_detail(session, principal, case, now)
        out = {
            "case": detail,
            "merged": result.merged,
            "duplicates": result.duplicates,
        }
        session.rollback()
    finally:
        session.close()
    return JSONResponse(out, status_code=200 if result.merged else 201)


@router.get("/cases")
def list_cases(
    principal: PrincipalDep,
    session: SessionDep,
    stage: Annotated[list[str] | None, Query()] = None,
    status: str | None = None,
    unit_id: int | None = None,
    region: str | None = None,
    grid: str | None = None,
    category: str | None = None,
    source: str | None = None,
    urgency: str | None = None,
    overdue: bool | None = None,
    near_due: bool | None = None,
    supervised: bool | None = None,
    reported_from: datetime | None = None,
    reported_to: datetime | None = None,
    q: Annotated[str | None, Query(description="number, description or address text")] = None,
    sort: str = "-reported_at",
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    f = queries.CaseFilter(
        stage=stage,
        status=status,
        unit_id=unit_id,
        region=region,
        grid=grid,
        category=category,
        source=source,
        urgency=urgency,
        overdue=overdue,
        near_due=near_due,
        supervised=supervised,
        reported_from=reported_from,
        reported_to=reported_to,
        text=q,
    )
    return queries.list_cases(session, principal, f, utcnow(), cursor, limit, sort)


@router.get("/cases/actions")
def action_catalogue(principal: PrincipalDep) -> list[dict[str, Any]]:
    """Every workflow action with its Chinese label, roles and the stages it starts from."""
    return [
        {"action": a.name, "label": a.label, "roles": sorted(a.roles), "stages": sorted(a.stages)}
        for a in service.ACTIONS.values()
    ]


@router.get("/cases/{case_id}")
def get_case(case_id: int, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    case = service.load_case(session, principal, case_id)
    return queries.case_detail(session, principal, case, utcnow())


@router.post("/cases/{case_id}/actions")
def act(
    case_id: int, body: ActionRequest, principal: PrincipalDep, session: SessionDep
) -> dict[str, Any]:
    """Run one action; 409 with the reason (and the case untouched) when it does not fit."""
    now = utcnow()
    case = service.perform(
        session, principal, case_id, body.action, body.payload(), body.version, now
    )
    return queries.case_detail(session, principal, case, now)


@router.get("/worklist")
def worklist(
    principal: PrincipalDep, session: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    return queries.worklist(session, principal, utcnow(), limit)


@router.post("/attachments", status_code=201)
async def upload(file: UploadFile, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Upload a photo (JPEG/PNG/WebP ≤ 10 MB) or PDF (≤ 20 MB); then name its id in a report
    or action. A photo's EXIF GPS position is returned as a suggested location."""
    data = await file.read()
    return queries.upload(
        session, principal, default_storage(), file.filename or "upload", file.content_type, data
    )


@router.get("/attachments/{attachment_id}")
def download(
    attachment_id: int, principal: PrincipalDep, session: SessionDep, public: bool = False
) -> Response:
    att, data = queries.read_attachment(
        session, principal, default_storage(), attachment_id, public
    )
    return Response(data, media_type=att.content_type)


@router.get("/dispatch-rules", tags=["dispatch"])
def list_rules(principal: PrincipalDep, session: SessionDep) -> list[dict[str, Any]]:
    return dispatch_rules.list_rules(session)


@router.post("/dispatch-rules", status_code=201, tags=["dispatch"])
def create_rule(body: DispatchRuleIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return dispatch_rules.save_rule(session, None, body.model_dump())


@router.put("/dispatch-rules/{rule_id}", tags=["dispatch"])
def update_rule(
    rule_id: int, body: DispatchRuleIn, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return dispatch_rules.save_rule(session, rule_id, body.model_dump())


@router.delete("/dispatch-rules/{rule_id}", status_code=204, tags=["dispatch"])
def delete_rule(rule_id: int, principal: AdminDep, session: SessionDep) -> Response:
    dispatch_rules.delete_rule(session, rule_id)
    return Response(status_code=204)


@router.post("/dispatch-rules/test", tags=["dispatch"])
def test_rules(body: DispatchTest, principal: PrincipalDep, session: SessionDep) -> dict[str, Any]:
    """Which unit would get a case of this category at this place (and time)?"""
    return dispatch_rules.which_unit(session, body.model_dump())


@router.get("/settings/auto-file-sources", tags=["settings"])
def get_auto_file(principal: PrincipalDep, session: SessionDep) -> list[str]:
    """Report channels accepted and filed automatically at intake (then auto-dispatched)."""
    return sorted(service.auto_file_sources(session))


@router.put("/settings/auto-file-sources", tags=["settings"])
def put_auto_file(sources: list[str], principal: AdminDep, session: SessionDep) -> list[str]:
    service.set_auto_file_sources(session, sources)
    return sorted(service.auto_file_sources(session))

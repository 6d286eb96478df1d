"""Comprehensive evaluation API (综合评价): indicator tree, tasks, site inspections,
questionnaire import, report.

* admin: edits the tree and the settings, makes tasks and assigns evaluators;
* evaluator (综合评价考评员): sees only the tasks assigned to them; records third-party site
  inspections and imports questionnaires for them;
* leader: reads the tasks and reports of their regions (a district leader only their
  district's rows) and records that region's self-evaluation (自评).
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cityops.core.security import AdminDep, Principal, SessionDep, require_roles
from cityops.evaluation import comprehensive as ce

router = APIRouter(prefix="/api/v1/evaluation/comprehensive", tags=["evaluation-comprehensive"])

AnyDep = Annotated[Principal, Depends(require_roles("admin", "evaluator", "leader"))]
ViewerDep = Annotated[Principal, Depends(require_roles("admin", "leader"))]
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class CheckItem(BaseModel):
    code: str
    name: str
    max: float = Field(default=100, ge=0, le=100)


class NodeIn(BaseModel):
    code: str = Field(min_length=1, max_length=40)
    name: str = Field(min_length=1, max_length=100)
    weight: float = Field(ge=0, le=100)
    parent_code: str | None = None
    source: str | None = Field(
        default=None, description="platform | site_inspection | questionnaire"
    )
    platform_metric: str | None = None
    check_items: list[CheckItem] | None = None
    sibling_weights: dict[str, float] | None = Field(
        default=None, description="new weights of siblings (code → weight) in the same change"
    )


class NodePatch(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=100)
    weight: float | None = Field(default=None, ge=0, le=100)
    source: str | None = None
    platform_metric: str | None = None
    check_items: list[CheckItem] | None = None
    sibling_weights: dict[str, float] | None = None


class NodeDelete(BaseModel):
    sibling_weights: dict[str, float] | None = None


class TreeNode(BaseModel):
    code: str
    name: str
    weight: float
    source: str | None = None
    platform_metric: str | None = None
    check_items: list[CheckItem] | None = None
    children: list[TreeNode] = Field(default_factory=list)


class TaskIn(BaseModel):
    name: str
    period_start: date
    period_end: date = Field(description="exclusive")
    region_codes: list[str]
    evaluator_ids: list[int] = Field(default_factory=list)
    self_weight: float | None = Field(default=None, ge=0, le=100)


class TaskPatch(BaseModel):
    status: str | None = None
    evaluator_ids: list[int] | None = None
    self_weight: float | None = Field(default=None, ge=0, le=100)


class InspectionIn(BaseModel):
    indicator_code: str
    region_code: str
    origin: str = Field(default="third_party", description="third_party | self")
    score: float | None = None
    deductions: dict[str, float] | None = None
    note: str | None = Field(default=None, max_length=2000)
    attachment_id: int | None = None
    lon: float | None = None
    lat: float | None = None


class SettingsIn(BaseModel):
    self_weight: float = Field(ge=0, le=100)


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(exclude_unset=True)


# --------------------------------------------------------------------------- tree


@router.get("/indicators")
def get_tree(principal: AnyDep, session: SessionDep) -> dict[str, Any]:
    return {
        "tree": ce.tree_out(session),
        "sources": ce.SOURCES,
        "platform_metrics": list(ce.PLATFORM_METRICS),
    }


@router.post("/indicators", status_code=201)
def add_indicator(body: NodeIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    n = ce.add_node(session, body.model_dump())
    return ce.node_out(n)


@router.patch("/indicators/{code}")
def update_indicator(
    code: str, body: NodePatch, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return ce.node_out(ce.update_node(session, code, _dump(body)))


@router.delete("/indicators/{code}", status_code=204)
def delete_indicator(
    code: str, principal: AdminDep, session: SessionDep, body: NodeDelete | None = None
) -> Response:
    ce.delete_node(session, code, body.sibling_weights if body else None)
    return Response(status_code=204)


@router.put("/indicators")
def replace_tree(body: list[TreeNode], principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    """Replace the whole tree (only before any score was recorded)."""
    ce.replace_tree(session, [n.model_dump() for n in body])
    return {"tree": ce.tree_out(session)}


@router.get("/settings")
def get_settings(principal: AnyDep, session: SessionDep) -> dict[str, Any]:
    return ce.get_settings(session)


@router.put("/settings")
def put_settings(body: SettingsIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return ce.set_settings(session, body.model_dump())


# --------------------------------------------------------------------------- tasks


@router.get("/tasks")
def list_tasks(principal: AnyDep, session: SessionDep) -> list[dict[str, Any]]:
    return ce.list_tasks(session, principal)


@router.post("/tasks", status_code=201)
def create_task(body: TaskIn, principal: AdminDep, session: SessionDep) -> dict[str, Any]:
    return ce.task_out(session, ce.create_task(session, principal, body.model_dump()))


@router.get("/tasks/{task_id}")
def get_task(task_id: int, principal: AnyDep, session: SessionDep) -> dict[str, Any]:
    return ce.task_out(session, ce.task_for(session, principal, task_id))


@router.patch("/tasks/{task_id}")
def update_task(
    task_id: int, body: TaskPatch, principal: AdminDep, session: SessionDep
) -> dict[str, Any]:
    return ce.task_out(session, ce.update_task(session, task_id, _dump(body)))


@router.get("/tasks/{task_id}/records")
def list_records(task_id: int, principal: AnyDep, session: SessionDep) -> list[dict[str, Any]]:
    return ce.list_records(session, principal, task_id)


@router.post("/tasks/{task_id}/inspections", status_code=201)
def add_inspection(
    task_id: int, body: InspectionIn, principal: AnyDep, session: SessionDep
) -> dict[str, Any]:
    """A site inspection (实地考察): score 0–100 or deductions per check item, note, photo
    (``attachment_id`` of your upload) and location (located to a unit grid of the region)."""
    rec = ce.add_site_inspection(session, principal, task_id, _dump(body))
    return ce.record_out(rec, body.indicator_code)


@router.post("/tasks/{task_id}/questionnaires")
async def import_questionnaire(
    task_id: int,
    file: UploadFile,
    principal: AnyDep,
    session: SessionDep,
    origin: Annotated[str, Form()] = "third_party",
) -> dict[str, Any]:
    """Questionnaire results as CSV (region_code, indicator_code, respondents, score): all
    rows or nothing (422 listing every row / field / value in error)."""
    content = await file.read()
    res = ce.import_questionnaire(
        session, principal, task_id, file.filename or "questionnaire.csv", content, origin
    )
    return {"rows": res.rows, "written": res.written, "replaced": res.replaced, "notes": res.notes}


@router.get("/tasks/{task_id}/report")
def report(task_id: int, principal: ViewerDep, session: SessionDep) -> dict[str, Any]:
    """Per region: every node's self / third-party / blended score, weight and contribution;
    the regions ranked by total."""
    return ce.report(session, principal, task_id)


@router.get("/tasks/{task_id}/report.xlsx")
def report_xlsx(task_id: int, principal: ViewerDep, session: SessionDep) -> Response:
    data = ce.report(session, principal, task_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.xlsx"
        ce.write_xlsx(data, path)
        content = path.read_bytes()
    return Response(
        content,
        media_type=XLSX_TYPE,
        headers={"Content-Disposition": f'attachment; filename="comprehensive-{task_id}.xlsx"'},
    )

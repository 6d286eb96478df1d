"""Platform endpoints: health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from cityops import __version__
from cityops.core.db import Database
from cityops.core.migrate import current_revision, head_revision

router = APIRouter(tags=["platform"])


@router.get("/api/v1/health")
def health(request: Request) -> JSONResponse:
    """Database reachable, migrations current, counts of grids and components."""
    db: Database = request.app.state.db
    body: dict[str, Any] = {"version": __version__, "database": db.engine.dialect.name}
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            body["grids"] = conn.execute(text("SELECT count(*) FROM grids")).scalar_one()
            body["components"] = conn.execute(text("SELECT count(*) FROM components")).scalar_one()
        rev, head = current_revision(db.engine), head_revision()
        body["migrations"] = {"current": rev, "head": head, "up_to_date": rev == head}
        ok = rev == head
    except Exception as exc:
        body["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ok = False
    body["status"] = "ok" if ok else "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)

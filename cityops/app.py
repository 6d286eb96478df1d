"""The FastAPI application: API routers of every bounded context (and later the console)."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cityops import __version__
from cityops.core.db import Database, get_db, set_db
from cityops.core.errors import DomainError
from cityops.core.settings import get_settings

log = logging.getLogger("cityops")


def _warm(db: Database) -> None:
    """Build the spatial indexes in the background so the first request is fast."""
    from cityops.geo.index import indexes_for

    try:
        with db.session() as s:
            h = indexes_for(s)
            h.grids(s)
            h.components(s)
    except Exception:  # a fresh, empty or unmigrated database is not an error here
        log.exception("warming spatial indexes failed")


def create_app(db: Database | None = None) -> FastAPI:
    database = db or get_db()
    set_db(database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if get_settings().warm_indexes:
            threading.Thread(target=_warm, args=(database,), daemon=True).start()
        from cityops.cases.jobs import start_from_env
        from cityops.monitoring.mqtt import start_from_env as start_mqtt

        scheduler = start_from_env(database)
        app.state.scheduler = scheduler
        subscriber = start_mqtt(database)
        app.state.mqtt = subscriber
        try:
            yield
        finally:
            if subscriber is not None:
                subscriber.stop()
            if scheduler is not None:
                scheduler.stop()

    app = FastAPI(
        title="CityOps 城市运行管理服务平台",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
    )
    app.state.db = database

    @app.exception_handler(DomainError)
    async def _domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    from cityops.access.api import router as access_router
    from cityops.cases.api import router as cases_router
    from cityops.cases.notify_api import router as notify_router
    from cityops.core.api import router as core_router
    from cityops.evaluation.api import router as evaluation_router
    from cityops.evaluation.comprehensive_api import router as evaluation_comprehensive_router
    from cityops.evaluation.reports_api import router as evaluation_reports_router
    from cityops.evaluation.review_api import router as evaluation_review_router
    from cityops.flood.api import router as flood_router
    from cityops.geo.api import router as geo_router
    from cityops.monitoring.api import router as monitoring_router
    from cityops.public.api import router as public_router
    from cityops.worktime.api import router as worktime_router

    # routes are matched in order: the busiest API (case intake, lists, actions) first
    app.include_router(cases_router)
    app.include_router(core_router)
    app.include_router(access_router)
    app.include_router(geo_router)
    app.include_router(worktime_router)
    app.include_router(notify_router)
    app.include_router(evaluation_router)
    app.include_router(evaluation_reports_router)
    app.include_router(evaluation_review_router)
    app.include_router(evaluation_comprehensive_router)
    app.include_router(monitoring_router)
    app.include_router(flood_router)
    app.include_router(public_router)

    from cityops.console import mount

    mount(app)
    return app

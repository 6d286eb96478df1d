"""Public REST API (no login; rate-limited; never returns personal data).

* ``GET  /api/v1/public/categories`` — problem categories to report.
* ``POST /api/v1/public/reports`` — 随手拍 (multipart: ``category_code``, ``description``,
  ``lon``, ``lat``, optional ``address``, ``phone``, ``photo``) → ``tracking_code``.
* ``GET  /api/v1/public/cases/{code}`` — progress by tracking code.
* ``GET  /api/v1/public/cases/{code}/photos/{id}`` — result photo (EXIF removed) once closed.
* ``POST /api/v1/public/cases/{code}/rating`` — 满意度评价, once per closed case.
* ``GET  /api/v1/public/pois?kind=toilet|park|parking&lon=&lat=`` — nearest 便民服务 points.

Too many calls answer 429 with ``Retry-After`` (see :mod:`cityops.public.service`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from cityops.cases.storage import default_storage
from cityops.core.security import SessionDep, client_ip
from cityops.public import service
from cityops.public.schemas import RatingIn

router = APIRouter(prefix="/api/v1/public", tags=["public"])


def _limited(exc: service.RateLimited) -> JSONResponse:
    return JSONResponse(
        exc.to_dict(), status_code=429, headers={"Retry-After": str(exc.retry_after)}
    )


@router.get("/categories")
def categories(request: Request, session: SessionDep) -> Any:
    try:
        service.check_read(client_ip(request))
    except service.RateLimited as exc:
        return _limited(exc)
    return service.categories(session)


@router.post("/reports", status_code=201)
async def report(
    request: Request,
    session: SessionDep,
    category_code: Annotated[str, Form()],
    description: Annotated[str, Form()],
    lon: Annotated[float, Form()],
    lat: Annotated[float, Form()],
    address: Annotated[str | None, Form()] = None,
    phone: Annotated[str | None, Form()] = None,
    photo: Annotated[UploadFile | None, File()] = None,
) -> Any:
    """随手拍: report a problem; keep the tracking code to follow it."""
    data = None
    if photo is not None:
        data = (photo.filename or "photo.jpg", photo.content_type, await photo.read())
    try:
        return service.report(
            session,
            default_storage(),
            category_code=category_code,
            description=description,
            lon=lon,
            lat=lat,
            address=address,
            phone=phone,
            photo=data,
            ip=client_ip(request),
        )
    except service.RateLimited as exc:
        return _limited(exc)


@router.get("/cases/{code}")
def case_status(code: str, request: Request, session: SessionDep) -> Any:
    try:
        service.check_read(client_ip(request))
    except service.RateLimited as exc:
        return _limited(exc)
    return service.status(session, code)


@router.get("/cases/{code}/photos/{photo_id}")
def result_photo(code: str, photo_id: int, request: Request, session: SessionDep) -> Response:
    try:
        service.check_read(client_ip(request))
    except service.RateLimited as exc:
        return _limited(exc)
    ctype, data = service.result_photo(session, default_storage(), code, photo_id)
    return Response(data, media_type=ctype, headers={"Cache-Control": "private, max-age=3600"})


@router.post("/cases/{code}/rating", status_code=201)
def rate(code: str, body: RatingIn, request: Request, session: SessionDep) -> Any:
    try:
        service.check_read(client_ip(request))
    except service.RateLimited as exc:
        return _limited(exc)
    return service.rate(session, code, body.rating, body.comment)


@router.get("/pois")
def pois(
    kind: str, lon: float, lat: float, request: Request, session: SessionDep, limit: int = 5
) -> Any:
    try:
        service.check_read(client_ip(request))
    except service.RateLimited as exc:
        return _limited(exc)
    return service.nearest_pois(session, kind, lon, lat, limit)

"""REST API of the flood context."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/flood")

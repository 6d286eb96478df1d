"""Public REST API (no login; rate-limited; never returns personal data)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1/public", tags=["public"])

"""City-model endpoints (filled in by the access/geo API work)."""

from fastapi import APIRouter

router = APIRouter()

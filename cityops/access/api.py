"""Auth and user administration endpoints (filled in by the access work)."""

from fastapi import APIRouter

router = APIRouter()

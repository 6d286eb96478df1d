"""The web console (NiceGUI), mounted in the FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI


def mount(app: FastAPI) -> None:
    """Mount the console pages on ``app``."""
    return None

"""Periodic jobs of the flood context (registered with cityops.core.jobs)."""

from __future__ import annotations

"""Periodic jobs of the evaluation context (registered with cityops.core.jobs)."""

from __future__ import annotations

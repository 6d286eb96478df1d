"""Periodic jobs of the monitoring context (registered with cityops.core.jobs)."""

from __future__ import annotations

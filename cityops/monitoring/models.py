"""Tables of the monitoring context."""

from __future__ import annotations

"""Tables of the flood context."""

from __future__ import annotations

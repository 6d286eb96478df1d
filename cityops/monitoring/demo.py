"""Demo data of the monitoring context, seeded into the demo city by ``cityops demo``."""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session


def seed_demo(session: Session, scale: str, rng: np.random.Generator) -> dict[str, int]:
    """Seed this context's demo rows into the (committed) demo city; return row counts."""
    return {}

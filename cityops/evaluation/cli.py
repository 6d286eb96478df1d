"""``cityops evaluation …``: rebuild the rollups from case history."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

evaluation_app = typer.Typer(help="Evaluation (以评促管) rollups.", no_args_is_help=True)


@evaluation_app.callback()
def _group() -> None:
    """Evaluation (以评促管) rollups."""


@evaluation_app.command("rebuild")
def rebuild(
    since: Annotated[
        str | None, typer.Option(help="Only days from this local date on (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Delete the daily counters (all, or from --since) and re-derive them from case history."""
    import cityops.models  # noqa: F401
    from cityops.core.audit import Actor, current_actor
    from cityops.core.db import Database
    from cityops.evaluation import rollup

    current_actor.set(Actor(None, "cli"))
    day = date.fromisoformat(since) if since else None
    db = Database()
    try:
        with db.session() as s:
            n = rollup.rebuild(s, since=day)
        typer.echo(
            f"rebuilt evaluation rollups from {n} facts" + (f" (since {day})" if day else "")
        )
    finally:
        db.dispose()
